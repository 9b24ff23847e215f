"""What a model needs in memory, from its config alone (nothing is built or allocated).

    num_parameters(cfg)                       # exactly build_model(cfg).num_parameters()
    activation_elements(cfg, batch, length)   # what one training forward keeps for its backward

The activations are counted tensor by tensor from what each op of `models.layers` keeps for the
backward pass (widths D = d_model, Z = z_dim, H = h_dim, F = ffn_dim, per token of the batch),
plus the chunked attention's (c, c) and, where it is materialised, (batch, chunks, c, c) terms
and the EMA's kernel (C', N, L). tests/models/test_memory.py checks them against what autograd
really saves on small models of every architecture.
"""

from __future__ import annotations

from tcnsearch.models.config import ModelConfig

BOOL = 0.25  # a dropout or padding mask: one byte, counted in float32 elements


def _norm_params(cfg: ModelConfig, affine: bool = True) -> int:
    if not affine:
        return 0
    return 1 if cfg.norm == "scalenorm" else 2 * cfg.d_model


def _bias_params(cfg: ModelConfig, width: int) -> int:
    if cfg.rel_pos == "simple":
        return 2 * cfg.chunk_size - 1
    return 2 * width if cfg.rel_pos == "rotary" else 0


def _mixer_params(cfg: ModelConfig, kind: str) -> int:
    d = cfg.d_model
    if kind == "tcn":
        t = cfg.tcn
        return t.depth * t.per_block * t.kernel_size * d + d
    rows = d if cfg.causal else 2 * d
    return 4 * rows * cfg.ema_dim + d


def num_parameters(cfg: ModelConfig) -> int:
    """The model's parameter count (build_model(cfg).num_parameters(), without building it)."""
    d, z, h, f = cfg.d_model, cfg.z_dim, cfg.h_dim, cfg.ffn_dim
    ffn = _norm_params(cfg) + d * f + f + f * d + d
    if cfg.arch in ("tcnca", "mega"):
        block = (_norm_params(cfg) + _mixer_params(cfg, "tcn" if cfg.arch == "tcnca" else "ema")
                 + d * h + h + d * (2 * d + z + h) + 2 * d + z + h + h * d + d + 4 * z + _bias_params(cfg, z))
    elif cfg.arch == "tcnca_simple":
        t = cfg.tcn
        block = (2 * _norm_params(cfg) + t.depth * t.per_block * t.kernel_size * d + 3 * d * d + 3 * d
                 + d * d + d + _bias_params(cfg, d))
    else:
        block = _norm_params(cfg) + _mixer_params(cfg, "tcn")
    head = {"lm": 0, "classify": d * cfg.num_classes + cfg.num_classes,
            "retrieval": 4 * d * d + d + d * cfg.num_classes + cfg.num_classes}[cfg.task]
    final = _norm_params(cfg, cfg.final_norm_affine) if cfg.prenorm else 0
    return cfg.vocab_size * d + cfg.n_layers * (block + ffn) + final + head


def _attention(cfg: ModelConfig, batch: int, length: int, qk: int, v: int, padded: bool) -> float:
    """Elements the chunked attention keeps: its inputs and output, and its scores where materialised."""
    c = min(cfg.chunk_size, length)
    chunks = -(-length // c)
    tokens = batch * chunks * c  # the last chunk padded to full
    kept = tokens * (2 * qk + 2 * v) + 4 * c * c  # q, k, v, out; the (c, c) bias and its index
    if chunks * c != length:
        kept += tokens * (2 * qk + v)  # the padded copies of q, k, v
    if cfg.attention == "laplace":
        kept += tokens * c * (2 + BOOL)  # the scores before the laplace and the weights; the mask
    elif padded or chunks * c != length:
        kept += tokens * c  # a (batch, chunks, c, c) mask
    if cfg.attention_dropout:  # the mask, and the softmax's weights that it drops from
        kept += tokens * c * (BOOL if cfg.attention == "laplace" else 1 + BOOL)
    return kept


def _tcn(cfg: ModelConfig, tokens: int) -> float:
    t = cfg.tcn
    return tokens * cfg.d_model * 2 * t.depth * t.per_block  # each convolution's input and pre-activation


def _ema(cfg: ModelConfig, batch: int, length: int) -> float:
    rows = cfg.d_model * (1 if cfg.causal else 2)
    taps = length if cfg.ema_truncation is None else min(cfg.ema_truncation, length)
    points = length + taps if cfg.causal else length + 3 * taps  # the FFT's length: no tap wraps around
    # the kernel's (C', N, taps) factors, the input's spectrum and its copy, the kernel's
    return 2 * rows * cfg.ema_dim * taps + 2 * batch * cfg.d_model * points + 4 * rows * taps


def _dropouts(cfg: ModelConfig, tokens: int, widths: list[tuple[float, int]]) -> float:
    return sum(tokens * w * (1 + BOOL) for p, w in widths if p)


def activation_elements(cfg: ModelConfig, batch: int, length: int, padded: bool = False) -> float:
    """Elements (of the compute dtype) one training forward of `batch` examples of `length` keeps for its
    backward pass; `padded`: the batch carries a padding mask (LRA). A retrieval example is two documents,
    each encoded on its own."""
    encoded = _encoder(cfg, batch, length, padded)
    return 2 * encoded + batch * 5 * cfg.d_model if cfg.task == "retrieval" else encoded


def _encoder(cfg: ModelConfig, batch: int, length: int, padded: bool) -> float:
    d, z, h, f = cfg.d_model, cfg.z_dim, cfg.h_dim, cfg.ffn_dim
    tokens = batch * length
    ffn = tokens * (2.5 * d + 2.25 * f) + _dropouts(cfg, tokens, [(cfg.dropout, d), (cfg.activation_dropout, f)])
    if cfg.arch in ("tcnca", "mega"):
        mixer = _tcn(cfg, tokens) if cfg.arch == "tcnca" else _ema(cfg, batch, length)
        block = (tokens * (10 * d + 2 * z + 4 * h) + mixer + _attention(cfg, batch, length, z, h, padded)
                 + _dropouts(cfg, tokens, [(cfg.dropout, d), (cfg.dropout, d), (cfg.hidden_dropout, h)]))
    elif cfg.arch == "tcnca_simple":
        block = (tokens * 6.5 * d + _tcn(cfg, tokens) + _attention(cfg, batch, length, d, d, padded)
                 + _dropouts(cfg, tokens, [(cfg.dropout, d), (cfg.dropout, d), (cfg.hidden_dropout, d)]))
    else:
        block = tokens * 2 * d + _tcn(cfg, tokens) + _dropouts(cfg, tokens, [(cfg.dropout, d)])
    head = tokens * (2 * d + cfg.vocab_size) if cfg.task == "lm" else tokens * d
    embed = tokens * 2 + _dropouts(cfg, tokens, [(cfg.dropout, d)])  # the token ids (int64)
    return embed + cfg.n_layers * (block + ffn) + head


def mixer_elements(cfg: ModelConfig, batch: int, length: int, kind: str = "tcn") -> float:
    """Elements the sequence mixer alone (the TCN, or with kind "ema" MEGA's EMA) keeps for its backward."""
    return _tcn(cfg, batch * length) if kind == "tcn" else _ema(cfg, batch, length)
