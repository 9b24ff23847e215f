"""A study's trials in the database, without Ray: the storage, which trials count, how one is told, retried,
failed, and shown, and the survivors a study is frozen with.

Every write here may be retried after a lost connection (`retrying`), so every write is safe to
repeat: a tell whose first attempt committed but whose answer was lost finds the trial finished
and stops (`tell_once`), and a trial is queued again at most once (`retry_later`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import optuna
from optuna.trial import TrialState
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from tcnsearch.compat import optuna as optuna_private
from tcnsearch.errors import UserError
from tcnsearch.profile import Survivor
from tcnsearch.search.space import INFEASIBLE
from tcnsearch.storage import create_engine, exclusive, masked, read_only_url, resolve_url

T = TypeVar("T")
log = logging.getLogger(__name__)

LATENCY = "latency_ms"  # user attr and second objective: the TCN's profiled time at the study's shapes
RETRY_OF = "retry_of"  # user attr of a re-queued trial: the number of the trial it repeats
FAIL_REASON = "fail_reason"
WARM_START = "warm_start_from"  # user attr of a trial copied from another study: "study#number"
ABANDONED = "abandoned"  # user attr of a trial whose proposal was cut short (a lost connection): why
# System attributes of a study: what it was created with (long, so not among the user attributes).
SURVIVORS = "tcnsearch:survivors"  # the survivor records (profile.Survivor) it may train, frozen at creation
GRID = "tcnsearch:grid"  # the profile grid's values per axis: what the sampler draws K, f, D, B from
OBJECTIVE = "tcnsearch:objective"  # the study file's objective, with its latency budget
DOCUMENT = "tcnsearch:study_file"  # the study file's document, presets and all (promote builds it at another preset)
PROMOTED_FROM = "promoted_from"  # user attr of a promoted trial: the trial of the proxy study it retrains


def retry_later(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a new trial with `trial`'s parameters (Optuna's stale-trial callback, and ours on Ctrl-C), once.

    Safe to repeat; and where Optuna itself made two copies (it retries a creation whose answer was
    lost, though the first had committed), the later copies are failed as duplicates."""
    def copies():
        return sorted((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(RETRY_OF) == trial.number),
                      key=lambda t: t.number)

    if not copies():
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number}, skip_if_exists=False)
    for extra in copies()[1:]:
        abandon(study, extra._trial_id, f"a second copy of the retry of trial {trial.number} (the database "
                                        "connection was lost as it was queued)")


def tell_once(study: optuna.Study, trial: optuna.Trial, values=None, state: TrialState | None = None) -> None:
    """study.tell, safe to retry: a trial that is already finished (a tell that committed before the
    connection was lost, or another driver that failed it as stale) is left as it is."""
    study.tell(trial, values, state=state, skip_if_finished=True)


def stored_trial(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    return optuna_private.storage_of(study).get_trial(optuna_private.trial_id(trial))


def fail(study: optuna.Study, trial: optuna.Trial, reason: str, retry: bool = False) -> None:
    """Fail `trial` with `reason` (user attribute `fail_reason`), and queue it again if `retry`. Safe to repeat."""
    if stored_trial(study, trial).state == TrialState.RUNNING:
        trial.set_user_attr(FAIL_REASON, reason[:2000])
        tell_once(study, trial, state=TrialState.FAIL)
    if retry:
        retry_later(study, stored_trial(study, trial))


def abandon(study: optuna.Study, trial_id: int, reason: str) -> None:
    """Fail a trial that was never handed to Ray (its proposal was cut short, or it is a copy Optuna made
    twice): it trained nothing, counts against no budget and is not queued again. Safe to repeat."""
    storage = optuna_private.storage_of(study)
    if storage.get_trial(trial_id).state in (TrialState.RUNNING, TrialState.WAITING):
        storage.set_trial_user_attr(trial_id, ABANDONED, reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


def abandon_orphans(study: optuna.Study, older_than_s: float) -> int:
    """Fail the RUNNING trials that no driver ever beat for (created while the database was cut; a driver
    beats for its trial the moment it exists); returns how many."""
    orphans = optuna_private.running_without_heartbeat(study, older_than_s)
    for trial_id in orphans:
        abandon(study, trial_id, "nobody's trial: created while the database connection was lost")
    return len(orphans)


def is_frozen(study: optuna.Study) -> bool:
    """Whether `study` holds frozen survivors (tcnsearch created it)."""
    return SURVIVORS in optuna_private.system_attrs(study)


def freeze(study: optuna.Study, survivors: list[Survivor], grid: dict[str, list[int]], objective: dict,
           document: dict | None = None) -> None:
    """Store the survivors a new study may train, the grid they come from (its parameter space), its
    objective, and the study file's document it was built from."""
    optuna_private.set_system_attr(study, SURVIVORS, [s.to_record() for s in survivors])
    optuna_private.set_system_attr(study, GRID, {k: sorted(v) for k, v in grid.items()})
    optuna_private.set_system_attr(study, OBJECTIVE, objective)
    if document is not None:
        optuna_private.set_system_attr(study, DOCUMENT, document)


def frozen_document(study: optuna.Study) -> dict | None:
    """The study file's document a study was built from (None: not stored)."""
    return optuna_private.system_attrs(study).get(DOCUMENT)


def frozen_objective(study: optuna.Study) -> dict:
    """The objective a study was created with ({} for a study tcnsearch did not create)."""
    return optuna_private.system_attrs(study).get(OBJECTIVE, {})


def frozen(study: optuna.Study) -> tuple[list[Survivor], dict[str, list[int]]]:
    """The survivors and grid `study` was created with.

    Raises:
        UserError: a study that tcnsearch did not create, or an earlier version did (survivors stored
            as a user attribute).
    """
    attrs = optuna_private.system_attrs(study)
    if SURVIVORS not in attrs:
        why = ("was created by an earlier tcnsearch (its survivors are a user attribute)"
               if "survivors" in study.user_attrs else "was not created by tcnsearch study (it has no survivors)")
        raise UserError(f"study {study.study_name!r} {why}; start a new study with tcnsearch study --study-name "
                        f"NAME --warm-start {study.study_name} to carry its trials over")
    return [Survivor.from_record(r) for r in attrs[SURVIVORS]], attrs[GRID]


def trained(t: optuna.trial.FrozenTrial) -> bool:
    """A trial of this study's own that trained (or trains) a model: not an infeasible proposal, not a copy,
    not an abandoned proposal."""
    return not (INFEASIBLE in t.user_attrs or WARM_START in t.user_attrs or ABANDONED in t.user_attrs)


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
    # A clear UserError, and SQLite's WAL mode (which persists in the file); the check's own connection is
    # closed at once rather than left to the garbage collector (a server counts its clients).
    create_engine(url, read_only=read_only).dispose()
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


@contextlib.contextmanager
def opened_storage(url: str, heartbeat_s: int | None = None,
                   read_only: bool = False) -> Iterator[optuna.storages.RDBStorage]:
    """open_storage for a with-block: its connections are closed at the end, not left to the garbage
    collector (a caller in one process, a notebook or the tests, opens many; a server counts them)."""
    rdb = open_storage(url, heartbeat_s, read_only)
    try:
        yield rdb
    finally:
        rdb.engine.dispose()


def load_study(name: str, storage: str | None = None, read_only: bool = True) -> optuna.Study:
    """The stored study `name` (read-only unless told), or a UserError naming the studies there are."""
    url = resolve_url(storage)
    rdb = open_storage(url, read_only=True)
    try:
        names = optuna.get_all_study_names(rdb)  # not the summaries: they read every trial of every study
    except Exception as err:  # noqa: BLE001 - a database without Optuna's tables: another application's
        raise UserError(f"{masked(url)} holds no Optuna studies ({type(err).__name__}); pass --storage the "
                        "database your study wrote to") from None
    if name not in names:
        raise UserError(f"no study {name!r} in {masked(url)}; stored studies: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=rdb if read_only else open_storage(url))


def stored_studies(url: str) -> list[str]:
    """The names of the studies stored at `url`, read-only ([] where there is no database or no Optuna tables)."""
    try:
        with opened_storage(url, read_only=True) as rdb:
            return optuna.get_all_study_names(rdb)
    except Exception:  # noqa: BLE001 - no file, no Optuna tables, unreachable: nothing stored to refuse
        return []


def trial_row(t: optuna.trial.FrozenTrial) -> dict:
    """A trial as the CLI's table and JSON show it."""
    row = {"number": t.number, "state": t.state.name, "values": t.values, "params": dict(t.params),
           "duration_s": t.duration.total_seconds() if t.duration else None}
    if t.constraints:
        row["constraints"] = dict(t.constraints)
    for key in ("tcn", LATENCY, "tcn_fwdbwd_ms", "speedup_fwdbwd", "speedup_fwd", "speedup_fwdbwd_ci",
                "speedup_fwd_ci", "source", "decision", "level", "receptive_field", "num_parameters", "device", "host",
                "ray_node", "train_device", "resumed_from", "steps_trained", FAIL_REASON, RETRY_OF, INFEASIBLE,
                WARM_START, ABANDONED, PROMOTED_FROM, "repaired_from"):
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


def budget_lock(engine: Engine, key: str) -> contextlib.AbstractContextManager[None]:
    """Serialise "count the trials, then ask for one" across drivers sharing a study."""
    return exclusive(engine, key)
