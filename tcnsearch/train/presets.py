"""Each task's presets: tiny (seconds on a laptop CPU), cpu (a run that learns on a CPU), paper (the paper's sizes).

    cfg = make_config("enwik8", preset="cpu", overrides={"lr": 3e-3})

A preset is a partial TrainConfig; `make_config` merges the overrides (`--set`, a study's `train:`
section, a searched value) into it and validates the result.
"""

from __future__ import annotations

from pydantic import ValidationError

from tcnsearch.errors import UserError, validation_message
from tcnsearch.ops import receptive_field
from tcnsearch.train.config import TrainConfig, merge_overrides

# TCNCA-simple at the paper's length 64 / vocabulary 20, the base of the assoc-recall presets.
_ASSOC_BASE = {"model": {"arch": "tcnca_simple", "d_model": 32, "n_layers": 2, "chunk_size": 64, "ffn_dim": 64,
                         "tcn": {"kernel_size": 3, "dilation_factor": 2, "depth": 4}},
               "train_examples": 5000, "eval_examples": 500, "steps": 300, "batch_size": 64, "lr": 1e-2,
               "warmup_steps": 30, "eval_every": 50}
# tiny: length 16, vocabulary 10 (5 keys, 5 values: chance 20%, the list's most frequent value 40%),
# width 64, one chunk over the whole sequence, 20k examples, lr 3e-3 (1e-2 stalls at that 40% on some
# seeds): >= 90% by step 100-200 on each of 14 seeds, 100% at 300, in about 10 s of one CPU core.
_ASSOC_TINY = merge_overrides(_ASSOC_BASE, {"seq_len": 16, "vocab_size": 10,
                                            "model": {"d_model": 64, "ffn_dim": 128, "chunk_size": 16},
                                            "train_examples": 20000, "lr": 3e-3})
# MEGA's enwik8 recipe (examples/mega/README.lm.md, arch mega_lm_enwik8_base in fairseq/models/mega_lm.py):
# --truncation-length 8192 (binds only past 8192 bytes, beyond every training window here; the EMA
# baseline only, the TCN ignores it), --no-affine-final-norm, attention, hidden and activation dropout 0.
_MEGA_ENWIK8 = {"ema_truncation": 8192, "final_norm_affine": False, "attention_dropout": 0.0, "hidden_dropout": 0.0,
                "activation_dropout": 0.0}
_ENWIK8_TINY = {"model": {"arch": "tcnca", "d_model": 32, "z_dim": 16, "h_dim": 64, "ffn_dim": 64, "n_layers": 2,
                          "chunk_size": 64, "rel_pos": "rotary", "ema_dim": 16, **_MEGA_ENWIK8,
                          "tcn": {"kernel_size": 3, "dilation_factor": 4, "depth": 3}},
                "steps": 200, "batch_size": 8, "lr": 5e-3, "weight_decay": 0.2, "warmup_steps": 20, "eval_every": 50,
                "max_eval_windows": 8}


def _paper_tcn(length: int) -> dict:
    """The paper's LRA TCN (supplementary H): K 17, D 4, f raised until the receptive field covers `length`."""
    f = 2
    while receptive_field(17, f, 4) < length:
        f += 1
    return {"kernel_size": 17, "dilation_factor": f, "depth": 4}


def _lra(length, layers, d, z, norm, prenorm, attention, batch, lr, dropout, weight_decay, steps, warmup) -> dict:
    """MEGA's LRA settings (MEGA, Table 8: full attention, N 16, H = FFN = 2d; epochs turned into steps)."""
    return {"seq_len": length, "model": {
        "arch": "tcnca", "d_model": d, "z_dim": z, "h_dim": 2 * d, "ffn_dim": 2 * d, "n_layers": layers,
        "chunk_size": length, "norm": norm, "prenorm": prenorm, "attention": attention, "rel_pos": "simple",
        "ema_dim": 16, "dropout": dropout, "max_length": length, "tcn": _paper_tcn(length)},
        "batch_size": batch, "lr": lr, "weight_decay": weight_decay, "steps": steps, "warmup_steps": warmup,
        "eval_every": max(1, steps // 50), "eval_examples": 100_000}


_LRA_PAPER = {
    "lra-listops": _lra(2048, 6, 80, 64, "layernorm", False, "softmax", 64, 1e-3, 0.1, 0.01, 90_000, 3_000),
    "lra-text": _lra(4096, 4, 128, 64, "scalenorm", False, "softmax", 50, 4e-3, 0.1, 0.01, 25_000, 10_000),
    "lra-retrieval": _lra(4000, 6, 128, 64, "scalenorm", False, "softmax", 64, 3e-3, 0.1, 0.04, 91_960, 5_000),
    "lra-image": _lra(1024, 8, 160, 96, "batchnorm", True, "laplace", 50, 1e-2, 0.0, 0.02, 180_000, 9_000),
    "lra-pathfinder": _lra(1024, 6, 128, 64, "batchnorm", True, "laplace", 128, 1e-2, 0.0, 0.01, 250_000, 5_000),
    "lra-pathx": _lra(16384, 4, 64, 32, "batchnorm", True, "laplace", 128, 1e-2, 0.0, 0.01, 125_000, 10_000),
}
# tiny: seconds on a laptop CPU (generated ListOps needs no download); cpu: a run that learns on a CPU.
_LRA_TINY = {"seq_len": 256, "model": {"arch": "tcnca", "d_model": 32, "z_dim": 16, "h_dim": 64, "ffn_dim": 64,
                                       "n_layers": 2, "chunk_size": 128, "tcn": {"kernel_size": 3,
                                                                                 "dilation_factor": 4, "depth": 4}},
             "listops_lengths": (20, 256), "train_examples": 2000, "eval_examples": 200, "steps": 200,
             "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 20, "eval_every": 50}
_LRA_CPU = merge_overrides(_LRA_TINY, {
    "seq_len": 1024, "model": {"d_model": 64, "z_dim": 32, "h_dim": 128, "ffn_dim": 128, "n_layers": 4,
                               "chunk_size": 256, "dropout": 0.1, "tcn": {"kernel_size": 5, "dilation_factor": 4}},
    "listops_lengths": (100, 1024), "train_examples": 20_000, "eval_examples": 1000,
    "steps": 3000, "batch_size": 16, "warmup_steps": 300, "eval_every": 250})
_LRA_SIZES = {"lra-image": 1024, "lra-pathfinder": 1024, "lra-pathx": 16384}  # images have one length
# What a task's tiny run needs besides: generated ListOps at lr 3e-3 ends its 200 steps 4% below its
# initial loss (the label prior alone is worth 1%); lists of 10-128 tokens at lr 1e-2 end 14-18% below
# (seeds 0-2). A Path-X step takes 12 s on a CPU core with 16 images of 16384 pixels, 0.6 s with 2.
_LRA_TINY_TASK = {"lra-listops": {"lr": 1e-2, "listops_lengths": (10, 128)}, "lra-pathx": {"batch_size": 2}}


def _lra_presets(task: str) -> dict[str, dict]:
    tiny, cpu = _LRA_TINY, _LRA_CPU
    if task in _LRA_SIZES:  # an image cannot be cut short; keep its length, shrink the rest
        image = {"seq_len": _LRA_SIZES[task], "model": {"chunk_size": 256}}
        tiny, cpu = merge_overrides(tiny, image), merge_overrides(cpu, image)
    return {"tiny": merge_overrides(tiny, _LRA_TINY_TASK.get(task, {})), "cpu": cpu, "paper": _LRA_PAPER[task]}


PRESETS: dict[str, dict[str, dict]] = {
    "enwik8": {
        "tiny": _ENWIK8_TINY,
        "cpu": merge_overrides(_ENWIK8_TINY, {
            "model": {"d_model": 128, "z_dim": 64, "h_dim": 256, "ffn_dim": 256, "n_layers": 4, "chunk_size": 256,
                      "dropout": 0.1, "tcn": {"kernel_size": 5, "dilation_factor": 4, "depth": 4}},
            "steps": 3000, "batch_size": 8, "warmup_steps": 300, "eval_every": 250, "max_eval_windows": 40}),
        # MEGA's enwik8 model (12 layers, D 512, H 1024, FFN 1024, Z 128, N 16, chunk 2048, rotary,
        # pre-norm LayerNorm, dropout 0.1, and _MEGA_ENWIK8's options) with TCNCA's lr 0.005 and weight decay 0.2.
        "paper": merge_overrides(_ENWIK8_TINY, {
            "model": {"d_model": 512, "z_dim": 128, "h_dim": 1024, "ffn_dim": 1024, "n_layers": 12,
                      "chunk_size": 2048, "dropout": 0.1,
                      "tcn": {"kernel_size": 17, "dilation_factor": 4, "depth": 4}},
            "steps": 250000, "batch_size": 8, "lr": 5e-3, "weight_decay": 0.2, "warmup_steps": 24000,
            "eval_every": 5000, "max_eval_windows": None}),
    },
    # TCNCA-simple (Fig. A2): 2 layers with TCNs of depth 3 or 4; width 32 at length 64, where the
    # paper's chunk "corresponds to standard quadratic self-attention": the whole sequence.
    "assoc-recall": {
        "tiny": _ASSOC_TINY,
        # Reaches 100% at length 64 / vocabulary 20 in about a minute on 2 cores (README). The paper's
        # chunk 32 leaves the first half out of the query's chunk, which a depth-4 TCN cannot bridge:
        # 92% at 1500 steps; one chunk over the whole sequence and width 64 learn it in 800.
        "cpu": merge_overrides(_ASSOC_BASE, {"model": {"d_model": 64, "ffn_dim": 128}, "train_examples": 50000,
                                             "steps": 1000, "batch_size": 64, "eval_every": 100,
                                             "warmup_steps": 100}),
        "paper": _ASSOC_BASE | {"train_examples": 100000, "steps": 20000, "batch_size": 64, "eval_every": 1000,
                                "warmup_steps": 1000, "lr": 1e-3},
    },
    **{task: _lra_presets(task) for task in _LRA_PAPER},
}




def make_config(task: str, preset: str = "tiny", overrides: dict | None = None) -> TrainConfig:
    """The preset's config for `task` with `overrides` merged in.

    Raises:
        UserError: unknown task or preset, or an invalid value (named in the message).
    """
    if task not in PRESETS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(PRESETS)}")
    if preset not in PRESETS[task]:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS[task])}")
    try:
        return TrainConfig(**merge_overrides({"task": task} | PRESETS[task][preset], overrides or {}))
    except ValidationError as err:
        raise UserError(validation_message(err)) from None
