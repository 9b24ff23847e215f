"""optuna-dashboard served by `tcnsearch dashboard`, rendered in headless Chromium (Debian's package)."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna

from tests.conftest import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _stored_study(url: str) -> None:
    study = optuna.create_study(study_name="recall-demo", storage=url, direction="maximize")
    study.set_metric_names(["accuracy"])
    for lr, accuracy in [(1e-3, None), (3e-3, 0.625), (1e-2, 0.875)]:
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        trial.set_user_attr("tcn", f"K5-f4-D3-B1 lr {lr}")
        if accuracy is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, accuracy)


def test_dashboard_renders_a_stored_study_with_its_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _stored_study(url)
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("tcnsearch")), "dashboard", "--storage", url,
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError(f"the dashboard did not start: {server.stderr.read()}")
        page = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
             f"--user-data-dir={tmp_path / 'chrome'}", "--dump-dom", f"http://127.0.0.1:{port}/dashboard/studies/1"],
            capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
        dom = page.stdout
        assert "recall-demo" in dom, dom[:2000]
        (tmp_path / "dom.html").write_text(dom)
        assert "0.875" in dom and "PRUNED" in dom.upper(), dom[:3000]  # the best value and the pruned trial
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_dashboard_refuses_an_unreachable_database(capsys):
    from tcnsearch.cli import main

    assert main(["dashboard", "--storage", "postgresql+psycopg://nobody@127.0.0.1:1/x"]) == 2
    assert "cannot reach the database" in capsys.readouterr().err
