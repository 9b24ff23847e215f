"""`tcnsearch profile`: paired speedups of the candidates over the EMA, decisions from their intervals.

    measure   for each length, pooled rounds of paired blocks (rounds.Session, measure.PairedSession)
              until each candidate's speedup interval is narrower than `precision` and on one side
              of `min_speedup`, or its time cap is spent; pairs are stored as they are taken
    decide    survivor: the interval's low end >= min_speedup at every length; rejected: the high
              end below it at some length; otherwise undecided (result.decision, result.assemble)
    adaptive  (the default strategy for grids of more than ADAPTIVE_MIN candidates) measure a
              spread-out sample, fit the latency model, measure only the candidates whose decision
              the model cannot make with confidence, predict the rest
    predict   (`predict=True`) measure nothing: the model fills the grid from what is stored

Measured and predicted rows are told apart everywhere by their `source`; predictions are never
stored in the latency table.
"""

from __future__ import annotations

import math
import os
import time

from tcnsearch import hardware
from tcnsearch.errors import UserError
from tcnsearch.profile.budget import check_memory
from tcnsearch.profile.candidates import ProfileSpec
from tcnsearch.profile.latency_model import LatencyModel, features, row_shape
from tcnsearch.profile.levels import METRICS, Shape
from tcnsearch.profile.measure import LocalMeasurer
from tcnsearch.profile.result import ProfileResult, assemble, combine, decision
from tcnsearch.profile.rounds import Session
from tcnsearch.profile.table import LatencyTable
from tcnsearch.storage import create_engine, masked, resolve_url, sqlite_path
from tcnsearch.structure import Structure

ADAPTIVE_MIN = 24  # smaller grids are measured whole: a model needs more points than that to pay off


def spread_sample(cands: list[Structure], n: int) -> list[Structure]:
    """`n` candidates spread over the grid: greedy farthest-point sampling on standardised structure
    features, deterministic, starting from the one nearest the middle."""
    import numpy as np

    if n >= len(cands):
        return list(cands)
    shape = Shape(1, 1, 1, 1, False)
    x = np.array([features(c, shape)[:5] for c in cands])
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
    chosen = [int(np.argmin((x ** 2).sum(1)))]
    dist = ((x - x[chosen[0]]) ** 2).sum(1)
    while len(chosen) < n:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((x - x[nxt]) ** 2).sum(1))
    return [cands[i] for i in sorted(chosen)]


def _predictions(model: LatencyModel | None, spec: ProfileSpec, shapes: list[Shape], cands: list[Structure]):
    """Per (shape, candidate): each metric's (median, low, high), and "extrapolated": the axes beyond the model's
    measured range."""
    if model is None or not cands:
        return {}
    items = [(s, c) for c in cands for s in shapes]
    return {(s, c): p | {"extrapolated": model.extrapolated(s, c)}
            for (s, c), p in zip(items, model.predict(items), strict=True)}


def unmeasured_cover(cands: list[Structure], rows: list[dict]) -> list[Structure]:
    """Candidates that between them hold every K, f, D and B value of `cands` that no stored row has:
    greedily the one with the most such values first (ties: grid order)."""
    axes = ("kernel_size", "dilation_factor", "depth", "per_block")
    have = {(a, r[a]) for r in rows for a in axes}
    need = {(a, getattr(c, a)) for c in cands for a in axes} - have
    chosen = []
    while need:
        best = max(cands, key=lambda c: sum((a, getattr(c, a)) in need for a in axes))
        chosen.append(best)
        need -= {(a, getattr(best, a)) for a in axes}
    return chosen


def adaptive(prof: Session, cands: list[Structure]) -> LatencyModel | None:
    """Measure a spread-out sample, then what the latency model cannot decide; returns the last model."""
    spec, shapes = prof.spec, prof.shapes
    n = len(cands)
    prof.measure(spread_sample(cands, max(16, math.ceil(0.05 * n))))
    # A K, f, D or B value that nothing stored has is measured once at least, so that no decision there
    # rests on extrapolation alone.
    at_shapes = [r for r in prof.table.all_rows(prof.fp_id, spec.level, spec.context) if row_shape(r) in shapes]
    prof.measure(unmeasured_cover(cands, at_shapes))
    batch_size = max(8, math.ceil(0.03 * n))
    log_thr = math.log(spec.min_speedup)
    metric = spec.metric
    while True:
        model = prof.fit()
        left = [c for c in cands if not prof.done(c)]
        if model is None or not left:
            return model
        preds = _predictions(model, spec, shapes, left)
        unsure = []
        for c in left:
            intervals = [preds[(s, c)][metric] for s in shapes]
            if combine([decision(i, spec.min_speedup) for i in intervals]) == "undecided":
                # How many standard deviations the closest length is from the threshold: closest first.
                z = min(abs(math.log(i[0]) - log_thr) / max(1e-9, (math.log(i[2]) - math.log(i[1])) / 3.92)
                        for i in intervals)
                unsure.append((z, c))
        if not unsure:
            return model
        prof.measure([c for _, c in sorted(unsure, key=lambda t: t[0])[:batch_size]])


def run_profile(
    spec: ProfileSpec,
    gpu: str = "auto",
    storage: str | None = None,
    force: bool = False,
    ray_address: str | None = None,
    progress: bool = True,
    predict: bool = False,
    block_s: float = 0.02,
) -> ProfileResult:
    """Profile `spec` on the `gpu` target, measuring only what the latency table lacks.

    Args:
        predict: measure nothing; the latency model, fitted to what is stored for this device and
            level, predicts every candidate that is not measured.
        block_s: the shortest block of calls between two clock reads.

    Raises:
        UserError: unknown GPU, the GPU is neither local nor reachable through `ray_address`, the
            database or the Ray cluster is unreachable, nothing to predict from. Raised before
            anything is measured.
    """
    start = time.perf_counter()
    # Every check that can refuse comes before the first write to the database.
    gpu = hardware.check_gpu_name(gpu)
    device = hardware.local_target(gpu, ray_address)
    if device is not None and not predict:
        check_memory(spec, device)  # the largest shape and structure, before any workload is built
    url = resolve_url(storage)
    if predict and (path := sqlite_path(url)) is not None and not os.path.isfile(path):
        raise UserError(f"nothing to predict from: {path} does not exist; run `tcnsearch profile` without "
                        "--predict first (it measures a sample)")
    if device is None:  # the cluster is checked (reachable, has the GPU) before the database is opened
        from tcnsearch.profile._remote import RemoteMeasurer

        measurer = RemoteMeasurer(ray_address, gpu, spec.dtype, block_s, spec.threads)
    else:
        measurer = LocalMeasurer(device, spec.dtype, block_s, spec.threads)
    return _run(spec, measurer, gpu, url, force, progress, predict, start)


def _run(spec: ProfileSpec, measurer, gpu: str, url: str, force: bool, progress: bool, predict: bool,
         start: float) -> ProfileResult:
    cands = spec.candidates()
    engine = None
    try:
        engine = create_engine(url, read_only=predict)
        fp = measurer.fingerprint()
        table = LatencyTable(engine, create=not predict)
        if predict:
            fp_id = table.fingerprint_id(fp, create=False) if table.has_tables() else None
            rows = table.all_rows(fp_id, spec.level, spec.context) if fp_id is not None else []
            if len(rows) < 3:
                raise UserError(f"nothing to predict from: {len(rows)} stored {spec.level}-level measurements for "
                                f"{fp.device_name} ({fp.backend}, {fp.dtype}) at these model settings; run "
                                "`tcnsearch profile` without --predict first (it measures a sample)")
        else:
            fp_id = table.fingerprint_id(fp)
        prof = Session(spec, table, fp_id, measurer, progress and not predict)
        if force and not predict:
            table.clear(fp_id, spec.level, spec.context, prof.shapes, cands)
        prof.load(cands)
        cached = sum(1 for c in cands if prof.done(c))
        model = None
        with prof.bar:
            if predict:
                model = prof.fit()
            elif spec.strategy == "full" or len(cands) <= ADAPTIVE_MIN:
                prof.measure(cands)
            else:
                model = adaptive(prof, cands)
    finally:
        measurer.close()
        if engine is not None:  # everything is read: a caller in one process leaves no connection open
            engine.dispose()
    missing = [c for c in cands if not all((s, c) in prof.stored for s in prof.shapes)]
    predicted = _predictions(model, spec, prof.shapes, missing)
    # The baseline's time at a shape where none of this grid is stored: the median of what is stored there.
    base = {s: {m: model.base_time(s, m) for m in METRICS} for s in prof.shapes} if model else None
    ema, rows = assemble(spec, prof.stored, predicted, base)
    key = f"speedup_{spec.metric}"
    survivors = sorted((r for r in rows if r["decision"] == "survivor"), key=lambda r: -r[key])
    undecided = sorted((r for r in rows if r["decision"] == "undecided" and r["ok"]), key=lambda r: -r[key])
    failed, oom = ([{"tcn": r["tcn"], "receptive_field": r["receptive_field"], "length": e["length"],
                     "error": e["error"], **Structure.of(r).as_dict()}
                    for r in rows for e in r["by_length"] if e["status"] == status] for status in ("failed", "oom"))
    measured_now = len({c for _, c in prof.measured})
    return ProfileResult(
        device=fp, target=gpu, storage=masked(url), spec=spec, measured=measured_now,
        cached=cached, predicted=sum(r["source"] == "predicted" for r in rows), pairs=prof.pairs,
        elapsed_s=time.perf_counter() - start, ema=ema, candidates=rows, survivors=survivors,
        undecided=undecided, failed=failed, oom=oom,
    )
