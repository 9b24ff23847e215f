"""What is timed at each level: the TCN side and the EMA side of one comparison.

    op     the TCN operator against MultiHeadEMA, on (B, L, C) activations
    layer  one block of the study's model (MEGA's gated layer for tcnca, TCNCA-simple's block, ...)
           with the TCN against the same block with the EMA in the TCN's place
    model  the study's whole model: a training step (forward, loss, backward, AdamW step) and an
           inference forward, with the TCN against the same model with the EMA in its place

Every level gives two workloads per side: "fwd" (a forward without autograd; inference) and
"fwdbwd" (forward and backward; at model level a whole training step, `train.train_step` itself).
The EMA side is always the TCN side with each TCN swapped for MEGA's EMA, so everything else is
the same code. Every level runs in the run's precision as training does: float32 parameters, the
forward under autocast (bf16, or fp16 with the gradient scaler), nothing under it in fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from tcnsearch import hardware
from tcnsearch.ops import TCN, MultiHeadEMA
from tcnsearch.profile.candidates import ProfileSpec
from tcnsearch.structure import Structure

METRICS = ("fwd", "fwdbwd")


@dataclass(frozen=True)
class Shape:
    """What a workload is timed at (the TCN side ignores ema_dim)."""

    batch: int
    channels: int
    length: int
    ema_dim: int
    bidirectional: bool


@dataclass
class Workload:
    """One side of a comparison: a callable per metric."""

    fns: dict[str, Callable[[], None]]


def swap_tcn_for_ema(module: nn.Module, ema_dim: int) -> nn.Module:
    """`module` with every TCN replaced by MEGA's EMA of the same width and direction (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, TCN):
            ema = MultiHeadEMA(child.channels, ndim=ema_dim, bidirectional=not child.causal)
            setattr(module, name, ema.to(child.weight.device))
        else:
            swap_tcn_for_ema(child, ema_dim)
    return module


def _block(cfg) -> nn.Module:
    from tcnsearch.models import MegaLayer, MixerBlock, SimpleBlock

    if cfg.arch in ("tcnca", "mega"):
        return MegaLayer(cfg, "tcn")
    return SimpleBlock(cfg) if cfg.arch == "tcnca_simple" else MixerBlock(cfg)


def _module_workload(module: nn.Module, x: torch.Tensor, device, precision: str) -> Workload:
    """An operator or a layer on (B, L, C) activations: a forward, and a forward with its backward."""
    x_grad = x.detach().requires_grad_()
    grad = torch.randn_like(x)

    def fwd():
        with torch.no_grad(), hardware.autocast(device, precision):
            module(x)

    def fwdbwd():
        with hardware.autocast(device, precision):
            y = module(x_grad)
        y.backward(grad.to(y.dtype))
        x_grad.grad = None
        module.zero_grad(set_to_none=True)

    return Workload({"fwd": fwd, "fwdbwd": fwdbwd})


def _model_workload(model: nn.Module, shape: Shape, device, precision: str) -> Workload:
    from tcnsearch.train import make_optimizer, train_step

    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(cfg.vocab_size, (shape.batch, shape.length), generator=gen).to(device)
    inputs = {"tokens": tokens}
    if cfg.task == "lm":
        y = torch.randint(cfg.vocab_size, (shape.batch, shape.length), generator=gen).to(device)
    else:
        y = torch.randint(cfg.num_classes, (shape.batch,), generator=gen).to(device)
        if cfg.task == "retrieval":
            inputs["tokens2"] = tokens.flip(1)
    optimizer = make_optimizer(model, lr=1e-4, weight_decay=0.1)
    scaler = hardware.grad_scaler(device, precision)

    def fwd():  # what inference costs: eval mode, no autograd
        model.eval()
        with torch.no_grad(), hardware.autocast(device, precision):
            model(**inputs)

    def fwdbwd():  # one training step, the one the study's trials take
        model.train()
        train_step(model, optimizer, inputs, y, device=device, precision=precision, scaler=scaler, grad_clip=1.0)

    return Workload({"fwd": fwd, "fwdbwd": fwdbwd})


def build(spec: ProfileSpec, shape: Shape, candidate: Structure | None, device: torch.device,
          precision: str) -> Workload:
    """The workload of `candidate` (None: the EMA baseline) at `shape` and the spec's level, in `precision`
    (resolved: fp32, bf16 or fp16).

    The baseline of the layer and model levels is built from the same configuration as the
    candidates' (any TCN structure; it is swapped out), so it is the same for every candidate.
    """
    torch.manual_seed(0)
    if spec.level == "op":
        if candidate is None:
            # MEGA runs its EMA's FFT in float32 whatever the autocast (ops/ema.py).
            module = MultiHeadEMA(shape.channels, ndim=shape.ema_dim, bidirectional=shape.bidirectional)
        else:
            module = TCN(shape.channels, candidate.kernel_size, candidate.dilation_factor, candidate.depth,
                         candidate.per_block, causal=not shape.bidirectional)
        x = torch.randn(shape.batch, shape.length, shape.channels, device=device)
        return _module_workload(module.to(device).train(), x, device, precision)

    cfg = spec.build_model_config(candidate or Structure(2, 1, 1, 1))
    if spec.level == "layer":
        module = _block(cfg)
    else:
        from tcnsearch.models import build_model

        module = build_model(cfg)
    if candidate is None:
        swap_tcn_for_ema(module, cfg.ema_dim)
    module = module.to(device).train()
    if spec.level == "layer":
        x = torch.randn(shape.batch, shape.length, cfg.d_model, device=device)
        return _module_workload(module, x, device, precision)
    return _model_workload(module, shape, device, precision)
