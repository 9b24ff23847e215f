"""The layers of TCNCA, MEGA, TCNCA-simple and TCN-MLP, on (batch, length, channels).

The MEGA gated layer (TCNCA supplementary Fig. A1, MEGA Ma et al. 2023) with a pluggable
sequence mixer: the TCN gives TCNCA, the EMA gives the MEGA baseline, and everything around the
mixer is shared code, so the two compare fairly. With D = d_model, Z = z_dim, H = h_dim:

    x  = norm(X) if prenorm else X                          residual R = X
    v  = silu(x W_v + b_v)                                   (B, L, H)
    x' = dropout(silu(SEQ(x) + omega * x))                   SEQ = TCN or EMA
    [u | zr | hx] = x' W_mx + b_mx                           widths D, Z + H, D
    phi = sigmoid(u);  [z | r] = silu(zr)
    q = kappa_q * z + mu_q;  k = kappa_k * z + mu_k
    o  = chunked_attention(q, k, dropout_h(v))
    h  = dropout(silu(hx + (o * r) W_h + b_h))
    Y  = R + phi * (h - R);  Y = norm(Y) if postnorm

Each layer is followed by a normalized feed-forward block, x + dropout(W2 dropout_a(silu(W1 norm(x)))).

Dropouts, named and placed as in MEGA's code (fairseq `MovingAverageGatedAttention` and
`NormalizedFeedForwardNetwork`, which MEGA builds with `hidden_dropout=activation_dropout`):
`dropout` on the embedding, the mixer's output x', the gated output h and the FFN's output;
`hidden_dropout` (dropout_h) on the values v; `attention_dropout` on the attention weights;
`activation_dropout` (dropout_a) on the FFN's hidden activation. TCNCA-simple (Fig. A2) is
x + TCN, then x + attention, then x + FFN; TCN-MLP drops the attention and keeps the mixer.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from tcnsearch.models.config import ModelConfig
from tcnsearch.ops import TCN, ChunkedAttention, MultiHeadEMA


class ScaleNorm(nn.Module):
    """x / rms(x) * g, one learned scalar g (MEGA's ScaleNorm); without `affine`, no g."""

    def __init__(self, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.scalar = nn.Parameter(torch.ones(1)) if affine else None

    def forward(self, x):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x if self.scalar is None else x * self.scalar


class SequenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm over channels of (B, L, C)."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def make_norm(kind: str, dim: int, affine: bool = True) -> nn.Module:
    """The norm `kind` over the last dim; `affine=False` drops its learned scale and shift (MEGA's SequenceNorm)."""
    return {"layernorm": lambda: nn.LayerNorm(dim, elementwise_affine=affine),
            "scalenorm": lambda: ScaleNorm(affine=affine),
            "batchnorm": lambda: SequenceBatchNorm(dim, affine=affine)}[kind]()


def mega_linear(i: int, o: int) -> nn.Linear:
    layer = nn.Linear(i, o)
    nn.init.normal_(layer.weight, std=0.02)  # MEGA's initialisation
    nn.init.zeros_(layer.bias)
    return layer


class Mixer(nn.Module):
    """silu(SEQ(x) + omega * x): the TCN (TCNCA) or the EMA (MEGA) with MEGA's skip and SiLU."""

    def __init__(self, cfg: ModelConfig, kind: Literal["tcn", "ema"]):
        super().__init__()
        if kind == "tcn":
            t = cfg.tcn
            self.seq: nn.Module = TCN(cfg.d_model, t.kernel_size, t.dilation_factor, t.depth, t.per_block,
                                      causal=cfg.causal, activation=t.activation)
        else:
            self.seq = MultiHeadEMA(cfg.d_model, ndim=cfg.ema_dim, bidirectional=not cfg.causal,
                                    truncation=cfg.ema_truncation)
        self.omega = nn.Parameter(torch.randn(cfg.d_model))

    def forward(self, x, padding_mask=None):
        return F.silu(self.seq(x, padding_mask=padding_mask) + self.omega * x)

    def step(self, x_t, state):
        y, state = self.seq.step(x_t, state)
        return F.silu(y + self.omega * x_t), state


class FeedForward(nn.Module):
    """MEGA's normalized feed-forward block: x + dropout(W2 dropout_a(silu(W1 norm(x)))).

    dropout_a is `activation_dropout`: MEGA builds this block with `hidden_dropout=args.activation_dropout`,
    so the gated unit's `hidden_dropout` never reaches it.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = make_norm(cfg.norm, cfg.d_model)
        self.fc1, self.fc2 = mega_linear(cfg.d_model, cfg.ffn_dim), mega_linear(cfg.ffn_dim, cfg.d_model)
        self.prenorm, self.dropout, self.activation_dropout = cfg.prenorm, cfg.dropout, cfg.activation_dropout

    def forward(self, x):
        residual = x
        if self.prenorm:
            x = self.norm(x)
        x = F.dropout(F.silu(self.fc1(x)), self.activation_dropout, self.training)  # (B, L, FFN)
        x = residual + F.dropout(self.fc2(x), self.dropout, self.training)
        return x if self.prenorm else self.norm(x)


class MegaLayer(nn.Module):
    """The gated layer of the module docstring, with the TCN or the EMA as SEQ."""

    def __init__(self, cfg: ModelConfig, mixer: Literal["tcn", "ema"]):
        super().__init__()
        d, z, h = cfg.d_model, cfg.z_dim, cfg.h_dim
        self.cfg = cfg
        self.norm = make_norm(cfg.norm, d)
        self.mixer = Mixer(cfg, mixer)
        self.v_proj = mega_linear(d, h)
        self.mx_proj = mega_linear(d, d + z + h + d)
        self.h_proj = mega_linear(h, d)
        self.kappa = nn.Parameter(torch.randn(2, z) * 0.02)  # q and k scales (MEGA's gamma)
        self.mu = nn.Parameter(torch.zeros(2, z))  # and offsets (MEGA's beta)
        self.attention = ChunkedAttention(z, cfg.chunk_size, causal=cfg.causal, activation=cfg.attention,
                                          rel_pos=cfg.rel_pos, dropout=cfg.attention_dropout)

    def _gates(self, x, mx):
        """Everything but the attention: (v, phi, q, k, r, hx) from the normed input and the mixer."""
        cfg = self.cfg
        v = F.silu(self.v_proj(x))  # (B, L, H)
        mx = F.dropout(mx, cfg.dropout, self.training)
        u, zr, hx = torch.split(self.mx_proj(mx), [cfg.d_model, cfg.z_dim + cfg.h_dim, cfg.d_model], dim=-1)
        phi = torch.sigmoid(u)
        z, r = torch.split(F.silu(zr), [cfg.z_dim, cfg.h_dim], dim=-1)
        qk = z.unsqueeze(-2) * self.kappa + self.mu  # (B, L, 2, Z)
        q, k = qk.unbind(-2)
        v = F.dropout(v, cfg.hidden_dropout, self.training)
        return v, phi, q, k, r, hx

    def _output(self, residual, o, phi, r, hx):
        h = F.silu(hx + self.h_proj(o * r))
        h = F.dropout(h, self.cfg.dropout, self.training)
        y = torch.addcmul(residual, phi, h - residual)  # R + phi * (h - R)
        return y if self.cfg.prenorm else self.norm(y)

    def forward(self, x, padding_mask=None):
        residual = x
        if self.cfg.prenorm:
            x = self.norm(x)
        v, phi, q, k, r, hx = self._gates(x, self.mixer(x, padding_mask))
        o = self.attention(q, k, v, key_padding_mask=padding_mask)
        return self._output(residual, o, phi, r, hx)

    def init_state(self, batch: int) -> dict:
        return {"mixer": self.mixer.seq.init_state(batch), "attention": self.attention.init_cache()}

    def step(self, x, state):
        """One token, x (B, 1, D) -> (B, 1, D)."""
        residual = x
        if self.cfg.prenorm:
            x = self.norm(x)
        mx, state["mixer"] = self.mixer.step(x[:, 0], state["mixer"])
        v, phi, q, k, r, hx = self._gates(x, mx[:, None])
        o, state["attention"] = self.attention.step(q[:, 0], k[:, 0], v[:, 0], state["attention"])
        return self._output(residual, o[:, None], phi, r, hx), state


class SimpleBlock(nn.Module):
    """TCNCA-simple (Fig. A2): x + TCN(norm x), then x + attention(norm x), then the FFN."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        t, d = cfg.tcn, cfg.d_model
        self.norm1, self.norm2 = make_norm(cfg.norm, d), make_norm(cfg.norm, d)
        self.tcn = TCN(d, t.kernel_size, t.dilation_factor, t.depth, t.per_block, causal=cfg.causal,
                       activation=t.activation, dropout=cfg.hidden_dropout)
        self.qkv = mega_linear(d, 3 * d)
        self.out = mega_linear(d, d)
        self.attention = ChunkedAttention(d, cfg.chunk_size, causal=cfg.causal, activation=cfg.attention,
                                          rel_pos=cfg.rel_pos, dropout=cfg.attention_dropout)
        self.dropout = cfg.dropout

    def forward(self, x, padding_mask=None):
        h = self.norm1(x)
        # The TCN carries its own residual connections: add only its residual branches to the stream.
        x = x + F.dropout(self.tcn(h, padding_mask=padding_mask) - h, self.dropout, self.training)
        q, k, v = self.qkv(self.norm2(x)).chunk(3, dim=-1)
        return x + F.dropout(self.out(self.attention(q, k, v, key_padding_mask=padding_mask)), self.dropout,
                             self.training)

    def init_state(self, batch: int) -> dict:
        return {"tcn": self.tcn.init_state(batch), "attention": self.attention.init_cache()}

    def step(self, x, state):
        h = self.norm1(x)
        y, state["tcn"] = self.tcn.step(h[:, 0], state["tcn"])
        x = x + (y[:, None] - h)
        q, k, v = self.qkv(self.norm2(x))[:, 0].chunk(3, dim=-1)
        o, state["attention"] = self.attention.step(q, k, v, state["attention"])
        return x + self.out(o)[:, None], state


class MixerBlock(nn.Module):
    """TCN-MLP's block: x + dropout(silu(TCN(norm x) + omega * norm x)), no attention."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = make_norm(cfg.norm, cfg.d_model)
        self.mixer = Mixer(cfg, "tcn")
        self.prenorm, self.dropout = cfg.prenorm, cfg.dropout

    def forward(self, x, padding_mask=None):
        h = self.norm(x) if self.prenorm else x
        y = x + F.dropout(self.mixer(h, padding_mask), self.dropout, self.training)
        return y if self.prenorm else self.norm(y)

    def init_state(self, batch: int) -> dict:
        return {"mixer": self.mixer.seq.init_state(batch)}

    def step(self, x, state):
        h = self.norm(x) if self.prenorm else x
        y, state["mixer"] = self.mixer.step(h[:, 0], state["mixer"])
        y = x + y[:, None]
        return (y if self.prenorm else self.norm(y)), state
