"""How fast does each search find a good TCNCA? Replayed over a table of real training runs.

benchmarks/data/tabular-lm.json.gz (built by build_tabular.py) holds real TCNCA runs: every
surviving TCN structure x 3 learning rates x 2 seeds, each with its learning curve, final bits per
character, training time and profiled latency. A replay asks a search for a configuration
(structure, learning rate), looks the run up (one of its two seeds, at random: the noise a real
search sees) instead of training, and tells the search what the run reported, on a simulated
clock with 2 workers, as a study runs them. No training happens, so each method runs with many
seeds in seconds (Syne Tune's tabular-benchmark replay, in miniature).

Methods:
- random:           uniform over the survivors and learning rates (what every search must beat)
- tpe-categorical:  tcnsearch 0.2: Optuna's TPE over one categorical `tcn` label and the lr
- tpe / nsga2 / gp: the samplers on K, f, D, B as ordered integers (tcnsearch's Proposer, the
  same code a study runs), infeasible proposals told as such
- ray-optunasearch+asha: Ray Tune's stock OptunaSearch (TPE over a categorical label and the lr)
  with ASHA, as users set it up: an ASHA-stopped trial is told COMPLETE with its partial value
- tpe+asha, gp+asha: the structured samplers with ASHA, stopped trials told PRUNED (what a study
  does; TPE learns from them, Optuna's GP fits finished trials only)
- optuna-tpe, optuna-gp: Optuna's stock TPESampler and GPSampler, their defaults, on the same space
  through the same Proposer (what the product's settings add, by difference)
- hebo, smac, smac-hyperband: the peers, each by its own ask/tell API on the same space
  (replay_peers.py; they need their own venv: `make bench-peers`, skipped with a note elsewhere)

For each: the normalized regret of the incumbent, the configuration whose full run reported the
best final bpc so far, scored by its seed-averaged final bpc (0 = the table's best configuration,
1 = its median configuration), after 10, 20 and 40 trials, as an interquartile mean over the seeds with a bootstrap
95% interval, and the trials each needs to reach regret <= 0.05, side by side; the same on the
simulated wall-clock, where each method's own decision time is charged too (regret at the seconds
10, 20 and 40 average runs take, seconds to regret <= 0.05, and the ratio to random search's); a
plotly figure of regret against trials and against seconds goes to benchmarks/results/search_quality.html.
Statistics, tables and figure: replay_report.py.

    python benchmarks/search_quality.py              # 100 seeds x 150 trials (GP: x 40), ~30 min on 2 cores
    python benchmarks/search_quality.py --seeds 30 --methods random,tpe
    make bench-peers                                 # with HEBO and SMAC3, in .venv-peers
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import math
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from tcnsearch.profile import Survivor
from tcnsearch.search import Proposer, Sampler, StructureSpace
from tcnsearch.structure import Structure

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import replay_peers  # noqa: E402
from replay_report import (  # noqa: E402
    CHECKPOINTS,
    TARGET,
    interval,
    iqm,
    print_report,
    ratio_interval,
    regret_at,
    write_figure,
)

TABLE = HERE / "data" / "tabular-lm.json.gz"
WORKERS = 2
METHODS = ("random", "tpe-categorical", "ray-optunasearch+asha", "tpe", "tpe+asha", "nsga2", "gp", "gp+asha",
           "optuna-tpe", "optuna-gp", *replay_peers.PEERS)
SLOW = ("gp", "gp+asha", "optuna-gp")  # a GP fit per ask: fewer trials (--gp-trials); the peers: --peer-*


def load_table(path: Path = TABLE) -> dict:
    with gzip.open(path, "rt") as fh:
        doc = json.load(fh)
    runs: dict[tuple, list[dict]] = {}
    for row in doc["rows"]:
        s = {"kernel_size": row["K"], "dilation_factor": row["f"], "depth": row["D"], "per_block": row["B"]}
        runs.setdefault((Structure.of(s).label, row["lr"]), []).append(row)
    # A configuration's worth is its final bpc averaged over its seeds: a search picks its incumbent
    # by what one run reported (seed noise included), and is scored by what that configuration is worth.
    worth = {key: statistics.mean(r["bpc"] for r in rows) for key, rows in runs.items()}
    doc |= {"runs": runs, "worth": worth, "best": min(worth.values()), "median": statistics.median(worth.values()),
            "lrs": sorted({r["lr"] for r in doc["rows"]})}
    return doc


def regret(doc: dict, value: float) -> float:
    return max(0.0, (value - doc["best"]) / (doc["median"] - doc["best"]))


class Asha:
    """Ray Tune's asynchronous successive halving (AsyncHyperBandScheduler, one bracket), its rule
    reimplemented for the simulated clock: at each rung (grace_period x rf^k evaluations) a trial
    whose value is worse than the (1 - 1/rf) quantile of those recorded there before it stops."""

    def __init__(self, max_t: int, grace_period: int = 2, rf: float = 2):
        self.rungs = []
        t = grace_period
        while t < max_t:
            self.rungs.append((t, {}))
            t = int(t * rf)
        self.rungs.reverse()
        self.rf = rf

    def stops(self, trial: int, evaluations: int, value: float) -> bool:
        for milestone, recorded in self.rungs:
            if evaluations >= milestone and trial not in recorded:
                reward = -value  # bpc: lower is better
                cutoff = np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100) if recorded else None
                recorded[trial] = reward
                return cutoff is not None and reward < cutoff
        return False


def survivor_space(doc: dict) -> StructureSpace:
    """The table's structures as a study sees them: the grid's axes and the survivors that may be trained."""
    survivors = {}
    for (tcn, _), rows in doc["runs"].items():
        if not all((tcn, lr) in doc["runs"] for lr in doc["lrs"]):
            continue  # a table still being built: only structures with every learning rate
        r = rows[0]
        speedup = r.get("speedup", 1.0)
        survivors[tcn] = Survivor(Structure(r["K"], r["f"], r["D"], r["B"]), r["latency_ms"], speedup,
                                  (speedup, speedup), speedup, (speedup, speedup))
    grid = {k: doc["grid"][k] for k in ("kernel_size", "dilation_factor", "depth", "per_block")}
    return StructureSpace(grid, list(survivors.values()))


class OptunaSearch:
    """The Optuna-driven methods: ask a trial (through the Proposer for the structured ones), report
    each evaluation (ASHA may stop it there), tell how it ended."""

    def __init__(self, method: str, seed: int, doc: dict, space: StructureSpace, n_evals: int):
        base = method.removesuffix("+asha")
        self.structured = base in ("tpe", "gp", "nsga2", "random", "optuna-tpe", "optuna-gp")
        if base in ("tpe", "gp", "nsga2"):
            sampler = Sampler(type=base, seed=seed).build()  # as a study builds it
        elif base == "optuna-gp":
            sampler = optuna.samplers.GPSampler(seed=seed)  # Optuna's stock samplers, their defaults
        elif method == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        else:  # optuna-tpe; tcnsearch 0.2 and Ray's OptunaSearch: Optuna's default TPE over categorical labels
            sampler = optuna.samplers.TPESampler(seed=seed)
        self.method, self.lrs = method, doc["lrs"]
        self.study = optuna.create_study(sampler=sampler, direction="minimize")
        self.proposer = Proposer(self.study, space)
        self.labels = sorted(s.label for s in space.allowed.values())
        self.asha = Asha(n_evals) if method.endswith("+asha") else None

    def ask(self):
        if self.structured:
            trial, s, values = self.proposer.ask(lambda t: {"lr": t.suggest_categorical("lr", self.lrs)})
            return trial, s.label, values["lr"], None
        trial = self.study.ask()
        lr = trial.suggest_categorical("lr", self.lrs)
        return trial, trial.suggest_categorical("tcn", self.labels), lr, None

    def report(self, trial, value: float, step: int, k: int, may_stop: bool) -> bool:
        trial.report(value, step)
        return may_stop and self.asha is not None and self.asha.stops(trial.number, k, value)

    def tell(self, trial, value: float, evaluations: int, complete: bool) -> None:
        if complete:
            self.study.tell(trial, value)
        elif self.method == "ray-optunasearch+asha":
            self.study.tell(trial, value)  # Ray's OptunaSearch: COMPLETE with the partial value
        else:
            self.study.tell(trial, state=TrialState.PRUNED)


def replay(method: str, seed: int, trials: int, doc: dict) -> tuple[list[float], list[float], float]:
    """After each finished trial (in finishing order), what the incumbent is worth: the seed-averaged
    final bpc of the configuration whose full run reported the best final bpc so far; and when on
    the simulated clock that trial finished; and the seconds the method spent deciding, in all.

    The clock charges each run's measured training time and the method's own decision time (every
    ask, report and tell, its CPU time measured), as Syne Tune's simulator does: the searcher decides one thing
    at a time, so a decision waits for the one before it, and a worker waits for its decision."""
    rng = random.Random(seed)
    space = survivor_space(doc)
    n_evals = len(next(iter(doc["runs"].values()))[0]["curve"])
    if method in replay_peers.PEERS:
        search = replay_peers.make(method, space, doc["lrs"], seed, trials, n_evals)
    else:
        search = OptunaSearch(method, seed, doc, space, n_evals)

    # Events on the simulated clock: (time, sequence, handle, run, k, last) = the run's k-th evaluation
    # is due, the run ends at its `last`; each run's evaluations are evenly spread over its training time.
    events, seq, best, found, clock = [], 0, (math.inf, math.inf), [], []  # best: (reported bpc, its worth)
    free_at, decided = 0.0, 0.0  # when the searcher is done with its last decision; its seconds in all

    def decide(now: float, call, *args):
        # CPU seconds, not wall: on a shared machine they are what the decision takes on a core of its own
        nonlocal free_at, decided
        t0 = time.process_time()
        result = call(*args)
        took = time.process_time() - t0
        free_at, decided = max(now, free_at) + took, decided + took
        return result, free_at

    def push(at: float, handle, run: dict, k: int, last: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at + run["train_s"] / n_evals, seq, handle, run, k, last))

    def start(now: float) -> None:
        (handle, tcn, lr, budget), now = decide(now, search.ask)
        run = rng.choice(doc["runs"][(tcn, lr)]) | {"worth": doc["worth"][(tcn, lr)]}
        push(now, handle, run, 1, budget or n_evals)

    for _ in range(WORKERS):  # both workers start at once: the second ask sees the first as running
        start(0.0)
    while len(found) < trials:
        now, _, handle, run, k, last = heapq.heappop(events)
        step, value = run["curve"][k - 1]
        stop, now = decide(now, search.report, handle, value, step, k, k < last)
        if k < last and not stop:
            push(now, handle, run, k + 1, last)
            continue
        complete = k == n_evals
        if complete:
            best = min(best, (run["bpc"], run["worth"]))  # the incumbent: the best final bpc a full run reported
        _, now = decide(now, search.tell, handle, run["bpc"] if complete else value, k, complete or k == last)
        found.append(best[1])
        clock.append(now)
        start(now)
    return found, clock, decided


def _one(args):
    method, seed, trials, path = args
    import torch

    torch.set_num_threads(1)  # one replay per process: GP's torch threads would only fight each other
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    doc = load_table(Path(path))
    t0 = time.perf_counter()
    found, clock, decided = replay(method, seed, trials, doc)
    curve = [regret(doc, v) if math.isfinite(v) else 1.0 for v in found]
    return method, seed, curve, clock, decided, time.perf_counter() - t0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--trials", type=int, default=150,
                        help="trials per replay: long enough that nearly every random seed reaches regret 0.05, "
                             "so that the slow methods' counts are not cut short")
    parser.add_argument("--gp-seeds", type=int, help="seeds of the GP methods (default: --seeds)")
    parser.add_argument("--gp-trials", type=int, default=40,
                        help="trials per GP replay: its asks take up to a second each, and it gets there in ~10")
    parser.add_argument("--peer-seeds", type=int, help="seeds of HEBO and SMAC3 (default: --gp-seeds)")
    parser.add_argument("--peer-trials", type=int, default=40,
                        help="trials per HEBO/SMAC3 replay (SMAC sizes its initial design from it)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workers", type=int, default=2, help="processes replaying at once")
    parser.add_argument("--out", default=str(HERE / "results" / "search_quality.html"), help="the plotly figure")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    methods = []
    for m in args.methods.split(","):
        why = replay_peers.missing(m)
        if why:
            print(f"skipped {why}", file=sys.stderr)
        else:
            methods.append(m)
    doc = load_table(Path(args.table))
    gp_seeds = args.gp_seeds or args.seeds
    peer_plan = (args.peer_seeds or gp_seeds, args.peer_trials)
    plan = {m: (gp_seeds, args.gp_trials) if m in SLOW else peer_plan if m in replay_peers.PEERS
            else (args.seeds, args.trials) for m in methods}
    jobs = [(m, s, trials, args.table) for m, (seeds, trials) in plan.items() for s in range(seeds)]
    slow = (*SLOW, *replay_peers.PEERS)
    jobs.sort(key=lambda job: job[0] not in slow)  # the slow ones first, so both workers stay busy
    curves: dict[str, list[list[float]]] = {m: [] for m in methods}
    clocks: dict[str, list[list[float]]] = {m: [] for m in methods}
    seconds = {m: 0.0 for m in methods}
    deciding = {m: 0.0 for m in methods}
    with ProcessPoolExecutor(args.workers) as pool:
        for method, _, curve, clock, decided, took in pool.map(_one, jobs):
            curves[method].append(curve)
            clocks[method].append(clock)
            seconds[method] += took
            deciding[method] += decided
    # the wall-clock checkpoints: the simulated seconds 10, 20 and 40 average runs take on the 2 workers
    mean_train = statistics.mean(r["train_s"] for r in doc["rows"])
    moments = {n: n * mean_train / WORKERS for n in CHECKPOINTS}
    report = {"table": {"runs": len(doc["rows"]), "configs": len(doc["worth"]), "structures": doc["structures"],
                        "best_bpc": doc["best"], "median_bpc": doc["median"], "device": doc["device"],
                        "seed_sd_bpc": seed_noise(doc), "target_bpc": TARGET * (doc["median"] - doc["best"]),
                        "moments_s": moments, "clock_grid_s": list(np.linspace(0, 2 * moments[CHECKPOINTS[-1]], 81))},
              "methods": {}}
    reaches, waits = {}, {}
    for m in methods:
        seeds, trials = plan[m]
        runs, times = np.array(curves[m]), np.array(clocks[m])  # (seeds, trials) each
        at = {n: (iqm(runs[:, n - 1]), interval(runs[:, n - 1])) for n in CHECKPOINTS if n <= trials}
        reach = [next((i + 1 for i, r in enumerate(c) if r <= TARGET), math.inf) for c in runs]
        reaches[m] = [r if math.isfinite(r) else trials + 1 for r in reach]  # not reached: counted as trials+1
        # on the clock: the seconds until regret <= 0.05 (not reached: the replay's end, a lower bound)
        waits[m] = [t[r - 1] if math.isfinite(r) else t[-1] for r, t in zip(reach, times, strict=True)]
        by_clock = {n: regret_at(runs, times, when) for n, when in moments.items()}
        report["methods"][m] = {"seeds": seeds, "trials": trials,
                                "regret": {n: {"iqm": v, "ci": ci} for n, (v, ci) in at.items()},
                                "trials_to_target": {"iqm": iqm(reaches[m]), "ci": interval(reaches[m]),
                                                     "reached": sum(math.isfinite(r) for r in reach)},
                                "clock": {"regret": {n: {"iqm": iqm(v), "ci": interval(v)}
                                                     for n, v in by_clock.items()},
                                          "seconds_to_target": {"iqm": iqm(waits[m]), "ci": interval(waits[m])},
                                          "decision_s_per_trial": deciding[m] / (seeds * trials),
                                          "curve_iqm": [iqm(regret_at(runs, times, when))
                                                        for when in report["table"]["clock_grid_s"]]},
                                "curve_iqm": [iqm(runs[:, i]) for i in range(trials)],
                                "curve_ci": [interval(runs[:, i]) for i in range(trials)],
                                "seconds_per_seed": seconds[m] / seeds}
        if "random" in reaches:
            report["methods"][m]["vs_random"] = {"ratio": iqm(reaches["random"]) / iqm(reaches[m]),
                                                 "ci": ratio_interval(reaches["random"], reaches[m])}
            report["methods"][m]["clock"]["vs_random"] = {"ratio": iqm(waits["random"]) / iqm(waits[m]),
                                                          "ci": ratio_interval(waits["random"], waits[m])}
    write_figure(report, Path(args.out))
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print_report(report)
    return report


def seed_noise(doc: dict) -> float:
    """The standard deviation of one run's final bpc around its configuration's mean (pooled over seeds)."""
    pairs = [[r["bpc"] for r in rows] for rows in doc["runs"].values() if len(rows) > 1]
    return float(np.sqrt(np.mean([np.var(p, ddof=1) for p in pairs]))) if pairs else 0.0


if __name__ == "__main__":
    main()
