"""The TCN structure: one type, one label, and the receptive field checked against a brute-force count."""

import pytest
import torch

from tcnsearch.models import ModelConfig
from tcnsearch.ops import TCN
from tcnsearch.structure import Structure, metric_of


def test_the_label_is_the_one_format_and_parses_back():
    s = Structure(17, 6, 4, 2)
    assert s.label == str(s) == "K17-f6-D4-B2"
    assert Structure.parse("K17-f6-D4-B2") == s and Structure.parse(" K3-f1-D2-B1 ") == Structure(3, 1, 2)
    for bad in ("K17-f6-D4", "17,6,4,2", "K17-f6-D4-Bx", ""):
        with pytest.raises(ValueError, match="write it as K5-f4-D3-B1"):
            Structure.parse(bad)


def test_params_dicts_and_mappings_round_trip():
    s = Structure(5, 4, 3, 1)
    assert s.as_params() == {"K": 5, "f": 4, "D": 3, "B": 1}
    assert s.as_dict() == {"kernel_size": 5, "dilation_factor": 4, "depth": 3, "per_block": 1}
    assert Structure.of(s.as_dict() | {"receptive_field": 85, "other": "x"}) == s
    assert ModelConfig(tcn=s.as_dict()).tcn.structure == s  # the model config names the same structure


@pytest.mark.parametrize("s", [Structure(3, 2, 3, 1), Structure(5, 4, 3, 1), Structure(3, 1, 4, 2),
                               Structure(2, 3, 2, 3)])
def test_the_receptive_field_is_what_an_output_actually_sees(s):
    """Brute force: the positions whose input changes the last output of a causal TCN."""
    tcn = TCN(1, *s.as_dict().values(), activation="identity").double()
    with torch.no_grad():
        tcn.weight.fill_(1.0)
    length = s.receptive_field + 10
    x = torch.zeros(1, length, 1, dtype=torch.float64, requires_grad=True)
    tcn(x)[0, -1, 0].backward()
    seen = (x.grad[0, :, 0] != 0).nonzero().flatten()
    assert int(seen.max() - seen.min()) + 1 == s.receptive_field


def test_the_mode_names_the_speedup_that_decides():
    assert (metric_of("train"), metric_of("infer")) == ("fwdbwd", "fwd")
