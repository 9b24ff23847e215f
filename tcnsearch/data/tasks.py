"""The tasks a run trains on, as batches: each yields (model inputs, targets) and says which head it needs.

    task = make_task(cfg, device)      # cfg: a train.TrainConfig (anything with the fields of TaskSettings)
    inputs, y = task.batch(generator)  # inputs: {"tokens": (B, L), ...}; y: (B, L) for a language model, (B,)
    for inputs, y in task.eval_batches(): ...

Targets equal to IGNORE are not scored (associative recall scores only the answer position).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from tcnsearch.data import enwik8, lra
from tcnsearch.data.assoc_recall import associative_recall
from tcnsearch.errors import UserError


class TaskSettings(Protocol):
    """What a task reads of a run's settings (train.TrainConfig has these fields)."""

    task: str
    seed: int
    seq_len: int
    vocab_size: int
    train_examples: int
    eval_examples: int
    batch_size: int
    data_path: str | None
    chunk_counts: list[int]
    eval_chunks: int
    max_eval_windows: int | None
    listops_lengths: tuple[int, int]
    model: object  # its chunk_size sets enwik8's windows


class AssocRecallTask:
    """Synthetic key-value recall; only the answer position is scored."""

    head, num_classes = "lm", 2

    def __init__(self, cfg: TaskSettings, device: torch.device):
        self.cfg, self.vocab_size = cfg, cfg.vocab_size
        x, y = associative_recall(cfg.train_examples, cfg.seq_len, cfg.vocab_size, seed=cfg.seed)
        xe, ye = associative_recall(cfg.eval_examples, cfg.seq_len, cfg.vocab_size, seed=cfg.seed + 1_000_003)
        self.train, self.eval = (x.to(device), y.to(device)), (xe.to(device), ye.to(device))

    def batch(self, generator: torch.Generator):
        idx = torch.randint(0, len(self.train[0]), (self.cfg.batch_size,), generator=generator)
        idx = idx.to(self.train[0].device)
        return {"tokens": self.train[0][idx]}, self.train[1][idx]

    def eval_batches(self):
        x, y = self.eval
        for i in range(0, len(x), 256):
            yield {"tokens": x[i:i + 256]}, y[i:i + 256]


class Enwik8Task:
    """Byte-level language modelling; every byte is scored, bits per character reported."""

    head, vocab_size, num_classes = "lm", 256, 2

    def __init__(self, cfg: TaskSettings, device: torch.device):
        self.cfg, self.device = cfg, device
        path = enwik8.prepare(Path(cfg.data_path) if cfg.data_path else None)
        chunk = cfg.model.chunk_size
        enwik8.check_splits(path, train_bytes=max(cfg.chunk_counts) * chunk + 1,
                            eval_bytes=cfg.eval_chunks * chunk + 1)
        self.train, self.valid = enwik8.load_split(path, "train"), enwik8.load_split(path, "valid")

    def batch(self, generator: torch.Generator):
        x, y = enwik8.train_window(self.train, self.cfg.model.chunk_size, generator, tuple(self.cfg.chunk_counts),
                                   self.cfg.batch_size)
        return {"tokens": x.to(self.device)}, y.to(self.device)

    def eval_batches(self):
        length = self.cfg.eval_chunks * self.cfg.model.chunk_size
        for x, y in enwik8.eval_windows(self.valid, length, self.cfg.max_eval_windows):
            yield {"tokens": x.to(self.device)}, y.to(self.device)


class LRATask:
    """One Long Range Arena classification task: padded sequences, a padding mask, a label each.

    Batches are cut to their longest real sequence: the padding is masked everywhere, so the
    trailing columns change nothing but the cost (ListOps averages a third of its 2048).
    """

    def __init__(self, cfg: TaskSettings, device: torch.device):
        self.cfg, self.device = cfg, device
        self.name = cfg.task.removeprefix("lra-")
        self.head = "retrieval" if self.name == "retrieval" else "classify"
        self.num_classes = lra.TASKS[self.name][1]
        if self.name == "listops" and cfg.data_path is None:
            self.vocab_size = len(lra.LISTOPS_VOCAB)
            self.train = self._generated(cfg.train_examples, cfg.seed)
            self.valid = self._generated(cfg.eval_examples, cfg.seed + 1_000_003)
        else:
            if cfg.data_path is None:
                raise UserError(f"LRA {self.name} needs its data: download lra_release.gz from the Long Range "
                                "Arena repository and pass it (or its unpacked folder) with --data")
            root = lra.prepare(self.name, cfg.data_path)  # an archive is checked and unpacked once, then reused
            self.vocab_size = len(lra.LISTOPS_VOCAB) if self.name == "listops" else 256
            self.train = lra.load(self.name, root, "train", cfg.seq_len)
            self.valid = lra.load(self.name, root, "val", cfg.seq_len)

    def _generated(self, n: int, seed: int) -> lra.Classification:
        low, high = self.cfg.listops_lengths
        pairs = lra.generate_listops(n, seed=seed, min_length=low, max_length=min(high, self.cfg.seq_len))
        return lra.listops_from_pairs(pairs, self.cfg.seq_len)

    def _select(self, data: lra.Classification, idx: torch.Tensor):
        inputs = {"tokens": data.inputs[idx], "padding_mask": data.padding_mask[idx]}
        if data.inputs2 is not None:
            inputs |= {"tokens2": data.inputs2[idx], "padding_mask2": data.padding_mask2[idx]}
        for a, b in (("tokens", "padding_mask"), ("tokens2", "padding_mask2")):
            if a in inputs:
                width = max(1, int((~inputs[b]).sum(1).max()))
                inputs[a], inputs[b] = inputs[a][:, :width], inputs[b][:, :width]
        return {k: v.to(self.device) for k, v in inputs.items()}, data.labels[idx].to(self.device)

    def batch(self, generator: torch.Generator):
        return self._select(self.train, torch.randint(0, len(self.train), (self.cfg.batch_size,), generator=generator))

    def eval_batches(self):
        n = min(len(self.valid), self.cfg.eval_examples)
        for i in range(0, n, 64):
            yield self._select(self.valid, torch.arange(i, min(i + 64, n)))


def make_task(cfg: TaskSettings, device: torch.device):
    """The task `cfg.task` names, its data on `device`."""
    if cfg.task.startswith("lra-"):
        return LRATask(cfg, device)
    return {"assoc-recall": AssocRecallTask, "enwik8": Enwik8Task}[cfg.task](cfg, device)


def prepare_data(task: str, data_path: str | None) -> str | None:
    """Fetch or check `task`'s data set once, up front (a study does this before any trial runs), so that
    no run fails for want of it; returns the path the runs should read (None: generated data).

    Raises:
        UserError: the data set is missing and cannot be fetched, or `data_path` does not exist.
    """
    if task == "enwik8":
        return str(enwik8.prepare(Path(data_path) if data_path else None))
    if task.startswith("lra-") and task != "lra-listops" and not data_path:
        raise UserError(f"{task} needs its data: download lra_release.gz from the Long Range Arena repository "
                        "and pass it (or its unpacked folder) with --data")
    if task.startswith("lra-") and data_path:
        return str(lra.prepare(task.removeprefix("lra-"), data_path))
    if data_path and not Path(data_path).exists():
        raise UserError(f"--data {data_path}: not found")
    return data_path
