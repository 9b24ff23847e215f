"""Profiling on a Ray cluster node that has the target GPU.

The driver keeps the latency table; one Ray actor, placed by the `accelerator_type:<MODEL>`
resource that Ray puts on every node with such a GPU, does the measuring and sends each record
back, so results are stored exactly like local ones and progress is reported per measurement.
"""

from __future__ import annotations

import logging
import socket

from tcnsearch.errors import UserError
from tcnsearch.profile.candidates import Candidate, ProfileSpec
from tcnsearch.profile.devices import GPU_MODELS, Fingerprint, matches
from tcnsearch.profile.levels import Shape
from tcnsearch.profile.measure import RoundResult

log = logging.getLogger(__name__)


class _ProfilerActor:
    """Runs the paired rounds on the node; keeps the built workloads between rounds, as locally."""

    def __init__(self, dtype: str, block_s: float, threads: int | None):
        import torch

        from tcnsearch.profile.runner import LocalMeasurer

        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        self.local = LocalMeasurer(device, dtype, block_s, threads)

    def fingerprint(self) -> Fingerprint:
        return self.local.fingerprint()

    def round(self, spec: ProfileSpec, shape: Shape, candidates: list[Candidate], fresh: bool) -> RoundResult:
        return self.local.round(spec, shape, candidates, fresh)

    def forget(self, spec: ProfileSpec, shape: Shape, cand: Candidate) -> None:
        self.local.forget(spec, shape, cand)

    def host(self) -> str:
        return socket.gethostname()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on: ray.init itself retries for minutes."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms are for Ray to resolve
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as err:
        raise UserError(f"cannot reach the Ray cluster at {address!r}: {err.strerror or err}; "
                        "check --ray-address (e.g. 127.0.0.1:6379)") from None


def resource_name(gpu: str) -> str:
    return f"accelerator_type:{GPU_MODELS[gpu]}"


class RemoteMeasurer:
    """Measures on a node of the Ray cluster at `address` that advertises the GPU model."""

    def __init__(self, address: str, gpu: str, dtype: str, block_s: float, threads: int | None = None):
        import ray

        resource = resource_name(gpu)
        check_reachable(address)
        self._owns_ray = not ray.is_initialized()
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise UserError(f"cannot reach the Ray cluster at {address!r}: {str(err).splitlines()[0]}; "
                            "check --ray-address (e.g. 127.0.0.1:6379)") from None
        available = ray.cluster_resources()
        if resource not in available:
            if self._owns_ray:
                ray.shutdown()
            raise UserError(f"no node of the Ray cluster at {address!r} advertises {resource}; "
                            f"start one with a {GPU_MODELS[gpu]} (or --resources '{{\"{resource}\": 1}}')")
        num_gpus = 1 if available.get("GPU", 0) >= 1 else 0
        self._actor = ray.remote(_ProfilerActor).options(
            num_gpus=num_gpus, num_cpus=1, resources={resource: 0.001}).remote(dtype, block_s, threads)
        self._ray, self.gpu = ray, gpu
        fp = self.fingerprint()
        self._host = self._ray.get(self._actor.host.remote())
        if not matches(GPU_MODELS[gpu], fp.device_name):
            log.warning("the node advertising %s measures on %r; results are stored under that device",
                        resource, fp.device_name)

    def fingerprint(self) -> Fingerprint:
        return self._ray.get(self._actor.fingerprint.remote())

    def round(self, spec: ProfileSpec, shape: Shape, candidates: list[Candidate], fresh: bool = False) -> RoundResult:
        return self._ray.get(self._actor.round.remote(spec, shape, candidates, fresh))

    def forget(self, spec: ProfileSpec, shape: Shape, cand: Candidate) -> None:
        self._actor.forget.remote(spec, shape, cand)

    def host(self) -> str:
        return self._host

    def close(self) -> None:
        self._ray.kill(self._actor)
        if self._owns_ray:
            self._ray.shutdown()
