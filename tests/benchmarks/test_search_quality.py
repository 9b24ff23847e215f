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
    unload_benchmark("search_quality")


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
    fast = [m for m in sq.METHODS if not m.startswith("gp")]  # GP's asks take seconds each: below, on their own
    report = sq.main(["--table", str(table), "--seeds", "3", "--trials", "20", "--workers", "1", "--json",
                      "--out", str(figure), "--methods", ",".join(fast)])
    assert list(report["methods"]) == fast
    for m, r in report["methods"].items():
        assert (r["seeds"], r["trials"]) == (3, 20)
        low, high = r["vs_random"]["ci"]
        assert low <= r["vs_random"]["ratio"] <= high, m
        curve = np.array(r["curve_iqm"])
        assert len(curve) == 20 and (curve >= 0).all() and np.isfinite(curve).all(), m
        low, high = r["regret"][10]["ci"]
        assert low <= r["regret"][10]["iqm"] <= high
    # 24 configurations, 20 trials: random search has found a near-best one in most seeds
    assert report["methods"]["random"]["regret"][20]["iqm"] <= 1.0
    assert json.loads(capsys.readouterr().out)["methods"]["random"]["seeds"] == 3
    assert "normalized regret" in figure.read_text()


@pytest.mark.slow
def test_the_gp_sampler_replays_too_with_and_without_asha(sq, table):
    doc = sq.load_table(table)
    for method in ("gp", "gp+asha"):
        found = sq.replay(method, 0, 10, doc)
        assert len(found) == 10 and set(found[-1:]) <= set(doc["worth"].values())


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
