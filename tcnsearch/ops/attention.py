"""MEGA's chunked single-head attention and its relative position biases.

The sequence is cut into chunks of `chunk_size` positions (the last padded to a full chunk)
and each position attends only inside its own chunk, which makes the cost linear in the length.
With chunk_size >= length it is ordinary full attention. Scores, as in MEGA:

    softmax:  softmax(Q K^T / sqrt(Z) + bias + mask)
    laplace:  laplace(Q K^T / n + bias) * mask,  n = number of keys a query may see,
              laplace(x) = 0.5 * (1 + erf((x - mu) / (sigma * sqrt 2))),  mu = sqrt(1/2), sigma = sqrt(1/(4 pi))

`bias` is a (c, c) relative position bias shared by every chunk: SimpleRelativePositionalBias
(one learned scalar per offset, w[c-1+j-i]) or RotaryRelativePositionalBias (MEGA's rotary form,
used for language modelling).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTENTION_ACTIVATIONS = ("softmax", "laplace")


class SimpleRelativePositionalBias(nn.Module):
    """bias[i, j] = w[max_positions - 1 + j - i], one learned scalar per relative offset."""

    def __init__(self, max_positions: int):
        super().__init__()
        self.max_positions = max_positions
        self.rel_pos_bias = nn.Parameter(torch.empty(2 * max_positions - 1))
        nn.init.normal_(self.rel_pos_bias, mean=0.0, std=0.02)

    def forward(self, length: int) -> torch.Tensor:
        """(length, length) bias; length <= max_positions."""
        if length > self.max_positions:
            raise ValueError(f"length {length} exceeds max_positions {self.max_positions}")
        pos = torch.arange(length, device=self.rel_pos_bias.device)
        return self.rel_pos_bias[self.max_positions - 1 + pos[None, :] - pos[:, None]]


class RotaryRelativePositionalBias(nn.Module):
    """MEGA's rotary bias: bias[i, j] = <rot_i(a), rot_j(b)> for learned vectors a, b of width
    `dim`; rotating both by their positions makes the product depend on j - i only."""

    def __init__(self, dim: int, max_positions: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary bias needs an even dim, got {dim}")
        self.dim, self.max_positions = dim, max_positions
        half = dim // 2
        freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / half))
        angle = torch.arange(max_positions, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
        self.register_buffer("sine", torch.sin(angle), persistent=False)  # (P, dim/2)
        self.register_buffer("cosine", torch.cos(angle), persistent=False)
        self.alpha = nn.Parameter(torch.empty(1, dim))
        self.beta = nn.Parameter(torch.empty(1, dim))
        nn.init.normal_(self.alpha, mean=0.0, std=0.02)
        nn.init.normal_(self.beta, mean=0.0, std=0.02)

    def _rotate(self, v: torch.Tensor) -> torch.Tensor:
        n = v.shape[0]
        v1, v2 = torch.chunk(v, 2, dim=-1)
        sin, cos = self.sine[:n].to(v), self.cosine[:n].to(v)
        return torch.cat([v1 * cos - v2 * sin, v2 * cos + v1 * sin], dim=1)

    def forward(self, length: int) -> torch.Tensor:
        if length > self.max_positions:
            raise ValueError(f"length {length} exceeds max_positions {self.max_positions}")
        a = self._rotate(self.alpha.expand(length, self.dim))
        b = self._rotate(self.beta.expand(length, self.dim))
        return a @ b.t()


def laplace(x: torch.Tensor, mu: float = 0.707107, sigma: float = 0.282095) -> torch.Tensor:
    """MEGA's laplace attention function: a smooth step that approximates relu**2 in range."""
    return 0.5 * (1.0 + torch.erf((x - mu) / (sigma * math.sqrt(2.0))))


def chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int,
    *,
    causal: bool = False,
    activation: str = "softmax",
    bias: nn.Module | None = None,
    key_padding_mask: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Attention inside chunks of `chunk_size` positions.

    Args:
        q, k: (B, L, Z) queries and keys. v: (B, L, H) values.
        chunk_size: c; positions attend only within their chunk. c >= L is full attention.
        causal: mask keys after the query (language modelling).
        activation: "softmax" or "laplace".
        bias: a relative position bias module, called with the chunk length, or None.
        key_padding_mask: (B, L), True at padded positions, which no query attends to.
        dropout: attention dropout probability (pass 0 in evaluation).

    Returns:
        (B, L, H).
    """
    if activation not in ATTENTION_ACTIVATIONS:
        raise ValueError(f"activation must be one of {ATTENTION_ACTIVATIONS}, got {activation!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    batch, length, zdim = q.shape
    c = min(chunk_size, length)
    n_chunks = -(-length // c)
    pad = n_chunks * c - length

    valid = torch.ones(batch, length, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        valid = ~key_padding_mask
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        valid = F.pad(valid, (0, pad), value=False)
    q = q.view(batch, n_chunks, c, zdim)
    k = k.view(batch, n_chunks, c, zdim)
    v = v.view(batch, n_chunks, c, v.shape[-1])

    rel = bias(c) if bias is not None else torch.zeros(c, c, device=q.device, dtype=q.dtype)
    if activation == "softmax" and key_padding_mask is None and not pad:
        # Every key exists: one (c, c) mask serves every chunk (a (B, n, c, c) one is 0.5 GB a layer at
        # MEGA's enwik8 size), and without a bias none at all, which lets CUDA use flash attention.
        if bias is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout)
        else:
            mask = rel.to(q.dtype)
            if causal:
                mask = mask.masked_fill(~torch.ones(c, c, dtype=torch.bool, device=q.device).tril(), float("-inf"))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return out.reshape(batch, n_chunks * c, -1)[:, :length]

    allowed = valid.view(batch, n_chunks, 1, c)  # (B, n, 1, c): keys that exist
    if causal:
        allowed = allowed & torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    # A query whose chunk has no visible key (possible only with padding) gets a zero output.
    has_key = allowed.any(-1, keepdim=True)  # (B, n, c or 1, 1)

    if activation == "softmax":
        mask = torch.where(allowed, rel.to(q.dtype), float("-inf"))
        mask = torch.where(has_key, mask, 0.0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = out * has_key
    else:
        seen = allowed.sum(-1, keepdim=True).clamp(min=1).to(q.dtype)  # (B, n, c or 1, 1)
        weights = laplace(q @ k.transpose(-1, -2) / seen + rel) * allowed
        if dropout:
            weights = F.dropout(weights, dropout, True)
        out = weights @ v
    return out.reshape(batch, n_chunks * c, -1)[:, :length]


class ChunkedAttention(nn.Module):
    """chunked_attention with its relative position bias as a module.

    Args:
        qk_dim: Z, the query/key width (the rotary bias needs it even).
        chunk_size: c.
        causal: causal mask (language modelling).
        activation: "softmax" or "laplace".
        rel_pos: "simple", "rotary" or None.
        dropout: attention dropout.
    """

    def __init__(self, qk_dim: int, chunk_size: int, causal: bool = False,
                 activation: str = "softmax", rel_pos: str | None = "simple", dropout: float = 0.0):
        super().__init__()
        if activation not in ATTENTION_ACTIVATIONS:
            raise ValueError(f"activation must be one of {ATTENTION_ACTIVATIONS}, got {activation!r}")
        self.chunk_size, self.causal, self.activation, self.dropout = chunk_size, causal, activation, dropout
        if rel_pos == "simple":
            self.bias: nn.Module | None = SimpleRelativePositionalBias(chunk_size)
        elif rel_pos == "rotary":
            self.bias = RotaryRelativePositionalBias(qk_dim, chunk_size)
        elif rel_pos is None:
            self.bias = None
        else:
            raise ValueError(f"rel_pos must be 'simple', 'rotary' or None, got {rel_pos!r}")

    def init_cache(self) -> dict:
        """Recurrent state for step(): the current chunk's keys and values."""
        if not self.causal:
            raise ValueError("step() needs causal attention")
        return {"k": None, "v": None, "position": 0}

    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        """One position: q, k (B, Z), v (B, H) -> (B, H); equals row t of the causal forward.

        The cache holds only the current chunk, so the cost per token is O(chunk_size), not O(t).
        """
        i = cache["position"] % self.chunk_size  # row inside the chunk
        if i == 0:
            cache["k"], cache["v"] = k[:, None], v[:, None]
        else:
            cache["k"] = torch.cat([cache["k"], k[:, None]], dim=1)  # (B, i+1, Z)
            cache["v"] = torch.cat([cache["v"], v[:, None]], dim=1)
        cache["position"] += 1
        rel = self.bias(i + 1)[i] if self.bias is not None else 0.0  # bias[i, j] depends on j - i only
        scores = torch.einsum("bz,bjz->bj", q, cache["k"])
        if self.activation == "softmax":
            weights = torch.softmax(scores / math.sqrt(q.shape[-1]) + rel, dim=-1)
        else:
            weights = laplace(scores / (i + 1) + rel)
        return torch.einsum("bj,bjh->bh", weights, cache["v"]), cache

    def forward(self, q, k, v, key_padding_mask=None):
        return chunked_attention(
            q, k, v, self.chunk_size, causal=self.causal, activation=self.activation,
            bias=self.bias, key_padding_mask=key_padding_mask,
            dropout=self.dropout if self.training else 0.0,
        )
