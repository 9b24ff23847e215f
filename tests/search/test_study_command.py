"""`tcnsearch study` as users run it: JSON, one-line refusals, Ctrl-C, then --resume."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tcnsearch.cli import main
from tests.conftest import wait_for
from tests.search.conftest import stored_trials

pytestmark = [pytest.mark.slow, pytest.mark.ray]

CLI = [str(Path(sys.executable).with_name("tcnsearch"))]


def test_study_json_names_the_study_the_storage_and_the_best(study_file, sqlite_url, ray_head, capsys, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["study", study_file(), "--storage", sqlite_url, "--ray-address", ray_head, "--trials", "2",
                     "--json"]) == 0
        assert main(["report", "small-tiny", "--storage", sqlite_url]) == 0
    assert not [str(w.message) for w in caught]  # no third-party warning in normal use
    out, err = capsys.readouterr()
    assert "Warning" not in err
    doc = json.loads(out.split("\nsmall-tiny: report written")[0])
    assert doc["study"] == "small-tiny" and doc["storage"] == sqlite_url and doc["ran"] == 2
    trained = sum(n for state, n in doc["counts"].items() if state not in ("INFEASIBLE", "WARM_START"))
    assert trained == 2 and doc["counts"]["RUNNING"] == 0
    assert doc["best"][0]["tcn"].startswith("K3-") and doc["metric_names"] == ["loss"]


@pytest.mark.parametrize("args,message", [
    (["study", "nope"], "unknown study 'nope'"),
    (["study", "assoc-recall", "--preset", "huge"], "Invalid value for '--preset'"),
    (["study", "assoc-recall", "--storage", "postgresql+psycopg://u:secret@127.0.0.1:1/db"],
     "cannot reach the database postgresql+psycopg://u:***@127.0.0.1:1/db"),
    (["study", "assoc-recall", "--gpu", "v99"], "unknown GPU 'v99'"),
    (["study", "assoc-recall", "--trials", "0"], "Invalid value for '--trials'"),
    (["report", "nope"], "no database at tcnsearch.db"),  # a reading command creates no database
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "secret" not in err


def test_ctrl_c_leaves_nothing_running_and_resume_finishes_the_study(study_file, sqlite_url, ray_head, tmp_path):
    path = study_file(train={"steps": 400, "eval_every": 100}, budget={"trials": 2, "max_concurrent": 1},
                      scheduler={"type": "none"})
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen(CLI + ["study", path, "--storage", sqlite_url, "--ray-address", ray_head],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert wait_for(lambda: _training(sqlite_url), timeout=120), "no trial started training"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume continues the study" in err
    trials = stored_trials(sqlite_url, "small-tiny")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted and all("interrupted" in t.user_attrs["fail_reason"] for t in interrupted)
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in queued] == [t.number for t in interrupted]

    finished_before = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
    assert main(["study", path, "--storage", sqlite_url, "--ray-address", ray_head, "--resume", "--json"]) == 0
    after = stored_trials(sqlite_url, "small-tiny")
    assert {t.number: t.value for t in after if t.number in finished_before} == finished_before
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    done = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    # the re-queued trial ran again with the parameters it had
    retried = [t for t in after if "retry_of" in t.user_attrs]
    everything = {t.number: t for t in stored_trials(sqlite_url, "small-tiny", everything=True)}
    assert retried and retried[0].params == everything[retried[0].user_attrs["retry_of"]].params


def test_a_missing_data_set_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TCNSEARCH_DATA", str(tmp_path / "no-cache"))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["study", "lra-image", "--storage", url]) == 2
    assert "lra-image needs its data" in capsys.readouterr().err
    assert main(["study", "enwik8", "--storage", url, "--data", str(tmp_path / "missing.zip")]) == 2
    assert "missing.zip" in capsys.readouterr().err
    assert not (tmp_path / "db.sqlite").exists()


def _listening(procs) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening socket of `procs`."""
    import psutil

    names = {p.pid: p.name() for p in procs}
    return [(c.laddr.ip, c.laddr.port, names[c.pid]) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in names]


def test_a_local_study_listens_on_loopback_only_and_sigterm_stops_it_cleanly(study_file, sqlite_url, tmp_path):
    """The local runtime (GCS, raylet, object manager, workers) binds to 127.0.0.1; its folder is fresh
    per run (a squatted fixed name does not matter) and removed; SIGTERM stops the study as Ctrl-C does."""
    import psutil

    path = study_file(train={"steps": 2000, "eval_every": 500}, budget={"trials": 2, "max_concurrent": 1},
                      scheduler={"type": "none"})
    tmp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # a short $TMPDIR: Ray's socket paths must fit
    for squatted in ("ray", "tcnsearch-ray"):  # someone else's file where a fixed folder name would go
        (tmp / squatted).write_text("not yours")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", TMPDIR=str(tmp))
    env.pop("TCNSEARCH_RAY_ADDRESS", None)
    proc = subprocess.Popen(CLI + ["study", path, "--storage", sqlite_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert wait_for(lambda: _training(sqlite_url) or proc.poll() is not None, timeout=180)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        sockets = _listening(tree)
        run_folders = [p for p in tmp.iterdir() if p.name.startswith("tcns-")]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True) if proc.returncode != 143 else None
    assert len(sockets) >= 3 and {"gcs_server", "raylet"} <= {name for _, _, name in sockets}, sockets
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip, _, _ in sockets), sockets
    assert len(run_folders) == 1 and len(str(run_folders[0])) < 80
    assert proc.returncode == 143, err[-2000:]
    assert "tcnsearch: terminated;" in err and "--resume continues the study" in err and "Traceback" not in err
    assert not [p for p in tmp.iterdir() if p.name.startswith("tcns-")]  # the run's folder is gone
    assert (tmp / "ray").read_text() == "not yours" and (tmp / "tcnsearch-ray").read_text() == "not yours"
    assert wait_for(lambda: not _alive(tree[1:]), timeout=30), _alive(tree[1:])  # nothing left behind
    shutil.rmtree(tmp)
    trials = stored_trials(sqlite_url, "small-tiny")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert [t for t in trials if t.state == TrialState.WAITING]  # the interrupted trial is queued again


def test_ctrl_c_while_the_local_ray_runtime_starts_leaves_no_process_and_no_folder(study_file, sqlite_url, tmp_path):
    """The Ctrl-C comes as soon as Ray's GCS exists, before Ray is up: whatever Ray started is stopped."""
    import psutil

    path = study_file(budget={"trials": 1, "max_concurrent": 1})
    tmp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", TMPDIR=str(tmp))
    env.pop("TCNSEARCH_RAY_ADDRESS", None)
    proc = subprocess.Popen(CLI + ["study", path, "--storage", sqlite_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    seen: dict[int, psutil.Process] = {}
    try:
        def gcs_started() -> bool:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    seen.setdefault(child.pid, child)
            return proc.poll() is not None or any(_name(p) == "gcs_server" for p in seen.values())

        assert wait_for(gcs_started, timeout=180, every=0.05)
        assert proc.poll() is None, "the study ended before Ray started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    alive = list(seen.values())
    assert wait_for(lambda: not _alive(alive), timeout=30), [(_name(p), p.pid) for p in _alive(alive)]  # none left
    assert not [p for p in tmp.iterdir() if p.name.startswith("tcns-")]  # the run's folder is gone
    shutil.rmtree(tmp)


def _training(url: str) -> bool:
    """A trial of the study trains in a Ray worker: it has reported an evaluation."""
    return any(t.state == TrialState.RUNNING and t.intermediate_values for t in stored_trials(url, "small-tiny"))


def _alive(procs) -> list:
    import psutil

    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def _name(proc) -> str:
    import psutil

    try:
        return proc.name()
    except psutil.Error:
        return "?"
