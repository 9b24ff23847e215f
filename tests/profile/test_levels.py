import pytest
import torch

from tcnsearch.models import build_model
from tcnsearch.ops import TCN, MultiHeadEMA
from tcnsearch.profile import Candidate, ProfileSpec, Shape, swap_tcn_for_ema
from tcnsearch.profile.levels import build

MODEL = {"d_model": 8, "z_dim": 4, "h_dim": 8, "ffn_dim": 8, "chunk_size": 16, "n_layers": 2}


@pytest.mark.parametrize("arch", ["tcnca", "tcnca_simple", "tcn_mlp"])
def test_the_baseline_is_the_same_model_with_the_ema_in_each_tcns_place(arch):
    spec = ProfileSpec(channels=8, ema_dim=4, level="model", model=MODEL | {"arch": arch})
    cfg = spec.build_model_config(Candidate(3, 2, 2, 1))
    tcn_model, ema_model = build_model(cfg), swap_tcn_for_ema(build_model(cfg), 4)
    tcns = [m for m in tcn_model.modules() if isinstance(m, TCN)]
    emas = [m for m in ema_model.modules() if isinstance(m, MultiHeadEMA)]
    assert len(tcns) == len(emas) == 2 and not any(isinstance(m, TCN) for m in ema_model.modules())
    assert all(e.bidirectional is False for e in emas)  # a causal LM's EMA is unidirectional
    # Everything but the mixers is the same.
    outside = lambda m, kind: sum(p.numel() for p in m.parameters()) - sum(  # noqa: E731
        p.numel() for x in m.modules() if isinstance(x, kind) for p in x.parameters())
    assert outside(tcn_model, TCN) == outside(ema_model, MultiHeadEMA)


@pytest.mark.parametrize("level", ["op", "layer", "model"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_every_level_runs_both_workloads(level, bidirectional):
    spec = ProfileSpec(channels=8, ema_dim=4, level=level, bidirectional=bidirectional,
                       model=MODEL if level != "op" else None)
    shape = Shape(2, 8, 32, 4, bidirectional)
    for cand in (Candidate(3, 2, 2, 1), None):
        work = build(spec, shape, cand, torch.device("cpu"), "float32")
        for metric in ("fwd", "fwdbwd"):
            work.fns[metric]()


def test_a_model_level_training_step_updates_the_weights():
    spec = ProfileSpec(channels=8, ema_dim=4, level="model", model=MODEL)
    torch.manual_seed(0)
    work = build(spec, Shape(2, 8, 32, 4, False), Candidate(3, 2, 2, 1), torch.device("cpu"), "float32")
    model = work.fns["fwdbwd"].__closure__  # the step's closure holds the model and the optimizer
    params = [c.cell_contents for c in model if isinstance(c.cell_contents, torch.nn.Module)][0]
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
