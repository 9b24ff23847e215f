"""Shared fixtures: real storages (a SQLite file, a fresh PostgreSQL database) and a real Ray head."""

import json
import os
import socket
import subprocess
import sys
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
    """A database of its own on the PostgreSQL server, dropped afterwards (the server must be up)."""
    name = f"tcnsearch_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
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
    """A real local Ray head whose node advertises accelerator_type:V100 (and no GPU)."""
    port = free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    temp = tmp_path_factory.mktemp("ray")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    subprocess.run(
        [ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false",
         f"--temp-dir={temp}", "--disable-usage-stats",
         "--resources", json.dumps({"accelerator_type:V100": 1})],
        check=True, capture_output=True, env=env, timeout=180)
    yield f"127.0.0.1:{port}"
    subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
