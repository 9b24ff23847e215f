"""The one database that holds the latency profiles and the Optuna studies.

`--storage URL` is an SQLAlchemy URL; default: $TCNSEARCH_STORAGE, else sqlite:///tcnsearch.db in
the working directory. PostgreSQL (`postgresql+psycopg://user@host:5432/db`) works the same.
Passwords never reach an output: use `masked(url)` wherever a URL is shown.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import zlib
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from tcnsearch.errors import UserError

DEFAULT_URL = "sqlite:///tcnsearch.db"
ENV_VAR = "TCNSEARCH_STORAGE"


def resolve_url(url: str | None = None) -> str:
    """The storage URL: the flag, else $TCNSEARCH_STORAGE, else SQLite in the working directory."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "sslpassword", "secret", "token", "api_key", "apikey")


def masked(url: str) -> str:
    """The URL with its password replaced by ***: the user-info part's and any `?password=` query's."""
    try:
        parsed = make_url(url)
        secret = {k: "***" for k in parsed.query if k.lower() in SECRET_QUERY_KEYS}
        if secret:
            parsed = parsed.update_query_dict(secret)
        return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except (ArgumentError, ValueError, TypeError):  # not a URL SQLAlchemy reads: mask what looks like one
        url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
        return re.sub(r"(?i)\b(" + "|".join(SECRET_QUERY_KEYS) + r")=[^&;\s]*", r"\1=***", url)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets readers and a writer work at once; the busy timeout makes parallel trials and
    # profile workers wait for the lock instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def sqlite_path(url: str) -> str | None:
    """The file of an SQLite URL (None for other databases and for an in-memory one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def read_only_url(url: str) -> str:
    """`url` opened read-only: for an SQLite file, SQLite's own read-only mode (no journal, no switch to
    WAL, no new tables); other databases as they are (a command that only reads issues no writes)."""
    path = sqlite_path(url)
    if path is None:
        return url
    return f"sqlite:///file:{os.path.abspath(path)}?mode=ro&uri=true"


def create_engine(url: str | None = None, read_only: bool = False) -> Engine:
    """An engine on the storage, checked to be reachable (and, unless `read_only`, writable).

    With `read_only`, a command that only reads never creates or changes a database: an SQLite file
    must exist and is opened read-only, so pointing at another application's file adds nothing to it.

    Raises:
        UserError: the URL is malformed or names an unknown driver; the database is unreachable,
            missing (read_only), read-only (not read_only) or not a database.
    """
    url = resolve_url(url)
    try:
        parsed = make_url(url)
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise ValueError(f"port {parsed.port} is out of range")
    except (ArgumentError, ValueError) as err:
        why = f" ({err})" if isinstance(err, ValueError) and "port" in str(err) else ""
        raise UserError(f"--storage {masked(url)!r} is not a database URL{why}; use e.g. sqlite:///tcnsearch.db "
                        "or postgresql+psycopg://user@host:5432/db") from None
    kwargs: dict = {"pool_pre_ping": True}
    path = sqlite_path(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"timeout": 60}}
        if path is not None:
            _check_sqlite_file(path, url, read_only)
            if read_only:
                parsed = make_url(read_only_url(url))
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as err:
        raise UserError(f"--storage {masked(url)}: unsupported database driver ({err}); "
                        "use sqlite:/// or postgresql+psycopg://") from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_read_pragmas if read_only else _sqlite_pragmas)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1" if path is None else "SELECT count(*) FROM sqlite_master"))
            if not read_only and parsed.get_backend_name() == "postgresql" and conn.execute(
                    sa.text("SHOW transaction_read_only")).scalar() == "on":
                raise UserError(f"the database {masked(url)} is read-only (a standby?); point --storage at one "
                                "this user can write to")
    except (OperationalError, SQLAlchemyError, OSError) as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if path is not None and "disk I/O error" in reason and _nearly_full(path):
            raise OSError(errno.ENOSPC, "No space left on device", path) from None  # a full disk, not bad input
        if path is not None and ("not a database" in reason or "malformed" in reason):
            raise UserError(f"{path} is not an SQLite database or is damaged ({reason}); pass --storage a "
                            "tcnsearch database, or a new file name to start one") from None
        raise UserError(f"cannot reach the database {masked(url)}: {reason}; "
                        f"check --storage or ${ENV_VAR}") from None
    return engine


def _check_sqlite_file(path: str, url: str, read_only: bool) -> None:
    """Refuse, before anything is measured or trained, a file that cannot serve the command."""
    file = os.path.abspath(path)
    if os.path.isdir(file):
        raise UserError(f"--storage {masked(url)}: {path} is a folder; name a database file")
    if read_only:
        if not os.path.isfile(file):
            raise UserError(f"no database at {path}: nothing is stored there yet; run `tcnsearch study` or "
                            "`tcnsearch profile` first, or pass --storage")
        return
    folder = os.path.dirname(file)
    if (os.path.exists(file) and not os.access(file, os.W_OK)) or not os.access(folder, os.W_OK):
        raise UserError(f"the database {path} is read-only here (the file or its folder); pass --storage a "
                        "writable location")


def _nearly_full(path: str) -> bool:
    """Whether the filesystem of an SQLite file has too little room left for its journal (1 MB)."""
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < 1 << 20
    except OSError:
        return False


def _sqlite_read_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


# The key of the lock under which a command makes its tables on a database (tcnsearch's, Optuna's).
SETUP_LOCK = "tcnsearch-setup"


@contextlib.contextmanager
def exclusive(engine: Engine, key: str, lock_file: str = "lock",
              on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold `key` against every other process on this database: drivers that count a study's trials
    and then ask for one, profiles that measure the same grid.

    PostgreSQL: a transaction-scoped advisory lock per key (it goes with the connection, also when the
    connection is lost); SQLite (one machine): the lock file `<database>.<lock_file>` beside it.
    `on_wait` is called once if another process holds the lock, before waiting for it.
    """
    if engine.dialect.name == "postgresql":
        conn = engine.connect()
        try:
            k = {"k": zlib.crc32(key.encode())}
            if not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), k).scalar():
                if on_wait is not None:
                    on_wait()
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), k)
            yield
        finally:
            # A release that fails has released the lock (it ends with the transaction) and must not
            # fail the work it guarded.
            with contextlib.suppress(SQLAlchemyError):
                conn.rollback()
            with contextlib.suppress(SQLAlchemyError):
                conn.close()
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        # one lock file per database and purpose, whatever the key: SQLite serialises its writers anyway
        with open(f"{engine.url.database}.{lock_file}", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield
