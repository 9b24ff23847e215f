"""What a Ray worker runs for a trial: it trains exactly on what Ray gave it, and refuses a GPU it cannot use."""

import pytest
from optuna.trial import TrialState

from tcnsearch.search import run_study
from tests.conftest import ray_head_process
from tests.search.conftest import stored_trials, write_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def fake_gpu_head(tmp_path_factory):
    """A Ray head that advertises one GPU on a machine where PyTorch has none (a CPU build)."""
    with ray_head_process(tmp_path_factory.mktemp("ray-gpu"), "--num-cpus=2", "--num-gpus=1") as address:
        yield address


def test_a_trial_given_a_gpu_that_torch_cannot_use_refuses_in_one_line(fake_gpu_head, sqlite_url, tmp_path):
    path = write_study(tmp_path, budget={"trials": 1, "gpus_per_trial": 1, "max_failures": 0},
                       scheduler={"type": "none"})
    result = run_study(path, storage=sqlite_url, ray_address=fake_gpu_head, progress=False)
    (trial,) = stored_trials(sqlite_url, "small-tiny")
    reason = trial.user_attrs["fail_reason"]
    assert trial.state == TrialState.FAIL and result.counts["FAIL"] == 1
    assert "Ray gave this trial GPU 0 but PyTorch cannot use it" in reason and "\n" not in reason
    assert not trial.intermediate_values  # refused before it trained a step on the CPU


def test_a_trial_ray_gave_no_gpu_trains_on_the_cpu_even_where_ray_has_one(fake_gpu_head, sqlite_url, tmp_path):
    path = write_study(tmp_path, budget={"trials": 1, "gpus_per_trial": 0}, scheduler={"type": "none"})
    run_study(path, storage=sqlite_url, ray_address=fake_gpu_head, progress=False)
    (trial,) = stored_trials(sqlite_url, "small-tiny")
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["train_device"] == "cpu"
    assert trial.user_attrs["pid"] > 0 and trial.user_attrs["host"]
