"""What a profile holds in memory, estimated from its spec before any workload is built.

A profile keeps, per shape, up to `measure.POOL` candidate workloads and the EMA baseline resident
(their modules, inputs and output gradients; at model level the model, its gradients and AdamW's
moments), and runs one forward and backward at a time on top. The largest length, with the
deepest TCN of the grid, sets the peak (`check_memory` refuses a profile whose estimate exceeds
what the device has available).
"""

from __future__ import annotations

import torch

from tcnsearch import hardware
from tcnsearch.errors import UserError
from tcnsearch.models import ModelConfig
from tcnsearch.models.memory import activation_elements, mixer_elements, num_parameters
from tcnsearch.profile.candidates import ProfileSpec
from tcnsearch.profile.measure import POOL
from tcnsearch.structure import Structure

HEADROOM = 0.9


def _deepest(spec: ProfileSpec) -> Structure:
    """The grid's structure with the most convolutions (its activations are the TCN side's largest)."""
    return Structure(max(spec.kernel_sizes), min(spec.dilation_factors), max(spec.depths), max(spec.per_block))


def _one(spec: ProfileSpec, cfg: ModelConfig, batch: int, length: int) -> tuple[float, float]:
    """(resident bytes of one workload, bytes of its forward and backward) at one shape."""
    if spec.level == "op":
        op = cfg.model_copy(update={"d_model": spec.channels, "ema_dim": spec.ema_dim})
        resident = 2 * batch * length * spec.channels  # the input and the output's gradient
        peak = max(mixer_elements(op, batch, length, "tcn"), mixer_elements(op, batch, length, "ema"))
        return 4 * resident, 4 * (peak + 2 * resident)
    one_layer = cfg.model_copy(update={"n_layers": 1})
    if spec.level == "layer":
        resident = num_parameters(one_layer) + 2 * batch * length * cfg.d_model
        return 4 * resident, 4 * 2 * activation_elements(one_layer, batch, length)
    kept = activation_elements(cfg, batch, length)
    logits = batch * length * cfg.vocab_size * 2 if cfg.task == "lm" else 0
    return 16 * num_parameters(cfg), 4 * (kept * (1 + 1 / (cfg.n_layers + 1)) + logits)


def estimate_profile(spec: ProfileSpec) -> float:
    """Bytes the profile of `spec` holds at its peak: every shape's resident workloads, and the largest
    forward and backward."""
    cfg = spec.build_model_config(_deepest(spec))
    resident = peak = 0.0
    workloads = min(POOL, spec.grid_size) + 1  # and the baseline
    for length in spec.lengths:
        held, step = _one(spec, cfg, spec.batch, length)
        resident += workloads * held
        peak = max(peak, step)
    return resident + peak


def check_memory(spec: ProfileSpec, device: torch.device) -> None:
    """Refuse a profile whose estimate exceeds what `device` has available, before anything is built.

    Raises:
        UserError: naming the estimate, the limit and what to lower.
    """
    limit = hardware.available_memory(device)
    need = estimate_profile(spec)
    if limit is not None and need > HEADROOM * limit:
        raise UserError(f"the profile needs ~{hardware.format_bytes(need)} (level {spec.level}, lengths up to "
                        f"{max(spec.lengths)}, batch {spec.batch} x {spec.channels} channels), this machine has "
                        f"{hardware.format_bytes(limit)} available; lower --lengths, --batch or --channels")
