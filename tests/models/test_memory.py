"""The memory a model needs, counted from its config: against the model itself and what autograd keeps."""

import random

import pytest
import torch

from tcnsearch.models import ModelConfig, activation_elements, build_model, num_parameters
from tcnsearch.train import scored_loss


def _random_config(rng: random.Random) -> ModelConfig:
    return ModelConfig(
        arch=rng.choice(["tcnca", "mega", "tcnca_simple", "tcn_mlp"]), task=rng.choice(["lm", "classify", "retrieval"]),
        d_model=rng.choice([16, 32, 64]), z_dim=rng.choice([8, 16, 32]), h_dim=rng.choice([32, 64, 128]),
        ffn_dim=rng.choice([32, 64, 128]), n_layers=rng.choice([1, 2]), chunk_size=rng.choice([16, 64, 100, 256]),
        attention=rng.choice(["softmax", "laplace"]), rel_pos=rng.choice(["simple", "rotary", None]),
        norm=rng.choice(["layernorm", "scalenorm", "batchnorm"]), prenorm=rng.choice([True, False]),
        dropout=rng.choice([0, 0.1]), hidden_dropout=rng.choice([0, 0.1]), attention_dropout=rng.choice([0, 0, 0.1]),
        activation_dropout=rng.choice([0, 0.1]), vocab_size=rng.choice([20, 256]), num_classes=rng.choice([2, 10]),
        ema_dim=rng.choice([8, 16]), final_norm_affine=rng.choice([True, False]),
        tcn={"kernel_size": rng.choice([3, 5]), "dilation_factor": 2, "depth": rng.choice([2, 4]),
             "per_block": rng.choice([1, 2])})


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for the backward while `fn` runs (the reference)."""
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_the_parameter_count_is_the_built_models_for_every_architecture_and_head():
    rng = random.Random(0)
    for _ in range(40):
        cfg = _random_config(rng)
        assert num_parameters(cfg) == build_model(cfg).num_parameters(), cfg


@pytest.mark.parametrize("seed", range(2))
def test_the_activations_are_what_autograd_keeps_within_a_stated_factor(seed):
    """Random small models of every architecture, head, attention and padding: the count is within
    [0.75, 1.7] of the bytes autograd really saves (what the training peak is made of)."""
    rng = random.Random(seed)
    for _ in range(10):
        cfg = _random_config(rng)
        batch, length = rng.choice([1, 2, 4]), rng.choice([64, 128, 200])
        padded = cfg.task != "lm" and rng.random() < 0.5
        torch.manual_seed(0)
        model = build_model(cfg).train()
        tokens = torch.randint(0, cfg.vocab_size, (batch, length))
        inputs = {"tokens": tokens}
        if padded:
            inputs["padding_mask"] = torch.arange(length).expand(batch, length) >= length - length // 4
        if cfg.task == "retrieval":
            inputs |= {"tokens2": tokens.flip(1)} | ({"padding_mask2": inputs["padding_mask"]} if padded else {})
        y = (torch.randint(0, cfg.vocab_size, (batch, length)) if cfg.task == "lm"
             else torch.randint(0, cfg.num_classes, (batch,)))
        saved = _saved_bytes(lambda: scored_loss(model, inputs, y))  # noqa: B023 (called at once)
        counted = 4 * activation_elements(cfg, batch, length, padded)
        assert 0.75 <= counted / saved <= 1.7, (cfg, batch, length, padded, counted, saved)


def test_the_activations_grow_with_the_batch_the_length_and_the_width():
    cfg = ModelConfig(arch="tcnca", d_model=64, chunk_size=128)
    base = activation_elements(cfg, 4, 1024)
    assert activation_elements(cfg, 8, 1024) == pytest.approx(2 * base, rel=0.01)
    assert activation_elements(cfg, 4, 2048) > 1.9 * base
    assert activation_elements(cfg.model_copy(update={"d_model": 128}), 4, 1024) > 1.3 * base
    assert activation_elements(cfg.model_copy(update={"n_layers": 4}), 4, 1024) > 1.9 * base
