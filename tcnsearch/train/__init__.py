"""One training run, what `tcnsearch train` and every study trial run.

    cfg = make_config("assoc-recall", preset="tiny", overrides=parse_set(["lr=3e-3"]))
    result = train(cfg)

Modules: config (TrainConfig and `--set` overrides), presets (tiny, cpu and paper per task),
loop (the training loop, its step and evaluation), budget (the run's peak memory estimated from
its config, the micro-batch that fits), checkpoint (save and resume), trial (the
function a Ray Tune worker runs for one study trial).
"""

from tcnsearch.choices import PRESET_NAMES
from tcnsearch.train import budget, checkpoint
from tcnsearch.train.budget import Estimate, MemoryPlan, check_largest, estimate_run, fit_micro_batch, plan_memory
from tcnsearch.train.config import TASKS, TrainConfig, get_dotted, merge_overrides, parse_set, set_dotted
from tcnsearch.train.loop import (
    TrainResult,
    TrainState,
    accumulate,
    evaluate,
    init_from,
    make_optimizer,
    resolve_device,
    scored_loss,
    train,
    train_step,
)
from tcnsearch.train.presets import PRESETS, make_config

__all__ = ["PRESETS", "PRESET_NAMES", "TASKS", "Estimate", "MemoryPlan", "TrainConfig", "TrainResult", "TrainState",
           "accumulate", "budget", "check_largest", "checkpoint", "estimate_run", "evaluate", "fit_micro_batch",
           "get_dotted", "init_from", "make_config", "make_optimizer", "merge_overrides", "parse_set", "plan_memory",
           "resolve_device", "scored_loss", "set_dotted", "train", "train_step"]
