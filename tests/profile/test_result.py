"""A profile's result: the notes a study passes on, and the survivor record it freezes."""

import json

import pytest
import torch

from tcnsearch.profile import ProfileResult, ProfileSpec, Survivor, fingerprint
from tcnsearch.structure import Structure


def test_a_fallback_or_predicted_profile_is_flagged_for_the_study():
    native = fingerprint(torch.device("cpu"), "fp32")
    fallback = type(native)(**(native.as_dict() | {"backend": "fallback"}))
    result = lambda fp, predicted: ProfileResult(  # noqa: E731
        device=fp, target="cpu", storage="sqlite://", spec=ProfileSpec(), measured=1, cached=0, predicted=predicted,
        pairs=6, elapsed_s=1.0, ema=[], candidates=[{}] * 3)
    assert result(native, 0).notes() == []
    notes = result(fallback, 2).notes()
    assert any("PyTorch fallback" in n for n in notes) and any("2 of 3" in n and "predicted" in n for n in notes)


def _row(**changes) -> dict:
    row = {"kernel_size": 5, "dilation_factor": 4, "depth": 3, "per_block": 1, "tcn": "K5-f4-D3-B1",
           "speedup_fwd": 2.5, "speedup_fwd_ci": [2.4, 2.6], "speedup_fwdbwd": 1.5, "speedup_fwdbwd_ci": [1.4, 1.7],
           "tcn_fwd_ms": 0.4, "tcn_fwdbwd_ms": 2.0, "ema_fwd_ms": 1.0, "ema_fwdbwd_ms": 3.0, "source": "measured",
           "decision": "survivor"}
    return row | changes


@pytest.mark.parametrize("metric,latency", [("fwdbwd", 2.0), ("fwd", 0.4)])
def test_a_survivor_takes_the_latency_of_the_mode_that_decided(metric, latency):
    s = Survivor.from_row(_row(), metric)
    assert s.structure == Structure(5, 4, 3, 1) and s.label == "K5-f4-D3-B1" and s.latency_ms == latency
    assert s.speedup("fwd") == 2.5 and s.speedup_fwdbwd_ci == (1.4, 1.7) and s.receptive_field == 85


def test_a_survivor_record_round_trips_through_json():
    s = Survivor.from_row(_row(source="predicted", decision="undecided"), "fwdbwd")
    record = json.loads(json.dumps(s.to_record()))
    assert record["tcn"] == "K5-f4-D3-B1" and "structure" not in record
    assert Survivor.from_record(record) == s
    assert s.trial_attrs()["receptive_field"] == 85 and s.trial_attrs()["latency_ms"] == 2.0
