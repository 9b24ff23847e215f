
"""K, f, D, B as ordered parameters: snapping, feasibility, repair, and what a sampler learns from them."""

import itertools
import math
import random
import statistics

import optuna
import pytest
from optuna.trial import TrialState

from tcnsearch.search.samplers import Sampler
from tcnsearch.search.space import REPAIR_AFTER, Axis, Proposer, StructureSpace
from tcnsearch.structure import Structure
from tests.search.conftest import survivor

optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_even_axes_are_stepped_ranges_and_uneven_ones_snap_in_log_space():
    k = Axis("K", "kernel_size", [3, 5, 7, 9])
    assert (k.step, k.log) == (2, False) and k.distribution() == optuna.distributions.IntDistribution(3, 9, step=2)
    f = Axis("f", "dilation_factor", [2, 3, 4, 6, 8, 12, 16])
    assert f.step is None and f.log and f.distribution() == optuna.distributions.IntDistribution(2, 16, log=True)
    # nearest in log space: 5 goes to 6 (log 6/5 = 0.18 < log 5/4 = 0.22), 10 to 12, 14 to 16
    assert [f.snap(v) for v in (5, 7, 10, 11, 14)] == [6, 8, 12, 12, 16]
    assert all(f.snap(v) == min(f.values, key=lambda g, v=v: abs(math.log(g / v))) for v in range(2, 17))
    assert all(f.snap(v) == v for v in f.values) and Axis("B", "per_block", [1]).step == 1


def _grid(ks, fs, ds, bs):
    return {"kernel_size": ks, "dilation_factor": fs, "depth": ds, "per_block": bs}


def _survivors(structures, latency=lambda s: 1.0):
    return [survivor(*s, latency_ms=latency(Structure(*s))) for s in structures]


def _labels(space) -> set[str]:
    return {s.label for s in space.allowed.values()}


def test_constraints_are_zero_for_survivors_and_grow_with_the_distance_to_them():
    grid = _grid([3, 5, 7], [2, 4], [2, 3], [1, 2])
    survivors = list(itertools.product([3, 5], [2, 4], [2, 3], [1]))
    space = StructureSpace(grid, _survivors(survivors, latency=lambda s: s.kernel_size * s.depth),
                           budget={"latency_ms": lambda s: s.latency_ms - 10})
    assert space.constraints(Structure(*survivors[0])) == {"survivor": 0.0, "latency_ms": 6 - 10}
    near = space.constraints(Structure(7, 2, 2, 1))["survivor"]
    far = space.constraints(Structure(7, 2, 2, 2))["survivor"]
    assert 0 < near < far
    # over the budget: a survivor, but not allowed; the nearest allowed structure is within it
    over = Structure(5, 4, 3, 1)
    assert space.constraints(over)["latency_ms"] == 5 and over not in space.allowed
    assert space.nearest(over).latency_ms <= 10


def _run(sampler, space, objective, trials, structured: bool):
    """A study as the searcher drives it: the structured one through the searcher's Proposer; the
    categorical one as tcnsearch 0.2 did, one `tcn` label over the survivors."""
    study = optuna.create_study(sampler=sampler, direction="minimize")
    proposer, labels = Proposer(study, space), sorted(_labels(space))
    by_label = {s.label: s for s in space.allowed.values()}
    trained = []
    while len(trained) < trials:
        if structured:
            trial, s, _ = proposer.ask(lambda trial: {})
        else:
            trial = study.ask()
            s = by_label[trial.suggest_categorical("tcn", labels)]
        study.tell(trial, objective(s))
        trained.append(s)
    return trained


def test_the_structured_sampler_concentrates_on_the_best_kernel_sizes_where_the_categorical_one_does_not():
    """A noisy objective that depends only on K (best at K=9): K in 7-11 covers 3/8 of the 320
    survivors. Over 60 trials the structured TPE learns along K (what a trial says about K=9
    carries to every structure with that K) and spends most of its last 20 there; the
    categorical TPE over 320 unrelated labels stays near what random search would (3/8)."""
    ks, fs, ds, bs = [3, 5, 7, 9, 11, 13, 15, 17], [2, 3, 4, 5, 6], [2, 3, 4, 5], [1, 2]
    space = StructureSpace(_grid(ks, fs, ds, bs), _survivors(itertools.product(ks, fs, ds, bs)))
    share = {True: [], False: []}
    for seed in range(4):
        for structured in (True, False):
            rng = random.Random(seed)
            sampler = Sampler(type="tpe", seed=seed, n_startup_trials=10).build()
            trained = _run(sampler, space, lambda s, rng=rng: abs(s.structure.kernel_size - 9) / 2 + rng.uniform(0, 2),
                           60, structured)
            share[structured].append(statistics.mean(abs(s.structure.kernel_size - 9) <= 2 for s in trained[40:]))
    structured, categorical = statistics.mean(share[True]), statistics.mean(share[False])
    assert structured >= 0.65 and structured >= categorical + 0.15, share


@pytest.mark.slow
def test_the_default_sampler_concentrates_on_the_best_kernel_sizes_too():
    """The same objective under the default sampler (the GP): 40 trials, most of the last 15 on K 7-11
    (seeds 0-2 gave 0.87, 1.0 and 0.93)."""
    ks, fs, ds, bs = [3, 5, 7, 9, 11, 13, 15, 17], [2, 3, 4, 5, 6], [2, 3, 4, 5], [1, 2]
    space = StructureSpace(_grid(ks, fs, ds, bs), _survivors(itertools.product(ks, fs, ds, bs)))
    rng = random.Random(0)
    trained = _run(Sampler(seed=0).build(), space,
                   lambda s: abs(s.structure.kernel_size - 9) / 2 + rng.uniform(0, 2), 40, True)
    share = statistics.mean(abs(s.structure.kernel_size - 9) <= 2 for s in trained[25:])
    assert share >= 0.65, share  # random search: 3/8


def test_grid_sampler_visits_every_allowed_structure_once():
    ks, fs = [3, 5, 7], [2, 4]
    survivors = [(k, f, 3, 1) for k, f in itertools.product(ks, fs) if (k, f) != (7, 4)]
    space = StructureSpace(_grid(ks, fs, [3], [1]), _survivors(survivors))
    sampler = Sampler(type="grid", seed=0).build({a.name: a.values for a in space.axes})
    study = optuna.create_study(sampler=sampler)
    trained = []
    while not sampler.is_exhausted(study):
        trial = study.ask()
        s = space.suggest(trial)
        if space.constraints(s)["survivor"] > 0:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        study.tell(trial, 1.0)
        trained.append(s.label)
    assert sorted(trained) == sorted(_labels(space))


def test_infeasible_proposals_are_pruned_with_their_constraint_and_a_stuck_sampler_is_repaired():
    """Random search proposes anywhere in the grid; only 2 of its 16 structures survive."""
    ks, fs = [3, 5, 7, 9], [2, 3, 4, 5]
    space = StructureSpace(_grid(ks, fs, [3], [1]), _survivors([(9, 5, 3, 1), (9, 4, 3, 1)]))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    proposer = Proposer(study, space)
    chosen = []
    for _ in range(6):
        trial, s, _ = proposer.ask(lambda trial: {"lr": trial.suggest_float("lr", 1e-3, 1e-2)})
        study.tell(trial, 1.0)
        chosen.append(s.label)
    assert set(chosen) <= _labels(space)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.constraints["survivor"] > 0 and "infeasible" in t.user_attrs for t in pruned)
    assert all("lr" in t.params for t in study.trials)  # one joint space, infeasible proposals included


def test_a_sampler_that_only_proposes_infeasible_structures_is_repaired_to_the_nearest_survivor():
    ks, fs = [3, 5, 7, 9], [2, 3, 4, 5]
    space = StructureSpace(_grid(ks, fs, [3], [1]), _survivors([(9, 5, 3, 1), (5, 3, 3, 1)]))
    stuck = optuna.samplers.PartialFixedSampler({"K": 3}, optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(sampler=stuck)
    trial, s, _ = Proposer(study, space).ask(lambda trial: {})
    assert trial.number == REPAIR_AFTER and study.trials[-1].user_attrs["repaired_from"] == REPAIR_AFTER - 1
    assert s.label == "K5-f3-D3-B1"  # nearer to any K=3 proposal than K9-f5
    assert sum(t.state == TrialState.PRUNED for t in study.trials) == REPAIR_AFTER


def test_gp_proposals_outside_the_survivors_are_repaired_at_once_keeping_their_other_parameters():
    """Optuna's GP fits finished trials only: it never sees a PRUNED proposal, so it is not asked again."""
    ks, fs = [3, 5, 7, 9], [2, 3, 4, 5]
    survivors = [(k, f, 3, 1) for k, f in itertools.product(ks, fs) if k <= 5 and f <= 3]
    space = StructureSpace(_grid(ks, fs, [3], [1]), _survivors(survivors))
    study = optuna.create_study(sampler=Sampler(type="gp", seed=0, n_startup_trials=3).build())
    proposer = Proposer(study, space)
    for _ in range(10):
        trial, s, values = proposer.ask(lambda t: {"lr": t.suggest_float("lr", 1e-3, 1e-1, log=True)})
        study.tell(trial, -s.structure.kernel_size - s.structure.dilation_factor + values["lr"])  # best: K9 f5
    by_number = {t.number: t for t in study.trials}
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "the objective leads the GP out of the survivors"
    for t in pruned:  # the very next trial is its repair: same lr, the nearest survivor
        repair = by_number[t.number + 1]
        assert repair.user_attrs["repaired_from"] == t.number and repair.state == TrialState.COMPLETE
        assert repair.params["lr"] == t.params["lr"]
        proposed = Structure(**{a.key: a.snap(t.params[a.name]) for a in space.axes})
        assert repair.user_attrs["tcn"] == space.nearest(proposed).label
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 10


@pytest.mark.slow
def test_every_named_sampler_drives_the_proposer_in_single_and_pareto_studies():
    ks, fs = [3, 5, 7], [2, 3, 4]
    survivors = [(k, f, 3, 1) for k, f in itertools.product(ks, fs) if k + f != 10]
    space = StructureSpace(_grid(ks, fs, [3], [1]), _survivors(survivors, latency=lambda s: s.kernel_size))
    for name, directions in (("tpe", ["minimize"]), ("random", ["minimize"]), ("nsga2", ["minimize", "minimize"]),
                             ("tpe", ["minimize", "minimize"]), ("gp", ["minimize"]), ("gp", ["minimize", "minimize"])):
        study = optuna.create_study(sampler=Sampler(type=name, seed=1).build(), directions=directions)
        proposer = Proposer(study, space)
        for _ in range(12):
            trial, s, values = proposer.ask(lambda t: {"lr": t.suggest_float("lr", 1e-3, 1e-1, log=True)})
            loss = abs(s.structure.kernel_size - 5) + values["lr"]
            study.tell(trial, [loss, s.latency_ms] if len(directions) == 2 else loss)
        trained = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(trained) == 12 and all(t.user_attrs["tcn"] in _labels(space) for t in trained), name
