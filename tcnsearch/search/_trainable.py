"""What a Ray worker runs for one trial: `train.train` with each evaluation reported to Tune."""

from __future__ import annotations

import socket

import ray
import torch
from ray import tune

from tcnsearch.train import TrainConfig, train


class TrialDiverged(RuntimeError):
    """The training loss became non-finite; the trial fails with this message as its reason."""


def run_trial(config: dict) -> None:
    cfg = TrainConfig(**config["train"])
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    host = socket.gethostname()
    node = ray.get_runtime_context().get_node_id()[:12]
    extra: dict = {}

    def report(step: int, metrics: dict) -> None:
        # `final` tells the searcher this trial ran its whole budget (COMPLETE, not PRUNED).
        tune.report(metrics | extra | {"final": step >= cfg.steps, "host": host, "ray_node": node})

    result = train(cfg, callback=report, progress=False,
                   on_model=lambda model: extra.update(num_parameters=model.num_parameters()))
    if result.status == "diverged":
        raise TrialDiverged(result.reason)
