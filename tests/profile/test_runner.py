import hashlib
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from tcnsearch.errors import UserError
from tcnsearch.profile import (
    LatencyTable,
    LocalMeasurer,
    ProfileSpec,
    Session,
    Shape,
    assemble,
    decision,
    default_cpu_threads,
    fingerprint,
    finished,
    measure,
    rounds,
    run_profile,
)
from tcnsearch.profile.table import PairRow, Stored
from tcnsearch.storage import create_engine

pytestmark = [pytest.mark.slow]

FAST = {"max_time": 0.05, "min_pairs": 3}
SPEC = ProfileSpec(lengths=[256, 512], kernel_sizes=[3, 9], dilation_factors=[4, 8], depths=[3, 4], per_block=[1],
                   channels=16, ema_dim=8, **FAST)
N_CANDIDATES = 4  # (3,8,4), (9,8,3), (9,8,4), (9,4,4) reach R >= 512


def _n_pairs(url: str) -> int:
    with create_engine(url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(PairRow)).scalar()


def _fingerprint_at(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fingerprint(torch.device("cpu"), "fp32")
    finally:
        torch.set_num_threads(before)


def test_profile_stores_every_pair_and_reruns_from_the_table(sqlite_url):
    assert len(SPEC.candidates()) == N_CANDIDATES
    first = run_profile(SPEC, gpu="cpu", storage=sqlite_url, progress=False)
    assert (first.measured, first.cached, first.predicted) == (N_CANDIDATES, 0, 0)
    assert first.device == _fingerprint_at(default_cpu_threads())
    assert first.pairs == _n_pairs(sqlite_url) >= N_CANDIDATES * len(SPEC.lengths) * 3
    for row in first.candidates:
        assert row["ok"] and row["source"] == "measured"
        for e in row["by_length"]:
            low, high = e["speedup_fwdbwd_ci"]
            assert low <= e["speedup_fwdbwd"] <= high and e["n_pairs"] >= 3
            assert row["decision"] in ("survivor", "rejected", "undecided")
    again = run_profile(SPEC, gpu="cpu", storage=sqlite_url, progress=False)
    assert (again.measured, again.cached, again.pairs) == (0, N_CANDIDATES, 0)
    assert again.survivors == first.survivors  # read back exactly what was stored
    forced = run_profile(SPEC, gpu="cpu", storage=sqlite_url, force=True, progress=False)
    assert forced.measured == N_CANDIDATES and _n_pairs(sqlite_url) == forced.pairs  # old pairs are gone


def test_a_rerun_continues_an_unfinished_measurement(sqlite_url):
    """An interrupted profile keeps its pairs; a rerun that asks for more adds to them."""
    short = SPEC.model_copy(update={"lengths": [256], "kernel_sizes": [9], "depths": [4], "dilation_factors": [8]})
    run_profile(short, gpu="cpu", storage=sqlite_url, progress=False)
    kept = _n_pairs(sqlite_url)
    longer = short.model_copy(update={"min_pairs": kept + 4})  # max_time binds only past min_pairs
    result = run_profile(longer, gpu="cpu", storage=sqlite_url, progress=False)
    assert result.measured == 1 and result.pairs >= 4
    assert _n_pairs(sqlite_url) == kept + result.pairs  # appended, nothing measured twice
    assert result.candidates[0]["n_pairs"] == kept + result.pairs


def test_more_lengths_measure_only_the_missing(sqlite_url):
    run_profile(SPEC, gpu="cpu", storage=sqlite_url, progress=False)
    wider = SPEC.model_copy(update={"lengths": [256, 512, 1024]})
    result = run_profile(wider, gpu="cpu", storage=sqlite_url, progress=False)
    assert result.measured == len(wider.candidates()) and result.cached == 0
    by_length = {e["length"]: e["n_pairs"] for r in result.candidates for e in r["by_length"]}
    assert by_length[1024] >= 3


def test_postgresql_storage(pg_url):
    result = run_profile(SPEC, gpu="cpu", storage=pg_url, progress=False)
    assert result.measured > 0 and result.storage == pg_url
    again = run_profile(SPEC, gpu="cpu", storage=pg_url, progress=False)
    assert again.measured == 0
    summary = LatencyTable(create_engine(pg_url)).summary()
    assert {(r["length"], r["tcn"]) for r in summary} >= {(256, N_CANDIDATES), (512, N_CANDIDATES)}


def _stored(fwd: tuple, fwdbwd: tuple, status="ok", n_pairs=6, wall_s=0.1):
    return Stored(1, status, None if status == "ok" else "RuntimeError: out of memory", n_pairs, wall_s,
                  {"fwd": fwd, "fwdbwd": fwdbwd} if status == "ok" else {"fwd": None, "fwdbwd": None},
                  {"fwd": 1.0, "fwdbwd": 2.0}, {"fwd": 10.0, "fwdbwd": 30.0}, None, None)


def test_decisions_come_from_the_interval():
    assert decision((2.0, 1.5, 2.5), 1.2) == "survivor"
    assert decision((2.0, 1.5, 2.5), 1.5) == "survivor"  # the low end at the threshold passes
    assert decision((2.0, 1.5, 2.5), 2.0) == "undecided"  # the median above it is not enough
    assert decision((2.0, 1.5, 2.5), 2.6) == "rejected"


def test_survivor_rule_uses_the_mode_and_every_length():
    spec = ProfileSpec(lengths=[100, 200], kernel_sizes=[3], dilation_factors=[2], depths=[7, 8], per_block=[1],
                       min_speedup=2.0)
    a, b = spec.candidates()  # depth 7 and 8
    stored = {}
    for length in (100, 200):
        s = Shape(1, 64, length, 16, False)
        stored[(s, a)] = _stored((5.0, 4.5, 5.5), (1.5, 1.4, 1.6))  # 5x forward, 1.5x forward+backward
        stored[(s, b)] = _stored((2.5, 2.2, 2.8), (3.0, 2.8, 3.2) if length == 100 else (2.0, 1.8, 2.2))
    _, rows = assemble(spec, stored)
    assert [r["decision"] for r in rows] == ["rejected", "undecided"]  # train mode: b straddles 2x at L=200
    assert rows[1]["speedup_fwdbwd"] == 2.0 and rows[1]["speedup_fwdbwd_ci"] == [1.8, 2.2]  # the binding length
    _, rows = assemble(spec.model_copy(update={"mode": "infer"}), stored)
    assert [r["decision"] for r in rows] == ["survivor", "survivor"]
    # Latencies are the baseline's pooled time over the paired speedup: drift-free.
    assert rows[0]["tcn_fwd_ms"] == pytest.approx(10.0 / 5.0)
    assert rows[0]["by_length"][0]["tcn_fwd_raw_ms"] == 1.0


def test_when_a_measurement_is_finished():
    spec = ProfileSpec(min_speedup=2.0, precision=0.1, min_pairs=5, max_time=1.0)
    assert not finished(spec, None)
    assert finished(spec, _stored(None, None, status="failed"))
    assert not finished(spec, _stored((4.0, 3.9, 4.1), (4.0, 3.9, 4.1), n_pairs=4))  # too few pairs
    assert finished(spec, _stored((4.0, 3.9, 4.1), (4.0, 3.9, 4.1)))  # precise and decided
    assert not finished(spec, _stored((4.0, 3.9, 4.1), (4.0, 3.0, 5.0)))  # decided but not precise
    assert not finished(spec, _stored((4.0, 3.9, 4.1), (2.0, 1.95, 2.05)))  # precise, a close call: more
    assert finished(spec, _stored((4.0, 3.9, 4.1), (2.0, 1.95, 2.05), wall_s=1.0))  # ... until the time cap


def test_failed_candidate_is_reported_and_not_a_survivor(sqlite_url):
    spec = ProfileSpec(lengths=[128], kernel_sizes=[3], dilation_factors=[2], depths=[7, 8], per_block=[1],
                       channels=8, ema_dim=4, **FAST)
    assert [c.depth for c in spec.candidates()] == [7, 8]
    table = LatencyTable(create_engine(sqlite_url))
    fp_id = table.fingerprint_id(_fingerprint_at(default_cpu_threads()))
    table.fail(fp_id, "op", "", Shape(1, 8, 128, 4, False), spec.candidates()[0], "RuntimeError: out of memory")
    result = run_profile(spec, gpu="cpu", storage=sqlite_url, progress=False)
    assert result.measured == 1 and result.cached == 1  # the failure is remembered
    assert [f["depth"] for f in result.failed] == [7] and "out of memory" in result.failed[0]["error"]
    assert [r["depth"] for r in result.candidates if r["ok"]] == [8]
    assert 7 not in [r["depth"] for r in result.survivors + result.undecided]


def test_the_fingerprint_keys_by_backend(sqlite_url):
    """A fallback profile is stored apart from the native kernel's and never served to it."""
    table = LatencyTable(create_engine(sqlite_url))
    native = fingerprint(torch.device("cpu"), "fp32")
    assert native.backend == "native" and native.threads == torch.get_num_threads()
    fallback = type(native)(**(native.as_dict() | {"backend": "fallback"}))
    assert fallback.is_fallback and not native.is_fallback
    assert table.fingerprint_id(native) != table.fingerprint_id(fallback)
    assert table.fingerprint_id(native) == table.fingerprint_id(native)
    assert fingerprint(torch.device("cpu"), "bf16").backend == "torch"


def test_adaptive_profile_measures_a_part_and_predicts_the_rest(sqlite_url):
    spec = ProfileSpec(lengths=[128], kernel_sizes=[3, 5, 9, 17], dilation_factors=[2, 3, 4, 8], depths=[2, 3, 4],
                       per_block=[1, 2], channels=8, ema_dim=4, min_receptive_field=None, max_time=0.03,
                       min_pairs=3, min_speedup=0.05)
    n = len(spec.candidates())
    assert n == 96
    result = run_profile(spec, gpu="cpu", storage=sqlite_url, progress=False)
    assert 16 <= result.measured < n and result.predicted == n - result.measured
    predicted = [r for r in result.candidates if r["source"] == "predicted"]
    assert len(predicted) == result.predicted and all(r["by_length"][0]["n_pairs"] == 0 for r in predicted)
    for r in predicted:
        low, high = r["speedup_fwdbwd_ci"]
        assert low < r["speedup_fwdbwd"] < high
    # Nothing predicted is ever written where a measurement belongs.
    assert sum(r["tcn"] for r in LatencyTable(create_engine(sqlite_url)).summary()) == result.measured
    # --predict afterwards measures nothing and serves the same split.
    again = run_profile(spec, gpu="cpu", storage=sqlite_url, progress=False, predict=True)
    assert again.pairs == 0 and again.predicted == result.predicted


def test_predict_with_nothing_stored_is_refused_and_creates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(UserError, match="nothing to predict from"):
        run_profile(SPEC, gpu="cpu", storage=url, progress=False, predict=True)
    with create_engine(url).connect() as conn:
        assert not sa.inspect(conn).has_table("tcnsearch_latency")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


@pytest.mark.parametrize("kwargs,message", [
    (dict(gpu="x900"), "unknown GPU"),
    (dict(gpu="v100"), "no V100 on this machine"),
    (dict(storage="postgresql+psycopg://u:pw@127.0.0.1:1/x"), "cannot reach the database"),
])
def test_bad_input_changes_nothing(sqlite_url, kwargs, message):
    if torch.cuda.is_available() and kwargs.get("gpu") == "v100":
        pytest.skip("this machine may have a V100")
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    run_profile(SPEC, gpu="cpu", storage=sqlite_url, progress=False)
    before = _digest(db)
    with pytest.raises(UserError, match=message) as err:
        run_profile(SPEC, **({"gpu": "cpu", "storage": sqlite_url} | kwargs), progress=False)
    assert "pw" not in str(err.value)
    assert _digest(db) == before


def test_profile_on_a_ray_node_that_advertises_the_gpu(ray_head, sqlite_url):
    spec = ProfileSpec(lengths=[256], kernel_sizes=[3], dilation_factors=[4], depths=[3, 4], per_block=[1],
                       channels=8, ema_dim=4, min_receptive_field=None, **FAST)
    result = run_profile(spec, gpu="v100", ray_address=ray_head, storage=sqlite_url, progress=False)
    assert result.measured == 2 and result.target == "v100" and result.pairs >= 6
    assert all(r["ok"] for r in result.candidates) and len(result.candidates) == 2
    # The node measured on what it has (a CPU with the actor's one thread here) and the record says so.
    assert result.device.device_name.startswith("cpu: ") and "(1 threads)" in result.device.device_name
    assert result.device.threads == 1
    stored = LatencyTable(create_engine(sqlite_url)).summary()
    assert [(r["device_name"], r["tcn"]) for r in stored] == [(result.device.device_name, 2)]
    again = run_profile(spec, gpu="v100", ray_address=ray_head, storage=sqlite_url, progress=False)
    assert again.measured == 0 and again.survivors == result.survivors


def test_ray_cluster_without_that_gpu(ray_head, sqlite_url):
    with pytest.raises(UserError, match="advertises accelerator_type:A100"):
        run_profile(SPEC, gpu="a100", ray_address=ray_head, storage=sqlite_url, progress=False)


def test_unreachable_ray_cluster(sqlite_url):
    with pytest.raises(UserError, match="cannot reach the Ray cluster"):
        run_profile(SPEC, gpu="v100", ray_address="127.0.0.1:1", storage=sqlite_url, progress=False)


def test_threads_are_set_for_the_profile_and_restored(sqlite_url):
    before = torch.get_num_threads()
    spec = SPEC.model_copy(update={"lengths": [256], "kernel_sizes": [9], "depths": [4], "dilation_factors": [8],
                                   "threads": 1})
    result = run_profile(spec, gpu="cpu", storage=sqlite_url, progress=False)
    assert result.device.threads == 1 and "(1 threads)" in result.device.device_name
    assert torch.get_num_threads() == before
    # Unset, a CPU profile leaves one core free; the thread count is part of the fingerprint, so a
    # profile at another count is measured anew rather than served from the 1-thread one.
    again = run_profile(spec.model_copy(update={"threads": None}), gpu="cpu", storage=sqlite_url, progress=False)
    assert again.device.threads == default_cpu_threads() == max(1, min(before, len(os.sched_getaffinity(0)) - 1))
    assert again.measured == (0 if again.device.threads == 1 else 1)
    assert torch.get_num_threads() == before


def test_an_interrupted_profile_keeps_every_finished_pair(sqlite_url):
    class Interrupted(LocalMeasurer):
        """The real measurer, with Ctrl-C arriving during the fourth round."""

        rounds = 0

        def round(self, *args, **kwargs):
            self.rounds += 1
            if self.rounds == 4:
                raise KeyboardInterrupt
            return super().round(*args, **kwargs)

    spec = SPEC.model_copy(update={"lengths": [256], "min_pairs": 50, "max_time": 60.0})
    table = LatencyTable(create_engine(sqlite_url))
    measurer = Interrupted(torch.device("cpu"), "fp32")
    prof = Session(spec, table, table.fingerprint_id(measurer.fingerprint()), measurer, progress=False)
    with pytest.raises(KeyboardInterrupt):
        prof.measure(spec.candidates())
    assert prof.pairs == 3 * N_CANDIDATES == _n_pairs(sqlite_url)  # three whole rounds, all written
    # A rerun continues from them.
    more = spec.model_copy(update={"min_pairs": 5, "max_time": 0.001})
    rerun = run_profile(more, gpu="cpu", storage=sqlite_url, progress=False)
    assert rerun.cached == 0 and all(r["n_pairs"] >= 5 for r in rerun.candidates)
    assert _n_pairs(sqlite_url) == 3 * N_CANDIDATES + rerun.pairs


def test_each_pass_gives_every_pooled_candidate_one_pair_in_a_shuffled_order():
    """A candidate's pairs are spread over the pool's whole measuring time, never taken in one burst."""
    class Recording(LocalMeasurer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.groups = []

        def round(self, spec, shape, candidates, fresh=False):
            self.groups.append(list(candidates))
            return super().round(spec, shape, candidates, fresh)

    spec = ProfileSpec(lengths=[128], kernel_sizes=[3, 5, 7], dilation_factors=[2, 4, 8], depths=[2, 3],
                       per_block=[1], channels=8, ema_dim=4, min_receptive_field=None, min_pairs=3,
                       max_time=0.001, threads=1)  # 18 candidates, exactly 3 pairs each (the cap is at once)
    cands = spec.candidates()
    assert len(cands) > measure.POOL
    engine = create_engine("sqlite://")
    table = LatencyTable(engine)
    measurer = Recording(torch.device("cpu"), "fp32", block_s=0.001, threads=1)
    prof = Session(spec, table, table.fingerprint_id(measurer.fingerprint()), measurer, progress=False)
    try:
        prof.measure(cands)
    finally:
        measurer.close()
    seen = [c for g in measurer.groups for c in g]
    assert all(len(g) <= rounds.GROUP for g in measurer.groups) and prof.pairs == len(seen) == 3 * len(cands)
    first_pass = seen[:measure.POOL]
    assert sorted(first_pass) == sorted(cands[:measure.POOL])  # the whole pool before anyone's second pair
    assert first_pass != cands[:measure.POOL]  # in a shuffled order, not the grid's
    for c in cands:  # no candidate takes two pairs in a row
        at = [i for i, s in enumerate(seen) if s == c]
        assert len(at) == 3 and min(b - a for a, b in zip(at, at[1:], strict=False)) > 1


OFF_GRID = ["--lengths", "256,512", "--kernel-sizes", "5,21", "--dilation-factors", "4,8", "--depths", "3,4",
            "--per-block", "1", "--channels", "16", "--ema-dim", "8", "--gpu", "cpu", "--predict"]


def test_predict_a_grid_none_of_whose_structures_is_stored(sqlite_url, tmp_path, capsys):
    """Issue 23: --predict on new kernel sizes crashed in the survivors table (the baseline's time was None)."""
    import json

    from tcnsearch.cli import main
    from tcnsearch.profile import profile_figures, profile_note, source_text
    from tcnsearch.report import write_profile_report

    run_profile(SPEC, gpu="cpu", storage=sqlite_url, progress=False)  # K 3, 9 stored
    spec = SPEC.model_copy(update={"kernel_sizes": [5, 21]})  # 5 new but in range, 21 beyond it
    result = run_profile(spec, gpu="cpu", storage=sqlite_url, progress=False, predict=True)
    assert result.predicted == len(result.candidates) == len(spec.candidates()) and result.pairs == 0
    for row in result.candidates:
        assert row["source"] == "predicted" and row["ok"]
        assert row["extrapolated"] == (row["kernel_size"] == 21) and row["extrapolated_axes"] == (
            ["K"] if row["kernel_size"] == 21 else [])
        assert row["tcn_fwdbwd_ms"] > 0 and row["ema_fwdbwd_ms"] > 0  # the baseline as stored at that shape
    assert all(e["status"] == "ok" and e["source"] == "other structures" for e in result.ema)
    assert "extrapolated" in " ".join(result.notes())
    beyond = next(r for r in result.candidates if r["extrapolated"])
    assert source_text(beyond) == "predicted, extrapolated (K)"
    heat, _, table = profile_figures(result)
    shown = result.survivors + result.undecided
    assert list(table.data[0].cells.values[6]) == [source_text(r) for r in shown]
    assert any("(extrapolated)" in t for h in heat.data for row in h.text for t in row)
    note = profile_note(result)
    assert all(f"| {source_text(r)} |" in note for r in result.kept())
    assert write_profile_report(result, tmp_path / "lib.html").exists()
    # The command, JSON and table alike.
    report = tmp_path / "cli.html"
    assert main(["profile", *OFF_GRID, "--storage", sqlite_url, "--out", str(report), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["predicted"] == doc["n_candidates"] == len(spec.candidates()) and report.exists()
    assert doc["n_extrapolated"] == sum(r["kernel_size"] == 21 for r in doc["candidates"]) > 0
    assert all(r["extrapolated"] == ("K" in r["extrapolated_axes"]) for r in doc["candidates"])
    assert "extrapolated" in report.read_text()
    assert main(["profile", *OFF_GRID, "--storage", sqlite_url, "--out", str(report)]) == 0
    out = capsys.readouterr().out
    assert "extrapolated beyond the measured range" in " ".join(out.split())


def test_unmeasured_cover_holds_every_new_axis_value():
    from tcnsearch.profile.runner import unmeasured_cover

    spec = ProfileSpec(lengths=[128], kernel_sizes=[3, 5, 7], dilation_factors=[2, 4], depths=[2, 3],
                       per_block=[1, 2], min_receptive_field=None)
    stored = [{"kernel_size": 3, "dilation_factor": 2, "depth": 2, "per_block": 1}]
    chosen = unmeasured_cover(spec.candidates(), stored)
    for axis, values in (("kernel_size", {5, 7}), ("dilation_factor", {4}), ("depth", {3}), ("per_block", {2})):
        assert values <= {getattr(c, axis) for c in chosen}
    assert len(chosen) == 2  # K5 and K7 each need one; the first also takes f=4, D=3, B=2
    assert unmeasured_cover(spec.candidates(), [c.as_dict() for c in spec.candidates()]) == []


def test_adaptive_profile_measures_each_axis_value_it_never_measured(sqlite_url):
    """Against a database that holds another grid, no new kernel size is decided by extrapolation alone."""
    from tcnsearch.profile import spread_sample

    small = dict(lengths=[128], channels=8, ema_dim=4, min_receptive_field=None, max_time=0.03, min_pairs=3,
                 min_speedup=0.05)
    run_profile(ProfileSpec(kernel_sizes=[3, 5], dilation_factors=[2, 4], depths=[2], per_block=[1], **small),
                gpu="cpu", storage=sqlite_url, progress=False)
    spec = ProfileSpec(kernel_sizes=list(range(3, 34, 2)), dilation_factors=[2, 4], depths=[2], per_block=[1],
                       **small)
    cands = spec.candidates()
    assert len(cands) == 32 and spec.strategy == "adaptive"
    sampled = {c.kernel_size for c in spread_sample(cands, 16)}
    assert set(spec.kernel_sizes) - sampled  # the spread-out sample alone would leave some K unmeasured
    result = run_profile(spec, gpu="cpu", storage=sqlite_url, progress=False)
    assert result.predicted > 0
    measured = {r["kernel_size"] for r in result.candidates if r["source"] == "measured"}
    assert measured == set(spec.kernel_sizes)
    assert not any(r["extrapolated"] for r in result.candidates)
