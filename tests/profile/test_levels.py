import pytest
import torch

from tcnsearch.models import build_model
from tcnsearch.ops import TCN, MultiHeadEMA
from tcnsearch.profile import ProfileSpec, Shape, swap_tcn_for_ema
from tcnsearch.profile.levels import build
from tcnsearch.structure import Structure

MODEL = {"d_model": 8, "z_dim": 4, "h_dim": 8, "ffn_dim": 8, "chunk_size": 16, "n_layers": 2}


@pytest.mark.parametrize("arch", ["tcnca", "tcnca_simple", "tcn_mlp"])
def test_the_baseline_is_the_same_model_with_the_ema_in_each_tcns_place(arch):
    spec = ProfileSpec(channels=8, ema_dim=4, level="model", model=MODEL | {"arch": arch})
    cfg = spec.build_model_config(Structure(3, 2, 2, 1))
    tcn_model, ema_model = build_model(cfg), swap_tcn_for_ema(build_model(cfg), 4)
    tcns = [m for m in tcn_model.modules() if isinstance(m, TCN)]
    emas = [m for m in ema_model.modules() if isinstance(m, MultiHeadEMA)]
    assert len(tcns) == len(emas) == 2 and not any(isinstance(m, TCN) for m in ema_model.modules())
    assert all(e.bidirectional is False for e in emas)  # a causal LM's EMA is unidirectional
    # Everything but the mixers is the same.
    outside = lambda m, kind: sum(p.numel() for p in m.parameters()) - sum(  # noqa: E731
        p.numel() for x in m.modules() if isinstance(x, kind) for p in x.parameters())
    assert outside(tcn_model, TCN) == outside(ema_model, MultiHeadEMA)


def _module_of(work) -> torch.nn.Module:
    """The module a workload runs (its closures hold it)."""
    return next(c.cell_contents for fn in work.fns.values() for c in fn.__closure__
                if isinstance(c.cell_contents, torch.nn.Module))


@pytest.mark.parametrize("level", ["op", "layer", "model"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_every_level_runs_its_side_forward_and_only_fwdbwd_backward(level, bidirectional):
    spec = ProfileSpec(channels=8, ema_dim=4, level=level, bidirectional=bidirectional,
                       model=MODEL if level != "op" else None)
    shape = Shape(2, 8, 32, 4, bidirectional)
    for cand, side, other in ((Structure(3, 2, 2, 1), TCN, MultiHeadEMA), (None, MultiHeadEMA, TCN)):
        module = _module_of(work := build(spec, shape, cand, torch.device("cpu"), "fp32"))
        calls = _count_calls(module, side, other)
        work.fns["fwd"]()
        assert calls["forward"] >= 1 and calls["backward"] == 0 and calls["other"] == 0
        work.fns["fwdbwd"]()
        assert calls["forward"] >= 2 and calls["backward"] > 0 and calls["other"] == 0


def _count_calls(module: torch.nn.Module, side: type, other: type) -> dict[str, int]:
    """Counts, as `module` runs: forwards of its `side` mixers and of `other` ones, and gradients computed."""
    calls = {"forward": 0, "other": 0, "backward": 0}

    def count(key):
        return lambda *_: calls.__setitem__(key, calls[key] + 1)

    for m in module.modules():
        if isinstance(m, (side, other)):
            m.register_forward_hook(count("forward" if isinstance(m, side) else "other"))
    for p in module.parameters():
        p.register_hook(count("backward"))
    return calls


def test_a_model_level_training_step_updates_the_weights():
    spec = ProfileSpec(channels=8, ema_dim=4, level="model", model=MODEL)
    torch.manual_seed(0)
    work = build(spec, Shape(2, 8, 32, 4, False), Structure(3, 2, 2, 1), torch.device("cpu"), "fp32")
    params = _module_of(work)
    before = [p.detach().clone() for p in params.parameters()]
    work.fns["fwdbwd"]()
    assert any(not torch.equal(b, p) for b, p in zip(before, params.parameters(), strict=True))


def test_the_context_names_the_model_but_not_the_tcn():
    a = ProfileSpec(level="model", model=MODEL)
    assert a.context == ProfileSpec(level="model", model=MODEL | {"tcn": {"kernel_size": 9}}).context
    assert a.context != ProfileSpec(level="model", model=MODEL | {"d_model": 16}).context
    assert ProfileSpec(level="op", model=MODEL).context == ""
    with pytest.raises(ValueError, match="model"):
        ProfileSpec(level="model", model={"d_model": -1})


@pytest.mark.parametrize("level", ["op", "layer", "model"])
class _MatmulDtypes(torch.overrides.TorchFunctionMode):
    """The dtypes the convolutions and linear layers compute in (after autocast), as a workload runs."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.dtype] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.nn.functional.conv1d, torch.nn.functional.linear):
            self.seen.append(out.dtype)
        return out


@pytest.mark.parametrize("level", ["op", "layer", "model"])
@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_precision_is_what_runs_as_training_runs_it(level, precision, dtype):
    """float32 parameters at every precision; the convolutions and matrix products under autocast in bf16
    (the precision a study trains in), so that the profile times the step that is trained."""
    spec = ProfileSpec(channels=8, ema_dim=4, level=level, model=MODEL if level != "op" else None)
    work = build(spec, Shape(2, 8, 32, 4, False), Structure(3, 2, 2, 1), torch.device("cpu"), precision)
    with _MatmulDtypes() as mode:
        work.fns["fwdbwd"]()
    assert set(mode.seen) <= {dtype}
    assert mode.seen or (level, precision) == ("op", "fp32")  # in fp32 the op level's TCN runs its native kernel
    assert {p.dtype for p in _module_of(work).parameters()} == {torch.float32}
