import numpy as np
import torch

from tcnsearch.profile import PairedSession, ProfileSpec, Shape, median_interval
from tcnsearch.structure import Structure


def test_median_interval_matches_a_naive_bootstrap_and_covers_the_median():
    rng = np.random.default_rng(1)
    data = list(rng.lognormal(0.0, 0.1, size=25))
    med, lo, hi = median_interval(data)
    assert med == np.median(data) and lo <= med <= hi
    # An independent percentile bootstrap, a plain loop: the same interval up to resampling noise.
    boot = sorted(np.median(rng.choice(data, size=len(data))) for _ in range(4000))
    assert abs(lo - boot[int(0.025 * 4000)]) < 0.02 and abs(hi - boot[int(0.975 * 4000)]) < 0.02
    # Coverage: the true median (1.0) of lognormal(0, 0.1) lies in most 95% intervals.
    hits = sum(lo <= 1.0 <= hi for lo, hi in
               (median_interval(list(rng.lognormal(0.0, 0.1, size=15)), seed=i)[1:] for i in range(100)))
    assert 85 <= hits <= 100
    assert median_interval([2.0]) == (2.0, 2.0, 2.0)
    assert median_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_a_round_pairs_every_candidate_with_the_bracketing_baseline():
    spec = ProfileSpec(channels=8, ema_dim=4)
    session = PairedSession(spec, Shape(1, 8, 512, 4, False), torch.device("cpu"), "fp32", block_s=0.002)
    fast, slow = Structure(3, 2, 2, 1), Structure(17, 1, 8, 4)  # 4 taps per element vs 544
    first = session.round([fast, slow])
    assert set(first.pairs) == {fast, slow} and not first.failed
    second = session.round([fast, slow])
    for result in (first, second):
        for pair in result.pairs.values():
            assert pair.tcn_fwd_ms > 0 and pair.base_fwd_ms > 0 and pair.wall_s > 0
            assert pair.ratios["fwd"] == pair.base_fwd_ms / pair.tcn_fwd_ms
        # Both candidates of a round share its baseline blocks.
        assert result.pairs[fast].base_fwd_ms == result.pairs[slow].base_fwd_ms
    assert first.peaks[fast] is not None and fast not in second.peaks  # built and measured once
    assert all(second.pairs[fast].ratios[m] > second.pairs[slow].ratios[m] for m in ("fwd", "fwdbwd"))


def test_a_failing_candidate_is_reported_not_raised_and_out_of_memory_apart():
    spec = ProfileSpec(channels=4, ema_dim=2, level="model", model={"d_model": 4, "z_dim": 2, "h_dim": 4,
                                                                     "ffn_dim": 4, "chunk_size": 8})
    session = PairedSession(spec, Shape(1, 4, 16, 2, False), torch.device("cpu"), "fp32", block_s=0.001)
    ok, bad = Structure(3, 2, 2, 1), Structure(1, 2, 2, 1)  # a 1-tap kernel is no TCN: the model refuses it
    huge = Structure(3, 2, 2, 10**9)  # a billion convolutions per block: no machine has the memory
    result = session.round([ok, bad, huge])
    assert ok in result.pairs and bad in result.failed and "kernel_size" in result.failed[bad]
    assert huge in result.oom and huge not in result.failed and huge not in result.pairs
    assert "out of memory at batch 1 x 4 channels x length 16 on cpu" in result.oom[huge]
