"""A latency model per device: predicts the speedup of structures that were not measured.

Fitted to the stored measurements of one fingerprint, level and model context, it maps a
structure and a shape to the log of each speedup (forward, forward+backward) with a Gaussian
process (scikit-learn): an anisotropic RBF over the features below, plus a linear trend, plus a
noise term, with each measurement's own interval as its known noise. Logs, because latencies
scale multiplicatively with the work; a Gaussian process, because its predictive standard
deviation is the uncertainty the adaptive profiler needs to decide what to measure next (the
nn-Meter and HELP line of work predicts latency from a few measurements the same way).

    model = LatencyModel.fit(table.all_rows(fp_id, "op", ""))
    model.predict([(shape, candidate), ...])   # {"fwd": (median, low, high), "fwdbwd": ...} per entry
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from tcnsearch.profile.levels import METRICS, Shape
from tcnsearch.structure import Structure

Z95 = 1.96


def features(cand: Structure, shape: Shape) -> list[float]:
    """Structure, shape and operation counts, on log scales where they act multiplicatively."""
    k, f, d, b = cand.kernel_size, cand.dilation_factor, cand.depth, cand.per_block
    taps = d * b * k  # multiply-adds per element and channel: the TCN's work
    return [math.log2(k), math.log2(f), float(d), math.log2(b), math.log2(cand.receptive_field),
            math.log2(shape.length), math.log2(shape.channels), math.log2(shape.batch),
            math.log2(taps * shape.length * shape.channels * shape.batch), math.log2(d * b)]


@dataclass
class LatencyModel:
    """One Gaussian process per metric on log speedup, plus the baseline's time per shape."""

    gps: dict
    base_ms: dict[tuple, dict[str, float]]
    n_train: int
    sd_scale: dict[str, float] = field(default_factory=dict)  # per metric, from cross-validation

    @staticmethod
    def _shape_key(shape: Shape) -> tuple:
        return (shape.batch, shape.channels, shape.length, shape.ema_dim, shape.bidirectional)

    @classmethod
    def fit(cls, rows: list[dict]) -> LatencyModel:
        """Fit to stored measurement rows (LatencyTable.all_rows). Needs at least 3 of them."""
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        rows = [r for r in rows if r.get("speedup_fwd") and r.get("speedup_fwdbwd")]
        if len(rows) < 3:
            raise ValueError(f"a latency model needs at least 3 measurements, got {len(rows)}")
        x = np.array([features(_cand(r), _shape(r)) for r in rows])
        gps, scale = {}, {}
        for m in METRICS:
            y = np.log([r[f"speedup_{m}"] for r in rows])
            # A measurement's own 95% interval is its known noise (variance on the log scale).
            width = np.log(np.array([r[f"speedup_{m}_hi"] for r in rows]) / np.array([r[f"speedup_{m}_lo"]
                                                                                       for r in rows]))
            alpha = np.maximum((width / (2 * Z95)) ** 2, 1e-6) / max(np.var(y), 1e-6)  # normalize_y scales y
            kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(x.shape[1]), (1e-2, 1e3))
                      + ConstantKernel(0.1, (1e-4, 1e2)) * DotProduct(1.0, (1e-3, 1e2))
                      + WhiteKernel(1e-3, (1e-6, 1e0)))
            gp = GaussianProcessRegressor(kernel=kernel, alpha=alpha, normalize_y=True, n_restarts_optimizer=1,
                                          random_state=0)
            pipe = make_pipeline(StandardScaler(), gp)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bounds reached by the optimiser are not an error here
                pipe.fit(x, y)
            gps[m] = pipe
            scale[m] = _calibration(pipe, x, y, alpha)
        base: dict[tuple, dict[str, list[float]]] = {}
        for r in rows:
            entry = base.setdefault(cls._shape_key(_shape(r)), {m: [] for m in METRICS})
            for m in METRICS:
                if r.get(f"base_{m}_ms"):
                    entry[m].append(r[f"base_{m}_ms"])
        base_ms = {k: {m: float(np.median(v[m])) for m in METRICS if v[m]} for k, v in base.items()}
        return cls(gps, base_ms, len(rows), scale)

    def predict(self, items: list[tuple[Shape, Structure]]) -> list[dict[str, tuple[float, float, float]]]:
        """Per (shape, candidate): each metric's predicted speedup as (median, low, high), a 95% interval."""
        if not items:
            return []
        x = np.array([features(c, s) for s, c in items])
        out = [{} for _ in items]
        for m, pipe in self.gps.items():
            scaler, gp = pipe[0], pipe[-1]
            mu, sd = gp.predict(scaler.transform(x), return_std=True)
            sd = sd * self.sd_scale.get(m, 1.0)
            for i in range(len(items)):
                out[i][m] = (math.exp(mu[i]), math.exp(mu[i] - Z95 * sd[i]), math.exp(mu[i] + Z95 * sd[i]))
        return out

    def base_time(self, shape: Shape, metric: str) -> float | None:
        """The baseline's measured time at `shape` (ms), if any measurement was taken at that shape."""
        return self.base_ms.get(self._shape_key(shape), {}).get(metric)


def _calibration(pipe, x: np.ndarray, y: np.ndarray, alpha: np.ndarray, folds: int = 5) -> float:
    """How much to widen the predictive standard deviation so that 95% intervals hold 95% of held-out data.

    A Gaussian process fitted by maximum likelihood to a hundred noisy points is overconfident
    between them (its intervals held 68-81% of held-out measurements here). Five-fold cross-validation
    with the fitted kernel (no refitting of its hyperparameters, so it costs five solves) gives the
    standardised held-out residuals; the factor makes their 95th percentile 1.96.
    """
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.model_selection import KFold

    if len(y) < 2 * folds:
        return 1.0
    scaler, gp = pipe[0], pipe[-1]
    xs = scaler.transform(x)
    z = []
    for train, test in KFold(folds, shuffle=True, random_state=0).split(xs):
        fold = GaussianProcessRegressor(kernel=gp.kernel_, alpha=alpha[train], normalize_y=True, optimizer=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fold.fit(xs[train], y[train])
            mu, sd = fold.predict(xs[test], return_std=True)
        z.extend(np.abs(y[test] - mu) / np.maximum(sd, 1e-9))
    return float(np.clip(np.quantile(z, 0.95) / Z95, 1.0, 10.0))


def _cand(r: dict) -> Structure:
    return Structure(r["kernel_size"], r["dilation_factor"], r["depth"], r["per_block"])


def _shape(r: dict) -> Shape:
    return Shape(r["batch"], r["channels"], r["length"], r["ema_dim"], r["bidirectional"])
