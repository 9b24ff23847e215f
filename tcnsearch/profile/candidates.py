"""What to profile: the grid of TCN structures and the shapes they are timed at."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tcnsearch.choices import LEVELS, PRECISIONS
from tcnsearch.errors import UserError, read_yaml, validation_message
from tcnsearch.structure import Metric, Structure, metric_of

LEGACY_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


class ProfileSpec(BaseModel):
    """A profile request: the candidate grid, the shape, and what counts as a survivor.

    The defaults cover the paper's runtime structures (K = 17, D = 4, f raised until R >= L)
    and the smaller kernels and depths a search would also try.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    lengths: list[int] = Field(default=[1024, 4096], description="sequence lengths to time at")
    kernel_sizes: list[int] = Field(default=[3, 5, 7, 9, 13, 17])
    dilation_factors: list[int] = Field(default=[2, 3, 4, 6, 8, 12, 16])
    depths: list[int] = Field(default=[2, 3, 4, 5, 6])
    per_block: list[int] = Field(default=[1, 2])
    channels: int = Field(default=64, ge=1)
    batch: int = Field(default=1, ge=1)
    ema_dim: int = Field(default=16, ge=1, description="N of the EMA being replaced (MEGA: 16)")
    dtype: Literal[PRECISIONS] = Field(
        default="auto", description="the precision timed, as training runs it: auto (fp32 on a CPU, bf16 on "
                                    "GPUs with native bf16, fp16 on V100/T4), fp32, bf16 or fp16 (autocast)")
    bidirectional: bool = Field(default=False, description="non-causal TCN vs bidirectional EMA")
    mode: Literal["train", "infer"] = Field(default="train", description="train: fwd+bwd; infer: fwd")
    min_speedup: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    min_receptive_field: int | Literal["length"] | None = Field(
        default="length", description="'length': R >= the longest length (the paper's rule); a number; or none")
    level: Literal[LEVELS] = Field(
        default="op", description="op: TCN vs EMA; layer: a MEGA layer with either; model: the whole model")
    model: dict | None = Field(default=None, description="layer/model levels: ModelConfig fields (a study's model)")
    # How long to measure: pairs until the speedup's 95% interval is narrower than `precision`
    # times the speedup, at least `min_pairs`, at most `max_time` seconds per candidate and length.
    precision: float = Field(default=0.05, gt=0, lt=1, allow_inf_nan=False)
    min_pairs: int = Field(default=6, ge=3, le=1000)
    max_time: float = Field(default=1.0, gt=0, le=3600, allow_inf_nan=False)
    threads: int | None = Field(
        default=None, ge=1, le=1024, description="CPU threads to measure with (default: all cores but one); a study "
                                                 "measures with its trials' cpus_per_trial")
    undecided: Literal["keep", "drop"] = Field(default="drop", description="what a study does with close calls")
    max_candidates: int = Field(default=10_000, ge=1, le=1_000_000,
                                description="refuse a grid of more structures than this (K x f x D x B values)")
    strategy: Literal["adaptive", "full"] = Field(
        default="adaptive", description="adaptive: a spread-out sample, then only what the latency model cannot "
                                        "decide; full: measure every candidate")

    @field_validator("dtype", mode="before")
    @classmethod
    def _precision_names(cls, value):
        return LEGACY_DTYPES.get(value, value)  # float32, bfloat16, float16: the names torch gives them

    @field_validator("lengths", "kernel_sizes", "dilation_factors", "depths", "per_block")
    @classmethod
    def _non_empty_sorted(cls, values: list[int]) -> list[int]:
        if not values:
            raise ValueError("must not be empty")
        return sorted(set(values))

    @model_validator(mode="after")
    def _bounds(self) -> ProfileSpec:
        # The upper bounds keep an absurd value from allocating terabytes or running for days.
        for name, low, high in (("lengths", 1, 1 << 22), ("kernel_sizes", 2, 1025), ("dilation_factors", 1, 1024),
                                ("depths", 1, 64), ("per_block", 1, 16)):
            bad = [v for v in getattr(self, name) if v < low]
            if bad:
                raise ValueError(f"{name} must be >= {low}, got {bad}")
            bad = [v for v in getattr(self, name) if v > high]
            if bad:
                raise ValueError(f"{name} must be <= {high}, got {bad}")
        size = self.grid_size
        if size > self.max_candidates:
            raise ValueError(f"the grid has {size:,} candidates, more than {self.max_candidates:,}; narrow the "
                             "lists, or raise the cap with --max-candidates (max_candidates in a study's profile:)")
        if self.channels * self.batch * max(self.lengths) > 1 << 31:
            raise ValueError(f"batch x channels x length = {self.channels * self.batch * max(self.lengths):,} "
                             "elements per activation; at most 2^31 (lower --batch, --channels or --lengths)")
        if isinstance(self.min_receptive_field, int) and self.min_receptive_field < 1:
            raise ValueError(f"min_receptive_field must be >= 1, got {self.min_receptive_field}")
        if self.model is not None:
            self.build_model_config()  # fails here, with the field named, rather than mid-profile
        return self

    @property
    def metric(self) -> Metric:
        """The speedup that decides: "fwdbwd" in train mode, "fwd" in infer mode."""
        return metric_of(self.mode)

    def build_model_config(self, candidate: Structure | None = None):
        """The model the layer and model levels time: the study's (`model`), else MEGA's layout at
        this profile's width; its TCN is `candidate`'s."""
        from tcnsearch.models import ModelConfig

        base = {"d_model": self.channels, "ema_dim": self.ema_dim,
                "task": "classify" if self.bidirectional else "lm", "chunk_size": min(128, max(self.lengths))}
        doc = base | (self.model or {})
        doc.pop("tcn", None)
        if candidate is not None:
            doc["tcn"] = candidate.as_dict()
        try:
            return ModelConfig(**doc)
        except ValidationError as err:
            raise ValueError(f"model: {validation_message(err)}") from None

    @property
    def context(self) -> str:
        """What, besides the structure and the shape, a measurement at this level depends on: '' for the
        operator, a digest of the model (less its TCN) for a layer or a model."""
        if self.level == "op":
            return ""
        doc = self.build_model_config().model_dump(exclude={"tcn"})
        return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def required_receptive_field(self) -> int:
        if self.min_receptive_field == "length":
            return max(self.lengths)
        return self.min_receptive_field or 1

    @property
    def grid_size(self) -> int:
        """Structures in the grid, counted as a product, never enumerated: a grid of millions is refused at once."""
        return len(self.kernel_sizes) * len(self.dilation_factors) * len(self.depths) * len(self.per_block)

    def candidates(self) -> list[Structure]:
        """The grid, less the structures whose receptive field is too small."""
        grid = (Structure(*c) for c in itertools.product(self.kernel_sizes, self.dilation_factors,
                                                           self.depths, self.per_block))
        return [c for c in grid if c.receptive_field >= self.required_receptive_field]


def make_spec(path: Path | None = None, **overrides) -> ProfileSpec:
    """A ProfileSpec from a study file's `profile:` section (or a file that is only that section),
    with `overrides` (the command-line flags that were given) on top.

    Raises:
        UserError: the file is unreadable, not YAML, or a field is invalid (named in the message).
    """
    values: dict = {}
    section = ""
    if path is not None:
        doc = read_yaml(path) or {}
        if not isinstance(doc, dict):
            raise UserError(f"{path}: expected a mapping with a 'profile' section")
        if "profile" in doc:
            values, section = doc["profile"], "profile"
        else:
            values = doc
        if not isinstance(values, dict):
            raise UserError(f"{path}: 'profile' must be a mapping of profile settings")
    try:
        return ProfileSpec(**(values | overrides))
    except ValidationError as err:
        message = validation_message(err, prefix=section)
        raise UserError(f"{path}: {message}" if path is not None else message) from None
