"""A run's memory, estimated before anything is allocated: the plan, the accumulated gradient, the measured peaks."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tcnsearch import hardware
from tcnsearch.data import IGNORE
from tcnsearch.errors import UserError
from tcnsearch.models import ModelConfig, build_model
from tcnsearch.train import PRESETS, estimate_run, evaluate, fit_micro_batch, make_config, make_optimizer, train_step
from tcnsearch.train.budget import HEADROOM, check_largest, largest_config


def test_meminfo_and_cgroup_readings():
    text = "MemTotal:       24683792 kB\nMemFree:        21047948 kB\nMemAvailable:   22897312 kB\n"
    assert hardware.parse_meminfo(text) == 22897312 * 1024
    assert hardware.parse_meminfo("MemTotal: 1 kB\n") is None
    assert hardware.cgroup_room("max\n", "123\n") is None
    assert hardware.cgroup_room("1000\n", "400\n") == 600
    assert hardware.available_memory(torch.device("cpu")) > 0
    assert hardware.format_bytes(480e9) == "480 GB" and hardware.format_bytes(21.3e9) == "21.3 GB"


def test_a_run_that_fits_keeps_its_batch_whole():
    cfg = make_config("assoc-recall", "tiny")
    plan = fit_micro_batch(cfg, 64e9)
    assert (plan.micro_batch, plan.accumulation) == (cfg.batch_size, 1) and plan.note(cfg) is None
    assert fit_micro_batch(cfg, None).accumulation == 1  # no reading of the memory: nothing is changed


def test_the_largest_micro_batch_that_fits_is_chosen():
    cfg = make_config("enwik8", "cpu", {"batch_size": 32})
    whole = estimate_run(cfg).total
    limit = 0.4 * whole / HEADROOM
    plan = fit_micro_batch(cfg, limit)
    assert plan.accumulation > 1 and plan.micro_batch * plan.accumulation >= 32
    assert plan.estimate.total <= HEADROOM * limit
    # one more example a part, with the parts as even as they go, would not fit
    more = -(-32 // (plan.accumulation - 1))
    assert estimate_run(cfg, more).total > HEADROOM * limit
    note = plan.note(cfg)
    assert f"micro-batch {plan.micro_batch} x {plan.accumulation} accumulation steps" in note


def test_a_run_that_cannot_fit_one_example_is_refused_naming_the_estimate_and_the_limit():
    cfg = make_config("assoc-recall", "tiny", {"model": {"d_model": 200000}})
    with pytest.raises(UserError) as err:
        fit_micro_batch(cfg, 21.3e9)
    message = str(err.value)
    assert message.startswith("the model needs ~") and "(d_model=200000" in message
    assert "this machine has 21.3 GB available; lower model.d_model" in message and "\n" not in message
    long = make_config("enwik8", "tiny", {"model": {"chunk_size": 1 << 20}})
    with pytest.raises(UserError, match=r"one example of length 4194304 needs ~.* lower the length"):
        fit_micro_batch(long, 21.3e9)


def test_the_estimate_grows_with_what_the_run_holds():
    cfg = make_config("enwik8", "cpu")
    base = estimate_run(cfg)
    assert estimate_run(cfg, 4).activations < base.activations and estimate_run(cfg, 4).weights == base.weights
    wider = estimate_run(make_config("enwik8", "cpu", {"model": {"d_model": 256}}))
    assert wider.weights > 2 * base.weights and wider.activations > base.activations
    assert estimate_run(cfg, precision="bf16").activations < base.activations


def test_a_study_is_checked_at_its_largest_trial():
    def make(values):
        return make_config("assoc-recall", "tiny", {"model": {"d_model": values.get("model.d_model", 64)},
                                                    "batch_size": values.get("batch_size", 64)})

    choices = {"model.d_model": [32, 200000, 64], "batch_size": [8, 64]}
    cfg, picked = largest_config(make, choices)
    assert picked == {"model.d_model": 200000, "batch_size": 64} and cfg.model.d_model == 200000
    with pytest.raises(UserError, match=r"^the largest trial \(model.d_model=200000, batch_size=64\): the model"):
        check_largest(make, choices, torch.device("cpu"))
    assert check_largest(make, {"model.d_model": [32, 64]}, torch.device("cpu")).accumulation == 1


def _batch(seed=0):
    """An LM batch whose examples score different numbers of targets (the weighting must count them)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 16, (6, 24), generator=g)
    y = torch.randint(0, 16, (6, 24), generator=g)
    y[torch.rand(6, 24, generator=g) < torch.linspace(0.1, 0.9, 6)[:, None]] = IGNORE
    return {"tokens": tokens}, y


def _grads_after_step(micro_batch, inputs, y):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tcnca", d_model=16, z_dim=8, h_dim=16, ffn_dim=32, vocab_size=16,
                                    chunk_size=8, n_layers=2, tcn={"kernel_size": 3, "depth": 2}))
    optimizer = make_optimizer(model, lr=0.0, weight_decay=0.0)  # the step leaves the weights, keeps the grads
    loss = train_step(model, optimizer, inputs, y, device=torch.device("cpu"), precision="fp32",
                      micro_batch=micro_batch)
    return model, loss, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("micro_batch", [1, 2, 4])
def test_the_accumulated_gradient_is_the_whole_batchs(micro_batch):
    inputs, y = _batch()
    model, loss, grads = _grads_after_step(micro_batch, inputs, y)
    # The reference: autograd on the whole batch's mean loss over its scored targets.
    logits = model(**inputs)
    full = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    reference = torch.autograd.grad(full, list(model.parameters()))
    torch.testing.assert_close(loss, full.detach(), rtol=1e-5, atol=1e-6)
    for (name, grad), ref in zip(grads.items(), reference, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6, msg=name)


def test_evaluation_in_parts_gives_the_same_metrics():
    inputs, y = _batch(1)
    model, _, _ = _grads_after_step(None, inputs, y)
    whole = evaluate(model, [(inputs, y)])
    parts = evaluate(model, [(inputs, y)], micro_batch=4)
    assert parts == pytest.approx(whole, rel=1e-5)


_MEASURE = """
import json, re, sys
import torch
from tcnsearch.train import make_config, plan_memory, train

def rss():
    text = open("/proc/self/status").read()
    return [int(re.search(key + r":\\s+(\\d+)", text).group(1)) * 1024 for key in ("VmHWM", "VmRSS")]

torch.set_num_threads(1)
cfg = make_config(*json.loads(sys.argv[1]))
plan = plan_memory(cfg, torch.device("cpu"))
open("/proc/self/clear_refs", "w").write("5")  # the peak from here on
before = rss()[1]
train(cfg, progress=False)
print(json.dumps({"estimate": plan.estimate.total, "measured": rss()[0] - before}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("task,preset,overrides", [
    ("assoc-recall", "tiny", {"steps": 2, "eval_every": 2}),
    ("assoc-recall", "tiny", {"steps": 2, "eval_every": 2, "batch_size": 128, "seq_len": 128,
                              "model": {"chunk_size": 128}, "train_examples": 2000}),
    ("lra-listops", "tiny", {"steps": 2, "eval_every": 2}),
])
def test_the_estimate_is_within_a_factor_of_two_of_the_measured_peak(task, preset, overrides):
    """Each run in a fresh process; the peak resident set's rise over the run (VmHWM) against the estimate."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps([task, preset, overrides])], check=True,
                         capture_output=True, text=True, timeout=600).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    assert 0.5 <= doc["measured"] / doc["estimate"] <= 2, doc


def test_no_shipped_preset_is_left_to_the_kernel_on_a_24_gb_machine():
    """Every preset either fits 21 GB (accumulating where its batch does not) or is refused in one line."""
    for task, presets in PRESETS.items():
        for name in presets:
            cfg = make_config(task, name)
            try:
                plan = fit_micro_batch(cfg, 21e9)
            except UserError as err:
                assert "this machine has 21 GB available" in str(err)
                continue
            assert plan.estimate.total <= HEADROOM * 21e9
