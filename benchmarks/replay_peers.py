"""The replay benchmark's peers: HEBO and SMAC3, each driven through its own ask/tell API.

They search the space a study searches (benchmarks/search_quality.py): K, f, D and B as ordered
choices of the profile grid's values, and the learning rate as a categorical choice. A structure
outside the allowed survivors is kept from being trained the way each peer supports best:
- SMAC3: ConfigSpace's forbidden clauses (its own constraint support), one per structure of the
  grid that may not be trained, so that it never proposes one.
- HEBO: 0.3.6, the release, has no constraint support, so the product's repair: a proposal
  outside is replaced by the nearest allowed structure (`to_run`), and HEBO is told the
  configuration that was trained.

HEBO and SMAC pin old numpy/scipy, so they live in their own venv (`make bench-peers`); this
module imports them only when one of their methods is replayed, and `missing` says when they are
not installed. Their replays run on the same simulated clock as every other method's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
import logging
import tempfile
from pathlib import Path

from tcnsearch.profile import Survivor
from tcnsearch.search import StructureSpace
from tcnsearch.structure import Structure

PEERS = {"hebo": "hebo", "smac": "smac", "smac-hyperband": "smac"}  # method -> the package it needs


def missing(method: str) -> str | None:
    """Why `method` cannot be replayed here (its package is not installed), or None."""
    package = PEERS.get(method)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return f"{method}: the `{package}` package is not installed here (make bench-peers replays it in .venv-peers)"


def choices(space: StructureSpace, lrs: list[float]) -> dict[str, list]:
    """Each searched parameter's choices, in order: K, f, D, B (the grid's values) and lr."""
    return {a.name: list(a.values) for a in space.axes} | {"lr": list(lrs)}


def not_allowed(space: StructureSpace) -> list[Structure]:
    """The grid's structures that may not be trained (not a survivor, or over a budget)."""
    grid = itertools.product(*(a.values for a in space.axes))
    structures = (Structure(**{a.key: v for a, v in zip(space.axes, values, strict=True)}) for values in grid)
    return [s for s in structures if s not in space.allowed]


def to_run(space: StructureSpace, params: dict) -> tuple[Survivor, bool]:
    """The survivor to train for a proposal (K, f, D, B values), and whether it was repaired: a
    structure that may not be trained is replaced by the nearest one that may (the product's rule)."""
    structure = Structure(**{a.key: int(params[a.name]) for a in space.axes})
    if structure in space.allowed:
        return space.allowed[structure], False
    return space.nearest(structure), True


class Hebo:
    """HEBO (its default GP and MACE acquisition) by `suggest` and `observe`, one configuration at a time.

    The axes are HEBO `int` parameters over the index of each grid value (ordered, evenly spaced
    as HEBO's integer transform expects); lr is a `cat`. HEBO has no notion of a running trial: with
    two workers, the second suggestion is made before the first is observed, as its ask/tell use does.
    """

    def __init__(self, space: StructureSpace, lrs: list[float], seed: int):
        import numpy as np
        import torch
        from hebo.design_space.design_space import DesignSpace
        from hebo.optimizers.hebo import HEBO

        np.random.seed(seed)  # HEBO draws from numpy's and torch's global generators
        torch.manual_seed(seed)
        self.space, self.choices = space, choices(space, lrs)
        params = [{"name": name, "type": "num", "lb": 0, "ub": len(values) - 1}
                  for name, values in self.choices.items() if name != "lr"]
        params.append({"name": "lr", "type": "cat", "categories": [str(lr) for lr in lrs]})
        # HEBO 0.3.6 has no input constraints (its repository's newer code has): the product's repair
        self.opt = HEBO(DesignSpace().parse(params), scramble_seed=seed)
        self.repaired = 0

    def ask(self):
        with contextlib.redirect_stdout(io.StringIO()):  # its GP prints each jitter it adds (the --json report)
            rec = self.opt.suggest(n_suggestions=1)
        row = rec.iloc[0]
        values = {name: self.choices[name][round(row[name])] for name in self.choices if name != "lr"}
        survivor, repaired = to_run(self.space, values)
        self.repaired += repaired
        for a in self.space.axes:  # told as what was trained: the grid point, repaired or not
            rec.loc[rec.index[0], a.name] = float(self.choices[a.name].index(getattr(survivor.structure, a.key)))
        return rec, survivor.label, float(row["lr"]), None

    def report(self, rec, value: float, step: int, k: int, may_stop: bool) -> bool:
        return False

    def tell(self, rec, value: float, evaluations: int, complete: bool) -> None:
        import numpy as np

        self.opt.observe(rec, np.array([[value]]))


class Smac:
    """SMAC3 2.x by `ask` and `tell`: the HyperparameterOptimizationFacade (random forest, log EI),
    or with `hyperband` its MultiFidelityFacade (the same with Hyperband over the evaluations).

    The ask-and-tell example's set-up: `deterministic=False` with one call per configuration (the
    intensifier's max_config_calls=1): a replayed trial is one training run. `n_trials` is the
    replay's trials (SMAC sizes its initial design from it: a quarter of them, at most 10 per
    parameter). With Hyperband a trial's budget is a number of evaluations, 1 to all of them: the
    run is trained that far from scratch (SMAC's budgets do not resume) and told its bpc there.
    """

    def __init__(self, space: StructureSpace, lrs: list[float], seed: int, trials: int, evaluations: int,
                 hyperband: bool = False):
        from ConfigSpace import (
            CategoricalHyperparameter,
            ConfigurationSpace,
            ForbiddenAndConjunction,
            ForbiddenEqualsClause,
            OrdinalHyperparameter,
        )
        from smac import HyperparameterOptimizationFacade, MultiFidelityFacade, Scenario

        self.space, self.choices = space, choices(space, lrs)
        cs = ConfigurationSpace(seed=seed)
        # the default (unused: no default configuration is run) must be allowed, or ConfigSpace refuses the forbiddens
        default = min(space.allowed, key=lambda s: space.allowed[s].label).as_params()
        cs.add([OrdinalHyperparameter(n, v, default_value=default[n]) for n, v in self.choices.items() if n != "lr"])
        cs.add(CategoricalHyperparameter("lr", lrs))
        for s in not_allowed(space):
            cs.add(ForbiddenAndConjunction(*(ForbiddenEqualsClause(cs[n], v) for n, v in s.as_params().items())))
        self._dir = tempfile.TemporaryDirectory(prefix="smac-replay-")  # SMAC writes its scenario there
        budgets = {"min_budget": 1, "max_budget": evaluations} if hyperband else {}
        scenario = Scenario(cs, deterministic=False, n_trials=trials, seed=seed,
                            output_directory=Path(self._dir.name), **budgets)
        facade = MultiFidelityFacade if hyperband else HyperparameterOptimizationFacade
        intensifier = (facade.get_intensifier(scenario) if hyperband
                       else facade.get_intensifier(scenario, max_config_calls=1))
        self.smac = facade(scenario, lambda config, seed=0, budget=None: 0.0, intensifier=intensifier,
                           overwrite=True, logging_level=logging.ERROR)
        self.evaluations = evaluations

    def ask(self):
        info = self.smac.ask()
        survivor, _ = to_run(self.space, dict(info.config))  # forbidden clauses: never repaired
        budget = None if info.budget is None else min(self.evaluations, max(1, round(info.budget)))
        return info, survivor.label, float(info.config["lr"]), budget

    def report(self, info, value: float, step: int, k: int, may_stop: bool) -> bool:
        return False

    def tell(self, info, value: float, evaluations: int, complete: bool) -> None:
        from smac.runhistory.dataclasses import TrialValue

        self.smac.tell(info, TrialValue(cost=value), save=False)


def make(method: str, space: StructureSpace, lrs: list[float], seed: int, trials: int, evaluations: int):
    if method == "hebo":
        return Hebo(space, lrs, seed)
    return Smac(space, lrs, seed, trials, evaluations, hyperband=method == "smac-hyperband")
