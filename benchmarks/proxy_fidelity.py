"""Does what wins at the cheap scale still win at the larger one? Two views of the proxy's fidelity.

(a) Early evaluations (no training: benchmarks/data/tabular-lm.json.gz). Every configuration
    (TCN structure x learning rate) was trained twice, with seeds 0 and 1, to the end. At each
    evaluation step: Kendall's tau between one seed's bits per character at that step and the
    *other* seed's final bpc, over the configurations (both pairings, averaged), with a bootstrap
    95% interval over the configurations; and the regret of the configuration that step would pick
    (its seed-averaged final bpc less the best one's). At the last step the figure is the seed-noise
    ceiling: how well one full run predicts another of the same configuration.

(b) A real promotion (trains; about 20 minutes on 2 cores). A `tiny` study of 16 trials on the
    offline byte corpus (the standard library's sources), then `tcnsearch promote` of its top 5 to
    the `cpu` preset (4x the width, 2x the depth, 4x the chunk) for `--steps` steps: Kendall's tau
    between the two rankings with its bootstrap interval, and the regret of the proxy's pick.

    python benchmarks/proxy_fidelity.py                # (a) and (b)
    python benchmarks/proxy_fidelity.py --skip-real    # (a) only, seconds
    python benchmarks/proxy_fidelity.py --steps 600    # (b) with longer promoted runs

Figures: benchmarks/results/proxy_fidelity.html (tau against the evaluation step; proxy against
promoted bpc); the numbers: benchmarks/results/proxy_fidelity.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import kendalltau

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from attention_ablation import stdlib_corpus  # noqa: E402

TABLE = HERE / "data" / "tabular-lm.json.gz"
RESULTS = HERE / "results"

# (b)'s study: the tabular benchmark's training run and grid (kernel 9 and B 2 left out, for time),
# profiled at op level, TPE over the survivors and the learning rate, every trial trained to the end.
STUDY = {
    "name": "proxy-fidelity", "task": "enwik8", "objective": {"metric": "bpc", "mode": "min"},
    "sampler": {"type": "tpe", "seed": 0},
    "space": {"lr": {"low": 2e-3, "high": 1.2e-2, "log": True}},
    "profile": {"kernel_sizes": [3, 5, 7], "dilation_factors": [2, 4], "depths": [2, 3, 4], "per_block": [1],
                "lengths": [256], "level": "op", "min_receptive_field": 8, "min_speedup": 0.5, "undecided": "keep"},
    "budget": {"trials": 16, "max_concurrent": 2, "cpus_per_trial": 1},
    "scheduler": {"type": "none"},
    "train": {"steps": 240, "eval_every": 30, "warmup_steps": 20, "max_eval_windows": 8},
}


def _bootstrap_tau(pairs: list[tuple[np.ndarray, np.ndarray]], resamples: int, rng) -> tuple[float, float]:
    """A 95% interval of the mean tau over `pairs` (x, y), resampling the configurations (the same
    resample for every pair)."""
    n = len(pairs[0][0])
    taus = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        taus.append(np.mean([kendalltau(x[idx], y[idx]).statistic for x, y in pairs]))
    return float(np.nanpercentile(taus, 2.5)), float(np.nanpercentile(taus, 97.5))


def early_evaluations(resamples: int = 1000, seed: int = 0, table: Path = TABLE) -> dict:
    """(a): per evaluation step, tau against the other seed's final bpc and the regret of that step's pick."""
    with gzip.open(table, "rt") as fh:
        doc = json.load(fh)
    runs: dict[tuple, dict[int, dict]] = {}
    for row in doc["rows"]:
        runs.setdefault((row["K"], row["f"], row["D"], row["B"], row["lr"]), {})[row["seed"]] = row
    configs = [c for c, by_seed in runs.items() if {0, 1} <= set(by_seed)]
    steps = [step for step, _ in runs[configs[0]][0]["curve"]]
    curve = {s: np.array([[dict(runs[c][s]["curve"])[step] for step in steps] for c in configs]) for s in (0, 1)}
    final = {s: np.array([runs[c][s]["bpc"] for c in configs]) for s in (0, 1)}
    final_mean = (final[0] + final[1]) / 2
    rng = np.random.default_rng(seed)
    rows = []
    for i, step in enumerate(steps):
        pairs = [(curve[0][:, i], final[1]), (curve[1][:, i], final[0])]
        tau = float(np.mean([kendalltau(x, y).statistic for x, y in pairs]))
        picks = [int(np.argmin(curve[s][:, i])) for s in (0, 1)]
        regret = float(np.mean([final_mean[p] for p in picks]) - final_mean.min())
        rows.append({"step": step, "tau": tau, "tau_ci": _bootstrap_tau(pairs, resamples, rng), "regret_bpc": regret})
    return {"configurations": len(configs), "steps": steps, "device": doc["device"], "rows": rows,
            "final_bpc_range": [float(final_mean.min()), float(np.median(final_mean))]}


def real_promotion(steps: int, top: int, storage: str) -> dict:
    """(b): the tiny study (resumed if stored) and the promotion of its top `top` to the cpu preset."""
    from tcnsearch.search import run_study
    from tcnsearch.search.promote import promote

    RESULTS.mkdir(exist_ok=True)
    corpus = RESULTS / "stdlib-2mb.txt"
    if not corpus.exists():
        stdlib_corpus(corpus, 2_000_000)
    path = RESULTS / "proxy-fidelity.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    study = run_study(str(path), preset="tiny", storage=storage, resume=True, data_path=str(corpus))
    print(f"study {study.study_name}: {study.counts}; {study.elapsed_s:.0f} s")
    result = promote(study.study_name, top=top, preset="cpu", steps=steps, storage=storage)
    return result.to_json()


def _figure(early: dict, real: dict | None, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"(a) tau against the other seed's final bpc ({early['configurations']} configurations)",
        "(b) proxy (tiny) against promoted (cpu) bpc"))
    x = early["steps"]
    lo = [r["tau_ci"][0] for r in early["rows"]]
    hi = [r["tau_ci"][1] for r in early["rows"]]
    fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", line={"width": 0},
                             fillcolor="rgba(31,119,180,0.2)", name="95% interval"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=[r["tau"] for r in early["rows"]], mode="lines+markers", name="Kendall's tau"),
                  1, 1)
    if real:
        fig.add_trace(go.Scatter(x=[p["proxy_value"] for p in real["pairs"]],
                                 y=[p["promoted_value"] for p in real["pairs"]], mode="markers+text",
                                 text=[p["tcn"] for p in real["pairs"]], textposition="top center",
                                 name="promoted trials"), 1, 2)
    fig.update_xaxes(title_text="evaluation step", row=1, col=1)
    fig.update_yaxes(title_text="Kendall's tau", row=1, col=1)
    fig.update_xaxes(title_text="proxy bpc (tiny, 240 steps)", row=1, col=2)
    fig.update_yaxes(title_text="promoted bpc (cpu preset)", row=1, col=2)
    fig.write_html(path, include_plotlyjs="cdn")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-real", action="store_true", help="(a) only: no training")
    parser.add_argument("--steps", type=int, default=400, help="(b): the promoted runs' steps at the cpu preset")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--storage", default=f"sqlite:///{RESULTS / 'proxy-fidelity.db'}")
    args = parser.parse_args(argv)

    early = early_evaluations(args.resamples)
    print(f"(a) {early['configurations']} configurations, tabular benchmark ({early['device']}); final bpc: best "
          f"{early['final_bpc_range'][0]:.3f}, median {early['final_bpc_range'][1]:.3f}")
    print("    step | Kendall's tau vs the other seed's final bpc [95% CI] | regret of that step's pick (bpc)")
    for r in early["rows"]:
        print(f"    {r['step']:4d} | {r['tau']:.3f} [{r['tau_ci'][0]:.3f}, {r['tau_ci'][1]:.3f}]"
              f"{'  (seed-noise ceiling)' if r is early['rows'][-1] else ''} | {r['regret_bpc']:.3f}")
    real = None
    if not args.skip_real:
        real = real_promotion(args.steps, args.top, args.storage)
        ci = real["kendall_tau_ci"] or [float("nan")] * 2
        print(f"(b) {real['source']} -> {real['study']}: top {len(real['pairs'])} retrained at the cpu preset for "
              f"{args.steps} steps in {real['elapsed_s']:.0f} s")
        print("    proxy # | TCN | proxy bpc | promoted bpc | proxy rank | promoted rank")
        for p in real["pairs"]:
            print(f"    {p['proxy_trial']:7d} | {p['tcn']} | {p['proxy_value']:.3f} | {p['promoted_value']:.3f} | "
                  f"{p['proxy_rank']} | {p['promoted_rank']}")
        print(f"    Kendall's tau {real['kendall_tau']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]; the proxy's pick's regret "
              f"{real['regret']:.3f} bpc ({100 * real['regret_relative']:.1f}%)")
    RESULTS.mkdir(exist_ok=True)
    out = {"early": early, "real": real}
    (RESULTS / "proxy_fidelity.json").write_text(json.dumps(out, indent=1))
    _figure(early, real, RESULTS / "proxy_fidelity.html")
    print(f"figures: {RESULTS / 'proxy_fidelity.html'}")
    return out


if __name__ == "__main__":
    main()
