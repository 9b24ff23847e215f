"""The latency table: every measurement, in the same database as the Optuna studies.

Two tables, prefixed so they never collide with Optuna's: devices (one row per fingerprint) and
measurements (one row per device, operator, structure and shape; the EMA's structure columns
and the TCN's ema_dim are 0, so the unique key never holds a NULL). Each measurement is
committed as soon as it is taken: an interrupted profile keeps everything it measured.
"""

from __future__ import annotations

import datetime as dt
import socket

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tcnsearch.profile.devices import Fingerprint
from tcnsearch.profile.measure import Job

KEY = ("device_id", "op", "kernel_size", "dilation_factor", "depth", "per_block", "batch", "channels",
       "length", "ema_dim", "bidirectional")


class Base(DeclarativeBase):
    pass


class Device(Base):
    __tablename__ = "tcnsearch_devices"
    __table_args__ = (sa.UniqueConstraint("name", "torch_version", "cuda_version", "dtype"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    torch_version: Mapped[str] = mapped_column(sa.String(40))
    cuda_version: Mapped[str] = mapped_column(sa.String(40))
    dtype: Mapped[str] = mapped_column(sa.String(20))

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.name, self.torch_version, self.cuda_version, self.dtype)


class Measurement(Base):
    __tablename__ = "tcnsearch_measurements"
    __table_args__ = (sa.UniqueConstraint(*KEY, name="tcnsearch_measurement_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(sa.ForeignKey("tcnsearch_devices.id"), index=True)
    op: Mapped[str] = mapped_column(sa.String(8))
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
    fwd_ms: Mapped[float | None]
    fwd_spread: Mapped[float | None]
    fwdbwd_ms: Mapped[float | None]
    fwdbwd_spread: Mapped[float | None]
    peak_fwd_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    peak_fwdbwd_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    host: Mapped[str | None] = mapped_column(sa.String(200))
    measured_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))


def key_of(device_id: int, job: Job) -> dict:
    c, s = job.candidate, job.shape
    return {
        "device_id": device_id, "op": job.op,
        "kernel_size": c.kernel_size if c else 0, "dilation_factor": c.dilation_factor if c else 0,
        "depth": c.depth if c else 0, "per_block": c.per_block if c else 0,
        "batch": s.batch, "channels": s.channels, "length": s.length,
        "ema_dim": s.ema_dim if c is None else 0, "bidirectional": s.bidirectional,
    }


class LatencyTable:
    """Reads and writes measurements on one engine."""

    def __init__(self, engine: Engine):
        self.engine = engine
        Base.metadata.create_all(engine)

    def device_id(self, fp: Fingerprint) -> int:
        where = sa.and_(Device.name == fp.device_name, Device.torch_version == fp.torch_version,
                        Device.cuda_version == fp.cuda_version, Device.dtype == fp.dtype)
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(Device.id).where(where)).scalar()
            if found is not None:
                return found
            values = {"name": fp.device_name, "torch_version": fp.torch_version,
                      "cuda_version": fp.cuda_version, "dtype": fp.dtype}
            conn.execute(self._insert(Device).values(**values).on_conflict_do_nothing())
            return conn.execute(sa.select(Device.id).where(where)).scalar_one()

    def get(self, device_id: int, jobs: list[Job]) -> dict[Job, Measurement]:
        """The stored measurements among `jobs`."""
        wanted = {tuple(key_of(device_id, j).values()): j for j in jobs}
        lengths = sorted({j.shape.length for j in jobs})
        found: dict[Job, Measurement] = {}
        with Session(self.engine) as session:
            rows = session.scalars(sa.select(Measurement).where(
                Measurement.device_id == device_id, Measurement.length.in_(lengths)))
            for row in rows:
                job = wanted.get(tuple(getattr(row, k) for k in KEY))
                if job is not None:
                    found[job] = row
                    session.expunge(row)
        return found

    def put(self, device_id: int, job: Job, record: dict) -> None:
        """Insert or replace one measurement, committed at once."""
        values = key_of(device_id, job) | {
            "status": record["status"], "error": record.get("error"),
            **{k: record.get(k) for k in ("fwd_ms", "fwd_spread", "fwdbwd_ms", "fwdbwd_spread",
                                          "peak_fwd_bytes", "peak_fwdbwd_bytes")},
            "host": record.get("host") or socket.gethostname(),
            "measured_at": dt.datetime.now(dt.timezone.utc),
        }
        stmt = self._insert(Measurement).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=list(KEY),
                                          set_={k: stmt.excluded[k] for k in values if k not in KEY})
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def summary(self) -> list[dict]:
        """Per device and shape: how many structures are stored, failed, and when last measured."""
        m, d = Measurement, Device
        query = (
            sa.select(d.name, d.torch_version, d.cuda_version, d.dtype, m.batch, m.channels, m.length,
                      m.bidirectional,
                      sa.func.count().filter(m.op == "tcn").label("tcn"),
                      sa.func.count().filter(m.op == "ema").label("ema"),
                      sa.func.count().filter(m.status == "failed").label("failed"),
                      sa.func.max(m.measured_at).label("last"))
            .join(d, d.id == m.device_id)
            .group_by(d.name, d.torch_version, d.cuda_version, d.dtype, m.batch, m.channels, m.length,
                      m.bidirectional)
            .order_by(d.name, m.length)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def _insert(self, model):
        name = self.engine.dialect.name
        if name == "postgresql":
            return pg_insert(model)
        if name == "sqlite":
            return sqlite_insert(model)
        raise NotImplementedError(f"the latency table supports SQLite and PostgreSQL, not {name}")
