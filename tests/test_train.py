import json

import pytest

from tcnsearch.cli import main
from tcnsearch.errors import UserError
from tcnsearch.train import make_config, parse_set, train

FAST = {"seq_len": 16, "vocab_size": 10, "model": {"chunk_size": 16}, "train_examples": 2000,
        "eval_examples": 400}


def test_tcnca_simple_learns_associative_recall_well_above_chance():
    cfg = make_config("assoc-recall", "tiny", FAST | {"steps": 300})
    result = train(cfg, progress=False)
    assert result.status == "completed" and result.steps == 300
    chance = 1 / (cfg.vocab_size - cfg.vocab_size // 2)
    assert result.metrics["accuracy"] > chance + 0.15
    assert [h["step"] for h in result.history] == [50, 100, 150, 200, 250, 300]
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_callback_sees_every_evaluation_and_can_stop():
    seen = []

    def callback(step, metrics):
        seen.append((step, metrics["accuracy"]))
        return step < 100

    cfg = make_config("assoc-recall", "tiny", FAST | {"steps": 300})
    result = train(cfg, callback=callback, progress=False)
    assert result.status == "stopped" and result.steps == 100 and [s for s, _ in seen] == [50, 100]


def test_non_finite_loss_stops_with_a_clear_status():
    cfg = make_config("assoc-recall", "tiny", FAST | {"steps": 200, "lr": 1e12, "grad_clip": 0, "warmup_steps": 0})
    result = train(cfg, progress=False)
    assert result.status == "diverged" and "non-finite" in result.reason and result.steps < 200


def test_checkpoint_and_resume_continue_the_same_run(tmp_path):
    cfg = make_config("assoc-recall", "tiny", FAST | {"steps": 100, "eval_every": 25})
    whole = train(cfg, progress=False)
    ckpt = tmp_path / "run.pt"
    first = train(cfg, checkpoint=ckpt, callback=lambda step, m: step < 50, progress=False)
    assert first.status == "stopped" and ckpt.exists()
    rest = train(cfg, checkpoint=ckpt, resume=True, progress=False)
    assert rest.status == "completed" and rest.steps == 100
    assert [h["step"] for h in rest.history] == [25, 50, 75, 100]
    assert rest.metrics["loss"] == pytest.approx(whole.metrics["loss"], abs=1e-3)


def test_overrides_and_bad_settings():
    assert parse_set(["lr=3e-3", "model.tcn.depth=3", "model.rel_pos=null"]) == {
        "lr": 3e-3, "model": {"tcn": {"depth": 3}, "rel_pos": None}}
    cfg = make_config("assoc-recall", "cpu", {"model": {"tcn": {"depth": 3}}})
    assert cfg.model.tcn.depth == 3 and cfg.model.arch == "tcnca_simple"
    for bad, message in [(("nope", "tiny", {}), "unknown task"), (("assoc-recall", "huge", {}), "unknown preset"),
                         (("assoc-recall", "tiny", {"lr": -1}), "lr: Input should be greater than 0"),
                         (("assoc-recall", "tiny", {"model": {"arch": "rnn"}}), "model.arch")]:
        with pytest.raises(UserError, match=message):
            make_config(*bad)
    with pytest.raises(UserError, match="key=value"):
        parse_set(["lr"])


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
