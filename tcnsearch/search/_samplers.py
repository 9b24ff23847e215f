"""Two of Optuna's samplers, adapted to how a study drives them: by ask and tell, with ASHA.

- `AskTellGrid`: Optuna's grid sampler calls `study.stop()` once the grid is visited, which only
  works inside `study.optimize`; the searcher asks `is_exhausted` instead.
- `PrunedAwareGP`: Optuna's GP fits COMPLETE trials only, so a study's PRUNED trials are invisible
  to it: those ASHA stopped (it keeps proposing their neighbourhood) and the proposals that were
  never trained (it proposes the same infeasible structure again). Here the GP is also fitted on
  each stopped trial at the last value it reported (pessimistic: training had not finished, as
  ASHA judged), and on each never-trained proposal as infeasible. Storage is not touched: the
  trials stay PRUNED for the dashboard and for every other sampler.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import torch
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class AskTellGrid(optuna.samplers.GridSampler):
    def after_trial(self, study, trial, state, values) -> None:
        pass


class PrunedAwareGP(optuna.samplers.GPSampler):
    """Optuna's GPSampler, fitted on the finished trials and on the study's two kinds of PRUNED ones.

    - A trial ASHA stopped counts as the last value it reported, and towards the random start-up
      (with ASHA stopping half, waiting for 5 COMPLETE trials would double the random start).
    - A proposal that was never trained (not a survivor, or over the latency budget) counts as
      infeasible, with its constraint values, and as the worst value finished so far: its
      constraint models learn where training is not allowed, and it is not proposed again.

    Args:
        other_values: in a Pareto study, a stopped trial's values of the objectives after the
            first (its profiled latency); None in a single-objective study.
        **kwargs: GPSampler's arguments.
    """

    def __init__(self, other_values: Callable[[FrozenTrial], list[float]] | None = None, **kwargs):
        super().__init__(**kwargs)
        self._other_values = other_values

    def sample_relative(self, study, trial, search_space):
        # GPSampler.sample_relative with the PRUNED trials added; the running trials are the
        # pending points of its qLogEI.
        if search_space == {}:
            return {}
        trials = [t for t in study._get_trials(deepcopy=False, use_cache=False,
                                               states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
                  if search_space.keys() <= t.params.keys()]
        finished = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == TrialState.PRUNED]
        if len(study.directions) == 1 or self._other_values is not None:
            # without the other objectives' values a Pareto study's stopped trials are left out, as Optuna leaves them
            finished += [self._as_finished(t) for t in pruned if t.intermediate_values]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if len(finished) < self._n_startup_trials:
            return {}
        worst = [max(v) if d == StudyDirection.MINIMIZE else min(v)
                 for d, v in zip(study.directions, zip(*(t.values for t in finished), strict=True), strict=True)]
        finished += [self._as_finished(t, worst) for t in pruned if not t.intermediate_values
                     and any(c > 0 for c in (t.constraints or {}).values())]
        with torch.device("cpu"):  # as GPSampler: whatever the default device, its fit runs on the CPU
            return self._sample_relative_impl(study, finished, running, search_space)

    def _as_finished(self, trial: FrozenTrial, values: list[float] | None = None) -> FrozenTrial:
        if values is None:  # stopped: its last value, and its latency in a Pareto study
            last = trial.intermediate_values[max(trial.intermediate_values)]
            values = [last, *(self._other_values(trial) if self._other_values is not None else [])]
        return optuna.trial.create_trial(state=TrialState.COMPLETE, values=values, params=trial.params,
                                         distributions=trial.distributions, user_attrs=trial.user_attrs,
                                         system_attrs=trial.system_attrs)
