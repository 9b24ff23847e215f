import math

import numpy as np
import pytest
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


def test_value_folds_leave_out_each_axis_value():
    from tcnsearch.profile.latency_model import value_folds

    values = np.array([[3, 2], [3, 4], [5, 2], [5, 4], [9, 2]])  # (K, f) per row
    got = {(tuple(tr), tuple(te)) for tr, te in value_folds(values, 1)}
    # K=3, K=5, K=9 and f=4 each held out; f=2 would leave 2 rows to train on (< 3): no fold
    assert got == {((2, 3, 4), (0, 1)), ((0, 1, 4), (2, 3)), ((0, 1, 2, 3), (4,)), ((0, 2, 4), (1, 3))}
    pairs = {(tuple(tr), tuple(te)) for tr, te in value_folds(values, 2, min_train=1)}
    # new on both axes: test the rows with both values, train on the rows with neither
    assert pairs == {((3,), (0,)), ((2, 4), (1,)), ((1,), (2,)), ((0, 4), (3,)), ((1, 3), (4,))}
    assert value_folds(np.array([[3, 2], [3, 2], [3, 2], [3, 2]]), 1) == []  # no axis varies


def test_calibration_against_an_independent_gaussian_process():
    """The factor is the 95th percentile of |held-out residual| / predictive sd over the folds, over 1.96,
    with the GP's posterior computed here in plain numpy."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tcnsearch.profile.latency_model import calibrate, random_folds

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 6, (40, 2))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] + rng.normal(0, 0.15, 40)
    alpha = np.full(40, 1e-3)
    length, white = 1.5, 1e-3  # an overconfident noise level: the factor must come out above 1
    pipe = make_pipeline(StandardScaler(), GaussianProcessRegressor(RBF(length) + WhiteKernel(white), alpha=alpha,
                                                                    normalize_y=True, optimizer=None)).fit(x, y)
    folds = random_folds(40)
    assert sorted(np.concatenate([te for _, te in folds])) == list(range(40))  # every row held out once
    xs = (x - x.mean(0)) / x.std(0)

    def rbf(a, b):
        return np.exp(-0.5 * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / length ** 2)

    z = []
    for tr, te in folds:
        mean, std = y[tr].mean(), y[tr].std()
        k = rbf(xs[tr], xs[tr]) + (white + alpha[tr]) * np.eye(len(tr))
        ks = rbf(xs[te], xs[tr])
        mu = mean + std * ks @ np.linalg.solve(k, (y[tr] - mean) / std)
        var = std ** 2 * (1 + white - np.einsum("ij,ji->i", ks, np.linalg.solve(k, ks.T)))
        z.extend(np.abs(y[te] - mu) / np.sqrt(var))
    expected = np.quantile(z, 0.95) / 1.96
    assert 1 < expected < 10
    assert calibrate(pipe, x, y, alpha, folds) == pytest.approx(expected, rel=1e-6)
    assert calibrate(pipe, x, y, alpha, []) == 1.0


def test_unseen_and_extrapolated_axis_values():
    spec = ProfileSpec(kernel_sizes=[3, 5, 9, 13, 17], dilation_factors=[2, 4, 8], depths=[2, 3, 4, 5],
                       per_block=[1, 2], min_receptive_field=None)
    rng = np.random.default_rng(0)
    model = LatencyModel.fit([_row(c, 1024, rng.lognormal(0, 0.02)) for c in spec.candidates()])
    shape = Shape(1, 16, 1024, 8, False)
    assert model.seen["K"] == (3, 5, 9, 13, 17) and model.seen["L"] == (1024,)
    assert model.unseen(shape, Structure(7, 4, 3, 1)) == ["K"]
    assert model.extrapolated(shape, Structure(7, 4, 3, 1)) == []
    assert model.extrapolated(shape, Structure(25, 16, 3, 1)) == ["K", "f"]
    assert model.extrapolated(Shape(1, 16, 4096, 8, False), Structure(5, 4, 3, 1)) == ["L"]
    for m in ("fwd", "fwdbwd"):  # a structure with new values is calibrated on folds that held values out
        assert model.scale(m, 0) == model.sd_scale[m] <= model.scale(m, 1) <= model.scale(m, 2)
    # Interior kernel sizes never measured: within their intervals (synthetic truth, 2% noise).
    new = [Structure(k, f, d, b) for k in (7, 11) for f in (2, 4, 8) for d in (2, 3, 4, 5) for b in (1, 2)]
    preds = model.predict([(shape, c) for c in new])
    covered = [p["fwdbwd"][1] <= _truth(c, 1024) <= p["fwdbwd"][2] for p, c in zip(preds, new, strict=True)]
    assert np.mean(covered) >= 0.9
