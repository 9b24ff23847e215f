"""The best trials' weights as Optuna artifacts: kept for the best, removed as they fall out, read safely."""

import json
import os

import optuna
import pytest
import torch

from tcnsearch.compat import optuna as compat
from tcnsearch.errors import UserError
from tcnsearch.search import open_storage
from tcnsearch.search.artifacts import (
    ArtifactKeeper,
    artifact_folder,
    check_store,
    kept_artifacts,
    kept_weights,
    load_weights,
    open_store,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _weights(tmp_path, value: float):
    path = tmp_path / f"final-{value}.pt"
    torch.save({"model": {"w": torch.full((2,), value)}, "config": {"task": "assoc-recall"}, "step": 10}, path)
    return path


def test_the_folder_sits_beside_the_sqlite_database_unless_given(tmp_path):
    assert artifact_folder(f"sqlite:///{tmp_path / 'runs.db'}", None) == tmp_path / "runs-artifacts"
    assert artifact_folder("postgresql+psycopg://me@db/x", None).name == "tcnsearch-artifacts"
    assert artifact_folder("sqlite:///x.db", tmp_path / "mine") == tmp_path / "mine"


def test_a_folder_that_cannot_hold_artifacts_is_refused_and_nothing_is_created(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_store(tmp_path / "a-file")
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(UserError, match="not a writable folder"):
            check_store(locked / "inside")
    with pytest.raises(UserError, match="no such folder"):
        open_store(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists() and not (locked / "inside").exists()


@pytest.mark.parametrize("directions", [["minimize"], ["minimize", "minimize"]])
def test_the_store_keeps_the_best_and_removes_a_trial_that_falls_out(tmp_path, sqlite_url, directions):
    study = optuna.create_study(storage=open_storage(sqlite_url), directions=directions)
    store = open_store(tmp_path / "artifacts")
    keeper = ArtifactKeeper(study, store, keep_best=2)
    ids = {}
    for number, value in enumerate([3.0, 2.0, 5.0, 1.0]):
        trial = study.ask()
        study.tell(trial, [value, 10.0 - value] if len(directions) == 2 else value)  # a front of every trial
        # a finished trial: Optuna's storage refuses its attributes, so the meta must go to the study
        ids[number] = keeper.offer(number, _weights(tmp_path, value))
        assert keeper.offer(number, _weights(tmp_path, value)) == ids[number]  # offered twice: uploaded once
    assert ids[0] and ids[1] and ids[2] is None  # trial 2 was never among the best two
    trials = study.get_trials()
    kept = {t.number for t in trials if kept_artifacts(study, t)}
    assert kept == {1, 3} and len(os.listdir(tmp_path / "artifacts")) == 2  # trial 0 fell out when 3 arrived
    assert kept_weights(study) == {1: ids[1], 3: ids[3]}
    # where optuna-dashboard lists a trial's artifacts, and its convention for a removed one: the meta is null
    attrs = compat.system_attrs(study)
    assert attrs[f"dashboard:artifacts:{trials[0]._trial_id}:{ids[0]}"] == "null"
    assert json.loads(attrs[f"dashboard:artifacts:{trials[3]._trial_id}:{ids[3]}"])["filename"] == "final.pt"
    assert torch.equal(load_weights(store, ids[3])["model"]["w"], torch.full((2,), 1.0))


def test_keep_best_zero_keeps_nothing(tmp_path, sqlite_url):
    study = optuna.create_study(storage=open_storage(sqlite_url))
    study.tell(study.ask(), 1.0)
    assert ArtifactKeeper(study, open_store(tmp_path / "a"), 0).offer(0, _weights(tmp_path, 1.0)) is None
    assert os.listdir(tmp_path / "a") == []


def test_an_artifact_is_read_without_running_anything_in_it(tmp_path):
    store = open_store(tmp_path / "artifacts")
    torch.save({"model": _Planted(tmp_path / "PLANTED"), "config": {}}, tmp_path / "artifacts" / "crafted")
    (tmp_path / "artifacts" / "text").write_text("not weights")
    torch.save({"something": "else"}, tmp_path / "artifacts" / "foreign")
    for artifact_id, message in (("crafted", "not tcnsearch weights"), ("text", "not tcnsearch weights"),
                                 ("foreign", "expected the model's state and its config"),
                                 ("absent", "not in the artifact store")):
        with pytest.raises(UserError, match=message):
            load_weights(store, artifact_id)
    assert not (tmp_path / "PLANTED").exists()
