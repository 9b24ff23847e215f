"""The Long Range Arena (Tay et al., 2021): six classification tasks, read from their release layout.

    root/listops-1000/basic_{train,val,test}.tsv             ListOps: Source \\t Target, 10 classes
    root/aclImdb/{train,test}/{pos,neg}/*.txt                  Text: IMDB reviews as bytes, 2 classes
    root/tsv_data/new_aan_pairs.{train,eval,test}.tsv          Retrieval: label \\t id1 \\t id2 \\t text1 \\t text2
    root/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin Image: CIFAR-10 (binary version) in grayscale
    root/pathfinder32/<difficulty>/metadata/*.npy              Pathfinder: text lines "dir file _ label ..."
    root/pathfinder128/<difficulty>/metadata/*.npy             Path-X: the same at 128x128

`--data` is that folder, or an archive (a tar or tar.gz: lra_release.gz, aclImdb_v1.tar.gz,
cifar-10-binary.tar.gz) that `prepare` checks and unpacks into the data cache; the task's folder
may lie up to two levels down (lra_release/listops-1000). CIFAR-10 is read from its binary
version, never from the pickled python one (unpickling a crafted file runs code).

Every task becomes token ids, padded to the task's length with a padding mask, and a label.
Bytes and pixels are their own ids (0..255); ListOps uses the small vocabulary below.
ListOps can also be generated offline with the benchmark's own rules (`generate_listops`).
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tcnsearch.data import archives
from tcnsearch.errors import UserError

TASKS = {  # name: (max length, classes)
    "listops": (2048, 10), "text": (4096, 2), "retrieval": (4000, 2), "image": (1024, 10),
    "pathfinder": (1024, 2), "pathx": (16384, 2),
}
SPLITS = ("train", "val", "test")
_LISTOPS_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
LISTOPS_VOCAB = ["<pad>", *[str(d) for d in range(10)], "[MIN", "[MAX", "[MED", "[SM", "]", "(", ")"]
_LISTOPS_ID = {tok: i for i, tok in enumerate(LISTOPS_VOCAB)}
csv.field_size_limit(1 << 30)
FOLDERS = {"listops": "listops-1000", "text": "aclImdb", "retrieval": "tsv_data", "image": "cifar-10-batches-bin",
           "pathfinder": "pathfinder32", "pathx": "pathfinder128"}
# lra_release.gz is gigabytes of small files (PNGs, text): the caps leave it room, the ratio still stops a bomb.
LIMITS = archives.Limits(max_members=5_000_000, max_bytes=256 << 30, max_ratio=100.0)
_DOWNLOAD = ("download lra_release.gz from the Long Range Arena repository (text: aclImdb_v1.tar.gz, image: "
             "cifar-10-binary.tar.gz) and pass the archive or its unpacked folder to --data")


@dataclass
class Classification:
    """inputs (N, L) int64, padding_mask (N, L) True at padding, labels (N,); a second document for Retrieval."""

    inputs: torch.Tensor
    padding_mask: torch.Tensor
    labels: torch.Tensor
    inputs2: torch.Tensor | None = None
    padding_mask2: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


def _pad(rows: list[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.ones(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        row = row[:length]
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = False
    return ids, mask


def _need(path: Path, task: str) -> Path:
    if not path.exists():
        raise UserError(f"LRA {task}: {path} not found; {_DOWNLOAD}")
    return path


def locate(task: str, folder: Path) -> Path:
    """The folder holding `task`'s release folder: `folder` itself or one up to two levels below it."""
    folder = Path(folder)
    name = FOLDERS[task]
    found = [folder] if (folder / name).exists() else sorted(p.parent for p in folder.glob(f"*/{name}"))
    found = found or sorted(p.parent for p in folder.glob(f"*/*/{name}"))
    return found[0] if found else folder


def prepare(task: str, source: Path | str, directory: Path | None = None) -> Path:
    """The folder to read `task` from: `source` if a folder, else its archive checked and unpacked into the
    cache (`directory`, default $TCNSEARCH_DATA) once, reused while the archive is unchanged.

    Raises:
        UserError: no such path, not a folder nor a tar archive, or an archive archives.unpack_tar refuses.
    """
    if task not in TASKS:
        raise UserError(f"unknown LRA task {task!r}; choose one of {', '.join(TASKS)}")
    source = Path(source)
    if source.is_dir():
        return locate(task, source)
    if not source.exists():
        raise UserError(f"--data {source}: not found; {_DOWNLOAD}")
    if not archives.is_tar(source):
        raise UserError(f"--data {source}: neither a folder nor a tar or tar.gz archive; {_DOWNLOAD}")
    name = source.name.split(".")[0] or "archive"
    where = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]  # two archives of one name: two folders
    target = Path(directory or archives.data_dir()) / "lra" / f"{name}-{where}"
    return locate(task, archives.unpack_tar(source, target, LIMITS, hint=_DOWNLOAD))


# -- ListOps -------------------------------------------------------------------------------------

def tokenize_listops(source: str) -> list[int]:
    try:
        return [_LISTOPS_ID[tok] for tok in source.split()]
    except KeyError as err:
        raise UserError(f"ListOps: unknown token {err.args[0]!r} in a Source expression") from None


def load_listops(root: Path, split: str, length: int) -> Classification:
    path = _need(Path(root) / FOLDERS["listops"] / _LISTOPS_FILES[split], "listops")
    rows, labels = [], []
    with open(path, newline="") as fh:
        for record in csv.DictReader(fh, delimiter="\t"):
            rows.append(tokenize_listops(record["Source"]))
            labels.append(int(record["Target"]))
    ids, mask = _pad(rows, length)
    return Classification(ids, mask, torch.tensor(labels))


def listops_from_pairs(pairs: list[tuple[str, int]], length: int) -> Classification:
    """(Source, Target) pairs, as `generate_listops` returns them, as tensors padded to `length`."""
    ids, mask = _pad([tokenize_listops(source) for source, _ in pairs], length)
    return Classification(ids, mask, torch.tensor([target for _, target in pairs]))


_OPS = ("[MIN", "[MAX", "[MED", "[SM")


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int, value_p: float = 0.25):
    """(tree, length) as in the benchmark's generator: an operator over 2..max_args subtrees with
    probability value_p (below max_depth), else a digit; the tree nests as ((((op, a), b), c), ']')."""
    if depth >= max_depth or rng.random() > value_p:
        return rng.randrange(10), 1
    values, length = [], 2
    for _ in range(rng.randint(2, max_args)):
        sub, n = _tree(rng, depth + 1, max_depth, max_args, value_p)
        values.append(sub)
        length += n
    t = (rng.choice(_OPS), values[0])
    for v in values[1:]:
        t = (t, v)
    return (t, "]"), length


def _to_string(t) -> str:
    if isinstance(t, str | int):
        return str(t)
    return f"( {_to_string(t[0])} {_to_string(t[1])} )"


def _evaluate(t):
    if not isinstance(t, tuple):
        return t
    left, right = _evaluate(t[0]), _evaluate(t[1])
    if left in _OPS:
        return left, [right]
    if right == "]":
        op, args = left
        if op == "[MIN":
            return min(args)
        if op == "[MAX":
            return max(args)
        if op == "[MED":
            return int(np.median(args))
        return sum(args) % 10
    return left[0], left[1] + [right]


def generate_listops(n: int, seed: int = 0, min_length: int = 500, max_length: int = 2000, max_depth: int = 10,
                     max_args: int = 10) -> list[tuple[str, int]]:
    """n (Source, Target) pairs whose token count lies in [min_length, max_length]."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        tree, _ = _tree(rng, 1, max_depth, max_args)
        source = _to_string(tree)
        if min_length <= len(source.split()) <= max_length:
            out.append((source, _evaluate(tree)))
    return out


def write_listops(root: Path, sizes: dict[str, int], seed: int = 0, **kwargs) -> Path:
    """The generated set in the release layout: root/listops-1000/basic_{split}.tsv."""
    folder = Path(root) / "listops-1000"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate(sizes.items()):
        with open(folder / _LISTOPS_FILES[split], "w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t")
            writer.writerow(["Source", "Target"])
            writer.writerows(generate_listops(n, seed=seed + i, **kwargs))
    return folder


# -- Text, Retrieval -------------------------------------------------------------------------------

def load_text(root: Path, split: str, length: int) -> Classification:
    """IMDB reviews as bytes. The release has train and test; val is the test set, as in LRA."""
    folder = _need(Path(root) / FOLDERS["text"] / ("train" if split == "train" else "test"), "text")
    rows, labels = [], []
    for label, name in ((0, "neg"), (1, "pos")):
        for path in sorted((folder / name).glob("*.txt")):
            rows.append(list(path.read_bytes()))
            labels.append(label)
    ids, mask = _pad(rows, length)
    return Classification(ids, mask, torch.tensor(labels))


def load_retrieval(root: Path, split: str, length: int) -> Classification:
    name = {"train": "train", "val": "eval", "test": "test"}[split]
    path = _need(Path(root) / FOLDERS["retrieval"] / f"new_aan_pairs.{name}.tsv", "retrieval")
    docs1, docs2, labels = [], [], []
    with open(path, newline="", encoding="utf-8") as fh:
        for record in csv.reader(fh, delimiter="\t"):
            if len(record) < 5:
                raise UserError(f"LRA retrieval: {path} has a line with {len(record)} columns, expected 5 "
                                "(label, id1, id2, text1, text2)")
            labels.append(int(float(record[0])))
            docs1.append(list(record[3].encode()))
            docs2.append(list(record[4].encode()))
    ids1, mask1 = _pad(docs1, length)
    ids2, mask2 = _pad(docs2, length)
    return Classification(ids1, mask1, torch.tensor(labels), ids2, mask2)


# -- Image, Pathfinder, Path-X -------------------------------------------------------------------

def load_image(root: Path, split: str, length: int = 1024) -> Classification:
    """CIFAR-10 in grayscale (0.2989 R + 0.5870 G + 0.1140 B, as tf.image.rgb_to_grayscale), 1024 pixels.
    Train: batches 1-4; val: batch 5; test: test_batch. Each .bin file is records of 3073 bytes: the
    label, then 1024 red, 1024 green and 1024 blue pixels (32x32, row by row)."""
    folder = _need(Path(root) / FOLDERS["image"], "image")
    names = {"train": [f"data_batch_{i}" for i in range(1, 5)], "val": ["data_batch_5"], "test": ["test_batch"]}[split]
    pixels, labels = [], []
    for name in names:
        path = _need(folder / f"{name}.bin", "image")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % 3073:
            raise UserError(f"LRA image: {path} holds {raw.size:,} bytes, not whole CIFAR-10 records of 3073 "
                            "(1 label byte + 3072 pixels); download cifar-10-binary.tar.gz again")
        records = raw.reshape(-1, 3073)
        if records[:, 0].max() > 9:
            raise UserError(f"LRA image: {path} has a label above 9; it is not CIFAR-10's binary version")
        rgb = records[:, 1:].astype(np.float32).reshape(-1, 3, 1024)
        pixels.append(np.rint(rgb[:, 0] * 0.2989 + rgb[:, 1] * 0.5870 + rgb[:, 2] * 0.1140).clip(0, 255))
        labels.append(records[:, 0].astype(np.int64))
    ids = torch.from_numpy(np.concatenate(pixels).astype(np.int64))[:, :length]
    return Classification(ids, torch.zeros_like(ids, dtype=torch.bool), torch.from_numpy(np.concatenate(labels)))


def load_pathfinder(root: Path, split: str, length: int, resolution: int = 32) -> Classification:
    """Pathfinder (32x32) or Path-X (128x128): every difficulty's metadata, split 80/10/10 in order."""
    from PIL import Image

    base = _need(Path(root) / f"pathfinder{resolution}", "pathx" if resolution == 128 else "pathfinder")
    entries = []
    for meta in sorted(base.glob("*/metadata/*.npy")):
        for line in meta.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                entries.append((meta.parent.parent / parts[0] / parts[1], int(parts[3])))
    if not entries:
        raise UserError(f"LRA pathfinder: no metadata lines under {base}/*/metadata/")
    n = len(entries)
    lo, hi = {"train": (0, int(0.8 * n)), "val": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}[split]
    rows, labels = [], []
    for path, label in entries[lo:hi]:
        image = np.asarray(Image.open(path).convert("L"), dtype=np.int64)
        rows.append(image.reshape(-1)[:length].tolist())
        labels.append(label)
    ids, mask = _pad(rows, length)
    return Classification(ids, mask, torch.tensor(labels))


def load(task: str, root: Path | str, split: str, length: int | None = None) -> Classification:
    """One LRA task's split as tensors. `length` defaults to the task's standard length."""
    if task not in TASKS:
        raise UserError(f"unknown LRA task {task!r}; choose one of {', '.join(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    length = length or TASKS[task][0]
    root = Path(root)
    if task == "listops":
        return load_listops(root, split, length)
    if task == "text":
        return load_text(root, split, length)
    if task == "retrieval":
        return load_retrieval(root, split, length)
    if task == "image":
        return load_image(root, split, length)
    return load_pathfinder(root, split, length, resolution=128 if task == "pathx" else 32)
