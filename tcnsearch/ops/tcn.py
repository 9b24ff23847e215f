"""The dilated temporal convolutional network (TCN) that TCNCA puts in place of MEGA's EMA.

Structure (TCNCA supplementary, sections E and H): `depth` residual blocks; block i holds
`per_block` depthwise convolutions (one kernel of `kernel_size` taps per channel, no bias, so
K parameters per channel per convolution) with dilation `dilation_factor**i`, each followed by
the nonlinearity, and a residual connection around the block:

    h = x;  for each conv in block i:  h = act(conv_{dilation = f**i}(h));  x = x + h

Causal (language modelling): output t sees exactly inputs t-R+1..t, R = `receptive_field`.
Non-causal (classification): a centred window of the same width.

Two interchangeable backends compute the same function:
- "native": the fused C kernel of `_dconv.c` (CPU, float32), the fast path;
- "torch": plain `F.conv1d` calls, the reference, and the path on GPUs (cuDNN) and other dtypes.

Streaming (the paper's stated limitation, "no efficient recurrent inference"): a causal TCN keeps
a ring buffer of the last (K-1)*dilation+1 inputs of every convolution and steps one token at a
time in O(depth * per_block * K * C), independent of the sequence length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from tcnsearch.ops import dconv

BACKENDS = ("auto", "native", "torch")
_ACT_FN = {
    "identity": lambda z: z,
    "relu": F.relu,
    "gelu": lambda z: F.gelu(z, approximate="tanh"),
    "silu": F.silu,
}


def native_kernel_available() -> bool:
    """Whether the TCN runs its native CPU kernel here (a C compiler built it), rather than the PyTorch path."""
    return dconv.available()


def receptive_field(kernel_size: int, dilation_factor: int, depth: int, per_block: int = 1) -> int:
    """Input positions one output sees: 1 + B*(K-1)*(f**D - 1)/(f - 1), or 1 + B*(K-1)*D at f = 1."""
    if kernel_size < 1 or dilation_factor < 1 or depth < 1 or per_block < 1:
        raise ValueError(
            f"receptive_field needs kernel_size, dilation_factor, depth, per_block >= 1, got "
            f"{kernel_size}, {dilation_factor}, {depth}, {per_block}"
        )
    if dilation_factor == 1:
        return 1 + per_block * (kernel_size - 1) * depth
    return 1 + per_block * (kernel_size - 1) * (dilation_factor**depth - 1) // (dilation_factor - 1)


@dataclass
class TCNState:
    """Streaming state: one ring buffer (B, (K-1)*dilation + 1, C) per convolution."""

    buffers: list[torch.Tensor]
    position: int = 0


class TCN(nn.Module):
    """Depthwise dilated TCN on (batch, length, channels).

    Args:
        channels: C, the width of the input and the output.
        kernel_size: K, taps of each convolution (>= 2).
        dilation_factor: f, block i uses dilation f**i (>= 1).
        depth: D, residual blocks (>= 1).
        per_block: B, convolutions inside one residual block (>= 1).
        causal: output t sees inputs <= t; otherwise a centred window.
        activation: "relu" (default: the classic TCN's), "gelu" (tanh form), "silu" or "identity".
        dropout: applied after each activation, in training.
        backend: "auto" (native kernel on CPU float32 when it compiles, else torch), "native", "torch".
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilation_factor: int,
        depth: int,
        per_block: int = 1,
        causal: bool = True,
        activation: str = "relu",
        dropout: float = 0.0,
        backend: str = "auto",
    ):
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {kernel_size}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if activation not in _ACT_FN:
            raise ValueError(f"activation must be one of {sorted(_ACT_FN)}, got {activation!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.channels, self.kernel_size = channels, kernel_size
        self.dilation_factor, self.depth, self.per_block = dilation_factor, depth, per_block
        self.causal, self.activation, self.dropout, self.backend = causal, activation, dropout, backend
        self.receptive_field = receptive_field(kernel_size, dilation_factor, depth, per_block)
        # One (K, C) kernel per convolution, taps ordered oldest first as in F.conv1d.
        self.weight = nn.Parameter(torch.empty(depth, per_block, kernel_size, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv1d's default for a depthwise kernel: fan_in = K.
        bound = 1.0 / math.sqrt(self.kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, K={self.kernel_size}, f={self.dilation_factor}, "
            f"D={self.depth}, B={self.per_block}, R={self.receptive_field}, causal={self.causal}, "
            f"activation={self.activation}"
        )

    def dilation(self, block: int) -> int:
        return self.dilation_factor**block

    def _pad_left(self, dilation: int) -> int:
        span = (self.kernel_size - 1) * dilation
        return span if self.causal else span // 2

    def _use_native(self, x: torch.Tensor) -> bool:
        if self.backend == "torch":
            return False
        # Under a lower-precision autocast the TCN computes as the rest of the model does (conv1d in bf16).
        ok = x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
        if self.backend == "native":
            if not ok:
                raise ValueError("the native TCN kernel takes float32 CPU tensors")
            if not dconv.available():
                raise RuntimeError("the native TCN kernel could not be compiled (see the log)")
            return True
        return ok and dconv.available()

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, C) -> (B, L, C). padding_mask: (B, L), True at padded positions, which are
        zeroed before every block so they never leak into real positions."""
        keep = None if padding_mask is None else (~padding_mask).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        native = self._use_native(x)
        drop = self.dropout if self.training else 0.0
        for i in range(self.depth):
            if keep is not None:
                x = x * keep
            d, pad = self.dilation(i), self._pad_left(self.dilation(i))
            h = x
            for j in range(self.per_block):
                w = self.weight[i, j]  # (K, C)
                last = j == self.per_block - 1
                if native:
                    # The residual add rides along in the last convolution unless dropout sits between.
                    skip = x if (last and drop == 0.0 and j > 0) else None
                    self_res = last and drop == 0.0 and j == 0
                    h = dconv.dilated_conv(h, w, skip, d, pad, self.activation, self_res)
                    if drop:
                        h = F.dropout(h, drop, True)
                    if last and drop:
                        h = x + h
                else:
                    h = _ACT_FN[self.activation](_conv_reference(h, w, d, pad))
                    if drop:
                        h = F.dropout(h, drop, True)
                    if last:
                        h = x + h
            x = h
        if keep is not None:
            x = x * keep
        return x

    # -- streaming -------------------------------------------------------------------------

    def init_state(self, batch: int, device=None, dtype=None) -> TCNState:
        """Zeroed ring buffers: the causal forward's left padding."""
        if not self.causal:
            raise ValueError("step() needs a causal TCN")
        device = device or self.weight.device
        dtype = dtype or self.weight.dtype
        buffers = [
            torch.zeros(batch, (self.kernel_size - 1) * self.dilation(i) + 1, self.channels,
                        device=device, dtype=dtype)
            for i in range(self.depth) for _ in range(self.per_block)
        ]
        return TCNState(buffers=buffers)

    def step(self, x_t: torch.Tensor, state: TCNState) -> tuple[torch.Tensor, TCNState]:
        """One token: x_t (B, C) -> y_t (B, C). Updates `state` in place and returns it."""
        taps = torch.arange(self.kernel_size - 1, -1, -1, device=x_t.device)  # oldest tap first
        h = x_t
        n = 0
        for i in range(self.depth):
            block_in, d = h, self.dilation(i)
            for j in range(self.per_block):
                buf = state.buffers[n]  # (B, S, C)
                size = buf.shape[1]
                pos = state.position % size
                buf[:, pos] = h
                window = buf[:, (pos - taps * d) % size]  # (B, K, C)
                h = _ACT_FN[self.activation]((window * self.weight[i, j]).sum(1))
                n += 1
            h = block_in + h
        state.position += 1
        return h, state


def _conv_reference(x: torch.Tensor, w: torch.Tensor, dilation: int, pad_left: int) -> torch.Tensor:
    """Depthwise conv with F.conv1d: x (B, L, C), w (K, C) -> (B, L, C)."""
    length = x.shape[1]
    # Tap k reads x[t + k*dilation - pad_left]; taps that land outside the sequence for every t
    # read only padding. Dropping them keeps the padding O(L) when the dilation is far past L
    # (f = 16, D = 8 dilates by 16^7), where F.pad would allocate (K-1)*dilation rows.
    first = max(0, -((length - 1 - pad_left) // dilation))  # the first k with k*d - pad > -L
    last = min(w.shape[0] - 1, (length - 1 + pad_left) // dilation)  # the last k with k*d - pad < L
    if first > last:  # an even kernel centred with a dilation of at least 2L: no tap lands inside
        return torch.zeros_like(x)
    w, pad_left = w[first:last + 1], pad_left - first * dilation
    if w.shape[0] == 1:
        dilation = 1  # one tap: its offset is all that matters
    kernel_size, channels = w.shape
    pad_right = (kernel_size - 1) * dilation - pad_left
    h = F.pad(x.transpose(1, 2), (pad_left, pad_right))  # (B, C, L + span)
    y = F.conv1d(h, w.t().unsqueeze(1), dilation=dilation, groups=channels)  # (B, C, L)
    return y.transpose(1, 2)
