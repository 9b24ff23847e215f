"""The searcher without Ray: Tune's calls made by hand against a real PostgreSQL study, and the database cut
at exactly the moment that used to lose a finished trial's result."""

import optuna
import pytest
from optuna.trial import TrialState

from tcnsearch.search import LATENCY, StructureSpace, load_spec, open_storage, trained
from tcnsearch.search.searcher import StudySearcher
from tcnsearch.search.trials import occupied
from tcnsearch.storage import create_engine
from tests.search.conftest import survivor, write_study

GRID = {"kernel_size": [3], "dilation_factor": [2, 4], "depth": [2, 3], "per_block": [1]}


def _searcher(url: str, tmp_path, target: int = 3) -> StudySearcher:
    spec = load_spec(write_study(tmp_path, heartbeat_s=1))
    survivors = [survivor(3, f, d, 1, latency_ms=f * d) for f in (2, 4) for d in (2, 3)]
    storage = open_storage(url, spec.heartbeat_s)
    study = optuna.create_study(study_name=tmp_path.name, storage=storage, sampler=spec.sampler.build())
    _ENGINES.extend([storage.engine, engine := create_engine(url)])
    return StudySearcher(study, spec, StructureSpace(GRID, survivors), target, False, LATENCY, engine=engine,
                         trial_attrs={"device": "cpu: test", "level": "model"})


_ENGINES: list = []


@pytest.fixture(autouse=True)
def _close_connections():
    """Each test's connections closed with it (not left to the garbage collector, mid-way through another)."""
    yield
    while _ENGINES:
        _ENGINES.pop().dispose()


def _stored(searcher) -> list[optuna.trial.FrozenTrial]:
    return [t for t in searcher.study.get_trials(deepcopy=False) if trained(t)]


def _run(searcher, tune_id: str, final: bool = True, loss: float = 0.5) -> dict:
    """Suggest, report two evaluations, and return the last result (not yet completed)."""
    config = searcher.suggest(tune_id)
    assert config["train"]["task"] == "assoc-recall" and config["checkpoint_every"] == 0
    searcher.on_trial_result(tune_id, {"step": 10, "loss": 1.0, "num_parameters": 123, "host": "h",
                                       "ray_node": "n", "pid": 42, "train_device": "cpu"})
    return {"step": 40 if final else 20, "loss": loss, "final": final}


def test_a_trial_is_proposed_with_its_structure_and_told_its_outcome(pg_url, tmp_path):
    searcher = _searcher(pg_url, tmp_path)
    last = _run(searcher, "a")
    (running,) = _stored(searcher)
    assert running.state == TrialState.RUNNING and searcher.running_trial_ids() == [running._trial_id]
    assert running.user_attrs["tcn"] in {"K3-f2-D2-B1", "K3-f2-D3-B1", "K3-f4-D2-B1", "K3-f4-D3-B1"}
    assert running.user_attrs["device"] == "cpu: test" and running.user_attrs["pid"] == 42
    assert running.intermediate_values == {10: 1.0}
    searcher.on_trial_complete("a", last)
    searcher.on_trial_complete("b", {"step": 40, "loss": 0.1, "final": True})  # not ours: ignored
    (done,) = _stored(searcher)
    assert done.state == TrialState.COMPLETE and done.value == 0.5 and done.intermediate_values == {10: 1.0, 40: 0.5}
    assert searcher.finished == 1 and searcher.outcomes["COMPLETE"] == 1 and searcher.best == (0.5, done.number)
    assert searcher.running_trial_ids() == []

    searcher.on_trial_complete("c", _run(searcher, "c", final=False))  # stopped early by the scheduler
    searcher.suggest("d")
    searcher.on_trial_complete("d", None, error=True)
    states = [t.state for t in _stored(searcher)]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert _stored(searcher)[-1].user_attrs["fail_reason"] == "the trial raised an error (see the Ray logs)"
    assert searcher.suggest("e") == "FINISHED"  # three of three


@pytest.mark.slow
@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "answer-lost"])
def test_the_database_cut_exactly_while_a_trial_is_told_loses_nothing(pg_url, tmp_path, db_proxy, after_commit):
    """The regression behind 'trial 0 left RUNNING': a tell that failed was retried from the start of
    on_trial_complete, found the trial already forgotten, and returned as if it had been told."""
    searcher = _searcher(db_proxy.url(pg_url), tmp_path)
    last = _run(searcher, "a")
    db_proxy.cut_at(b"INSERT INTO trial_values", after_commit=after_commit, restore_after=2.0)
    searcher.on_trial_complete("a", last)  # retried until the database is back
    assert db_proxy.cuts == 1
    (trial,) = _stored(searcher)
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5
    assert searcher.finished == 1 and searcher.outcomes == {"COMPLETE": 1, "PRUNED": 0, "FAIL": 0}
    assert searcher.running_trial_ids() == [] and searcher.last == {}


@pytest.mark.slow
def test_a_failure_told_through_a_cut_is_stored_once_and_queued_once(pg_url, tmp_path, db_proxy):
    searcher = _searcher(db_proxy.url(pg_url), tmp_path)
    searcher.suggest("a")
    db_proxy.cut_at(b"INSERT INTO trials", after_commit=True, restore_after=2.0)  # the re-queued copy
    assert searcher.interrupt_all() == 1
    trials = searcher.study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL and trained(t)]
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"].startswith("interrupted")
    assert [t.user_attrs["retry_of"] for t in queued] == [failed[0].number]  # once, though the call ran twice
    # Optuna retries a creation whose answer was lost, so its first copy exists too: failed, never trained.
    copies = [t for t in trials if "abandoned" in t.user_attrs]
    assert all(t.state == TrialState.FAIL and t.user_attrs["retry_of"] == failed[0].number for t in copies)
    assert occupied(trials) == 0  # the failure is queued again: its copy counts once it runs


@pytest.mark.slow
def test_a_proposal_cut_short_is_failed_as_abandoned_never_left_running(pg_url, tmp_path, db_proxy):
    searcher = _searcher(db_proxy.url(pg_url), tmp_path)
    db_proxy.cut_at(b"INSERT INTO trial_params", restore_after=2.0)  # the ask exists, its parameters do not
    config = searcher.suggest("a")  # retried: a second proposal
    trials = searcher.study.get_trials(deepcopy=False)
    abandoned = [t for t in trials if "abandoned" in t.user_attrs]
    assert len(abandoned) == 1 and abandoned[0].state == TrialState.FAIL and not trained(abandoned[0])
    (running,) = [t for t in trials if t.state == TrialState.RUNNING]
    assert config["optuna_trial"] == running.number and occupied(trials) == 1  # the abandoned one costs nothing


@pytest.mark.slow
def test_a_trial_optuna_created_twice_is_swept_not_left_running(pg_url, tmp_path, db_proxy):
    """The answer to a trial's creation lost: Optuna creates it again, and the first copy is nobody's (no
    heartbeat). A later suggestion fails it as abandoned once it is older than the driver's patience."""
    searcher = _searcher(db_proxy.url(pg_url), tmp_path)
    db_proxy.cut_at(b"INSERT INTO trials", after_commit=True, restore_after=1.0)
    searcher.suggest("a")
    trials = searcher.study.get_trials(deepcopy=False)
    assert len([t for t in trials if t.state == TrialState.RUNNING]) == 2  # ours, and Optuna's first copy
    searcher.patience_s = 0.0  # what a later suggestion sees, the patience (minutes) past
    searcher.suggest("b")
    trials = searcher.study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    assert {t.number for t in running} == {searcher.trials["a"].number, searcher.trials["b"].number}
    (orphan,) = [t for t in trials if "abandoned" in t.user_attrs]
    assert orphan.state == TrialState.FAIL and "nobody's trial" in orphan.user_attrs["abandoned"]
