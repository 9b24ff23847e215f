"""The one database: which URL, what is shown of it (never a password), and what is refused before use."""

import os
import re
import sqlite3

import pytest
import sqlalchemy as sa

from tcnsearch.errors import UserError
from tcnsearch.storage import DEFAULT_URL, ENV_VAR, create_engine, masked, read_only_url, resolve_url, sqlite_path


def test_the_flag_then_the_environment_then_sqlite_here(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_url(None) == DEFAULT_URL == "sqlite:///tcnsearch.db"
    monkeypatch.setenv(ENV_VAR, "postgresql+psycopg://me@db/x")
    assert resolve_url(None) == "postgresql+psycopg://me@db/x"
    assert resolve_url("sqlite:///other.db") == "sqlite:///other.db"


@pytest.mark.parametrize("url,shown", [
    ("postgresql+psycopg://me:s3cret@db:5432/x", "postgresql+psycopg://me:***@db:5432/x"),
    ("postgresql+psycopg://me@db/x?password=s3cret&sslmode=require", "postgresql+psycopg://me@db/x?password=***&sslmode=require"),
    ("postgresql+psycopg://me@db/x?sslpassword=s3cret", "postgresql+psycopg://me@db/x?sslpassword=***"),
    ("not a url://me:s3cret@host/x?token=s3cret", "not a url://me:***@host/x?token=***"),
    ("sqlite:///tcnsearch.db", "sqlite:///tcnsearch.db"),
])
def test_a_password_is_never_shown(url, shown):
    assert masked(url) == shown and "s3cret" not in masked(url)


def test_read_only_sqlite_is_sqlites_own_mode(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert sqlite_path(url) == str(tmp_path / "db.sqlite") and sqlite_path("sqlite://") is None
    assert read_only_url(url).endswith("db.sqlite?mode=ro&uri=true")
    assert read_only_url("postgresql+psycopg://me@db/x") == "postgresql+psycopg://me@db/x"


def test_a_reader_creates_nothing_and_a_writer_gets_a_working_engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with pytest.raises(UserError, match="no database at"):
        create_engine(url, read_only=True)
    assert not (tmp_path / "new.db").exists()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    reader = create_engine(url, read_only=True)
    with reader.connect() as conn, pytest.raises(sa.exc.OperationalError, match="readonly"):
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    engine.dispose()
    reader.dispose()


def test_what_cannot_serve_as_a_database_is_refused_in_one_line(tmp_path, pg_url):
    (tmp_path / "junk.db").write_bytes(os.urandom(2048))
    (tmp_path / "folder").mkdir()
    with sqlite3.connect(tmp_path / "ro.db") as conn:
        conn.execute("CREATE TABLE x (y)")
    os.chmod(tmp_path / "ro.db", 0o444)
    cases = [(f"sqlite:///{tmp_path / 'junk.db'}", "is not an SQLite database or is damaged"),
             (f"sqlite:///{tmp_path / 'folder'}", "is a folder"),
             ("nonsense", "is not a database URL"),
             ("mysql+nodriver://u@h/db", "unsupported database driver"),
             ("postgresql+psycopg://u:pw@127.0.0.1:1/x", "cannot reach the database postgresql+psycopg://u:***@"),
             ("postgresql+psycopg://u@127.0.0.1:70000/x", "port 70000 is out of range")]
    if os.geteuid() != 0:  # root writes to read-only files
        cases.append((f"sqlite:///{tmp_path / 'ro.db'}", "is read-only here"))
    for url, message in cases:
        with pytest.raises(UserError, match=re.escape(message)) as err:
            create_engine(url)
        assert "\n" not in str(err.value) and ":pw@" not in str(err.value)
    create_engine(pg_url).dispose()  # the real server is reachable
