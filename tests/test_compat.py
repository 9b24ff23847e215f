"""The private API of Optuna and Ray that tcnsearch relies on (tcnsearch.compat), pinned: an upgrade that
changes one of these behaviours fails here, by name, rather than somewhere in a study."""

import datetime as dt
import inspect
import os

import optuna
import pytest
from optuna.trial import TrialState

from tcnsearch.compat import optuna as compat
from tcnsearch.compat import ray as compat_ray
from tcnsearch.search import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture
def study(sqlite_url):
    return optuna.create_study(study_name="pinned", storage=open_storage(sqlite_url, heartbeat_s=1))


def test_a_trials_storage_id_and_the_studys_storage(study):
    trial = study.ask()
    storage = compat.storage_of(study)
    assert storage.get_trial(compat.trial_id(trial)).number == trial.number
    storage.record_heartbeat(compat.trial_id(trial))  # what the searcher does with them


def test_system_attributes_round_trip_and_reach_other_readers(study, sqlite_url):
    compat.set_system_attr(study, "tcnsearch:x", {"a": [1, 2]})
    again = optuna.load_study(study_name="pinned", storage=sqlite_url)
    assert compat.system_attrs(again)["tcnsearch:x"] == {"a": [1, 2]}
    assert not hasattr(optuna.Study, "system_attrs")  # why this is private API: Optuna 5 removed the public one


@pytest.mark.parametrize("dist,value,inside", [
    (optuna.distributions.IntDistribution(3, 9, step=2), 5, True),
    (optuna.distributions.IntDistribution(3, 9, step=2), 4, False),
    (optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True), 0.5, False),
    (optuna.distributions.CategoricalDistribution([0.0, 0.1]), 0.1, True),
    (optuna.distributions.CategoricalDistribution([0.0, 0.1]), "x", False),
])
def test_whether_a_value_lies_in_a_distribution(dist, value, inside):
    assert compat.contains(dist, value) is inside


def test_an_uncached_read_sees_what_another_client_told(study, sqlite_url):
    other = optuna.load_study(study_name="pinned", storage=sqlite_url)
    other.tell(other.ask(), 1.0)
    assert [t.value for t in compat.trials_uncached(study, (TrialState.COMPLETE,))] == [1.0]


def test_the_gp_samplers_start_up_and_its_fit_on_given_trials(study):
    sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=3)
    assert compat.gp_startup_trials(sampler) == 3
    params = inspect.signature(optuna.samplers.GPSampler._sample_relative_impl).parameters
    assert list(params)[1:] == ["study", "completed_trials", "running_trials", "search_space"]
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    gp_study = optuna.create_study(sampler=sampler)
    for x in (0.1, 0.5, 0.9, 0.3):
        gp_study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=space, value=(x - 0.3) ** 2))
    proposal = compat.gp_sample(sampler, gp_study, gp_study.trials, [], space)
    assert set(proposal) == {"x"} and 0.0 <= proposal["x"] <= 1.0


def test_running_trials_that_never_beat_are_found_once_old(study):
    beaten, silent = study.ask(), study.ask()
    compat.storage_of(study).record_heartbeat(compat.trial_id(beaten))
    assert compat.running_without_heartbeat(study, older_than_s=3600) == []  # too young
    assert compat.running_without_heartbeat(study, older_than_s=0) == [compat.trial_id(silent)]
    study.tell(silent, state=TrialState.FAIL)
    assert compat.running_without_heartbeat(study, older_than_s=0) == []
    assert dt.datetime.now(dt.timezone.utc) - study.trials[0].datetime_start.astimezone(dt.timezone.utc) < \
        dt.timedelta(minutes=5)  # Optuna stamps starts in local time; the helper compares in UTC


def test_rays_single_machine_mode_is_set_for_the_runtime_and_put_back():
    from ray._private import ray_constants

    before = (os.environ.get(compat_ray.SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER)
    with compat_ray.single_machine_mode():
        assert compat_ray.single_machine_mode_is_on()
        assert os.environ[compat_ray.SINGLE_MACHINE] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert (os.environ.get(compat_ray.SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER) == before
