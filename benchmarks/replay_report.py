"""The replay benchmark's statistics and report (benchmarks/search_quality.py): interquartile means
with bootstrap intervals, ratios against random search, regret on the simulated clock, the tables
it prints and its plotly figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

CHECKPOINTS = (10, 20, 40)  # finished trials (and their average simulated seconds) the tables report
TARGET = 0.05  # regret counted as "found"


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


def regret_at(runs: np.ndarray, times: np.ndarray, when: float) -> np.ndarray:
    """Each seed's regret at simulated second `when`: its incumbent's after the trials finished by
    then (1 before any; after its last trial, where it ended)."""
    done = (times <= when).sum(axis=1)  # finishing times are in order
    return np.array([run[n - 1] if n else 1.0 for run, n in zip(runs, done, strict=True)])


def ratio_interval(slow, fast) -> tuple[float, float]:
    """Bootstrap 95% interval of IQM(slow) / IQM(fast): how many times fewer trials `fast` needs."""
    rng = np.random.default_rng(0)
    slow, fast = np.asarray(slow, dtype=float), np.asarray(fast, dtype=float)
    ratios = [iqm(rng.choice(slow, len(slow))) / iqm(rng.choice(fast, len(fast))) for _ in range(2000)]
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def _cell(x: dict, digits: int = 3, width: int = 22) -> str:
    return f"{x['iqm']:.{digits}f} [{x['ci'][0]:.{min(digits, 2)}f},{x['ci'][1]:.{min(digits, 2)}f}]".rjust(width)


def _ratio(v: dict) -> str:
    return f"{v['ratio']:.1f}x [{v['ci'][0]:.1f},{v['ci'][1]:.1f}]".rjust(18)


def print_report(report: dict) -> None:
    t = report["table"]
    print(f"table: {t['runs']} runs, {t['configs']} configurations of {t['structures']} structures x lr on "
          f"{t['device']}; best configuration {t['best_bpc']:.4f} bpc, median {t['median_bpc']:.4f}; regret 0.05 "
          f"is {t['target_bpc']:.4f} bpc, one run's seed noise {t['seed_sd_bpc']:.4f} bpc (sd); 2 workers")
    head = "".join(f"{f'regret@{n}':>22}" for n in CHECKPOINTS) + f"{'trials to <=0.05':>20}{'vs random':>18}"
    print(f"{'method':<24}{'seeds x trials':>15}{head}")
    for m, r in report["methods"].items():
        cells = "".join(_cell(r["regret"][n]) for n in CHECKPOINTS if n in r["regret"])
        reach = r["trials_to_target"]
        got = f"{reach['iqm']:.1f} [{reach['ci'][0]:.0f},{reach['ci'][1]:.0f}] {reach['reached']}/{r['seeds']}"
        cells += got.rjust(20) + (_ratio(r["vs_random"]) if "vs_random" in r else "")
        plan = f"{r['seeds']} x {r['trials']}"
        print(f"{m:<24}{plan:>15}{cells}")
    print("regret: interquartile mean over seeds [bootstrap 95% interval]; trials to <= 0.05: IQM [interval], "
          "seeds that never got there counted as trials+1, then the seeds that got there; vs random: random's "
          "IQM over this one's [bootstrap interval]")
    print("\nOn the simulated wall-clock (training time + the method's own decision time):")
    head = "".join(f"{f'regret@{s:.0f}s':>22}" for s in t["moments_s"].values())
    print(f"{'method':<24}{'decide s/trial':>15}{head}{'seconds to <=0.05':>24}{'vs random':>18}")
    for m, r in report["methods"].items():
        c = r["clock"]
        cells = "".join(_cell(c["regret"][n]) for n in t["moments_s"]) + _cell(c["seconds_to_target"], 0, 24)
        cells += _ratio(c["vs_random"]) if "vs_random" in c else ""
        print(f"{m:<24}{c['decision_s_per_trial']:>15.3f}{cells}")
    print("regret@Ns: at the simulated second N (10, 20, 40 average runs on the 2 workers); seconds to <= 0.05: "
          "IQM [interval], a seed that never got there counted at its replay's end; vs random: random's IQM "
          "seconds over this one's")


def write_figure(report: dict, path: Path) -> None:
    """Regret against finished trials (left) and against simulated seconds (right)."""
    import plotly.colors
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("against finished trials", "against simulated wall-clock"))
    palette = plotly.colors.qualitative.Dark24
    for i, (m, r) in enumerate(report["methods"].items()):
        color = palette[i % len(palette)]
        x = list(range(1, r["trials"] + 1))
        lo, hi = zip(*r["curve_ci"], strict=True)
        fig.add_scatter(x=x + x[::-1], y=list(hi) + list(lo)[::-1], fill="toself", opacity=0.15, line={"width": 0},
                        showlegend=False, hoverinfo="skip", name=m, fillcolor=color, row=1, col=1)
        fig.add_scatter(x=x, y=r["curve_iqm"], mode="lines", name=m, line={"color": color}, row=1, col=1)
        fig.add_scatter(x=report["table"]["clock_grid_s"], y=r["clock"]["curve_iqm"], mode="lines", name=m,
                        line={"color": color}, showlegend=False, row=1, col=2)
    fig.add_hline(y=TARGET, line_dash="dash", annotation_text="regret 0.05")
    fig.update_layout(title="Normalized regret (IQM over the seeds, 95% interval on the left), replayed on real "
                            "TCNCA runs", yaxis_title="normalized regret (0 best, 1 median)")
    fig.update_yaxes(type="log")
    fig.update_xaxes(title_text="finished trials", row=1, col=1)
    fig.update_xaxes(title_text="simulated seconds (training + decisions, 2 workers)", row=1, col=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path)
