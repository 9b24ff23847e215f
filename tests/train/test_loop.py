import json
import random

import pytest
import torch

from tcnsearch.cli import main
from tcnsearch.data import make_task
from tcnsearch.models import build_model
from tcnsearch.train import make_config, train

FAST = {"seq_len": 16, "vocab_size": 10, "model": {"chunk_size": 16}, "train_examples": 2000,
        "eval_examples": 400}


@pytest.mark.slow
def test_tcnca_simple_learns_associative_recall_well_above_chance():
    cfg = make_config("assoc-recall", "tiny", FAST | {"steps": 300})
    result = train(cfg, progress=False)
    assert result.status == "completed" and result.steps == 300
    chance = 1 / (cfg.vocab_size - cfg.vocab_size // 2)
    assert result.metrics["accuracy"] > chance + 0.15
    assert [h["step"] for h in result.history] == [50, 100, 150, 200, 250, 300]
    assert result.history[-1]["loss"] < result.history[0]["loss"]


@pytest.mark.slow
def test_assoc_recall_tiny_preset_learns_as_shipped():
    """`tcnsearch train assoc-recall --preset tiny`: length 16, 5 keys and 5 values (chance 20%; the
    most frequent value of the list is right 40% of the time), >= 90% in seconds on a CPU."""
    cfg = make_config("assoc-recall", "tiny")
    assert (cfg.seq_len, cfg.vocab_size) == (16, 10) and cfg.model.chunk_size >= cfg.seq_len
    result = train(cfg, progress=False)
    assert result.status == "completed" and result.steps == cfg.steps
    assert result.metrics["accuracy"] >= 0.9


@pytest.mark.slow
def test_callback_sees_every_evaluation_and_can_stop():
    seen = []

    def callback(step, metrics, state):
        assert state.step == step and state.history[-1] is metrics
        seen.append((step, metrics["accuracy"]))
        return step < 100

    cfg = make_config("assoc-recall", "tiny", FAST | {"steps": 300})
    result = train(cfg, callback=callback, progress=False)
    assert result.status == "stopped" and result.steps == 100 and [s for s, _ in seen] == [50, 100]


def test_non_finite_loss_stops_with_a_clear_status():
    cfg = make_config("assoc-recall", "tiny", FAST | {"steps": 200, "lr": 1e12, "grad_clip": 0, "warmup_steps": 0})
    result = train(cfg, progress=False)
    assert result.status == "diverged" and "non-finite" in result.reason and result.steps < 200


@pytest.mark.slow
def test_checkpoint_and_resume_continue_the_same_run(tmp_path):
    cfg = make_config("assoc-recall", "tiny", FAST | {"steps": 100, "eval_every": 25})
    whole = train(cfg, progress=False)
    ckpt = tmp_path / "run.pt"
    first = train(cfg, checkpoint=ckpt, callback=lambda step, m, state: step < 50, progress=False)
    assert first.status == "stopped" and ckpt.exists()
    rest = train(cfg, checkpoint=ckpt, resume=True, progress=False)
    assert rest.status == "completed" and rest.steps == 100
    assert [h["step"] for h in rest.history] == [25, 50, 75, 100]
    assert rest.metrics["loss"] == pytest.approx(whole.metrics["loss"], abs=1e-3)


def test_train_command_json(capsys, tmp_path):
    args = ["train", "assoc-recall", "--steps", "20", "--set", "seq_len=16", "--set", "vocab_size=10",
            "--set", "model.chunk_size=16", "--set", "eval_every=10", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "completed" and doc["steps"] == 20 and 0 <= doc["metrics"]["accuracy"] <= 1
    assert doc["config"]["model"]["arch"] == "tcnca_simple" and doc["num_parameters"] > 0


@pytest.mark.parametrize("args,message", [
    (["train", "nope"], "unknown task 'nope'"),
    (["train", "assoc-recall", "--set", "lr=-1"], "lr: Input should be greater than 0"),
    (["train", "assoc-recall", "--resume"], "--resume needs --checkpoint"),
    (["train", "assoc-recall", "--preset", "huge"], "Invalid value for '--preset'"),
])
def test_train_command_bad_input(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def _imdb(root, n: int, seed: int) -> None:
    """Miniature IMDB in the release layout: a review is positive iff it says 'good'."""
    rng = random.Random(seed)
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                filler = "".join(rng.choice("xyzw ") for _ in range(rng.randint(10, 60)))
                cut = rng.randint(0, len(filler))
                word = "good" if label == "pos" else "bad!"
                (folder / f"{i}_5.txt").write_text(filler[:cut] + word + filler[cut:])


@pytest.mark.slow
def test_lra_text_classifier_learns_from_release_files(tmp_path):
    _imdb(tmp_path, 100, seed=0)
    cfg = make_config("lra-text", "tiny", {"data_path": str(tmp_path), "seq_len": 96, "steps": 150,
                                           "eval_every": 50, "batch_size": 16, "lr": 3e-3})
    result = train(cfg, progress=False)
    assert result.status == "completed" and set(result.metrics) == {"step", "train_loss", "loss", "accuracy"}
    assert result.metrics["accuracy"] >= 0.9  # chance is 0.5


def test_lra_batches_are_cut_to_their_longest_sequence_without_changing_the_result(tmp_path):
    (tmp_path / "tsv_data").mkdir()
    rows = [f"{i % 2}.0\ta{i}\tb{i}\t{'p' * (3 + i)}\t{'q' * (9 - i)}" for i in range(6)]
    for name in ("train", "eval"):
        (tmp_path / "tsv_data" / f"new_aan_pairs.{name}.tsv").write_text("\n".join(rows) + "\n")
    cfg = make_config("lra-retrieval", "tiny", {"data_path": str(tmp_path), "seq_len": 64, "batch_size": 6})
    task = make_task(cfg, torch.device("cpu"))
    inputs, labels = next(task.eval_batches())
    assert inputs["tokens"].shape == (6, 8) and inputs["tokens2"].shape == (6, 9)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]
    model = build_model(cfg.model.model_copy(update={"task": "retrieval", "vocab_size": 256})).eval()
    full = {"tokens": task.valid.inputs, "padding_mask": task.valid.padding_mask,
            "tokens2": task.valid.inputs2, "padding_mask2": task.valid.padding_mask2}
    torch.testing.assert_close(model(**inputs), model(**full), atol=1e-5, rtol=1e-5)


def test_lra_listops_runs_offline_on_generated_data(capsys):
    assert main(["train", "lra-listops", "--steps", "4", "--set", "eval_every=2", "--set", "eval_examples=16",
                 "--set", "train_examples=32", "--set", "seq_len=64", "--set", "listops_lengths=[5,64]",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "completed" and [h["step"] for h in doc["history"]] == [2, 4]
    assert 0 <= doc["metrics"]["accuracy"] <= 1 and "bpc" not in doc["metrics"]


def test_lra_without_data_names_the_way_out(capsys):
    assert main(["train", "lra-image", "--steps", "1"]) == 2
    assert "--data" in capsys.readouterr().err
