"""The whole model: embedding, the blocks of one architecture (models.layers), a final norm and the task's head.

    model = build_model(ModelConfig(arch="tcnca", task="lm"))
    logits = model(tokens)                  # (B, L, V); classify / retrieval: (B, classes)
    model.generate(prompt, steps=100)       # token by token, O(1) per token in the length

Heads: a byte-level language model (tied embeddings), a classifier (mean pooling over the real
positions) and LRA's Retrieval head over two documents, [u, v, u - v, u * v].
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tcnsearch.models.config import ModelConfig
from tcnsearch.models.layers import FeedForward, MegaLayer, MixerBlock, SimpleBlock, make_norm, mega_linear


class SequenceModel(nn.Module):
    """Embedding, `n_layers` blocks each followed by the FFN, a final norm, and the task's head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.embed.weight, std=d**-0.5)
        self.embed_scale = math.sqrt(d)
        blocks = []
        for _ in range(cfg.n_layers):
            if cfg.arch in ("tcnca", "mega"):
                blocks.append(MegaLayer(cfg, "tcn" if cfg.arch == "tcnca" else "ema"))
            elif cfg.arch == "tcnca_simple":
                blocks.append(SimpleBlock(cfg))
            else:
                blocks.append(MixerBlock(cfg))
            blocks.append(FeedForward(cfg))
        self.blocks = nn.ModuleList(blocks)
        # Pre-norm leaves the residual stream unnormalised: one last norm before the head (MEGA's
        # final_norm; its enwik8 recipe drops the affine part, --no-affine-final-norm).
        self.final_norm = make_norm(cfg.norm, d, affine=cfg.final_norm_affine) if cfg.prenorm else nn.Identity()
        if cfg.task == "classify":
            self.head = mega_linear(d, cfg.num_classes)
        elif cfg.task == "retrieval":
            self.head = nn.Sequential(mega_linear(4 * d, d), nn.SiLU(), mega_linear(d, cfg.num_classes))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, L) -> features (B, L, D)."""
        x = F.dropout(self.embed(tokens) * self.embed_scale, self.cfg.dropout, self.training)
        for block in self.blocks:
            x = block(x, padding_mask) if not isinstance(block, FeedForward) else block(x)
        return self.final_norm(x)

    def _pool(self, tokens, padding_mask):
        h = self.encode(tokens, padding_mask)  # (B, L, D)
        if padding_mask is None:
            return h.mean(1)
        keep = (~padding_mask).unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)

    def forward(self, tokens, padding_mask=None, tokens2=None, padding_mask2=None) -> torch.Tensor:
        """lm: logits (B, L, V); classify: (B, classes); retrieval: (B, classes) from two documents."""
        if self.cfg.task == "lm":
            return self.encode(tokens, padding_mask) @ self.embed.weight.t()  # tied embeddings
        u = self._pool(tokens, padding_mask)
        if self.cfg.task == "classify":
            return self.head(u)
        if tokens2 is None:
            raise ValueError("the retrieval head needs two documents (tokens2)")
        v = self._pool(tokens2, padding_mask2)
        return self.head(torch.cat([u, v, u - v, u * v], dim=-1))


    # -- incremental decoding (causal language model) --------------------------------------------

    def init_state(self, batch: int) -> list[dict | None]:
        """Per block: the TCN's ring buffers (or the EMA's hidden state) and the chunk's keys/values."""
        if self.cfg.task != "lm":
            raise ValueError("incremental decoding needs the causal language model (task 'lm')")
        return [None if isinstance(b, FeedForward) else b.init_state(batch) for b in self.blocks]

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """One token (B,) -> next-token logits (B, V); equals the last row of the full forward."""
        x = self.embed(token)[:, None] * self.embed_scale  # (B, 1, D)
        for i, block in enumerate(self.blocks):
            if isinstance(block, FeedForward):
                x = block(x)
            else:
                x, state[i] = block.step(x, state[i])
        return (self.final_norm(x) @ self.embed.weight.t())[:, 0], state

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, steps: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample `steps` tokens after `prompt` (B, P), one token at a time at O(1) cost in the length."""
        state = self.init_state(prompt.shape[0])
        for t in range(prompt.shape[1]):
            logits, state = self.step(prompt[:, t], state)
        out = [prompt]
        for _ in range(steps):
            probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            out.append(nxt[:, None])
            logits, state = self.step(nxt, state)
        return torch.cat(out, dim=1)


def build_model(cfg: ModelConfig | dict) -> SequenceModel:
    """A model from its config (a ModelConfig or the dict of one)."""
    return SequenceModel(cfg if isinstance(cfg, ModelConfig) else ModelConfig(**cfg))
