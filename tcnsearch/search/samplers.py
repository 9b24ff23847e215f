"""The samplers a study file names (`Sampler`), and two of Optuna's adapted to how a study drives them:
by ask and tell, with ASHA.

- `AskTellGrid`: Optuna's grid sampler calls `study.stop()` once the grid is visited, which only
  works inside `study.optimize`; the searcher asks `is_exhausted` instead.
- `StoppedAwareGP`: Optuna's GP fits COMPLETE trials only, so a trial ASHA stopped (PRUNED) is
  invisible to it: it learns nothing from the trials it spent least on, and keeps proposing their
  neighbourhood. Here the GP is also fitted on each stopped trial at the last value it reported
  (pessimistic: training had not finished, as ASHA judged). Storage is not touched: the trial
  stays PRUNED for the dashboard and for every other sampler. (Never-trained proposals are left
  out: fitted as infeasible at the worst value so far, they distorted the objective's model near
  the good structures, 12.7 trials to regret 0.05 instead of 9.7 on the replay benchmark.)
  In a big study the GP is fitted on a subset (`fit_subset`): the best FIT_BEST trials and the
  FIT_RECENT latest of the rest. Its fit is cubic and each proposal quadratic in the trials it
  fits, so past a few hundred trials an ask took seconds; below FIT_BEST + FIT_RECENT trials the
  subset is the whole study and nothing changes (benchmarks/large_study.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tcnsearch.choices import SAMPLERS
from tcnsearch.compat import optuna as optuna_private

# At most FIT_BEST + FIT_RECENT trials in the GP's fit: an ask at 200 takes about a third of a second of
# CPU, at 800 about 3 s (benchmarks/large_study.py).
FIT_BEST, FIT_RECENT = 100, 100


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
        fit_best, fit_recent: past `fit_best + fit_recent` finished trials, the GP is fitted on the
            `fit_best` best and the `fit_recent` latest of the others (`fit_subset`).
        **kwargs: GPSampler's arguments.
    """

    def __init__(self, other_values: Callable[[FrozenTrial], list[float]] | None = None, *,
                 fit_best: int = FIT_BEST, fit_recent: int = FIT_RECENT, **kwargs):
        super().__init__(**kwargs)
        self._other_values = other_values
        self._fit_best, self._fit_recent = fit_best, fit_recent
        self.fitted: list[int] = []  # the numbers of the trials the last proposal's GP was fitted on

    def sample_relative(self, study, trial, search_space):
        # GPSampler.sample_relative with the stopped trials added; the running trials are the
        # pending points of its qLogEI.
        if search_space == {}:
            return {}
        trials = [t for t in optuna_private.trials_uncached(
                      study, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
                  if search_space.keys() <= t.params.keys()]
        finished = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(study.directions) == 1 or self._other_values is not None:
            # without the other objectives' values a Pareto study's stopped trials are left out, as Optuna leaves them
            finished += [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if len(finished) < optuna_private.gp_startup_trials(self):
            return {}
        finished = fit_subset(finished, [self._values(t) for t in finished], study.directions, self._fit_best,
                              self._fit_recent)
        self.fitted = [t.number for t in finished]
        finished = [t if t.state == TrialState.COMPLETE else self._as_finished(t) for t in finished]
        with torch.device("cpu"):  # as GPSampler: whatever the default device, its fit runs on the CPU
            return optuna_private.gp_sample(self, study, finished, running, search_space)

    def _values(self, trial: FrozenTrial) -> list[float]:
        """What the GP fits for `trial`: its values, or a stopped trial's as `_as_finished` makes them."""
        if trial.state == TrialState.COMPLETE:
            return trial.values
        return [trial.intermediate_values[max(trial.intermediate_values)],
                *(self._other_values(trial) if self._other_values is not None else [])]

    def _as_finished(self, trial: FrozenTrial) -> FrozenTrial:
        """A stopped trial as the GP sees it: its last value, and its latency in a Pareto study."""
        return optuna.trial.create_trial(state=TrialState.COMPLETE, values=self._values(trial), params=trial.params,
                                         distributions=trial.distributions, user_attrs=trial.user_attrs,
                                         system_attrs=trial.system_attrs)


def fit_subset(trials: list[FrozenTrial], values: list[list[float]], directions, best: int, recent: int
               ) -> list[FrozenTrial]:
    """The trials a GP fits, in their order: all of them up to `best + recent`; past that the `best` best
    (lowest non-domination rank of `values` in the study's `directions`; ties: the later) and the `recent`
    latest of the others (by trial number)."""
    if len(trials) <= best + recent:
        return trials
    sign = np.array([1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in directions])
    rank = optuna_private.nondomination_rank(sign * np.asarray(values, dtype=float), n_below=best)
    numbers = np.array([t.number for t in trials])
    by_rank = np.lexsort((-numbers, rank))  # best first; among equals the latest first
    chosen = set(by_rank[:best].tolist())
    rest = sorted((i for i in range(len(trials)) if i not in chosen), key=lambda i: -numbers[i])
    chosen.update(rest[:recent])
    return [trials[i] for i in sorted(chosen)]


SAMPLER_OPTIONS = {  # which options each sampler takes
    "tpe": {"seed", "multivariate", "constant_liar", "n_startup_trials"},
    "gp": {"seed", "n_startup_trials"},
    "random": {"seed"},
    "nsga2": {"seed", "population_size"},
    "grid": {"seed"},
}


class Sampler(BaseModel):
    """The Optuna sampler: `gp` (the default: Optuna's GP, also fitted on the trials ASHA stopped),
    `tpe` (multivariate, constant liar), `random`, `nsga2` (Pareto studies), or `grid` (every
    allowed structure times every searched choice, once).

    The default is the replay benchmark's winner (benchmarks/search_quality.py): over 100 seeds
    the GP reached regret 0.05 in about 4x fewer trials than random search, TPE in about 2x."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal[SAMPLERS] = "gp"
    seed: int | None = None
    multivariate: bool = True
    constant_liar: bool = True
    # 5, not Optuna's 10: random trials before the model leads, which a study of 16 cannot spare;
    # on the replay benchmark TPE with 10 needed 17.6 trials where 5 needed 14.4 (30 seeds)
    n_startup_trials: int = Field(default=5, ge=0)
    population_size: int = Field(default=20, ge=2)

    @model_validator(mode="after")
    def _options_of_its_type(self) -> Sampler:
        foreign = sorted((self.model_fields_set - {"type"}) - SAMPLER_OPTIONS[self.type])
        if foreign:
            takes = ", ".join(sorted(SAMPLER_OPTIONS[self.type]))
            owners = [t for t, options in SAMPLER_OPTIONS.items() if foreign[0] in options]
            hint = f"; {foreign[0]} belongs to type: {' or '.join(owners)}" if owners else ""
            raise ValueError(f"{foreign[0]} is not an option of the {self.type} sampler (it takes {takes}){hint}")
        return self

    def build(self, grid: dict[str, list] | None = None, latency_key: str | None = None) -> optuna.samplers.BaseSampler:
        """The Optuna sampler.

        Args:
            grid: parameter -> values, the grid sampler's search space.
            latency_key: in a Pareto study, the user attribute holding a trial's latency (its second
                objective), which the GP needs to learn from the trials ASHA stopped.
        """
        if self.type == "tpe":
            return optuna.samplers.TPESampler(seed=self.seed, multivariate=self.multivariate,
                                              constant_liar=self.constant_liar,
                                              n_startup_trials=self.n_startup_trials,
                                              )
        if self.type == "gp":
            other = (lambda t: [float(t.user_attrs[latency_key])]) if latency_key else None
            return StoppedAwareGP(other, seed=self.seed, n_startup_trials=self.n_startup_trials)
        if self.type == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=self.population_size)
        if self.type == "grid":
            return AskTellGrid(grid or {}, seed=self.seed)
        return optuna.samplers.RandomSampler(seed=self.seed)
