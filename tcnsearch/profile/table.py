"""The latency table: every paired measurement, in the same database as the Optuna studies.

Three tables, prefixed so they never collide with Optuna's:

    tcnsearch_fingerprints   one row per device and software: device, TCN backend (native kernel
                             or fallback), threads, torch/CUDA/cuDNN versions, dtype
    tcnsearch_latency        one row per fingerprint, level, model context, structure and shape:
                             the speedups (median ratio and bootstrap 95% interval), the number
                             of pairs, the wall time spent, block medians, peak memory
    tcnsearch_latency_pairs  every pair behind those rows, so a rerun continues a measurement and
                             its interval is recomputed from the raw ratios

Rows are committed as pairs are flushed: an interrupted profile keeps every finished pair. A row's
status is "ok", "failed" (the structure cannot run at that shape: final) or "oom" (it ran out of
memory: measured again by the next run, which may have more memory). Only measurements are ever
stored here; the latency model's predictions are computed on demand.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tcnsearch.profile.devices import Fingerprint
from tcnsearch.profile.levels import METRICS, Shape
from tcnsearch.profile.measure import Pair, median_interval
from tcnsearch.storage import SETUP_LOCK, exclusive
from tcnsearch.structure import Structure

KEY = ("fingerprint_id", "level", "context", "kernel_size", "dilation_factor", "depth", "per_block", "batch",
       "channels", "length", "ema_dim", "bidirectional")
FP_FIELDS = ("device_name", "backend", "threads", "torch_version", "cuda_version", "cudnn_version", "dtype")


class Base(DeclarativeBase):
    pass


class FingerprintRow(Base):
    __tablename__ = "tcnsearch_fingerprints"
    __table_args__ = (sa.UniqueConstraint(*FP_FIELDS, name="tcnsearch_fingerprint_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_name: Mapped[str] = mapped_column(sa.String(200))
    backend: Mapped[str] = mapped_column(sa.String(20))
    threads: Mapped[int]
    torch_version: Mapped[str] = mapped_column(sa.String(40))
    cuda_version: Mapped[str] = mapped_column(sa.String(40))
    cudnn_version: Mapped[str] = mapped_column(sa.String(40))
    dtype: Mapped[str] = mapped_column(sa.String(20))


class LatencyRow(Base):
    __tablename__ = "tcnsearch_latency"
    __table_args__ = (sa.UniqueConstraint(*KEY, name="tcnsearch_latency_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint_id: Mapped[int] = mapped_column(sa.ForeignKey("tcnsearch_fingerprints.id"), index=True)
    level: Mapped[str] = mapped_column(sa.String(8))
    context: Mapped[str] = mapped_column(sa.String(32))
    kernel_size: Mapped[int]
    dilation_factor: Mapped[int]
    depth: Mapped[int]
    per_block: Mapped[int]
    batch: Mapped[int]
    channels: Mapped[int]
    length: Mapped[int]
    ema_dim: Mapped[int]
    bidirectional: Mapped[bool]
    status: Mapped[str] = mapped_column(sa.String(10))
    error: Mapped[str | None] = mapped_column(sa.Text)
    n_pairs: Mapped[int] = mapped_column(default=0)
    wall_s: Mapped[float] = mapped_column(default=0.0)
    speedup_fwd: Mapped[float | None]
    speedup_fwd_lo: Mapped[float | None]
    speedup_fwd_hi: Mapped[float | None]
    speedup_fwdbwd: Mapped[float | None]
    speedup_fwdbwd_lo: Mapped[float | None]
    speedup_fwdbwd_hi: Mapped[float | None]
    tcn_fwd_ms: Mapped[float | None]
    tcn_fwdbwd_ms: Mapped[float | None]
    base_fwd_ms: Mapped[float | None]
    base_fwdbwd_ms: Mapped[float | None]
    tcn_peak_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    base_peak_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    host: Mapped[str | None] = mapped_column(sa.String(200))
    measured_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))


class PairRow(Base):
    __tablename__ = "tcnsearch_latency_pairs"

    id: Mapped[int] = mapped_column(primary_key=True)
    latency_id: Mapped[int] = mapped_column(sa.ForeignKey("tcnsearch_latency.id"), index=True)
    seq: Mapped[int]
    tcn_fwd_ms: Mapped[float]
    base_fwd_ms: Mapped[float]
    tcn_fwdbwd_ms: Mapped[float]
    base_fwdbwd_ms: Mapped[float]
    wall_s: Mapped[float]


@dataclass
class Stored:
    """One stored measurement as the profiler reads it."""

    id: int
    status: str
    error: str | None
    n_pairs: int
    wall_s: float
    speedup: dict[str, tuple[float, float, float] | None]  # metric -> (median, low, high)
    tcn_ms: dict[str, float | None]
    base_ms: dict[str, float | None]
    tcn_peak_bytes: int | None
    base_peak_bytes: int | None

    @classmethod
    def from_row(cls, r: LatencyRow) -> Stored:
        speedup = {m: (getattr(r, f"speedup_{m}"), getattr(r, f"speedup_{m}_lo"), getattr(r, f"speedup_{m}_hi"))
                   if getattr(r, f"speedup_{m}") is not None else None for m in METRICS}
        return cls(r.id, r.status, r.error, r.n_pairs, r.wall_s, speedup,
                   {m: getattr(r, f"tcn_{m}_ms") for m in METRICS}, {m: getattr(r, f"base_{m}_ms") for m in METRICS},
                   r.tcn_peak_bytes, r.base_peak_bytes)


def summarize_pairs(pairs: list[Pair]) -> dict:
    """The stored summary of a measurement's pairs: each speedup's median and interval, block medians."""
    import statistics

    out = {"n_pairs": len(pairs), "wall_s": sum(p.wall_s for p in pairs)}
    for m in METRICS:
        ratios = [p.ratios[m] for p in pairs]
        med, lo, hi = median_interval(ratios, seed=len(ratios))
        out |= {f"speedup_{m}": med, f"speedup_{m}_lo": lo, f"speedup_{m}_hi": hi,
                f"tcn_{m}_ms": statistics.median(getattr(p, f"tcn_{m}_ms") for p in pairs),
                f"base_{m}_ms": statistics.median(getattr(p, f"base_{m}_ms") for p in pairs)}
    return out


def key_of(fp_id: int, level: str, context: str, shape: Shape, cand: Structure) -> dict:
    return {"fingerprint_id": fp_id, "level": level, "context": context, "kernel_size": cand.kernel_size,
            "dilation_factor": cand.dilation_factor, "depth": cand.depth, "per_block": cand.per_block,
            "batch": shape.batch, "channels": shape.channels, "length": shape.length, "ema_dim": shape.ema_dim,
            "bidirectional": shape.bidirectional}


class LatencyTable:
    """Reads and writes paired measurements on one engine.

    Args:
        engine: the database.
        create: create the tables if they are missing (commands that only read pass False).
    """

    def __init__(self, engine: Engine, create: bool = True):
        self.engine = engine
        if create:
            # Commands starting at once on a new database would all find the tables missing and all
            # create them (PostgreSQL refuses the second): the lock studies take to make theirs.
            with exclusive(engine, SETUP_LOCK):
                Base.metadata.create_all(engine)

    def has_tables(self) -> bool:
        return sa.inspect(self.engine).has_table(LatencyRow.__tablename__)

    def fingerprint_id(self, fp: Fingerprint, create: bool = True) -> int | None:
        values = {k: getattr(fp, k) for k in FP_FIELDS}
        where = sa.and_(*(getattr(FingerprintRow, k) == v for k, v in values.items()))
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(FingerprintRow.id).where(where)).scalar()
            if found is not None or not create:
                return found
            conn.execute(self._insert(FingerprintRow).values(**values).on_conflict_do_nothing())
            return conn.execute(sa.select(FingerprintRow.id).where(where)).scalar_one()

    def get(self, fp_id: int, level: str, context: str, shapes: list[Shape],
            candidates: list[Structure]) -> dict[tuple[Shape, Structure], Stored]:
        """The stored measurements of `candidates` at `shapes`."""
        wanted = {tuple(key_of(fp_id, level, context, s, c).values()): (s, c) for s in shapes for c in candidates}
        found = {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(LatencyRow).where(
                LatencyRow.fingerprint_id == fp_id, LatencyRow.level == level, LatencyRow.context == context,
                LatencyRow.length.in_(sorted({s.length for s in shapes}))))
            for row in rows:
                hit = wanted.get(tuple(getattr(row, k) for k in KEY))
                if hit is not None:
                    found[hit] = Stored.from_row(row)
        return found

    def all_rows(self, fp_id: int, level: str, context: str) -> list[dict]:
        """Every successful measurement of a fingerprint, level and context: what a latency model learns from."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(LatencyRow).where(
                LatencyRow.fingerprint_id == fp_id, LatencyRow.level == level, LatencyRow.context == context,
                LatencyRow.status == "ok"))
            return [{c.name: getattr(r, c.name) for c in LatencyRow.__table__.columns} for r in rows]

    def pairs(self, latency_id: int) -> list[Pair]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(PairRow).where(PairRow.latency_id == latency_id).order_by(PairRow.seq))
            return [Pair(r.tcn_fwd_ms, r.base_fwd_ms, r.tcn_fwdbwd_ms, r.base_fwdbwd_ms, r.wall_s) for r in rows]

    def add_pairs(self, fp_id: int, level: str, context: str, shape: Shape, cand: Structure, new: list[Pair],
                  before: list[Pair], tcn_peak: int | None = None, base_peak: int | None = None,
                  host: str | None = None) -> Stored:
        """Append `new` pairs to a measurement that held `before`, and update its summary; one transaction."""
        everything = before + new
        values = key_of(fp_id, level, context, shape, cand) | summarize_pairs(everything) | {
            "status": "ok", "error": None, "host": host or socket.gethostname(),
            "measured_at": dt.datetime.now(dt.timezone.utc)}
        if tcn_peak is not None:
            values["tcn_peak_bytes"] = tcn_peak
        if base_peak is not None:
            values["base_peak_bytes"] = base_peak
        with self.engine.begin() as conn:
            latency_id = self._upsert(conn, values)
            conn.execute(sa.insert(PairRow), [
                {"latency_id": latency_id, "seq": len(before) + i, "tcn_fwd_ms": p.tcn_fwd_ms,
                 "base_fwd_ms": p.base_fwd_ms, "tcn_fwdbwd_ms": p.tcn_fwdbwd_ms, "base_fwdbwd_ms": p.base_fwdbwd_ms,
                 "wall_s": p.wall_s} for i, p in enumerate(new)])
            row = conn.execute(sa.select(LatencyRow).where(LatencyRow.id == latency_id)).one()
        return Stored.from_row(row)

    def fail(self, fp_id: int, level: str, context: str, shape: Shape, cand: Structure, error: str,
             status: str = "failed") -> None:
        """Store a candidate that cannot run at this shape, "failed" or "oom" (its pairs, if any, are dropped)."""
        values = key_of(fp_id, level, context, shape, cand) | {
            "status": status, "error": error, "n_pairs": 0, "wall_s": 0.0, "host": socket.gethostname(),
            "measured_at": dt.datetime.now(dt.timezone.utc),
            **{f"speedup_{m}{s}": None for m in METRICS for s in ("", "_lo", "_hi")}}
        with self.engine.begin() as conn:
            latency_id = self._upsert(conn, values)
            conn.execute(sa.delete(PairRow).where(PairRow.latency_id == latency_id))

    def clear(self, fp_id: int, level: str, context: str, shapes: list[Shape], candidates: list[Structure]) -> None:
        """Forget these measurements and their pairs (`--force`)."""
        ids = [s.id for s in self.get(fp_id, level, context, shapes, candidates).values()]
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                conn.execute(sa.delete(PairRow).where(PairRow.latency_id.in_(chunk)))
                conn.execute(sa.delete(LatencyRow).where(LatencyRow.id.in_(chunk)))

    def summary(self) -> list[dict]:
        """Per fingerprint, level and shape: how many structures are stored, failed, pairs, when last measured."""
        m, d = LatencyRow, FingerprintRow
        groups = (d.device_name, d.backend, d.threads, d.torch_version, d.cuda_version, d.dtype, m.level, m.batch,
                  m.channels, m.length, m.ema_dim, m.bidirectional)
        query = (
            sa.select(*groups, sa.func.count().label("tcn"),
                      sa.func.count().filter(m.status == "failed").label("failed"),
                      sa.func.sum(m.n_pairs).label("pairs"), sa.func.max(m.measured_at).label("last"))
            .join(d, d.id == m.fingerprint_id).group_by(*groups).order_by(d.device_name, m.level, m.length)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def _upsert(self, conn, values: dict) -> int:
        stmt = self._insert(LatencyRow).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=list(KEY),
                                          set_={k: stmt.excluded[k] for k in values if k not in KEY})
        conn.execute(stmt)
        where = sa.and_(*(getattr(LatencyRow, k) == values[k] for k in KEY))
        return conn.execute(sa.select(LatencyRow.id).where(where)).scalar_one()

    def _insert(self, model):
        name = self.engine.dialect.name
        if name == "postgresql":
            return pg_insert(model)
        if name == "sqlite":
            return sqlite_insert(model)
        raise NotImplementedError(f"the latency table supports SQLite and PostgreSQL, not {name}")
