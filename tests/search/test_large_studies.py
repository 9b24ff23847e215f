"""Big studies: the GP fits a subset (the best and the latest trials), a resumed study counts rather than reads,
and the benchmark's bulk-filled studies read back as Optuna's add_trials stores them."""

import random

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from tcnsearch.compat import optuna as optuna_private
from tcnsearch.search import LATENCY, Proposer, load_spec, open_storage
from tcnsearch.search.samplers import FIT_BEST, FIT_RECENT, StoppedAwareGP, fit_subset
from tcnsearch.search.start import distributions, grid_of, prepare_study, structure_space
from tests.benchmarks import load_benchmark, unload_benchmark
from tests.search.conftest import survivor, write_study

optuna.logging.set_verbosity(optuna.logging.ERROR)
X = {"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}
ATTRS = {"device": "cpu: test", "level": "model"}


@pytest.fixture(scope="module")
def bench():
    yield load_benchmark("large_study")
    unload_benchmark("large_study")


def _trial(number: int, values, state=TrialState.COMPLETE):
    t = create_trial(state=state, values=values if state == TrialState.COMPLETE else None,
                     params={"x": 0.5, "y": 0.5}, distributions=X,
                     intermediate_values={1: values[0]} if state == TrialState.PRUNED else None)
    t.number = number
    return t


def _dominated_by(values: np.ndarray) -> np.ndarray:
    """How many rows dominate each row (all no worse, one better; lower is better): brute force."""
    no_worse = (values[None, :, :] <= values[:, None, :]).all(-1)
    better = (values[None, :, :] < values[:, None, :]).any(-1)
    return (no_worse & better).sum(1)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_subset_is_the_best_and_then_the_latest_in_their_order(direction):
    rng = random.Random(0)
    values = [[rng.random()] for _ in range(50)]
    trials = [_trial(i, v) for i, v in enumerate(values)]
    chosen = fit_subset(trials, values, [StudyDirection[direction.upper()]], best=10, recent=5)
    sign = 1 if direction == "minimize" else -1
    best = sorted(range(50), key=lambda i: sign * values[i][0])[:10]
    latest = sorted(set(range(50)) - set(best), reverse=True)[:5]
    assert [t.number for t in chosen] == sorted(best + latest)  # in the order they came
    assert fit_subset(trials, values, [StudyDirection.MINIMIZE], best=40, recent=10) is trials  # up to 50: all


def test_a_pareto_studys_subset_holds_its_front():
    rng = random.Random(1)
    values = [[rng.random(), rng.choice([1.0, 2.0, 3.0, 4.0])] for _ in range(60)]
    trials = [_trial(i, v) for i, v in enumerate(values)]
    dominated = _dominated_by(np.array(values))
    front = {i for i in range(60) if dominated[i] == 0}
    chosen = {t.number for t in fit_subset(trials, values, [StudyDirection.MINIMIZE] * 2, best=len(front), recent=3)}
    assert front <= chosen and len(chosen) == len(front) + 3
    ranks = optuna_private.nondomination_rank(np.array(values), n_below=60)
    assert set(np.flatnonzero(ranks == 0)) == front  # Optuna's rank agrees with the brute force


def test_below_the_limit_the_gp_proposes_as_before():
    """Up to FIT_BEST + FIT_RECENT trials the subset is the study: the same proposals as a GP that never subsets."""
    def proposals(sampler):
        study = optuna.create_study(sampler=sampler)
        rng = random.Random(2)
        for i in range(40):
            x, y = rng.random(), rng.random()
            state = TrialState.PRUNED if i % 3 == 0 else TrialState.COMPLETE
            value = (x - 0.3) ** 2 + (y - 0.6) ** 2
            study.add_trial(create_trial(state=state, values=[value] if state == TrialState.COMPLETE else None,
                                         params={"x": x, "y": y}, distributions=X,
                                         intermediate_values={1: value + 0.5, 2: value + 0.2}))
        out = []
        for _ in range(2):
            trial = study.ask()
            out.append((trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)))
            study.tell(trial, sum(out[-1]))
        return out, study.sampler.fitted

    ours, fitted = proposals(StoppedAwareGP(seed=3))
    assert len(fitted) == 41  # every COMPLETE and every stopped trial
    assert ours == proposals(StoppedAwareGP(seed=3, fit_best=10**9, fit_recent=0))[0]
    smaller, fitted = proposals(StoppedAwareGP(seed=3, fit_best=10, fit_recent=10))
    assert len(fitted) == 20 and all(0 <= v <= 1 for p in smaller for v in p)


def _big_study(bench, tmp_path, url: str, n: int, name: str):
    """A study made as run_study makes it, over 8 structures (two never survive), filled with `n` synthetic
    trials by the large-study benchmark."""
    spec = load_spec(write_study(tmp_path, profile={"kernel_sizes": [3, 5]}))
    survivors = [survivor(k, f, d, 1, latency_ms=k + f + d) for k in (3, 5) for f in (2, 4) for d in (2, 3)][:6]
    grid = {"kernel_size": [3, 5], "dilation_factor": [2, 4], "depth": [2, 3], "per_block": [1]}
    study, survivors, grid = prepare_study(spec, open_storage(url), name, ["minimize"], ["loss"], survivors, grid,
                                           False, optuna.samplers.RandomSampler(0), {"preset": "tiny"})
    space = structure_space(survivors, grid, spec)
    trials = bench.synthetic_trials(space, distributions(space, spec), n, random.Random(n), ATTRS, LATENCY)
    return spec, space, study, trials


@pytest.mark.slow
def test_the_benchmarks_bulk_fill_stores_what_add_trials_stores(bench, tmp_path, pg_url):
    _, _, bulk, trials = _big_study(bench, tmp_path, pg_url, 16, "bulk-filled")
    bench.bulk_add(bulk, trials)
    added = optuna.create_study(study_name="added", storage=open_storage(pg_url))
    added.add_trials(trials)

    def stored(name):
        return [(t.number, t.state, t.values, t.params, t.distributions, t.user_attrs, t.system_attrs,
                 t.intermediate_values, t.datetime_start, t.datetime_complete)
                for t in optuna.load_study(study_name=name, storage=open_storage(pg_url)).get_trials()]

    assert stored("bulk-filled") == stored("added")
    assert {t.state for t in trials} >= {TrialState.COMPLETE, TrialState.PRUNED}
    memory = optuna.create_study()
    memory.add_trials(trials[:5])
    assert optuna_private.trial_count(bulk) == 16 and optuna_private.trial_count(memory) == 5  # counted, not read


@pytest.mark.slow
def test_a_study_of_a_thousand_trials_asks_from_its_best_and_latest(bench, tmp_path, pg_url):
    spec, space, study, trials = _big_study(bench, tmp_path, pg_url, 1000, "thousand")
    bench.bulk_add(study, trials)
    sampler = spec.sampler.build(grid_of(space, spec))
    study = optuna.load_study(study_name="thousand", storage=open_storage(pg_url), sampler=sampler)
    assert isinstance(sampler, StoppedAwareGP)
    trial, chosen, values = Proposer(study, space).ask(
        lambda t: {key: param.suggest(t, key) for key, param in spec.space.items()})
    # a proposal in the space, of a structure the study may train
    dists = distributions(space, spec)
    assert trial.params.keys() == dists.keys()
    assert all(optuna_private.contains(dists[k], v) for k, v in trial.params.items())
    assert chosen.structure in space.allowed and values.keys() == spec.space.keys()
    # fitted on the best FIT_BEST and the FIT_RECENT latest of the others
    fitted = [t for t in study.get_trials(deepcopy=False) if t.number in set(sampler.fitted)]
    assert len(fitted) == FIT_BEST + FIT_RECENT
    candidates = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                  if t.intermediate_values]
    last = {t.number: t.intermediate_values[max(t.intermediate_values)] if t.state == TrialState.PRUNED else t.value
            for t in candidates}
    best = sorted(last, key=lambda n: (last[n], -n))[:FIT_BEST]
    latest = sorted(set(last) - set(best), reverse=True)[:FIT_RECENT]
    assert sorted(sampler.fitted) == sorted(best + latest)
    assert min(last, key=last.get) in sampler.fitted
