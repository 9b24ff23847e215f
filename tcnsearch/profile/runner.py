"""`tcnsearch profile`: time the candidates against the EMA, store everything, keep the survivors."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tcnsearch.errors import UserError
from tcnsearch.profile.candidates import Candidate, ProfileSpec
from tcnsearch.profile.devices import GPU_MODELS, Fingerprint, fingerprint, found_devices, resolve_local
from tcnsearch.profile.measure import Job, Shape, measure
from tcnsearch.profile.table import LatencyTable, Measurement
from tcnsearch.storage import create_engine, masked, resolve_url


class LocalMeasurer:
    def __init__(self, device: torch.device, dtype: str, min_run_time: float):
        self.device, self.dtype, self.min_run_time = device, dtype, min_run_time

    def fingerprint(self) -> Fingerprint:
        return fingerprint(self.device, self.dtype)

    def measure(self, job: Job) -> dict:
        return measure(job, self.device, self.dtype, self.min_run_time) | {"host": socket.gethostname()}

    def close(self) -> None:
        pass


@dataclass
class ProfileResult:
    """What a profile found. `candidates` holds every structure, `survivors` those that passed."""

    device: Fingerprint
    target: str
    storage: str
    spec: ProfileSpec
    measured: int
    cached: int
    elapsed_s: float
    ema: list[dict]
    candidates: list[dict]
    survivors: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "device": self.device.as_dict(), "target": self.target, "storage": self.storage,
            "spec": self.spec.model_dump(), "measured": self.measured, "cached": self.cached,
            "elapsed_s": round(self.elapsed_s, 3), "ema": self.ema, "n_candidates": len(self.candidates),
            "survivors": self.survivors, "failed": self.failed,
        }


def _shapes(spec: ProfileSpec) -> list[Shape]:
    return [Shape(spec.batch, spec.channels, length, spec.ema_dim, spec.bidirectional) for length in spec.lengths]


def jobs_for(spec: ProfileSpec) -> list[Job]:
    """The EMA and every candidate at every length, the EMA first so each length's baseline lands early."""
    return [job for s in _shapes(spec) for job in [Job(s)] + [Job(s, c) for c in spec.candidates()]]


def _timing(m: Measurement | None) -> dict:
    if m is None:
        return {"status": "missing"}
    return {"status": m.status, "error": m.error, "fwd_ms": m.fwd_ms, "fwdbwd_ms": m.fwdbwd_ms,
            "fwd_spread": m.fwd_spread, "fwdbwd_spread": m.fwdbwd_spread,
            "peak_fwd_bytes": m.peak_fwd_bytes, "peak_fwdbwd_bytes": m.peak_fwdbwd_bytes}


def assemble(
    spec: ProfileSpec, stored: dict[Job, Measurement]
) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """(ema rows, candidate rows, survivors, failures) from the stored measurements.

    A candidate's top-level times are at the longest length; its speedups are the smallest over
    the lengths, which is what the survivor rule (`min_speedup` at every length) checks.
    """
    key = "speedup_fwdbwd" if spec.mode == "train" else "speedup_fwd"
    shapes = _shapes(spec)
    ema_rows = [{"length": s.length, **_timing(stored.get(Job(s)))} for s in shapes]
    rows, survivors, failed = [], [], []
    for cand in spec.candidates():
        by_length, ok = [], True
        for s, ema in zip(shapes, ema_rows, strict=True):
            tcn = _timing(stored.get(Job(s, cand)))
            entry = {"length": s.length, "tcn_status": tcn["status"]}
            if tcn["status"] == "ok" and ema["status"] == "ok":
                entry |= {
                    "tcn_fwd_ms": tcn["fwd_ms"], "tcn_fwdbwd_ms": tcn["fwdbwd_ms"],
                    "ema_fwd_ms": ema["fwd_ms"], "ema_fwdbwd_ms": ema["fwdbwd_ms"],
                    "speedup_fwd": ema["fwd_ms"] / tcn["fwd_ms"],
                    "speedup_fwdbwd": ema["fwdbwd_ms"] / tcn["fwdbwd_ms"],
                    "tcn_fwd_spread": tcn["fwd_spread"], "tcn_fwdbwd_spread": tcn["fwdbwd_spread"],
                    "tcn_peak_fwdbwd_bytes": tcn["peak_fwdbwd_bytes"],
                    "ema_peak_fwdbwd_bytes": ema["peak_fwdbwd_bytes"],
                }
            else:
                ok = False
                if tcn["status"] == "failed":
                    failed.append(cand.as_dict() | {"length": s.length, "error": tcn["error"]})
            by_length.append(entry)
        row = cand.as_dict() | {"ok": ok, "by_length": by_length}
        if ok:
            last = by_length[-1]
            row |= {k: last[k] for k in ("tcn_fwd_ms", "tcn_fwdbwd_ms", "ema_fwd_ms", "ema_fwdbwd_ms",
                                          "tcn_peak_fwdbwd_bytes", "ema_peak_fwdbwd_bytes")}
            row["speedup_fwd"] = min(e["speedup_fwd"] for e in by_length)
            row["speedup_fwdbwd"] = min(e["speedup_fwdbwd"] for e in by_length)
            row["survivor"] = row[key] >= spec.min_speedup
        else:
            row["survivor"] = False
        rows.append(row)
        if row["survivor"]:
            survivors.append(row)
    survivors.sort(key=lambda r: -r[key])
    return ema_rows, rows, survivors, failed


def _describe(job: Job) -> str:
    c = job.candidate
    what = "EMA" if c is None else f"TCN K={c.kernel_size} f={c.dilation_factor} D={c.depth} B={c.per_block}"
    return f"L={job.shape.length} {what}"


def run_profile(
    spec: ProfileSpec,
    gpu: str = "auto",
    storage: str | None = None,
    force: bool = False,
    ray_address: str | None = None,
    min_run_time: float = 0.2,
    progress: bool = True,
) -> ProfileResult:
    """Profile `spec` on the `gpu` target, measuring only what the latency table lacks.

    Raises:
        UserError: unknown GPU, the GPU is neither local nor reachable through `ray_address`,
            the database or the Ray cluster is unreachable. Raised before anything is measured.
    """
    start = time.perf_counter()
    # Every check that can refuse comes before the first write to the database.
    device = resolve_local(gpu)
    if device is None and not ray_address:
        raise UserError(f"no {GPU_MODELS[gpu]} on this machine (found: {found_devices()}); "
                        f"use --gpu cpu or --gpu auto to profile this machine, or --ray-address to run "
                        f"on a Ray cluster node with a {GPU_MODELS[gpu]}")
    url = resolve_url(storage)
    engine = create_engine(url)
    if device is not None:
        measurer = LocalMeasurer(device, spec.dtype, min_run_time)
    else:
        from tcnsearch.profile._remote import RemoteMeasurer

        measurer = RemoteMeasurer(ray_address, gpu, spec.dtype, min_run_time)
    table = LatencyTable(engine)
    try:
        fp = measurer.fingerprint()
        device_id = table.device_id(fp)
        jobs = jobs_for(spec)
        stored = {} if force else table.get(device_id, jobs)
        todo = [j for j in jobs if j not in stored]
        console = Console(stderr=True)
        with Progress(TextColumn("[bold]profile[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                      disable=not progress or not todo, transient=False) as bar:
            task = bar.add_task(fp.device_name, total=len(todo))
            for job in todo:
                bar.update(task, description=_describe(job))
                table.put(device_id, job, measurer.measure(job))
                bar.advance(task)
    finally:
        measurer.close()
    ema, rows, survivors, failed = assemble(spec, table.get(device_id, jobs))
    return ProfileResult(
        device=fp, target=gpu, storage=masked(url), spec=spec, measured=len(todo),
        cached=len(jobs) - len(todo), elapsed_s=time.perf_counter() - start, ema=ema,
        candidates=rows, survivors=survivors, failed=failed,
    )


__all__ = ["Candidate", "ProfileResult", "assemble", "jobs_for", "run_profile"]
