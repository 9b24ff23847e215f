"""tcnsearch as a user installs it: a wheel in a fresh virtual environment, run from outside the checkout."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from setuptools import find_packages

pytestmark = [pytest.mark.slow]

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_list_names_every_package_folder():
    """pyproject lists its packages (studies/ is mapped in): a new subpackage must be added there."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = find_packages(str(ROOT), include=["tcnsearch", "tcnsearch.*"])
    assert sorted(config["packages"]) == sorted([*found, "tcnsearch.studies"])
    assert config["package-dir"] == {"tcnsearch.studies": "studies"}


def test_a_wheel_in_a_fresh_venv_finds_its_studies_and_trains_from_any_folder(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("tcnsearch-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=120)
    # The dependencies (torch, Ray, ...) come from this environment's site-packages, appended to the
    # fresh one's path; .pth files there (this checkout's editable install) are not run from there.
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "deps.pth").write_text(ours + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TCNSEARCH_STORAGE")}
    env |= {"TCNSEARCH_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)}  # the kernel compiled from the wheel

    def run(*args):
        return subprocess.run([str(venv / "bin" / "tcnsearch"), *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=300)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import tcnsearch; print(tcnsearch.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout
    listed = run("study", "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"name": "assoc-recall"' in listed.stdout and str(site) in listed.stdout
    unknown = run("study", "nope")
    assert unknown.returncode == 2 and "assoc-recall" in unknown.stderr and "enwik8" in unknown.stderr
    trained = run("train", "assoc-recall", "--preset", "tiny", "--steps", "3", "--json")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert '"status": "completed"' in trained.stdout and list((tmp_path / "cache").iterdir())  # native kernel built
    assert not list(elsewhere.iterdir())  # nothing written where it ran
