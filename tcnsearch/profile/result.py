"""What a profile found: each candidate's decision and speedups over the lengths, and the survivor record a
study keeps of each structure it may train.

    decision((median, low, high), threshold)   # survivor / rejected / undecided, from the interval
    ema, rows = assemble(spec, stored, predicted)  # the rows of `tcnsearch profile --json`
    [Survivor.from_row(r, spec.metric) for r in result.kept()]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tcnsearch.profile.candidates import ProfileSpec
from tcnsearch.profile.devices import Fingerprint
from tcnsearch.profile.levels import METRICS, Shape
from tcnsearch.profile.table import Stored
from tcnsearch.structure import Metric, Structure

DECISIONS = ("survivor", "undecided", "rejected", "failed", "oom")


@dataclass
class ProfileResult:
    """What a profile found. `candidates` holds every structure; `survivors`, `undecided` and
    `rejected` partition those that ran; `failed` and `oom` list what could not run (per length);
    each row's `source` is "measured" or "predicted"."""

    device: Fingerprint
    target: str
    storage: str
    spec: ProfileSpec
    measured: int
    cached: int
    predicted: int
    pairs: int
    elapsed_s: float
    ema: list[dict]
    candidates: list[dict]
    survivors: list[dict] = field(default_factory=list)
    undecided: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    oom: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "device": self.device.as_dict(), "target": self.target, "storage": self.storage,
            "spec": self.spec.model_dump(), "level": self.spec.level, "measured": self.measured,
            "cached": self.cached, "predicted": self.predicted, "pairs": self.pairs,
            "elapsed_s": round(self.elapsed_s, 3), "ema": self.ema, "n_candidates": len(self.candidates),
            "n_survivors": len(self.survivors), "n_undecided": len(self.undecided),
            "n_rejected": self.count("rejected"), "n_oom": self.count("oom"),
            "n_extrapolated": self.count_extrapolated(),
            "survivors": self.survivors, "undecided": self.undecided, "failed": self.failed, "oom": self.oom,
            "candidates": self.candidates,
        }

    def count_extrapolated(self) -> int:
        return sum(bool(r.get("extrapolated")) for r in self.candidates)

    def count(self, verdict: str) -> int:
        return sum(r["decision"] == verdict for r in self.candidates)

    def kept(self) -> list[dict]:
        """What a study draws from: the survivors, and the undecided ones if the spec says keep."""
        return self.survivors + (self.undecided if self.spec.undecided == "keep" else [])

    def kept_survivors(self) -> list[Survivor]:
        return [Survivor.from_row(r, self.spec.metric) for r in self.kept()]

    def notes(self) -> list[str]:
        """What a user of these latencies must know: a fallback backend, predictions, close calls, memory."""
        notes = []
        if self.device.is_fallback:
            notes.append("the profile's TCN timings come from the PyTorch fallback (the native kernel could not be "
                         "built: no C compiler?); they are not the native kernel's")
        if self.predicted:
            notes.append(f"{self.predicted} of {len(self.candidates)} structures' latencies are predicted by the "
                         "latency model, not measured (source: predicted)")
        if beyond := self.count_extrapolated():
            notes.append(f"{beyond} predicted structures lie beyond the measured range of some axis (extrapolated: "
                         "wider intervals, less sure); measure them to be sure")
        if self.undecided:
            notes.append(f"{len(self.undecided)} structures are undecided (interval straddles min_speedup); "
                         f"{'kept' if self.spec.undecided == 'keep' else 'dropped'}")
        if self.oom:
            notes.append(f"{len({r['tcn'] for r in self.oom})} structures ran out of memory in the profile and are "
                         "not trained; the next run measures them again")
        return notes


@dataclass(frozen=True)
class Survivor:
    """A structure a study may train, and what the profile measured of it: the record a study freezes
    when it is created (its parameter space), and whose fields each of its trials carries.

    `latency_ms` is the TCN side's time at the study's level and mode (the EMA side's pooled time at
    the longest length over the paired speedup); speedups come with their bootstrap 95% intervals.
    """

    structure: Structure
    latency_ms: float
    speedup_fwd: float
    speedup_fwd_ci: tuple[float, float]
    speedup_fwdbwd: float
    speedup_fwdbwd_ci: tuple[float, float]
    tcn_fwd_ms: float | None = None
    tcn_fwdbwd_ms: float | None = None
    ema_fwd_ms: float | None = None
    ema_fwdbwd_ms: float | None = None
    source: str = "measured"
    decision: str = "survivor"

    @property
    def label(self) -> str:
        return self.structure.label

    @property
    def receptive_field(self) -> int:
        return self.structure.receptive_field

    def speedup(self, metric: Metric) -> float:
        return getattr(self, f"speedup_{metric}")

    @classmethod
    def from_row(cls, row: dict, metric: Metric) -> Survivor:
        """A survivor from a profile row (assemble's), its latency the `metric` one."""
        keep = {k: row[k] for k in ("speedup_fwd", "speedup_fwdbwd", "tcn_fwd_ms", "tcn_fwdbwd_ms", "ema_fwd_ms",
                                    "ema_fwdbwd_ms", "source", "decision")}
        return cls(Structure.of(row), row[f"tcn_{metric}_ms"], speedup_fwd_ci=tuple(row["speedup_fwd_ci"]),
                   speedup_fwdbwd_ci=tuple(row["speedup_fwdbwd_ci"]), **keep)

    def to_record(self) -> dict:
        """As stored (JSON): the label, then every field."""
        doc = asdict(self)
        doc.pop("structure")
        return {"tcn": self.label} | doc | {"speedup_fwd_ci": list(self.speedup_fwd_ci),
                                            "speedup_fwdbwd_ci": list(self.speedup_fwdbwd_ci)}

    @classmethod
    def from_record(cls, doc: dict) -> Survivor:
        fields = {k: v for k, v in doc.items() if k != "tcn"}
        return cls(Structure.parse(doc["tcn"]), **fields | {"speedup_fwd_ci": tuple(doc["speedup_fwd_ci"]),
                                                            "speedup_fwdbwd_ci": tuple(doc["speedup_fwdbwd_ci"])})

    def trial_attrs(self) -> dict:
        """What each trial that trains this structure carries as user attributes."""
        return self.to_record() | {"receptive_field": self.receptive_field}


def shapes_of(spec: ProfileSpec) -> list[Shape]:
    return [Shape(spec.batch, spec.channels, length, spec.ema_dim, spec.bidirectional) for length in spec.lengths]


def decision(interval: tuple[float, float, float] | None, threshold: float) -> str:
    """survivor / rejected / undecided for one (median, low, high) speedup."""
    if interval is None:
        return "undecided"
    _, lo, hi = interval
    return "survivor" if lo >= threshold else "rejected" if hi < threshold else "undecided"


def combine(decisions: list[str]) -> str:
    """One decision over the lengths: failed or out of memory at any, rejected at any, else survivor at all."""
    if "failed" in decisions:
        return "failed"
    if "oom" in decisions:
        return "oom"
    if "rejected" in decisions:
        return "rejected"
    return "survivor" if all(d == "survivor" for d in decisions) else "undecided"


def assemble(spec: ProfileSpec, stored: dict[tuple[Shape, Structure], Stored],
             predicted: dict | None = None, base: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(baseline rows per length, candidate rows) from stored measurements and model predictions.

    `base` (shape -> metric -> ms) is the baseline's time where none of this grid is stored at a
    shape (the latency model's, from other structures' pairs there). A prediction beyond the measured
    range of some axis lists those axes in its `extrapolated_axes`; a row is `extrapolated` if any of
    its lengths is.

    A candidate's speedups are the least over the lengths (with that length's interval), which is
    what the survivor rule checks. Its latencies are the baseline's pooled time at the longest
    length over its paired speedup there: drift-free, and ranked exactly as the speedups are (the
    raw block medians are kept as `tcn_*_raw_ms`).
    """
    predicted = predicted or {}
    shapes = shapes_of(spec)
    ema_rows = []
    for s in shapes:
        entries = [v for (sh, _), v in stored.items() if sh == s and v.status == "ok"]
        row = {"length": s.length, "status": "ok" if entries else "missing", "level": spec.level}
        for m in METRICS:
            times = sorted(v.base_ms[m] for v in entries if v.base_ms.get(m))
            row[f"{m}_ms"] = times[len(times) // 2] if times else (base or {}).get(s, {}).get(m)
        if not entries and row["fwd_ms"] is not None:  # measured with structures outside this grid
            row |= {"status": "ok", "source": "other structures"}
        peaks = [v.base_peak_bytes for v in entries if v.base_peak_bytes is not None]
        row["peak_fwdbwd_bytes"] = max(peaks) if peaks else None
        ema_rows.append(row)
    base_at = {s: r for s, r in zip(shapes, ema_rows, strict=True)}
    rows = []
    for cand in spec.candidates():
        by_length, decisions, source, beyond = [], [], "measured", []
        for s in shapes:
            got = stored.get((s, cand))
            entry = {"length": s.length}
            if got is not None and got.status in ("failed", "oom"):
                entry |= {"status": got.status, "error": got.error}
                decisions.append(got.status)
            elif got is not None and got.speedup.get("fwd"):
                entry |= {"status": "ok", "source": "measured", "n_pairs": got.n_pairs, "wall_s": got.wall_s,
                          "tcn_peak_fwdbwd_bytes": got.tcn_peak_bytes}
                for m in METRICS:
                    entry |= _speedup_fields(m, got.speedup[m], base_at[s][f"{m}_ms"])
                    entry[f"tcn_{m}_raw_ms"] = got.tcn_ms[m]
                decisions.append(decision(got.speedup[spec.metric], spec.min_speedup))
            elif (s, cand) in predicted:
                source = "predicted"
                axes = predicted[(s, cand)].get("extrapolated", [])
                beyond += [a for a in axes if a not in beyond]
                entry |= {"status": "ok", "source": "predicted", "n_pairs": 0, "extrapolated_axes": axes}
                for m in METRICS:
                    entry |= _speedup_fields(m, predicted[(s, cand)][m], base_at[s][f"{m}_ms"])
                decisions.append(decision(predicted[(s, cand)][spec.metric], spec.min_speedup))
            else:
                entry["status"] = "missing"
                decisions.append("undecided")
                source = "missing"
            by_length.append(entry)
        row = cand.as_dict() | {"receptive_field": cand.receptive_field, "tcn": cand.label, "source": source,
                                "extrapolated": bool(beyond), "extrapolated_axes": beyond, "by_length": by_length}
        verdict = combine(decisions)
        ok = [e for e in by_length if e["status"] == "ok"]
        row["ok"] = verdict not in ("failed", "oom") and len(ok) == len(by_length)
        row["decision"] = verdict
        row["survivor"] = verdict == "survivor"
        if row["ok"]:
            last = by_length[-1]
            for m in METRICS:
                worst = min(ok, key=lambda e, m=m: e[f"speedup_{m}"])
                row[f"speedup_{m}"] = worst[f"speedup_{m}"]
                row[f"speedup_{m}_ci"] = worst[f"speedup_{m}_ci"]
                row[f"tcn_{m}_ms"] = last[f"tcn_{m}_ms"]
                row[f"ema_{m}_ms"] = base_at[shapes[-1]][f"{m}_ms"]
            row["n_pairs"] = sum(e["n_pairs"] for e in by_length)
            row["wall_s"] = sum(e.get("wall_s", 0.0) for e in by_length)
            row["tcn_peak_fwdbwd_bytes"] = last.get("tcn_peak_fwdbwd_bytes")
            row["ema_peak_fwdbwd_bytes"] = base_at[shapes[-1]]["peak_fwdbwd_bytes"]
        rows.append(row)
    return ema_rows, rows


def _speedup_fields(metric: str, interval: tuple[float, float, float], base_ms: float | None) -> dict:
    med, lo, hi = interval
    return {f"speedup_{metric}": med, f"speedup_{metric}_ci": [lo, hi],
            f"tcn_{metric}_ms": base_ms / med if base_ms else None, f"ema_{metric}_ms": base_ms}
