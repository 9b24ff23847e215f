"""How a study starts: what it may train, what is queued first, what a warm start copies, what is refused."""

import optuna
import pytest
from optuna.trial import TrialState

from tcnsearch.errors import UserError
from tcnsearch.search import load_spec, open_storage
from tcnsearch.search.start import (
    check_existing,
    distributions,
    enqueue_structures,
    paper_structures,
    parse_enqueue,
    prepare_study,
    resolve_enqueue,
    structure_space,
    warm_start_from,
)
from tcnsearch.structure import Structure
from tests.search.conftest import survivor, write_study

optuna.logging.set_verbosity(optuna.logging.ERROR)
GRID = {"kernel_size": [3, 5], "dilation_factor": [2, 4], "depth": [3, 4], "per_block": [1]}
SURVIVORS = [survivor(k, f, d, 1, latency_ms=k * d) for k in (3, 5) for f in (2, 4) for d in (3, 4) if (k, f) != (5, 4)]


@pytest.fixture
def spec(tmp_path):
    return load_spec(write_study(tmp_path))


def test_enqueue_takes_paper_a_label_or_k_f_d_b():
    assert parse_enqueue("paper") == "paper"
    assert parse_enqueue("5,4,3,1") == parse_enqueue("K5-f4-D3-B1") == Structure(5, 4, 3, 1)
    for bad in ("5,4", "K5-f4", "five", "5,4,3,x"):
        with pytest.raises(UserError, match="give 'paper' or a structure"):
            parse_enqueue(bad)


@pytest.mark.parametrize("length", [64, 1024, 4096, 16384])
def test_the_papers_tcn_is_the_smallest_f_that_covers_the_length(length):
    for s in paper_structures(length):
        assert (s.kernel_size, s.per_block) == (17, 1) and s.depth in (4, 3)
        assert s.receptive_field >= length
        assert s.dilation_factor == 1 or Structure(17, s.dilation_factor - 1, s.depth, 1).receptive_field < length


def test_a_latency_budget_allows_only_the_survivors_within_it(spec):
    spec.objective.max_latency_ms = 10.0
    space = structure_space(SURVIVORS, GRID, spec)
    assert [s.latency_ms for s in space.allowed.values()] == [9, 9]  # K3 D3 (f 2 and 4); K3 D4 takes 12
    assert space.constraints(Structure(3, 2, 4, 1))["latency_ms"] == 2.0  # over the budget by 2 ms
    spec.objective.max_latency_ms = 1.0
    with pytest.raises(UserError, match="no survivor meets the latency budget.*the fastest, K3-f2-D3-B1, takes 9 ms"):
        structure_space(SURVIVORS, GRID, spec)


def test_enqueued_structures_resolve_to_allowed_ones_or_are_refused(spec):
    space = structure_space(SURVIVORS, GRID, spec)
    chosen, notes = resolve_enqueue(space, [Structure(3, 4, 3, 1), "paper"], [64])
    assert chosen[0].label == "K3-f4-D3-B1" and len(chosen) == 3  # itself, then the paper's two, nearest
    assert len(notes) == 2 and all("is not a survivor of this study's profile; queued its nearest" in n for n in notes)
    with pytest.raises(UserError, match="--enqueue K5-f4-D3-B1: not a structure this study may train.*nearest"):
        resolve_enqueue(space, [Structure(5, 4, 3, 1)], [64])


def test_structures_are_queued_first_and_once(sqlite_url, spec):
    study = optuna.create_study(storage=sqlite_url)
    first = [SURVIVORS[1], SURVIVORS[0]]
    enqueue_structures(study, first)
    enqueue_structures(study, first)  # a resumed study does not queue them again
    queued = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.user_attrs["enqueued"] for t in queued] == [s.label for s in first]
    assert queued[0].system_attrs["fixed_params"] == first[0].structure.as_params()


def test_a_warm_start_copies_what_fits_says_what_does_not_and_only_once(sqlite_url, spec):
    space = structure_space(SURVIVORS, GRID, spec)
    dists = distributions(space, spec)
    source = optuna.create_study(study_name="source", storage=sqlite_url)
    for k, lr in ((3, 2e-3), (5, 5e-3), (9, 5e-3), (3, 0.5)):  # K=9 and lr=0.5 lie outside this space
        source.add_trial(optuna.trial.create_trial(
            params={"K": k, "f": 2, "D": 3, "B": 1, "lr": lr, "model.dropout": 0.0},
            distributions={"K": optuna.distributions.IntDistribution(3, 9, step=2), "f": dists["f"], "D": dists["D"],
                           "B": dists["B"], "lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
                           "model.dropout": dists["model.dropout"]}, value=1.0))
    study = optuna.create_study(study_name="seeded", storage=sqlite_url)
    notes = warm_start_from(study, source, dists)
    assert notes[0] == "warm start: copied 2 finished trials of 'source'"
    assert "2 trials of 'source' did not transfer" in notes[1] and "K=9" in notes[1] and "lr=0.5" in notes[1]
    assert [t.user_attrs["warm_start_from"] for t in study.trials] == ["source#0", "source#1"]
    assert warm_start_from(study, source, dists) == [] and len(study.trials) == 2


def test_an_existing_study_is_refused_unless_resumed_with_the_same_objectives(sqlite_url, spec):
    storage = open_storage(sqlite_url)
    study, survivors, grid = prepare_study(spec, storage, "s", ["minimize"], ["loss"], SURVIVORS, GRID, False,
                                           optuna.samplers.RandomSampler(), {"task": "assoc-recall"})
    assert survivors == SURVIVORS and study.user_attrs["task"] == "assoc-recall"
    study.tell(study.ask(), 1.0)
    with pytest.raises(UserError, match="already holds 1 trials; --resume continues it"):
        check_existing(storage, "s", False, ["minimize"])
    with pytest.raises(UserError, match=r"optimises \['minimize'\], not \['minimize', 'minimize'\]"):
        check_existing(storage, "s", True, ["minimize", "minimize"])
    check_existing(storage, "s", True, ["minimize"])
    check_existing(storage, "absent", False, ["minimize"])
    # Resumed with another profile's survivors, the study keeps the ones it was created with.
    _, kept, _ = prepare_study(spec, storage, "s", ["minimize"], ["loss"], SURVIVORS[:1], GRID, True,
                               optuna.samplers.RandomSampler(), {"task": "changed"})
    assert kept == SURVIVORS and optuna.load_study(study_name="s", storage=storage).user_attrs["task"] == "assoc-recall"
