"""A study's trials in the database: which count against the budget, and writes that are safe to repeat."""

import threading
import time

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

from tcnsearch.compat import optuna as compat
from tcnsearch.errors import UserError
from tcnsearch.search import frozen, frozen_objective, is_frozen, open_storage, trained, trial_row
from tcnsearch.search.trials import (
    RETRY_OF,
    abandon,
    budget_lock,
    fail,
    freeze,
    occupied,
    retry_later,
    retrying,
    tell_once,
)
from tcnsearch.storage import create_engine
from tests.conftest import wait_for
from tests.search.conftest import survivor

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture
def study(sqlite_url):
    return optuna.create_study(study_name="t", storage=open_storage(sqlite_url, heartbeat_s=1))


def _with(study, state, **attrs) -> optuna.trial.FrozenTrial:
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1)})
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    if state == TrialState.COMPLETE:
        study.tell(trial, 1.0)
    elif state != TrialState.RUNNING:
        study.tell(trial, state=state)
    return study.trials[-1]


def test_the_budget_counts_trained_trials_finished_or_running_less_the_retried_failures(study):
    _with(study, TrialState.COMPLETE)
    _with(study, TrialState.PRUNED)
    _with(study, TrialState.RUNNING)
    failed = _with(study, TrialState.FAIL)
    _with(study, TrialState.FAIL)  # failed for good (a crash): it counts
    _with(study, TrialState.PRUNED, infeasible="K9-f5-D3-B1: survivor 0.3")  # never trained
    _with(study, TrialState.COMPLETE, warm_start_from="other#3")  # copied, not run here
    _with(study, TrialState.FAIL, abandoned="cut short")
    assert occupied(study.trials) == 5
    retry_later(study, failed)
    assert occupied(study.trials) == 4  # its retry counts once it runs
    assert [trained(t) for t in study.trials[-4:-1]] == [False, False, False]


def test_a_retry_is_queued_once_however_often_it_is_asked_for(study):
    failed = _with(study, TrialState.FAIL)
    for _ in range(3):
        retry_later(study, failed)
    queued = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.user_attrs[RETRY_OF] for t in queued] == [failed.number]
    assert queued[0].system_attrs["fixed_params"] == failed.params


def test_a_second_copy_of_a_retry_is_failed_as_abandoned(study):
    failed = _with(study, TrialState.FAIL)
    for _ in range(2):  # what Optuna's own retry of a creation whose answer was lost leaves behind
        study.enqueue_trial(dict(failed.params), user_attrs={RETRY_OF: failed.number}, skip_if_exists=False)
    retry_later(study, failed)
    copies = [t for t in study.trials if t.user_attrs.get(RETRY_OF) == failed.number]
    assert [t.state for t in copies] == [TrialState.WAITING, TrialState.FAIL]
    assert "abandoned" in copies[1].user_attrs and not trained(copies[1])


def test_told_failed_or_abandoned_twice_is_told_once(study):
    done = study.ask()
    tell_once(study, done, 0.5)
    tell_once(study, done, 0.9)  # a retried tell whose first attempt committed
    assert study.trials[-1].value == 0.5
    running = study.ask()
    fail(study, running, "interrupted", retry=True)
    fail(study, running, "interrupted again", retry=True)
    assert study.trials[running.number].user_attrs["fail_reason"] == "interrupted"
    assert sum(t.state == TrialState.WAITING for t in study.trials) == 1
    orphan = study.ask()
    abandon(study, compat.trial_id(orphan), "cut short")
    abandon(study, compat.trial_id(orphan), "again")
    assert study.trials[orphan.number].state == TrialState.FAIL
    assert study.trials[orphan.number].user_attrs["abandoned"] == "cut short"


def test_a_study_is_frozen_with_its_survivors_grid_and_objective(study):
    assert not is_frozen(study)
    survivors = [survivor(3, 2, 3), survivor(5, 4, 3, latency_ms=2.5)]
    grid = {"kernel_size": [5, 3], "dilation_factor": [2, 4], "depth": [3], "per_block": [1]}
    freeze(study, survivors, grid, {"metric": "loss", "mode": "min", "max_latency_ms": 3.0})
    again, again_grid = frozen(study)
    assert again == survivors and again_grid["kernel_size"] == [3, 5] and is_frozen(study)
    assert frozen_objective(study)["max_latency_ms"] == 3.0


def test_a_study_of_another_tool_or_an_earlier_version_is_named_as_such(study):
    with pytest.raises(UserError, match="was not created by tcnsearch study"):
        frozen(study)
    study.set_user_attr("survivors", [])
    with pytest.raises(UserError, match="created by an earlier tcnsearch.*--warm-start t"):
        frozen(study)


def test_a_trial_row_shows_what_the_table_and_the_json_need(study):
    row = trial_row(_with(study, TrialState.COMPLETE, tcn="K3-f2-D3-B1", latency_ms=1.5, pid=7))
    assert row["tcn"] == "K3-f2-D3-B1" and row["latency_ms"] == 1.5 and row["values"] == [1.0]
    assert "pid" not in row and row["state"] == "COMPLETE" and row["duration_s"] >= 0


def test_retrying_waits_out_a_lost_connection_and_nothing_else():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return "ok"

    assert retrying(flaky, "a test") == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        retrying(lambda: (_ for _ in ()).throw(ValueError("a real error")), "a test")
    start = time.monotonic()
    with pytest.raises(optuna.exceptions.StorageInternalError):
        retrying(lambda: (_ for _ in ()).throw(optuna.exceptions.StorageInternalError("down")), "a test",
                 patience_s=1.0)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_budget_lock_lets_one_driver_count_and_ask_at_a_time(backend, request):
    engine = create_engine(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    inside, overlaps = [], []

    def driver():
        for _ in range(5):
            with budget_lock(engine, "study"):
                inside.append(1)
                overlaps.append(len(inside))
                time.sleep(0.01)
                inside.pop()

    threads = [threading.Thread(target=driver) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 15 and max(overlaps) == 1
    engine.dispose()


def test_the_budget_lock_survives_a_connection_lost_while_it_is_held(pg_url, db_proxy):
    """The lock goes with the transaction: losing the connection releases it, and must not fail the work."""
    engine = create_engine(db_proxy.url(pg_url))
    with budget_lock(engine, "study"):
        db_proxy.cut(restore_after=1.0)
    assert wait_for(db_proxy.up.is_set, timeout=10)
    with budget_lock(engine, "study"), engine.connect() as conn:  # taken again at once
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()
