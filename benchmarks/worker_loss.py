"""What a lost Ray worker costs a trial, with and without its checkpoints.

One trial of 600 steps (an evaluation every 50) is trained by `tcnsearch study` on a local Ray
runtime, as users run it (a process of its own); once it has reported step `--kill-at` (100) its
worker process is killed (SIGKILL, as a preempted machine would be). Ray Tune retries the trial: with
`checkpoint_every: 1` from its last checkpoint, with `checkpoint_every: 0` from step 0. Per run:
the steps trained by both attempts (as their reports tell; the killed attempt's steps after its
last report, at most one evaluation interval, come on top), that over the budget, whether the
trial's curve is one curve, and the driver's wall time. Runs alternate with and without, in pairs,
so the machine's drift falls on both alike.

    python benchmarks/worker_loss.py                 # 2 pairs, ~2 min on 2 cores
    python benchmarks/worker_loss.py --kill-at 400   # later: a retry from step 0 loses more
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

STEPS, EVAL_EVERY = 600, 50
STUDY = {
    "task": "assoc-recall",
    "objective": {"metric": "loss", "mode": "min"},
    "train": {"seq_len": 16, "vocab_size": 10, "train_examples": 500, "eval_examples": 100, "steps": STEPS,
              "eval_every": EVAL_EVERY, "warmup_steps": 5, "batch_size": 16,
              "model": {"d_model": 16, "ffn_dim": 32, "chunk_size": 16}},
    "space": {"lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
    "profile": {"kernel_sizes": [3], "dilation_factors": [2], "depths": [3], "per_block": [1],
                "min_receptive_field": 8, "min_speedup": 0.01, "max_time": 0.05, "min_pairs": 3},
    "budget": {"trials": 1, "max_concurrent": 1},
    "scheduler": {"type": "none"},
    "heartbeat_s": 2,
}
CLI = str(Path(sys.executable).with_name("tcnsearch"))


def _running(url: str, name: str, kill_at: int):
    try:
        trials = optuna.load_study(study_name=name, storage=url).get_trials()
    except KeyError:
        return None
    return next((t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                 and max(t.intermediate_values, default=0) >= kill_at and "pid" in t.user_attrs), None)


def run(folder: Path, url: str, name: str, checkpoint_every: int, kill_at: int) -> dict:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(STUDY | {"checkpoint_every": checkpoint_every, "keep_best": 0}))
    start = time.perf_counter()
    driver = subprocess.Popen([CLI, "study", str(path), "--storage", url, "--json"], cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    killed = None
    while driver.poll() is None:
        trial = _running(url, f"{name}-tiny", kill_at) if killed is None else None
        if trial is not None:
            killed = trial.user_attrs["pid"]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if driver.returncode != 0 or killed is None:
        raise SystemExit(f"{name}: the study failed (exit {driver.returncode}) or no worker was killed:\n"
                         f"{driver.stderr.read()[-2000:]}")
    (trial,) = optuna.load_study(study_name=f"{name}-tiny", storage=url).get_trials()
    return {"state": trial.state.name, "steps_trained": trial.user_attrs["steps_trained"],
            "resumed_from": trial.user_attrs.get("resumed_from"), "wall_s": wall,
            "one_curve": sorted(trial.intermediate_values) == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--kill-at", type=int, default=100, help="the step whose report sets the kill off")
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {"checkpoints": [], "none": []}
    with tempfile.TemporaryDirectory(prefix="worker-loss-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'runs.db'}"
        for i in range(args.pairs):
            for key, every in (("checkpoints", 1), ("none", 0)):
                r = run(folder, url, f"{key}-{i}", every, args.kill_at)
                results[key].append(r)
                print(f"pair {i + 1} {key:11s}: {r['state']}, {r['steps_trained']} steps trained "
                      f"(+<= {EVAL_EVERY} unreported), resumed from {r['resumed_from']}, one curve {r['one_curve']}, "
                      f"{r['wall_s']:.1f} s", flush=True)
    print(f"\nworker killed once it reported step {args.kill_at} of {STEPS}; steps trained over the budget, "
          "and wall time")
    for key, rows in results.items():
        ratios = [(r["steps_trained"], (r["steps_trained"] + EVAL_EVERY)) for r in rows]
        print(f"  {key:11s}: {min(a for a, _ in ratios) / STEPS:.2f}x-{max(b for _, b in ratios) / STEPS:.2f}x "
              f"the budget; wall {statistics.median(r['wall_s'] for r in rows):.1f} s median "
              f"[{min(r['wall_s'] for r in rows):.1f}, {max(r['wall_s'] for r in rows):.1f}]")
    walls = [c["wall_s"] / n["wall_s"] for c, n in zip(results["checkpoints"], results["none"], strict=True)]
    print(f"  wall time with / without checkpoints, per pair: {', '.join(f'{w:.2f}' for w in walls)}")
    return results


if __name__ == "__main__":
    main()
