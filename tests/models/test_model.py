import pytest
import torch
import torch.nn.functional as F

from tcnsearch.models import FeedForward, MegaLayer, ModelConfig, build_model
from tcnsearch.ops import MultiHeadEMA

ARCHS = ["tcnca", "mega", "tcnca_simple", "tcn_mlp"]
SMALL = dict(d_model=16, z_dim=8, h_dim=24, ffn_dim=32, n_layers=2, chunk_size=8,
             tcn=dict(kernel_size=3, dilation_factor=2, depth=3), ema_dim=4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("task,shape", [("lm", (2, 20, 256)), ("classify", (2, 3)), ("retrieval", (2, 3))])
def test_shapes_and_parameter_count(arch, task, shape):
    model = build_model(ModelConfig(arch=arch, task=task, num_classes=3, **SMALL))
    tokens = torch.randint(0, 256, (2, 20))
    out = model(tokens, tokens2=tokens) if task == "retrieval" else model(tokens)
    assert out.shape == shape
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attention,rel_pos", [("softmax", "simple"), ("softmax", "rotary"), ("laplace", "simple")])
def test_language_model_is_causal(arch, attention, rel_pos):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, attention=attention, rel_pos=rel_pos, **SMALL)).eval()
    tokens = torch.randint(0, 256, (1, 30))
    changed = tokens.clone()
    changed[0, 17:] = (changed[0, 17:] + 1) % 256
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :17], b[:, :17])
    assert not torch.allclose(a[:, 17:], b[:, 17:])


@pytest.mark.parametrize("arch", ARCHS)
def test_classifier_ignores_padding(arch):
    torch.manual_seed(1)
    model = build_model(ModelConfig(arch=arch, task="classify", **SMALL)).eval()
    tokens = torch.randint(1, 256, (1, 13))
    padded = torch.cat([tokens, torch.zeros(1, 7, dtype=torch.long)], dim=1)
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[:, 13:] = True
    torch.testing.assert_close(model(padded, padding_mask=mask), model(tokens), atol=1e-5, rtol=1e-4)


def test_tcnca_and_mega_share_everything_but_the_mixer():
    tcnca = build_model(ModelConfig(arch="tcnca", **SMALL)).state_dict()
    mega = build_model(ModelConfig(arch="mega", **SMALL)).state_dict()
    outside = lambda keys: {k for k in keys if ".mixer.seq." not in k}  # noqa: E731
    assert outside(tcnca) == outside(mega)
    assert any(".mixer.seq.weight" in k for k in tcnca) and any(".mixer.seq.delta" in k for k in mega)


def test_norms_and_postnorm_build_and_run():
    for norm in ("layernorm", "scalenorm", "batchnorm"):
        for prenorm in (True, False):
            model = build_model(ModelConfig(norm=norm, prenorm=prenorm, **SMALL))
            assert torch.isfinite(model(torch.randint(0, 256, (2, 16)))).all()


def test_gradients_reach_every_parameter():
    model = build_model(ModelConfig(arch="tcnca", **SMALL))
    model(torch.randint(0, 256, (2, 24))).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


@pytest.mark.parametrize("bad", [dict(arch="transformer"), dict(d_model=0), dict(rel_pos="rotary", z_dim=7),
                                 dict(tcn=dict(kernel_size=1)), dict(dropout=1.0), dict(unknown=1),
                                 dict(activation_dropout=1.0), dict(activation_dropout=-0.1), dict(ema_truncation=0),
                                 dict(ema_truncation=-1)])
def test_bad_configs(bad):
    with pytest.raises(ValueError):
        ModelConfig(**(SMALL | bad))


def test_retrieval_needs_two_documents():
    model = build_model(ModelConfig(task="retrieval", **SMALL))
    with pytest.raises(ValueError, match="two documents"):
        model(torch.randint(0, 256, (1, 8)))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attention,rel_pos", [("softmax", "simple"), ("softmax", "rotary"), ("laplace", "simple")])
def test_incremental_decoding_equals_full_forward(arch, attention, rel_pos):
    torch.manual_seed(2)
    model = build_model(ModelConfig(arch=arch, attention=attention, rel_pos=rel_pos, **SMALL)).eval()
    _assert_decoding_equals_the_forward(model)


def _assert_decoding_equals_the_forward(model) -> None:
    """Token by token, the logits of the whole forward pass (21 tokens cross two chunk boundaries, chunk 8)."""
    tokens = torch.randint(0, 256, (2, 21))
    full = model(tokens)
    state = model.init_state(2)
    steps = []
    for t in range(tokens.shape[1]):
        logits, state = model.step(tokens[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-4, rtol=1e-4)


def test_generate_and_its_limits():
    model = build_model(ModelConfig(**SMALL)).eval()
    out = model.generate(torch.randint(0, 256, (2, 5)), steps=7, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 12) and out.dtype == torch.long
    with pytest.raises(ValueError, match="language model"):
        build_model(ModelConfig(task="classify", **SMALL)).init_state(1)


# -- MEGA's options: EMA truncation, activation dropout, the final norm's affine part -----------------------


def test_ema_truncation_reaches_every_ema_and_cuts_the_kernel():
    torch.manual_seed(3)
    full = build_model(ModelConfig(arch="mega", **SMALL)).eval()
    cut = build_model(ModelConfig(arch="mega", ema_truncation=4, **SMALL)).eval()
    cut.load_state_dict(full.state_dict())  # truncation adds no parameter
    assert [m.truncation for m in cut.modules() if isinstance(m, MultiHeadEMA)] == [4] * SMALL["n_layers"]
    tokens = torch.randint(0, 256, (2, 20))
    a, b = full(tokens), cut(tokens)
    # Outputs before position 4 use no tap past the 4th (the model is causal); later ones lose taps.
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_incremental_decoding_equals_full_forward_with_ema_truncation():
    torch.manual_seed(4)
    _assert_decoding_equals_the_forward(build_model(ModelConfig(arch="mega", ema_truncation=3, **SMALL)).eval())


def _ffn_hidden(ffn, x):
    """(the FFN's hidden activation as fc2 receives it, silu(fc1(norm(x))) computed directly)."""
    seen = []
    handle = ffn.fc2.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    ffn(x)
    handle.remove()
    return seen[0], F.silu(ffn.fc1(ffn.norm(x)))


def test_activation_dropout_drops_the_ffn_hidden_activation():
    torch.manual_seed(5)
    ffn = FeedForward(ModelConfig(activation_dropout=0.5, **SMALL))
    x = torch.randn(4, 50, SMALL["d_model"])
    with torch.no_grad():
        seen, act = _ffn_hidden(ffn.train(), x)
        kept = seen != 0
        # Inverted dropout: each unit zeroed or scaled by 1/(1-p), about half of them zeroed.
        torch.testing.assert_close(seen[kept], act[kept] / 0.5)
        assert 0.45 < 1 - kept.float().mean() < 0.55
        seen, act = _ffn_hidden(ffn.eval(), x)
        torch.testing.assert_close(seen, act)


def test_hidden_dropout_no_longer_reaches_the_ffn_and_activation_dropout_stays_out_of_the_gated_unit():
    torch.manual_seed(6)
    ffn = FeedForward(ModelConfig(hidden_dropout=0.5, **SMALL)).train()
    x = torch.randn(2, 12, SMALL["d_model"])
    with torch.no_grad():
        seen, act = _ffn_hidden(ffn, x)
        torch.testing.assert_close(seen, act)
        layer = MegaLayer(ModelConfig(arch="mega", activation_dropout=0.5, **SMALL), "ema")
        torch.testing.assert_close(layer.train()(x), layer.eval()(x))
        layer = MegaLayer(ModelConfig(arch="mega", hidden_dropout=0.5, **SMALL), "ema")
        assert not torch.allclose(layer.train()(x), layer.eval()(x))  # MEGA's hidden dropout: the values v


@pytest.mark.parametrize("norm", ["layernorm", "scalenorm", "batchnorm"])
def test_final_norm_without_affine_has_no_parameters_and_normalises_plainly(norm):
    torch.manual_seed(7)
    with_affine = build_model(ModelConfig(norm=norm, **SMALL))
    model = build_model(ModelConfig(norm=norm, final_norm_affine=False, **SMALL)).eval()
    assert list(model.final_norm.parameters()) == []
    assert with_affine.num_parameters() - model.num_parameters() == sum(
        p.numel() for p in with_affine.final_norm.parameters()) > 0
    assert all(len(list(b.norm.parameters())) > 0 for b in model.blocks)  # only the final norm loses them
    seen = []
    model.final_norm.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    model(torch.randint(0, 256, (2, 16)))
    h, out = seen[0]  # (B, L, D)
    if norm == "layernorm":
        expected = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    elif norm == "scalenorm":
        expected = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
    else:  # batch norm in eval mode: the running statistics, fresh: mean 0, variance 1
        expected = h / torch.sqrt(torch.tensor(1.0 + 1e-5))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
