"""Profiling on a Ray cluster node that has the target GPU.

The driver keeps the latency table; one Ray actor, placed by the `accelerator_type:<MODEL>`
resource that Ray puts on every node with such a GPU, does the measuring and sends each record
back, so results are stored exactly like local ones and progress is reported per measurement.
The actor asks Ray for one whole GPU and measures on exactly that one; a node that advertises
the GPU but gives a worker none that PyTorch can use is refused, never profiled on its CPU.
"""

from __future__ import annotations

import logging

from tcnsearch import hardware
from tcnsearch.cluster import check_reachable
from tcnsearch.errors import UserError
from tcnsearch.profile.candidates import ProfileSpec
from tcnsearch.profile.devices import Fingerprint
from tcnsearch.profile.levels import Shape
from tcnsearch.profile.measure import LocalMeasurer, RoundResult
from tcnsearch.structure import Structure

log = logging.getLogger(__name__)


class _ProfilerActor:
    """Runs the paired rounds on the node; keeps the built workloads between rounds, as locally."""

    def __init__(self, precision: str, block_s: float, threads: int | None, want_gpu: bool):
        import ray
        import torch

        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.error = None
        try:
            device = hardware.device_for_allocation("cuda" if want_gpu else "cpu", ray.get_gpu_ids(), cuda)
            self.local = LocalMeasurer(torch.device(device), precision, block_s, threads)
        except (ValueError, UserError) as err:
            self.error = str(err)

    def check(self) -> str | None:
        return self.error

    def fingerprint(self) -> Fingerprint:
        return self.local.fingerprint()

    def round(self, spec: ProfileSpec, shape: Shape, candidates: list[Structure], fresh: bool) -> RoundResult:
        return self.local.round(spec, shape, candidates, fresh)

    def capacity(self, spec: ProfileSpec, shape: Shape) -> int:
        return self.local.capacity(spec, shape)

    def forget(self, spec: ProfileSpec, shape: Shape, cand: Structure) -> None:
        self.local.forget(spec, shape, cand)

    def host(self) -> str:
        return self.local.host()


class RemoteMeasurer:
    """Measures on a node of the Ray cluster at `address` that advertises the GPU model."""

    def __init__(self, address: str, gpu: str, precision: str, block_s: float, threads: int | None = None):
        import ray

        check_reachable(address)
        self._owns_ray = not ray.is_initialized()
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise UserError(f"cannot reach the Ray cluster at {address!r}: {str(err).splitlines()[0]}; "
                            "check --ray-address (e.g. 127.0.0.1:6379)") from None
        self._ray, self.gpu = ray, gpu
        available = ray.cluster_resources()
        names = [f"accelerator_type:{t}" for t in hardware.accelerator_types(gpu)]
        resource = next((r for r in names if r in available), None)
        model = hardware.GPU_MODELS[gpu]
        if resource is None:
            self._shutdown()
            raise UserError(f"no node of the Ray cluster at {address!r} advertises {names[0]}; start one with a "
                            f"{model} (or --resources '{{\"{names[0]}\": 1}}')")
        # One whole GPU of a node that advertises the type (Ray then makes exactly it visible to the actor);
        # nodes that advertise it without any GPU (a test cluster's) are measured on their CPU, stored so.
        want_gpu = any(node["Resources"].get(resource) and node["Resources"].get("GPU", 0) >= 1
                       for node in ray.nodes() if node.get("Alive"))
        self._actor = ray.remote(_ProfilerActor).options(
            num_gpus=1 if want_gpu else 0, num_cpus=1, resources={resource: 0.001},
        ).remote(precision, block_s, threads, want_gpu)
        error = ray.get(self._actor.check.remote())
        if error:
            self.close()
            raise UserError(f"the node advertising {resource} cannot profile: {error}")
        fp = self.fingerprint()
        self._host = ray.get(self._actor.host.remote())
        if not hardware.matches(model, fp.device_name):
            log.warning("the node advertising %s measures on %r; results are stored under that device",
                        resource, fp.device_name)

    def fingerprint(self) -> Fingerprint:
        return self._ray.get(self._actor.fingerprint.remote())

    def round(self, spec: ProfileSpec, shape: Shape, candidates: list[Structure], fresh: bool = False
              ) -> RoundResult:
        return self._ray.get(self._actor.round.remote(spec, shape, candidates, fresh))

    def capacity(self, spec: ProfileSpec, shape: Shape) -> int:
        return self._ray.get(self._actor.capacity.remote(spec, shape))

    def forget(self, spec: ProfileSpec, shape: Shape, cand: Structure) -> None:
        self._actor.forget.remote(spec, shape, cand)

    def host(self) -> str:
        return self._host

    def _shutdown(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()

    def close(self) -> None:
        self._ray.kill(self._actor)
        self._shutdown()
