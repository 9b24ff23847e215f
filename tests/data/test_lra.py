import csv
import pickle

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
    (tmp_path / "tsv_data").mkdir()
    with open(tmp_path / "tsv_data" / "new_aan_pairs.train.tsv", "w") as fh:
        fh.write("1.0\tid_a\tid_b\tfirst paper\tsecond paper text\n0.0\tid_c\tid_d\tx\ty\n")
    data = lra.load("retrieval", tmp_path, "train", length=16)
    assert data.labels.tolist() == [1, 0]
    assert bytes(data.inputs[0, :11].tolist()) == b"first paper"
    assert bytes(data.inputs2[0, :16].tolist()) == b"second paper tex"  # truncated to the length
    (tmp_path / "tsv_data" / "new_aan_pairs.eval.tsv").write_text("1.0\tonly three\tcolumns\n")
    with pytest.raises(UserError, match="expected 5"):
        lra.load("retrieval", tmp_path, "val")


def test_image_is_grayscale_cifar(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batches[name], fh)
    data = lra.load("image", tmp_path, "test")
    assert data.inputs.shape == (3, 1024) and data.labels.tolist() == [1, 2, 3]
    r, g, b = (batches["test_batch"][b"data"][0, i * 1024:(i + 1) * 1024].astype(float) for i in range(3))
    expected = np.rint(0.2989 * r + 0.5870 * g + 0.1140 * b)
    assert np.abs(data.inputs[0].numpy() - expected).max() <= 1
    assert len(lra.load("image", tmp_path, "train")) == 12


@pytest.mark.parametrize("task,resolution", [("pathfinder", 32), ("pathx", 128)])
def test_pathfinder_metadata_and_pngs(tmp_path, task, resolution):
    base = tmp_path / f"pathfinder{resolution}" / "curv_baseline"
    (base / "imgs" / "0").mkdir(parents=True)
    (base / "metadata").mkdir()
    rng = np.random.default_rng(1)
    lines, images = [], []
    for i in range(10):
        pixels = rng.integers(0, 256, (resolution, resolution), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(base / "imgs" / "0" / f"sample_{i}.png")
        images.append(pixels)
        lines.append(f"imgs/0 sample_{i}.png 0 {i % 2} 0.5 1.0")
    (base / "metadata" / "0.npy").write_text("\n".join(lines) + "\n")
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
