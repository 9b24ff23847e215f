"""What a Ray worker runs for one study trial: `train` with each evaluation reported to Ray Tune.

The trial trains on exactly what Ray gave it: the GPUs Ray allocated (visible to it as cuda:0,
...), else the CPU, with as many threads as CPUs. Every `checkpoint_every` evaluations its whole
training state goes to Tune as a checkpoint (under the run's storage path; Tune keeps the newest
only), so a trial whose worker dies resumes from its last checkpoint on the retry, not from step 0.
Its last evaluation's checkpoint holds its final weights and the config that built them
(`final.pt`), which the driver keeps as an Optuna artifact if the trial is among the best.

Only torch, Ray Tune and tcnsearch.train are imported here: a worker needs none of Optuna, the
database or the profiler.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from pathlib import Path

import ray
import torch
from ray import tune

from tcnsearch import hardware
from tcnsearch.train import checkpoint
from tcnsearch.train.checkpoint import FINAL_FILE, STATE_FILE
from tcnsearch.train.config import TrainConfig
from tcnsearch.train.loop import TrainState, train


class TrialFailed(RuntimeError):
    """The trial cannot go on (a non-finite loss, a GPU it cannot use); the message is its fail reason."""


def trial_device(cfg: TrainConfig) -> torch.device:
    """The device Ray allocated to this trial (hardware.device_for_allocation)."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        return torch.device(hardware.device_for_allocation(cfg.device, ray.get_gpu_ids(), cuda))
    except ValueError as err:
        raise TrialFailed(str(err)) from None


def _restored() -> dict | None:
    """The training state of this trial's last checkpoint, on a retry after its worker died."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as folder:
        # A checkpoint holding only final.pt is a finished trial's: Tune retries one whose end the driver
        # failed to record; it trains again from the start (rare, and its outcome is then stored once).
        path = Path(folder) / STATE_FILE
        return checkpoint.load(path) if path.exists() else None


def final_weights(cfg: TrainConfig, state: TrainState) -> dict:
    """What a finished trial keeps: the model's weights, the run's config and the model's as built (the head's
    sizes come from the task), and the step; tensors and plain values only."""
    return {"model": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
            "config": cfg.model_dump(mode="json"), "model_config": state.model.cfg.model_dump(mode="json"),
            "step": state.step}


def run_trial(config: dict) -> None:
    """Tune's function trainable. `config`: {"train": TrainConfig fields, "checkpoint_every": evaluations
    between checkpoints (0: none), ...}."""
    cfg = TrainConfig(**config["train"])
    every = int(config.get("checkpoint_every") or 0)
    device = trial_device(cfg)
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    where = {"host": socket.gethostname(), "ray_node": ray.get_runtime_context().get_node_id()[:12],
             "pid": os.getpid(), "train_device": str(device)}
    extra: dict = {}

    def report(step: int, metrics: dict, state: TrainState) -> None:
        # `final` tells the searcher this trial ran its whole budget (COMPLETE, not PRUNED).
        result = metrics | extra | where | {"final": step >= cfg.steps}
        if step >= cfg.steps:
            keep = {FINAL_FILE: final_weights(cfg, state)}
        elif every and len(state.history) % every == 0:
            keep = {STATE_FILE: state.state_dict()}
        else:
            return tune.report(result)
        with tempfile.TemporaryDirectory(prefix="tcns-ckpt-") as folder:
            for name, doc in keep.items():
                checkpoint.save(Path(folder) / name, doc)
            tune.report(result | {"checkpointed": step}, checkpoint=tune.Checkpoint.from_directory(folder))

    restore = _restored()
    # This attempt and where it started: the driver adds up the steps each attempt trained.
    extra |= {"attempt": uuid.uuid4().hex[:12], "attempt_from": restore["step"] if restore is not None else 0}
    if restore is not None:
        extra["resumed_from"] = restore["step"]
    result = train(cfg, callback=report, progress=False, device=device, restore=restore,
                   on_model=lambda model: extra.update(num_parameters=model.num_parameters()))
    if result.status == "diverged":
        raise TrialFailed(result.reason)
