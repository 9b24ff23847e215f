"""`tcnsearch study NAME`: profile if needed, then Ray Tune trains the survivors into an Optuna study.

    result = run_study("assoc-recall", preset="tiny", storage="sqlite:///tcnsearch.db", trials=8)
    result.counts    # {"COMPLETE": 5, "PRUNED": 3, "FAIL": 0, ...}
    result.best      # the best trial(s): parameters, values, profiled latency

The order matters for what users keep when something goes wrong: every check that can refuse
(the study file, the database, the Ray cluster, the existing study) comes before any trial
starts (`_plan`), and a driver that stops for any reason first fails and re-queues the trials it
was running (`_train`), so the study never holds a trial stuck in RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tcnsearch import hardware
from tcnsearch._names import check_name
from tcnsearch._quiet import quiet_third_party
from tcnsearch.data import prepare_data
from tcnsearch.errors import UserError
from tcnsearch.profile import ProfileResult, run_profile
from tcnsearch.search._runtime import check_runs
from tcnsearch.search.artifacts import artifact_folder, check_store, kept_weights
from tcnsearch.search.dashboard import attach_profile
from tcnsearch.search.space import StructureSpace
from tcnsearch.search.spec import StudySpec, load_spec
from tcnsearch.search.start import (
    check_existing,
    distributions,
    enqueue_structures,
    grid_of,
    parse_enqueue,
    prepare_study,
    resolve_enqueue,
    sampler_named,
    source_study,
    structure_space,
    warm_start_from,
)
from tcnsearch.search.trials import (
    INFEASIBLE,
    LATENCY,
    WARM_START,
    budget_lock,
    occupied,
    opened_storage,
    stored_studies,
    trained,
    trial_row,
)
from tcnsearch.storage import SETUP_LOCK, create_engine, masked, resolve_url
from tcnsearch.train import check_largest

optuna.logging.set_verbosity(optuna.logging.WARNING)
quiet_third_party()
log = logging.getLogger(__name__)


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
    artifacts: str | None = None  # the folder of the best trials' weights

    def to_json(self) -> dict:
        return {"study": self.study_name, "storage": self.storage, "preset": self.preset, "task": self.task,
                "directions": self.directions, "metric_names": self.metric_names, "counts": self.counts,
                "best": self.best, "ran": self.ran, "device": self.device, "survivors": self.survivors,
                "interrupted": self.interrupted, "elapsed_s": round(self.elapsed_s, 3), "warnings": self.warnings,
                "artifacts": self.artifacts}


@dataclass
class _Plan:
    """A study run, checked: what it trains, where it stores, what it optimises."""

    spec: StudySpec
    url: str
    gpu: str
    ray_address: str | None
    name: str  # in the database
    directions: list[str]
    metric_names: list[str]
    queued: list
    source: optuna.Study | None  # --warm-start
    multi_objective: bool
    artifacts: Path  # where the best trials' weights go
    runs: str | None  # where Tune keeps the trials' checkpoints (shared by every node of a cluster)


def _plan(name: str, preset: str, storage: str | None, gpu: str, ray_address: str | None, multi_objective: bool,
          study_name: str | None, data_path: str | None, sampler: str | None, enqueue: list[str] | None,
          warm_start: str | None, resume: bool, artifacts: str | None, runs: str | None) -> _Plan:
    """Every check that can refuse, before the database is opened (and, for SQLite, created)."""
    if study_name is not None:
        check_name(study_name, "--study-name")
    spec = load_spec(name, preset)
    if sampler is not None:
        spec.sampler = sampler_named(sampler, spec)
    queued = [parse_enqueue(item) for item in enqueue or []]
    given = prepare_data(spec.task, data_path or spec.train.get("data_path"))  # fetched or checked once, here
    if given:
        spec.train = spec.train | {"data_path": given}
    url = resolve_url(storage)
    gpu = hardware.check_gpu_name(gpu)
    device = hardware.local_target(gpu, ray_address)
    if device is not None:  # on a cluster's GPU each trial plans its memory on its worker
        check_study_memory(spec, device)
    source = source_study(url, warm_start, spec, multi_objective) if warm_start else None  # read-only
    metric = spec.objective.metric
    directions = ["minimize" if spec.objective.mode == "min" else "maximize"] + (["minimize"] if multi_objective
                                                                                 else [])
    name_in_db = study_name or f"{spec.name}-{preset}" + ("-pareto" if multi_objective else "")
    if stored_studies(url):  # before the profile: a refusal then costs no measuring and writes nothing
        with opened_storage(url, read_only=True) as existing:
            check_existing(existing, name_in_db, resume, directions)
    folder = artifact_folder(url, artifacts)
    if spec.keep_best:
        check_store(folder)
    if runs is not None:
        check_runs(runs)
    return _Plan(spec, url, gpu, ray_address, name_in_db, directions, [metric] + [LATENCY] * multi_objective,
                 queued, source, multi_objective, folder, runs)


def check_study_memory(spec: StudySpec, device) -> None:
    """Refuse, on the driver before anything runs, a study whose largest trial (the space's and the profile
    grid's largest values) does not fit one example a forward in its share of the device's memory."""
    profile = spec.profile_spec()
    choices = {k: p.choices if p.choices is not None else [p.low, p.high] for k, p in spec.space.items()}
    choices |= {"model.tcn.depth": profile.depths, "model.tcn.per_block": profile.per_block}
    share = 1 / spec.budget.max_concurrent if device.type == "cpu" else min(1.0, spec.budget.gpus_per_trial or 1.0)
    check_largest(spec.trial_config, choices, device, share)


def _study_attrs(plan: _Plan, profile: ProfileResult, notes: list[str]) -> dict:
    """A study's user attributes: short, for people (optuna-dashboard lists them on the study page)."""
    spec, objective = plan.spec, plan.spec.objective
    budget = ", ".join(f"{k} {v}" for k, v in (("max_latency_ms", objective.max_latency_ms),
                                               ("min_speedup", objective.min_speedup)) if v is not None)
    return {"task": spec.task, "preset": spec.preset, "study_file": spec.name,
            "objective": f"{objective.mode} {objective.metric}" + (f" within {budget}" if budget else ""),
            "device": profile.device.device_name, "profile_level": profile.spec.level,
            "profile_mode": profile.spec.mode, "profile_backend": profile.device.backend,
            "profile_precision": profile.device.dtype, "min_speedup": profile.spec.min_speedup,
            "survivors": len(profile.kept()), **({"profile_warnings": notes} if notes else {}),
            **({"data": str(Path(spec.train["data_path"]).absolute())} if spec.train.get("data_path") else {})}


def _open_study(plan: _Plan, rdb, engine, profile: ProfileResult, resume: bool
                ) -> tuple[optuna.Study, StructureSpace, list[str]]:
    """Create (or load) the study, its survivors frozen; attach the profile; warm-start and queue it."""
    spec, notes = plan.spec, profile.notes()
    kept = profile.kept_survivors()
    if not kept:
        raise UserError(f"no TCN structure of the profile beats the EMA by {profile.spec.min_speedup}x with "
                        f"R >= {profile.spec.required_receptive_field} on {profile.device.device_name} "
                        f"({len(profile.undecided)} undecided); widen the profile grid in the study file, lower "
                        "min_speedup, or keep the undecided ones (profile: {undecided: keep})")
    grid = {"kernel_size": profile.spec.kernel_sizes, "dilation_factor": profile.spec.dilation_factors,
            "depth": profile.spec.depths, "per_block": profile.spec.per_block}
    space = structure_space(kept, grid, spec)  # refuses a budget no survivor meets
    first, queue_notes = resolve_enqueue(space, plan.queued, profile.spec.lengths)
    with budget_lock(engine, f"tcnsearch-setup:{plan.name}"):  # one driver creates, seeds and queues the study
        sampler = spec.sampler.build(grid_of(space, spec), LATENCY if plan.multi_objective else None)
        study, survivors, grid = prepare_study(spec, rdb, plan.name, plan.directions, plan.metric_names, kept, grid,
                                               resume, sampler, _study_attrs(plan, profile, notes))
        space = structure_space(survivors, grid, spec)  # the survivors frozen in the study
        attach_profile(study, profile, [s.label for s in survivors])  # shown in optuna-dashboard
        if plan.source is not None:
            notes += warm_start_from(study, plan.source, distributions(space, spec))
        enqueue_structures(study, first)
    return study, space, notes + queue_notes


@contextlib.contextmanager
def _storages(url: str, heartbeat_s: int):
    """The study's engine (tcnsearch's tables, the locks) and Optuna's storage on it, both closed when
    the study ends: a caller in one process (a notebook, the tests) runs many studies, and a server
    counts every connection left open."""
    with contextlib.ExitStack() as stack:
        engine = create_engine(url)
        stack.callback(engine.dispose)
        with budget_lock(engine, SETUP_LOCK):  # drivers starting at once on a new database: one makes the tables
            rdb = stack.enter_context(opened_storage(url, heartbeat_s))
        yield engine, rdb


def run_study(name: str, *, preset: str = "tiny", storage: str | None = None, trials: int | None = None,
              gpu: str = "auto", ray_address: str | None = None, resume: bool = False,
              multi_objective: bool = False, study_name: str | None = None, max_concurrent: int | None = None,
              progress: bool = True, data_path: str | None = None, sampler: str | None = None,
              enqueue: list[str] | None = None, warm_start: str | None = None, artifacts: str | None = None,
              runs: str | None = None, trainable=None) -> StudyResult:
    """Run (or continue) the study `name` until it holds its budget of finished trials.

    `sampler` replaces the study file's sampler (gp, tpe, random, nsga2, grid); `enqueue` queues
    structures first ("paper", "K,f,D,B" or a label); `warm_start` seeds the study with another stored
    study's finished trials. `artifacts`: the folder of the best trials' weights (default: beside the
    SQLite database); `runs`: where Ray Tune keeps the trials' checkpoints (default: a private folder
    of this run; on a cluster of several machines a shared folder, so that a trial retried on another
    node resumes). `trainable` replaces the training function (the overhead benchmark passes a
    trivial one).

    Raises:
        UserError: a bad study file, an unreachable database or cluster, an unknown GPU, a study
            that exists (without `resume`) or has other objectives, no survivors or none within the
            latency budget, a bad `enqueue` or `warm_start`. Before any trial runs.
    """
    start = time.perf_counter()
    plan = _plan(name, preset, storage, gpu, ray_address, multi_objective, study_name, data_path, sampler, enqueue,
                 warm_start, resume, artifacts, runs)
    with _storages(plan.url, plan.spec.heartbeat_s) as (engine, rdb):
        profile = run_profile(plan.spec.profile_spec(), gpu=plan.gpu, storage=plan.url, ray_address=ray_address,
                              progress=progress)
        study, space, notes = _open_study(plan, rdb, engine, profile, resume)
        target = trials or plan.spec.budget.trials
        optuna.storages.fail_stale_trials(study)
        done_before = occupied(study.get_trials(deepcopy=False))
        device, survivors = profile.device.device_name, len(space.survivors)
        if done_before >= target and not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            result = summarize(study, plan.url, plan.spec, device, survivors, time.perf_counter() - start,
                               warnings=notes)
        else:
            from tcnsearch.search._tune import train_study  # Ray Tune loads here, not for every reader of a study

            searcher, interrupted, terminated = train_study(
                plan.spec, study, space, engine, target, done_before, name=plan.name, ray_address=plan.ray_address,
                gpu=plan.gpu, multi_objective=plan.multi_objective, artifacts=plan.artifacts, runs=plan.runs,
                trial_attrs={"device": profile.device.device_name, "level": profile.spec.level},
                max_concurrent=max_concurrent, progress=progress, trainable=trainable)
            result = summarize(study, plan.url, plan.spec, device, survivors, time.perf_counter() - start,
                               ran=searcher.finished, interrupted=interrupted, warnings=notes)
            result.terminated = terminated
        result.artifacts = str(plan.artifacts) if plan.spec.keep_best else None
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
    weights = kept_weights(study)
    for row in best:
        row["weights_artifact"] = weights.get(row["number"])
    return StudyResult(study_name=study.study_name, storage=masked(url), preset=spec.preset, task=spec.task,
                       directions=directions, metric_names=study.metric_names or [spec.objective.metric],
                       counts=counts, best=best, ran=ran, device=device, survivors=survivors, elapsed_s=elapsed,
                       interrupted=interrupted, trials=[trial_row(t) for t in every], warnings=warnings or [])
