"""Latency profiling: which TCN structures beat MEGA's EMA on a device, and by how much.

    spec = ProfileSpec(lengths=[4096], kernel_sizes=[3, 17], level="op")
    result = run_profile(spec, gpu="cpu", storage="sqlite:///tcnsearch.db")
    result.survivors  # speedup interval above spec.min_speedup at every length, fastest first
    result.undecided  # intervals that still straddle it after the time cap

Modules, in the order the data flows: candidates (the grid and its settings), levels (what is
timed: operator, layer, model), measure (paired rounds, bootstrap intervals, the local measurer),
rounds (a profile's measuring session), table (the latency table), latency_model (predictions for
what was not measured), result (decisions, rows, the survivor record), runner (run_profile),
figures (plots of a profile), budget (what a profile holds in memory, checked before it starts).
"""

from tcnsearch.profile.budget import check_memory, estimate_profile
from tcnsearch.profile.candidates import LEVELS, ProfileSpec, make_spec
from tcnsearch.profile.devices import Fingerprint, default_cpu_threads, fingerprint
from tcnsearch.profile.figures import dashboard_figure, profile_figures, profile_note, source_text, speedup_text
from tcnsearch.profile.latency_model import LatencyModel
from tcnsearch.profile.levels import METRICS, Shape, swap_tcn_for_ema
from tcnsearch.profile.measure import LocalMeasurer, PairedSession, median_interval
from tcnsearch.profile.result import ProfileResult, Survivor, assemble, decision, shapes_of
from tcnsearch.profile.rounds import Session, finished
from tcnsearch.profile.runner import run_profile, spread_sample
from tcnsearch.profile.table import LatencyTable

__all__ = [
    "LEVELS",
    "METRICS",
    "Fingerprint",
    "LatencyModel",
    "LatencyTable",
    "LocalMeasurer",
    "PairedSession",
    "ProfileResult",
    "ProfileSpec",
    "Session",
    "Shape",
    "Survivor",
    "assemble",
    "check_memory",
    "dashboard_figure",
    "decision",
    "default_cpu_threads",
    "estimate_profile",
    "finished",
    "fingerprint",
    "make_spec",
    "median_interval",
    "profile_figures",
    "profile_note",
    "run_profile",
    "shapes_of",
    "source_text",
    "speedup_text",
    "spread_sample",
    "swap_tcn_for_ema",
]
