"""Target devices: `--gpu v100` matched against the local CUDA devices, and device fingerprints."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass

import torch

from tcnsearch.errors import UserError

# --gpu name -> the model's marketing name (as in Ray's accelerator types and CUDA device names).
GPU_MODELS = {
    "v100": "V100", "a100": "A100", "h100": "H100", "h200": "H200", "b200": "B200", "l4": "L4",
    "l40s": "L40S", "t4": "T4", "a10g": "A10G", "p100": "P100",
}
CHOICES = ("auto", "cpu", *GPU_MODELS)


@dataclass(frozen=True)
class Fingerprint:
    """What a latency depends on besides the shape: the device, the software, the TCN's backend.

    `backend` is how the TCN runs there: "native" (the C kernel), "fallback" (the PyTorch path
    because the kernel could not be built: much slower, and never to be served to a native run),
    "torch" (the reference path by design: another dtype), or "cuda".
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


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
            else:
                name = platform.processor() or platform.machine()
    except OSError:
        name = platform.processor() or platform.machine()
    return f"cpu: {name} ({torch.get_num_threads()} threads)"


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
    return cpu_name()


def tcn_backend(device: torch.device, dtype: str) -> str:
    """How the TCN runs on `device` in `dtype` (see Fingerprint.backend)."""
    if device.type == "cuda":
        return "cuda"
    if dtype != "float32":
        return "torch"
    from tcnsearch.ops import _dconv

    return "native" if _dconv.available() else "fallback"


def fingerprint(device: torch.device, dtype: str) -> Fingerprint:
    """This process's device, software and TCN backend, at its current PyTorch thread count."""
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" and torch.backends.cudnn.is_available() else None
    return Fingerprint(device_name(device), torch.__version__.split("+")[0], torch.version.cuda or "none", dtype,
                       backend=tcn_backend(device, dtype), threads=torch.get_num_threads(),
                       cudnn_version=str(cudnn) if cudnn else "none")


def local_cuda_names() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def matches(model: str, name: str) -> bool:
    """Whether a CUDA device name ("Tesla V100-SXM2-16GB") is of a model ("V100"); L4 is not L40S."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(model)}(?![A-Za-z0-9])", name, re.IGNORECASE) is not None


def check_gpu_name(gpu: str) -> str:
    gpu = gpu.lower()
    if gpu not in CHOICES:
        raise UserError(f"unknown GPU {gpu!r}; choose one of {', '.join(CHOICES)}")
    return gpu


def resolve_local(gpu: str) -> torch.device | None:
    """The local device for `--gpu`, or None when this machine has no GPU of that model."""
    gpu = check_gpu_name(gpu)
    if gpu == "cpu":
        return torch.device("cpu")
    if gpu == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    for i, name in enumerate(local_cuda_names()):
        if matches(GPU_MODELS[gpu], name):
            return torch.device("cuda", i)
    return None


def found_devices() -> str:
    names = local_cuda_names()
    return ", ".join(names + [cpu_name()])
