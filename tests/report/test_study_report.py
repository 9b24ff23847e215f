import random

import optuna
import pytest

from tcnsearch.cli import main
from tcnsearch.report import pareto_front, write_study_report
from tcnsearch.search.trials import freeze
from tests.search.conftest import survivor


def _study(url: str, name: str, directions: list[str]) -> optuna.Study:
    """A stored study shaped like run_study's: survivors in the study, latency on each trial."""
    study = optuna.create_study(study_name=name, storage=url, directions=directions)
    survivors = [survivor(k, 2, 3, 1, latency_ms=0.5 * k, speedup=3.0 / k) for k in (3, 5, 7)]
    freeze(study, survivors, {"kernel_size": [3, 5, 7, 9], "dilation_factor": [2], "depth": [3], "per_block": [1]},
           {"metric": "loss", "mode": "min", "max_latency_ms": None, "min_speedup": None})
    study.set_user_attr("device", "cpu: test")
    rng = random.Random(0)
    for i in range(10):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        k = trial.suggest_int("K", 3, 9, step=2)
        label = f"K{k}-f2-D3-B1"
        trial.set_user_attr("tcn", label)
        if k == 9 or i == 9:  # not a survivor / over the budget: proposed, never trained
            trial.set_constraint("survivor", 0.3 if k == 9 else 0.0)
            trial.set_user_attr("infeasible", f"{label}: over")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        latency = next(s.latency_ms for s in survivors if s.label == label)
        trial.set_user_attr("latency_ms", latency)
        loss = 1.0 + abs(lr - 3e-3) * 10 + rng.random() * 0.1
        for step in (10, 20):
            if len(directions) == 1:
                trial.report(loss + 1 / step, step)
        study.tell(trial, [loss, latency] if len(directions) == 2 else loss)
    return study


def test_pareto_front_against_brute_force():
    rng = random.Random(1)
    points = [(rng.random(), rng.random()) for _ in range(40)]
    for maximize in (False, True):
        s = -1 if maximize else 1
        expected = [i for i, (a, la) in enumerate(points)
                    if not any(s * b <= s * a and lb <= la and (b, lb) != (a, la) for b, lb in points)]
        assert pareto_front(points, maximize) == expected


@pytest.mark.parametrize("directions", [["minimize"], ["minimize", "minimize"]])
def test_study_report_holds_history_front_importances_and_profile(tmp_path, directions):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _study(url, "demo", directions)
    page = write_study_report("demo", url, tmp_path / "report.html").read_text()
    assert page.count("plotly.js") >= 1 and "cpu: test" in page
    assert "against the TCN's profiled latency" in page and "Pareto front" in page
    assert "Hyperparameter Importances" in page and "survivors on cpu: test" in page
    assert "never trained (infeasible)" in page and "trained (feasible)" in page
    if len(directions) == 1:
        assert "Optimization History Plot" in page and "Intermediate Values Plot" in page


def test_report_command_writes_the_default_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _study(url, "demo", ["minimize"])
    assert main(["report", "demo", "--storage", url]) == 0
    assert (tmp_path / "dashboards" / "study-demo.html").stat().st_size > 100_000
    assert "dashboards/study-demo.html" in capsys.readouterr().out

