"""Checkpoints: a run's whole training state in one file, that a later run resumes from exactly.

    save(path, state.state_dict())      # atomically: a crash mid-save never leaves a torn file
    state.load_state_dict(load(path))   # the same steps, data order and result as one uninterrupted run

Checkpoints are files people pass around, so they are read with `weights_only=True` (tensors,
numbers, strings and containers; never an object whose unpickling runs code), and onto the CPU:
the model and optimizer move their tensors to the run's device as they load them, and the data
sampler's random state must stay a CPU tensor (CUDA would refuse it as a generator state).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tcnsearch.errors import UserError

KEYS = ("model", "optimizer", "scheduler", "sampler", "step", "history")
STATE_FILE = "state.pt"  # a trial's training state in its Tune checkpoint
FINAL_FILE = "final.pt"  # a finished trial's weights and config in its last Tune checkpoint
HINT = "pass a checkpoint that `tcnsearch train --checkpoint` wrote, or start without --resume"


def save(path: str | Path, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load(path: str | Path) -> dict:
    """A checkpoint's state, checked to be one that `save` wrote (on the CPU).

    Raises:
        UserError: the file is not such a checkpoint (nothing in it runs).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses other objects with UnpicklingError; a torn file raises others
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a loadable tcnsearch checkpoint ({reason}); {HINT}") from None
    if not isinstance(state, dict) or set(KEYS) - state.keys():
        raise UserError(f"{path}: not a tcnsearch checkpoint (expected the keys {', '.join(KEYS)}); {HINT}")
    step, history, rng = state["step"], state["history"], state["sampler"]
    if not isinstance(step, int) or step < 0 or not isinstance(history, list) or not (
            isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8):
        raise UserError(f"{path}: malformed checkpoint (step, history or sampler state); {HINT}")
    return state
