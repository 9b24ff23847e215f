"""The native depthwise dilated convolution: compiled once, loaded with ctypes.

The C source (`_dconv.c`) takes every size at run time, so one compilation serves every TCN
structure the profiler or a study builds; the shared library is cached under
``$TCNSEARCH_CACHE`` (default ``~/.cache/tcnsearch``), keyed by the source, the flags and the
CPU. Compiling takes about a second with gcc. Why ctypes and not ``torch.utils.cpp_extension``:
the kernel needs no torch headers, and including them costs ~40 s of compilation per machine.

Where no C compiler is available the TCN falls back to its PyTorch reference path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("_dconv.c")
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
ACTIVATIONS = {"identity": 0, "relu": 1, "gelu": 2, "silu": 3}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_load_error: str | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("TCNSEARCH_CACHE", Path.home() / ".cache" / "tcnsearch"))


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it (the kernel is compiled for it: -march=native)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def library_path() -> Path:
    """Where this machine's compiled kernel is cached (keyed by the source, the flags and the CPU)."""
    key = hashlib.sha256(
        _SOURCE.read_bytes() + " ".join(_FLAGS).encode() + platform.machine().encode()
        + cpu_model().encode()
    ).hexdigest()[:16]
    return cache_dir() / "kernels" / f"dconv-{key}.so"


def compile_to(target: Path) -> None:
    """Compile the kernel into `target` (atomically: several Ray workers may compile at once)."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler found (install gcc, or set CC)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (Ray workers) may compile at once: build aside, then rename atomically.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", tmp, "-lm"],
                       check=True, capture_output=True, text=True)
        os.replace(tmp, target)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"compiling {_SOURCE.name} failed: {err.stderr.strip()[:500]}") from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load() -> ctypes.CDLL | None:
    """The compiled kernel library, or None (with the reason logged once) if it cannot be built."""
    global _lib, _load_error
    if _lib is not None or _load_error is not None:
        return _lib
    with _lock:
        if _lib is None and _load_error is None:
            try:
                path = library_path()
                if not path.exists():
                    compile_to(path)
                lib = ctypes.CDLL(str(path))
                i64, i32, ptr = ctypes.c_longlong, ctypes.c_int, ctypes.c_void_p
                lib.dconv_forward.argtypes = [ptr] * 5 + [i64] * 3 + [i32, i32, ptr, i32, i32]
                lib.dconv_backward_weight.argtypes = [ptr] * 5 + [i64] * 3 + [i32, i32, ptr, i32, i32]
                _lib = lib
            except (RuntimeError, OSError) as err:
                _load_error = str(err)
                log.warning("native TCN kernel unavailable, using the PyTorch path: %s", err)
    return _lib


def available() -> bool:
    """Whether the native kernel is usable here (compiled on first use)."""
    return load() is not None


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _shifts(kernel_size: int, dilation: int, pad_left: int, sign: int = 1) -> ctypes.Array:
    return (ctypes.c_longlong * kernel_size)(*[sign * (k * dilation - pad_left) for k in range(kernel_size)])


def _residual(x, skip, self_residual: bool) -> torch.Tensor | None:
    """What the kernel adds after the activation: x, skip, both, or nothing."""
    res = x if self_residual else skip
    if self_residual and skip is not None:
        res = x + skip
    return None if res is None else res.contiguous()


def _plan_dilation(dilation: int, length: int) -> int:
    """The dilation the kernel tiles its rows by. Past the length every row is its own residue,
    so tiling by `length` covers the same rows: the kernel's work stays O(L) (not O(dilation))
    and the value fits the kernel's int however deep the TCN. The taps keep their true shifts."""
    return max(1, min(dilation, length))


def _forward(x, w, res, z_out, dilation, shifts, act) -> torch.Tensor:
    batch, length, channels = x.shape
    out = torch.empty_like(x)
    load().dconv_forward(
        _ptr(x), _ptr(w), _ptr(res), _ptr(z_out), _ptr(out), batch, length, channels,
        w.shape[0], _plan_dilation(dilation, length), shifts, act, torch.get_num_threads(),
    )
    return out


class DilatedConvFunction(torch.autograd.Function):
    """out = act(depthwise_conv(x, w)) + (x if self_residual) + (skip if given).

    x, skip: (B, L, C) contiguous float32 on the CPU; w: (K, C). pad_left picks causal
    ((K-1)*dilation) or centred (half of that) windows.
    """

    @staticmethod
    def forward(ctx, x, w, skip, dilation: int, pad_left: int, activation: str, self_residual: bool):
        act = ACTIVATIONS[activation]
        x, w = x.contiguous(), w.contiguous()
        res = _residual(x, skip, self_residual)
        z = torch.empty_like(x) if ctx.needs_input_grad[0] or ctx.needs_input_grad[1] else None
        out = _forward(x, w, res, z, dilation,
                       _shifts(w.shape[0], dilation, pad_left), act)
        ctx.save_for_backward(x, w, z)
        ctx.config = (dilation, pad_left, act, self_residual, skip is not None)
        return out

    @staticmethod
    def backward(ctx, g_out):
        x, w, z = ctx.saved_tensors
        dilation, pad_left, act, self_residual, has_skip = ctx.config
        g_out = g_out.contiguous()
        batch, length, channels = x.shape
        kernel_size = w.shape[0]
        gz = torch.empty_like(x)
        gw = torch.empty_like(w)
        load().dconv_backward_weight(
            _ptr(g_out), _ptr(z), _ptr(x), _ptr(gz), _ptr(gw), batch, length, channels,
            kernel_size, _plan_dilation(dilation, length), _shifts(kernel_size, dilation, pad_left), act,
            torch.get_num_threads(),
        )
        gx = None
        if ctx.needs_input_grad[0]:
            # The transposed convolution is the same kernel with the shifts negated.
            gx = _forward(gz, w, g_out if self_residual else None, None, dilation,
                          _shifts(kernel_size, dilation, pad_left, sign=-1), ACTIVATIONS["identity"])
        g_skip = g_out if has_skip and ctx.needs_input_grad[2] else None
        return gx, gw, g_skip, None, None, None, None


def dilated_conv(x, w, skip, dilation: int, pad_left: int, activation: str, self_residual: bool):
    """act(depthwise_conv(x, w)) + (x if self_residual) + skip; the autograd path only when a
    gradient is wanted, since it must also store the pre-activation for the backward pass."""
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                    or (skip is not None and skip.requires_grad)):
        return DilatedConvFunction.apply(x, w, skip, dilation, pad_left, activation, self_residual)
    x, w = x.contiguous(), w.contiguous()
    return _forward(x, w, _residual(x, skip, self_residual), None, dilation,
                    _shifts(w.shape[0], dilation, pad_left), ACTIVATIONS[activation])
