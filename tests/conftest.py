"""Shared fixtures: real storages (a SQLite file, a fresh PostgreSQL database) and a real Ray head."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

# Ray 2.60 writes ~/.ray/auth_token on a local ray.init, which a later `ray start` head then
# rejects from drivers: the tests' clusters run without token authentication, as one machine's.
os.environ["RAY_AUTH_MODE"] = "disabled"
PG_ADMIN = os.environ.get("TCNSEARCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'tcnsearch.db'}"


@pytest.fixture(scope="session")
def pg_url():
    """A database of its own on the PostgreSQL server, dropped afterwards; skipped without a server."""
    name = f"tcnsearch_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN.rsplit('@', 1)[-1]} ({str(err).splitlines()[0][:80]}); "
                    "`make test` starts a local one if it is installed, or set TCNSEARCH_TEST_PG")
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A real local Ray head whose node advertises accelerator_type:V100 (and no GPU).

    Started in a process group of its own and stopped by signalling that group, not with
    `ray stop --force`, which would stop every Ray runtime on the machine (a user's study too).
    """
    port = free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    temp = tmp_path_factory.mktemp("ray")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    head = subprocess.Popen(
        [ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats", "--block",
         "--resources", json.dumps({"accelerator_type:V100": 1})],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + 180
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if head.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the test Ray head did not start (exit code {head.poll()})") from None
            time.sleep(0.3)
    yield f"127.0.0.1:{port}"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)  # whatever of the group is left
