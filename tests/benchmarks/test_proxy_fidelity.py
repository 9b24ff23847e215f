"""The proxy-fidelity benchmark's part (a) on a generated table: its tau against a brute-force count."""

import gzip
import itertools
import json

import pytest

from tests.benchmarks import load_benchmark, unload_benchmark


@pytest.fixture(scope="module")
def pf():
    yield load_benchmark("proxy_fidelity")
    unload_benchmark("proxy_fidelity", "attention_ablation")


def _kendall(x, y) -> float:
    pairs = list(itertools.combinations(range(len(x)), 2))
    return sum((x[i] - x[j]) * (y[i] - y[j]) > 0 for i, j in pairs) / len(pairs) * 2 - 1


def test_early_steps_are_ranked_against_the_other_seeds_final_value(pf, tmp_path):
    """Six configurations: at step 10 ranked backwards, at step 20 in a shuffled order, at the end in the
    order of their final values (which the two seeds share, 0.1 apart)."""
    finals = [3.0, 3.1, 3.2, 3.3, 3.4, 3.5]
    shuffled = [3.3, 3.0, 3.5, 3.1, 3.4, 3.2]
    rows = []
    for c, final in enumerate(finals):
        for seed in (0, 1):
            curve = [[10, 6.0 - final], [20, shuffled[c]], [30, final + 0.01 * seed]]
            rows.append({"K": 3 + 2 * c, "f": 2, "D": 3, "B": 1, "lr": 1e-3, "seed": seed, "curve": curve,
                         "bpc": final + 0.01 * seed})
    table = tmp_path / "table.json.gz"
    with gzip.open(table, "wt") as fh:
        json.dump({"device": "test", "rows": rows}, fh)
    result = pf.early_evaluations(resamples=200, table=table)
    assert result["configurations"] == 6 and result["steps"] == [10, 20, 30]
    by_step = {r["step"]: r for r in result["rows"]}
    assert by_step[10]["tau"] == pytest.approx(-1.0) and by_step[30]["tau"] == pytest.approx(1.0)
    assert by_step[20]["tau"] == pytest.approx(_kendall(shuffled, finals))
    lo, hi = by_step[20]["tau_ci"]
    assert lo <= by_step[20]["tau"] <= hi
    # the pick at step 10 is the worst configuration: its final value less the best's; at the end, none
    assert by_step[10]["regret_bpc"] == pytest.approx(0.5) and by_step[30]["regret_bpc"] == pytest.approx(0.0)
