"""Per-trial overhead of the study machinery against bare Ray Tune, and the tiny study's wall time.

Both runs use one local Ray runtime (started before timing) and a trivial trainable that reports
one result, so what is left is the cost of running a trial: scheduling, the actor, the searcher,
the database. Bare: Ray Tune's defaults with its stock OptunaSearch (in-memory study). Ours:
`run_study` with its searcher on an SQLite study (profile cached by a first run), reused actors,
no per-trial result files. The issue's figure for the bare path on this machine: about 2.8 s.

    python benchmarks/study_overhead.py                 # 16 trivial trials each
    python benchmarks/study_overhead.py --tiny-study    # also: tcnsearch study assoc-recall --preset tiny
"""

from __future__ import annotations

import argparse
import json
import os
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--tiny-study", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
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
                       "tiny_best_accuracy": res.best[0]["values"][0] if res.best else None}
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
              f"{report['tiny_study_counts']}, best accuracy {report['tiny_best_accuracy']}")
    return report


if __name__ == "__main__":
    main()
