"""The prepared GPU check: rehearsed on the CPU (every check runs, small), and refused without a GPU."""

import json

import pytest
import torch

from tests.benchmarks import load_benchmark, unload_benchmark


@pytest.fixture(scope="module")
def gpu_check():
    yield load_benchmark("gpu_check")
    unload_benchmark("gpu_check", "ops", "train")  # and the benchmarks it imported from benchmarks/


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: `make gpu-check` runs for real")
def test_without_a_gpu_it_says_so_and_exits_2(gpu_check, capsys):
    assert gpu_check.main([]) == 2
    assert "no CUDA device here" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ray
def test_every_check_passes_in_a_rehearsal_on_the_cpu(gpu_check, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert gpu_check.main(["--rehearse", "--json", str(tmp_path / "checks.json")]) == 0
    rows = json.loads((tmp_path / "checks.json").read_text())
    assert [r["status"] for r in rows] == ["pass"] * 7
    assert rows[3]["figures"]["trial devices"] == "cpu, cpu" and rows[4]["figures"]["finished at"] == 200
