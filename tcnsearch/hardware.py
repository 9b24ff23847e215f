"""The devices tcnsearch runs on, and the decisions that depend on them, as plain functions.

    resolve_local("v100")                 # the local CUDA device of that model, or None
    check_cuda_build(device)              # refuses a PyTorch build with no kernels for the GPU
    resolve_precision("auto", device)     # "bf16" on an A100/H100, "fp16" on a V100/T4, "fp32" on a CPU
    device_for_allocation("auto", ["0"], 1)   # what a Ray trial trains on: exactly what Ray gave it
    is_out_of_memory(err)                 # a result of its own, never "slower"
    available_memory(device)              # what a run may still allocate: MemAvailable, or free GPU memory

Every decision that a GPU run depends on is a pure function of what torch and Ray report
(architecture lists, compute capabilities, free memory, GPU ids), so that it is tested on a
machine without a GPU; the thin wrappers that ask torch are the only lines that need one.
"""

from __future__ import annotations

import contextlib
import re
from typing import Literal

import torch

from tcnsearch.choices import GPU_MODELS, GPUS, PRECISIONS
from tcnsearch.errors import UserError

# Ray's accelerator_type names that are a variant of a --gpu model ("Tesla V100S" advertises V100S).
VARIANTS = {"V100": ("V100", "V100S")}

Precision = Literal[PRECISIONS]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# -- which device ---------------------------------------------------------------------------------


def check_gpu_name(gpu: str) -> str:
    gpu = gpu.lower()
    if gpu not in GPUS:
        raise UserError(f"unknown GPU {gpu!r}; choose one of {', '.join(GPUS)}")
    return gpu


def matches(model: str, name: str) -> bool:
    """Whether a CUDA device name ("Tesla V100S-PCIE-32GB") is of a model ("V100"); L4 is not L40S."""
    return any(re.search(rf"(?<![A-Za-z0-9]){re.escape(v)}(?![A-Za-z0-9])", name, re.IGNORECASE)
               for v in VARIANTS.get(model, (model,)))


def accelerator_types(gpu: str) -> tuple[str, ...]:
    """Ray's `accelerator_type:X` resource names for a --gpu model (its variants too)."""
    model = GPU_MODELS[check_gpu_name(gpu)]
    return VARIANTS.get(model, (model,))


def local_cuda_names() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


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


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        name = None
    import platform

    return f"cpu: {name or platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def found_devices() -> str:
    return ", ".join(local_cuda_names() + [cpu_name()])


def device_for_allocation(requested: str, gpu_ids: list, cuda_devices: int) -> str:
    """The device a Ray trial trains on: exactly what Ray allocated to it.

    Ray makes the GPUs it gave a trial visible as cuda:0, cuda:1, ... (CUDA_VISIBLE_DEVICES), and
    none when it gave none; a trial never trains on a GPU that Ray did not count.

    Args:
        requested: the run's `device` setting (auto, cpu, cuda, cuda:N).
        gpu_ids: ray.get_gpu_ids() in the trial.
        cuda_devices: torch.cuda.device_count() in the trial (0 when torch cannot use CUDA).

    Raises:
        ValueError: Ray gave a GPU that torch cannot use, or the run asks for a GPU Ray did not give it.
    """
    if gpu_ids:
        if cuda_devices == 0:
            raise ValueError(f"Ray gave this trial GPU {', '.join(map(str, gpu_ids))} but PyTorch cannot use it "
                             f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}: a CPU build, or a "
                             "driver too old for it); install a CUDA build of torch on the workers")
        if requested == "cpu":
            return "cpu"
        index = int(requested.partition(":")[2] or 0) if requested.startswith("cuda") else 0
        if index >= cuda_devices:
            raise ValueError(f"device {requested!r}: Ray gave this trial {cuda_devices} GPU(s), visible as "
                             f"cuda:0..cuda:{cuda_devices - 1}")
        return f"cuda:{index}"
    if requested.startswith("cuda"):
        raise ValueError(f"device {requested!r}, but Ray gave this trial no GPU; set budget.gpus_per_trial in the "
                         "study file (0.5 shares a GPU between two trials)")
    return "cpu"


# -- is this PyTorch able to run on it ------------------------------------------------------------


def arch_supports(arch_list: list[str], capability: tuple[int, int]) -> bool:
    """Whether kernels built for `arch_list` (torch.cuda.get_arch_list()) run on a GPU of `capability`.

    A cubin for sm_XY runs on devices of the same major version and a minor of Y or more; PTX for
    compute_XY is compiled by the driver for any device of capability XY or more.
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        if not number.isdigit():
            continue
        arch_major, arch_minor = int(number[:-1]), int(number[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


def check_cuda_build(device: torch.device) -> None:
    """Refuse, before anything is timed or trained, a PyTorch build without kernels for this GPU.

    Raises:
        UserError: "this PyTorch has no kernels for sm_70 (Tesla V100 ...)", naming the build to install.
    """
    if device.type != "cuda":
        return
    capability = torch.cuda.get_device_capability(device)
    arch_list = torch.cuda.get_arch_list()
    if arch_list and not arch_supports(arch_list, capability):
        sm = f"sm_{capability[0]}{capability[1]}"
        raise UserError(f"this PyTorch (torch {torch.__version__}, CUDA {torch.version.cuda}) has no kernels for "
                        f"{sm} ({torch.cuda.get_device_name(device)}): it is built for {', '.join(arch_list)}; "
                        f"{build_advice(capability)}")


def build_advice(capability: tuple[int, int]) -> str:
    """Which PyTorch CUDA build serves a GPU of `capability` (the README's table)."""
    if capability < (7, 5):
        return ("install a CUDA 12.6 build (pip install torch --index-url https://download.pytorch.org/whl/cu126; "
                "the image: docker compose build --build-arg TORCH_CUDA=cu126), the newest with Volta/Pascal kernels")
    return ("install a CUDA 12.8 build (pip install torch --index-url https://download.pytorch.org/whl/cu128; the "
            "image: --build-arg TORCH_CUDA=cu128)")


def cuda_driver_problem(cuda_available: bool, driver_text: str | None, torch_cuda: str | None) -> str | None:
    """Why CUDA is unusable on a machine with an NVIDIA driver (None: no problem, or no NVIDIA GPU here).

    Args:
        cuda_available: torch.cuda.is_available().
        driver_text: /proc/driver/nvidia/version, if it exists.
        torch_cuda: torch.version.cuda (None: a CPU build).
    """
    if cuda_available or not driver_text:
        return None
    driver = re.search(r"Kernel Module\s+(\d+(?:\.\d+)*)", driver_text)
    shown = f"driver {driver.group(1)}" if driver else "an NVIDIA driver"
    if torch_cuda is None:
        return f"this machine has {shown} but this PyTorch is a CPU build; install a CUDA build of torch"
    return (f"this machine has {shown} but PyTorch (CUDA {torch_cuda}) cannot use it: the driver is probably older "
            f"than CUDA {torch_cuda} needs; update the driver, or install an older CUDA build of torch")


def check_cuda_usable(gpu: str) -> None:
    """With `--gpu` naming a GPU (or auto), refuse a driver that leaves CUDA unusable instead of quietly
    running on the CPU."""
    if gpu == "cpu":
        return
    try:
        with open("/proc/driver/nvidia/version") as fh:
            driver_text = fh.read()
    except OSError:
        return
    problem = cuda_driver_problem(torch.cuda.is_available(), driver_text, torch.version.cuda)
    if problem:
        raise UserError(f"{problem} (or pass --gpu cpu to run on the CPU)")


# -- precision --------------------------------------------------------------------------------------


def resolve_precision(requested: str, device_type: str, capability: tuple[int, int] | None = None) -> str:
    """The precision a run trains and a profile times in.

    auto: fp32 on a CPU; bf16 where the GPU has native bf16 (compute capability 8.0 and up: A100,
    H100, L4, ...); fp16 with a gradient scaler on Volta and Turing (V100, T4: their tensor cores
    are fp16, and bf16 there is emulated, slower than fp32); fp32 before that.

    Raises:
        UserError: bf16 on a GPU without native bf16, or fp16 on one without fp16 tensor cores.
    """
    if requested not in PRECISIONS:
        raise UserError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if device_type != "cuda":
        return "fp32" if requested == "auto" else requested
    capability = capability or (0, 0)
    if requested == "auto":
        return "bf16" if capability >= (8, 0) else "fp16" if capability >= (7, 0) else "fp32"
    if requested == "bf16" and capability < (8, 0):
        raise UserError(f"precision bf16 on a GPU of compute capability {capability[0]}.{capability[1]}: its bf16 "
                        "is emulated (slower than fp32, no tensor cores); use fp16 or auto")
    return requested


def device_precision(requested: str, device: torch.device) -> str:
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return resolve_precision(requested, device.type, capability)


def autocast(device: torch.device, precision: str):
    """The autocast context a forward runs under: none in fp32; parameters stay fp32 in every precision."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16's gradient scaler (small gradients underflow fp16 otherwise); a no-op in other precisions."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")


# -- memory -----------------------------------------------------------------------------------------

_OOM_TEXT = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
             "can't allocate memory", "Cannot allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` means the device ran out of memory (CUDA's allocator, cuBLAS, cuDNN, or the CPU's)."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _OOM_TEXT)


def pool_size(free_bytes: int | None, per_workload_bytes: int | None, most: int, reserve: float = 0.25) -> int:
    """How many workloads to keep resident at once: at most `most`, and on a GPU as many as fit in the
    free memory less a reserve (the baseline and the workload being built need room too); at least 1."""
    if not free_bytes or not per_workload_bytes:
        return most
    return max(1, min(most, int(free_bytes * (1 - reserve) // per_workload_bytes)))


def free_memory(device: torch.device) -> int | None:
    """Bytes free on a CUDA device (None on the CPU)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free


def parse_meminfo(text: str) -> int | None:
    """MemAvailable of /proc/meminfo, in bytes: what can be allocated without swapping (None if absent)."""
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def cgroup_room(limit_text: str | None, usage_text: str | None) -> int | None:
    """What a cgroup v2 memory limit (memory.max, memory.current) leaves; None where there is no limit."""
    if not limit_text or not usage_text or limit_text.strip() == "max":
        return None
    try:
        return max(0, int(limit_text) - int(usage_text))
    except ValueError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def available_memory(device: torch.device) -> int | None:
    """Bytes a run may still allocate on `device`: free GPU memory on a GPU; on the CPU MemAvailable (or a
    container's cgroup limit, where that leaves less). None where it cannot be read."""
    if device.type == "cuda":
        return free_memory(device)
    meminfo = _read("/proc/meminfo")
    room = [v for v in (parse_meminfo(meminfo) if meminfo else None,
                        cgroup_room(_read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")))
            if v is not None]
    return min(room) if room else None


def format_bytes(n: float) -> str:
    """1.5e9 -> '1.5 GB' (decimal units, as the refusals and the README state them)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e3:.3g} kB"


def local_target(gpu: str, ray_address: str | None) -> torch.device | None:
    """The local device that `--gpu` names, None where it is to be found on the Ray cluster.

    Raises:
        UserError: an unknown GPU; one this machine lacks with no cluster to look on; a driver that leaves
            CUDA unusable; a PyTorch without kernels for the GPU.
    """
    gpu = check_gpu_name(gpu)
    check_cuda_usable(gpu)
    device = resolve_local(gpu)
    if device is None and not ray_address:
        model = GPU_MODELS[gpu]
        raise UserError(f"no {model} on this machine (found: {found_devices()}); "
                        f"use --gpu cpu or --gpu auto to profile this machine, or --ray-address to run "
                        f"on a Ray cluster node with a {model}")
    if device is not None:
        check_cuda_build(device)
    return device
