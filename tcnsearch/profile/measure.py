"""Paired timing: candidates and the EMA baseline in interleaved blocks, one speedup per pair.

The machine drifts over tens of seconds (a shared VM's neighbours, clocks, thermals), so two
latencies measured minutes apart are not comparable, however long each run is. Here they are
never compared: at one shape, a round times the baseline, then a few candidates in a random order,
then the baseline again,

    E  c3  c1  c4  E  c1  c4  c2  E  ...       (E: the EMA side, c: candidates; each E closes one
                                                 round and opens the next)

and each candidate block gives one ratio, the mean of its two bracketing baseline blocks over its
own time: one speedup per pair of adjacent blocks, taken within a fraction of a second, so the
drift cancels. Sharing a baseline block between the few candidates of a round is what makes this
affordable: the EMA is 10 to 100 times slower than the TCN here. A speedup is then the median of
its ratios with a bootstrap 95% interval (scipy.stats.bootstrap).

Blocks are timed with torch.utils.benchmark: its Timer warms each workload up and calibrates how
many calls make a block. Every clock read first synchronises the device being measured (not the
current device, which on a multi-GPU host is cuda:0: the TCN's blocks would time their launches
only). Peak memory: CUDA's allocator statistics on a GPU; on the CPU the rise of the peak
resident set (profile.memory), at page granularity, Linux only.

Running out of memory is a result of its own ("oom", with the shape), never a slower candidate:
the next run measures it again, and on a GPU the number of workloads kept resident at once is
sized by the free memory (`LocalMeasurer.capacity`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import socket
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils import benchmark

from tcnsearch import hardware
from tcnsearch.profile.candidates import ProfileSpec
from tcnsearch.profile.devices import Fingerprint, default_cpu_threads, fingerprint
from tcnsearch.profile.levels import METRICS, Shape, Workload, build
from tcnsearch.profile.memory import peak_memory, steady_allocator
from tcnsearch.structure import Structure

FAILURES = (RuntimeError, ValueError, MemoryError)  # torch.OutOfMemoryError is a RuntimeError
SETTLE_S = 1.0  # the baseline runs this long untimed before a shape's first round
POOL = 16  # workloads kept resident at one shape, at most (on a GPU: what its free memory holds)


def on_device(device: torch.device):
    """Make `device` the current CUDA device (torch.utils.benchmark synchronises the current one)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def clock(device: torch.device) -> float:
    """The time, once the work queued on `device` is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def median_interval(ratios: list[float], confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median of `ratios` and its bootstrap percentile interval.

    Deterministic for given ratios (the resampling is seeded), so a stored summary can be recomputed.
    """
    from scipy.stats import bootstrap

    data = np.asarray(ratios, dtype=float)
    med = float(np.median(data))
    if len(data) < 2 or np.ptp(data) == 0:
        return med, med, med
    res = bootstrap((data,), np.median, confidence_level=confidence, n_resamples=2000, method="percentile",
                    vectorized=True, random_state=np.random.default_rng(seed))
    return med, float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass
class _Timed:
    """A workload, warmed up, with the number of calls that make one block per metric."""

    workload: Workload
    calls: dict[str, int]
    peak_fwdbwd_bytes: int | None
    setup_s: float
    device: torch.device

    def block(self, metric: str) -> float:
        """Seconds per call over one block."""
        fn, n = self.workload.fns[metric], self.calls[metric]
        fn()  # untimed: the first call after another workload pays for its cold caches
        start = clock(self.device)
        for _ in range(n):
            fn()
        return (clock(self.device) - start) / n


def _prepare(workload: Workload, device: torch.device, block_s: float, settle_s: float = 0.0) -> _Timed:
    start = time.perf_counter()
    while time.perf_counter() - start < settle_s:  # let the allocator and the thread pools reach their steady state
        for metric in METRICS:
            workload.fns[metric]()
    calls = {}
    for metric in METRICS:
        fn = workload.fns[metric]
        # timeit() warms the workload up first; one call's time sizes the block.
        once = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).timeit(1).mean
        calls[metric] = max(1, min(1000, math.ceil(block_s / max(once, 1e-7))))
    peak = peak_memory(workload.fns["fwdbwd"], device)
    return _Timed(workload, calls, peak, time.perf_counter() - start, device)


@dataclass
class Pair:
    """One round's result for one candidate: its block times and the bracketing baseline's (ms)."""

    tcn_fwd_ms: float
    base_fwd_ms: float
    tcn_fwdbwd_ms: float
    base_fwdbwd_ms: float
    wall_s: float

    @property
    def ratios(self) -> dict[str, float]:
        return {m: getattr(self, f"base_{m}_ms") / getattr(self, f"tcn_{m}_ms") for m in METRICS}


@dataclass
class RoundResult:
    pairs: dict[Structure, Pair] = field(default_factory=dict)
    failed: dict[Structure, str] = field(default_factory=dict)  # cannot run at this shape: final
    oom: dict[Structure, str] = field(default_factory=dict)  # ran out of memory: measured again next time
    peaks: dict[Structure, int | None] = field(default_factory=dict)
    base_peak_bytes: int | None = None


class BaselineFailed(RuntimeError):
    """The EMA side itself cannot run at this shape; `oom` when it ran out of memory."""

    def __init__(self, message: str, oom: bool = False):
        super().__init__(message)
        self.oom = oom


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"


def _oom_message(err: BaseException, shape: Shape, device: torch.device) -> str:
    where = f"batch {shape.batch} x {shape.channels} channels x length {shape.length} on {device}"
    return f"out of memory at {where}: {_error(err)[:200]}"


class PairedSession:
    """Paired rounds at one shape and level on one device; keeps the built workloads between rounds."""

    def __init__(self, spec: ProfileSpec, shape: Shape, device: torch.device, precision: str,
                 block_s: float = 0.02, seed: int = 0):
        self.spec, self.shape, self.device, self.precision, self.block_s = spec, shape, device, precision, block_s
        if device.type == "cpu":
            steady_allocator()
        self.rng = random.Random(seed)
        self._tcn: dict[Structure, _Timed] = {}
        self._base: _Timed | None = None
        self._last_base: dict[str, float] | None = None  # the previous round's closing blocks

    def _baseline(self) -> dict[str, float]:
        return {m: self._ensure_base().block(m) for m in METRICS}

    def _ensure_base(self) -> _Timed:
        if self._base is None:
            try:
                self._base = _prepare(build(self.spec, self.shape, None, self.device, self.precision), self.device,
                                      self.block_s, settle_s=SETTLE_S)
            except FAILURES as err:
                if hardware.is_out_of_memory(err):
                    self._free()
                    raise BaselineFailed(f"the EMA baseline: {_oom_message(err, self.shape, self.device)}",
                                         oom=True) from None
                raise BaselineFailed(f"the EMA baseline fails at L={self.shape.length}: {_error(err)}") from None
        return self._base

    def capacity(self) -> int:
        """Workloads to keep resident at once: POOL, or on a GPU what its free memory holds (each about the
        baseline's footprint: the TCN and the EMA sides are the same model but for the mixer)."""
        if self.device.type != "cuda":
            return POOL
        with on_device(self.device):
            base = self._ensure_base()
        return hardware.pool_size(hardware.free_memory(self.device), base.peak_fwdbwd_bytes, POOL)

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def round(self, candidates: list[Structure], fresh: bool = False) -> RoundResult:
        """One round: baseline, the candidates in a random order, baseline. The previous round's closing
        baseline opens this one unless `fresh` (the caller paused since, to write to the database, say).
        Failures are reported per candidate (and never raised) except the baseline's own (BaselineFailed)."""
        result = RoundResult()
        start = time.perf_counter()
        opening = self._last_base if self._last_base and not fresh else self._baseline()
        base_s = time.perf_counter() - start
        own: dict[Structure, tuple[dict[str, float], float]] = {}
        order = list(candidates)
        self.rng.shuffle(order)
        for cand in order:
            t0 = time.perf_counter()
            try:
                timed = self._tcn.get(cand)
                if timed is None:
                    timed = self._tcn[cand] = _prepare(build(self.spec, self.shape, cand, self.device,
                                                             self.precision), self.device, self.block_s)
                    result.peaks[cand] = timed.peak_fwdbwd_bytes
                times = {m: timed.block(m) for m in METRICS}
            except FAILURES as err:
                self._tcn.pop(cand, None)
                if hardware.is_out_of_memory(err):
                    self._free()
                    result.oom[cand] = _oom_message(err, self.shape, self.device)
                else:
                    result.failed[cand] = _error(err)
                continue
            own[cand] = (times, time.perf_counter() - t0)
        t0 = time.perf_counter()
        closing = self._baseline()
        base_s += time.perf_counter() - t0
        self._last_base = closing
        result.base_peak_bytes = self._base.peak_fwdbwd_bytes if self._base else None
        for cand, (times, wall) in own.items():
            base = {m: 0.5 * (opening[m] + closing[m]) for m in METRICS}
            result.pairs[cand] = Pair(1e3 * times["fwd"], 1e3 * base["fwd"], 1e3 * times["fwdbwd"],
                                      1e3 * base["fwdbwd"], wall + base_s / max(1, len(own)))
        return result

    def forget(self, cand: Structure) -> None:
        """Free a candidate's workload once it is decided."""
        if self._tcn.pop(cand, None) is not None and self.device.type == "cuda":
            torch.cuda.empty_cache()


class LocalMeasurer:
    """Paired rounds on this machine; one session (built workloads, last baseline blocks) per shape.

    With `threads` (on a CPU, default: all cores but one, devices.default_cpu_threads), PyTorch (and
    the TCN's kernel, which shares its OpenMP pool) runs with that many threads until close(): the
    thread count is part of the fingerprint. `precision` is resolved for the device (hardware.
    resolve_precision): auto is bf16 on a GPU with native bf16, fp16 on a V100, fp32 on a CPU.
    """

    def __init__(self, device: torch.device, precision: str = "auto", block_s: float = 0.02,
                 threads: int | None = None):
        hardware.check_cuda_build(device)
        self.device, self.block_s = device, block_s
        self.precision = hardware.device_precision(precision, device)
        self._sessions: dict[tuple, PairedSession] = {}
        self._threads_before = torch.get_num_threads()
        if threads is None and device.type == "cpu":
            threads = default_cpu_threads()
        if threads is not None:
            torch.set_num_threads(threads)

    def fingerprint(self) -> Fingerprint:
        return fingerprint(self.device, self.precision)

    def _session(self, spec: ProfileSpec, shape: Shape) -> PairedSession:
        key = (spec.level, spec.context, shape)
        if key not in self._sessions:
            self._sessions[key] = PairedSession(spec, shape, self.device, self.precision, self.block_s,
                                                seed=shape.length)
        return self._sessions[key]

    def round(self, spec: ProfileSpec, shape: Shape, candidates: list[Structure], fresh: bool = False
              ) -> RoundResult:
        with on_device(self.device):
            return self._session(spec, shape).round(candidates, fresh)

    def capacity(self, spec: ProfileSpec, shape: Shape) -> int:
        return self._session(spec, shape).capacity()

    def forget(self, spec: ProfileSpec, shape: Shape, cand: Structure) -> None:
        session = self._sessions.get((spec.level, spec.context, shape))
        if session is not None:
            session.forget(cand)

    def host(self) -> str:
        return socket.gethostname()

    def close(self) -> None:
        """Free every workload (and on a GPU the allocator's cache, which the study's trials need)."""
        self._sessions.clear()
        if self.device.type == "cuda":
            gc.collect()  # the workloads' tensors, held in reference cycles by their closures
            torch.cuda.empty_cache()
        torch.set_num_threads(self._threads_before)
