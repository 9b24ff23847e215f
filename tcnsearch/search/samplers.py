"""Two of Optuna's samplers, adapted to how a study drives them: by ask and tell, with ASHA.

- `AskTellGrid`: Optuna's grid sampler calls `study.stop()` once the grid is visited, which only
  works inside `study.optimize`; the searcher asks `is_exhausted` instead.
- `StoppedAwareGP`: Optuna's GP fits COMPLETE trials only, so a trial ASHA stopped (PRUNED) is
  invisible to it: it learns nothing from the trials it spent least on, and keeps proposing their
  neighbourhood. Here the GP is also fitted on each stopped trial at the last value it reported
  (pessimistic: training had not finished, as ASHA judged). Storage is not touched: the trial
  stays PRUNED for the dashboard and for every other sampler. (Never-trained proposals are left
  out: fitted as infeasible at the worst value so far, they distorted the objective's model near
  the good structures, 12.7 trials to regret 0.05 instead of 9.7 on the replay benchmark.)
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from tcnsearch.compat import optuna as optuna_private


class AskTellGrid(optuna.samplers.GridSampler):
    def after_trial(self, study, trial, state, values) -> None:
        pass


class StoppedAwareGP(optuna.samplers.GPSampler):
    """Optuna's GPSampler, fitted on the finished trials and on those ASHA stopped.

    A stopped trial counts as the last value it reported, and towards the random start-up (with
    ASHA stopping half, waiting for 5 COMPLETE trials would double the random start).

    Args:
        other_values: in a Pareto study, a stopped trial's values of the objectives after the
            first (its profiled latency); None in a single-objective study.
        **kwargs: GPSampler's arguments.
    """

    def __init__(self, other_values: Callable[[FrozenTrial], list[float]] | None = None, **kwargs):
        super().__init__(**kwargs)
        self._other_values = other_values

    def sample_relative(self, study, trial, search_space):
        # GPSampler.sample_relative with the stopped trials added; the running trials are the
        # pending points of its qLogEI.
        if search_space == {}:
            return {}
        trials = [t for t in optuna_private.trials_uncached(
                      study, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
                  if search_space.keys() <= t.params.keys()]
        finished = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == TrialState.PRUNED]
        if len(study.directions) == 1 or self._other_values is not None:
            # without the other objectives' values a Pareto study's stopped trials are left out, as Optuna leaves them
            finished += [self._as_finished(t) for t in pruned if t.intermediate_values]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if len(finished) < optuna_private.gp_startup_trials(self):
            return {}
        with torch.device("cpu"):  # as GPSampler: whatever the default device, its fit runs on the CPU
            return optuna_private.gp_sample(self, study, finished, running, search_space)

    def _as_finished(self, trial: FrozenTrial) -> FrozenTrial:
        """A stopped trial as the GP sees it: its last value, and its latency in a Pareto study."""
        last = trial.intermediate_values[max(trial.intermediate_values)]
        values = [last, *(self._other_values(trial) if self._other_values is not None else [])]
        return optuna.trial.create_trial(state=TrialState.COMPLETE, values=values, params=trial.params,
                                         distributions=trial.distributions, user_attrs=trial.user_attrs,
                                         system_attrs=trial.system_attrs)
