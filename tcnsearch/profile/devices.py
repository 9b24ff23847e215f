"""Device fingerprints: what a stored latency depends on besides the shape.

Two measurements are comparable only on the same fingerprint: the device, the software, how the
TCN runs there (its backend), the precision and, on a CPU, the thread count. On a GPU the CPU
threads do not change the kernels' times, so they are left out: a local profile, a study and a
Ray actor then share their measurements of one GPU.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from tcnsearch import hardware
from tcnsearch.ops import native_kernel_available


@dataclass(frozen=True)
class Fingerprint:
    """What a latency depends on besides the shape: the device, the software, the TCN's backend.

    `backend` is how the TCN runs there: "native" (the C kernel), "fallback" (the PyTorch path
    because the kernel could not be built: much slower, and never to be served to a native run),
    "torch" (the reference path by design: another precision), or "cuda". `dtype` is the precision
    the workloads run in (float32, bfloat16, float16: torch's names), as the training they stand for does.
    """

    device_name: str
    torch_version: str
    cuda_version: str
    dtype: str
    backend: str = "torch"
    threads: int = 1
    cudnn_version: str = "none"

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def is_fallback(self) -> bool:
        return self.backend == "fallback"


def default_cpu_threads() -> int:
    """The threads a CPU profile measures with unless told: every core this process may use but one.

    The spare core takes the kernel's, the driver's and the neighbours' work. On a 2-vCPU VM, two
    threads time each speedup with a 95% interval about 50% wide (OpenMP's barriers wait for
    whichever vCPU the host has just taken away); one thread, about 4%.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores - 1))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return hardware.cpu_name()


def tcn_backend(device: torch.device, precision: str) -> str:
    """How the TCN runs on `device` in `precision` (see Fingerprint.backend)."""
    if device.type == "cuda":
        return "cuda"
    if precision != "fp32":
        return "torch"
    return "native" if native_kernel_available() else "fallback"


def fingerprint(device: torch.device, precision: str) -> Fingerprint:
    """This process's device, software and TCN backend (and on a CPU its current PyTorch thread count)."""
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" and torch.backends.cudnn.is_available() else None
    return Fingerprint(device_name(device), torch.__version__.split("+")[0], torch.version.cuda or "none",
                       str(hardware.DTYPES[precision]).removeprefix("torch."),
                       backend=tcn_backend(device, precision),
                       threads=torch.get_num_threads() if device.type == "cpu" else 0,
                       cudnn_version=str(cudnn) if cudnn else "none")
