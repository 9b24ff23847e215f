"""optuna-dashboard served by `tcnsearch dashboard`, rendered in headless Chromium (Debian's package)."""

import optuna
import pytest

from tests.conftest import chromium_dom, needs_chromium, serve_dashboard


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


@pytest.mark.browser
@needs_chromium
def test_dashboard_renders_a_stored_study_with_its_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _stored_study(url)
    with serve_dashboard(url) as port:
        dom = chromium_dom(tmp_path, f"http://127.0.0.1:{port}/dashboard/studies/1")
    assert "recall-demo" in dom, dom[:2000]
    assert "0.875" in dom and "PRUNED" in dom.upper(), dom[:3000]  # the best value and the pruned trial


def test_dashboard_refuses_an_unreachable_database(capsys):
    from tcnsearch.cli import main

    assert main(["dashboard", "--storage", "postgresql+psycopg://nobody@127.0.0.1:1/x"]) == 2
    assert "cannot reach the database" in capsys.readouterr().err
