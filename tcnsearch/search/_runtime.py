"""The Ray runtime a study runs on, and how the study stops: owned here from start-up to shutdown.

    with RayRuntime(ray_address) as runtime:      # joins the cluster, or starts a local runtime
        ... tune.Tuner(..., storage_path=runtime.storage_path) ...
    runtime.terminated                           # stopped by SIGTERM rather than Ctrl-C

A local runtime listens on loopback only (Ray's single-machine mode, compat.ray) and lives in a
fresh private folder (`$TMPDIR/tcns-XXXXXXXX`, short enough for Ray's Unix sockets), which goes
with it. While the study runs, SIGTERM stops it as Ctrl-C does: Tune's own SIGINT handling ends
the running trials, which the searcher fails as interrupted and queues again, instead of the
driver dying mid-write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from tcnsearch.cluster import check_reachable
from tcnsearch.compat.ray import single_machine_mode
from tcnsearch.errors import UserError

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard per trial
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune snapshots its experiment state each time a trial checkpoints (CheckpointConfig(num_to_keep=1) asks
# for it, so that an old checkpoint is deleted only once the new one is recorded), and warns when that
# happens often; with one checkpoint per evaluation it does, by design. The snapshot is small (our
# searcher's state is the database): README, "Trial checkpoints", has its cost.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Tune's result files are off (the study is the record); its analysis would warn about each trial.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
# Tune times its own bookkeeping and warns past 0.5 s; a loaded laptop gets there, nothing for a user to do.
logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def check_runs(runs: str) -> None:
    """Refuse, before anything runs (and creating nothing), a `--runs` folder Tune cannot keep checkpoints in."""
    path = Path(runs).absolute()
    if path.exists() and not path.is_dir():
        raise UserError(f"--runs {runs}: is a file; name a folder (on a cluster, one every node reaches)")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"--runs {runs}: {existing} is not a writable folder; name one every node reaches")


DRIVER_FILE = "driver.pid"  # in a run's folder: the process whose run it is


def run_folder() -> str:
    """A fresh folder for this run's Ray session and Tune's bookkeeping, removed afterwards.

    Short, since Ray puts Unix sockets inside it (at most 107 bytes a path), and private (0700).
    The folders of earlier runs whose driver was killed outright (it could not remove its own:
    Tune's checkpoints, Ray's session logs) are removed first."""
    base = tempfile.gettempdir()
    if len(base) > 29 or not os.access(base, os.W_OK):  # + tcns-XXXXXXXX/session_<date>_<pid>/sockets/raylet
        base = "/tmp"
    remove_abandoned(Path(base))
    folder = tempfile.mkdtemp(prefix="tcns-", dir=base)
    Path(folder, DRIVER_FILE).write_text(str(os.getpid()))
    return folder


def remove_abandoned(base: Path) -> list[Path]:
    """Remove the run folders in `base` that this user's drivers left behind when killed: those with a
    driver file naming a process that no longer exists, and that no process runs from (a Ray session
    that outlived its driver is left alone). Returns them."""
    removed = []
    for folder in base.glob("tcns-*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            pid = int((folder / DRIVER_FILE).read_text())
        except (OSError, ValueError):  # not ours, not a run folder, or one being made or removed right now
            continue
        if not _alive(pid) and not _running_from(str(folder)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _running_from(folder: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if folder.encode() in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RayRuntime:
    """Join the cluster at `address`, or start a local Ray runtime; stopped (if ours) on exit.

    Args:
        address: a Ray cluster (host:port), or None for a local runtime.
        storage_path: where Tune keeps its experiment state and the trials' checkpoints; on a cluster
            a folder every node reaches (a shared file system). Default: inside the run's folder.
            The run's experiment folder in it is removed when the runtime stops: the study in the
            database is the record, and each trial's checkpoints serve only until it finishes.
    """

    def __init__(self, address: str | None, storage_path: str | None = None):
        self.address = address
        self.folder = run_folder()
        self.storage_path = os.path.abspath(storage_path) if storage_path else os.path.join(self.folder, "tune")
        self.experiments: list[str] = []
        self.terminated = False
        self._owns = False
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RayRuntime:
        try:
            with self._sigterm_as_ctrl_c():
                self._start()
            # Again, for the whole run: Ray's core installed a SIGTERM handler of its own as it started.
            self._stack.enter_context(self._sigterm_as_ctrl_c())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        import ray

        if self._owns:
            ray.shutdown()
            self._owns = False
            # A Ctrl-C inside ray.init can come after Ray started its GCS and raylet but before it kept a
            # handle on them, which ray.shutdown() then cannot stop: stop what runs from our folder.
            _stop_processes_of(self.folder)
        self._stack.close()
        for name in self.experiments:
            shutil.rmtree(os.path.join(self.storage_path, name), ignore_errors=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def experiment(self, name: str) -> str:
        """A name for this run's Tune experiment, its own even where drivers share a `--runs` folder."""
        unique = f"{name}-{os.path.basename(self.folder)}"
        self.experiments.append(unique)
        return unique

    def _start(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address:
            check_reachable(self.address)
        else:
            self._stack.enter_context(single_machine_mode())  # left once the runtime has stopped (__exit__)
        try:
            self._owns = True
            ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=True,
                     **({} if self.address else {"_temp_dir": self.folder}))
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise UserError(f"cannot start or reach Ray at {self.address or 'local'}: {str(err).splitlines()[0]}; "
                            "check --ray-address (e.g. 127.0.0.1:6379)") from None

    @contextlib.contextmanager
    def _sigterm_as_ctrl_c(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            self.terminated = True
            os.kill(os.getpid(), signal.SIGINT)

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


def _descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux /proc; [] elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop_processes_of(folder: str, patience_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the processes this one started that run from `folder` (a Ray session's)."""
    def ours() -> list[int]:
        pids = []
        for pid in _descendants(os.getpid()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if folder.encode() in fh.read():
                        pids.append(pid)
            except OSError:
                continue
        return pids

    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = ours()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + patience_s
        while pids and time.monotonic() < deadline:
            for pid in pids:  # reap the ones that are our own children
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
            pids = ours()
            time.sleep(0.1)
        if not pids:
            return
