"""Shared fixtures: real storages (a SQLite file, a fresh PostgreSQL database) and a real Ray head."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

# Ray 2.60 writes ~/.ray/auth_token on a local ray.init, which a later `ray start` head then
# rejects from drivers: the tests' clusters run without token authentication, as one machine's.
os.environ["RAY_AUTH_MODE"] = "disabled"

# pytest-xdist's workers share the cores: each worker's PyTorch (and the commands it starts) gets its
# share of the OpenMP threads, not all of them. Two workers of two threads each on two cores spin
# against each other: the training tests took 3.3x as long (188 s against 57 s, tests/train -m slow).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                       // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


def pytest_collection_modifyitems(items):
    """A test that joins the session's Ray head is a `ray` test (`make check` leaves those out)."""
    for item in items:
        if "ray_head" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
PG_ADMIN = os.environ.get("TCNSEARCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'tcnsearch.db'}"


@contextlib.contextmanager
def _pg_database():
    """A database of its own on the PostgreSQL server, dropped afterwards; skipped without a server."""
    name = f"tcnsearch_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN.rsplit('@', 1)[-1]} ({str(err).splitlines()[0][:80]}); "
                    "`make test` starts a local one if it is installed, or set TCNSEARCH_TEST_PG")
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url():
    """One PostgreSQL database for the session (tests in it use names of their own)."""
    with _pg_database() as url:
        yield url


@pytest.fixture
def pg_fresh_url():
    """A PostgreSQL database for this test alone: for tests that read everything stored."""
    with _pg_database() as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head_process(temp: Path, *args: str):
    """A real local Ray head (`ray start --head ... args`), yielding its address.

    Started in a process group of its own and stopped by signalling that group, not with
    `ray stop --force`, which would stop every Ray runtime on the machine (a user's study too).
    """
    port = free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    log = temp.with_name(temp.name + "-head.log")
    temp.parent.mkdir(parents=True, exist_ok=True)
    # Ray puts Unix sockets in its temp folder (107 bytes a path at most): a short one of its own, not the
    # test's (pytest-xdist makes those longer), removed afterwards.
    session = tempfile.mkdtemp(prefix="ray-test-", dir="/tmp")
    with open(log, "w") as out:
        head = subprocess.Popen(
            [ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
             f"--temp-dir={session}", "--disable-usage-stats", "--block", *args],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        if not wait_for(lambda: listening(port) or head.poll() is not None, timeout=180) or head.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"the test Ray head did not start (exit code {head.poll()}): {' | '.join(tail)}")
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever of the group is left
        shutil.rmtree(session, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A real local Ray head whose node advertises accelerator_type:V100 (and no GPU)."""
    with ray_head_process(tmp_path_factory.mktemp("ray"), "--num-cpus=2",
                         "--resources", json.dumps({"accelerator_type:V100": 1})) as address:
        yield address


def wait_for(predicate, timeout: float = 120.0, every: float = 0.3) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")


@contextlib.contextmanager
def serve_dashboard(url: str, *args: str):
    """`tcnsearch dashboard` on `url` (and `args`), in a process of its own; yields its port once it listens."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("tcnsearch")), "dashboard", "--storage", url,
                               "--port", str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not wait_for(lambda: listening(port) or server.poll() is not None, timeout=60) or server.poll() is not None:
            raise AssertionError(f"the dashboard did not start: {server.stderr.read()}")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def chromium_dom(tmp_path: Path, page: str, *args: str) -> str:
    """The DOM headless Chromium renders for `page` (JavaScript run, 15 s of virtual time)."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=15000",
         f"--user-data-dir={tmp_path / 'chrome'}", "--dump-dom", *args, page],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
    return done.stdout


class DatabaseProxy:
    """A TCP forwarder to PostgreSQL whose connection can be cut: every connection dropped and new ones
    refused until `restore()`. Armed with `cut_at(statement)`, it cuts exactly when a client sends that
    SQL: before forwarding it (the transaction never commits), or, with `after_commit`, once the COMMIT
    that follows it has reached the server (the transaction commits; the client never hears so).

    Give it URLs with `sslmode=disable` to see the statements (they travel in the clear then).
    """

    def __init__(self, target=("127.0.0.1", 5432)):
        self.target, self.up, self.conns = target, threading.Event(), []
        self.armed: tuple[bytes, bool] | None = None
        self.seen_statement, self.restore_after = False, 0.0
        self.cuts = 0
        self.silent = threading.Event()  # the server's answers are dropped, not relayed
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.up.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, pg_url: str) -> str:
        return pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}") + "?sslmode=disable"

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, a, b, from_client: bool):
        try:
            while data := a.recv(65536):
                if from_client and self.armed is not None and self._trips(data, b):
                    return
                if not from_client and self.silent.is_set():
                    continue
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _trips(self, data: bytes, upstream) -> bool:
        """Whether this message from the client is the one to cut at (then the cut is done)."""
        statement, after_commit = self.armed
        if not after_commit:
            if statement not in data:
                return False
            self.armed = None
            self.cut(self.restore_after)
            return True
        if statement in data:
            self.seen_statement = True
        if not (self.seen_statement and b"COMMIT" in data):
            return False
        self.armed = None
        self.silent.set()  # the answer to this COMMIT never reaches the client
        upstream.sendall(data)
        time.sleep(0.3)  # the server commits
        self.cut(self.restore_after)
        self.silent.clear()
        return True

    def cut_at(self, statement: bytes, after_commit: bool = False, restore_after: float = 3.0) -> None:
        """Cut when a client next sends `statement`; restore `restore_after` seconds later."""
        self.seen_statement, self.restore_after = False, restore_after
        self.armed = (statement, after_commit)

    def cut(self, restore_after: float | None = None):
        """Drop every connection and refuse new ones (until `restore()`, or for `restore_after` seconds)."""
        self.up.clear()
        self.cuts += 1
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.conns = []
        if restore_after:
            threading.Timer(restore_after, self.restore).start()

    def restore(self):
        self.up.set()

    def close(self):
        self.cut()
        self.server.close()


@pytest.fixture
def db_proxy():
    proxy = DatabaseProxy()
    yield proxy
    proxy.close()
