"""One training run: what `tcnsearch train` runs and what each study trial will call.

    cfg = make_config("assoc-recall", preset="tiny", overrides={"steps": 300})
    result = train(cfg)          # TrainResult: status, final metrics, history

AdamW (decay on weight matrices only) with linear warm-up then linear decay (MEGA's schedule),
gradient clipping, bfloat16 autocast on a GPU, evaluation every `eval_every` steps reporting the
loss and the accuracy at the scored positions, a callback that sees every evaluation and may stop
the run (a scheduler pruning it), checkpoints that a later run resumes from, and a progress bar.
A non-finite loss ends the run with status "diverged" instead of training on garbage.
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tcnsearch.data import IGNORE, associative_recall, enwik8, lra
from tcnsearch.errors import UserError, validation_message
from tcnsearch.models import ModelConfig, build_model
from tcnsearch.ops import receptive_field


class TrainConfig(BaseModel):
    """One run: the task and its data, the model, the optimisation."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    task: Literal["assoc-recall", "enwik8", "lra-listops", "lra-text", "lra-retrieval", "lra-image",
                  "lra-pathfinder", "lra-pathx"] = "assoc-recall"
    model: ModelConfig = Field(default_factory=ModelConfig)
    # associative recall; LRA: seq_len is the padded length, eval_examples caps the validation split
    seq_len: int = Field(default=64, ge=3)
    vocab_size: int = Field(default=20, ge=4)
    train_examples: int = Field(default=20000, ge=1, description="assoc-recall, and generated ListOps")
    eval_examples: int = Field(default=1000, ge=1)
    # LRA: data_path is the unpacked lra_release folder; ListOps without one is generated offline
    listops_lengths: tuple[int, int] = Field(default=(500, 2000), description="generated ListOps: token counts")
    # enwik8: windows of 2-4 consecutive model.chunk_size chunks; evaluation on eval_chunks chunks
    data_path: str | None = Field(default=None, description="enwik8.zip or enwik8 (default: the cache), or the "
                                                         "lra_release folder")
    chunk_counts: list[int] = Field(default=[2, 3, 4], min_length=1)
    eval_chunks: int = Field(default=3, ge=1)
    max_eval_windows: int | None = Field(default=20, ge=1, description="None: the whole validation split")
    # optimisation (MEGA: Adam(0.9, 0.98), linear decay after warm-up)
    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = Field(default=100, ge=0)
    grad_clip: float = Field(default=1.0, ge=0, description="0 disables clipping")
    eval_every: int = Field(default=100, ge=1)
    seed: int = 0
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, ...")

    @field_validator("device")
    @classmethod
    def _known_device(cls, name: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", name):
            raise ValueError(f"{name[:40]!r} is not a device: use auto, cpu, cuda or cuda:N")
        return name


def merge_overrides(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in, section by section (neither is changed)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# TCNCA-simple at the paper's length 64 / vocabulary 20, the base of the assoc-recall presets.
_ASSOC_BASE = {"model": {"arch": "tcnca_simple", "d_model": 32, "n_layers": 2, "chunk_size": 64, "ffn_dim": 64,
                         "tcn": {"kernel_size": 3, "dilation_factor": 2, "depth": 4}},
               "train_examples": 5000, "eval_examples": 500, "steps": 300, "batch_size": 64, "lr": 1e-2,
               "warmup_steps": 30, "eval_every": 50}
# tiny: length 16, vocabulary 10 (5 keys, 5 values: chance 20%, the list's most frequent value 40%),
# width 64, one chunk over the whole sequence, 20k examples, lr 3e-3 (1e-2 stalls at that 40% on some
# seeds): >= 90% by step 100-200 on each of 14 seeds, 100% at 300, in about 10 s of one CPU core.
_ASSOC_TINY = merge_overrides(_ASSOC_BASE, {"seq_len": 16, "vocab_size": 10,
                                            "model": {"d_model": 64, "ffn_dim": 128, "chunk_size": 16},
                                            "train_examples": 20000, "lr": 3e-3})
# MEGA's enwik8 recipe (examples/mega/README.lm.md, arch mega_lm_enwik8_base in fairseq/models/mega_lm.py):
# --truncation-length 8192 (binds only past 8192 bytes, beyond every training window here; the EMA
# baseline only, the TCN ignores it), --no-affine-final-norm, attention, hidden and activation dropout 0.
_MEGA_ENWIK8 = {"ema_truncation": 8192, "final_norm_affine": False, "attention_dropout": 0.0, "hidden_dropout": 0.0,
                "activation_dropout": 0.0}
_ENWIK8_TINY = {"model": {"arch": "tcnca", "d_model": 32, "z_dim": 16, "h_dim": 64, "ffn_dim": 64, "n_layers": 2,
                          "chunk_size": 64, "rel_pos": "rotary", "ema_dim": 16, **_MEGA_ENWIK8,
                          "tcn": {"kernel_size": 3, "dilation_factor": 4, "depth": 3}},
                "steps": 200, "batch_size": 8, "lr": 5e-3, "weight_decay": 0.2, "warmup_steps": 20, "eval_every": 50,
                "max_eval_windows": 8}
def _paper_tcn(length: int) -> dict:
    """The paper's LRA TCN (supplementary H): K 17, D 4, f raised until the receptive field covers `length`."""
    f = 2
    while receptive_field(17, f, 4) < length:
        f += 1
    return {"kernel_size": 17, "dilation_factor": f, "depth": 4}


def _lra(length, layers, d, z, norm, prenorm, attention, batch, lr, dropout, weight_decay, steps, warmup) -> dict:
    """MEGA's LRA settings (MEGA, Table 8: full attention, N 16, H = FFN = 2d; epochs turned into steps)."""
    return {"seq_len": length, "model": {
        "arch": "tcnca", "d_model": d, "z_dim": z, "h_dim": 2 * d, "ffn_dim": 2 * d, "n_layers": layers,
        "chunk_size": length, "norm": norm, "prenorm": prenorm, "attention": attention, "rel_pos": "simple",
        "ema_dim": 16, "dropout": dropout, "max_length": length, "tcn": _paper_tcn(length)},
        "batch_size": batch, "lr": lr, "weight_decay": weight_decay, "steps": steps, "warmup_steps": warmup,
        "eval_every": max(1, steps // 50), "eval_examples": 100_000}


_LRA_PAPER = {
    "lra-listops": _lra(2048, 6, 80, 64, "layernorm", False, "softmax", 64, 1e-3, 0.1, 0.01, 90_000, 3_000),
    "lra-text": _lra(4096, 4, 128, 64, "scalenorm", False, "softmax", 50, 4e-3, 0.1, 0.01, 25_000, 10_000),
    "lra-retrieval": _lra(4000, 6, 128, 64, "scalenorm", False, "softmax", 64, 3e-3, 0.1, 0.04, 91_960, 5_000),
    "lra-image": _lra(1024, 8, 160, 96, "batchnorm", True, "laplace", 50, 1e-2, 0.0, 0.02, 180_000, 9_000),
    "lra-pathfinder": _lra(1024, 6, 128, 64, "batchnorm", True, "laplace", 128, 1e-2, 0.0, 0.01, 250_000, 5_000),
    "lra-pathx": _lra(16384, 4, 64, 32, "batchnorm", True, "laplace", 128, 1e-2, 0.0, 0.01, 125_000, 10_000),
}
# tiny: seconds on a laptop CPU (generated ListOps needs no download); cpu: a run that learns on a CPU.
_LRA_TINY = {"seq_len": 256, "model": {"arch": "tcnca", "d_model": 32, "z_dim": 16, "h_dim": 64, "ffn_dim": 64,
                                       "n_layers": 2, "chunk_size": 128, "tcn": {"kernel_size": 3,
                                                                                 "dilation_factor": 4, "depth": 4}},
             "listops_lengths": (20, 256), "train_examples": 2000, "eval_examples": 200, "steps": 200,
             "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 20, "eval_every": 50}
_LRA_CPU = merge_overrides(_LRA_TINY, {
    "seq_len": 1024, "model": {"d_model": 64, "z_dim": 32, "h_dim": 128, "ffn_dim": 128, "n_layers": 4,
                               "chunk_size": 256, "dropout": 0.1, "tcn": {"kernel_size": 5, "dilation_factor": 4}},
    "listops_lengths": (100, 1024), "train_examples": 20_000, "eval_examples": 1000,
    "steps": 3000, "batch_size": 16, "warmup_steps": 300, "eval_every": 250})
_LRA_SIZES = {"lra-image": 1024, "lra-pathfinder": 1024, "lra-pathx": 16384}  # images have one length
# What a task's tiny run needs besides: generated ListOps at lr 3e-3 ends its 200 steps 4% below its
# initial loss (the label prior alone is worth 1%); lists of 10-128 tokens at lr 1e-2 end 14-18% below
# (seeds 0-2). A Path-X step takes 12 s on a CPU core with 16 images of 16384 pixels, 0.6 s with 2.
_LRA_TINY_TASK = {"lra-listops": {"lr": 1e-2, "listops_lengths": (10, 128)}, "lra-pathx": {"batch_size": 2}}


def _lra_presets(task: str) -> dict[str, dict]:
    tiny, cpu = _LRA_TINY, _LRA_CPU
    if task in _LRA_SIZES:  # an image cannot be cut short; keep its length, shrink the rest
        image = {"seq_len": _LRA_SIZES[task], "model": {"chunk_size": 256}}
        tiny, cpu = merge_overrides(tiny, image), merge_overrides(cpu, image)
    return {"tiny": merge_overrides(tiny, _LRA_TINY_TASK.get(task, {})), "cpu": cpu, "paper": _LRA_PAPER[task]}


PRESETS: dict[str, dict[str, dict]] = {
    "enwik8": {
        "tiny": _ENWIK8_TINY,
        "cpu": merge_overrides(_ENWIK8_TINY, {
            "model": {"d_model": 128, "z_dim": 64, "h_dim": 256, "ffn_dim": 256, "n_layers": 4, "chunk_size": 256,
                      "dropout": 0.1, "tcn": {"kernel_size": 5, "dilation_factor": 4, "depth": 4}},
            "steps": 3000, "batch_size": 8, "warmup_steps": 300, "eval_every": 250, "max_eval_windows": 40}),
        # MEGA's enwik8 model (12 layers, D 512, H 1024, FFN 1024, Z 128, N 16, chunk 2048, rotary,
        # pre-norm LayerNorm, dropout 0.1, and _MEGA_ENWIK8's options) with TCNCA's lr 0.005 and weight decay 0.2.
        "paper": merge_overrides(_ENWIK8_TINY, {
            "model": {"d_model": 512, "z_dim": 128, "h_dim": 1024, "ffn_dim": 1024, "n_layers": 12,
                      "chunk_size": 2048, "dropout": 0.1,
                      "tcn": {"kernel_size": 17, "dilation_factor": 4, "depth": 4}},
            "steps": 250000, "batch_size": 8, "lr": 5e-3, "weight_decay": 0.2, "warmup_steps": 24000,
            "eval_every": 5000, "max_eval_windows": None}),
    },
    # TCNCA-simple (Fig. A2): 2 layers with TCNs of depth 3 or 4; width 32 at length 64, where the
    # paper's chunk "corresponds to standard quadratic self-attention": the whole sequence.
    "assoc-recall": {
        "tiny": _ASSOC_TINY,
        # Reaches 100% at length 64 / vocabulary 20 in about a minute on 2 cores (README). The paper's
        # chunk 32 leaves the first half out of the query's chunk, which a depth-4 TCN cannot bridge:
        # 92% at 1500 steps; one chunk over the whole sequence and width 64 learn it in 800.
        "cpu": merge_overrides(_ASSOC_BASE, {"model": {"d_model": 64, "ffn_dim": 128}, "train_examples": 50000,
                                             "steps": 1000, "batch_size": 64, "eval_every": 100,
                                             "warmup_steps": 100}),
        "paper": _ASSOC_BASE | {"train_examples": 100000, "steps": 20000, "batch_size": 64, "eval_every": 1000,
                                "warmup_steps": 1000, "lr": 1e-3},
    },
    **{task: _lra_presets(task) for task in _LRA_PAPER},
}


def set_dotted(doc: dict, dotted: str, value) -> None:
    """doc['model']['tcn']['depth'] = value for 'model.tcn.depth', creating sections on the way."""
    *path, last = dotted.split(".")
    for key in path:
        doc = doc.setdefault(key, {})
        if not isinstance(doc, dict):
            raise UserError(f"{dotted}: {key} is not a section")
    doc[last] = value


def parse_set(items: list[str]) -> dict:
    """['model.d_model=64', 'lr=1e-3'] -> nested overrides, values read as YAML (numbers, booleans)."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set takes key=value, got {item!r}")
        try:
            set_dotted(out, key.strip(), _scalar(raw.strip()))
        except UserError as err:
            raise UserError(f"--set {err}") from None
    return out


def _scalar(raw: str):
    """A number where it reads as one (YAML 1.1 would keep '3e-3' a string), else YAML's reading."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:  # a tag (!!python/...), an unclosed bracket: never constructed, refused
        raise UserError(f"value {raw[:60]!r} is not a plain YAML value (a number, true/false, a string, a "
                        "list); quote it if it is a string") from None


def make_config(task: str, preset: str = "tiny", overrides: dict | None = None) -> TrainConfig:
    """The preset's config for `task` with `overrides` merged in.

    Raises:
        UserError: unknown task or preset, or an invalid value (named in the message).
    """
    if task not in PRESETS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(PRESETS)}")
    if preset not in PRESETS[task]:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS[task])}")
    try:
        return TrainConfig(**merge_overrides({"task": task} | PRESETS[task][preset], overrides or {}))
    except ValidationError as err:
        raise UserError(validation_message(err)) from None


@dataclass
class TrainResult:
    status: Literal["completed", "diverged", "stopped"]
    steps: int
    metrics: dict
    history: list[dict] = field(default_factory=list)
    num_parameters: int = 0
    elapsed_s: float = 0.0
    reason: str | None = None

    def to_json(self) -> dict:
        return {"status": self.status, "steps": self.steps, "metrics": self.metrics, "reason": self.reason,
                "num_parameters": self.num_parameters, "elapsed_s": round(self.elapsed_s, 3), "history": self.history}


def _device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: this machine has no CUDA device; use --set device=cpu (or auto)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _schedule(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps))
    return factor


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)


# -- tasks: each yields (model inputs, targets) batches and says which head it needs -----------------


class AssocRecallTask:
    """Synthetic key-value recall; only the answer position is scored."""

    head, num_classes = "lm", 2

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.vocab_size = cfg, cfg.vocab_size
        x, y = associative_recall(cfg.train_examples, cfg.seq_len, cfg.vocab_size, seed=cfg.seed)
        xe, ye = associative_recall(cfg.eval_examples, cfg.seq_len, cfg.vocab_size, seed=cfg.seed + 1_000_003)
        self.train, self.eval = (x.to(device), y.to(device)), (xe.to(device), ye.to(device))

    def batch(self, generator: torch.Generator):
        idx = torch.randint(0, len(self.train[0]), (self.cfg.batch_size,), generator=generator)
        idx = idx.to(self.train[0].device)
        return {"tokens": self.train[0][idx]}, self.train[1][idx]

    def eval_batches(self):
        x, y = self.eval
        for i in range(0, len(x), 256):
            yield {"tokens": x[i:i + 256]}, y[i:i + 256]


class Enwik8Task:
    """Byte-level language modelling; every byte is scored, bits per character reported."""

    head, vocab_size, num_classes = "lm", 256, 2

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        path = enwik8.prepare(Path(cfg.data_path) if cfg.data_path else None)
        chunk = cfg.model.chunk_size
        enwik8.check_splits(path, train_bytes=max(cfg.chunk_counts) * chunk + 1,
                            eval_bytes=cfg.eval_chunks * chunk + 1)
        self.train, self.valid = enwik8.load_split(path, "train"), enwik8.load_split(path, "valid")

    def batch(self, generator: torch.Generator):
        x, y = enwik8.train_window(self.train, self.cfg.model.chunk_size, generator, tuple(self.cfg.chunk_counts),
                                   self.cfg.batch_size)
        return {"tokens": x.to(self.device)}, y.to(self.device)

    def eval_batches(self):
        length = self.cfg.eval_chunks * self.cfg.model.chunk_size
        for x, y in enwik8.eval_windows(self.valid, length, self.cfg.max_eval_windows):
            yield {"tokens": x.to(self.device)}, y.to(self.device)


class LRATask:
    """One Long Range Arena classification task: padded sequences, a padding mask, a label each.

    Batches are cut to their longest real sequence: the padding is masked everywhere, so the
    trailing columns change nothing but the cost (ListOps averages a third of its 2048).
    """

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.name = cfg.task.removeprefix("lra-")
        self.head = "retrieval" if self.name == "retrieval" else "classify"
        self.num_classes = lra.TASKS[self.name][1]
        if self.name == "listops" and cfg.data_path is None:
            self.vocab_size = len(lra.LISTOPS_VOCAB)
            self.train = self._generated(cfg.train_examples, cfg.seed)
            self.valid = self._generated(cfg.eval_examples, cfg.seed + 1_000_003)
        else:
            if cfg.data_path is None:
                raise UserError(f"LRA {self.name} needs its data: download lra_release.gz from the Long Range "
                                "Arena repository, unpack it, and pass the folder with --data")
            self.vocab_size = len(lra.LISTOPS_VOCAB) if self.name == "listops" else 256
            self.train = lra.load(self.name, cfg.data_path, "train", cfg.seq_len)
            self.valid = lra.load(self.name, cfg.data_path, "val", cfg.seq_len)

    def _generated(self, n: int, seed: int) -> lra.Classification:
        low, high = self.cfg.listops_lengths
        pairs = lra.generate_listops(n, seed=seed, min_length=low, max_length=min(high, self.cfg.seq_len))
        return lra.listops_from_pairs(pairs, self.cfg.seq_len)

    def _select(self, data: lra.Classification, idx: torch.Tensor):
        inputs = {"tokens": data.inputs[idx], "padding_mask": data.padding_mask[idx]}
        if data.inputs2 is not None:
            inputs |= {"tokens2": data.inputs2[idx], "padding_mask2": data.padding_mask2[idx]}
        for a, b in (("tokens", "padding_mask"), ("tokens2", "padding_mask2")):
            if a in inputs:
                width = max(1, int((~inputs[b]).sum(1).max()))
                inputs[a], inputs[b] = inputs[a][:, :width], inputs[b][:, :width]
        return {k: v.to(self.device) for k, v in inputs.items()}, data.labels[idx].to(self.device)

    def batch(self, generator: torch.Generator):
        return self._select(self.train, torch.randint(0, len(self.train), (self.cfg.batch_size,), generator=generator))

    def eval_batches(self):
        n = min(len(self.valid), self.cfg.eval_examples)
        for i in range(0, n, 64):
            yield self._select(self.valid, torch.arange(i, min(i + 64, n)))


def make_task(cfg: TrainConfig, device: torch.device):
    if cfg.task.startswith("lra-"):
        return LRATask(cfg, device)
    return {"assoc-recall": AssocRecallTask, "enwik8": Enwik8Task}[cfg.task](cfg, device)


def _loss(model, inputs: dict, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss over scored targets, correct count, scored count); LM logits (B, L, V), classes (B, C)."""
    logits = model(**inputs)
    scored = y != IGNORE
    loss = F.cross_entropy(logits.float().flatten(0, -2), y.flatten(), ignore_index=IGNORE)
    correct = (logits.argmax(-1) == y)[scored].sum()
    return loss, correct, scored.sum()


@torch.no_grad()
def evaluate(model, batches) -> dict:
    """Loss (nats per scored target), accuracy, and for a language model bits per character."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    for inputs, y in batches:
        loss, c, n = _loss(model, inputs, y)
        total += loss.item() * n.item()
        correct += c.item()
        count += n.item()
    model.train()
    if count == 0:  # an empty evaluation set is an error, never a perfect score
        raise UserError("the evaluation set is empty: nothing was scored; give the task more evaluation data "
                        "(eval_examples, or a larger corpus for its validation split)")
    loss = total / count
    metrics = {"loss": loss, "accuracy": correct / count}
    return metrics | {"bpc": loss / math.log(2)} if model.cfg.task == "lm" else metrics


def train(cfg: TrainConfig, *, callback: Callable[[int, dict], bool | None] | None = None,
          checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True,
          on_model: Callable[[torch.nn.Module], None] | None = None) -> TrainResult:
    """Train one model. `callback(step, metrics)` after every evaluation; returning False stops the run.
    `on_model(model)` once the model is built (a trial records its size before its first evaluation).

    With `checkpoint`, the state is saved after every evaluation (atomically), and `resume=True`
    continues from it: the same steps, the same data order, the same result as one uninterrupted run.
    """
    start = time.perf_counter()
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    task = make_task(cfg, device)
    model_cfg = cfg.model.model_copy(update={"vocab_size": task.vocab_size, "task": task.head,
                                             "num_classes": task.num_classes,
                                             "max_length": max(cfg.model.max_length, cfg.seq_len)})
    model = build_model(model_cfg).to(device)
    if on_model is not None:
        on_model(model)
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
    sampler = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    step, history = 0, []
    path = Path(checkpoint) if checkpoint else None
    if resume and path is not None and path.exists():
        step, history = _restore(path, device, model, optimizer, scheduler, sampler)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                       enabled=False)
    status, reason, metrics = "completed", None, history[-1] if history else {}
    bar = Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress)
    with bar:
        bar_task = bar.add_task(cfg.task, total=cfg.steps, completed=step)
        model.train()
        while step < cfg.steps:
            inputs, y = task.batch(sampler)
            with amp:
                loss, _, _ = _loss(model, inputs, y)
            if not torch.isfinite(loss):
                status, reason = "diverged", f"non-finite training loss ({loss.item()}) at step {step}"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(bar_task, advance=1, description=f"{cfg.task} loss {loss.item():.3f}")
            if step % cfg.eval_every == 0 or step == cfg.steps:
                metrics = {"step": step, "train_loss": loss.item(), **evaluate(model, task.eval_batches())}
                history.append(metrics)
                shown = f"bpc {metrics['bpc']:.3f}" if task.head == "lm" else f"loss {metrics['loss']:.3f}"
                bar.update(bar_task, description=f"{cfg.task} eval acc {metrics['accuracy']:.3f} {shown}")
                if path is not None:
                    _save(path, model, optimizer, scheduler, sampler, step, history)
                if callback is not None and callback(step, metrics) is False:
                    status, reason = "stopped", f"stopped by the callback at step {step}"
                    break
    return TrainResult(status=status, steps=step, metrics=metrics, history=history, reason=reason,
                       num_parameters=model.num_parameters(), elapsed_s=time.perf_counter() - start)


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "sampler", "step", "history")


def _restore(path: Path, device, model, optimizer, scheduler, sampler) -> tuple[int, list]:
    """Load a checkpoint that `_save` wrote into the training state; (step, history).

    Checkpoints are files people pass around, so they are read with `weights_only=True`: tensors,
    numbers, strings and containers only, never an object whose unpickling runs code.

    Raises:
        UserError: the file is not such a checkpoint or does not fit this run's model (nothing is loaded).
    """
    hint = "pass a checkpoint that `tcnsearch train --checkpoint` wrote, or start without --resume"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # weights_only refuses other objects with UnpicklingError; a torn file raises others
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a loadable tcnsearch checkpoint ({reason}); {hint}") from None
    if not isinstance(state, dict) or set(CHECKPOINT_KEYS) - state.keys():
        raise UserError(f"{path}: not a tcnsearch checkpoint (expected the keys {', '.join(CHECKPOINT_KEYS)}); {hint}")
    step, history, rng = state["step"], state["history"], state["sampler"]
    if not isinstance(step, int) or step < 0 or not isinstance(history, list) or not (
            isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8):
        raise UserError(f"{path}: malformed checkpoint (step, history or sampler state); {hint}")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.set_state(rng)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        reason = str(err).strip().splitlines()[0][:200]
        raise UserError(f"{path}: the checkpoint does not fit this run's model or settings ({reason}); "
                        "resume with the settings it was saved with") from None
    return step, history


def _save(path: Path, model, optimizer, scheduler, sampler, step, history) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "sampler": sampler.get_state(), "step": step,
                "history": history}, tmp)
    tmp.replace(path)  # a crash mid-save never leaves a torn checkpoint
