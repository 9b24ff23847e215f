"""`tcnsearch study NAME`: profile if needed, then Ray Tune trains the survivors into an Optuna study.

    result = run_study("assoc-recall", preset="tiny", storage="sqlite:///tcnsearch.db", trials=8)
    result.counts    # {"COMPLETE": 5, "PRUNED": 3, "FAIL": 0, ...}
    result.best      # the best trial(s): parameters, values, profiled latency

The order matters for what users keep when something goes wrong: every check that can refuse
(the study file, the database, the Ray cluster, the existing study) comes before any trial
starts, and a driver that stops for any reason first fails and re-queues the trials it was
running, so the study never holds a trial stuck in RUNNING.
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
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tcnsearch._names import check_name, file_name
from tcnsearch._quiet import quiet_third_party
from tcnsearch.errors import UserError
from tcnsearch.profile import GPU_MODELS, run_profile
from tcnsearch.profile.devices import check_gpu_name
from tcnsearch.profile.runner import local_target
from tcnsearch.search._start import (
    distributions,
    enqueue_structures,
    grid_of,
    parse_enqueue,
    resolve_enqueue,
    sampler_named,
    structure_space,
    warm_start_from,
)
from tcnsearch.search._start import source_study as _warm_start_source
from tcnsearch.search._study import (
    INFEASIBLE,
    LATENCY,
    WARM_START,
    budget_lock,
    occupied,
    open_storage,
    trained,
    trial_row,
)
from tcnsearch.search.spec import StudySpec, load_spec
from tcnsearch.storage import create_engine, masked, resolve_url

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard per trial
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
optuna.logging.set_verbosity(optuna.logging.WARNING)
quiet_third_party()
# Tune's result files are off (the study is the record); its analysis would warn about each trial.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
# Tune times its own bookkeeping and warns past 0.5 s; a loaded laptop gets there, nothing for a user to do.
logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)


@dataclass
class StudyResult:
    study_name: str
    storage: str
    preset: str
    task: str
    directions: list[str]
    metric_names: list[str]
    counts: dict[str, int]
    best: list[dict]
    ran: int
    device: str
    survivors: int
    elapsed_s: float
    interrupted: int = 0
    terminated: bool = False  # stopped by SIGTERM rather than Ctrl-C
    trials: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"study": self.study_name, "storage": self.storage, "preset": self.preset, "task": self.task,
                "directions": self.directions, "metric_names": self.metric_names, "counts": self.counts,
                "best": self.best, "ran": self.ran, "device": self.device, "survivors": self.survivors,
                "interrupted": self.interrupted, "elapsed_s": round(self.elapsed_s, 3), "warnings": self.warnings}


def _label(row: dict) -> str:
    return f"K{row['kernel_size']}-f{row['dilation_factor']}-D{row['depth']}-B{row['per_block']}"


def _survivor_records(rows: list[dict], device: str, latency_key: str, level: str, grid: dict[str, list[int]]
                      ) -> list[dict]:
    """The profile's survivors as the study keeps them: a label, the structure, its timings, whether
    they were measured or predicted, the decision (survivor, or undecided kept by `undecided: keep`),
    and the profile grid's values along each axis (what the sampler draws K, f, D and B from)."""
    choices = {k: sorted(v) for k, v in grid.items()}
    keep = ("kernel_size", "dilation_factor", "depth", "per_block", "receptive_field", "tcn_fwd_ms",
            "tcn_fwdbwd_ms", "ema_fwd_ms", "ema_fwdbwd_ms", "speedup_fwd", "speedup_fwdbwd", "speedup_fwd_ci",
            "speedup_fwdbwd_ci", "source", "decision")
    return [{"label": _label(r), **{k: r[k] for k in keep}, LATENCY: r[latency_key], "device": device,
             "level": level, "choices": choices} for r in rows]


def _existing(storage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _profile_notes(profile) -> list[str]:
    """What a user of this study's latencies must know about the profile behind them."""
    notes = []
    if profile.device.is_fallback:
        notes.append("the profile's TCN timings come from the PyTorch fallback (the native kernel could not be "
                     "built: no C compiler?); they are not the native kernel's")
    if profile.predicted:
        notes.append(f"{profile.predicted} of {len(profile.candidates)} structures' latencies are predicted by the "
                     "latency model, not measured (source: predicted)")
    if profile.undecided:
        notes.append(f"{len(profile.undecided)} structures are undecided (interval straddles min_speedup); "
                     f"{'kept' if profile.spec.undecided == 'keep' else 'dropped'}")
    return notes


def _prepare_study(spec: StudySpec, storage, name: str, directions: list[str], metric_names: list[str],
                   survivors: list[dict], resume: bool, sampler, profile_attrs: dict | None = None
                   ) -> tuple[optuna.Study, list[dict]]:
    study = _existing(storage, name)
    if study is not None:
        first = study.get_trials(deepcopy=False)[:1]
        if first and "tcn" in first[0].params:
            raise UserError(f"study {name!r} was created by tcnsearch 0.2, whose sampler drew the TCN as one "
                            "categorical 'tcn'; this version draws K, f, D and B as ordered parameters. Start a new "
                            "study (--study-name NAME), seeded from the old one with --warm-start "
                            f"{name} if you like")
        if not resume and study.get_trials(deepcopy=False):
            held = sum(1 for t in study.get_trials(deepcopy=False) if trained(t))
            raise UserError(f"study {name!r} already holds {held} trials; "
                            "--resume continues it, --study-name NAME starts another")
        stored = [d.name.lower() for d in study.directions]
        if stored != directions:
            raise UserError(f"study {name!r} optimises {stored}, not {directions}; "
                            "use --study-name NAME for a study with other objectives")
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True,
                                sampler=sampler)
    if "survivors" in study.user_attrs:
        survivors = study.user_attrs["survivors"]  # frozen at creation: the parameter space must not move
    else:
        study.set_metric_names(metric_names)
        for key, value in {"task": spec.task, "preset": spec.preset, "survivors": survivors,
                           "device": survivors[0]["device"], "objective": spec.objective.model_dump(),
                           "profile": spec.profile_spec().model_dump(), "study_file": spec.name,
                           **(profile_attrs or {})}.items():
            study.set_user_attr(key, value)
    return study, survivors


class _Progress:
    """A live line over the study's budget: finished of target, running, complete, pruned, failed, best so far.

    The counts are the study's when the run started plus what this driver has ended since, so no
    database query runs per Tune event; other drivers' trials show up in the final table.
    """

    def __init__(self, study: optuna.Study, total: int, done: int, enabled: bool):
        trials = study.get_trials(deepcopy=False)
        self.before = {s: sum(t.state == TrialState[s] for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
        self.best = None
        if len(study.directions) == 1 and self.before["COMPLETE"]:
            self.best = (study.best_value, study.best_trial.number)
        self.bar = Progress(TextColumn("[bold]study[/]"), BarColumn(bar_width=6), MofNCompleteColumn(),
                            TextColumn("{task.description}"), TimeElapsedColumn(), console=Console(stderr=True),
                            disable=not enabled)
        self.task = self.bar.add_task("starting Ray", total=total, completed=done)

    def line(self, searcher) -> str:
        count = {s: self.before[s] + searcher.outcomes[s] for s in self.before}
        best = self.best
        if searcher.best is not None and (best is None or (searcher.best[0] < best[0]) == (searcher.mode == "min")):
            best = searcher.best
        shown = f"best {best[0]:.3g} (#{best[1]})" if best else "best -"
        # Short enough for an 80-column terminal with the bar, the count and the clock.
        return (f"{len(searcher.running_trial_ids())} running, {count['COMPLETE']} ok, {count['PRUNED']} pruned, "
                f"{count['FAIL']} failed, {shown}")

    def show(self, searcher) -> None:
        self.bar.update(self.task, description=self.line(searcher))

    def advance(self, searcher) -> None:
        self.bar.update(self.task, advance=1, description=self.line(searcher))


def _prepare_data(spec: StudySpec, data_path: str | None) -> None:
    """Fetch or check the data set once, here, so that no trial fails for want of it."""
    if data_path:
        spec.train = spec.train | {"data_path": str(data_path)}
    given = spec.train.get("data_path")
    if spec.task == "enwik8":
        from tcnsearch.data import enwik8

        spec.train = spec.train | {"data_path": str(enwik8.prepare(Path(given) if given else None))}
    elif spec.task.startswith("lra-") and spec.task != "lra-listops" and not given:
        raise UserError(f"{spec.task} needs its data: download lra_release.gz from the Long Range Arena "
                        "repository, unpack it, and pass the folder with --data")
    elif given and not Path(given).exists():
        raise UserError(f"--data {given}: not found")


def _trial_name(trial) -> str:
    return f"trial_{trial.config.get('optuna_trial', trial.trial_id)}"


def _heartbeats(storage, searcher, interval: int, stop: threading.Event) -> None:
    while True:
        for trial_id in searcher.running_trial_ids():
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a database blip must not kill the driver; the next beat retries
                logging.getLogger(__name__).warning("heartbeat for trial %s failed", trial_id, exc_info=True)
        if stop.wait(interval):
            return


_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_SAVED: dict = {}  # what single-machine mode replaced, restored at shutdown


def _init_ray(ray_address: str | None, temp_dir: str) -> bool:
    """Join the cluster at `ray_address`, or start a local Ray runtime in `temp_dir`. True if we started it.

    A local runtime listens on loopback only: Ray turns 127.0.0.1 as a node address into the
    machine's public one, but its single-machine mode (what it runs on macOS and Windows) keeps
    the GCS, the raylet, the object manager and the workers on 127.0.0.1. Joining a cluster with
    `--ray-address` is the way to use the network.
    """
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return False
    if ray_address:
        from tcnsearch.profile._remote import check_reachable

        check_reachable(ray_address)
    else:
        _SAVED.update(env=os.environ.get(_SINGLE_MACHINE), constant=ray_constants.ENABLE_RAY_CLUSTER)
        os.environ[_SINGLE_MACHINE] = "0"  # the workers Ray starts read it from their environment
        ray_constants.ENABLE_RAY_CLUSTER = False  # this process read it at import
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        ray.init(address=ray_address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=True,
                 **({} if ray_address else {"_temp_dir": temp_dir}))
    except (ConnectionError, ValueError, RuntimeError) as err:
        _shutdown_ray()
        raise UserError(f"cannot start or reach Ray at {ray_address or 'local'}: {str(err).splitlines()[0]}; "
                        "check --ray-address (e.g. 127.0.0.1:6379)") from None
    except BaseException:  # Ctrl-C while Ray starts: stop what has started before going
        _shutdown_ray()
        raise
    return True


def _shutdown_ray() -> None:
    """Stop the runtime we started, and leave Ray's single-machine mode for whatever runs next here."""
    import ray
    from ray._private import ray_constants

    ray.shutdown()
    if _SAVED:
        if _SAVED["env"] is None:
            os.environ.pop(_SINGLE_MACHINE, None)
        else:
            os.environ[_SINGLE_MACHINE] = _SAVED["env"]
        ray_constants.ENABLE_RAY_CLUSTER = _SAVED["constant"]
        _SAVED.clear()


def _run_folder() -> str:
    """A fresh folder for this run's Ray session and Tune's bookkeeping, removed afterwards.

    Short, since Ray puts Unix sockets inside it (at most 107 bytes a path), and private (0700)."""
    base = tempfile.gettempdir()
    if len(base) > 29 or not os.access(base, os.W_OK):  # + tcns-XXXXXXXX/session_<date>_<pid>/sockets/raylet
        base = "/tmp"
    return tempfile.mkdtemp(prefix="tcns-", dir=base)


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """While the study runs, SIGTERM stops it as Ctrl-C does (Tune's own SIGINT handling: running
    trials end, are failed as interrupted and re-queued) instead of killing the driver mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _STOP["terminated"] = True
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_STOP = {"terminated": False}


def run_study(name: str, *, preset: str = "tiny", storage: str | None = None, trials: int | None = None,
              gpu: str = "auto", ray_address: str | None = None, resume: bool = False,
              multi_objective: bool = False, study_name: str | None = None, max_concurrent: int | None = None,
              progress: bool = True, data_path: str | None = None, sampler: str | None = None,
              enqueue: list[str] | None = None, warm_start: str | None = None, trainable=None) -> StudyResult:
    """Run (or continue) the study `name` until it holds its budget of finished trials.

    `sampler` replaces the study file's sampler (tpe, gp, random, nsga2, grid); `enqueue` queues
    structures first ("paper", or "K,f,D,B"); `warm_start` seeds the study with another stored
    study's finished trials. `trainable` replaces the training function (the overhead benchmark
    passes a trivial one).

    Raises:
        UserError: a bad study file, an unreachable database or cluster, an unknown GPU, a study
            that exists (without `resume`) or has other objectives, no survivors or none within the
            latency budget, a bad `enqueue` or `warm_start`. Before any trial runs.
    """
    start = time.perf_counter()
    # Everything that can refuse comes before the database is opened (and, for SQLite, created).
    if study_name is not None:
        check_name(study_name, "--study-name")
    spec = load_spec(name, preset)
    if sampler is not None:
        spec.sampler = sampler_named(sampler, spec)
    queued = [parse_enqueue(item) for item in enqueue or []]
    _prepare_data(spec, data_path)
    url = resolve_url(storage)
    gpu = check_gpu_name(gpu)
    local_target(gpu, ray_address)
    # read-only: a warm start that names no usable study changes nothing
    source = _warm_start_source(url, warm_start, spec, multi_objective) if warm_start else None
    engine = create_engine(url)
    with budget_lock(engine, "tcnsearch-setup"):  # drivers starting at once on a new database: one makes the tables
        rdb = open_storage(url, spec.heartbeat_s)
    profile_spec = spec.profile_spec()
    latency_key = "tcn_fwdbwd_ms" if profile_spec.mode == "train" else "tcn_fwd_ms"
    profile = run_profile(profile_spec, gpu=gpu, storage=url, ray_address=ray_address, progress=progress)
    kept = profile.kept()
    if not kept:
        raise UserError(f"no TCN structure of the profile beats the EMA by {profile_spec.min_speedup}x with "
                        f"R >= {profile_spec.required_receptive_field} on {profile.device.device_name} "
                        f"({len(profile.undecided)} undecided); widen the profile grid in the study file, lower "
                        "min_speedup, or keep the undecided ones (profile: {undecided: keep})")
    device = profile.device.device_name
    notes = _profile_notes(profile)
    metric = spec.objective.metric
    directions = ["minimize" if spec.objective.mode == "min" else "maximize"]
    metric_names = [metric]
    if multi_objective:
        directions.append("minimize")
        metric_names.append(LATENCY)
    name_in_db = study_name or f"{spec.name}-{preset}" + ("-pareto" if multi_objective else "")
    grid = {"kernel_size": profile_spec.kernel_sizes, "dilation_factor": profile_spec.dilation_factors,
            "depth": profile_spec.depths, "per_block": profile_spec.per_block}
    records = _survivor_records(kept, device, latency_key, profile_spec.level, grid)
    space = structure_space(records, spec, profile_spec.mode)  # refuses a budget no survivor meets
    first, queue_notes = resolve_enqueue(space, queued, profile_spec.lengths)
    from tcnsearch.report import attach_profile

    with budget_lock(engine, f"tcnsearch-setup:{name_in_db}"):  # one driver creates, seeds and queues the study
        study, survivors = _prepare_study(spec, rdb, name_in_db, directions, metric_names, records, resume,
                                          spec.sampler.build(grid_of(space, spec),
                                                             LATENCY if multi_objective else None),
                                          profile_attrs={"profile_backend": profile.device.backend,
                                                         "profile_level": profile_spec.level,
                                                         "profile_fingerprint": profile.device.as_dict(),
                                                         "profile_warnings": notes})
        space = structure_space(survivors, spec, profile_spec.mode)  # the survivors frozen in the study
        attach_profile(study, profile)  # this run's profile, as a figure and a note in optuna-dashboard
        if source is not None:
            notes += warm_start_from(study, source, distributions(space, spec))
        enqueue_structures(study, space, first)
        notes += queue_notes
    target = trials or spec.budget.trials
    optuna.storages.fail_stale_trials(study)
    done_before = occupied(study.get_trials(deepcopy=False))
    if done_before >= target and not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return summarize(study, url, spec, profile.device.device_name, len(survivors), time.perf_counter() - start,
                         warnings=notes)

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from tcnsearch.search._searcher import StudySearcher, TuneHook
    from tcnsearch.search._trainable import run_trial

    folder = _run_folder()
    _STOP["terminated"] = False
    owns_ray = False
    try:
        with _sigterm_as_ctrl_c():
            owns_ray = _init_ray(ray_address, folder)
        with _sigterm_as_ctrl_c():  # again: Ray's core installed a SIGTERM handler of its own as it started
            searcher = StudySearcher(study, spec, space, target, multi_objective, LATENCY, engine=engine)
            bar = _Progress(study, target, min(done_before, target), progress)
            stop = threading.Event()
            beat = threading.Thread(target=_heartbeats, args=(rdb, searcher, spec.heartbeat_s, stop), daemon=True)
            base = spec.base_config()
            resources = {"cpu": spec.budget.cpus_per_trial, "gpu": spec.budget.gpus_per_trial}
            if gpu not in ("auto", "cpu") and ray_address:
                resources[f"accelerator_type:{GPU_MODELS[gpu]}"] = 0.001  # trials go where the profile's GPU is
            scheduler = None
            if spec.scheduler.type == "asha":
                scheduler = ASHAScheduler(time_attr="training_iteration", metric=metric, mode=spec.objective.mode,
                                          max_t=max(1, -(-base.steps // base.eval_every)),
                                          grace_period=spec.scheduler.grace_period,
                                          reduction_factor=spec.scheduler.reduction_factor)
            tuner = tune.Tuner(
                tune.with_resources(trainable or run_trial, resources),
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                            max_concurrent_trials=max_concurrent or spec.budget.max_concurrent,
                                            reuse_actors=True, trial_name_creator=_trial_name,
                                            trial_dirname_creator=_trial_name),
                run_config=tune.RunConfig(name=file_name(name_in_db), storage_path=os.path.join(folder, "tune"),
                                          verbose=0, callbacks=[TuneHook(searcher, bar)], log_to_file=False,
                                          failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures)),
            )
            interrupted = 0
            beat.start()
            try:
                with bar.bar:
                    tuner.fit()
            finally:
                interrupted = searcher.interrupt_all()
                stop.set()
                beat.join()
    finally:  # whatever stops the study, the runtime we started and the run's folder go with it
        if owns_ray:
            _shutdown_ray()
        shutil.rmtree(folder, ignore_errors=True)
    result = summarize(study, url, spec, device, len(survivors), time.perf_counter() - start,
                       ran=searcher.finished, interrupted=interrupted,
                       warnings=notes)
    result.terminated = _STOP["terminated"]
    return result


def summarize(study: optuna.Study, url: str, spec: StudySpec, device: str, survivors: int, elapsed: float,
              ran: int = 0, interrupted: int = 0, warnings: list[str] | None = None) -> StudyResult:
    """The study as it stands. `counts` are of its own trained trials; proposals that were never
    trained (infeasible) and trials copied by a warm start are counted apart."""
    every = study.get_trials(deepcopy=False)
    trials = [t for t in every if trained(t)]
    counts = {s.name: sum(1 for t in trials if t.state == s) for s in TrialState}
    counts["INFEASIBLE"] = sum(1 for t in every if INFEASIBLE in t.user_attrs)
    counts["WARM_START"] = sum(1 for t in every if WARM_START in t.user_attrs)
    directions = [d.name.lower() for d in study.directions]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        best = []
    elif len(directions) == 1:
        sign = 1 if directions[0] == "minimize" else -1
        best = [trial_row(min(complete, key=lambda t: sign * t.value))]
    else:
        best = [trial_row(t) for t in study.best_trials if trained(t)]
    return StudyResult(study_name=study.study_name, storage=masked(url), preset=spec.preset, task=spec.task,
                       directions=directions, metric_names=study.metric_names or [spec.objective.metric],
                       counts=counts, best=best, ran=ran, device=device, survivors=survivors, elapsed_s=elapsed,
                       interrupted=interrupted, trials=[trial_row(t) for t in every], warnings=warnings or [])


__all__ = ["StudyResult", "run_study", "summarize"]
