"""From a study's pick to a training config: which trial, what is carried, and what is refused."""

import optuna
import pytest
import yaml

from tcnsearch.errors import UserError
from tcnsearch.search.export import choose_trial, config_for, export_config, pick, read_export, write_export
from tcnsearch.structure import Structure
from tests.search.conftest import finished_study

optuna.logging.set_verbosity(optuna.logging.ERROR)
def test_the_best_trial_by_default_and_a_chosen_one_that_finished(tmp_path, sqlite_url):
    _, study = finished_study(tmp_path, sqlite_url)
    assert choose_trial(study, None).number == 1 and choose_trial(study, 0).number == 0
    for number, message in ((9, "has no trial 9"), (2, "did not finish its training"),
                            (3, "did not finish its training \\(PRUNED\\)")):
        with pytest.raises(UserError, match=message):
            choose_trial(study, number)


def test_a_pareto_study_needs_a_trial_and_names_its_front(tmp_path, sqlite_url):
    _, study = finished_study(tmp_path, sqlite_url, directions=("minimize", "minimize"), name="pareto")
    with pytest.raises(UserError, match=r"choose a trial of its Pareto front with --trial N: #1 \(K3-f2-D3-B1"):
        choose_trial(study, None)
    assert choose_trial(study, 0).number == 0


def test_an_export_reproduces_the_trials_config_and_carries_its_pick_to_another_preset(tmp_path, sqlite_url):
    spec, study = finished_study(tmp_path, sqlite_url)
    trial = choose_trial(study, None)
    doc = export_config(study, trial, sqlite_url, tmp_path / "artifacts")
    path = write_export(doc, tmp_path / "pick.yaml")
    assert path.read_text().startswith("# Exported by tcnsearch")
    again = read_export(path)
    assert again == doc and doc["searched"]["model.tcn"] == Structure(3, 2, 3, 1).as_dict()
    prov = doc["provenance"]
    assert (prov["study"], prov["trial"], prov["objective"]["value"]) == ("exported", 1, 0.2)
    assert prov["speedup_fwdbwd_ci"] == [1.9, 2.1] and prov["latency_ms"] == 5 and prov["artifact"] is None
    same = config_for(again)  # at the trial's preset: exactly the model it trained
    assert same == spec.trial_config({"lr": 4e-3, "model.dropout": 0.1}, Structure(3, 2, 3, 1))
    paper = config_for(again, "paper")  # at the paper's sizes: the pick, not the proxy's widths
    assert paper.model.tcn.structure == Structure(3, 2, 3, 1) and paper.lr == 4e-3 and paper.model.dropout == 0.1
    assert paper.model.d_model == 32 and paper.steps == 20000  # the paper preset's, not the study file's 24


def test_a_malformed_export_is_refused_in_one_line(tmp_path):
    for text, message in (("- a list\n", "not an exported training config"), ("task: nope\n", "task"),
                          (yaml.safe_dump({"task": "assoc-recall", "preset": "tiny"}), "searched"),
                          (yaml.safe_dump({"task": "assoc-recall", "preset": "tiny", "searched": {}, "x": 1}), "x")):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(UserError, match=message) as err:
            read_export(tmp_path / "bad.yaml")
        assert "\n" not in str(err.value)


def test_what_to_train_is_refused_before_anything_trains(tmp_path, sqlite_url):
    _, study = finished_study(tmp_path, sqlite_url)
    write_export(export_config(study, choose_trial(study, None), sqlite_url), tmp_path / "pick.yaml")
    cases = [(dict(config=tmp_path / "pick.yaml", from_study="exported"), "not both"),
             (dict(trial=1), "need --config FILE or --from-study STUDY"),
             (dict(from_study="absent", storage=sqlite_url), "no study 'absent'"),
             (dict(from_study="exported", storage=sqlite_url, trial=2), "did not finish"),
             (dict(from_study="exported", storage=sqlite_url, init_from_artifact=True), "kept no weights")]
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message):
            pick("assoc-recall", **kwargs)
    with pytest.raises(UserError, match="the config is for task 'assoc-recall', not 'enwik8'"):
        pick("enwik8", config=tmp_path / "pick.yaml")
    cfg, weights, doc = pick("assoc-recall", from_study="exported", storage=sqlite_url, preset="cpu",
                             overrides={"steps": 7})
    assert cfg.steps == 7 and weights is None and cfg.model.tcn.structure == Structure(3, 2, 3, 1)
