"""Big studies in PostgreSQL: how a study of 100 to 5,000 finished trials asks, reports, resumes and shows.

The studies are made the way `run_study` makes them (the profile measured once and cached in the
database, the study created with its survivors frozen), and filled with synthetic finished trials
(`study.add_trials`): plausible parameters, an objective with noise, ASHA-like learning curves
(about 40% COMPLETE, 40% stopped early, some infeasible proposals and failures) and the user
attributes a study's own trials carry. Nothing is trained, except the one trial a resumed
study starts. One fresh PostgreSQL database holds them, created and dropped here.

Per study size it measures:
- ask: `StudySearcher.suggest` as a study driver calls it (the default sampler, one other trial
  running, each asked trial told COMPLETE before the next but one), median and p95 of the steady
  asks, and the first ask (it reads the study into the storage's cache);
- report: `tcnsearch report NAME` in a process of its own (imports included), and its peak RSS;
- resume: `tcnsearch study FILE --resume` in a process of its own until its first new trial is
  asked (Ray started, the study read) and until that trial's first report (it trains), and the
  driver's peak RSS (VmHWM) meanwhile;
- dashboard: `tcnsearch dashboard`, the study page's data (/api/studies/ID) and the page in
  headless Chromium until it shows the study.

With `--before REV` every measurement runs twice, interleaved, once on the tcnsearch of git
revision REV (`git archive`, imported through PYTHONPATH) and once on the working tree, each on a
copy of the same database (`CREATE DATABASE ... TEMPLATE`): side by side, before and after.

    python benchmarks/large_study.py                          # 100, 300, 1000, 5000 trials
    python benchmarks/large_study.py --before HEAD --sizes 100,300,1000
    python benchmarks/large_study.py --sizes 1000 --only ask,report
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import psycopg
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PG_ADMIN = os.environ.get("TCNSEARCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
CHROMIUM = shutil.which("chromium")
START = dt.datetime.now() - dt.timedelta(days=1)
MEASURES = ("ask", "report", "resume", "dashboard")

# A study whose trial trains in about a second: length 16, width 16, 40 steps, an 8-structure profile grid.
STUDY = {
    "name": "large",
    "task": "assoc-recall",
    "objective": {"metric": "loss", "mode": "min"},
    "train": {"seq_len": 16, "vocab_size": 10, "train_examples": 500, "eval_examples": 100, "steps": 40,
              "eval_every": 10, "warmup_steps": 5, "batch_size": 16,
              "model": {"d_model": 16, "ffn_dim": 32, "chunk_size": 16}},
    "space": {"lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}, "model.dropout": {"choices": [0.0, 0.1]}},
    "profile": {"kernel_sizes": [3, 5], "dilation_factors": [2, 4], "depths": [2, 3], "per_block": [1],
                "min_receptive_field": 8, "min_speedup": 0.01, "max_time": 0.05, "min_pairs": 3},
    "budget": {"trials": 16, "max_concurrent": 2},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "heartbeat_s": 5,
    "keep_best": 0,
}


# -- the database and the studies -----------------------------------------------------------------

def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def database(template: str | None = None):
    """A PostgreSQL database of its own (a copy of `template` if given), dropped afterwards; yields its name."""
    name = f"tcnsearch_bench_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url_of(db: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"


def study_name(size: int) -> str:
    return f"large-{size}"


def build(url: str, study_file: Path, sizes: list[int], seed: int = 0) -> dict[int, float]:
    """Profile once, then one study per size, made as run_study makes it; seconds each took to fill."""
    import optuna

    from tcnsearch.profile import run_profile
    from tcnsearch.search import LATENCY, load_spec, open_storage
    from tcnsearch.search.dashboard import attach_profile
    from tcnsearch.search.start import distributions, prepare_study, structure_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(str(study_file))
    profile = run_profile(spec.profile_spec(), storage=url, progress=False)
    kept = profile.kept_survivors()
    grid = {"kernel_size": profile.spec.kernel_sizes, "dilation_factor": profile.spec.dilation_factors,
            "depth": profile.spec.depths, "per_block": profile.spec.per_block}
    took = {}
    for size in sizes:
        start = time.perf_counter()
        study, survivors, grid = prepare_study(
            spec, open_storage(url), study_name(size), ["minimize"], ["loss"], kept, grid, False,
            spec.sampler.build(), {"task": spec.task, "preset": spec.preset, "study_file": spec.name,
                                   "device": profile.device.device_name, "profile_level": profile.spec.level})
        attach_profile(study, profile, [s.label for s in survivors])
        space = structure_space(survivors, grid, spec)
        bulk_add(study, synthetic_trials(space, distributions(space, spec), size, random.Random(seed + size),
                                         {"device": profile.device.device_name, "level": profile.spec.level},
                                         LATENCY))
        took[size] = time.perf_counter() - start
    return took


def synthetic_trials(space, dists: dict, n: int, rng: random.Random, attrs: dict, latency_key: str) -> list:
    """`n` finished trials as a study driver leaves them: ~40% COMPLETE (4 evaluations), ~40% stopped by ASHA
    after 1-2, ~8% infeasible proposals (never trained), ~5% failed."""
    import optuna
    from optuna.trial import TrialState

    from tcnsearch.search import INFEASIBLE
    from tcnsearch.structure import Structure

    survivors = sorted(space.allowed.values(), key=lambda s: s.label)
    outside = [Structure(k, f, d, b) for k in space.axes[0].values for f in space.axes[1].values
               for d in space.axes[2].values for b in space.axes[3].values
               if Structure(k, f, d, b) not in space.allowed]
    trials = []
    for number in range(n):
        draw = rng.random()
        infeasible = draw < 0.08 and outside
        structure = rng.choice(outside) if infeasible else rng.choice(survivors).structure
        lr, dropout = math.exp(rng.uniform(math.log(1e-3), math.log(1e-2))), rng.choice([0.0, 0.1])
        params = structure.as_params() | {"lr": lr, "model.dropout": dropout}
        user = {"tcn": structure.label}
        constraints = space.constraints(structure)
        if infeasible:
            user[INFEASIBLE] = f"{structure.label}: survivor {constraints['survivor']:.3g}"
            trial = optuna.trial.create_trial(state=TrialState.PRUNED, params=params, distributions=dists,
                                              user_attrs=user, constraints=constraints)
            trial.datetime_start = trial.datetime_complete = START + dt.timedelta(seconds=30 * number)
            trials.append(trial)
            continue
        chosen = space.survivors[structure]
        final = (1.0 + 0.3 * (math.log10(lr) + 2.3) ** 2 + 0.05 * structure.depth + 0.02 * structure.kernel_size
                 + 0.1 * dropout + rng.gauss(0, 0.03))
        curve = {10 * (k + 1): final + 0.6 * math.exp(-k) + rng.gauss(0, 0.02) for k in range(4)}
        state = (TrialState.FAIL if draw > 0.95 else TrialState.PRUNED if draw > 0.53 else TrialState.COMPLETE)
        evaluations = 4 if state == TrialState.COMPLETE else rng.choice([1, 2])
        user |= chosen.trial_attrs() | attrs | {
            "num_parameters": 10000 + 100 * structure.depth, "host": "bench", "ray_node": "127.0.0.1",
            "pid": 1000 + number, "train_device": "cpu", "steps_trained": 10 * evaluations}
        if state == TrialState.FAIL:
            user["fail_reason"] = "RuntimeError: a synthetic failure"
        trial = optuna.trial.create_trial(
            state=state, params=params, distributions=dists, user_attrs=user, constraints=constraints,
            intermediate_values=dict(list(curve.items())[:evaluations]),
            values=[curve[40]] if state == TrialState.COMPLETE else None)
        # a trial every half minute from a day ago, each taking 5 s an evaluation
        trial.datetime_start = START + dt.timedelta(seconds=30 * number)
        trial.datetime_complete = trial.datetime_start + dt.timedelta(seconds=5 * evaluations)
        trials.append(trial)
        assert latency_key in user
    return trials


def bulk_add(study, trials: list) -> None:
    """`study.add_trials(trials)` in one transaction of batched INSERTs: the rows Optuna's add_trial writes
    (tests/search/test_large_studies.py checks that the study reads back the same), about a millisecond a
    trial where add_trial's 75 statements take half a second on a busy database server."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import func

    rdb = getattr(study._storage, "_backend", study._storage)  # Optuna wraps an RDBStorage in a cache
    session = rdb.scoped_session()
    try:
        models.StudyModel.find_or_raise_by_id(study._study_id, session, for_update=True)
        first = session.query(func.count(models.TrialModel.trial_id)).filter(
            models.TrialModel.study_id == study._study_id).scalar()
        for number, t in enumerate(trials, start=first):
            row = models.TrialModel(study_id=study._study_id, number=number, state=t.state,
                                    datetime_start=t.datetime_start, datetime_complete=t.datetime_complete)
            row.params = [models.TrialParamModel(param_name=name, param_value=dist.to_internal_repr(t.params[name]),
                                                 distribution_json=distribution_to_json(dist))
                          for name, dist in t.distributions.items()]
            row.values = [models.TrialValueModel(objective=i, value=stored, value_type=kind)
                          for i, (stored, kind) in enumerate(map(models.TrialValueModel.value_to_stored_repr,
                                                                 t.values or []))]
            row.user_attributes = [models.TrialUserAttributeModel(key=k, value_json=json.dumps(v))
                                   for k, v in t.user_attrs.items()]
            row.system_attributes = [models.TrialSystemAttributeModel(key=k, value_json=json.dumps(v))
                                     for k, v in t.system_attrs.items()]
            stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
            row.intermediate_values = [
                models.TrialIntermediateValueModel(step=step, intermediate_value=value, intermediate_value_type=kind)
                for step, (value, kind) in ((s, stored(v)) for s, v in t.intermediate_values.items())]
            session.add(row)
        session.commit()
    finally:
        session.close()


# -- the measurements, each in a process of its own (the tcnsearch on PYTHONPATH: before or after) -------

def measure_asks(url: str, name: str, study_file: str, asks: int) -> dict:
    """Seconds per `StudySearcher.suggest` as a driver with 2 trials at once calls it: the first (it reads the
    study), then `asks` more, each trial told COMPLETE once the next is asked."""
    import optuna

    from tcnsearch.search import LATENCY, load_spec, open_storage
    from tcnsearch.search.searcher import StudySearcher
    from tcnsearch.search.start import grid_of, structure_space
    from tcnsearch.search.trials import frozen
    from tcnsearch.storage import create_engine

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(study_file)
    start = time.perf_counter()
    rdb = open_storage(url, spec.heartbeat_s)
    probe = optuna.load_study(study_name=name, storage=rdb)
    space = structure_space(*frozen(probe), spec)
    study = optuna.load_study(study_name=name, storage=rdb, sampler=spec.sampler.build(grid_of(space, spec)))
    searcher = StudySearcher(study, spec, space, 10**6, False, LATENCY, engine=create_engine(url))
    opened = time.perf_counter() - start
    times, running, rng = [], [], random.Random(0)
    for i in range(asks + 1):
        begin = time.perf_counter()
        searcher.suggest(f"t{i}")
        times.append(time.perf_counter() - begin)
        running.append(f"t{i}")
        if len(running) == 2:
            done = running.pop(0)
            p = searcher.trials[done].params
            loss = 1.0 + 0.3 * (math.log10(p["lr"]) + 2.3) ** 2 + 0.05 * p["D"] + rng.gauss(0, 0.03)
            searcher.on_trial_complete(done, {"step": 40, "loss": loss, "final": True})
    for done in running:
        searcher.on_trial_complete(done, {"step": 40, "loss": 2.0, "final": True})
    return {"open_s": opened, "first_s": times[0], "asks_s": times[1:]}


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (VmHWM), MB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def _env(tree: str | None) -> dict:
    """The environment of a measured process: the tcnsearch of `tree` (None: the working tree's)."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    if tree:
        env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _watch(proc: subprocess.Popen, until, timeout: float) -> tuple[dict, float | None]:
    """Poll every 0.1 s until `until()` returns a dict of times (or the process ends); (that dict, peak RSS)."""
    start, peak, got = time.perf_counter(), None, {}
    while time.perf_counter() - start < timeout:
        peak = peak_rss_mb(proc.pid) or peak
        got = until(time.perf_counter() - start, got)
        if got.get("done") or proc.poll() is not None:
            break
        time.sleep(0.1)
    return got, peak


def measure_report(url: str, name: str, tree: str | None, folder: Path) -> dict:
    """`tcnsearch report NAME` in a process of its own: wall seconds (imports included) and peak RSS."""
    out = folder / f"{name}.html"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tcnsearch.cli", "report", name, "--storage", url, "--out",
                             str(out)], env=_env(tree), cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, peak = _watch(proc, lambda s, got: got, 900)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"report failed: {err.strip()[-500:]}")
    return {"report_s": time.perf_counter() - start, "report_rss_mb": peak, "report_html_mb": out.stat().st_size / 1e6}


def measure_resume(url: str, name: str, study_file: str, tree: str | None, folder: Path, timeout: float = 300) -> dict:
    """`tcnsearch study FILE --resume` for one more trial, in a process of its own: seconds from its start until
    its first new trial is asked and until that trial's first report (it trains; None: not within `timeout`), and
    the driver's peak RSS."""
    import optuna
    from sqlalchemy import create_engine, text

    from tcnsearch.search import open_storage
    from tcnsearch.search.trials import occupied

    study = optuna.load_study(study_name=name, storage=open_storage(url, read_only=True))
    trials = study.get_trials(deepcopy=False)
    target, last = occupied(trials) + 1, max(t.number for t in trials)
    engine = create_engine(url)
    asked = text("SELECT t.number, (SELECT count(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id) "
                 "FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :n AND t.number > :l")

    def until(seconds: float, got: dict) -> dict:
        with engine.connect() as conn:
            rows = conn.execute(asked, {"n": name, "l": last}).all()
        if rows and "asked_s" not in got:
            got["asked_s"] = seconds
        if any(reports for _, reports in rows) and "reported_s" not in got:
            got |= {"reported_s": seconds, "done": True}
        return got

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tcnsearch.cli", "study", study_file, "--resume", "--study-name",
                             name, "--storage", url, "--trials", str(target), "--artifacts", str(folder / "artifacts")],
                            env=_env(tree), cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got, peak = _watch(proc, until, timeout)
    engine.dispose()
    if "reported_s" not in got:  # still not training: given up on (None), stopped as Ctrl-C stops it
        _stop(proc)
        return {"asked_s": got.get("asked_s"), "reported_s": None, "driver_rss_mb": peak}
    while proc.poll() is None:  # the trial finishes, and the driver writes its summary
        peak = peak_rss_mb(proc.pid) or peak
        time.sleep(0.1)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"study --resume failed (exit {proc.returncode}): {err.strip()[-800:]}")
    return {"asked_s": got["asked_s"], "reported_s": got["reported_s"], "resume_total_s": time.perf_counter() - start,
            "driver_rss_mb": peak}


def _stop(proc: subprocess.Popen, patience_s: float = 60) -> None:
    """SIGINT (the driver fails and re-queues its trials, stops its Ray), then SIGKILL what is left of its tree."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=patience_s)
        return
    except subprocess.TimeoutExpired:
        pass
    import psutil

    tree = psutil.Process(proc.pid).children(recursive=True)
    for p in [psutil.Process(proc.pid), *tree]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_dashboard(url: str, name: str, tree: str | None, folder: Path) -> dict:
    """`tcnsearch dashboard`: seconds for the study page's data (/api/studies/ID, cold, then again after its
    10 s cache), and for headless Chromium to show the page; the server's peak RSS."""
    import optuna

    from tcnsearch.search import open_storage

    study_id = optuna.load_study(study_name=name, storage=open_storage(url, read_only=True))._study_id
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tcnsearch.cli", "dashboard", "--storage", url, "--port",
                               str(port)], env=_env(tree), cwd=folder, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start: {server.stderr.read()[-500:]}")
            time.sleep(0.2)
        api = f"http://127.0.0.1:{port}/api/studies/{study_id}?after=0"
        got = {}
        for key in ("api_cold_s", "api_again_s"):
            start = time.perf_counter()
            with urllib.request.urlopen(api, timeout=300) as answer:
                got["api_mb"] = len(answer.read()) / 1e6
            got[key] = time.perf_counter() - start
            if key == "api_cold_s":
                time.sleep(11)  # past optuna-dashboard's 10 s cache of a big study's trials: it reads them again
        if CHROMIUM:
            time.sleep(11)
            start = time.perf_counter()
            try:
                dom = subprocess.run(
                    [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=3000",
                     f"--user-data-dir={folder / 'chrome'}", "--dump-dom",
                     f"http://127.0.0.1:{port}/dashboard/studies/{study_id}"],
                    capture_output=True, text=True, timeout=300, env=dict(os.environ, HOME=str(folder))).stdout
                # Chromium dumps the page once its every request is answered (virtual time waits for them)
                got["page_s"] = time.perf_counter() - start
                got["page_shows_study"] = name in dom and "COMPLETE" in dom.upper()
            except subprocess.TimeoutExpired:
                got["page_s"] = None  # not within 300 s
        got["server_rss_mb"] = peak_rss_mb(server.pid)
        return got
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- search quality: does the subset cost the GP anything? ---------------------------------------------

def _replay_one(job: tuple) -> tuple[str, int, list[float], float]:
    """One replay of search_quality.py's "gp+asha" (the study's default: the GP, ASHA stopping trials), the GP
    fitted on everything ("full") or on the best `best` and the `recent` latest ("subset")."""
    variant, seed, trials, best, recent = job
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    import search_quality as sq

    from tcnsearch.search import Sampler
    from tcnsearch.search.samplers import StoppedAwareGP

    class Limited(Sampler):
        def build(self, grid=None, latency_key=None):
            full = variant == "full"
            return StoppedAwareGP(seed=self.seed, n_startup_trials=self.n_startup_trials,
                                  fit_best=10**9 if full else best, fit_recent=0 if full else recent)

    sq.Sampler = Limited  # the replay builds its sampler from this name
    sq.optuna.logging.set_verbosity(sq.optuna.logging.ERROR)
    doc = sq.load_table()
    found, _, decided = sq.replay("gp+asha", seed, trials, doc)
    return variant, seed, [sq.regret(doc, v) if math.isfinite(v) else 1.0 for v in found], decided / trials


def replay_quality(seeds: int, trials: int, best: int, recent: int, workers: int) -> dict:
    """Regret after 20 and 40 trials and trials to regret 0.05 (IQM over seeds, bootstrap interval), full
    against subset; pairs share their seeds."""
    from concurrent.futures import ProcessPoolExecutor

    sys.path.insert(0, str(HERE))
    from replay_report import TARGET, interval, iqm

    jobs = [(v, s, trials, best, recent) for s in range(seeds) for v in ("full", "subset")]
    curves: dict[str, list] = {"full": [], "subset": []}
    ask_s: dict[str, list] = {"full": [], "subset": []}
    with ProcessPoolExecutor(workers) as pool:
        for variant, _, curve, per_trial in pool.map(_replay_one, jobs):
            curves[variant].append(curve)
            ask_s[variant].append(per_trial)
    out = {}
    for variant, runs in curves.items():
        runs = np.array(runs)
        reach = [next((i + 1 for i, r in enumerate(c) if r <= TARGET), trials + 1) for c in runs]
        out[variant] = {f"regret@{n}": (iqm(runs[:, n - 1]), interval(runs[:, n - 1])) for n in (20, 40)
                        if n <= trials}
        out[variant] |= {"trials_to_0.05": (iqm(reach), interval(reach)),
                         "decide_s_per_trial": statistics.mean(ask_s[variant])}
    return out


# -- the run ----------------------------------------------------------------------------------------

def _worker(args: list[str]) -> None:
    """`large_study.py --worker KIND ...`: one measurement in this process, its result as JSON on the last line."""
    kind, *rest = args
    if kind == "build":
        url, study_file, sizes = rest
        result = build(url, Path(study_file), [int(s) for s in sizes.split(",")])
    else:
        import torch

        # One thread, before and after alike: the 2 cores of the machine this ran on were shared with other jobs,
        # and two threads there took 4x the wall time of one.
        torch.set_num_threads(1)
        url, name, study_file, asks = rest
        result = measure_asks(url, name, study_file, int(asks))
    print(json.dumps(result))


def _in_process(tree: str | None, *args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", *args], env=_env(tree), capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _checkout(rev: str, folder: Path) -> str:
    """The tcnsearch package of git revision `rev`, unpacked under `folder`; returns the folder to import it from."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "tcnsearch"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return str(folder)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (p95 of 20 asks: the 19th fastest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def measure(kind: str, base: str, size: int, study_file: Path, tree: str | None, folder: Path, asks: int) -> dict:
    """One measurement of `kind` on a fresh copy of the database `base`."""
    with database(template=base) as db:
        url, name = url_of(db), study_name(size)
        if kind == "ask":
            r = _in_process(tree, "ask", url, name, str(study_file), str(asks))
            return {"ask_first_s": r["first_s"], "ask_median_s": statistics.median(r["asks_s"]),
                    "ask_p95_s": percentile(r["asks_s"], 95), "ask_max_s": max(r["asks_s"]), "asks": len(r["asks_s"])}
        if kind == "report":
            return measure_report(url, name, tree, folder)
        if kind == "resume":
            return measure_resume(url, name, str(study_file), tree, folder)
        return measure_dashboard(url, name, tree, folder)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,300,1000,5000", help="finished trials of each study")
    parser.add_argument("--only", default=",".join(MEASURES), help=f"which of {', '.join(MEASURES)}")
    parser.add_argument("--asks", type=int, default=20, help="steady asks per study (after the first)")
    parser.add_argument("--asks-above-1000", type=int, default=5, help="steady asks in a study over 1,000 trials")
    parser.add_argument("--before", metavar="REV", help="also measure the tcnsearch of git revision REV, interleaved")
    parser.add_argument("--pairs", type=int, default=1, help="repeats of each measurement (each: before, then after)")
    parser.add_argument("--replay", action="store_true",
                        help="instead: search_quality.py's gp+asha replay, the GP fitted on everything against the "
                             "subset rule scaled down (--fit-best, --fit-recent) so that it acts within 40 trials")
    parser.add_argument("--seeds", type=int, default=10, help="replay seeds")
    parser.add_argument("--fit-best", type=int, default=8)
    parser.add_argument("--fit-recent", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.replay:
        report = replay_quality(args.seeds, 40, args.fit_best, args.fit_recent, workers=2)
        print(json.dumps(report) if args.json else "\n".join(
            f"{variant:<7}" + "  ".join(f"{k} {v[0]:.3f} [{v[1][0]:.2f}, {v[1][1]:.2f}]" if isinstance(v, tuple)
                                        else f"{k} {v:.2f}" for k, v in r.items()) for variant, r in report.items()))
        return report
    sizes, kinds = [int(s) for s in args.sizes.split(",")], args.only.split(",")
    results: dict = {"sizes": {}, "build_s": {}}
    with tempfile.TemporaryDirectory(prefix="large-study-") as tmp, database() as base:
        folder = Path(tmp)
        trees = {"after": None}
        if args.before:
            trees = {"before": _checkout(args.before, folder / "before"), "after": None}
        study_file = folder / "large.yaml"
        study_file.write_text(yaml.safe_dump(STUDY))
        results["build_s"] = _in_process(None, "build", url_of(base), str(study_file), ",".join(map(str, sizes)))
        for size in sizes:
            asks = args.asks if size <= 1000 else args.asks_above_1000
            row = results["sizes"][size] = {label: {} for label in trees}
            for kind in kinds:
                for _ in range(args.pairs):
                    for label, tree in trees.items():
                        run = folder / f"{label}-{size}-{kind}"
                        run.mkdir(exist_ok=True)
                        for key, value in measure(kind, base, size, study_file, tree, run, asks).items():
                            row[label].setdefault(key, []).append(value)
                        print(f"  {size} trials, {kind}, {label}: "
                              + ", ".join(f"{k} {_cell(v[-1])}" for k, v in row[label].items()), file=sys.stderr)
    print(json.dumps(results, default=str) if args.json else table(results))
    return results


def _cell(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table(results: dict) -> str:
    """Each figure per study size, before and after side by side (the median of the pairs)."""
    lines = ["filled (s): " + ", ".join(f"{n} trials {s:.0f}" for n, s in results["build_s"].items())]
    for size, row in results["sizes"].items():
        lines.append(f"{size} trials")
        keys = list(dict.fromkeys(k for measures in row.values() for k in measures))
        for key in keys:
            cells = [f"{label} {_cell(_middle(row[label].get(key, [])))}" for label in row]
            lines.append(f"  {key:<18}" + "   ".join(cells))
    return "\n".join(lines)


def _middle(values: list):
    if not values:
        return "-"
    return statistics.median(values) if all(isinstance(v, (int, float)) for v in values) else values[-1]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2:])
    else:
        main()
