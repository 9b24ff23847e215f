"""Latency profiling: which TCN structures beat MEGA's EMA on a device.

    spec = ProfileSpec(lengths=[4096], kernel_sizes=[3, 17])
    result = run_profile(spec, gpu="cpu", storage="sqlite:///tcnsearch.db")
    result.survivors  # structures at least spec.min_speedup times faster, fastest first
"""

from tcnsearch.profile.candidates import Candidate, ProfileSpec, make_spec
from tcnsearch.profile.devices import GPU_MODELS, Fingerprint, fingerprint, resolve_local
from tcnsearch.profile.measure import Job, Shape, measure
from tcnsearch.profile.runner import ProfileResult, assemble, jobs_for, run_profile
from tcnsearch.profile.table import LatencyTable

__all__ = [
    "GPU_MODELS",
    "Candidate",
    "Fingerprint",
    "Job",
    "LatencyTable",
    "ProfileResult",
    "ProfileSpec",
    "Shape",
    "assemble",
    "fingerprint",
    "jobs_for",
    "make_spec",
    "measure",
    "resolve_local",
    "run_profile",
]
