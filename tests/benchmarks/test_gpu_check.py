"""The prepared GPU check: rehearsed on the CPU (every check runs, small), and refused without a GPU."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    for name in ("ops", "train"):  # the benchmarks it imported from benchmarks/
        sys.modules.pop(name, None)


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
