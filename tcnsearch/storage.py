"""The one database that holds the latency profiles and the Optuna studies.

`--storage URL` is an SQLAlchemy URL; default: $TCNSEARCH_STORAGE, else sqlite:///tcnsearch.db in
the working directory. PostgreSQL (`postgresql+psycopg://user@host:5432/db`) works the same.
Passwords never reach an output: use `masked(url)` wherever a URL is shown.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from tcnsearch.errors import UserError

DEFAULT_URL = "sqlite:///tcnsearch.db"
ENV_VAR = "TCNSEARCH_STORAGE"


def resolve_url(url: str | None = None) -> str:
    """The storage URL: the flag, else $TCNSEARCH_STORAGE, else SQLite in the working directory."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def masked(url: str) -> str:
    """The URL with its password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets readers and a writer work at once; the busy timeout makes parallel trials and
    # profile workers wait for the lock instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def create_engine(url: str | None = None) -> Engine:
    """An engine on the storage, checked to be reachable.

    Raises:
        UserError: the URL is malformed, names an unknown driver, or the database is unreachable.
    """
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"--storage {url!r} is not a database URL; use e.g. sqlite:///tcnsearch.db "
                        "or postgresql+psycopg://user@host:5432/db") from None
    kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"timeout": 60}}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as err:
        raise UserError(f"--storage {masked(url)}: unsupported database driver ({err}); "
                        "use sqlite:/// or postgresql+psycopg://") from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (OperationalError, SQLAlchemyError, OSError) as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot reach the database {masked(url)}: {reason}; "
                        f"check --storage or ${ENV_VAR}") from None
    return engine
