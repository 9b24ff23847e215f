"""From a study to the model its user keeps, for real (a Ray head, Optuna on SQLite, real training): trial
checkpoints through Tune, the best trials' weights as artifacts, export and train, promotion."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tcnsearch.cli import main
from tcnsearch.search import run_study
from tcnsearch.search.artifacts import kept_weights, load_weights, open_store
from tcnsearch.search.promote import ranking_agreement
from tests.conftest import chromium_dom, needs_chromium, serve_dashboard, wait_for
from tests.search.conftest import stored_trials, write_study

pytestmark = [pytest.mark.slow, pytest.mark.ray]
CLI = [str(Path(sys.executable).with_name("tcnsearch"))]


@pytest.fixture(scope="module")
def studied(tmp_path_factory, ray_head):
    """A finished study of 4 trials that keeps the best 2 trials' weights."""
    folder = tmp_path_factory.mktemp("weights")
    url = f"sqlite:///{folder / 'tcnsearch.db'}"
    path = write_study(folder, budget={"trials": 4, "max_concurrent": 2}, scheduler={"type": "none"}, keep_best=2)
    result = run_study(path, storage=url, ray_address=ray_head, progress=False)
    return folder, url, result


def test_the_best_trials_weights_are_kept_and_no_others(studied):
    folder, url, result = studied
    assert result.artifacts == str(folder / "tcnsearch-artifacts")
    trials = stored_trials(url, "small-tiny")
    best = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)[:2]
    kept = kept_weights(optuna.load_study(study_name="small-tiny", storage=url))
    assert set(kept) == {t.number for t in best}
    assert sorted(os.listdir(folder / "tcnsearch-artifacts")) == sorted(kept.values())
    assert result.best[0]["weights_artifact"] == kept[best[0].number]
    store = open_store(folder / "tcnsearch-artifacts", create=False)
    for t in best:
        weights = load_weights(store, kept[t.number])
        assert weights["config"]["model"]["tcn"]["kernel_size"] == t.params["K"] and weights["step"] == 40
        assert sum(v.numel() for v in weights["model"].values()) == t.user_attrs["num_parameters"]
    assert not list(Path(result.artifacts).parent.glob("tcns-*"))  # no run folder left behind


def test_export_then_train_builds_the_trials_model_and_starts_from_its_weights(studied, capsys, monkeypatch):
    folder, url, result = studied
    monkeypatch.chdir(folder)
    best = result.best[0]
    assert main(["export", "small-tiny", "--storage", url]) == 0
    out = capsys.readouterr().out
    path = folder / f"small-tiny-trial-{best['number']}.yaml"
    assert str(path.name) in out and "--init-from-artifact" in out
    assert f"its weights: artifact {best['weights_artifact']} in {folder / 'tcnsearch-artifacts'}" in out
    assert main(["train", "assoc-recall", "--config", str(path), "--steps", "10", "--init-from-artifact",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["num_parameters"] == best["num_parameters"] and doc["picked"]["trial"] == best["number"]
    assert doc["config"]["model"]["tcn"]["kernel_size"] == best["params"]["K"]
    (initialised,) = [n for n in doc["notes"] if n.startswith("initialised")]
    weights = load_weights(open_store(folder / "tcnsearch-artifacts", False), best["weights_artifact"])
    assert initialised.startswith(f"initialised {len(weights['model'])}")
    # at another preset the pick is carried (its TCN), the proxy's widths are not
    assert main(["train", "assoc-recall", "--from-study", "small-tiny", "--storage", url, "--preset", "cpu",
                 "--steps", "2", "--json"]) == 0
    cpu = json.loads(capsys.readouterr().out)
    assert cpu["config"]["model"]["tcn"]["kernel_size"] == best["params"]["K"]
    assert cpu["config"]["model"]["d_model"] == 64


@needs_chromium
@pytest.mark.browser
def test_the_dashboard_lists_a_kept_trials_weights(studied, tmp_path):
    folder, url, result = studied
    best = result.best[0]
    with serve_dashboard(url, "--artifacts", str(folder / "tcnsearch-artifacts")) as port:
        dom = chromium_dom(tmp_path, f"http://127.0.0.1:{port}/dashboard/studies/1/trials?numbers={best['number']}")
    assert "final.pt" in dom, dom[:3000]


def test_promotion_trains_the_top_configurations_again_and_ranks_them(studied, ray_head, capsys, monkeypatch):
    folder, url, result = studied
    monkeypatch.chdir(folder)  # the report goes to ./dashboards
    assert main(["promote", "small-tiny", "--top", "3", "--steps", "60", "--storage", url, "--ray-address",
                 ray_head, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["study"] == "small-tiny-promoted-tiny-60" and len(doc["pairs"]) == 3
    assert -1 <= doc["kendall_tau"] <= 1 and doc["kendall_tau_ci"][0] <= doc["kendall_tau_ci"][1]
    assert doc["regret"] >= 0 and sorted(p["promoted_rank"] for p in doc["pairs"]) == [1, 2, 3]
    promoted = stored_trials(url, doc["study"])
    proxy = {t.number: t for t in stored_trials(url, "small-tiny")}
    for t in promoted:  # each retrains its proxy trial's configuration, for the new number of steps
        source = proxy[t.user_attrs["promoted_from"]]
        assert t.params == source.params and max(t.intermediate_values) == 60
    import optuna_dashboard

    for name in ("small-tiny", doc["study"]):
        study = optuna.load_study(study_name=name, storage=url)
        note = optuna_dashboard.get_note(study)
        assert "## Promotion" in note and "Kendall's tau" in note
    assert main(["report", "small-tiny", doc["study"], "--storage", url]) == 0
    assert "report written to dashboards/compare-small-tiny-small-tiny-promoted-tiny-60.html" in capsys.readouterr().out
    assert (folder / "dashboards" / "compare-small-tiny-small-tiny-promoted-tiny-60.html").stat().st_size > 10_000


def test_kendalls_tau_and_the_regret_against_a_brute_force_count():
    proxy, promoted = [0.1, 0.2, 0.3, 0.4, 0.5], [0.3, 0.1, 0.2, 0.6, 0.5]
    stats = ranking_agreement(proxy, promoted, minimize=True)
    concordant = sum((a1 - a2) * (b1 - b2) > 0 for i, (a1, b1) in enumerate(zip(proxy, promoted, strict=True))
                     for a2, b2 in list(zip(proxy, promoted, strict=True))[i + 1:])
    assert stats["tau"] == pytest.approx((2 * concordant - 10) / 10)
    assert stats["pick"] == 0 and stats["regret"] == pytest.approx(0.2)  # the proxy's best is 3rd at the larger scale
    lo, hi = stats["tau_ci"]
    assert lo <= stats["tau"] <= hi


def test_a_worker_killed_after_a_checkpoint_resumes_from_it(ray_head, tmp_path):
    """The trial is retried from its last checkpoint, not from step 0: one trial throughout, its curve continuing."""
    url = f"sqlite:///{tmp_path / 'tcnsearch.db'}"
    path = write_study(tmp_path, train={"steps": 600, "eval_every": 50}, budget={"trials": 1, "max_concurrent": 1},
                       scheduler={"type": "none"}, checkpoint_every=1)
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    driver = subprocess.Popen(CLI + ["study", path, "--storage", url, "--ray-address", ray_head, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)

    def worker_after_two_checkpoints() -> int | None:
        for t in stored_trials(url, "small-tiny"):
            if t.state == TrialState.RUNNING and max(t.intermediate_values, default=0) >= 100:
                return t.user_attrs.get("pid")
        return None

    assert wait_for(lambda: worker_after_two_checkpoints() is not None or driver.poll() is not None, timeout=180)
    os.kill(worker_after_two_checkpoints(), signal.SIGKILL)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    (trial,) = stored_trials(url, "small-tiny")
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["resumed_from"] >= 100
    assert sorted(trial.intermediate_values) == list(range(50, 601, 50))  # one curve, continued
    # Steps trained by both attempts as their reports tell, plus at most one unreported interval of the killed
    # one: against the 600 + 100..600 of a retry from step 0.
    assert trial.user_attrs["steps_trained"] >= 600 and trial.user_attrs["steps_trained"] + 50 < 1.3 * 600
