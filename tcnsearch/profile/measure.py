"""Timing one operator at one shape: forward, forward+backward and peak memory.

Times come from torch.utils.benchmark (warm-up, CUDA synchronisation, blocked repeats; we keep
the median and the interquartile range relative to it). Peak memory: CUDA's allocator statistics
on a GPU. On the CPU, where PyTorch keeps no allocator statistics: glibc first returns its free
pages to the system (malloc_trim), so that every allocation of the call must fault in fresh
pages, then the rise of the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs) over the resident set before the call is what the call needed, at page
granularity. Linux with glibc only; elsewhere the CPU peak is None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from dataclasses import dataclass

import torch
from torch.utils import benchmark

from tcnsearch.ops import TCN, MultiHeadEMA
from tcnsearch.profile.candidates import Candidate


@dataclass(frozen=True)
class Shape:
    """What an operator is timed at (the TCN's rows ignore ema_dim)."""

    batch: int
    channels: int
    length: int
    ema_dim: int
    bidirectional: bool


@dataclass(frozen=True)
class Job:
    """One measurement: the EMA (candidate None) or one TCN candidate, at one shape."""

    shape: Shape
    candidate: Candidate | None = None

    @property
    def op(self) -> str:
        return "ema" if self.candidate is None else "tcn"


def timeit(fn, min_run_time: float) -> benchmark.Measurement:
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time)


def forward_fn(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def forward_backward_fn(module, x):
    x = x.detach().requires_grad_()
    grad = torch.randn_like(x)

    def run():
        module(x).backward(grad)
        x.grad = None
        module.zero_grad(set_to_none=True)
    return run


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def _rss() -> tuple[int, int] | None:
    try:
        with open("/proc/self/status") as fh:
            status = fh.read()
    except OSError:
        return None
    hwm = re.search(r"VmHWM:\s+(\d+)", status)
    rss = re.search(r"VmRSS:\s+(\d+)", status)
    return (int(hwm.group(1)) * 1024, int(rss.group(1)) * 1024) if hwm and rss else None


def peak_memory(fn, device: torch.device) -> int | None:
    """Bytes the call needs above what was already allocated (None where it cannot be measured)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if _LIBC is None:
        return None
    _LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _rss()
    fn()
    after = _rss()
    if before is None or after is None:
        return None
    return max(0, after[0] - before[1])


def build(job: Job, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    s, c = job.shape, job.candidate
    if c is None:
        # MEGA keeps the EMA's parameters in float32 and runs its FFT in float32 whatever the input.
        return MultiHeadEMA(s.channels, ndim=s.ema_dim, bidirectional=s.bidirectional).to(device)
    return TCN(s.channels, c.kernel_size, c.dilation_factor, c.depth, c.per_block,
               causal=not s.bidirectional).to(device=device, dtype=dtype)


def measure(job: Job, device: torch.device, dtype: str, min_run_time: float = 0.2) -> dict:
    """Time one job. Returns a record with status "ok" or "failed" (and the error), never raises
    for a failure of the operator itself (out of memory, say)."""
    torch_dtype = getattr(torch, dtype)
    record = {"status": "ok", "error": None}
    try:
        torch.manual_seed(0)
        module = build(job, device, torch_dtype).train()
        x = torch.randn(job.shape.batch, job.shape.length, job.shape.channels, device=device, dtype=torch_dtype)
        fwd, fwdbwd = forward_fn(module, x), forward_backward_fn(module, x)
        t_fwd, t_fwdbwd = timeit(fwd, min_run_time), timeit(fwdbwd, min_run_time)
        record |= {
            "fwd_ms": 1e3 * t_fwd.median, "fwd_spread": t_fwd.iqr / t_fwd.median,
            "fwdbwd_ms": 1e3 * t_fwdbwd.median, "fwdbwd_spread": t_fwdbwd.iqr / t_fwdbwd.median,
            "peak_fwd_bytes": peak_memory(fwd, device), "peak_fwdbwd_bytes": peak_memory(fwdbwd, device),
        }
    except (RuntimeError, ValueError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
        record = {"status": "failed", "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return record
