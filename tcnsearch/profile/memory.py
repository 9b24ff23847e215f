"""Peak memory of one call, and a steady CPU allocator to time on.

On a GPU, CUDA's allocator statistics; on the CPU the rise of the peak resident set (VmHWM, reset
through /proc/self/clear_refs after glibc's malloc_trim), at page granularity, Linux only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re

import torch


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def steady_allocator() -> None:
    """Fix glibc's allocation thresholds (CPU profiling only, once per process).

    glibc adapts its mmap and trim thresholds to the largest block freed so far, so the same
    operator costs more page faults early in a process than after something larger has run: the
    first shape a process profiles read 30-50% slower than the same shape later. Fixed thresholds
    (mmap above 32 MB, never trim the heap below 1 GB) make a measurement independent of what the
    process ran before it.
    """
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        m_trim_threshold, m_mmap_threshold = -1, -3
        _LIBC.mallopt(m_mmap_threshold, 32 << 20)
        _LIBC.mallopt(m_trim_threshold, 1 << 30)


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
