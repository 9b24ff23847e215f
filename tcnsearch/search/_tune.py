"""Ray Tune trains a study's trials: the searcher, the scheduler, heartbeats, progress and the run's folder."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from tcnsearch import hardware
from tcnsearch._names import file_name
from tcnsearch.search._progress import StudyProgress
from tcnsearch.search._runtime import RayRuntime
from tcnsearch.search.artifacts import ArtifactKeeper, open_store
from tcnsearch.search.searcher import StudySearcher, TuneHook
from tcnsearch.search.space import StructureSpace
from tcnsearch.search.spec import StudySpec
from tcnsearch.search.trials import LATENCY
from tcnsearch.train.trial import run_trial

log = logging.getLogger(__name__)


def _heartbeats(searcher, interval: int, stop: threading.Event) -> None:
    while True:
        for trial_id in searcher.running_trial_ids():
            try:
                searcher.storage.record_heartbeat(trial_id)
            except Exception:  # a database blip must not kill the driver; the next beat retries
                log.warning("heartbeat for trial %s failed", trial_id, exc_info=True)
        if stop.wait(interval):
            return


def _trial_name(trial) -> str:
    return f"trial_{trial.config.get('optuna_trial', trial.trial_id)}"


def train_study(spec: StudySpec, study: optuna.Study, space: StructureSpace, engine, target: int, done_before: int,
                *, name: str, ray_address: str | None, gpu: str, multi_objective: bool, artifacts: Path,
                runs: str | None, trial_attrs: dict, max_concurrent: int | None = None, progress: bool = True,
                use_scheduler: bool = True, trainable=None) -> tuple[StudySearcher, int, bool]:
    """Ray Tune trains until `study` holds `target` finished trials; (searcher, interrupted, terminated).

    The searcher asks the study for each trial (queued ones first), a heartbeat thread keeps this
    driver's trials alive, ASHA (unless `use_scheduler` is off) stops the poor ones, and whatever
    stops the run fails and re-queues the trials still running."""
    keeper = ArtifactKeeper(study, open_store(artifacts), spec.keep_best) if spec.keep_best else None
    with RayRuntime(ray_address, runs) as runtime:
        searcher = StudySearcher(study, spec, space, target, multi_objective, LATENCY, engine=engine,
                                 trial_attrs=trial_attrs, checkpoint_every=spec.checkpoint_every, keeper=keeper)
        bar = StudyProgress(study, target, min(done_before, target), progress)
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeats, args=(searcher, spec.heartbeat_s, stop), daemon=True)
        base = spec.base_config()
        resources = {"cpu": spec.budget.cpus_per_trial, "gpu": spec.budget.gpus_per_trial}
        if gpu not in ("auto", "cpu") and ray_address:
            resources[f"accelerator_type:{hardware.GPU_MODELS[gpu]}"] = 0.001  # where the profile's GPU is
        scheduler = None
        if spec.scheduler.type == "asha" and use_scheduler:
            scheduler = ASHAScheduler(time_attr="training_iteration", metric=spec.objective.metric,
                                      mode=spec.objective.mode, max_t=max(1, -(-base.steps // base.eval_every)),
                                      grace_period=spec.scheduler.grace_period,
                                      reduction_factor=spec.scheduler.reduction_factor)
        tuner = tune.Tuner(
            tune.with_resources(trainable or run_trial, resources),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                        max_concurrent_trials=max_concurrent or spec.budget.max_concurrent,
                                        reuse_actors=True, trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(name=runtime.experiment(file_name(name)), storage_path=runtime.storage_path,
                                      verbose=0, callbacks=[TuneHook(searcher, bar)], log_to_file=False,
                                      failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
        beat.start()
        try:
            with bar.bar:
                tuner.fit()
        finally:
            interrupted = searcher.interrupt_all()
            stop.set()
            beat.join()
    return searcher, interrupted, runtime.terminated
