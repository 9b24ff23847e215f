"""A run's settings: `--set` overrides, presets by name, and what is refused."""

import pytest

from tcnsearch.errors import UserError
from tcnsearch.train import make_config, parse_set


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
