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
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadEMA(nn.Module):
    """MEGA's EMA on (batch, length, channels).

    Args:
        channels: C, the embedding width.
        ndim: N, EMA dimensions per channel (MEGA: 16 on enwik8; the paper's runtime test: 8).
        bidirectional: add a second EMA over the reversed sequence (for classification).
    """

    def __init__(self, channels: int, ndim: int = 16, bidirectional: bool = False):
        super().__init__()
        if channels < 1 or ndim < 1:
            raise ValueError(f"channels and ndim must be >= 1, got {channels}, {ndim}")
        self.channels, self.ndim, self.bidirectional = channels, ndim, bidirectional
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
        return f"channels={self.channels}, ndim={self.ndim}, bidirectional={self.bidirectional}"

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(p, q), each (C', N, 1): the input weight and the decay."""
        p = torch.sigmoid(self.delta)
        q = 1.0 - p * torch.sigmoid(self.alpha)
        return p, q

    def kernel(self, length: int) -> torch.Tensor:
        """The convolution kernel k (C', length), generated as MEGA does."""
        p, q = self.coefficients()
        vander = torch.arange(length).to(p).view(1, 1, length) * torch.log(q)  # (C', N, L)
        kernel = (p * self.beta) * torch.exp(vander)
        return torch.einsum("dnl,dn->dl", kernel, self.gamma * self.scale)

    def convolve(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """y = k * x by FFT in float32. x: (B, L, C), k: (C', L) -> (B, L, C)."""
        length = x.shape[1]
        h = x.transpose(1, 2)  # (B, C, L)
        fft_len, start = length, 0
        if self.bidirectional:
            k1, k2 = torch.split(k, [self.channels, self.channels], dim=0)
            # One kernel of 2L-1 taps centred at lag 0: k1 looks back, k2 (flipped) ahead.
            k = F.pad(k1, (length - 1, 0)) + F.pad(k2.flip(-1), (0, length - 1))
            h = F.pad(h, (length - 1, 0))
            fft_len = fft_len + length - 1
            start = 2 * length - 2
        k_f = torch.fft.rfft(k.float(), n=2 * fft_len)
        x_f = torch.fft.rfft(h.float(), n=2 * fft_len)
        y = torch.fft.irfft(x_f * k_f, n=2 * fft_len)[..., start : start + length]  # (B, C, L)
        return y.type_as(x).transpose(1, 2)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, C) -> y (B, L, C). padding_mask: (B, L), True at padded positions (zeroed)."""
        if padding_mask is not None:
            x = x * (~padding_mask).unsqueeze(-1).to(x.dtype)
        return self.convolve(x, self.kernel(x.shape[1]))

    # -- recurrent inference -----------------------------------------------------------------

    def init_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """The hidden state h, (B, C, N), zero."""
        if self.bidirectional:
            raise ValueError("step() needs a causal (unidirectional) EMA")
        return torch.zeros(batch, self.channels, self.ndim,
                           device=device or self.delta.device, dtype=dtype or self.delta.dtype)

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: x_t (B, C), h (B, C, N) -> (y_t (B, C), new h)."""
        p, q = self.coefficients()  # (C, N, 1)
        h = (p * self.beta).squeeze(-1) * x_t.unsqueeze(-1) + q.squeeze(-1) * h  # (B, C, N)
        y = (h * (self.gamma * self.scale)).sum(-1)
        return y, h
