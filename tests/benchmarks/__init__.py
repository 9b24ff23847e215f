"""Tests of the benchmark scripts (benchmarks/*.py are scripts, not a package users import)."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module, registered under `name` (a process pool pickles its functions by
    module name); `unload_benchmark` removes it again."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def unload_benchmark(*names: str) -> None:
    for name in names:
        sys.modules.pop(name, None)
