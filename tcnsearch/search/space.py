"""The TCN structure as the sampler sees it: K, f, D and B as ordered integers, and which are allowed.

A study used to hand the sampler one categorical `tcn` over the survivors' labels, which TPE
treats as unordered: what a trial taught about K=5 carried to no other structure. Here each of
K, f, D, B is an integer parameter of its own, so a sampler learns along each axis.

Only the profile's survivors (within the study's latency budget) are ever trained. A proposal
outside them is *infeasible*: it is told to the study at once as PRUNED with a positive
constraint value (`trial.set_constraint`), costs no training and no budget, and samplers that use
constraints (TPE, NSGA-II) learn to avoid it. Random search could keep proposing such points, so
after `REPAIR_AFTER` infeasible proposals in a row the nearest allowed structure is queued instead,
with the proposal's other parameters (a repair). A GP's proposals are repaired at once: its
every ask is a fit of the model (up to a second), and Optuna's own GP fits finished trials only,
so it would propose the same point again.

Axes whose grid values are evenly spaced (K in 3, 5, 7) are `suggest_int(low, high, step)` over
exactly those values; uneven ones (f in 2, 3, 4, 6, 8, 12, 16) are a log-scaled integer range
whose proposals are snapped to the nearest grid value (in log space), the value trained and
recorded as the trial's `tcn` attribute (K5-f4-D3-B1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from tcnsearch.profile import Survivor
from tcnsearch.structure import AXES, Structure

REPAIR_AFTER = 25  # infeasible proposals in a row before the nearest allowed structure is queued
INFEASIBLE = "infeasible"  # user attr of a proposal that was never trained: why


@dataclass
class Axis:
    name: str  # the parameter: K, f, D or B
    key: str  # the structure's field: kernel_size, ...
    values: list[int]  # the profile grid's values along this axis

    @property
    def step(self) -> int | None:
        """The spacing if the values are evenly spaced (one value: 1), else None."""
        gaps = {b - a for a, b in zip(self.values, self.values[1:], strict=False)}
        return 1 if not gaps else (gaps.pop() if len(gaps) == 1 else None)

    @property
    def log(self) -> bool:
        return self.step is None and self.values[0] > 0 and self.values[-1] / self.values[0] >= 4

    def distribution(self) -> optuna.distributions.IntDistribution:
        if self.step is not None:
            return optuna.distributions.IntDistribution(self.values[0], self.values[-1], step=self.step)
        return optuna.distributions.IntDistribution(self.values[0], self.values[-1], log=self.log)

    def snap(self, value: int) -> int:
        """The grid value nearest to `value` (in log space on a log axis)."""
        if self.log:
            return min(self.values, key=lambda v: (abs(math.log(v) - math.log(value)), v))
        return min(self.values, key=lambda v: (abs(v - value), v))

    def position(self, value: int) -> float:
        """Where `value` lies along the axis, 0..1, for distances between structures."""
        lo, hi = self.values[0], self.values[-1]
        if hi == lo:
            return 0.0
        if self.log:
            return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (value - lo) / (hi - lo)


class StructureSpace:
    """The profile's grid as four ordered axes, and the structures a study may train.

    Args:
        grid: each axis's grid values, by structure field (kernel_size: [3, 5, 7], ...).
        survivors: the profile's survivors.
        budget: constraint name -> function of a survivor giving its violation (> 0: over the budget).
    """

    def __init__(self, grid: dict[str, list[int]], survivors: list[Survivor],
                 budget: dict[str, Callable[[Survivor], float]] | None = None):
        self.axes = [Axis(name, key, sorted(set(grid[key]))) for name, key in AXES]
        self.survivors = {s.structure: s for s in survivors}
        self.budget = budget or {}
        # what may be trained: survivors within every budget
        self.allowed = {k: s for k, s in self.survivors.items() if all(v(s) <= 0 for v in self.budget.values())}

    def distributions(self) -> dict[str, optuna.distributions.IntDistribution]:
        return {a.name: a.distribution() for a in self.axes}

    def suggest(self, trial: optuna.Trial) -> Structure:
        """Draw K, f, D, B from the sampler and snap them onto the grid: the structure proposed."""
        return Structure(**{a.key: a.snap(trial.suggest_int(a.name, a.values[0], a.values[-1], step=a.step or 1,
                                                            log=a.log)) for a in self.axes})

    def distance(self, s: Structure, t: Structure) -> float:
        return math.sqrt(sum((a.position(getattr(s, a.key)) - a.position(getattr(t, a.key))) ** 2
                             for a in self.axes))

    def nearest(self, structure: Structure) -> Survivor:
        """The allowed structure nearest to `structure` (ties: the smaller label)."""
        return min(self.allowed.values(), key=lambda s: (self.distance(structure, s.structure), s.label))

    def constraints(self, structure: Structure) -> dict[str, float]:
        """Constraint values (> 0 violated): `structure` must be a survivor, and within each budget.

        The survivor constraint is the distance to the nearest survivor (0 for a survivor), so
        that a near miss counts as less infeasible than a far one.
        """
        chosen = self.survivors.get(structure)
        if chosen is not None:
            values = {"survivor": 0.0}
        else:
            nearest = min(self.survivors, key=lambda s: self.distance(structure, s))
            values = {"survivor": max(1e-3, self.distance(structure, nearest))}
        for name, violation in self.budget.items():
            values[name] = float(violation(chosen)) if chosen is not None else 0.0
        return values


class Proposer:
    """Asks `study` for trials until one proposes a structure that may be trained.

    Every trial draws every parameter (an infeasible one too: `rest` draws the searched ones), so
    that multivariate samplers keep one joint search space. The others are told PRUNED with their
    constraint values and never trained. Used by the study's Ray Tune searcher and by the replay
    benchmark alike.

    `on_ask(trial)` runs as soon as a trial exists (the searcher records its first heartbeat), and
    `pending` holds the trials of the current ask that are neither told nor returned: after an ask
    that raised (a lost database connection), the ones to fail rather than leave RUNNING.
    """

    def __init__(self, study: optuna.Study, space: StructureSpace,
                 on_ask: Callable[[optuna.Trial], None] | None = None):
        self.study, self.space, self.on_ask = study, space, on_ask
        self.pending: list[optuna.Trial] = []
        self.infeasible_in_a_row = 0
        sampler = study.sampler
        self.repair_after = (None if isinstance(sampler, optuna.samplers.GridSampler)  # visits the grid as it is
                             else 1 if isinstance(sampler, optuna.samplers.GPSampler) else REPAIR_AFTER)

    def ask(self, rest: Callable[[optuna.Trial], dict]) -> tuple[optuna.Trial, Survivor, dict]:
        """(trial, the survivor to train, the searched values)."""
        self.pending = []
        while True:
            trial = self.study.ask()
            self.pending.append(trial)
            if self.on_ask is not None:
                self.on_ask(trial)
            values = rest(trial)
            structure = self.space.suggest(trial)
            constraints = self.space.constraints(structure)
            for name, value in constraints.items():
                trial.set_constraint(name, value)
            trial.set_user_attr("tcn", structure.label)
            if all(v <= 0 for v in constraints.values()):
                self.infeasible_in_a_row = 0
                self.pending.remove(trial)
                return trial, self.space.survivors[structure], values
            violated = ", ".join(f"{k} {v:.3g}" for k, v in constraints.items() if v > 0)
            trial.set_user_attr(INFEASIBLE, f"{structure.label}: {violated}")
            self.study.tell(trial, state=TrialState.PRUNED)  # never trained; not part of the budget
            self.pending.remove(trial)
            self.infeasible_in_a_row += 1
            if self.repair_after is not None and self.infeasible_in_a_row >= self.repair_after:
                # The sampler keeps proposing what cannot be trained: queue the nearest allowed
                # structure, the proposal's other parameters kept.
                params = trial.params | self.space.nearest(structure).structure.as_params()
                self.study.enqueue_trial(params, user_attrs={"repaired_from": trial.number})
                self.infeasible_in_a_row = 0
