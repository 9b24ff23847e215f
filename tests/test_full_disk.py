"""A disk that fills: the command stops with one line and exit code 1, the database passes SQLite's
integrity check with every row committed before, and the same command continues once space is freed.

The filesystem is a small tmpfs mounted for the test (skipped, with the reason, where this user may not
mount one)."""

import contextlib
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tcnsearch.errors import disk_full
from tcnsearch.files import write_atomic
from tests.conftest import wait_for

CLI = [str(Path(sys.executable).with_name("tcnsearch"))]
MIN_PAIRS = 4
GRID = ["profile", "--gpu", "cpu", "--lengths", "256", "--dilation-factors", "4", "--depths", "3,4",
        "--per-block", "1", "--channels", "16", "--ema-dim", "8", "--max-time", "0.2", "--min-pairs", str(MIN_PAIRS),
        "--threads", "1"]


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs of this test's own, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", f"tcnsearch-test-{uuid.uuid4().hex[:6]}",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(done.stderr or 'mount failed').strip()[:80]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "ab") as fh:
        while True:
            fh.write(b"\0" * (1 << 16))
            fh.flush()
    return filler


def _db_state(path: Path) -> tuple[str, list]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute("SELECT * FROM tcnsearch_latency_pairs ORDER BY id").fetchall()
    return check, rows


@pytest.mark.slow
def test_a_profile_whose_database_fills_the_disk_stops_and_continues_later(small_disk, tmp_path):
    storage = ["--storage", f"sqlite:///{small_disk / 'profiles.db'}"]
    first = subprocess.run(CLI + GRID + storage + ["--kernel-sizes", "3,9"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    check, before = _db_state(small_disk / "profiles.db")
    assert check == "ok" and before

    # the disk fills while the second profile measures, after it has committed some pairs of its own
    slow = ["--max-time", "2", "--precision", "0.001"]
    run = subprocess.Popen(CLI + GRID + storage + slow + ["--kernel-sizes", "5,7"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert wait_for(lambda: len(_db_state(small_disk / "profiles.db")[1]) > len(before), timeout=300, every=0.1)
    filler = _fill(small_disk)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 1, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert "disk is full" in line and "run the same command again" in line and "Traceback" not in err
    filler.unlink()  # (reading a WAL database needs room for its index)
    check, after = _db_state(small_disk / "profiles.db")
    assert check == "ok" and after[:len(before)] == before and len(after) > len(before)  # all committed pairs

    # a disk already full when a command starts: the same line, and nothing changes
    filler = _fill(small_disk)
    full = subprocess.run(CLI + GRID + storage + ["--kernel-sizes", "5,7"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert full.returncode == 1 and "disk is full" in full.stderr.strip().splitlines()[-1], full.stderr[-2000:]
    filler.unlink()
    assert _db_state(small_disk / "profiles.db") == (check, after)

    again = subprocess.run(CLI + GRID + storage + ["--kernel-sizes", "5,7", "--json"], capture_output=True,
                           text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    check, final = _db_state(small_disk / "profiles.db")
    assert check == "ok" and final[:len(after)] == after
    # It finished the profile: each structure has its pairs, those the stopped run committed counted with
    # the ones it measured now (none, where the stopped run's first write already held enough).
    profile = json.loads(again.stdout)
    assert profile["n_candidates"] == len(profile["candidates"]) > 0 and not profile["failed"]
    assert all(c["ok"] and c["n_pairs"] >= MIN_PAIRS for c in profile["candidates"]), profile["candidates"]
    assert profile["pairs"] == len(final) - len(after)


def test_a_report_that_does_not_fit_leaves_the_previous_one_whole(small_disk):
    report = small_disk / "reports" / "study.html"
    write_atomic(report, "<html>the previous report</html>")
    with pytest.raises(OSError):
        write_atomic(report, "x" * (8 << 20))  # larger than the disk
    assert report.read_text() == "<html>the previous report</html>"
    assert sorted(p.name for p in report.parent.iterdir()) == ["study.html"]  # no torn temporary left
    with pytest.raises(OSError):
        write_atomic(small_disk / "new" / "deeper" / "x.html", "x" * (8 << 20))
    assert not (small_disk / "new").exists()  # the folders it made are gone again


def test_a_full_disk_is_told_apart_from_other_failures_whichever_layer_raised_it():
    import errno
    import os

    import psycopg.errors
    import sqlalchemy.exc

    sqlite_full = sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception("database or disk is full"))
    pg_full = sqlalchemy.exc.OperationalError("INSERT ...", {}, psycopg.errors.DiskFull("no room"))
    file_full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "report.html")
    for exc in (sqlite_full, pg_full, psycopg.errors.DiskFull("no room"), file_full):
        assert "the disk is full" in disk_full(exc)
    assert "writing report.html" in disk_full(file_full)
    try:  # the full disk as the cause of what reached the command
        raise RuntimeError("flush failed") from file_full
    except RuntimeError as wrapped:
        assert "the disk is full" in disk_full(wrapped)
    assert disk_full(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))) is None
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None
