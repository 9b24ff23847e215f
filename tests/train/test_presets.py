"""Each task's presets: the paper's settings where the paper gives them, and tiny runs that learn."""

import random

import numpy as np
import pytest
import torch

from tcnsearch.data import make_task
from tcnsearch.ops import receptive_field
from tcnsearch.train import evaluate, make_config, train
from tests.data.test_enwik8 import TEXT
from tests.data.test_lra import CIFAR_BATCHES, write_cifar, write_pathfinder, write_retrieval
from tests.train.test_loop import _imdb


@pytest.mark.parametrize("task,length,dilation", [("lra-listops", 2048, 5), ("lra-text", 4096, 6),
                                                  ("lra-image", 1024, 4), ("lra-pathx", 16384, 10)])
def test_lra_paper_presets_follow_mega_and_cover_the_sequence(task, length, dilation):
    cfg = make_config(task, "paper")
    assert cfg.seq_len == cfg.model.chunk_size == length  # MEGA's LRA results use full attention
    assert (cfg.model.tcn.kernel_size, cfg.model.tcn.depth, cfg.model.tcn.dilation_factor) == (17, 4, dilation)
    t = cfg.model.tcn
    assert receptive_field(t.kernel_size, t.dilation_factor, t.depth) >= length
    assert receptive_field(t.kernel_size, t.dilation_factor - 1, t.depth) < length


@pytest.mark.parametrize("preset", ["tiny", "cpu", "paper"])
def test_enwik8_presets_set_megas_enwik8_options(preset):
    """MEGA's enwik8 recipe: --truncation-length 8192, --no-affine-final-norm, no activation dropout."""
    m = make_config("enwik8", preset).model
    assert (m.ema_truncation, m.final_norm_affine, m.activation_dropout, m.hidden_dropout) == (8192, False, 0.0, 0.0)


# -- every task's tiny preset learns: miniature data in each task's real file format ------------


def _enwik8(root) -> str:
    """40 kB of the enwik8 markup (the raw file; a zip would be unpacked into the user's cache)."""
    (root / "enwik8").write_bytes((TEXT * 400)[:40_000])
    return str(root / "enwik8")


def _text(root) -> str:
    _imdb(root, 100, seed=0)
    return str(root)


def _retrieval(root) -> str:
    """AAN-style pairs: related (1) iff either paper says 'cat' (each does with p = 0.3: half the pairs)."""
    rng = random.Random(0)

    def paper(topic):
        filler = "".join(rng.choice("xyzw ") for _ in range(rng.randint(10, 60)))
        cut = rng.randint(0, len(filler))
        return filler[:cut] + topic + filler[cut:]

    for split, n in (("train", 400), ("eval", 100)):
        rows = []
        for _ in range(n):
            a, b = (rng.choice(["cat"] * 3 + ["dog"] * 7) for _ in range(2))
            rows.append((int("cat" in (a, b)), paper(a), paper(b)))
        write_retrieval(root, split, rows)
    return str(root)


def _cifar(root) -> str:
    """Grey CIFAR-10 batches of 40 whose class k is brightness 20 + 23 k, give or take 15."""
    rng = np.random.default_rng(0)
    batches = {}
    for name in CIFAR_BATCHES:
        labels = rng.integers(0, 10, 40)
        pixels = 20 + 23 * labels[:, None] + rng.integers(-15, 16, (40, 3072))
        batches[name] = {b"data": pixels.clip(0, 255).astype(np.uint8), b"labels": labels.tolist()}
    write_cifar(root, batches)
    return str(root)


def _pathfinder(resolution: int, n: int):
    """PNGs whose label is the brightness: pixels in 128..255 (1) or 0..127 (0)."""
    def build(root) -> str:
        rng = np.random.default_rng(0)
        labels = [i % 2 for i in range(n)]
        images = [rng.integers(128 * y, 128 * (y + 1), (resolution, resolution)).astype(np.uint8) for y in labels]
        write_pathfinder(root, resolution, images, labels)
        return str(root)
    return build


# task: (miniature data or None, steps or None for the preset's own). The image tasks keep their
# length (1024; 16384 for Path-X), so a few steps of the preset there, enough to show it learns.
TINY_RUNS = {
    "enwik8": (_enwik8, 50),
    "lra-listops": (None, None),  # generated offline
    "lra-text": (_text, None),
    "lra-retrieval": (_retrieval, 50),
    "lra-image": (_cifar, 20),
    "lra-pathfinder": (_pathfinder(32, 100), 15),
    "lra-pathx": (_pathfinder(128, 40), 15),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TINY_RUNS))
def test_tiny_presets_learn(task, tmp_path):
    """Each task's tiny preset, unchanged but for the data and (where long) the steps: the final
    evaluation's loss at least 10% below the untrained model's on the same evaluation set."""
    data, steps = TINY_RUNS[task]
    overrides = ({"data_path": data(tmp_path)} if data else {}) | ({"steps": steps} if steps else {})
    cfg = make_config(task, "tiny", overrides)
    task_data = make_task(cfg, torch.device("cpu"))  # the same evaluation set as the run's (seeded)
    seen = {}
    result = train(cfg, progress=False,
                   on_model=lambda model: seen.update(initial=evaluate(model, task_data.eval_batches())["loss"]))
    assert result.status == "completed" and result.steps == cfg.steps
    assert result.metrics["loss"] < 0.9 * seen["initial"], (result.metrics["loss"], seen["initial"])

