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
    model.extrapolated(shape, candidate)       # the axes on which it lies beyond what was measured: ["K"]

Its 95% intervals are calibrated twice (`calibrate`): for structures whose every axis value was
measured, by random-fold cross-validation; for those with a value never measured (a new kernel
size, a new length), by folds that each leave out every measurement at one value of one axis, or at
one value of each of two axes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from tcnsearch.profile.levels import METRICS, Shape
from tcnsearch.structure import Structure

Z95 = 1.96
# The grid's axes and the shape's, as the model's features see them: what "measured range" means.
AXES = {"K": lambda c, s: c.kernel_size, "f": lambda c, s: c.dilation_factor, "D": lambda c, s: c.depth,
        "B": lambda c, s: c.per_block, "L": lambda c, s: s.length, "C": lambda c, s: s.channels,
        "batch": lambda c, s: s.batch}


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
    # per metric and number of never-measured axis values (1, 2 = two or more): from leave-value-out folds
    sd_scale_unseen: dict[str, dict[int, float]] = field(default_factory=dict)
    seen: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per axis, the values measured

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
        x = np.array([features(row_structure(r), row_shape(r)) for r in rows])
        values = np.array([[get(row_structure(r), row_shape(r)) for get in AXES.values()] for r in rows])
        folds = {0: random_folds(len(rows)), 1: value_folds(values, 1), 2: value_folds(values, 2)}
        gps, scale, unseen = {}, {}, {}
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
            scale[m] = calibrate(pipe, x, y, alpha, folds[0])
            one = calibrate(pipe, x, y, alpha, folds[1]) if folds[1] else 10.0  # one value seen: a guess
            unseen[m] = {1: max(one, scale[m]), 2: max(calibrate(pipe, x, y, alpha, folds[2]) if folds[2] else one,
                                                      one, scale[m])}
        base: dict[tuple, dict[str, list[float]]] = {}
        for r in rows:
            entry = base.setdefault(cls._shape_key(row_shape(r)), {m: [] for m in METRICS})
            for m in METRICS:
                if r.get(f"base_{m}_ms"):
                    entry[m].append(r[f"base_{m}_ms"])
        base_ms = {k: {m: float(np.median(v[m])) for m in METRICS if v[m]} for k, v in base.items()}
        seen = {a: tuple(sorted({int(v) for v in values[:, i]})) for i, a in enumerate(AXES)}
        return cls(gps, base_ms, len(rows), scale, unseen, seen)

    def predict(self, items: list[tuple[Shape, Structure]]) -> list[dict[str, tuple[float, float, float]]]:
        """Per (shape, candidate): each metric's predicted speedup as (median, low, high), a 95% interval."""
        if not items:
            return []
        x = np.array([features(c, s) for s, c in items])
        out = [{} for _ in items]
        for m, pipe in self.gps.items():
            scaler, gp = pipe[0], pipe[-1]
            mu, sd = gp.predict(scaler.transform(x), return_std=True)
            sd = sd * np.array([self.scale(m, len(self.unseen(s, c))) for s, c in items])
            for i in range(len(items)):
                out[i][m] = (math.exp(mu[i]), math.exp(mu[i] - Z95 * sd[i]), math.exp(mu[i] + Z95 * sd[i]))
        return out

    def scale(self, metric: str, n_unseen: int) -> float:
        """The factor on the predictive standard deviation for a structure with `n_unseen` new axis values."""
        if n_unseen == 0 or not self.sd_scale_unseen:
            return self.sd_scale.get(metric, 1.0)
        return self.sd_scale_unseen[metric][min(n_unseen, 2)]

    def unseen(self, shape: Shape, cand: Structure) -> list[str]:
        """The axes on which (shape, cand) has a value that no measurement behind the model has."""
        return [a for a, get in AXES.items() if self.seen and get(cand, shape) not in self.seen[a]]

    def extrapolated(self, shape: Shape, cand: Structure) -> list[str]:
        """The axes on which (shape, cand) lies outside the measured range (not between two measured values)."""
        return [a for a, get in AXES.items()
                if self.seen and not self.seen[a][0] <= get(cand, shape) <= self.seen[a][-1]]

    def base_time(self, shape: Shape, metric: str) -> float | None:
        """The baseline's measured time at `shape` (ms), if any measurement was taken at that shape."""
        return self.base_ms.get(self._shape_key(shape), {}).get(metric)


def random_folds(n: int, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of k-fold cross-validation in a fixed shuffled order; none under 2k rows."""
    from sklearn.model_selection import KFold

    if n < 2 * k:
        return []
    return list(KFold(k, shuffle=True, random_state=0).split(np.zeros((n, 1))))


def value_folds(values: np.ndarray, depth: int, min_train: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-value-out folds over the axis columns of `values` (rows x axes).

    depth 1: one fold per value of each axis that has two or more; it trains on the rows without that
    value and tests on the rows with it. depth 2: one fold per pair of values on two such axes; it
    trains on the rows that have neither and tests on the rows that have both (new on two axes at once).
    A fold with fewer than `min_train` training rows or no test rows is left out.
    """
    import itertools

    axes = [i for i in range(values.shape[1]) if len(np.unique(values[:, i])) > 1]
    held = [(i, v) for i in axes for v in np.unique(values[:, i])]
    folds = []
    for combo in itertools.combinations(held, depth):
        if len({i for i, _ in combo}) < depth:
            continue  # two values of one axis
        hit = np.array([[values[r, i] == v for i, v in combo] for r in range(len(values))])
        train, test = np.flatnonzero(~hit.any(1)), np.flatnonzero(hit.all(1))
        if len(train) >= min_train and len(test):
            folds.append((train, test))
    return folds


def calibrate(pipe, x: np.ndarray, y: np.ndarray, alpha: np.ndarray, folds: list) -> float:
    """How much to widen the predictive standard deviation so that 95% intervals hold 95% of held-out data.

    A Gaussian process fitted by maximum likelihood to a hundred noisy points is overconfident
    between them (its intervals held 68-81% of held-out measurements here), and more so at axis
    values it never saw. Each fold refits the fitted kernel (its hyperparameters kept: one solve per
    fold) to its training rows; the factor makes the 95th percentile of the standardised held-out
    residuals of all folds 1.96 (at least 1, at most 10). No folds: 1.
    """
    from sklearn.gaussian_process import GaussianProcessRegressor

    if not folds:
        return 1.0
    scaler, gp = pipe[0], pipe[-1]
    xs = scaler.transform(x)
    z = []
    for train, test in folds:
        fold = GaussianProcessRegressor(kernel=gp.kernel_, alpha=alpha[train], normalize_y=True, optimizer=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fold.fit(xs[train], y[train])
            mu, sd = fold.predict(xs[test], return_std=True)
        z.extend(np.abs(y[test] - mu) / np.maximum(sd, 1e-9))
    return float(np.clip(np.quantile(z, 0.95) / Z95, 1.0, 10.0))


def row_structure(r: dict) -> Structure:
    return Structure(r["kernel_size"], r["dilation_factor"], r["depth"], r["per_block"])


def row_shape(r: dict) -> Shape:
    return Shape(r["batch"], r["channels"], r["length"], r["ema_dim"], r["bidirectional"])
