"""Sequence operators on (batch, length, channels): the TCN, MEGA's EMA, chunked attention.

Every operator takes and returns (batch, length, channels), like nn.Linear, so the TCN and the
EMA are drop-in replacements for each other inside a layer.
"""

from tcnsearch.ops.attention import (
    ChunkedAttention,
    RotaryRelativePositionalBias,
    SimpleRelativePositionalBias,
    chunked_attention,
    laplace,
)
from tcnsearch.ops.ema import EMAState, MultiHeadEMA
from tcnsearch.ops.tcn import TCN, TCNState, native_kernel_available, receptive_field

__all__ = [
    "TCN",
    "ChunkedAttention",
    "EMAState",
    "MultiHeadEMA",
    "RotaryRelativePositionalBias",
    "SimpleRelativePositionalBias",
    "TCNState",
    "chunked_attention",
    "laplace",
    "native_kernel_available",
    "receptive_field",
]
