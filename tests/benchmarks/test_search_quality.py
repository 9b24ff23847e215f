"""The replay benchmark on a small generated table: its ASHA rule, its regret and its report."""

import gzip
import itertools
import json
import random

import numpy as np
import pytest

from tests.benchmarks import load_benchmark, unload_benchmark


@pytest.fixture(scope="module")
def sq():
    yield load_benchmark("search_quality")
    unload_benchmark("search_quality", "replay_peers", "replay_report")


@pytest.fixture
def holey_space():
    """K 3/5/7 x f 2/4 x D 2/3 x B 1, every structure a survivor but K7-f4-D3-B1."""
    from tcnsearch.profile import Survivor
    from tcnsearch.search import StructureSpace
    from tcnsearch.structure import Structure

    structures = [Structure(k, f, d, 1) for k, f, d in itertools.product([3, 5, 7], [2, 4], [2, 3])]
    survivors = [Survivor(s, 1.0, 1.0, (1.0, 1.0), 1.0, (1.0, 1.0)) for s in structures if s.label != "K7-f4-D3-B1"]
    grid = {"kernel_size": [3, 5, 7], "dilation_factor": [2, 4], "depth": [2, 3], "per_block": [1]}
    return StructureSpace(grid, survivors)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """12 structures x 2 lrs x 2 seeds; the final bpc depends on K and the lr, curves fall to it."""
    rng = random.Random(0)
    rows = []
    for (k, f, d), lr, seed in itertools.product(itertools.product([3, 5, 7], [2, 4], [2, 3]), [0.002, 0.01], [0, 1]):
        final = 2.0 + 0.1 * abs(k - 5) + (0.2 if lr == 0.002 else 0.0) + rng.uniform(0, 0.02)
        curve = [[30 * (i + 1), round(final + 1.5 / (i + 1) - 1.5 / 4, 5)] for i in range(4)]
        rows.append({"K": k, "f": f, "D": d, "B": 1, "R": 1, "lr": lr, "seed": seed, "curve": curve,
                     "bpc": curve[-1][1], "train_s": 10.0, "latency_ms": 1.0, "speedup": 1.0,
                     "latency_source": "measured"})
    path = tmp_path_factory.mktemp("table") / "table.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump({"device": "test", "grid": {"kernel_size": [3, 5, 7], "dilation_factor": [2, 4], "depth": [2, 3],
                                              "per_block": [1]}, "structures": 12, "rows": rows}, fh)
    return path


def test_asha_stops_what_is_worse_than_the_rung_quantile_as_rays_rule_does(sq):
    asha = sq.Asha(max_t=8, grace_period=2, rf=2)
    assert [m for m, _ in asha.rungs] == [4, 2]
    assert not asha.stops(0, 2, 3.0)  # the first at a rung has nothing to beat
    assert not asha.stops(1, 2, 2.5)  # better than the median of {3.0}
    assert asha.stops(2, 2, 3.5)  # worse (bpc higher) than the median of {3.0, 2.5}
    assert not asha.stops(0, 3, 3.0)  # between rungs nothing happens


def test_regret_is_zero_at_the_best_configuration_and_one_at_the_median(sq, table):
    doc = sq.load_table(table)
    assert len(doc["worth"]) == 24 and all(len(rows) == 2 for rows in doc["runs"].values())
    assert sq.regret(doc, doc["best"]) == 0 and sq.regret(doc, doc["median"]) == pytest.approx(1.0)


@pytest.mark.slow
def test_every_method_replays_and_the_report_is_consistent(sq, table, capsys, tmp_path):
    figure = tmp_path / "regret.html"
    # GP's asks take seconds each: below, on their own; the peers need their own venv (make bench-peers)
    fast = [m for m in sq.METHODS if m not in sq.SLOW and m not in sq.replay_peers.PEERS]
    report = sq.main(["--table", str(table), "--seeds", "3", "--trials", "20", "--workers", "1", "--json",
                      "--out", str(figure), "--methods", ",".join(fast)])
    assert list(report["methods"]) == fast and {"optuna-tpe", "tpe-categorical"} <= set(fast)
    for m, r in report["methods"].items():
        assert (r["seeds"], r["trials"]) == (3, 20)
        low, high = r["vs_random"]["ci"]
        assert low <= r["vs_random"]["ratio"] <= high, m
        curve = np.array(r["curve_iqm"])
        assert len(curve) == 20 and (curve >= 0).all() and np.isfinite(curve).all(), m
        low, high = r["regret"][10]["ci"]
        assert low <= r["regret"][10]["iqm"] <= high
        clock = r["clock"]
        low, high = clock["vs_random"]["ci"]
        assert low <= clock["vs_random"]["ratio"] <= high, m
        # 10 s runs on 2 workers: 20 trials take at least 100 simulated seconds, the decisions on top
        assert clock["seconds_to_target"]["iqm"] >= 10 and clock["decision_s_per_trial"] > 0, m
        assert np.all(np.diff(clock["curve_iqm"]) <= 1e-12), m  # an incumbent only improves with time
    # 24 configurations, 20 trials: random search has found a near-best one in most seeds
    assert report["methods"]["random"]["regret"][20]["iqm"] <= 1.0
    assert json.loads(capsys.readouterr().out)["methods"]["random"]["seeds"] == 3
    assert "normalized regret" in figure.read_text()


@pytest.mark.slow
def test_the_gp_sampler_replays_too_with_and_without_asha(sq, table):
    doc = sq.load_table(table)
    for method in ("gp", "gp+asha", "optuna-gp"):
        found, clock, _ = sq.replay(method, 0, 10, doc)
        assert len(found) == len(clock) == 10 and set(found[-1:]) <= set(doc["worth"].values())


def test_seed_noise_is_the_pooled_sd_of_runs_around_their_configuration(sq, table):
    doc = sq.load_table(table)
    pairs = [[r["bpc"] for r in rows] for rows in doc["runs"].values()]
    # two seeds: the sample variance of a pair is half its squared difference
    expected = (sum((a - b) ** 2 / 2 for a, b in pairs) / len(pairs)) ** 0.5
    assert sq.seed_noise(doc) == pytest.approx(expected)


def test_the_ratio_interval_brackets_the_ratio_of_iqms(sq):
    slow, fast = [30, 40, 50, 60, 35, 45], [10, 12, 15, 11, 14, 13]
    low, high = sq.ratio_interval(slow, fast)
    assert low <= sq.iqm(slow) / sq.iqm(fast) <= high and low > 2


def test_the_clock_charges_training_and_every_decision(sq, table):
    doc = sq.load_table(table)
    found, clock, decided = sq.replay("random", 0, 20, doc)
    assert len(found) == len(clock) == 20 and clock == sorted(clock)
    # every run takes 10 s, 2 workers: without decisions the 20th would finish at exactly 100 s; the
    # decisions that delayed it come on top, all of them at most
    assert 100 < clock[-1] <= 100 + decided + 1e-9


def test_regret_at_a_moment_is_the_incumbents_after_the_trials_finished_by_then(sq):
    runs = np.array([[0.9, 0.5, 0.1], [0.4, 0.4, 0.0]])
    times = np.array([[10.0, 20.0, 30.0], [15.0, 16.0, 50.0]])
    assert sq.regret_at(runs, times, 5.0).tolist() == [1.0, 1.0]  # nothing finished yet
    assert sq.regret_at(runs, times, 20.0).tolist() == [0.5, 0.4]
    assert sq.regret_at(runs, times, 99.0).tolist() == [0.1, 0.0]  # after the last trial: where it ended


def test_the_peers_search_the_grid_as_ordered_choices_and_skip_what_may_not_be_trained(sq, holey_space):
    peers = sq.replay_peers
    assert peers.choices(holey_space, [0.01, 0.002]) == {"K": [3, 5, 7], "f": [2, 4], "D": [2, 3], "B": [1],
                                                         "lr": [0.01, 0.002]}
    assert [s.label for s in peers.not_allowed(holey_space)] == ["K7-f4-D3-B1"]
    survivor, repaired = peers.to_run(holey_space, {"K": 5, "f": 2, "D": 3, "B": 1})
    assert (survivor.label, repaired) == ("K5-f2-D3-B1", False)
    # the one hole: K is one step of two away from K5 (0.5 of its axis), f and D a whole axis away
    survivor, repaired = peers.to_run(holey_space, {"K": 7, "f": 4, "D": 3, "B": 1})
    assert (survivor.label, repaired) == ("K5-f4-D3-B1", True)


def test_a_peer_whose_package_is_missing_is_skipped_with_a_note(sq, table, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sq.replay_peers.PEERS, "hebo", "tcnsearch_no_such_package")
    assert "make bench-peers" in sq.replay_peers.missing("hebo") and sq.replay_peers.missing("random") is None
    report = sq.main(["--table", str(table), "--seeds", "2", "--trials", "10", "--workers", "1", "--json",
                      "--out", str(tmp_path / "f.html"), "--methods", "random,hebo"])
    assert list(report["methods"]) == ["random"]
    assert "skipped hebo" in capsys.readouterr().err
