"""Two profiles of the same grid writing one database at once (SQLite and PostgreSQL): both finish,
they decide alike, and no measurement or pair is stored twice."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tcnsearch.profile.measure import Pair
from tcnsearch.profile.table import LatencyRow, PairRow, summarize_pairs
from tcnsearch.storage import create_engine

pytestmark = [pytest.mark.slow]

CLI = [str(Path(sys.executable).with_name("tcnsearch"))]
GRID = ["--gpu", "cpu", "--lengths", "256", "--kernel-sizes", "3,9", "--dilation-factors", "4,8",
        "--depths", "3,4", "--per-block", "1", "--channels", "16", "--ema-dim", "8", "--max-time", "0.2",
        "--min-pairs", "4", "--threads", "1", "--json"]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("pg_fresh_url")


def _decisions(doc: dict) -> dict[str, str]:
    return {row["tcn"]: row["decision"] for row in doc["candidates"]}


def test_two_profiles_of_one_grid_share_the_database(url, tmp_path):
    runs = [subprocess.Popen(CLI + ["profile", *GRID, "--storage", url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path) for _ in range(2)]
    outs = [run.communicate(timeout=600) for run in runs]
    for run, (_, err) in zip(runs, outs, strict=True):
        assert run.returncode == 0, err[-2000:]
    first, second = (json.loads(out) for out, _ in outs)
    assert _decisions(first) == _decisions(second)

    with create_engine(url).connect() as conn:
        rows = conn.execute(sa.select(LatencyRow)).all()
        assert len(rows) == first["n_candidates"]  # one row per structure and length, not one per writer
        for row in rows:
            pairs = conn.execute(sa.select(PairRow).where(PairRow.latency_id == row.id).order_by(PairRow.seq)).all()
            assert [p.seq for p in pairs] == list(range(len(pairs)))  # no seq written twice, none skipped
            assert row.n_pairs == len(pairs)  # the summary covers both writers' pairs
            summary = summarize_pairs([Pair(p.tcn_fwd_ms, p.base_fwd_ms, p.tcn_fwdbwd_ms, p.base_fwdbwd_ms, p.wall_s)
                                       for p in pairs])
            assert row.speedup_fwdbwd == pytest.approx(summary["speedup_fwdbwd"])
