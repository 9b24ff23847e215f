"""`tcnsearch profile`: paired speedups of the candidates over the EMA, decisions from their intervals.

    measure   for each length, rounds of paired blocks (measure.PairedSession) until each
              candidate's speedup interval is narrower than `precision` and on one side of
              `min_speedup`, or its time cap is spent; every round is committed
    decide    survivor: the interval's low end >= min_speedup at every length; rejected: the high
              end below it at some length; otherwise undecided
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
import random
import socket
import time
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tcnsearch.errors import UserError
from tcnsearch.profile.candidates import Candidate, ProfileSpec
from tcnsearch.profile.devices import (
    GPU_MODELS,
    Fingerprint,
    check_gpu_name,
    default_cpu_threads,
    fingerprint,
    found_devices,
    resolve_local,
)
from tcnsearch.profile.latency_model import LatencyModel, features
from tcnsearch.profile.levels import METRICS, Shape
from tcnsearch.profile.measure import BaselineFailed, PairedSession, RoundResult
from tcnsearch.profile.table import LatencyTable, Stored, summarize_pairs
from tcnsearch.storage import create_engine, masked, resolve_url, sqlite_path

ADAPTIVE_MIN = 24  # smaller grids are measured whole: a model needs more points than that to pay off
GROUP = 4  # candidates per round between two baseline blocks
POOL = 16  # candidates measured side by side at one shape, one pair each per pass
FLUSH_S = 2.0  # the longest a finished pair waits before it is written


class LocalMeasurer:
    """Paired rounds on this machine; one session (built workloads, last baseline blocks) per shape.

    With `threads` (on a CPU, default: all cores but one, devices.default_cpu_threads), PyTorch (and
    the TCN's kernel, which shares its OpenMP pool) runs with that many threads until close(): the
    thread count is part of the fingerprint.
    """

    def __init__(self, device: torch.device, dtype: str, block_s: float = 0.02, threads: int | None = None):
        self.device, self.dtype, self.block_s = device, dtype, block_s
        self._sessions: dict[tuple, PairedSession] = {}
        self._threads_before = torch.get_num_threads()
        if threads is None and device.type == "cpu":
            threads = default_cpu_threads()
        if threads is not None:
            torch.set_num_threads(threads)

    def fingerprint(self) -> Fingerprint:
        return fingerprint(self.device, self.dtype)

    def round(self, spec: ProfileSpec, shape: Shape, candidates: list[Candidate], fresh: bool = False) -> RoundResult:
        key = (spec.level, spec.context, shape)
        if key not in self._sessions:
            self._sessions[key] = PairedSession(spec, shape, self.device, self.dtype, self.block_s,
                                                seed=shape.length)
        return self._sessions[key].round(candidates, fresh)

    def forget(self, spec: ProfileSpec, shape: Shape, cand: Candidate) -> None:
        session = self._sessions.get((spec.level, spec.context, shape))
        if session is not None:
            session.forget(cand)

    def host(self) -> str:
        return socket.gethostname()

    def close(self) -> None:
        self._sessions.clear()
        torch.set_num_threads(self._threads_before)


@dataclass
class ProfileResult:
    """What a profile found. `candidates` holds every structure; `survivors`, `undecided` and
    `rejected` partition those that ran; each row's `source` is "measured" or "predicted"."""

    device: Fingerprint
    target: str
    storage: str
    spec: ProfileSpec
    measured: int
    cached: int
    predicted: int
    pairs: int
    elapsed_s: float
    ema: list[dict]
    candidates: list[dict]
    survivors: list[dict] = field(default_factory=list)
    undecided: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "device": self.device.as_dict(), "target": self.target, "storage": self.storage,
            "spec": self.spec.model_dump(), "level": self.spec.level, "measured": self.measured,
            "cached": self.cached, "predicted": self.predicted, "pairs": self.pairs,
            "elapsed_s": round(self.elapsed_s, 3), "ema": self.ema, "n_candidates": len(self.candidates),
            "n_survivors": len(self.survivors), "n_undecided": len(self.undecided),
            "n_rejected": sum(r["decision"] == "rejected" for r in self.candidates),
            "survivors": self.survivors, "undecided": self.undecided, "failed": self.failed,
            "candidates": self.candidates,
        }

    def kept(self) -> list[dict]:
        """What a study draws from: the survivors, and the undecided ones if the spec says keep."""
        return self.survivors + (self.undecided if self.spec.undecided == "keep" else [])


def shapes_of(spec: ProfileSpec) -> list[Shape]:
    return [Shape(spec.batch, spec.channels, length, spec.ema_dim, spec.bidirectional) for length in spec.lengths]


def decision(interval: tuple[float, float, float] | None, threshold: float) -> str:
    """survivor / rejected / undecided for one (median, low, high) speedup."""
    if interval is None:
        return "undecided"
    _, lo, hi = interval
    return "survivor" if lo >= threshold else "rejected" if hi < threshold else "undecided"


def _metric(spec: ProfileSpec) -> str:
    return "fwdbwd" if spec.mode == "train" else "fwd"


def finished(spec: ProfileSpec, stored: Stored | None) -> bool:
    """Whether a measurement needs no more pairs under this spec's precision, threshold and cap."""
    if stored is None:
        return False
    if stored.status == "failed":
        return True
    if stored.n_pairs < spec.min_pairs:
        return False
    if stored.wall_s >= spec.max_time:
        return True
    med, lo, hi = stored.speedup[_metric(spec)]
    precise = hi - lo <= spec.precision * med
    return precise and decision((med, lo, hi), spec.min_speedup) != "undecided"


def _label(c: Candidate) -> str:
    return f"K={c.kernel_size} f={c.dilation_factor} D={c.depth} B={c.per_block}"


def spread_sample(cands: list[Candidate], n: int) -> list[Candidate]:
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


class _Profiler:
    """One profile run: the table, the measurer, the progress bar, and what it has done."""

    def __init__(self, spec: ProfileSpec, table: LatencyTable, fp_id: int, measurer, progress: bool):
        self.spec, self.table, self.fp_id, self.measurer = spec, table, fp_id, measurer
        self.shapes = shapes_of(spec)
        self.stored: dict[tuple[Shape, Candidate], Stored] = {}
        self.measured: set[tuple[Shape, Candidate]] = set()
        self.pairs = 0
        self.base_peak: int | None = None  # the baseline's, at the shape being measured
        self.bar = Progress(TextColumn("[bold]profile[/] {task.description}"), BarColumn(bar_width=16),
                            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                            console=Console(stderr=True), disable=not progress, transient=False)
        self.task = self.bar.add_task(f"{spec.level} level", total=0)

    def load(self, cands: list[Candidate]) -> None:
        self.stored.update(self.table.get(self.fp_id, self.spec.level, self.spec.context, self.shapes, cands))

    def done(self, cand: Candidate) -> bool:
        return all(finished(self.spec, self.stored.get((s, cand))) for s in self.shapes)

    def measure(self, cands: list[Candidate]) -> None:
        """Pairs for every (shape, candidate) among `cands` until each is finished.

        Pairs are written every FLUSH_S seconds and whenever a candidate finishes, not after every
        round: a database write between two blocks is a pause that disturbs the next block. The
        round after a write opens with a fresh baseline block.
        """
        todo = {s: [c for c in cands if not finished(self.spec, self.stored.get((s, c)))] for s in self.shapes}
        self.bar.update(self.task, total=self.bar.tasks[0].total + sum(map(len, todo.values())))
        for shape, pending in todo.items():
            before = {c: self.table.pairs(self.stored[(shape, c)].id) if (shape, c) in self.stored else []
                      for c in pending}
            new: dict[Candidate, list] = {c: [] for c in pending}
            peaks: dict[Candidate, int | None] = {}
            try:
                self._rounds(shape, pending, new, before, peaks)
            finally:  # an interrupted profile keeps every finished pair
                self._flush(shape, list(new), new, before, peaks)

    def _rounds(self, shape: Shape, pending: list, new: dict, before: dict, peaks: dict) -> None:
        """Passes over a pool of up to POOL candidates at `shape`, in rounds of GROUP, until `pending` is
        empty and every candidate is finished.

        Each pass shuffles the pool and gives every candidate in it one pair, so a candidate's pairs are
        spread over the pool's whole measuring time (tens of seconds) rather than taken in one burst:
        the VM's slow spells, which last a second or more and do not slow the TCN and the EMA alike,
        then weigh on every candidate in the same proportion instead of falling on a few of them
        (Google Benchmark's random interleaving, over candidates instead of repetitions).
        """
        rng = random.Random(shape.length)
        pool: list[Candidate] = []
        last_flush, fresh = time.perf_counter(), True
        while pending or pool:
            while pending and len(pool) < POOL:
                pool.append(pending.pop(0))
            order = rng.sample(pool, len(pool))
            for start in range(0, len(order), GROUP):
                group = [c for c in order[start:start + GROUP] if c in pool]
                if not group:
                    continue
                # one structure and the length: short enough for an 80-column terminal with the bar
                self.bar.update(self.task, description=f"L={shape.length} {_label(group[0])}"
                                                       f"{f' +{len(group) - 1}' if len(group) > 1 else ''}")
                try:
                    result = self.measurer.round(self.spec, shape, group, fresh)
                except BaselineFailed as err:
                    for c in pool + pending:
                        new[c] = []
                        self._fail(shape, c, str(err))
                    self.bar.advance(self.task, len(pool) + len(pending))
                    pending.clear()
                    return
                fresh = False
                self.base_peak = result.base_peak_bytes
                done = []
                for c in group:
                    self.measured.add((shape, c))
                    if c in result.failed:
                        new[c] = []
                        self._fail(shape, c, result.failed[c])
                        pool.remove(c)
                        self.bar.advance(self.task)
                        continue
                    new[c].append(result.pairs[c])
                    if c in result.peaks:
                        peaks[c] = result.peaks[c]
                    self.pairs += 1
                    if finished(self.spec, self._projected(shape, c, before[c] + new[c])):
                        done.append(c)
                if done or time.perf_counter() - last_flush >= FLUSH_S:
                    self._flush(shape, pool, new, before, peaks)
                    last_flush, fresh = time.perf_counter(), True
                for c in done:
                    pool.remove(c)
                    self.measurer.forget(self.spec, shape, c)
                    self.bar.advance(self.task)

    def _flush(self, shape: Shape, which: list[Candidate], new: dict, before: dict, peaks: dict) -> None:
        """Write the pairs taken since the last write (`new`), one transaction per candidate."""
        for c in which:
            if new[c]:
                self.stored[(shape, c)] = self.table.add_pairs(
                    self.fp_id, self.spec.level, self.spec.context, shape, c, new[c], before[c],
                    tcn_peak=peaks.pop(c, None), base_peak=self.base_peak, host=self.measurer.host())
                before[c] += new[c]
                new[c] = []

    def _projected(self, shape: Shape, cand: Candidate, pairs: list) -> Stored:
        """The summary the table would store for these pairs (to decide whether to stop, before writing)."""
        return Stored(0, "ok", None, len(pairs), sum(p.wall_s for p in pairs),
                      {m: (v[f"speedup_{m}"], v[f"speedup_{m}_lo"], v[f"speedup_{m}_hi"])
                       for v in [summarize_pairs(pairs)] for m in METRICS}, {}, {}, None, None)

    def _fail(self, shape: Shape, cand: Candidate, error: str) -> None:
        self.table.fail(self.fp_id, self.spec.level, self.spec.context, shape, cand, error)
        self.stored[(shape, cand)] = Stored(0, "failed", error, 0, 0.0, {m: None for m in METRICS}, {}, {},
                                            None, None)

    def fit(self) -> LatencyModel | None:
        rows = self.table.all_rows(self.fp_id, self.spec.level, self.spec.context)
        try:
            return LatencyModel.fit(rows)
        except ValueError:
            return None


def _predictions(model: LatencyModel | None, spec: ProfileSpec, shapes: list[Shape], cands: list[Candidate]):
    if model is None or not cands:
        return {}
    items = [(s, c) for c in cands for s in shapes]
    return dict(zip(items, model.predict(items), strict=True))


def adaptive(prof: _Profiler, cands: list[Candidate]) -> LatencyModel | None:
    """Measure a spread-out sample, then what the latency model cannot decide; returns the last model."""
    spec, shapes = prof.spec, prof.shapes
    n = len(cands)
    prof.measure(spread_sample(cands, max(16, math.ceil(0.05 * n))))
    batch_size = max(8, math.ceil(0.03 * n))
    log_thr = math.log(spec.min_speedup)
    metric = _metric(spec)
    while True:
        model = prof.fit()
        left = [c for c in cands if not prof.done(c)]
        if model is None or not left:
            return model
        preds = _predictions(model, spec, shapes, left)
        unsure = []
        for c in left:
            intervals = [preds[(s, c)][metric] for s in shapes]
            if _combine([decision(i, spec.min_speedup) for i in intervals]) == "undecided":
                # How many standard deviations the closest length is from the threshold: closest first.
                z = min(abs(math.log(i[0]) - log_thr) / max(1e-9, (math.log(i[2]) - math.log(i[1])) / 3.92)
                        for i in intervals)
                unsure.append((z, c))
        if not unsure:
            return model
        prof.measure([c for _, c in sorted(unsure, key=lambda t: t[0])[:batch_size]])


def _combine(decisions: list[str]) -> str:
    if "failed" in decisions:
        return "failed"
    if "rejected" in decisions:
        return "rejected"
    return "survivor" if all(d == "survivor" for d in decisions) else "undecided"


def assemble(spec: ProfileSpec, stored: dict[tuple[Shape, Candidate], Stored],
             predicted: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(baseline rows per length, candidate rows) from stored measurements and model predictions.

    A candidate's speedups are the least over the lengths (with that length's interval), which is
    what the survivor rule checks. Its latencies are the baseline's pooled time at the longest
    length over its paired speedup there: drift-free, and ranked exactly as the speedups are (the
    raw block medians are kept as `tcn_*_raw_ms`).
    """
    predicted = predicted or {}
    shapes = shapes_of(spec)
    ema_rows = []
    for s in shapes:
        entries = [v for (sh, _), v in stored.items() if sh == s and v.status == "ok"]
        row = {"length": s.length, "status": "ok" if entries else "missing", "level": spec.level}
        for m in METRICS:
            times = sorted(v.base_ms[m] for v in entries if v.base_ms.get(m))
            row[f"{m}_ms"] = times[len(times) // 2] if times else None
        peaks = [v.base_peak_bytes for v in entries if v.base_peak_bytes is not None]
        row["peak_fwdbwd_bytes"] = max(peaks) if peaks else None
        ema_rows.append(row)
    base_at = {s: r for s, r in zip(shapes, ema_rows, strict=True)}
    rows = []
    for cand in spec.candidates():
        by_length, decisions, source = [], [], "measured"
        for s in shapes:
            got = stored.get((s, cand))
            entry = {"length": s.length}
            if got is not None and got.status == "failed":
                entry |= {"status": "failed", "error": got.error}
                decisions.append("failed")
            elif got is not None and got.speedup.get("fwd"):
                entry |= {"status": "ok", "source": "measured", "n_pairs": got.n_pairs, "wall_s": got.wall_s,
                          "tcn_peak_fwdbwd_bytes": got.tcn_peak_bytes}
                for m in METRICS:
                    entry |= _speedup_fields(m, got.speedup[m], base_at[s][f"{m}_ms"])
                    entry[f"tcn_{m}_raw_ms"] = got.tcn_ms[m]
                decisions.append(decision(got.speedup[_metric(spec)], spec.min_speedup))
            elif (s, cand) in predicted:
                source = "predicted"
                entry |= {"status": "ok", "source": "predicted", "n_pairs": 0}
                for m in METRICS:
                    entry |= _speedup_fields(m, predicted[(s, cand)][m], base_at[s][f"{m}_ms"])
                decisions.append(decision(predicted[(s, cand)][_metric(spec)], spec.min_speedup))
            else:
                entry["status"] = "missing"
                decisions.append("undecided")
                source = "missing"
            by_length.append(entry)
        row = cand.as_dict() | {"source": source, "by_length": by_length}
        verdict = _combine(decisions)
        ok = [e for e in by_length if e["status"] == "ok"]
        row["ok"] = verdict != "failed" and len(ok) == len(by_length)
        row["decision"] = verdict
        row["survivor"] = verdict == "survivor"
        if row["ok"]:
            last = by_length[-1]
            for m in METRICS:
                worst = min(ok, key=lambda e, m=m: e[f"speedup_{m}"])
                row[f"speedup_{m}"] = worst[f"speedup_{m}"]
                row[f"speedup_{m}_ci"] = worst[f"speedup_{m}_ci"]
                row[f"tcn_{m}_ms"] = last[f"tcn_{m}_ms"]
                row[f"ema_{m}_ms"] = base_at[shapes[-1]][f"{m}_ms"]
            row["n_pairs"] = sum(e["n_pairs"] for e in by_length)
            row["wall_s"] = sum(e.get("wall_s", 0.0) for e in by_length)
            row["tcn_peak_fwdbwd_bytes"] = last.get("tcn_peak_fwdbwd_bytes")
            row["ema_peak_fwdbwd_bytes"] = base_at[shapes[-1]]["peak_fwdbwd_bytes"]
        rows.append(row)
    return ema_rows, rows


def _speedup_fields(metric: str, interval: tuple[float, float, float], base_ms: float | None) -> dict:
    med, lo, hi = interval
    return {f"speedup_{metric}": med, f"speedup_{metric}_ci": [lo, hi],
            f"tcn_{metric}_ms": base_ms / med if base_ms else None, f"ema_{metric}_ms": base_ms}


def local_target(gpu: str, ray_address: str | None) -> torch.device | None:
    """The local device that `--gpu` names, None where it is to be found on the Ray cluster.

    Raises:
        UserError: an unknown GPU, or one this machine lacks with no cluster to look on.
    """
    device = resolve_local(gpu)
    if device is None and not ray_address:
        model = GPU_MODELS[check_gpu_name(gpu)]
        raise UserError(f"no {model} on this machine (found: {found_devices()}); "
                        f"use --gpu cpu or --gpu auto to profile this machine, or --ray-address to run "
                        f"on a Ray cluster node with a {model}")
    return device


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
    gpu = check_gpu_name(gpu)
    device = local_target(gpu, ray_address)
    url = resolve_url(storage)
    if predict and (path := sqlite_path(url)) is not None and not os.path.isfile(path):
        raise UserError(f"nothing to predict from: {path} does not exist; run `tcnsearch profile` without "
                        "--predict first (it measures a sample)")
    if device is None:  # the cluster is checked (reachable, has the GPU) before the database is opened
        from tcnsearch.profile._remote import RemoteMeasurer

        measurer = RemoteMeasurer(ray_address, gpu, spec.dtype, block_s, spec.threads)
    else:
        measurer = LocalMeasurer(device, spec.dtype, block_s, spec.threads)
    cands = spec.candidates()
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
        prof = _Profiler(spec, table, fp_id, measurer, progress and not predict)
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
    missing = [c for c in cands if not all((s, c) in prof.stored for s in prof.shapes)]
    predicted = _predictions(model, spec, prof.shapes, missing)
    ema, rows = assemble(spec, prof.stored, predicted)
    key = f"speedup_{_metric(spec)}"
    survivors = sorted((r for r in rows if r["decision"] == "survivor"), key=lambda r: -r[key])
    undecided = sorted((r for r in rows if r["decision"] == "undecided" and r["ok"]), key=lambda r: -r[key])
    failed = [cand_row | {"length": e["length"], "error": e["error"]}
              for r in rows for e in r["by_length"] if e["status"] == "failed"
              for cand_row in [{k: r[k] for k in ("kernel_size", "dilation_factor", "depth", "per_block",
                                                  "receptive_field")}]]
    measured_now = len({c for _, c in prof.measured})
    return ProfileResult(
        device=fp, target=gpu, storage=masked(url), spec=spec, measured=measured_now,
        cached=cached, predicted=sum(r["source"] == "predicted" for r in rows), pairs=prof.pairs,
        elapsed_s=time.perf_counter() - start, ema=ema, candidates=rows, survivors=survivors,
        undecided=undecided, failed=failed,
    )


__all__ = ["Candidate", "ProfileResult", "assemble", "decision", "local_target", "run_profile", "spread_sample"]
