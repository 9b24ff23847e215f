"""What a Ray worker runs for one study trial: `train` with each evaluation reported to Ray Tune.

The trial trains on exactly what Ray gave it: the GPUs Ray allocated (visible to it as cuda:0,
...), else the CPU, with as many threads as CPUs. Every `checkpoint_every` evaluations its whole
training state goes to Tune as a checkpoint (under the run's storage path; Tune keeps the newest
only), so a trial whose worker dies resumes from its last checkpoint on the retry, not from step 0.

Only torch, Ray Tune and tcnsearch.train are imported here: a worker needs none of Optuna, the
database or the profiler.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from tcnsearch import hardware
from tcnsearch.train import checkpoint
from tcnsearch.train.config import TrainConfig
from tcnsearch.train.loop import TrainState, train

STATE_FILE = "state.pt"


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
        return checkpoint.load(Path(folder) / STATE_FILE)


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
        if every and len(state.history) % every == 0 and step < cfg.steps:
            with tempfile.TemporaryDirectory(prefix="tcns-ckpt-") as folder:
                checkpoint.save(Path(folder) / STATE_FILE, state.state_dict())
                tune.report(result | {"checkpointed": step}, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(result)

    restore = _restored()
    if restore is not None:
        extra["resumed_from"] = restore["step"]
    result = train(cfg, callback=report, progress=False, device=device, restore=restore,
                   on_model=lambda model: extra.update(num_parameters=model.num_parameters()))
    if result.status == "diverged":
        raise TrialFailed(result.reason)
