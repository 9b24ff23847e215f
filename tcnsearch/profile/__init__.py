"""Latency profiling: which TCN structures beat MEGA's EMA on a device, and by how much.

    spec = ProfileSpec(lengths=[4096], kernel_sizes=[3, 17], level="op")
    result = run_profile(spec, gpu="cpu", storage="sqlite:///tcnsearch.db")
    result.survivors  # speedup interval above spec.min_speedup at every length, fastest first
    result.undecided  # intervals that still straddle it after the time cap

Modules, in the order the data flows: candidates (the grid and its settings), levels (what is
timed: operator, layer, model), measure (paired rounds, bootstrap intervals), table (the latency
table), latency_model (predictions for what was not measured), runner (run_profile).
"""

from tcnsearch.profile.candidates import LEVELS, Candidate, ProfileSpec, make_spec
from tcnsearch.profile.devices import GPU_MODELS, Fingerprint, fingerprint, resolve_local
from tcnsearch.profile.latency_model import LatencyModel
from tcnsearch.profile.levels import METRICS, Shape, swap_tcn_for_ema
from tcnsearch.profile.measure import PairedSession, median_interval
from tcnsearch.profile.runner import ProfileResult, assemble, decision, run_profile, shapes_of, spread_sample
from tcnsearch.profile.table import LatencyTable

__all__ = [
    "GPU_MODELS",
    "LEVELS",
    "METRICS",
    "Candidate",
    "Fingerprint",
    "LatencyModel",
    "LatencyTable",
    "PairedSession",
    "ProfileResult",
    "ProfileSpec",
    "Shape",
    "assemble",
    "decision",
    "fingerprint",
    "make_spec",
    "median_interval",
    "resolve_local",
    "run_profile",
    "shapes_of",
    "spread_sample",
    "swap_tcn_for_ema",
]
