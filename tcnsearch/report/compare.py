"""Studies side by side (`tcnsearch report A B [C ...]`): their histories, their objective-against-latency
fronts and their best trials on one page; for a proxy study and its promotion, the two rankings.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from tcnsearch.report.html import write_page
from tcnsearch.report.study import pareto_front, promotion_figure, shown
from tcnsearch.search import LATENCY, load_study, trained


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if trained(t)),
                  key=lambda t: t.number)


def _minimize(study: optuna.Study) -> bool:
    return study.directions[0] == optuna.study.StudyDirection.MINIMIZE


def histories(studies: list[optuna.Study]) -> go.Figure:
    """The best value so far of each study, by its finished trials in order."""
    fig = go.Figure()
    for study in studies:
        best, xs, ys = None, [], []
        for i, t in enumerate(_complete(study), 1):
            value = t.values[0]
            if best is None or (value < best if _minimize(study) else value > best):
                best = value
            xs.append(i)
            ys.append(best)
        fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=study.study_name, line={"shape": "hv"})
    metric = (studies[0].metric_names or ["objective"])[0]
    fig.update_layout(title=f"Best {metric} so far", xaxis_title="finished trials", yaxis_title=metric)
    return fig


def fronts(studies: list[optuna.Study]) -> go.Figure:
    """Each study's trials and Pareto front of the objective against the TCN's profiled latency."""
    fig = go.Figure()
    for study in studies:
        done = [t for t in _complete(study) if LATENCY in t.user_attrs]
        points = [(t.values[0], t.user_attrs[LATENCY]) for t in done]
        front = sorted(pareto_front(points, not _minimize(study)), key=lambda i: points[i][1])
        fig.add_scatter(x=[p[1] for p in points], y=[p[0] for p in points], mode="markers",
                        name=f"{study.study_name}: trials", text=[f"trial {t.number}: {t.user_attrs.get('tcn')}"
                                                                   for t in done], hoverinfo="text+x+y")
        fig.add_scatter(x=[points[i][1] for i in front], y=[points[i][0] for i in front], mode="lines",
                        name=f"{study.study_name}: front", line={"shape": "hv"})
    metric = (studies[0].metric_names or ["objective"])[0]
    fig.update_layout(title=f"{metric} against the TCN's profiled latency", xaxis_title="TCN latency (ms)",
                      yaxis_title=metric)
    return fig


def best_table(studies: list[optuna.Study]) -> go.Figure:
    rows = []
    for study in studies:
        complete = _complete(study)
        if not complete:
            rows.append([study.study_name, "-", "-", "-", "-", "-"])
            continue
        sign = 1 if _minimize(study) else -1
        best = min(complete, key=lambda t: sign * t.values[0])
        rows.append([study.study_name, str(best.number), str(best.user_attrs.get("tcn", "?")),
                     f"{best.values[0]:.4g}", f"{best.user_attrs.get(LATENCY, float('nan')):.3g}",
                     ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
                               if k not in ("K", "f", "D", "B"))])
    head = ["study", "best trial", "TCN", (studies[0].metric_names or ["value"])[0], "latency ms", "searched"]
    fig = go.Figure(go.Table(header={"values": head}, cells={"values": [list(c) for c in zip(*rows, strict=True)]}))
    fig.update_layout(title="The best trial of each study", height=120 + 30 * len(rows))
    return fig


def promotion_pairs(studies: list[optuna.Study]) -> list[tuple[optuna.Study, optuna.Study]]:
    by_name = {s.study_name: s for s in studies}
    return [(by_name[s.user_attrs["promoted_from"]], s) for s in studies
            if s.user_attrs.get("promoted_from") in by_name]


def write_comparison(names: list[str], storage: str | None, path: str | Path) -> Path:
    """One HTML page with the studies `names` side by side."""
    studies = [load_study(name, storage) for name in names]
    drawn = [shown(s) for s in studies]  # the database's strings stay text in the figures
    figures = [histories(drawn), fronts(drawn), best_table(drawn)]
    figures += [promotion_figure(source, promoted) for source, promoted in promotion_pairs(drawn)]
    meta = "; ".join(f"{s.study_name}: task {s.user_attrs.get('task')}, preset {s.user_attrs.get('preset')}, "
                     f"{len(_complete(s))} finished trials" for s in studies)
    return write_page(path, f"tcnsearch studies — {', '.join(names)}", meta, figures)
