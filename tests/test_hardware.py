"""The decisions a GPU run depends on, as pure functions of what torch and Ray report: tested without a GPU."""

import pytest
import torch

from tcnsearch import hardware
from tcnsearch.errors import UserError


@pytest.mark.parametrize("model,name,expected", [
    ("V100", "Tesla V100-SXM2-16GB", True), ("V100", "Tesla V100S-PCIE-32GB", True),
    ("A100", "NVIDIA A100-SXM4-80GB", True), ("H100", "NVIDIA H100 80GB HBM3", True), ("L4", "NVIDIA L4", True),
    ("L4", "NVIDIA L40S", False), ("T4", "Tesla T4", True), ("H100", "NVIDIA H200", False),
    ("A10G", "NVIDIA A10G", True),
])
def test_device_name_matching(model, name, expected):
    assert hardware.matches(model, name) is expected


def test_ray_names_the_v100s_as_a_v100_variant():
    assert hardware.accelerator_types("v100") == ("V100", "V100S")
    assert hardware.accelerator_types("a100") == ("A100",)


def test_unknown_gpu():
    with pytest.raises(UserError, match="unknown GPU 'x900'"):
        hardware.check_gpu_name("x900")


def test_cpu_and_auto_resolve_here():
    assert hardware.resolve_local("cpu") == torch.device("cpu")
    assert hardware.resolve_local("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert hardware.resolve_local("v100") is None


# PyTorch 2.13's default (CUDA 13) wheel is built for these; CUDA 12.6 wheels went down to sm_50.
CU13 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "compute_90"]


@pytest.mark.parametrize("arch,capability,ok", [
    (CU13, (7, 0), False),   # V100 on the default wheel: "no kernel image is available"
    (CU13, (7, 5), True),    # T4
    (CU13, (8, 9), True),    # L4 runs sm_86 cubins (same major, higher minor)
    (CU13, (9, 0), True),
    (CU126, (7, 0), True),
    (CU126, (10, 0), True),  # B200 through the compute_90 PTX, compiled by the driver
    (["sm_80", "sm_90"], (7, 5), False),
    (["sm_86"], (8, 0), False),  # a cubin never runs on a lower minor
])
def test_kernels_run_on_a_gpu_of_their_major_from_their_minor_on_or_through_ptx(arch, capability, ok):
    assert hardware.arch_supports(arch, capability) is ok


def test_the_advice_names_a_build_with_volta_kernels_for_a_v100():
    assert "cu126" in hardware.build_advice((7, 0)) and "cu128" in hardware.build_advice((9, 0))


def test_a_driver_older_than_the_build_is_named_not_silently_the_cpu():
    text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.82.01  Tue Oct 26 2021"
    problem = hardware.cuda_driver_problem(False, text, "13.0")
    assert "470.82.01" in problem and "CUDA 13.0" in problem
    assert "CPU build" in hardware.cuda_driver_problem(False, text, None)
    assert hardware.cuda_driver_problem(True, text, "13.0") is None  # CUDA works
    assert hardware.cuda_driver_problem(False, None, "13.0") is None  # no NVIDIA GPU here


@pytest.mark.parametrize("requested,device,capability,expected", [
    ("auto", "cpu", None, "fp32"), ("bf16", "cpu", None, "bf16"),
    ("auto", "cuda", (7, 0), "fp16"), ("auto", "cuda", (7, 5), "fp16"), ("auto", "cuda", (8, 0), "bf16"),
    ("auto", "cuda", (9, 0), "bf16"), ("auto", "cuda", (6, 0), "fp32"), ("fp32", "cuda", (9, 0), "fp32"),
    ("fp16", "cuda", (8, 0), "fp16"),
])
def test_precision_by_the_devices_real_capability(requested, device, capability, expected):
    assert hardware.resolve_precision(requested, device, capability) == expected


def test_bf16_on_a_gpu_that_emulates_it_is_refused():
    with pytest.raises(UserError, match="emulated"):
        hardware.resolve_precision("bf16", "cuda", (7, 0))


def test_autocast_and_the_scaler_follow_the_precision():
    cpu = torch.device("cpu")
    with hardware.autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with hardware.autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    assert not hardware.grad_scaler(cpu, "fp16").is_enabled()  # the scaler is CUDA's fp16 remedy


@pytest.mark.parametrize("requested,gpu_ids,cuda,expected", [
    ("auto", [], 0, "cpu"),
    ("auto", [], 1, "cpu"),        # gpus_per_trial 0 on a GPU host: not on a GPU Ray did not count
    ("auto", ["3"], 1, "cuda:0"),  # Ray's GPU 3, visible to the trial as its cuda:0
    ("cuda", ["0", "1"], 2, "cuda:0"),
    ("cuda:1", ["0", "1"], 2, "cuda:1"),
    ("cpu", ["0"], 1, "cpu"),
])
def test_a_trial_trains_exactly_on_what_ray_gave_it(requested, gpu_ids, cuda, expected):
    assert hardware.device_for_allocation(requested, gpu_ids, cuda) == expected


def test_a_gpu_ray_gave_but_torch_cannot_use_is_refused_in_one_line():
    with pytest.raises(ValueError, match="Ray gave this trial GPU 0 but PyTorch cannot use it") as err:
        hardware.device_for_allocation("auto", ["0"], 0)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="Ray gave this trial no GPU"):
        hardware.device_for_allocation("cuda", [], 1)
    with pytest.raises(ValueError, match="cuda:0..cuda:0"):
        hardware.device_for_allocation("cuda:1", ["2"], 1)


@pytest.mark.parametrize("err,oom", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.90 GiB"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
    (MemoryError(), True),
    (RuntimeError("CUDA error: no kernel image is available for execution on the device"), False),
    (ValueError("the native TCN kernel takes float32 CPU tensors"), False),
])
def test_which_errors_are_out_of_memory(err, oom):
    assert hardware.is_out_of_memory(err) is oom


def test_the_pool_is_sized_by_free_memory():
    gib = 1 << 30
    assert hardware.pool_size(None, None, 16) == 16  # a CPU: the fixed pool
    assert hardware.pool_size(30 * gib, gib, 16) == 16
    assert hardware.pool_size(16 * gib, 2 * gib, 16) == 6  # 75% of 16 GiB holds six 2 GiB workloads
    assert hardware.pool_size(gib, 7 * gib, 16) == 1  # at least one: its own failure says oom
