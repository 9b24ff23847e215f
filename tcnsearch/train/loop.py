"""One training run: what `tcnsearch train` runs and what each study trial calls.

    cfg = make_config("assoc-recall", preset="tiny", overrides={"steps": 300})
    result = train(cfg)          # TrainResult: status, final metrics, history

AdamW (decay on weight matrices only) with linear warm-up then linear decay (MEGA's schedule),
gradient clipping, mixed precision on a GPU (`precision`: bf16 where the GPU has it natively,
fp16 with a gradient scaler on V100/T4), evaluation every `eval_every` steps reporting the loss
and the accuracy at the scored positions, a callback that sees every evaluation and may stop the
run (a scheduler pruning it), checkpoints that a later run resumes from, and a progress bar. A
non-finite loss ends the run with status "diverged" instead of training on garbage.

`train_step` is the step itself; the profiler times exactly it at model level, so a profile's
latencies describe the step the study trains.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tcnsearch import hardware
from tcnsearch.data import IGNORE, make_task
from tcnsearch.errors import UserError
from tcnsearch.models import build_model
from tcnsearch.train import budget
from tcnsearch.train import checkpoint as checkpoints
from tcnsearch.train.config import TrainConfig


@dataclass
class TrainResult:
    status: Literal["completed", "diverged", "stopped"]
    steps: int
    metrics: dict
    history: list[dict] = field(default_factory=list)
    num_parameters: int = 0
    elapsed_s: float = 0.0
    reason: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    notes: list[str] = field(default_factory=list)
    memory: dict | None = None  # budget.MemoryPlan.to_json(): the estimate, the limit, the micro-batch

    def to_json(self) -> dict:
        return {"status": self.status, "steps": self.steps, "metrics": self.metrics, "reason": self.reason,
                "num_parameters": self.num_parameters, "elapsed_s": round(self.elapsed_s, 3),
                "device": self.device, "precision": self.precision, "notes": self.notes, "memory": self.memory,
                "history": self.history}


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it was: what a checkpoint holds."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: torch.Generator  # the order of the training batches
    step: int = 0
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.get_state(), "step": self.step,
                "history": self.history}

    def load_state_dict(self, state: dict, source: str = "the checkpoint") -> None:
        """Load a checkpoint's state (checkpoint.load); the model and optimizer move it to their device.

        Raises:
            UserError: it does not fit this run's model or settings (nothing is half-loaded into a run).
        """
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.sampler.set_state(state["sampler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            reason = str(err).strip().splitlines()[0][:200]
            raise UserError(f"{source}: the checkpoint does not fit this run's model or settings ({reason}); "
                            "resume with the settings it was saved with") from None
        self.step, self.history = state["step"], list(state["history"])


def init_from(model: torch.nn.Module, weights: dict) -> list[str]:
    """Start `model` from `weights` (a state dict) wherever a tensor's name and shape match; the rest stays as
    initialised. Returns notes on what did not fit (a model at another preset shares the TCN's and the
    heads' shapes with the proxy only where their widths agree)."""
    own = model.state_dict()
    fits = {k: v for k, v in weights.items() if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape}
    model.load_state_dict(fits, strict=False)
    misfits = [f"{k} ({'x'.join(map(str, weights[k].shape))} vs {'x'.join(map(str, own[k].shape))})"
               for k in own if k in weights and k not in fits]
    missing = [k for k in own if k not in weights]
    notes = [f"initialised {len(fits)} of {len(own)} tensors from the stored weights"]
    if misfits:
        notes.append(f"{len(misfits)} differ in shape and start from scratch: {', '.join(misfits[:4])}"
                     + (" ..." if len(misfits) > 4 else ""))
    if missing:
        notes.append(f"{len(missing)} are not in the stored weights (another architecture?): "
                     f"{', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    return notes


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: this machine has no CUDA device; use --set device=cpu (or auto)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _schedule(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps))
    return factor


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.98)) -> torch.optim.Optimizer:
    """AdamW with weight decay on the weight matrices only (not on norms, biases, EMA/TCN vectors)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def scored_loss(model, inputs: dict, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss over scored targets, correct count, scored count); LM logits (B, L, V), classes (B, C).

    Targets equal to IGNORE are not scored (associative recall scores its answer position only)."""
    logits = model(**inputs)
    scored = y != IGNORE
    loss = F.cross_entropy(logits.float().flatten(0, -2), y.flatten(), ignore_index=IGNORE)
    correct = (logits.argmax(-1) == y)[scored].sum()
    return loss, correct, scored.sum()


def train_step(model, optimizer, inputs: dict, y: torch.Tensor, *, device: torch.device, precision: str,
               scaler: torch.amp.GradScaler | None = None, grad_clip: float = 0.0,
               micro_batch: int | None = None) -> torch.Tensor:
    """One optimisation step (forward under autocast, backward, clipping, AdamW); returns the loss.

    With `micro_batch` smaller than the batch, the batch goes through forward and backward in parts of at
    most that many examples whose gradients add up to the whole batch's (`accumulate`).
    A non-finite loss is returned without stepping, so that the caller can stop the run on it."""
    scaler = scaler or hardware.grad_scaler(device, precision)
    if micro_batch is not None and micro_batch < len(y):
        optimizer.zero_grad(set_to_none=True)
        loss = accumulate(model, inputs, y, micro_batch, device=device, precision=precision, scaler=scaler)
        if not torch.isfinite(loss):
            return loss
    else:
        with hardware.autocast(device, precision):
            loss, _, _ = scored_loss(model, inputs, y)
        if not torch.isfinite(loss):
            return loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss


def accumulate(model, inputs: dict, y: torch.Tensor, micro_batch: int, *, device: torch.device, precision: str,
               scaler: torch.amp.GradScaler) -> torch.Tensor:
    """Forward and backward of the batch in parts of at most `micro_batch` examples; returns the batch's loss.

    The loss is a mean over the batch's scored targets, so each part's mean counts in proportion to its
    scored targets: the gradients add up to the whole batch's (BatchNorm's statistics, being per part,
    are the one difference). Stops at the first part whose loss is not finite and returns that loss."""
    scored = (y != IGNORE).sum().clamp(min=1)
    total = torch.zeros((), device=y.device)
    for part, part_y in _parts(inputs, y, micro_batch):
        with hardware.autocast(device, precision):
            loss, _, count = scored_loss(model, part, part_y)
        if count == 0:  # nothing scored in this part: it adds nothing to the gradient
            continue
        if not torch.isfinite(loss):
            return loss
        weighted = loss * (count / scored)
        scaler.scale(weighted).backward()
        total += weighted.detach()
    return total


def _parts(inputs: dict, y: torch.Tensor, micro_batch: int | None):
    """The batch in parts of at most `micro_batch` examples (the whole batch without one)."""
    if micro_batch is None or micro_batch >= len(y):
        yield inputs, y
        return
    parts = math.ceil(len(y) / micro_batch)
    for i, part_y in enumerate(y.tensor_split(parts)):
        yield {k: v.tensor_split(parts)[i] for k, v in inputs.items()}, part_y


@torch.no_grad()
def evaluate(model, batches, device: torch.device | None = None, precision: str = "fp32",
             micro_batch: int | None = None) -> dict:
    """Loss (nats per scored target), accuracy, and for a language model bits per character; each batch in
    parts of at most `micro_batch` examples where given (the same sums)."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    for inputs, y in (part for batch in batches for part in _parts(*batch, micro_batch)):
        with hardware.autocast(device or y.device, precision):
            loss, c, n = scored_loss(model, inputs, y)
        total += loss.item() * n.item()
        correct += c.item()
        count += n.item()
    model.train()
    if count == 0:  # an empty evaluation set is an error, never a perfect score
        raise UserError("the evaluation set is empty: nothing was scored; give the task more evaluation data "
                        "(eval_examples, or a larger corpus for its validation split)")
    loss = total / count
    metrics = {"loss": loss, "accuracy": correct / count}
    return metrics | {"bpc": loss / math.log(2)} if model.cfg.task == "lm" else metrics


Callback = Callable[[int, dict, TrainState], "bool | None"]


def train(cfg: TrainConfig, *, callback: Callback | None = None, checkpoint: str | Path | None = None,
          resume: bool = False, progress: bool = True, on_model: Callable[[torch.nn.Module], None] | None = None,
          device: torch.device | None = None, restore: dict | None = None, init: dict | None = None) -> TrainResult:
    """Train one model.

    Args:
        callback: `callback(step, metrics, state)` after every evaluation; returning False stops the run.
        checkpoint: save the state here after every evaluation (atomically); with `resume`, continue from
            it: the same steps, the same data order, the same result as one uninterrupted run.
        on_model: `on_model(model)` once the model is built (a trial records its size before it trains).
        device: where to train (a Ray trial passes what Ray gave it); default `cfg.device`.
        restore: a checkpoint's state (checkpoint.load) to continue from.
        init: weights (a state dict) to start from where the shapes match (`--init-from-artifact`).
    """
    start = time.perf_counter()
    device = device or resolve_device(cfg.device)
    hardware.check_cuda_build(device)
    precision = hardware.device_precision(cfg.precision, device)
    memory = budget.plan_memory(cfg, device, precision)  # before anything is allocated: fits, accumulates or refuses
    micro_batch = memory.micro_batch if memory.accumulation > 1 else None
    torch.manual_seed(cfg.seed)
    task = make_task(cfg, device)
    model_cfg = cfg.model.model_copy(update={"vocab_size": task.vocab_size, "task": task.head,
                                             "num_classes": task.num_classes,
                                             "max_length": max(cfg.model.max_length, cfg.seq_len)})
    model = build_model(model_cfg)
    notes = init_from(model, init) if init is not None else []
    if memory.note(cfg):
        notes.insert(0, memory.note(cfg))
        if progress:  # said now, not only with the result: a run that accumulates is a long one
            Console(stderr=True).print(f"note: {notes[0]}", markup=False, highlight=False)
    model = model.to(device)
    if on_model is not None:
        on_model(model)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas)
    state = TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg)),
                       torch.Generator(device="cpu").manual_seed(cfg.seed + 1))
    path = Path(checkpoint) if checkpoint else None
    if restore is None and resume and path is not None and path.exists():
        restore = checkpoints.load(path)
    if restore is not None:
        state.load_state_dict(restore, str(path) if path else "the checkpoint")
    scaler = hardware.grad_scaler(device, precision)
    status, reason, metrics = "completed", None, state.history[-1] if state.history else {}
    bar = Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress)
    with bar:
        bar_task = bar.add_task(cfg.task, total=cfg.steps, completed=state.step)
        model.train()
        while state.step < cfg.steps:
            inputs, y = task.batch(state.sampler)
            loss = train_step(model, optimizer, inputs, y, device=device, precision=precision, scaler=scaler,
                              grad_clip=cfg.grad_clip, micro_batch=micro_batch)
            if not torch.isfinite(loss):
                status, reason = "diverged", f"non-finite training loss ({loss.item()}) at step {state.step}"
                break
            state.scheduler.step()
            state.step += 1
            bar.update(bar_task, advance=1, description=f"{cfg.task} loss {loss.item():.3f}")
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                metrics = {"step": state.step, "train_loss": loss.item(),
                           **evaluate(model, task.eval_batches(), device, precision, micro_batch)}
                state.history.append(metrics)
                shown = f"bpc {metrics['bpc']:.3f}" if task.head == "lm" else f"loss {metrics['loss']:.3f}"
                bar.update(bar_task, description=f"{cfg.task} eval acc {metrics['accuracy']:.3f} {shown}")
                if path is not None:
                    checkpoints.save(path, state.state_dict())
                if callback is not None and callback(state.step, metrics, state) is False:
                    status, reason = "stopped", f"stopped by the callback at step {state.step}"
                    break
    return TrainResult(status=status, steps=state.step, metrics=metrics, history=state.history, reason=reason,
                       num_parameters=model.num_parameters(), elapsed_s=time.perf_counter() - start,
                       device=str(device), precision=precision, notes=notes, memory=memory.to_json())
