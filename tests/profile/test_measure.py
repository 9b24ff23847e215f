import torch

from tcnsearch.profile import Candidate, Job, Shape, measure


def test_measures_ema_and_tcn():
    shape = Shape(batch=1, channels=32, length=4096, ema_dim=16, bidirectional=False)
    ema = measure(Job(shape), torch.device("cpu"), "float32", min_run_time=0.05)
    tcn = measure(Job(shape, Candidate(5, 4, 3, 1)), torch.device("cpu"), "float32", min_run_time=0.05)
    for rec in (ema, tcn):
        assert rec["status"] == "ok"
        assert rec["fwd_ms"] > 0 and rec["fwdbwd_ms"] > 0
        assert 0 <= rec["fwd_spread"] < 1
    # The EMA's kernel alone is C*N*L floats (8 MiB here): the CPU peak must see it.
    assert ema["peak_fwd_bytes"] >= 32 * 16 * 4096 * 4
    assert ema["peak_fwdbwd_bytes"] >= ema["peak_fwd_bytes"] // 2


def test_bidirectional_and_half_precision_shapes():
    shape = Shape(batch=2, channels=8, length=256, ema_dim=4, bidirectional=True)
    assert measure(Job(shape), torch.device("cpu"), "float32", 0.01)["status"] == "ok"
    assert measure(Job(shape, Candidate(3, 2, 2, 2)), torch.device("cpu"), "bfloat16", 0.01)["status"] == "ok"


def test_failure_is_recorded_not_raised():
    bad = Shape(batch=1, channels=0, length=64, ema_dim=2, bidirectional=False)
    rec = measure(Job(bad, Candidate(3, 2, 2, 1)), torch.device("cpu"), "float32", 0.01)
    assert rec["status"] == "failed"
    assert "channels" in rec["error"]
