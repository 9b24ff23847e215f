import math

import numpy as np
from scipy.stats import spearmanr

from tcnsearch.profile import LatencyModel, ProfileSpec, Shape
from tcnsearch.structure import Structure


def _truth(c: Structure, length: int) -> float:
    """A synthetic device: the EMA costs L log L, the TCN a constant plus its taps."""
    ema = length * math.log2(length)
    tcn = 200 + 0.9 * c.depth * c.per_block * c.kernel_size * length / 16
    return ema / tcn


def _row(c: Structure, length: int, noise: float) -> dict:
    s = _truth(c, length) * noise
    return {"kernel_size": c.kernel_size, "dilation_factor": c.dilation_factor, "depth": c.depth,
            "per_block": c.per_block, "batch": 1, "channels": 16, "length": length, "ema_dim": 8,
            "bidirectional": False, **{f"speedup_{m}{k}": s * f for m in ("fwd", "fwdbwd")
                                       for k, f in (("", 1), ("_lo", 0.97), ("_hi", 1.03))},
            "base_fwd_ms": 10.0, "base_fwdbwd_ms": 20.0}


def test_predicts_held_out_structures_within_their_intervals():
    spec = ProfileSpec(kernel_sizes=[3, 5, 7, 9, 13, 17], dilation_factors=[2, 4, 8], depths=[2, 3, 4, 5],
                       per_block=[1, 2], min_receptive_field=None)
    cands = spec.candidates()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(cands))
    train = [cands[i] for i in order[:50]]
    test = [cands[i] for i in order[50:]]
    model = LatencyModel.fit([_row(c, 1024, rng.lognormal(0, 0.02)) for c in train])
    shape = Shape(1, 16, 1024, 8, False)
    preds = model.predict([(shape, c) for c in test])
    errors = [abs(p["fwdbwd"][0] / _truth(c, 1024) - 1) for p, c in zip(preds, test, strict=True)]
    assert np.mean(np.array(errors) < 0.10) >= 0.9
    assert spearmanr([p["fwd"][0] for p in preds], [_truth(c, 1024) for c in test]).statistic > 0.95
    covered = [p["fwd"][1] <= _truth(c, 1024) <= p["fwd"][2] for p, c in zip(preds, test, strict=True)]
    assert np.mean(covered) >= 0.8
    assert model.base_time(shape, "fwd") == 10.0 and model.base_time(Shape(1, 16, 64, 8, False), "fwd") is None
