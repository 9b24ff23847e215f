"""What defines a model: the architecture, the head, the widths, the dropouts, and its TCN."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tcnsearch.structure import Structure


class TCNConfig(BaseModel):
    """The TCN of a model: its structure's four fields (as a config file spells them) and its activation."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kernel_size: int = Field(default=5, ge=2)
    dilation_factor: int = Field(default=4, ge=1)
    depth: int = Field(default=4, ge=1)
    per_block: int = Field(default=1, ge=1)
    activation: Literal["relu", "gelu", "silu", "identity"] = "relu"

    @property
    def structure(self) -> Structure:
        return Structure(self.kernel_size, self.dilation_factor, self.depth, self.per_block)


class ModelConfig(BaseModel):
    """Everything that defines a model. `arch` picks the block, `task` the head."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    arch: Literal["tcnca", "mega", "tcnca_simple", "tcn_mlp"] = "tcnca"
    task: Literal["lm", "classify", "retrieval"] = "lm"
    vocab_size: int = Field(default=256, ge=2)
    num_classes: int = Field(default=2, ge=2)
    d_model: int = Field(default=64, ge=1)
    z_dim: int = Field(default=32, ge=2)
    h_dim: int = Field(default=128, ge=1)
    ffn_dim: int = Field(default=128, ge=1)
    n_layers: int = Field(default=2, ge=1)
    chunk_size: int = Field(default=128, ge=1)
    attention: Literal["softmax", "laplace"] = "softmax"
    rel_pos: Literal["simple", "rotary"] | None = "simple"
    norm: Literal["layernorm", "scalenorm", "batchnorm"] = "layernorm"
    prenorm: bool = True
    # Where each dropout acts: the module docstring (MEGA's names and places).
    dropout: float = Field(default=0.0, ge=0, lt=1)
    attention_dropout: float = Field(default=0.0, ge=0, lt=1)
    hidden_dropout: float = Field(default=0.0, ge=0, lt=1, description="on the gated unit's values v")
    activation_dropout: float = Field(default=0.0, ge=0, lt=1, description="on the FFN's hidden activation")
    final_norm_affine: bool = Field(default=True, description="learned scale/shift in the final norm before the "
                                    "head (pre-norm models; post-norm ones have none)")
    tcn: TCNConfig = Field(default_factory=TCNConfig)
    ema_dim: int = Field(default=16, ge=1)
    ema_truncation: int | None = Field(default=None, ge=1, description="most EMA kernel taps (MEGA's "
                                       "truncation); None: the whole sequence. The TCN ignores it")
    max_length: int = Field(default=4096, ge=1, description="longest input (embedding of positions is relative)")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.rel_pos == "rotary" and self.z_dim % 2:
            raise ValueError(f"the rotary bias needs an even z_dim, got {self.z_dim}")
        if self.arch == "tcnca_simple" and self.rel_pos == "rotary" and self.d_model % 2:
            raise ValueError(f"the rotary bias needs an even d_model in tcnca_simple, got {self.d_model}")
        return self

    @property
    def causal(self) -> bool:
        return self.task == "lm"
