import hashlib
from pathlib import Path

import pytest
import torch

from tcnsearch.errors import UserError
from tcnsearch.profile import Job, LatencyTable, ProfileSpec, Shape, assemble, fingerprint, jobs_for, run_profile
from tcnsearch.profile.table import Measurement
from tcnsearch.storage import create_engine

SPEC = ProfileSpec(lengths=[256, 512], kernel_sizes=[3, 9], dilation_factors=[4, 8], depths=[3, 4], per_block=[1],
                   channels=16, ema_dim=8)
N_CANDIDATES = 4  # (3,8,4), (9,8,3), (9,8,4), (9,4,4) reach R >= 512


def test_profile_stores_everything_and_reruns_from_the_table(sqlite_url):
    assert len(SPEC.candidates()) == N_CANDIDATES
    first = run_profile(SPEC, gpu="cpu", storage=sqlite_url, min_run_time=0.01, progress=False)
    assert len(first.candidates) == N_CANDIDATES
    n_jobs = len(SPEC.lengths) * (1 + len(SPEC.candidates()))
    assert (first.measured, first.cached) == (n_jobs, 0)
    assert first.device == fingerprint(torch.device("cpu"), "float32")
    assert all(r["ok"] for r in first.candidates)
    again = run_profile(SPEC, gpu="cpu", storage=sqlite_url, min_run_time=0.01, progress=False)
    assert (again.measured, again.cached) == (0, n_jobs)
    assert again.survivors == first.survivors  # read back exactly what was stored
    forced = run_profile(SPEC, gpu="cpu", storage=sqlite_url, force=True, min_run_time=0.01, progress=False)
    assert forced.measured == n_jobs


def test_more_lengths_measure_only_the_missing(sqlite_url):
    run_profile(SPEC, gpu="cpu", storage=sqlite_url, min_run_time=0.01, progress=False)
    wider = SPEC.model_copy(update={"lengths": [256, 512, 1024]})
    result = run_profile(wider, gpu="cpu", storage=sqlite_url, min_run_time=0.01, progress=False)
    assert result.measured == 1 + len(wider.candidates())  # the new length only
    assert result.cached == len(jobs_for(wider)) - result.measured


def test_postgresql_storage(pg_url):
    result = run_profile(SPEC, gpu="cpu", storage=pg_url, min_run_time=0.01, progress=False)
    assert result.measured > 0 and result.storage == pg_url
    again = run_profile(SPEC, gpu="cpu", storage=pg_url, min_run_time=0.01, progress=False)
    assert again.measured == 0
    summary = LatencyTable(create_engine(pg_url)).summary()
    assert {(r["length"], r["tcn"], r["ema"]) for r in summary} >= {(256, N_CANDIDATES, 1), (512, N_CANDIDATES, 1)}


def _fake(fwd, fwdbwd, status="ok"):
    return Measurement(status=status, error=None if status == "ok" else "RuntimeError: out of memory",
                       fwd_ms=fwd, fwdbwd_ms=fwdbwd, fwd_spread=0.01, fwdbwd_spread=0.01,
                       peak_fwd_bytes=1, peak_fwdbwd_bytes=2)


def test_survivor_rule_uses_the_mode_and_every_length():
    spec = ProfileSpec(lengths=[100, 200], kernel_sizes=[3], dilation_factors=[2], depths=[7, 8], per_block=[1],
                       min_speedup=2.0)
    a, b = spec.candidates()  # depth 7 and 8
    stored = {}
    for length in (100, 200):
        s = Shape(1, 64, length, 16, False)
        stored[Job(s)] = _fake(10.0, 30.0)
        stored[Job(s, a)] = _fake(2.0, 20.0)  # 5x forward, 1.5x forward+backward
        stored[Job(s, b)] = _fake(4.0, 10.0 if length == 100 else 20.0)  # 2.5x fwd; 3x then 1.5x train
    _, rows, survivors, _ = assemble(spec, stored)
    assert survivors == []  # train mode: neither is 2x faster at every length
    assert rows[1]["speedup_fwdbwd"] == pytest.approx(1.5)  # the least over the lengths
    _, _, survivors, _ = assemble(spec.model_copy(update={"mode": "infer"}), stored)
    assert [r["depth"] for r in survivors] == [7, 8]  # sorted by speedup, fastest first
    assert survivors[0]["tcn_fwd_ms"] == 2.0 and survivors[0]["ema_fwd_ms"] == 10.0


def test_failed_candidate_is_reported_and_not_a_survivor(sqlite_url):
    spec = ProfileSpec(lengths=[128], kernel_sizes=[3], dilation_factors=[2], depths=[7, 8], per_block=[1],
                       channels=8, ema_dim=4)
    assert [c.depth for c in spec.candidates()] == [7, 8]
    table = LatencyTable(create_engine(sqlite_url))
    device_id = table.device_id(fingerprint(torch.device("cpu"), "float32"))
    broken = Job(Shape(1, 8, 128, 4, False), spec.candidates()[0])
    table.put(device_id, broken, {"status": "failed", "error": "RuntimeError: out of memory"})
    result = run_profile(spec, gpu="cpu", storage=sqlite_url, min_run_time=0.01, progress=False)
    assert result.measured == 2  # the EMA and the other candidate; the failure is remembered
    assert [f["depth"] for f in result.failed] == [7] and "out of memory" in result.failed[0]["error"]
    assert [r["depth"] for r in result.candidates if r["ok"]] == [8]
    assert 7 not in [r["depth"] for r in result.survivors]


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
    run_profile(SPEC, gpu="cpu", storage=sqlite_url, min_run_time=0.01, progress=False)
    before = _digest(db)
    with pytest.raises(UserError, match=message) as err:
        run_profile(SPEC, **({"gpu": "cpu", "storage": sqlite_url} | kwargs), min_run_time=0.01, progress=False)
    assert "pw" not in str(err.value)
    assert _digest(db) == before


def test_profile_on_a_ray_node_that_advertises_the_gpu(ray_head, sqlite_url):
    spec = ProfileSpec(lengths=[256], kernel_sizes=[3], dilation_factors=[4], depths=[3, 4], per_block=[1],
                       channels=8, ema_dim=4, min_receptive_field=None)
    result = run_profile(spec, gpu="v100", ray_address=ray_head, storage=sqlite_url, min_run_time=0.01,
                         progress=False)
    assert result.measured == 3 and result.target == "v100"
    assert all(r["ok"] for r in result.candidates) and len(result.candidates) == 2
    # The node measured on what it has (a CPU with the actor's one thread here) and the record says so.
    assert result.device.device_name.startswith("cpu: ") and "(1 threads)" in result.device.device_name
    stored = LatencyTable(create_engine(sqlite_url)).summary()
    assert [(r["name"], r["tcn"], r["ema"]) for r in stored] == [(result.device.device_name, 2, 1)]
    again = run_profile(spec, gpu="v100", ray_address=ray_head, storage=sqlite_url, progress=False)
    assert again.measured == 0 and again.survivors == result.survivors


def test_ray_cluster_without_that_gpu(ray_head, sqlite_url):
    with pytest.raises(UserError, match="advertises accelerator_type:A100"):
        run_profile(SPEC, gpu="a100", ray_address=ray_head, storage=sqlite_url, progress=False)


def test_unreachable_ray_cluster(sqlite_url):
    with pytest.raises(UserError, match="cannot reach the Ray cluster"):
        run_profile(SPEC, gpu="v100", ray_address="127.0.0.1:1", storage=sqlite_url, progress=False)
