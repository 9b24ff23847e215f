"""A Ray Tune searcher that is an Optuna study: ask on suggest, report on each result, tell at the end.

Ray's stock OptunaSearch tells Optuna COMPLETE with the last value for a trial ASHA stopped
early, which the sampler and the dashboard then take for a full-budget result. Here:

- a trial that reached its last step             -> COMPLETE with its final value(s)
- a trial the scheduler stopped early            -> PRUNED, its evaluations as intermediate values
- a trial that raised or reached a non-finite loss -> FAIL, the reason in user attr `fail_reason`
- a trial the driver was stopped in the middle of -> FAIL (`interrupted`), and re-queued with the
  same parameters so that `--resume` runs it again; a driver killed outright leaves its trials
  to go stale (no heartbeat), and the next driver fails and re-queues them the same way.

The study, not Ray, holds the state: the count of finished trials decides when the search is
done, so several drivers can share one study and a resumed driver runs only what is missing.

Every database call is retried while the database is unreachable (trials.retrying), so each of
Tune's callbacks here is safe to run again from its start: a trial is forgotten only once its
outcome is stored, a tell that committed before its answer was lost is not told twice, and a
trial asked for by a suggestion that then failed is failed as abandoned, never left RUNNING.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from contextlib import nullcontext

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.search import Searcher

from tcnsearch.compat import optuna as optuna_private
from tcnsearch.search.artifacts import ArtifactKeeper
from tcnsearch.search.space import Proposer, StructureSpace
from tcnsearch.search.spec import StudySpec
from tcnsearch.search.trials import abandon, abandon_orphans, budget_lock, fail, occupied, retrying, tell_once
from tcnsearch.train.checkpoint import FINAL_FILE

log = logging.getLogger(__name__)
TRIAL_ATTRS = ("num_parameters", "host", "ray_node", "pid", "train_device")  # what a trial's first report names


class StudySearcher(Searcher):
    """Suggests Tune configs from `study` and writes every outcome back to it.

    Args:
        study: the Optuna study (on an RDBStorage with heartbeats).
        spec: the study spec; its space and objective.
        space: the structures (K, f, D, B) the sampler may propose and those it may train.
        target: finished trials the study should hold.
        multi_objective: minimise the objective and the TCN's profiled latency together.
        latency_key: the user attribute holding a trial's profiled latency (its second objective).
        engine: the database engine, for the lock that serialises asks across drivers.
        trial_attrs: user attributes every trial carries (the profile's device and level).
        checkpoint_every: evaluations between a trial's checkpoints (0: none).
        keeper: keeps the final weights of the best trials as artifacts (None: none are kept).
    """

    def __init__(self, study: optuna.Study, spec: StudySpec, space: StructureSpace, target: int,
                 multi_objective: bool, latency_key: str, engine=None, trial_attrs: dict | None = None,
                 checkpoint_every: int = 0, keeper: ArtifactKeeper | None = None):
        metric, mode = spec.objective.metric, spec.objective.mode
        super().__init__(metric=metric, mode=mode)
        self.study, self.spec, self.target, self.engine = study, spec, target, engine
        self.storage = optuna_private.storage_of(study)
        self.trial_attrs, self.checkpoint_every, self.keeper = trial_attrs or {}, checkpoint_every, keeper
        # How long to wait for another driver's running trials (they finish, or go stale and come back).
        self.patience_s, self.waiting_since = 10 * 3 * spec.heartbeat_s + 60, None
        self.proposer = Proposer(study, space, on_ask=self._beat)
        self.multi_objective, self.latency_key = multi_objective, latency_key
        self.trials: dict[str, optuna.Trial] = {}  # Tune trial id -> Optuna trial
        self.last: dict[str, dict] = {}
        self.attempts: dict[str, dict] = {}  # Tune trial -> {attempt: (its first step, its last reported)}
        self.orphans: list[int] = []  # trials asked by a suggestion that failed: to fail as abandoned
        self.tune_trials: dict = {}  # Tune trial id -> Tune Trial, filled by the runner's callback
        self.lock = threading.Lock()  # the heartbeat thread reads `trials`
        self.finished = 0  # trials this driver brought to an end (other drivers' are not ours to count)
        self.outcomes = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}  # this driver's, for the progress line
        self.best: tuple[float, int] | None = None  # (value, trial number) of this driver's best, single-objective

    # -- Tune's side ----------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | None:
        return retrying(lambda: self._suggest(trial_id), "suggest")

    def _suggest(self, trial_id: str) -> dict | None:
        self._fail_orphans()
        # Our own trials first: after a database outage longer than the grace period their last beat
        # is old, and the stale-trial sweep below must not take them for a dead driver's.
        self.beat_running()
        optuna.storages.fail_stale_trials(self.study)
        lock = budget_lock(self.engine, self.study.study_name) if self.engine is not None else nullcontext()
        trial = None
        try:
            with lock:  # another driver must not ask between our count and our ask
                trials = self.study.get_trials(deepcopy=False)
                if occupied(trials) >= self.target:
                    # Another driver's running trials may still fail and come back: wait for them.
                    mine = {t.number for t in self.trials.values()}
                    others = [t for t in trials if t.state == TrialState.RUNNING and t.number not in mine]
                    self.waiting_since = self.waiting_since or time.monotonic()
                    if others and time.monotonic() - self.waiting_since < self.patience_s:
                        return None
                    return Searcher.FINISHED
                if isinstance(self.study.sampler, optuna.samplers.GridSampler) and \
                        self.study.sampler.is_exhausted(self.study):
                    return Searcher.FINISHED
                try:
                    trial, chosen, values = self.proposer.ask(
                        lambda trial: {key: param.suggest(trial, key) for key, param in self.spec.space.items()})
                finally:
                    self.orphans += [optuna_private.trial_id(t) for t in self.proposer.pending]
                for key, value in (chosen.trial_attrs() | self.trial_attrs).items():
                    trial.set_user_attr(key, value)
        except BaseException:
            if trial is not None:  # asked, but not handed to Tune: failed as abandoned by the next attempt
                self.orphans.append(optuna_private.trial_id(trial))
            raise
        self.waiting_since = None
        cfg = self.spec.trial_config(values, chosen.structure)
        with self.lock:
            self.trials[trial_id] = trial
        return {"train": cfg.model_dump(mode="json"), "optuna_trial": trial.number,
                "checkpoint_every": self.checkpoint_every}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        trial = self.trials.get(trial_id)
        if trial is not None:
            retrying(lambda: self._observe(trial_id, trial, result), "a trial's report")

    def _observe(self, trial_id: str, trial: optuna.Trial, result: dict) -> None:
        """Record one evaluation (idempotent). Tune hands a trial's last result to on_trial_complete only."""
        if "step" not in result or self.last.get(trial_id, {}).get("step") == result["step"]:
            return
        if "num_parameters" in result and trial_id not in self.last:
            for key in TRIAL_ATTRS:
                if key in result:
                    trial.set_user_attr(key, result[key])
        if "resumed_from" in result:
            trial.set_user_attr("resumed_from", int(result["resumed_from"]))
        # Steps trained by every attempt of this trial, as far as their reports tell (a killed attempt's
        # steps after its last report are not counted: at most one evaluation interval).
        attempts = self.attempts.setdefault(trial_id, {})
        begin, end = attempts.get(result.get("attempt"), (int(result.get("attempt_from", 0)), 0))
        attempts[result.get("attempt")] = (begin, max(end, int(result["step"])))
        trial.set_user_attr("steps_trained", sum(end - begin for begin, end in attempts.values()))
        value = result.get(self.metric)
        if not self.multi_objective and value is not None and math.isfinite(value):
            trial.report(float(value), step=int(result["step"]))
        self.last[trial_id] = result  # last: a report that failed half-way is made again in full

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        retrying(lambda: self._complete(trial_id, result, error), "a trial's end")

    def _complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        """Store a trial's outcome. Safe to run again after any failing database call: the trial stays
        ours (heartbeats go on) until its outcome is stored, and a tell already stored is not repeated."""
        with self.lock:
            trial = self.trials.get(trial_id)
        if trial is None:
            return
        if result:
            self._observe(trial_id, trial, result)
        last = self.last.get(trial_id) or {}
        if error:
            fail(self.study, trial, self._error_message(trial_id))
            outcome = "FAIL"
        elif last.get("final"):
            values = [float(last[self.metric])]
            if self.multi_objective:
                values.append(float(trial.user_attrs[self.latency_key]))
            if not all(math.isfinite(v) for v in values):
                fail(self.study, trial, f"non-finite final {self.metric}")
                outcome = "FAIL"
            else:
                tell_once(self.study, trial, values if self.multi_objective else values[0])
                self._keep_weights(trial_id, trial)
                outcome = "COMPLETE"
        elif last:
            # Stopped before its last step with no error: the scheduler pruned it.
            tell_once(self.study, trial, state=TrialState.PRUNED)
            outcome = "PRUNED"
        else:
            fail(self.study, trial, "stopped before its first evaluation", retry=True)
            outcome = None
        # Stored: now, and only now, the trial is no longer ours.
        with self.lock:
            self.trials.pop(trial_id, None)
        self.last.pop(trial_id, None)
        self.attempts.pop(trial_id, None)
        self.finished += outcome is not None
        if outcome is not None:
            self.outcomes[outcome] += 1
        if outcome == "COMPLETE":
            sign = 1 if self.mode == "min" else -1
            if self.best is None or sign * values[0] < sign * self.best[0]:
                self.best = (values[0], trial.number)

    def _keep_weights(self, trial_id: str, trial: optuna.Trial) -> None:
        """Offer the trial's final weights (its last Tune checkpoint's) to the artifact keeper."""
        tune_trial = self.tune_trials.get(trial_id)
        checkpoint = tune_trial.checkpoint if tune_trial is not None else None
        if self.keeper is None or checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            path = os.path.join(folder, FINAL_FILE)
            if os.path.isfile(path):
                self.keeper.offer(trial.number, path)
            else:
                log.warning("trial %s finished without its final weights in its checkpoint", trial.number)

    def __getstate__(self) -> dict:
        # Tune pickles its searcher into the experiment state; the study (a database connection),
        # the lock and the live trials stay here: on restore the database is the state.
        return {k: v for k, v in self.__dict__.items() if k not in ("study", "storage", "lock", "trials", "orphans",
                                                                     "tune_trials", "engine", "proposer", "keeper")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock, self.trials, self.tune_trials, self.orphans = threading.Lock(), {}, {}, []

    def save(self, checkpoint_path: str) -> None:
        # Tune checkpoints searchers; this one's state is the Optuna database, already saved.
        with open(checkpoint_path, "w") as fh:
            fh.write("state: the Optuna study in the database\n")

    def restore(self, checkpoint_path: str) -> None:
        pass

    # -- ours -------------------------------------------------------------------------------------

    def _beat(self, trial: optuna.Trial) -> None:
        # At once: a trial without any heartbeat can never be found stale if we die now.
        self.storage.record_heartbeat(optuna_private.trial_id(trial))

    def running_trial_ids(self) -> list[int]:
        with self.lock:
            return [optuna_private.trial_id(t) for t in self.trials.values()]

    def beat_running(self) -> None:
        for trial_id in self.running_trial_ids():
            self.storage.record_heartbeat(trial_id)

    def _fail_orphans(self) -> None:
        while self.orphans:
            abandon(self.study, self.orphans[0], "the database connection was lost while it was being proposed")
            self.orphans.pop(0)
        abandon_orphans(self.study, older_than_s=self.patience_s)

    def interrupt_all(self, reason: str = "interrupted: the study driver stopped") -> int:
        """FAIL every trial still running here and queue it again (and fail the abandoned); returns how many."""
        with self.lock:
            pending = list(self.trials.values())
        for trial in pending:
            retrying(lambda trial=trial: fail(self.study, trial, reason, retry=True), "stopping a trial")
        with self.lock:
            self.trials = {}
        retrying(self._fail_orphans, "failing abandoned trials")
        return len(pending)

    def _error_message(self, trial_id: str) -> str:
        tune_trial = self.tune_trials.get(trial_id)
        error = None
        if tune_trial is not None:
            # Tune writes the error to the trial's local folder first and syncs it to storage later:
            # at on_trial_complete only the local copy is there.
            local = getattr(tune_trial, "error_file", None)
            if local and os.path.isfile(local):
                with open(local, errors="replace") as fh:
                    error = fh.read()
            else:
                error = tune_trial.get_error()
        if error is None:
            return "the trial raised an error (see the Ray logs)"
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        # Ray wraps the exception in its traceback; the last line is the exception itself.
        return lines[-1] if lines else type(error).__name__


class TuneHook(Callback):
    """A Tune callback: progress to `show`/`advance`, and the Tune trials whose errors become fail reasons."""

    def __init__(self, searcher: StudySearcher, progress):
        self.searcher, self.progress = searcher, progress

    def __getstate__(self) -> dict:
        return {}  # Tune pickles its callbacks into the experiment state; this one is live-only

    def on_trial_start(self, iteration, trials, trial, **info):
        self.searcher.tune_trials[trial.trial_id] = trial

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.progress.show(self.searcher)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # The searcher has stored its outcome and kept its weights: its checkpoints have served.
        if trial.checkpoint is not None and os.path.isdir(trial.checkpoint.path):
            shutil.rmtree(trial.checkpoint.path, ignore_errors=True)
        self.progress.advance(self.searcher)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.progress.advance(self.searcher)
