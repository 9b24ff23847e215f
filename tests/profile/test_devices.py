import torch

from tcnsearch.profile import fingerprint


def test_fingerprint_names_device_software_precision_and_cpu_threads():
    fp = fingerprint(torch.device("cpu"), "fp32")
    assert fp.device_name.startswith("cpu: ") and f"{torch.get_num_threads()} threads" in fp.device_name
    assert fp.torch_version == torch.__version__.split("+")[0]
    assert fp.dtype == "float32"  # torch's name: fp32 profiles stored by earlier versions stay comparable
    assert fp.threads == torch.get_num_threads() and fp.backend in ("native", "fallback")


def test_a_lower_precision_runs_the_tcn_on_its_reference_path():
    assert fingerprint(torch.device("cpu"), "bf16").dtype == "bfloat16"
    assert fingerprint(torch.device("cpu"), "bf16").backend == "torch"
