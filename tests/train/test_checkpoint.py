"""Checkpoints: the whole training state, read onto the CPU whatever device wrote it."""

import pytest
import torch

from tcnsearch.errors import UserError
from tcnsearch.models import build_model
from tcnsearch.train import TrainState, checkpoint, make_config, make_optimizer


def _state(seed: int = 0) -> TrainState:
    torch.manual_seed(seed)
    cfg = make_config("assoc-recall", "tiny")
    model = build_model(cfg.model.model_copy(update={"vocab_size": 10}))
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    return TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                      torch.Generator(device="cpu").manual_seed(seed))


def _tensors(doc):
    if isinstance(doc, torch.Tensor):
        yield doc
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from _tensors(v)
    elif isinstance(doc, (list, tuple)):
        for v in doc:
            yield from _tensors(v)


def test_a_checkpoint_loads_onto_the_cpu_and_its_sampler_continues_the_same_order(tmp_path):
    state = _state()
    x = torch.randint(0, 10, (4, 16))
    state.model(x).sum().backward()
    state.optimizer.step()
    state.step, state.history = 7, [{"step": 7, "loss": 1.0}]
    torch.randint(0, 100, (5,), generator=state.sampler)  # the data order has moved on
    checkpoint.save(tmp_path / "run.pt", state.state_dict())
    expected = torch.randint(0, 100, (5,), generator=state.sampler)

    loaded = checkpoint.load(tmp_path / "run.pt")
    # On the CPU: the model and optimizer move it to their own device as they load it, and a generator
    # state must be a CPU byte tensor (a CUDA one would be refused: the resume-on-GPU failure).
    assert {t.device.type for t in _tensors(loaded)} == {"cpu"}
    assert loaded["sampler"].dtype == torch.uint8
    fresh = _state(seed=1)
    fresh.load_state_dict(loaded)
    assert (fresh.step, fresh.history) == (7, [{"step": 7, "loss": 1.0}])
    assert torch.equal(torch.randint(0, 100, (5,), generator=fresh.sampler), expected)
    for a, b in zip(fresh.model.parameters(), state.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_of_another_model_is_refused_and_nothing_is_half_loaded(tmp_path):
    state = _state()
    checkpoint.save(tmp_path / "run.pt", state.state_dict())
    cfg = make_config("assoc-recall", "tiny")
    other = build_model(cfg.model.model_copy(update={"vocab_size": 10, "d_model": 32}))
    optimizer = make_optimizer(other, 1e-3, 0.0)
    target = TrainState(other, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                        torch.Generator())
    with pytest.raises(UserError, match="does not fit this run's model"):
        target.load_state_dict(checkpoint.load(tmp_path / "run.pt"), "run.pt")
    assert target.step == 0


def test_a_save_is_atomic(tmp_path):
    path = tmp_path / "run.pt"
    checkpoint.save(path, _state().state_dict())
    assert path.exists() and not path.with_suffix(".pt.tmp").exists()
