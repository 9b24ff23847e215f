import pytest
import torch

from tcnsearch.errors import UserError
from tcnsearch.profile.devices import check_gpu_name, fingerprint, matches, resolve_local


@pytest.mark.parametrize("model,name,expected", [
    ("V100", "Tesla V100-SXM2-16GB", True), ("A100", "NVIDIA A100-SXM4-80GB", True),
    ("H100", "NVIDIA H100 80GB HBM3", True), ("L4", "NVIDIA L4", True), ("L4", "NVIDIA L40S", False),
    ("T4", "Tesla T4", True), ("H100", "NVIDIA H200", False), ("A10G", "NVIDIA A10G", True),
])
def test_device_name_matching(model, name, expected):
    assert matches(model, name) is expected


def test_unknown_gpu():
    with pytest.raises(UserError, match="unknown GPU 'x900'"):
        check_gpu_name("x900")


def test_cpu_and_auto_resolve_here():
    assert resolve_local("cpu") == torch.device("cpu")
    assert resolve_local("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert resolve_local("v100") is None


def test_fingerprint_names_device_software_dtype():
    fp = fingerprint(torch.device("cpu"), "float32")
    assert fp.device_name.startswith("cpu: ") and f"{torch.get_num_threads()} threads" in fp.device_name
    assert fp.torch_version == torch.__version__.split("+")[0]
    assert fp.dtype == "float32"
