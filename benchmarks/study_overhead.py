"""Per-trial overhead of the study machinery against bare Ray Tune, and the tiny study's wall time.

Both runs use one local Ray runtime (started before timing) and a trivial trainable that reports
one result, so what is left is the cost of running a trial: scheduling, the actor, the searcher,
the database. Bare: Ray Tune's defaults with its stock OptunaSearch (in-memory study). Ours:
`run_study` with its searcher on an SQLite study (profile cached by a first run), reused actors,
no per-trial result files. The issue's figure for the bare path on this machine: about 2.8 s.

    python benchmarks/study_overhead.py                 # 16 trivial trials each
    python benchmarks/study_overhead.py --tiny-study    # also: tcnsearch study assoc-recall --preset tiny
    python benchmarks/study_overhead.py --memory        # peak memory of the tiny study's processes
    python benchmarks/study_overhead.py --checkpoints 3 # what checkpoints and kept weights cost a study

--checkpoints N trains the same 6-trial study of the assoc-recall tiny model (300 steps, an
evaluation every 50, no early stopping) N times with each trial checkpointed at every evaluation
and the best 3 trials' weights kept, and N times with neither, alternating (one local Ray runtime,
one database, the profile measured once before): the wall time of each, and the ratio per pair.

--memory runs `tcnsearch study assoc-recall --preset tiny` as users do (a process of its own, a
local Ray runtime) and samples its whole process tree every 0.2 s: the peak resident and
proportional (PSS: shared pages split between the processes sharing them) memory of the driver,
Ray's own processes and each trial worker, and the peak of their sum.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import yaml
from ray import tune

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def trivial(config: dict) -> None:
    tune.report({"step": 1, "loss": float(config.get("x", 0.5)), "final": True})


def bare(trials: int, storage_dir: str) -> float:
    from ray.tune.search.optuna import OptunaSearch

    tuner = tune.Tuner(trivial, param_space={"x": tune.uniform(0, 1)},
                       tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric="loss", mode="min"),
                                                   num_samples=trials, max_concurrent_trials=2),
                       run_config=tune.RunConfig(storage_path=storage_dir, name="bare", verbose=0))
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def ours(trials: int, folder: Path) -> tuple[float, float]:
    from tcnsearch.search import run_study

    study = {"task": "assoc-recall", "train": {"seq_len": 16, "vocab_size": 10, "model": {"d_model": 16}},
             "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}},
             "profile": {"kernel_sizes": [3], "dilation_factors": [2], "depths": [3], "per_block": [1],
                         "min_receptive_field": 8, "min_speedup": 0.01},
             "budget": {"trials": trials, "max_concurrent": 2}, "scheduler": {"type": "none"}}
    path = folder / "overhead.yaml"
    path.write_text(yaml.safe_dump(study))
    url = f"sqlite:///{folder / 'overhead.db'}"
    run_study(str(path), storage=url, trials=1, progress=False, trainable=trivial, study_name="warm-up")
    start = time.perf_counter()
    result = run_study(str(path), storage=url, progress=False, trainable=trivial, study_name="timed")
    wall = time.perf_counter() - start
    assert result.counts["COMPLETE"] == trials, result.counts
    return wall, result.elapsed_s


def checkpoint_cost(folder: Path, pairs: int) -> list[dict]:
    """Pairs of the same study with and without checkpoints and kept weights, alternating."""
    from tcnsearch.search import run_study

    doc = {"task": "assoc-recall", "objective": {"metric": "loss", "mode": "min"},
           "train": {"steps": 300, "eval_every": 50},
           "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}},
           "profile": {"kernel_sizes": [3, 5], "dilation_factors": [2], "depths": [3], "per_block": [1],
                       "min_receptive_field": 8, "min_speedup": 0.01},
           "budget": {"trials": 6, "max_concurrent": 2}, "scheduler": {"type": "none"}}
    url = f"sqlite:///{folder / 'checkpoints.db'}"
    runs = []
    for i in range(-1, pairs):  # -1: the profile and the data, measured before the pairs
        row = {}
        for key, every, keep in (("with", 1, 3), ("without", 0, 0)):
            path = folder / f"ckpt-{key}.yaml"
            path.write_text(yaml.safe_dump(doc | {"checkpoint_every": every, "keep_best": keep}))
            start = time.perf_counter()
            result = run_study(str(path), preset="tiny", storage=url, progress=False, study_name=f"{key}-{i}",
                               artifacts=str(folder / "artifacts"))
            row[key] = time.perf_counter() - start
            assert result.counts["COMPLETE"] == 6, result.counts
        if i >= 0:
            runs.append(row)
            print(f"pair {i + 1}: with {row['with']:.1f} s, without {row['without']:.1f} s, "
                  f"ratio {row['with'] / row['without']:.3f}", flush=True)
    return runs


def _role(proc) -> str:
    """What a process of the study's tree is: the driver, a trial worker, or one of Ray's own."""
    name, cmd = proc.name(), proc.cmdline()
    if name in ("gcs_server", "raylet"):
        return f"ray: {name}"
    script = next((a.rsplit("/", 1)[-1] for a in cmd if a.endswith(".py")), "")
    if any(a.endswith("default_worker.py") for a in cmd) or name.startswith("ray::"):
        return "Ray worker (runs the trials)"
    if any(a.endswith("/tcnsearch") for a in cmd[:2]):
        return "driver (tcnsearch study)"
    return f"ray: {script or name}"


def memory(folder: Path) -> dict:
    """Peak memory per process of a tiny study, sampled from outside (psutil)."""
    import psutil

    cli = str(Path(sys.executable).with_name("tcnsearch"))
    proc = subprocess.Popen([cli, "study", "assoc-recall", "--preset", "tiny", "--storage",
                             f"sqlite:///{folder / 'memory.db'}", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=folder)
    root = psutil.Process(proc.pid)
    peaks: dict[int, dict] = {}
    total_rss = total_pss = 0
    while proc.poll() is None:
        rss = pss = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                entry = peaks.setdefault(p.pid, {"role": _role(p), "rss": 0, "pss": 0})
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            entry["rss"], entry["pss"] = max(entry["rss"], info.rss), max(entry["pss"], info.pss)
            rss, pss = rss + info.rss, pss + info.pss
        total_rss, total_pss = max(total_rss, rss), max(total_pss, pss)
        time.sleep(0.2)
    proc.communicate()
    by_role: dict[str, list] = {}
    for e in peaks.values():
        by_role.setdefault(e["role"], []).append((e["rss"] / 2**20, e["pss"] / 2**20))
    return {"returncode": proc.returncode, "peak_total_rss_mb": total_rss / 2**20,
            "peak_total_pss_mb": total_pss / 2**20,
            "by_role": {r: {"processes": len(v), "peak_rss_mb_max": max(a for a, _ in v),
                            "peak_pss_mb_max": max(b for _, b in v)} for r, v in sorted(by_role.items())}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--tiny-study", action="store_true")
    parser.add_argument("--memory", action="store_true", help="only the tiny study's peak memory per process")
    parser.add_argument("--checkpoints", type=int, default=0, metavar="N",
                        help="only N pairs of a study with and without checkpoints and kept weights")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.checkpoints:
        with tempfile.TemporaryDirectory() as tmp:
            runs = checkpoint_cost(Path(tmp), args.checkpoints)
        ratios = sorted(r["with"] / r["without"] for r in runs)
        print(f"6 trials x 6 evaluations: with / without checkpoints and kept weights, per pair: "
              f"median {statistics.median(ratios):.3f}, range [{ratios[0]:.3f}, {ratios[-1]:.3f}]")
        return {"checkpoints": runs}
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            mem = memory(Path(tmp))
        if args.json:
            print(json.dumps(mem))
            return mem
        print(f"tcnsearch study assoc-recall --preset tiny (exit {mem['returncode']}): peak of the sum over its "
              f"processes {mem['peak_total_rss_mb']:.0f} MB resident, {mem['peak_total_pss_mb']:.0f} MB "
              "proportional (shared pages split)")
        print(f"{'process':<34}{'count':>6}{'peak RSS MB':>13}{'peak PSS MB':>13}")
        for role, r in mem["by_role"].items():
            print(f"{role:<34}{r['processes']:>6}{r['peak_rss_mb_max']:>13.0f}{r['peak_pss_mb_max']:>13.0f}")
        return mem
    report: dict = {"trials": args.trials}
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            bare(2, tmp)  # warm the workers' imports
            b = bare(args.trials, tmp)
            o, _ = ours(args.trials, Path(tmp))
        finally:
            ray.shutdown()
        report |= {"bare_s_per_trial": b / args.trials, "ours_s_per_trial": o / args.trials}
        if args.tiny_study:
            from tcnsearch.search import run_study

            start = time.perf_counter()
            res = run_study("assoc-recall", preset="tiny", storage=f"sqlite:///{tmp}/tiny.db", progress=False)
            report |= {"tiny_study_s": time.perf_counter() - start, "tiny_study_counts": res.counts,
                       "tiny_best_loss": res.best[0]["values"][0] if res.best else None}
    if args.json:
        print(json.dumps(report))
        return report
    print(f"{args.trials} trivial trials, 2 at a time, local Ray on {os.cpu_count()} cores")
    print(f"{'':<28}{'s per trial':>12}")
    print(f"{'bare Ray Tune + OptunaSearch':<28}{report['bare_s_per_trial']:>12.3f}")
    print(f"{'tcnsearch study':<28}{report['ours_s_per_trial']:>12.3f}")
    print(f"ratio bare / ours: {report['bare_s_per_trial'] / report['ours_s_per_trial']:.2f}x")
    if args.tiny_study:
        print(f"tcnsearch study assoc-recall --preset tiny: {report['tiny_study_s']:.1f} s, "
              f"{report['tiny_study_counts']}, best loss {report['tiny_best_loss']}")
    return report


if __name__ == "__main__":
    main()
