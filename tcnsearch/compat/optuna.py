"""Optuna 5 private API that tcnsearch relies on (pinned: optuna>=5.1,<6; tests/test_compat.py).

- A trial's storage id (`Trial._trial_id`): heartbeats and re-reading a trial from storage need it,
  and Optuna exposes only the trial's number.
- A study's system attributes (`Study._study_id` with the storage's public get/set of them): Optuna 5
  removed `Study.system_attrs`; a study keeps its frozen survivors there (long, so not among the user
  attributes that optuna-dashboard lists), as optuna-dashboard keeps its notes and figures.
- The storage behind a study (`Study._storage`): the stale-trial callback and a retried tell read
  the stored trial; Optuna gives it to the heartbeat API and to callbacks only.
- Whether a value lies in a distribution (`BaseDistribution._contains`): copying trials between
  studies whose spaces differ (`--warm-start`).
- Which RUNNING trials never recorded a heartbeat (Optuna's `trial_heartbeats` table): Optuna's own
  stale-trial sweep skips them, so a trial whose creation committed while its answer was lost (Optuna
  retries the creation, and the first copy is nobody's) would stay RUNNING for ever.
- GPSampler's fit-and-propose (`_sample_relative_impl`), its start-up count (`_n_startup_trials`)
  and an uncached trial list (`Study._get_trials(use_cache=False)`): tcnsearch's GP fits the
  trials ASHA stopped as well, which GPSampler offers no hook for.
- How many trials a study holds, counted by the database (RDBStorage's `get_n_trials` reads every
  trial to count them, which a resumed study of thousands does not need).
- Optuna's cache of finished trials over an RDBStorage (`storages._CachedStorage`, what a study
  opened on an RDBStorage reads through): for optuna-dashboard, which otherwise reads a study's
  every trial again each time its 10 s cache of them expires.
- The non-domination rank of loss values (`_fast_non_domination_rank`): which trials are the best of
  a big study, the ones its GP keeps fitting.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id


def storage_of(study: optuna.Study) -> BaseStorage:
    return study._storage


def system_attrs(study: optuna.Study) -> dict:
    return study._storage.get_study_system_attrs(study._study_id)


def set_system_attr(study: optuna.Study, key: str, value) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def contains(distribution: BaseDistribution, value) -> bool:
    """Whether `value` is one `distribution` can produce (False for a value of another type)."""
    try:
        return distribution._contains(distribution.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def trials_uncached(study: optuna.Study, states: tuple[TrialState, ...]) -> list[FrozenTrial]:
    """The study's trials in `states`, read afresh from storage (not the sampler's per-ask cache)."""
    return study._get_trials(deepcopy=False, use_cache=False, states=states)


def gp_startup_trials(sampler: optuna.samplers.GPSampler) -> int:
    return sampler._n_startup_trials


def gp_sample(sampler: optuna.samplers.GPSampler, study: optuna.Study, finished: list[FrozenTrial],
              running: list[FrozenTrial], search_space: dict) -> dict:
    """GPSampler's own fit on `finished` (pending points: `running`) and its proposal in `search_space`."""
    return sampler._sample_relative_impl(study, finished, running, search_space)


def cached(storage: optuna.storages.RDBStorage) -> BaseStorage:
    """`storage` behind Optuna's cache of finished trials (which Optuna never changes): each read of a study's
    trials after the first fetches only the unfinished and the new ones."""
    return optuna.storages._CachedStorage(storage)


def trial_count(study: optuna.Study) -> int:
    """How many trials `study` holds: a COUNT in the database on an RDBStorage, else the trials read."""
    rdb = getattr(study._storage, "_backend", study._storage)  # optuna wraps an RDBStorage in a cache
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return len(study.get_trials(deepcopy=False))
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    session = rdb.scoped_session()
    try:
        count = session.scalar(sa.select(sa.func.count(models.TrialModel.trial_id))
                               .where(models.TrialModel.study_id == study._study_id))
        session.commit()
    finally:
        session.close()
    return int(count)


def nondomination_rank(losses: np.ndarray, n_below: int) -> np.ndarray:
    """Each row's non-domination rank among `losses` (n, objectives; lower is better; 0: on the front), exact
    for the best `n_below` rows and worse than theirs for the others."""
    from optuna.study._multi_objective import _fast_non_domination_rank

    return _fast_non_domination_rank(losses, n_below=n_below)


def running_without_heartbeat(study: optuna.Study, older_than_s: float) -> list[int]:
    """Storage ids of the study's RUNNING trials that started more than `older_than_s` ago (by this
    machine's clock, as Optuna stamps them; stored in UTC) and never recorded a heartbeat; [] on other
    storages."""
    storage = study._storage
    rdb = getattr(storage, "_backend", storage)  # optuna wraps an RDBStorage in a cache
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return []
    from optuna.storages._rdb import models

    cutoff = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=older_than_s)
    session = rdb.scoped_session()
    try:
        rows = (session.query(models.TrialModel.trial_id)
                .outerjoin(models.TrialHeartbeatModel,
                           models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study._study_id,
                        models.TrialModel.state == TrialState.RUNNING,
                        models.TrialHeartbeatModel.trial_heartbeat_id.is_(None),
                        models.TrialModel._datetime_start_utc < cutoff)
                .all())
        session.commit()
    finally:
        session.close()
    return [r[0] for r in rows]
