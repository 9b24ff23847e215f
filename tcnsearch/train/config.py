"""One training run's settings, and the `--set key=value` overrides that change them.

    cfg = TrainConfig(task="assoc-recall", lr=3e-3)
    overrides = parse_set(["model.tcn.depth=3", "lr=1e-3"])   # {"model": {"tcn": {"depth": 3}}, "lr": 0.001}
    merged = merge_overrides(base, overrides)                  # section by section
"""

from __future__ import annotations

import copy
import re
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tcnsearch.choices import PRECISIONS, TASKS
from tcnsearch.errors import UserError
from tcnsearch.models import ModelConfig


class TrainConfig(BaseModel):
    """One run: the task and its data, the model, the optimisation."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    task: Literal[TASKS] = "assoc-recall"
    model: ModelConfig = Field(default_factory=ModelConfig)
    # associative recall; LRA: seq_len is the padded length, eval_examples caps the validation split
    seq_len: int = Field(default=64, ge=3)
    vocab_size: int = Field(default=20, ge=4)
    train_examples: int = Field(default=20000, ge=1, description="assoc-recall, and generated ListOps")
    eval_examples: int = Field(default=1000, ge=1)
    # LRA: data_path is lra_release.gz, a task's .tar.gz or the unpacked folder; ListOps without one is generated
    listops_lengths: tuple[int, int] = Field(default=(500, 2000), description="generated ListOps: token counts")
    # enwik8: windows of 2-4 consecutive model.chunk_size chunks; evaluation on eval_chunks chunks
    data_path: str | None = Field(default=None, description="enwik8.zip or enwik8 (default: the cache), or "
                                                         "lra_release.gz / a task's .tar.gz / its folder")
    chunk_counts: list[int] = Field(default=[2, 3, 4], min_length=1)
    eval_chunks: int = Field(default=3, ge=1)
    max_eval_windows: int | None = Field(default=20, ge=1, description="None: the whole validation split")
    # optimisation (MEGA: Adam(0.9, 0.98), linear decay after warm-up)
    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=64, ge=1)
    micro_batch: int | None = Field(default=None, ge=1, description="examples a forward; the batch's gradient is "
                                    "accumulated over them. None: the whole batch, or what fits the memory")
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = Field(default=100, ge=0)
    grad_clip: float = Field(default=1.0, ge=0, description="0 disables clipping")
    eval_every: int = Field(default=100, ge=1)
    seed: int = 0
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, ...")
    precision: Literal[PRECISIONS] = Field(
        default="auto", description="auto: fp32 on a CPU, bf16 on GPUs with native bf16, fp16 (scaled) on V100/T4")

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


def set_dotted(doc: dict, dotted: str, value) -> None:
    """doc['model']['tcn']['depth'] = value for 'model.tcn.depth', creating sections on the way."""
    *path, last = dotted.split(".")
    for key in path:
        doc = doc.setdefault(key, {})
        if not isinstance(doc, dict):
            raise UserError(f"{dotted}: {key} is not a section")
    doc[last] = value


def get_dotted(doc: dict, dotted: str, default=None):
    """doc['model']['tcn'] for 'model.tcn', or `default` where a section is missing."""
    for key in dotted.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return default
        doc = doc[key]
    return doc


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
