"""The GP that learns from the trials ASHA stopped, and the grid sampler driven by ask and tell."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from tcnsearch.search.samplers import Sampler, StoppedAwareGP

optuna.logging.set_verbosity(optuna.logging.ERROR)
X = {"x": FloatDistribution(0, 1)}


def _study(sampler, directions=("minimize",), latency=None):
    """Five finished trials, best at x = 0.5; five trials around 0.5 that ASHA stopped with bad values."""
    study = optuna.create_study(sampler=sampler, directions=list(directions))
    for x, v in [(0.0, 1.0), (0.25, 0.7), (0.5, 0.2), (0.75, 0.7), (1.0, 1.0)]:
        values = [v] if len(directions) == 1 else [v, 1.0]
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=values, params={"x": x}, distributions=X,
                                     user_attrs={"latency_ms": 1.0}))
    for x in (0.4, 0.45, 0.5, 0.55, 0.6):
        study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": x}, distributions=X,
                                     intermediate_values={1: 3.0, 2: 2.5}, user_attrs={"latency_ms": latency or 1.0}))
    return study


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_gp_learns_from_stopped_trials_where_optunas_proposes_among_them_again(seed):
    plain = _study(optuna.samplers.GPSampler(seed=seed, n_startup_trials=3)).ask().suggest_float("x", 0, 1)
    assert abs(plain - 0.5) < 0.1  # the stopped trials are invisible to it: it exploits the best finished one
    ours = _study(StoppedAwareGP(seed=seed, n_startup_trials=3))
    assert abs(ours.ask().suggest_float("x", 0, 1) - 0.5) > 0.15
    assert sum(t.state == TrialState.PRUNED for t in ours.trials) == 5  # storage keeps them as they were


def test_a_stopped_trial_counts_as_its_last_value_and_in_pareto_studies_its_latency():
    gp = StoppedAwareGP(lambda t: [t.user_attrs["latency_ms"]], seed=0)
    study = _study(gp, directions=("minimize", "minimize"), latency=7.0)
    stopped = study.trials[-1]
    finished = gp._as_finished(stopped)
    assert finished.state == TrialState.COMPLETE and finished.values == [2.5, 7.0]
    assert finished.params == stopped.params
    study.ask().suggest_float("x", 0, 1)  # a Pareto study samples with them
    # without the latency a Pareto study's stopped trials are left out, as Optuna's GP leaves them
    _study(StoppedAwareGP(seed=0), directions=("minimize", "minimize")).ask().suggest_float("x", 0, 1)


def test_the_gp_sampler_a_study_builds_is_the_stopped_aware_one():
    assert isinstance(Sampler(type="gp").build(), StoppedAwareGP)
    pareto = Sampler(type="gp").build(latency_key="latency_ms")
    trial = _study(pareto, directions=("minimize", "minimize"), latency=4.0).trials[-1]
    assert pareto._as_finished(trial).values == [2.5, 4.0]
