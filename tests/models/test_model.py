import pytest
import torch

from tcnsearch.models import ModelConfig, build_model

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
                                 dict(tcn=dict(kernel_size=1)), dict(dropout=1.0), dict(unknown=1)])
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
    tokens = torch.randint(0, 256, (2, 21))  # crosses two chunk boundaries (chunk 8)
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
