import csv

import numpy as np
import pytest
import torch
from PIL import Image

from tcnsearch.data import lra
from tcnsearch.errors import UserError


def stack_eval(source: str) -> int:
    """An independent ListOps evaluator: a stack of open operators, parentheses ignored."""
    stack = [[]]
    for tok in source.split():
        if tok.startswith("["):
            stack.append([tok])
        elif tok == "]":
            op, *args = stack.pop()
            value = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)),
                     "[SM": lambda a: sum(a) % 10}[op](args)
            stack[-1].append(value)
        elif tok.isdigit():
            stack[-1].append(int(tok))
    return stack[0][0]


# -- miniature files in the release layouts (also used by tests/test_train.py) --

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar(root, batches: dict[str, dict]) -> None:
    """CIFAR-10's binary version as its release has it: root/cifar-10-batches-bin/NAME.bin, records of
    one label byte then 3072 pixel bytes. batches: NAME -> {b"data": (n, 3072) uint8 rows of R, G, B
    planes, b"labels": [n ints]}."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        labels = np.asarray(batch[b"labels"], dtype=np.uint8)[:, None]
        (folder / f"{name}.bin").write_bytes(np.hstack([labels, np.asarray(batch[b"data"], np.uint8)]).tobytes())


def write_pathfinder(root, resolution: int, images: list[np.ndarray], labels: list[int]) -> None:
    """Pathfinder's layout: grayscale PNGs under curv_baseline/imgs/0 and one metadata file whose
    lines are `folder file _ label ...`, under root/pathfinder{resolution}."""
    base = root / f"pathfinder{resolution}" / "curv_baseline"
    (base / "imgs" / "0").mkdir(parents=True)
    (base / "metadata").mkdir()
    lines = []
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(pixels, mode="L").save(base / "imgs" / "0" / f"sample_{i}.png")
        lines.append(f"imgs/0 sample_{i}.png 0 {label} 0.5 1.0")
    (base / "metadata" / "0.npy").write_text("\n".join(lines) + "\n")


def write_retrieval(root, split: str, rows: list[tuple[int, str, str]]) -> None:
    """AAN pairs as tsv_data/new_aan_pairs.SPLIT.tsv (split: train, eval, test): label, id1, id2,
    text1, text2 per line."""
    (root / "tsv_data").mkdir(parents=True, exist_ok=True)
    text = "".join(f"{label}.0\tid{2 * i}\tid{2 * i + 1}\t{a}\t{b}\n" for i, (label, a, b) in enumerate(rows))
    (root / "tsv_data" / f"new_aan_pairs.{split}.tsv").write_text(text)


def test_generated_listops_follow_the_rules(tmp_path):
    pairs = lra.generate_listops(60, seed=1, min_length=10, max_length=300)
    assert len(pairs) == 60
    for source, target in pairs:
        assert 10 <= len(source.split()) <= 300 and 0 <= target <= 9
        assert stack_eval(source) == target
    assert {t for _, t in pairs} != {pairs[0][1]}  # not one constant answer
    lra.write_listops(tmp_path, {"train": 20, "val": 5, "test": 5}, min_length=10, max_length=200)
    data = lra.load("listops", tmp_path, "train", length=256)
    assert data.inputs.shape == (20, 256) and len(data) == 20
    with open(tmp_path / "listops-1000" / "basic_train.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    first = [lra.LISTOPS_VOCAB[i] for i in data.inputs[0][~data.padding_mask[0]].tolist()]
    assert " ".join(first) == rows[0]["Source"] and data.labels[0] == int(rows[0]["Target"])


def test_text_is_bytes(tmp_path):
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = tmp_path / "aclImdb" / split / label
            folder.mkdir(parents=True)
            (folder / "0_9.txt").write_bytes(f"{label} review é".encode())
    data = lra.load("text", tmp_path, "train", length=32)
    assert data.labels.tolist() == [0, 1]
    n = len("neg review é".encode())
    assert bytes(data.inputs[0, :n].tolist()) == "neg review é".encode() and data.padding_mask[0, n:].all()


def test_retrieval_pairs(tmp_path):
    write_retrieval(tmp_path, "train", [(1, "first paper", "second paper text"), (0, "x", "y")])
    data = lra.load("retrieval", tmp_path, "train", length=16)
    assert data.labels.tolist() == [1, 0]
    assert bytes(data.inputs[0, :11].tolist()) == b"first paper"
    assert bytes(data.inputs2[0, :16].tolist()) == b"second paper tex"  # truncated to the length
    (tmp_path / "tsv_data" / "new_aan_pairs.eval.tsv").write_text("1.0\tonly three\tcolumns\n")
    with pytest.raises(UserError, match="expected 5"):
        lra.load("retrieval", tmp_path, "val")


def test_image_is_grayscale_cifar_from_the_binary_version(tmp_path):
    """Images built as 32x32 RGB pictures, written as the binary records (label, then the R, G and B
    planes), read back as the grayscale formula computed pixel by pixel in plain Python."""
    rng = np.random.default_rng(0)
    pictures = {name: rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for name in CIFAR_BATCHES}
    labels = {name: [i % 10, (i + 3) % 10, 9] for i, name in enumerate(CIFAR_BATCHES)}
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in CIFAR_BATCHES:  # written by hand, byte by byte, independently of write_cifar
        with open(folder / f"{name}.bin", "wb") as fh:
            for picture, label in zip(pictures[name], labels[name], strict=True):
                fh.write(bytes([label]))
                for channel in range(3):
                    fh.write(bytes(int(picture[y, x, channel]) for y in range(32) for x in range(32)))
    data = lra.load("image", tmp_path, "test")
    assert data.inputs.shape == (3, 1024) and data.labels.tolist() == labels["test_batch"]
    expected = [[round(0.2989 * int(p[0]) + 0.5870 * int(p[1]) + 0.1140 * int(p[2])) for row in picture for p in row]
                for picture in pictures["test_batch"]]
    diff = np.abs(data.inputs.numpy() - np.array(expected))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # float32 against float64: a tie may round apart
    train = lra.load("image", tmp_path, "train")
    assert len(train) == 12 and train.labels.tolist() == sum((labels[f"data_batch_{i}"] for i in range(1, 5)), [])
    assert len(lra.load("image", tmp_path, "val")) == 3
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3000)  # not whole records
    with pytest.raises(UserError, match="not whole CIFAR-10 records"):
        lra.load("image", tmp_path, "test")
    assert not list(tmp_path.rglob("*.pkl")) and not (tmp_path / "cifar-10-batches-py").exists()


@pytest.mark.parametrize("task,resolution", [("pathfinder", 32), ("pathx", 128)])
def test_pathfinder_metadata_and_pngs(tmp_path, task, resolution):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (resolution, resolution), dtype=np.uint8) for _ in range(10)]
    write_pathfinder(tmp_path, resolution, images, [i % 2 for i in range(10)])
    train = lra.load(task, tmp_path, "train")
    test = lra.load(task, tmp_path, "test")
    assert len(train) == 8 and len(test) == 1
    assert train.labels.tolist() == [i % 2 for i in range(8)]
    assert torch.equal(train.inputs[3], torch.from_numpy(images[3].reshape(-1).astype(np.int64)))
    assert test.inputs.shape[1] == resolution * resolution


def test_missing_data_names_the_way_out(tmp_path):
    for task in lra.TASKS:
        with pytest.raises(UserError, match="--data"):
            lra.load(task, tmp_path, "train")
    with pytest.raises(UserError, match="unknown LRA task"):
        lra.load("cifar100", tmp_path, "train")
