"""The cluster path without Docker: a real multi-process Ray cluster (a head and two worker nodes,
one advertising accelerator_type:V100) and the PostgreSQL server, with faults injected for real."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from ray.cluster_utils import Cluster

from tcnsearch.profile import LatencyTable, ProfileSpec, run_profile
from tcnsearch.search import run_study
from tcnsearch.storage import create_engine
from tests.search.conftest import stored_trials, write_study

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


def _wait_for(predicate, timeout=120.0, every=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


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
    path = write_study(tmp_path, budget={"trials": 6, "max_concurrent": 1}, scheduler={"type": "none"})
    args = ["study", path, "--storage", pg_url, "--ray-address", cluster, "--study-name", "shared", "--resume",
            "--json"]
    drivers = [subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                cwd=tmp_path) for _ in range(2)]
    outputs = [d.communicate(timeout=300) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], [o[1][-1500:] for o in outputs]
    trials = stored_trials(pg_url, "shared")
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    # nothing lost: every other trial of the study is a proposal outside the survivors, never trained
    assert all(t.state == TrialState.COMPLETE or "infeasible" in t.user_attrs
               for t in stored_trials(pg_url, "shared", everything=True))
    # Each driver counts the trials it ran, not the other's: together exactly the budget.
    assert sum(json.loads(out)["ran"] for out, _ in outputs) == 6


def test_a_killed_driver_then_resume_keeps_every_finished_trial(cluster, pg_url, tmp_path):
    path = write_study(tmp_path, train={"steps": 300, "eval_every": 100}, budget={"trials": 4, "max_concurrent": 1},
                       scheduler={"type": "none"})
    args = ["study", path, "--storage", pg_url, "--ray-address", cluster, "--study-name", "killed"]
    driver = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
                              cwd=tmp_path)
    seen = _wait_for(lambda: sum(t.state == TrialState.COMPLETE for t in stored_trials(pg_url, "killed")) >= 1
                     and any(t.state == TrialState.RUNNING for t in stored_trials(pg_url, "killed")))
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert seen
    before = {t.number: (t.state, t.value) for t in stored_trials(pg_url, "killed") if t.state == TrialState.COMPLETE}
    time.sleep(4)  # three missed heartbeats (heartbeat_s: 1): the killed driver's trial is stale
    assert subprocess.run(CLI + args + ["--resume", "--json"], capture_output=True, text=True, env=ENV,
                          cwd=tmp_path, timeout=300).returncode == 0
    after = stored_trials(pg_url, "killed")
    assert {t.number: (t.state, t.value) for t in after if t.number in before} == before
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in after) == 4
    stale = [t for t in after if t.state == TrialState.FAIL]
    retries = [t for t in after if "retry_of" in t.user_attrs]
    assert stale and [t.user_attrs["retry_of"] for t in retries] == [t.number for t in stale]


def test_a_worker_killed_mid_trial_is_retried_and_the_study_goes_on(cluster, pg_url, tmp_path):
    path = write_study(tmp_path, train={"steps": 400, "eval_every": 100}, budget={"trials": 2, "max_concurrent": 1},
                       scheduler={"type": "none"})
    args = ["study", path, "--storage", pg_url, "--ray-address", cluster, "--study-name", "worker-killed", "--json"]
    driver = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                              cwd=tmp_path)
    assert _wait_for(lambda: any(t.intermediate_values for t in stored_trials(pg_url, "worker-killed")
                                 if t.state == TrialState.RUNNING))
    victims = subprocess.run(["pgrep", "-f", "ray::ImplicitFunc"], capture_output=True, text=True).stdout.split()
    assert victims
    for pid in victims:
        os.kill(int(pid), signal.SIGKILL)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    trials = stored_trials(pg_url, "worker-killed")
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2  # the trial ran again (max_failures: 1)


class _Proxy:
    """A TCP forwarder to PostgreSQL that can be cut (every connection dropped, new ones refused)."""

    def __init__(self, target=("127.0.0.1", 5432)):
        self.target, self.up, self.conns = target, threading.Event(), []
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.up.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.server.accept()
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self):
        self.up.clear()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.conns = []

    def restore(self):
        self.up.set()


def test_a_database_blip_during_a_study_is_retried_not_fatal(cluster, pg_url, tmp_path):
    proxy = _Proxy()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    path = write_study(tmp_path, train={"steps": 200, "eval_every": 50}, budget={"trials": 3, "max_concurrent": 1},
                       scheduler={"type": "none"})
    args = ["study", path, "--storage", url, "--ray-address", cluster, "--study-name", "blip", "--json"]
    driver = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                              cwd=tmp_path)
    assert _wait_for(lambda: any(t.state == TrialState.RUNNING for t in stored_trials(pg_url, "blip")))
    proxy.cut()
    time.sleep(5)
    proxy.restore()
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    trials = stored_trials(pg_url, "blip")
    states = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3, states
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
