"""The Optuna side of a study, without Ray: the storage, the trial bookkeeping, the summary."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from tcnsearch.errors import UserError
from tcnsearch.search._structure import INFEASIBLE
from tcnsearch.storage import create_engine, masked, read_only_url

T = TypeVar("T")
log = logging.getLogger(__name__)

LATENCY = "latency_ms"  # user attr and second objective: the TCN's profiled time at the study's shapes
RETRY_OF = "retry_of"  # user attr of a re-queued trial: the number of the trial it repeats
FAIL_REASON = "fail_reason"
WARM_START = "warm_start_from"  # user attr of a trial copied from another study: "study#number"


def retry_later(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a new trial with `trial`'s parameters (Optuna's stale-trial callback, and ours on Ctrl-C)."""
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number}, skip_if_exists=False)


def trained(t: optuna.trial.FrozenTrial) -> bool:
    """A trial of this study's own that trained (or trains) a model: not an infeasible proposal, not a copy."""
    return INFEASIBLE not in t.user_attrs and WARM_START not in t.user_attrs


def occupied(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trials that count against the budget: trained, finished or running, less the failures re-queued."""
    retried = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    return sum(1 for t in trials if trained(t) and (
        t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        or (t.state == TrialState.FAIL and t.number not in retried)))




def open_storage(url: str, heartbeat_s: int | None = None, read_only: bool = False) -> optuna.storages.RDBStorage:
    """Optuna's storage on `url`, with heartbeats so a killed driver's trials go stale and are re-queued.

    With `read_only` (report, dashboard), nothing is created: no SQLite file, no Optuna tables.

    Raises:
        UserError: the database is unreachable, missing (read_only), or holds no Optuna studies (read_only).
    """
    create_engine(url, read_only=read_only)  # a clear UserError; SQLite's WAL mode, which persists in the file
    kwargs: dict = {"engine_kwargs": {"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                    else {"pool_pre_ping": True}}
    if read_only:
        try:
            return optuna.storages.RDBStorage(read_only_url(url), skip_table_creation=True,
                                              skip_compatibility_check=True, **kwargs)
        except Exception:  # noqa: BLE001 - Optuna wraps what SQLAlchemy says about its missing tables
            raise UserError(f"{masked(url)} holds no Optuna studies; pass --storage the database your study "
                            "wrote to") from None
    if heartbeat_s:
        kwargs |= {"heartbeat_interval": heartbeat_s, "grace_period": 3 * heartbeat_s,
                   "heartbeat_stale_trial_callback": retry_later}
    return optuna.storages.RDBStorage(url, **kwargs)


def trial_row(t: optuna.trial.FrozenTrial) -> dict:
    """A trial as the CLI's table and JSON show it."""
    row = {"number": t.number, "state": t.state.name, "values": t.values, "params": dict(t.params),
           "duration_s": t.duration.total_seconds() if t.duration else None}
    if t.constraints:
        row["constraints"] = dict(t.constraints)
    for key in ("tcn", LATENCY, "tcn_fwdbwd_ms", "speedup_fwdbwd", "speedup_fwd", "speedup_fwdbwd_ci",
                "speedup_fwd_ci", "source", "decision", "level", "receptive_field", "num_parameters", "device", "host",
                "ray_node", FAIL_REASON, RETRY_OF, INFEASIBLE, WARM_START, "repaired_from"):
        if key in t.user_attrs:
            row[key] = t.user_attrs[key]
    return row


def retrying(call: Callable[[], T], what: str, patience_s: float = 120.0) -> T:
    """`call()`, retried with backoff while the database is unreachable (a restart, a network blip).

    Optuna reports a lost connection as StorageInternalError (from SQLAlchemy's OperationalError);
    anything else is a real error and is raised at once.
    """
    deadline, delay = time.monotonic() + patience_s, 0.5
    while True:
        try:
            return call()
        except (optuna.exceptions.StorageInternalError, OperationalError) as err:
            if time.monotonic() > deadline:
                raise
            log.warning("database unreachable during %s (%s); retrying in %.1f s", what,
                        str(err).splitlines()[0][:200], delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


@contextlib.contextmanager
def budget_lock(engine: Engine, key: str) -> Iterator[None]:
    """Serialise "count the trials, then ask for one" across drivers sharing a study.

    PostgreSQL: a transaction-scoped advisory lock per key; SQLite (one machine): one lock file
    beside the database.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key.encode())})
            yield
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        # one lock file per database, whatever the key: SQLite serialises its writers anyway
        with open(f"{engine.url.database}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield
