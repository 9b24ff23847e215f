"""The study report: how the search went, what it found, and the latency each structure costs.

1. Optimisation history (best so far) and every trial's evaluations (the pruned ones stop early).
2. The objective against the TCN's profiled latency, the Pareto front joined: the structures
   that no other beats on both.
3. Hyperparameter importances (fANOVA over the finished trials), and a parallel-coordinate view.
4. The study's profile: the survivors it drew from, their latency and speedup over the EMA.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from tcnsearch._text import plot_text
from tcnsearch.compat.optuna import set_system_attr, storage_of, system_attrs, trial_id
from tcnsearch.report.html import write_page
from tcnsearch.search import INFEASIBLE, LATENCY, WARM_START, frozen, frozen_objective, is_frozen, load_study, trained
from tcnsearch.search.trials import PROMOTED_FROM


def shown(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of `study` for figures to draw: every string in it (its name, metric and parameter
    names, categorical choices, user and system attributes) as plotly text, so that whatever Optuna's figures
    or ours put in a title, a hover label, a tick or a table cell stays text."""
    copy = optuna.create_study(study_name=plot_text(study.study_name), directions=study.directions)
    for key, value in system_attrs(study).items():  # the metric names, the frozen survivors and objective
        set_system_attr(copy, key, _shown(value))
    for key, value in study.user_attrs.items():
        copy.set_user_attr(plot_text(key), _shown(value))
    copy.add_trials([optuna.trial.FrozenTrial(
        number=t.number, state=t.state, value=None, values=t.values, datetime_start=t.datetime_start,
        datetime_complete=t.datetime_complete, params=_shown(t.params), user_attrs=_shown(t.user_attrs),
        distributions={plot_text(k): _shown_distribution(d) for k, d in t.distributions.items()},
        system_attrs=_shown(t.system_attrs), intermediate_values=t.intermediate_values, trial_id=trial_id(t))
        for t in study.get_trials(deepcopy=False)])
    return copy


def _shown(value):
    """A stored (JSON) value with each string in it, keys too, as plotly text."""
    if isinstance(value, str):
        return plot_text(value)
    if isinstance(value, dict):
        return {plot_text(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    return value


def _shown_distribution(d: optuna.distributions.BaseDistribution) -> optuna.distributions.BaseDistribution:
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return optuna.distributions.CategoricalDistribution(_shown(list(d.choices)))
    return d


def pareto_front(points: list[tuple[float, float]], maximize_first: bool) -> list[int]:
    """Indices of the points no other point beats on both (objective in its direction, latency lower)."""
    sign = -1 if maximize_first else 1
    front = []
    for i, (a, la) in enumerate(points):
        dominated = any(sign * b <= sign * a and lb <= la and (sign * b < sign * a or lb < la)
                        for j, (b, lb) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def objective_vs_latency(study: optuna.Study) -> go.Figure:
    metric = (study.metric_names or [frozen_objective(study).get("metric", "objective")])[0]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if LATENCY in t.user_attrs and trained(t)]
    points = [(t.values[0], t.user_attrs[LATENCY]) for t in done]
    front = sorted(pareto_front(points, maximize), key=lambda i: points[i][1])
    fig = go.Figure()
    fig.add_scatter(x=[p[1] for p in points], y=[p[0] for p in points], mode="markers", name="complete trials",
                    text=[f"trial {t.number}: {_tcn(t)}" for t in done], hoverinfo="text+x+y")
    fig.add_scatter(x=[points[i][1] for i in front], y=[points[i][0] for i in front], mode="lines+markers",
                    name="Pareto front", line={"shape": "hv"})
    fig.update_layout(title=f"{metric} against the TCN's profiled latency", xaxis_title="TCN latency (ms)",
                      yaxis_title=metric)
    return fig


def _survivors(study: optuna.Study) -> list:
    """The survivors a study was created with; none for a study tcnsearch did not create (it still reports)."""
    return frozen(study)[0] if is_frozen(study) else []


def _tcn(t: optuna.trial.FrozenTrial) -> str:
    return t.user_attrs.get("tcn", "?")


def feasibility_figure(study: optuna.Study) -> go.Figure:
    """Every proposal by trial number and profiled latency: trained (feasible) apart from those never
    trained because they were outside the survivors or over the latency budget (infeasible)."""
    survivors = {s.label: s for s in _survivors(study)}
    trials = [t for t in study.get_trials(deepcopy=False) if WARM_START not in t.user_attrs]
    fig = go.Figure()
    for name, group, marker in (
            ("trained (feasible)", [t for t in trials if INFEASIBLE not in t.user_attrs], {"symbol": "circle"}),
            ("never trained (infeasible)", [t for t in trials if INFEASIBLE in t.user_attrs],
             {"symbol": "x", "color": "grey"})):
        known = [t for t in group if _tcn(t) in survivors]
        fig.add_scatter(x=[t.number for t in known], y=[survivors[_tcn(t)].latency_ms for t in known], mode="markers",
                        name=f"{name}: {len(group)}", marker=marker,
                        text=[f"trial {t.number}: {_tcn(t)}" + (f" ({t.user_attrs[INFEASIBLE]})"
                                                                if INFEASIBLE in t.user_attrs else "") for t in known],
                        hoverinfo="text+y")
    budget = frozen_objective(study).get("max_latency_ms")
    if budget:
        fig.add_hline(y=budget, line_dash="dash", annotation_text=f"max_latency_ms {budget}")
    outside = sum(1 for t in trials if INFEASIBLE in t.user_attrs and _tcn(t) not in survivors)
    fig.update_layout(title=f"Proposals, trained and never trained ({outside} outside the survivors, no latency to "
                            "show)", xaxis_title="trial", yaxis_title="TCN latency (ms)")
    return fig


def survivors_figure(study: optuna.Study) -> go.Figure:
    rows = sorted(_survivors(study), key=lambda s: s.latency_ms)
    fig = go.Figure()
    labels = [f"{s.label}{' (predicted)' if s.source == 'predicted' else ''}"
              f"{' (undecided)' if s.decision == 'undecided' else ''}" for s in rows]
    for metric, name in (("fwdbwd", "speedup fwd+bwd"), ("fwd", "speedup fwd")):
        values = [s.speedup(metric) for s in rows]
        cis = [getattr(s, f"speedup_{metric}_ci") for s in rows]
        fig.add_bar(x=labels, y=values, name=name,
                    error_y={"type": "data", "symmetric": False,
                             "array": [hi - v for v, (_, hi) in zip(values, cis, strict=True)],
                             "arrayminus": [v - lo for v, (lo, _) in zip(values, cis, strict=True)]})
    tried = {_tcn(t) for t in study.get_trials(deepcopy=False) if trained(t)}
    level = study.user_attrs.get("profile_level", "op")
    fig.update_layout(title=f"The profile's {len(rows)} survivors on {study.user_attrs.get('device', '?')}, "
                            f"{level} level (speedup over MEGA's EMA with its 95% interval; "
                            f"{len(tried & {s.label for s in rows})} tried)",
                      barmode="group", yaxis_title="x faster than the EMA")
    return fig


def importance_evaluator(complete: int) -> optuna.importance.FanovaImportanceEvaluator:
    """fANOVA with Optuna's 64 trees up to 500 finished trials, and fewer past that (at least 8): its cost grows
    with the trees times the trials: 7 s of CPU with 64 trees in a study of 1,000 trials, 450 of them finished."""
    return optuna.importance.FanovaImportanceEvaluator(n_trees=max(8, min(64, 64 * 500 // max(complete, 1))), seed=0)


def study_figures(study: optuna.Study) -> list[go.Figure]:
    """The report's figures, drawn from `shown(study)`: the database's strings stay text."""
    original, study = study, shown(study)
    vis = optuna.visualization
    single = len(study.directions) == 1
    figures = []
    if single:
        figures += [vis.plot_optimization_history(study), vis.plot_intermediate_values(study)]
    else:
        figures.append(vis.plot_pareto_front(study, target_names=study.metric_names))
    figures.append(objective_vs_latency(study))
    figures.append(feasibility_figure(study))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= 2:
        target = None if single else (lambda t: t.values[0])
        target_name = (study.metric_names or ["objective"])[0]
        with contextlib.suppress(ValueError, RuntimeError):  # e.g. every finished trial has the same params
            figures.append(vis.plot_param_importances(study, target=target, target_name=target_name,
                                                      evaluator=importance_evaluator(len(complete))))
        figures.append(vis.plot_parallel_coordinate(study, target=target, target_name=target_name))
    figures.append(survivors_figure(study))
    figures += promotion_figures(original)
    return figures


def promotion_figures(study: optuna.Study) -> list[go.Figure]:
    """A proxy study and its promotion: the two rankings, from either side."""
    other = study.user_attrs.get("promoted_from") or study.user_attrs.get("promoted_to")
    if not other:
        return []
    try:
        linked = optuna.load_study(study_name=other, storage=storage_of(study))  # the same database
    except KeyError:
        return []
    source, promoted = (linked, study) if study.user_attrs.get("promoted_from") else (study, linked)
    return [promotion_figure(shown(source), shown(promoted))]


def write_study_report(name: str, storage: str | None, path: str | Path) -> Path:
    """One self-contained HTML page for the stored study `name`."""
    study = load_study(name, storage)
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    meta = (f"task {study.user_attrs.get('task')}, preset {study.user_attrs.get('preset')}, "
            f"device {study.user_attrs.get('device')}; trials: "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return write_page(path, f"tcnsearch study — {name}", meta, study_figures(study))


def promotion_figure(source: optuna.Study, promoted: optuna.Study) -> go.Figure:
    """Each promoted configuration: its value in the proxy study against its value at the larger scale (both
    studies as `shown` makes them)."""
    proxy = {t.number: t for t in source.get_trials(deepcopy=False)}
    pairs = [(proxy[t.user_attrs[PROMOTED_FROM]], t)
             for t in promoted.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if t.user_attrs.get(PROMOTED_FROM) in proxy]
    fig = go.Figure()
    fig.add_scatter(x=[p.values[0] for p, _ in pairs], y=[t.values[0] for _, t in pairs], mode="markers+text",
                    text=[str(p.user_attrs.get("tcn", "")) for p, _ in pairs], textposition="top center",
                    name="promoted configurations")
    tau = promoted.user_attrs.get("kendall_tau")
    metric = (source.metric_names or ["objective"])[0]
    fig.update_layout(title=f"{metric}: {source.study_name} (proxy) against {promoted.study_name}"
                            + (f" (Kendall's tau {tau})" if tau is not None else ""),
                      xaxis_title=f"{metric} in the proxy study", yaxis_title=f"{metric} at the larger scale")
    return fig
