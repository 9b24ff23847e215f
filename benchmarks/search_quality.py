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

For each: the normalized regret of the incumbent, the configuration whose full run reported the
best final bpc so far, scored by its seed-averaged final bpc (0 = the table's best configuration,
1 = its median configuration), after 10, 20 and 40 trials, as an interquartile mean over the seeds with a bootstrap
95% interval, and the trials each needs to reach regret <= 0.05, side by side; a plotly figure
of regret against trials goes to benchmarks/results/search_quality.html.

    python benchmarks/search_quality.py              # 100 seeds x 150 trials (GP: x 40), ~30 min on 2 cores
    python benchmarks/search_quality.py --seeds 30 --methods random,tpe
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import math
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy import stats

from tcnsearch.profile import Survivor
from tcnsearch.search import Proposer, Sampler, StructureSpace
from tcnsearch.structure import Structure

HERE = Path(__file__).resolve().parent
TABLE = HERE / "data" / "tabular-lm.json.gz"
CHECKPOINTS = (10, 20, 40)
TARGET = 0.05  # regret counted as "found"
WORKERS = 2
METHODS = ("random", "tpe-categorical", "ray-optunasearch+asha", "tpe", "tpe+asha", "nsga2", "gp", "gp+asha")


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


def replay(method: str, seed: int, trials: int, doc: dict) -> list[float]:
    """After each finished trial (in finishing order), what the incumbent is worth: the seed-averaged
    final bpc of the configuration whose full run reported the best final bpc so far."""
    rng = random.Random(seed)
    survivors = {}
    for (tcn, _), rows in doc["runs"].items():
        if not all((tcn, lr) in doc["runs"] for lr in doc["lrs"]):
            continue  # a table still being built: only structures with every learning rate
        r = rows[0]
        speedup = r.get("speedup", 1.0)
        survivors[tcn] = Survivor(Structure(r["K"], r["f"], r["D"], r["B"]), r["latency_ms"], speedup,
                                  (speedup, speedup), speedup, (speedup, speedup))
    grid = {k: doc["grid"][k] for k in ("kernel_size", "dilation_factor", "depth", "per_block")}
    space = StructureSpace(grid, list(survivors.values()))
    base = method.removesuffix("+asha")
    structured = base in ("tpe", "gp", "nsga2", "random")
    if base in ("tpe", "gp", "nsga2"):
        sampler = Sampler(type=base, seed=seed).build()  # as a study builds it
    elif method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:  # tcnsearch 0.2, and Ray's OptunaSearch: Optuna's default TPE over categorical labels
        sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    proposer = Proposer(study, space)
    labels = sorted(survivors)
    n_evals = len(next(iter(doc["runs"].values()))[0]["curve"])
    asha = Asha(n_evals) if method.endswith("+asha") else None

    def ask():
        if structured:
            trial, s, values = proposer.ask(lambda t: {"lr": t.suggest_categorical("lr", doc["lrs"])})
            return trial, s.label, values["lr"]
        trial = study.ask()
        lr = trial.suggest_categorical("lr", doc["lrs"])
        return trial, trial.suggest_categorical("tcn", labels), lr

    # Events on the simulated clock: (time, sequence, trial, run, k) = the run's k-th evaluation
    # is due; each run's evaluations are evenly spread over its measured training time.
    events, seq, best, found = [], 0, (math.inf, math.inf), []  # best: (reported bpc, the config's worth)

    def start(now: float) -> None:
        nonlocal seq
        trial, tcn, lr = ask()
        run = rng.choice(doc["runs"][(tcn, lr)]) | {"worth": doc["worth"][(tcn, lr)]}
        seq += 1
        heapq.heappush(events, (now + run["train_s"] / n_evals, seq, trial, run, 1))

    for _ in range(WORKERS):  # both workers start at once: the second ask sees the first as running
        start(0.0)
    while len(found) < trials:
        now, _, trial, run, k = heapq.heappop(events)
        step, value = run["curve"][k - 1]
        trial.report(value, step)
        if k < n_evals and not (asha is not None and asha.stops(trial.number, k, value)):
            seq += 1
            heapq.heappush(events, (now + run["train_s"] / n_evals, seq, trial, run, k + 1))
            continue
        if k == n_evals:
            study.tell(trial, run["bpc"])
            best = min(best, (run["bpc"], run["worth"]))  # the incumbent: the best final bpc a full run reported
        elif method == "ray-optunasearch+asha":
            study.tell(trial, value)  # Ray's OptunaSearch: COMPLETE with the partial value
        else:
            study.tell(trial, state=TrialState.PRUNED)
        found.append(best[1])
        start(now)
    return found


def iqm(x, axis=None):
    """Interquartile mean: the mean of the middle half (robust to a few seeds that never get there)."""
    value = stats.trim_mean(np.asarray(x, dtype=float), 0.25, axis=0 if axis is None else axis)
    return float(value) if axis is None else value


def interval(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    result = stats.bootstrap((x,), lambda s, axis: iqm(s, axis=axis), confidence_level=0.95, n_resamples=2000,
                             method="percentile", vectorized=True, random_state=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _one(args):
    method, seed, trials, path = args
    import torch

    torch.set_num_threads(1)  # one replay per process: GP's torch threads would only fight each other
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    doc = load_table(Path(path))
    t0 = time.perf_counter()
    found = replay(method, seed, trials, doc)
    return method, seed, [regret(doc, v) if math.isfinite(v) else 1.0 for v in found], time.perf_counter() - t0


def ratio_interval(slow, fast) -> tuple[float, float]:
    """Bootstrap 95% interval of IQM(slow) / IQM(fast): how many times fewer trials `fast` needs."""
    rng = np.random.default_rng(0)
    slow, fast = np.asarray(slow, dtype=float), np.asarray(fast, dtype=float)
    ratios = [iqm(rng.choice(slow, len(slow))) / iqm(rng.choice(fast, len(fast))) for _ in range(2000)]
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


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
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workers", type=int, default=2, help="processes replaying at once")
    parser.add_argument("--out", default=str(HERE / "results" / "search_quality.html"), help="the plotly figure")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    doc = load_table(Path(args.table))
    gp_plan = (args.gp_seeds or args.seeds, args.gp_trials)
    plan = {m: gp_plan if m.startswith("gp") else (args.seeds, args.trials) for m in methods}
    jobs = [(m, s, trials, args.table) for m, (seeds, trials) in plan.items() for s in range(seeds)]
    jobs.sort(key=lambda job: not job[0].startswith("gp"))  # the slow ones first, so both workers stay busy
    curves: dict[str, list[list[float]]] = {m: [] for m in methods}
    seconds = {m: 0.0 for m in methods}
    with ProcessPoolExecutor(args.workers) as pool:
        for method, _, curve, took in pool.map(_one, jobs):
            curves[method].append(curve)
            seconds[method] += took
    report = {"table": {"runs": len(doc["rows"]), "configs": len(doc["worth"]), "structures": doc["structures"],
                        "best_bpc": doc["best"], "median_bpc": doc["median"], "device": doc["device"],
                        "seed_sd_bpc": seed_noise(doc), "target_bpc": TARGET * (doc["median"] - doc["best"])},
              "methods": {}}
    reaches = {}
    for m in methods:
        seeds, trials = plan[m]
        runs = np.array(curves[m])  # (seeds, trials)
        at = {n: (iqm(runs[:, n - 1]), interval(runs[:, n - 1])) for n in CHECKPOINTS if n <= trials}
        reach = [next((i + 1 for i, r in enumerate(c) if r <= TARGET), math.inf) for c in runs]
        reaches[m] = [r if math.isfinite(r) else trials + 1 for r in reach]  # not reached: counted as trials+1
        report["methods"][m] = {"seeds": seeds, "trials": trials,
                                "regret": {n: {"iqm": v, "ci": ci} for n, (v, ci) in at.items()},
                                "trials_to_target": {"iqm": iqm(reaches[m]), "ci": interval(reaches[m]),
                                                     "reached": sum(math.isfinite(r) for r in reach)},
                                "curve_iqm": [iqm(runs[:, i]) for i in range(trials)],
                                "curve_ci": [interval(runs[:, i]) for i in range(trials)],
                                "seconds_per_seed": seconds[m] / seeds}
        if "random" in reaches:
            report["methods"][m]["vs_random"] = {"ratio": iqm(reaches["random"]) / iqm(reaches[m]),
                                                 "ci": ratio_interval(reaches["random"], reaches[m])}
    _figure(report, Path(args.out))
    if args.json:
        print(json.dumps(report, default=str))
    else:
        _print(report)
    return report


def seed_noise(doc: dict) -> float:
    """The standard deviation of one run's final bpc around its configuration's mean (pooled over seeds)."""
    pairs = [[r["bpc"] for r in rows] for rows in doc["runs"].values() if len(rows) > 1]
    return float(np.sqrt(np.mean([np.var(p, ddof=1) for p in pairs]))) if pairs else 0.0


def _print(report: dict) -> None:
    t = report["table"]
    print(f"table: {t['runs']} runs, {t['configs']} configurations of {t['structures']} structures x lr on "
          f"{t['device']}; best configuration {t['best_bpc']:.4f} bpc, median {t['median_bpc']:.4f}; regret 0.05 "
          f"is {t['target_bpc']:.4f} bpc, one run's seed noise {t['seed_sd_bpc']:.4f} bpc (sd); 2 workers")
    head = "".join(f"{f'regret@{n}':>22}" for n in CHECKPOINTS) + f"{'trials to <=0.05':>20}{'vs random':>18}"
    print(f"{'method':<24}{'seeds x trials':>15}{head}")
    for m, r in report["methods"].items():
        cells = "".join(f"{r['regret'][n]['iqm']:>8.3f} [{r['regret'][n]['ci'][0]:.2f},{r['regret'][n]['ci'][1]:.2f}]"
                        .rjust(22) for n in CHECKPOINTS if n in r["regret"])
        reach = r["trials_to_target"]
        got = f"{reach['iqm']:.1f} [{reach['ci'][0]:.0f},{reach['ci'][1]:.0f}] {reach['reached']}/{r['seeds']}"
        cells += got.rjust(20)
        if "vs_random" in r:
            v = r["vs_random"]
            cells += f"{v['ratio']:.1f}x [{v['ci'][0]:.1f},{v['ci'][1]:.1f}]".rjust(18)
        plan = f"{r['seeds']} x {r['trials']}"
        print(f"{m:<24}{plan:>15}{cells}")
    print("regret: interquartile mean over seeds [bootstrap 95% interval]; trials to <= 0.05: IQM [interval], "
          "seeds that never got there counted as trials+1, then the seeds that got there; vs random: random's "
          "IQM over this one's [bootstrap interval]")


def _figure(report: dict, path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for m, r in report["methods"].items():
        x = list(range(1, r["trials"] + 1))
        lo, hi = zip(*r["curve_ci"], strict=True)
        fig.add_scatter(x=x + x[::-1], y=list(hi) + list(lo)[::-1], fill="toself", opacity=0.15, line={"width": 0},
                        showlegend=False, hoverinfo="skip", name=m)
        fig.add_scatter(x=x, y=r["curve_iqm"], mode="lines", name=m)
    fig.add_hline(y=TARGET, line_dash="dash", annotation_text="regret 0.05")
    fig.update_layout(title="Normalized regret against trials (IQM over the seeds, 95% interval), "
                            "replayed on real TCNCA runs", xaxis_title="finished trials",
                      yaxis_title="normalized regret (0 best, 1 median)", yaxis_type="log")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path)


if __name__ == "__main__":
    main()
