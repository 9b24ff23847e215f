"""The benchmark runs and reports consistent numbers (the speed itself is not asserted)."""

import json

import pytest

from tcnsearch.ops import receptive_field
from tests.benchmarks import load_benchmark, unload_benchmark


@pytest.fixture(scope="module")
def ops_bench():
    yield load_benchmark("ops")
    unload_benchmark("ops")


def test_dilation_rule_is_the_papers(ops_bench):
    # The smallest dilation factor whose receptive field reaches the length.
    for length, expected in ((1024, 4), (4096, 6), (131072, 20)):
        f = ops_bench.dilation_factor_for(length, 17, 4)
        assert f == expected
        assert receptive_field(17, f, 4) >= length > receptive_field(17, f - 1, 4)


def test_json_report(ops_bench, capsys):
    assert ops_bench.main(["--lengths", "256,512", "--channels", "8", "--min-run-time", "0.01", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["length"] for r in result["rows"]] == [256, 512]
    for r in result["rows"]:
        assert r["receptive_field"] >= r["length"]
        assert r["speedup_fwd"] == pytest.approx(r["ema_fwd_ms"] / r["tcn_fwd_ms"])
        assert r["speedup_fwdbwd"] == pytest.approx(r["ema_fwdbwd_ms"] / r["tcn_fwdbwd_ms"])
        assert 0 < r["ema_kernel_generation_share"] < 1
    assert result["native_kernel_compile_s"] > 0


def test_bad_lengths(ops_bench, capsys):
    with pytest.raises(SystemExit) as exc:
        ops_bench.main(["--lengths", "12,abc"])
    assert exc.value.code == 2
    assert "--lengths" in capsys.readouterr().err
