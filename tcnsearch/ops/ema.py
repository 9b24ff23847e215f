"""MEGA's multi-dimensional damped exponential moving average (Ma et al., ICLR 2023).

The baseline TCNCA replaces, kept faithful to MEGA's reference code (fairseq `MultiHeadEMA`),
because every profile's speedup is measured against it. Per channel c and EMA dimension n:

    p = sigmoid(delta), d = sigmoid(alpha), q = 1 - p*d
    h_t = p*beta*x_t + q*h_{t-1},    y_t = sum_n s*gamma*h_t,    s = 1/sqrt(N)

Unrolled, y = k * x (a causal convolution) with the kernel

    k[c, l] = sum_n s*gamma[c,n] * p*beta * q**l,    q**l = exp(l*log q),

generated on every training forward (part of the EMA's cost, as in the paper's runtimes) and
applied by FFT in float32. Bidirectional: a second kernel over the reversed direction, the two
added (the lag-0 tap counted from both). The module returns y; the layer adds omega*x and the
SiLU, so the EMA and the TCN are drop-in replacements for each other.

Truncation (MEGA's `truncation`, `--truncation-length` in its recipes): the kernel is generated
for min(truncation, L) taps only, so output t sees inputs t-T+1..t (and also t..t+T-1 when
bidirectional). The recurrent `step` then equals this truncated convolution, not the unbounded
recurrence (see `step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class EMAState:
    """Streaming state: the hidden state h (B, C, N); with a truncation T, also a ring buffer of
    the last T inputs (B, T, C), whose oldest entry leaves the window at the next step."""

    h: torch.Tensor
    window: torch.Tensor | None = None
    position: int = 0


class MultiHeadEMA(nn.Module):
    """MEGA's EMA on (batch, length, channels).

    Args:
        channels: C, the embedding width.
        ndim: N, EMA dimensions per channel (MEGA: 16 on enwik8; the paper's runtime test: 8).
        bidirectional: add a second EMA over the reversed sequence (for classification).
        truncation: T, the most taps of each kernel (MEGA's `truncation`); None: the kernel spans
            the whole sequence. MEGA's enwik8 recipe uses 8192.
    """

    def __init__(self, channels: int, ndim: int = 16, bidirectional: bool = False, truncation: int | None = None):
        super().__init__()
        if channels < 1 or ndim < 1:
            raise ValueError(f"channels and ndim must be >= 1, got {channels}, {ndim}")
        # MEGA reads truncation < 1 as "none"; here it is a mistake, refused.
        if truncation is not None and truncation < 1:
            raise ValueError(f"truncation must be >= 1 or None, got {truncation}")
        self.channels, self.ndim, self.bidirectional = channels, ndim, bidirectional
        self.truncation = truncation
        self.scale = math.sqrt(1.0 / ndim)
        rows = 2 * channels if bidirectional else channels  # C'
        self.delta = nn.Parameter(torch.empty(rows, ndim, 1))
        self.alpha = nn.Parameter(torch.empty(rows, ndim, 1))
        self.beta = nn.Parameter(torch.empty(rows, ndim, 1))
        self.gamma = nn.Parameter(torch.empty(rows, ndim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.normal_(self.delta, mean=0.0, std=0.2)
            nn.init.normal_(self.alpha, mean=0.0, std=0.2)
            # MEGA: beta ~ N(0, 0.02^2) around the pattern +1, -1, +1, ... over N, "more stable".
            sign = torch.ones(self.ndim, 1)
            sign[1::2] = -1.0
            self.beta.normal_(mean=0.0, std=0.02).add_(sign)
            nn.init.normal_(self.gamma, mean=0.0, std=1.0)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, ndim={self.ndim}, bidirectional={self.bidirectional}, "
                f"truncation={self.truncation}")

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(p, q), each (C', N, 1): the input weight and the decay."""
        p = torch.sigmoid(self.delta)
        q = 1.0 - p * torch.sigmoid(self.alpha)
        return p, q

    def kernel_size(self, length: int) -> int:
        """Taps of the kernel for a sequence of `length`: min(truncation, length), as MEGA."""
        return length if self.truncation is None else min(self.truncation, length)

    def kernel(self, length: int) -> torch.Tensor:
        """The convolution kernel k (C', length), generated as MEGA does (pass `kernel_size(L)`)."""
        p, q = self.coefficients()
        # Built on the parameters' device: a host arange copied over would sync the GPU on every call.
        vander = torch.arange(length, device=p.device, dtype=p.dtype).view(1, 1, length) * torch.log(q)  # (C', N, L)
        kernel = (p * self.beta) * torch.exp(vander)
        return torch.einsum("dnl,dn->dl", kernel, self.gamma * self.scale)

    def convolve(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """y = k * x by FFT in float32. x: (B, L, C), k: (C', K) with K <= L taps -> (B, L, C)."""
        length, taps = x.shape[1], k.shape[-1]
        h = x.transpose(1, 2)  # (B, C, L)
        start = 0
        if self.bidirectional:
            k1, k2 = torch.split(k, [self.channels, self.channels], dim=0)
            # One kernel of 2K-1 taps centred at lag 0: k1 looks back, k2 (flipped) ahead.
            k = F.pad(k1, (taps - 1, 0)) + F.pad(k2.flip(-1), (0, taps - 1))  # (C, 2K-1)
            h = F.pad(h, (taps - 1, 0))  # (B, C, L+K-1): output t lands at index t + 2K-2
            start = 2 * taps - 2
        # The whole linear convolution fits in n points, so no tap wraps around (2L when K = L).
        n = h.shape[-1] + k.shape[-1]
        k_f = torch.fft.rfft(k.float(), n=n)
        x_f = torch.fft.rfft(h.float(), n=n)
        y = torch.fft.irfft(x_f * k_f, n=n)[..., start : start + length]  # (B, C, L)
        return y.type_as(x).transpose(1, 2)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, C) -> y (B, L, C). padding_mask: (B, L), True at padded positions (zeroed)."""
        if padding_mask is not None:
            x = x * (~padding_mask).unsqueeze(-1).to(x.dtype)
        return self.convolve(x, self.kernel(self.kernel_size(x.shape[1])))

    # -- recurrent inference -----------------------------------------------------------------

    def init_state(self, batch: int, device=None, dtype=None) -> EMAState:
        """Zero hidden state (B, C, N), and with a truncation T a zero window of T inputs (B, T, C)."""
        if self.bidirectional:
            raise ValueError("step() needs a causal (unidirectional) EMA")
        device, dtype = device or self.delta.device, dtype or self.delta.dtype
        h = torch.zeros(batch, self.channels, self.ndim, device=device, dtype=dtype)
        window = None
        if self.truncation is not None:
            window = torch.zeros(batch, self.truncation, self.channels, device=device, dtype=dtype)
        return EMAState(h=h, window=window)

    def step(self, x_t: torch.Tensor, state: EMAState) -> tuple[torch.Tensor, EMAState]:
        """One token: x_t (B, C) -> y_t (B, C); equals row t of `forward`. Updates `state` in place.

        With a truncation T the output must equal the truncated convolution that training used,
        h_t = sum_{j<T} q**j * p*beta * x_{t-j}. MEGA's own incremental step keeps the full
        recurrence and ignores the truncation, so its decoding drifts from its forward once t >= T;
        we keep the forward's function instead. The truncated state obeys a recurrence too:
            h_t = q * h_{t-1} + p*beta * (x_t - q**T * x_{t-T}),
        the tap that leaves the window subtracted; rounding errors still decay with q < 1. It needs
        x_{t-T}, hence the ring buffer of the last T inputs (zeros before the sequence starts).
        """
        p, q = self.coefficients()  # (C, N, 1)
        x_in = x_t.unsqueeze(-1)  # (B, C, 1)
        if state.window is not None:
            slot = state.position % self.truncation
            x_old = state.window[:, slot].unsqueeze(-1)  # (B, C, 1): x_{t-T}
            x_in = x_in - torch.exp(self.truncation * torch.log(q)).squeeze(-1) * x_old  # q**T as the kernel has it
            state.window[:, slot] = x_t
        state.h = (p * self.beta).squeeze(-1) * x_in + q.squeeze(-1) * state.h  # (B, C, N)
        state.position += 1
        y = (state.h * (self.gamma * self.scale)).sum(-1)  # (B, C)
        return y, state
