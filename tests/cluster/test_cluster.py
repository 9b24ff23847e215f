"""The cluster path without Docker: a real multi-process Ray cluster (a head and two worker nodes,
one advertising accelerator_type:V100) and the PostgreSQL server, with faults injected for real."""

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from optuna.trial import TrialState
from ray.cluster_utils import Cluster

from tcnsearch.profile import LatencyTable, ProfileSpec, run_profile
from tcnsearch.search import run_study
from tcnsearch.storage import create_engine
from tests.conftest import wait_for
from tests.search.conftest import stored_trials, write_study

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow]

CLI = [str(Path(sys.executable).with_name("tcnsearch"))]
ENV = dict(os.environ, RAY_AUTH_MODE="disabled")


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20,
                                                      "include_dashboard": False})
    c.add_node(num_cpus=1, resources={"accelerator_type:V100": 1}, object_store_memory=80 * 2**20)
    c.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    yield c.address
    c.shutdown()


def test_profile_runs_on_the_node_with_the_gpu_and_lands_in_postgresql(cluster, pg_url):
    spec = ProfileSpec(lengths=[64], kernel_sizes=[3], dilation_factors=[2], depths=[2], per_block=[1],
                       min_receptive_field=None, channels=8, max_time=0.05, min_pairs=3)
    result = run_profile(spec, gpu="v100", ray_address=cluster, storage=pg_url, progress=False)
    assert result.measured == 1 and result.target == "v100" and result.pairs >= 3
    rows = LatencyTable(create_engine(pg_url)).summary()
    assert any(r["tcn"] >= 1 and r["pairs"] >= 3 and r["length"] == 64 for r in rows)


def test_trials_run_across_the_workers(cluster, pg_url, tmp_path):
    path = write_study(tmp_path, budget={"trials": 4, "max_concurrent": 2}, scheduler={"type": "none"})
    result = run_study(path, storage=pg_url, ray_address=cluster, study_name="across-workers", progress=False)
    trials = stored_trials(pg_url, "across-workers")
    assert result.counts["COMPLETE"] == 4
    assert len({t.user_attrs["ray_node"] for t in trials}) == 2  # both worker nodes trained


def test_two_drivers_on_one_study_neither_duplicate_nor_lose_trials(cluster, pg_url, tmp_path):
    path = write_study(tmp_path, budget={"trials": 4, "max_concurrent": 1}, scheduler={"type": "none"})
    args = ["study", path, "--storage", pg_url, "--ray-address", cluster, "--study-name", "shared", "--resume",
            "--json"]
    drivers = [subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                cwd=tmp_path) for _ in range(2)]
    outputs = [d.communicate(timeout=300) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], [o[1][-1500:] for o in outputs]
    trials = stored_trials(pg_url, "shared")
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    # nothing lost: every other trial of the study is a proposal outside the survivors, never trained
    assert all(t.state == TrialState.COMPLETE or "infeasible" in t.user_attrs
               for t in stored_trials(pg_url, "shared", everything=True))
    # Each driver counts the trials it ran, not the other's: together exactly the budget.
    assert sum(json.loads(out)["ran"] for out, _ in outputs) == 4


def test_a_killed_driver_then_resume_keeps_every_finished_trial(cluster, pg_url, tmp_path):
    path = write_study(tmp_path, train={"steps": 200, "eval_every": 100}, budget={"trials": 3, "max_concurrent": 1},
                       scheduler={"type": "none"})
    args = ["study", path, "--storage", pg_url, "--ray-address", cluster, "--study-name", "killed"]
    driver = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
                              cwd=tmp_path)
    seen = wait_for(lambda: sum(t.state == TrialState.COMPLETE for t in stored_trials(pg_url, "killed")) >= 1
                     and any(t.state == TrialState.RUNNING for t in stored_trials(pg_url, "killed")))
    # Killed outright, the driver cannot remove its run folder (Tune's checkpoints): the next run does.
    (left,) = [f for f in Path(tempfile.gettempdir()).glob("tcns-*")
               if (f / "driver.pid").is_file() and (f / "driver.pid").read_text() == str(driver.pid)]
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert seen
    before = {t.number: (t.state, t.value) for t in stored_trials(pg_url, "killed") if t.state == TrialState.COMPLETE}
    assert subprocess.run(CLI + args + ["--resume", "--json"], capture_output=True, text=True, env=ENV,
                          cwd=tmp_path, timeout=300).returncode == 0
    assert not left.exists()  # the next run removed it
    after = stored_trials(pg_url, "killed")
    assert {t.number: (t.state, t.value) for t in after if t.number in before} == before
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in after) == 3
    stale = [t for t in after if t.state == TrialState.FAIL]
    retries = [t for t in after if "retry_of" in t.user_attrs]
    assert stale and [t.user_attrs["retry_of"] for t in retries] == [t.number for t in stale]


def test_a_worker_killed_mid_trial_is_retried_and_the_study_goes_on(cluster, pg_url, tmp_path):
    path = write_study(tmp_path, train={"steps": 400, "eval_every": 100}, budget={"trials": 2, "max_concurrent": 1},
                       scheduler={"type": "none"})
    args = ["study", path, "--storage", pg_url, "--ray-address", cluster, "--study-name", "worker-killed", "--json"]
    driver = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                              cwd=tmp_path)
    def training_pid() -> int | None:  # the Ray worker that trains this study's trial (its first report names it)
        return next((t.user_attrs["pid"] for t in stored_trials(pg_url, "worker-killed")
                     if t.state == TrialState.RUNNING and "pid" in t.user_attrs), None)

    assert wait_for(lambda: training_pid() is not None)
    os.kill(training_pid(), signal.SIGKILL)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    trials = stored_trials(pg_url, "worker-killed")
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2  # the trial ran again (max_failures: 1)


@pytest.mark.parametrize("cut", ["a-while-training", "at-the-tell", "at-the-tells-commit", "a-minute-while-training"])
def test_a_database_blip_during_a_study_is_retried_not_fatal(cluster, pg_url, tmp_path, db_proxy, cut):
    """The database cut for a few seconds: while a trial trains, or exactly as the driver tells a finished
    trial's result (before its commit, or after it with the answer lost); or for 45 s, longer than the
    trials' heartbeat grace period (30 s) but within the driver's patience (2 minutes). Nothing is lost:
    every trial finishes COMPLETE and none is left RUNNING."""
    url = db_proxy.url(pg_url)
    # The case (a cut while training) with three trials, as it was found; the others with two: the
    # cut falls on the first, and the second shows the study goes on.
    budget = 3 if cut == "a-while-training" else 2
    path = write_study(tmp_path, train={"steps": 200, "eval_every": 50},
                       budget={"trials": budget, "max_concurrent": 1}, scheduler={"type": "none"})
    name = f"blip-{cut}"
    args = ["study", path, "--storage", url, "--ray-address", cluster, "--study-name", name, "--json"]
    if not cut.endswith("while-training"):
        db_proxy.cut_at(b"INSERT INTO trial_values", after_commit=cut == "at-the-tells-commit", restore_after=5.0)
    driver = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                              cwd=tmp_path)
    if cut.endswith("while-training"):
        assert wait_for(lambda: any(t.state == TrialState.RUNNING for t in stored_trials(pg_url, name)))
        db_proxy.cut(restore_after=45.0 if cut.startswith("a-minute") else 5.0)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    assert db_proxy.cuts == 1
    trials = stored_trials(pg_url, name)
    states = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == budget, states
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], states
    everything = stored_trials(pg_url, name, everything=True)
    assert not [t for t in everything if t.state == TrialState.RUNNING]  # nor any copy Optuna made
