"""A training run's peak memory, estimated from its config before anything is allocated, and what to do about it.

    estimate = estimate_run(cfg)                  # Estimate: parameters, gradients, AdamW, activations, data
    plan = plan_memory(cfg, device, precision)    # the micro-batch that fits, or a UserError naming both figures

The peak of a step is the model's parameters, their gradients and AdamW's two moments (4 x 4
bytes a parameter; the autocast copy of the weights on a GPU), the activations the forward keeps
for the backward (`models.memory`) and the backward's own buffers (about one layer's activations
and the logits' gradient), on top of what the run holds throughout (its data set, and an
evaluation batch's forward). Where the whole batch does not fit but one example does, the batch
is split into micro-batches whose gradients are accumulated (`loop.train_step`), which computes
the same gradient; where not even one fits, the run is refused with the estimate and the limit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tcnsearch import hardware
from tcnsearch.data.lra import LISTOPS_VOCAB
from tcnsearch.data.lra import TASKS as LRA_TASKS
from tcnsearch.errors import UserError
from tcnsearch.models import ModelConfig
from tcnsearch.models.memory import activation_elements, num_parameters
from tcnsearch.train.config import TrainConfig

HEADROOM = 0.9  # plan within 90% of what is available: the estimate is not exact, and others allocate too
# What a process's first training steps add whatever the model (oneDNN and OpenMP state, the autograd engine,
# the allocator's arenas): 75-130 MB measured on the CPU over the tiny presets.
RUNTIME_BYTES = 100e6
ENWIK8_BYTES = 100_000_000


def task_model(cfg: TrainConfig) -> ModelConfig:
    """The model `train` builds for `cfg`: its head, vocabulary and classes come from the task."""
    if cfg.task == "assoc-recall":
        vocab, head, classes = cfg.vocab_size, "lm", 2
    elif cfg.task == "enwik8":
        vocab, head, classes = 256, "lm", 2
    else:
        name = cfg.task.removeprefix("lra-")
        vocab = len(LISTOPS_VOCAB) if name == "listops" else 256
        head, classes = ("retrieval" if name == "retrieval" else "classify"), LRA_TASKS[name][1]
    return cfg.model.model_copy(update={"vocab_size": vocab, "task": head, "num_classes": classes,
                                        "max_length": max(cfg.model.max_length, cfg.seq_len)})


def train_length(cfg: TrainConfig) -> int:
    """The longest training sequence: enwik8's windows are up to max(chunk_counts) chunks."""
    return max(cfg.chunk_counts) * cfg.model.chunk_size if cfg.task == "enwik8" else cfg.seq_len


def _data_bytes(cfg: TrainConfig) -> float:
    """What the task's data holds in memory: token ids (int64) and targets. An LRA release's size is known only
    once it is read (the run then holds it: counted by the loader, not here)."""
    if cfg.task == "assoc-recall":
        return (cfg.train_examples + cfg.eval_examples) * cfg.seq_len * 8 * 2 * 1.5  # and generating them
    if cfg.task == "enwik8":  # memory-mapped: pages the windows touch become resident
        path = cfg.data_path
        return os.path.getsize(path) if path and os.path.isfile(path) else ENWIK8_BYTES
    if cfg.task == "lra-listops" and cfg.data_path is None:  # generated: ids and a padding mask
        return (cfg.train_examples + cfg.eval_examples) * cfg.seq_len * 9
    return 0.0


def _eval_batch(cfg: TrainConfig) -> tuple[int, int]:
    """(examples, length) of an evaluation batch (data.tasks)."""
    if cfg.task == "assoc-recall":
        return min(256, cfg.eval_examples), cfg.seq_len
    if cfg.task == "enwik8":
        return 1, cfg.eval_chunks * cfg.model.chunk_size
    return min(64, cfg.eval_examples), cfg.seq_len


@dataclass(frozen=True)
class Estimate:
    """Bytes of one run's peak, by what holds them; `batch` is the micro-batch it was estimated at."""

    batch: int
    weights: float  # parameters, gradients, AdamW's moments (and the autocast copy)
    activations: float  # kept for the backward and the backward's buffers (or an evaluation forward's, if more)
    fixed: float  # the data set, and the runtime's own (RUNTIME_BYTES)

    @property
    def total(self) -> float:
        return self.weights + self.activations + self.fixed


def estimate_run(cfg: TrainConfig, batch: int | None = None, precision: str = "fp32") -> Estimate:
    """The peak memory of training `cfg` at `batch` examples a forward (default its batch_size), from the config
    alone; `precision` as resolved (bf16 and fp16 keep about 3 bytes an activation: autocast saves some in fp32)."""
    batch = batch or cfg.batch_size
    model = task_model(cfg)
    params = num_parameters(model)
    weights = params * (16 + (2 if precision != "fp32" else 0))
    per_element = 4 if precision == "fp32" else 3
    length, padded = train_length(cfg), cfg.task.startswith("lra-")
    kept = activation_elements(model, batch, length, padded)
    one_layer = kept / (model.n_layers + 1)  # the backward's gradient buffers: about one layer's activations
    logits = batch * length * model.vocab_size * 2 if model.task == "lm" else 0
    activations = per_element * (kept + one_layer + logits)
    # Evaluation runs without autograd (one layer's tensors live at a time), in parts of the micro-batch too.
    examples, eval_length = _eval_batch(cfg)
    evaluation = per_element * activation_elements(model.model_copy(update={"n_layers": 1}), min(examples, batch),
                                                   eval_length, padded)
    return Estimate(batch, weights, max(activations, evaluation), _data_bytes(cfg) + RUNTIME_BYTES)


@dataclass(frozen=True)
class MemoryPlan:
    """How a run fits: its estimate at the micro-batch it trains with, the limit, the accumulation steps."""

    estimate: Estimate
    limit: float | None
    micro_batch: int
    accumulation: int

    def note(self, cfg: TrainConfig) -> str | None:
        if self.accumulation == 1:
            return None
        whole = estimate_run(cfg).total
        return (f"memory: the batch of {cfg.batch_size} needs ~{hardware.format_bytes(whole)}, this machine has "
                f"{hardware.format_bytes(self.limit or 0)} available: micro-batch {self.micro_batch} x "
                f"{self.accumulation} accumulation steps (~{hardware.format_bytes(self.estimate.total)}), the same "
                "gradient")

    def to_json(self) -> dict:
        return {"estimate_bytes": int(self.estimate.total), "limit_bytes": int(self.limit) if self.limit else None,
                "micro_batch": self.micro_batch, "accumulation": self.accumulation}


def _refusal(cfg: TrainConfig, est: Estimate, limit: float) -> str:
    """One line: what the run needs at one example a forward, what there is, and the setting to lower."""
    m, length = cfg.model, train_length(cfg)
    if est.weights >= max(est.activations, est.fixed):
        what = f"the model needs ~{hardware.format_bytes(est.total)} (d_model={m.d_model}, n_layers={m.n_layers})"
        advice = "lower model.d_model (or model.n_layers, model.ffn_dim, model.h_dim)"
    elif est.fixed >= est.activations:
        what = (f"the run needs ~{hardware.format_bytes(est.total)} (its data set ~{hardware.format_bytes(est.fixed)}, "
                f"seq_len={cfg.seq_len})")
        advice = "lower seq_len or train_examples"
    else:
        what = (f"one example of length {length} needs ~{hardware.format_bytes(est.total)} (d_model={m.d_model}, "
                f"n_layers={m.n_layers}, chunk_size={m.chunk_size})")
        advice = "lower the length (seq_len, model.chunk_size), model.d_model or model.n_layers"
    return f"{what}, this machine has {hardware.format_bytes(limit)} available; {advice}"


def fit_micro_batch(cfg: TrainConfig, limit: float | None, precision: str = "fp32") -> MemoryPlan:
    """The largest micro-batch (at most `cfg.micro_batch`, else the batch) whose estimate fits in `limit`.

    Raises:
        UserError: not even one example a forward fits (the message names the estimate and the limit).
    """
    most = min(cfg.micro_batch or cfg.batch_size, cfg.batch_size)
    est = estimate_run(cfg, most, precision)
    if limit is None or est.total <= HEADROOM * limit:
        return MemoryPlan(est, limit, most, math.ceil(cfg.batch_size / most))
    low, high = 1, most  # the estimate grows with the micro-batch: bisect for the largest that fits
    while low < high:
        mid = (low + high + 1) // 2
        if estimate_run(cfg, mid, precision).total <= HEADROOM * limit:
            low = mid
        else:
            high = mid - 1
    if estimate_run(cfg, low, precision).total > HEADROOM * limit:
        raise UserError(_refusal(cfg, estimate_run(cfg, 1, precision), limit))
    steps = math.ceil(cfg.batch_size / low)
    micro = math.ceil(cfg.batch_size / steps)  # parts as even as the steps allow (train_step splits so)
    return MemoryPlan(estimate_run(cfg, micro, precision), limit, micro, steps)


def plan_memory(cfg: TrainConfig, device: torch.device, precision: str = "fp32", share: float = 1.0) -> MemoryPlan:
    """`fit_micro_batch` against what `device` has available now (`share` of it: concurrent trials split it)."""
    limit = hardware.available_memory(device)
    return fit_micro_batch(cfg, limit * share if limit is not None else None, precision)


def largest_config(make: Callable[[dict], TrainConfig], choices: dict[str, list]) -> tuple[TrainConfig, dict]:
    """The largest of the configs `make(values)` builds from `choices` (dotted key -> values), and its values:
    each key at the value that alone gives the largest estimate (it grows with each setting on its own), no
    combination enumerated. A value `make` refuses (UserError) is passed over."""
    def total(values: dict) -> float:
        try:
            return estimate_run(make(values)).total
        except UserError:
            return -1.0

    picked = {}
    for key, values in choices.items():
        sizes = [total({key: v}) for v in values]
        if sizes and max(sizes) > min(sizes):  # only what changes the memory (not lr, say)
            picked[key] = values[sizes.index(max(sizes))]
    if total(picked) < 0:
        picked = {}
    return make(picked), picked


def check_largest(make: Callable[[dict], TrainConfig], choices: dict[str, list], device: torch.device,
                  share: float = 1.0) -> MemoryPlan:
    """A study's check at its start: its largest trial fits `share` of what `device` has available, with
    accumulation if need be (each trial then plans its own micro-batch).

    Raises:
        UserError: not even one example of the largest trial fits.
    """
    cfg, picked = largest_config(make, choices)
    try:
        return plan_memory(cfg, device, share=share)
    except UserError as err:
        shown = ", ".join(f"{k}={v}" for k, v in picked.items())
        raise UserError(f"the largest trial{f' ({shown})' if shown else ''}: {err}") from None
