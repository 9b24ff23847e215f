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
"""

from __future__ import annotations

import math
import os
import threading
import time
from contextlib import nullcontext

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.search import Searcher

from tcnsearch.search._structure import Proposer, StructureSpace
from tcnsearch.search._study import FAIL_REASON, budget_lock, occupied, retry_later, retrying
from tcnsearch.search.spec import StudySpec


class StudySearcher(Searcher):
    """Suggests Tune configs from `study` and writes every outcome back to it.

    Args:
        study: the Optuna study (on an RDBStorage with heartbeats).
        spec: the study spec; its space and objective.
        space: the structures (K, f, D, B) the sampler may propose and those it may train.
        target: finished trials the study should hold.
        multi_objective: minimise the objective and the TCN's profiled latency together.
    """

    def __init__(self, study: optuna.Study, spec: StudySpec, space: StructureSpace, target: int,
                 multi_objective: bool, latency_key: str, engine=None):
        metric, mode = spec.objective.metric, spec.objective.mode
        super().__init__(metric=metric, mode=mode)
        self.study, self.spec, self.target, self.engine = study, spec, target, engine
        # How long to wait for another driver's running trials (they finish, or go stale and come back).
        self.patience_s, self.waiting_since = 10 * 3 * spec.heartbeat_s + 60, None
        self.proposer = Proposer(study, space)
        self.multi_objective, self.latency_key = multi_objective, latency_key
        self.trials: dict[str, optuna.Trial] = {}  # Tune trial id -> Optuna trial
        self.last: dict[str, dict] = {}
        self.tune_trials: dict = {}  # Tune trial id -> Tune Trial, filled by the runner's callback
        self.lock = threading.Lock()  # the heartbeat thread reads `trials`
        self.finished = 0  # trials this driver brought to an end (other drivers' are not ours to count)
        self.outcomes = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}  # this driver's, for the progress line
        self.best: tuple[float, int] | None = None  # (value, trial number) of this driver's best, single-objective

    # -- Tune's side ----------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | None:
        return retrying(lambda: self._suggest(trial_id), "suggest")

    def _suggest(self, trial_id: str) -> dict | None:
        optuna.storages.fail_stale_trials(self.study)
        lock = budget_lock(self.engine, self.study.study_name) if self.engine is not None else nullcontext()
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
            trial, chosen, values = self.proposer.ask(
                lambda trial: {key: param.suggest(trial, key) for key, param in self.spec.space.items()})
            # Beat at once: a trial without any heartbeat can never be found stale if we die now.
            self.study._storage.record_heartbeat(trial._trial_id)
        self.waiting_since = None
        for key in ("latency_ms", "receptive_field", "tcn_fwd_ms", "tcn_fwdbwd_ms", "ema_fwd_ms", "ema_fwdbwd_ms",
                    "speedup_fwd", "speedup_fwdbwd", "speedup_fwd_ci", "speedup_fwdbwd_ci", "device", "level",
                    "source", "decision"):
            if key in chosen:
                trial.set_user_attr(key, chosen[key])
        tcn = {"kernel_size": chosen["kernel_size"], "dilation_factor": chosen["dilation_factor"],
               "depth": chosen["depth"], "per_block": chosen["per_block"]}
        cfg = self.spec.trial_config(values, tcn)
        with self.lock:
            self.trials[trial_id] = trial
        return {"train": cfg.model_dump(mode="json"), "optuna_trial": trial.number}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        trial = self.trials.get(trial_id)
        if trial is not None:
            retrying(lambda: self._observe(trial_id, trial, result), "a trial's report")

    def _observe(self, trial_id: str, trial: optuna.Trial, result: dict) -> None:
        """Record one evaluation. Tune hands a trial's last result to on_trial_complete only."""
        if "step" not in result or self.last.get(trial_id, {}).get("step") == result["step"]:
            return
        self.last[trial_id] = result
        if "num_parameters" in result and "num_parameters" not in trial.user_attrs:
            trial.set_user_attr("num_parameters", int(result["num_parameters"]))
            trial.set_user_attr("host", result.get("host"))
            trial.set_user_attr("ray_node", result.get("ray_node"))
        value = result.get(self.metric)
        if not self.multi_objective and value is not None and math.isfinite(value):
            trial.report(float(value), step=int(result["step"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        retrying(lambda: self._complete(trial_id, result, error), "a trial's end")

    def _complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        with self.lock:
            trial = self.trials.pop(trial_id, None)
        if trial is None:
            return
        if result:
            self._observe(trial_id, trial, result)
        last = self.last.pop(trial_id, None) or {}
        self.finished += bool(error or last)
        if error:
            self._fail(trial, self._error_message(trial_id))
            self.outcomes["FAIL"] += 1
        elif last.get("final"):
            values = [float(last[self.metric])]
            if self.multi_objective:
                values.append(float(trial.user_attrs[self.latency_key]))
            if not all(math.isfinite(v) for v in values):
                self._fail(trial, f"non-finite final {self.metric}")
                self.outcomes["FAIL"] += 1
            else:
                self.study.tell(trial, values if self.multi_objective else values[0])
                self.outcomes["COMPLETE"] += 1
                sign = 1 if self.mode == "min" else -1
                if self.best is None or sign * values[0] < sign * self.best[0]:
                    self.best = (values[0], trial.number)
        elif last:
            # Stopped before its last step with no error: the scheduler pruned it.
            self.study.tell(trial, state=TrialState.PRUNED)
            self.outcomes["PRUNED"] += 1
        else:
            self._fail(trial, "stopped before its first evaluation", retry=True)

    def __getstate__(self) -> dict:
        # Tune pickles its searcher into the experiment state; the study (a database connection),
        # the lock and the live trials stay here: on restore the database is the state.
        return {k: v for k, v in self.__dict__.items() if k not in ("study", "lock", "trials", "tune_trials",
                                                                     "engine")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock, self.trials, self.tune_trials = threading.Lock(), {}, {}

    def save(self, checkpoint_path: str) -> None:
        # Tune checkpoints searchers; this one's state is the Optuna database, already saved.
        with open(checkpoint_path, "w") as fh:
            fh.write("state: the Optuna study in the database\n")

    def restore(self, checkpoint_path: str) -> None:
        pass

    # -- ours -------------------------------------------------------------------------------------

    def running_trial_ids(self) -> list[int]:
        with self.lock:
            return [t._trial_id for t in self.trials.values()]

    def interrupt_all(self, reason: str = "interrupted: the study driver stopped") -> int:
        """FAIL every trial still running here and queue it again; returns how many."""
        with self.lock:
            pending, self.trials = list(self.trials.values()), {}
        for trial in pending:
            retrying(lambda trial=trial: self._fail(trial, reason, retry=True), "stopping a trial")
        return len(pending)

    def _fail(self, trial: optuna.Trial, reason: str, retry: bool = False) -> None:
        trial.set_user_attr(FAIL_REASON, reason[:2000])
        self.study.tell(trial, state=TrialState.FAIL)
        if retry:
            retry_later(self.study, self.study._storage.get_trial(trial._trial_id))

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
        self.progress.advance(self.searcher)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.progress.advance(self.searcher)
