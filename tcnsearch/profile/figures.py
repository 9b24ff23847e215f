"""A profile as people look at it: where the TCN beats the EMA, and what receptive field that buys.

1. Speedup heatmaps over kernel size and dilation factor, one panel per (length, depth, B);
   blank cells are structures the receptive-field rule left out; predicted and extrapolated cells say so.
2. Receptive field against the speedup (with its 95% interval) at the binding length, by decision
   (survivor, undecided, rejected), measured as filled and predicted as open markers (diamonds if extrapolated), the
   threshold as a line.
3. The survivors and the undecided as a table, each speedup with its interval.
4. For optuna-dashboard: every structure's speedup, fastest first (`dashboard_figure`), and the
   profile as a Markdown note (`profile_note`); a study attaches both (search.dashboard).

The HTML report that holds 1-3 is report.write_profile_report.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tcnsearch._text import markdown_text, plot_text
from tcnsearch.profile.result import ProfileResult

METRIC_NAMES = {"fwdbwd": "forward+backward", "fwd": "forward"}


def source_text(row: dict) -> str:
    """"measured", "predicted", or "predicted, extrapolated (K, f)" beyond the measured range of those axes."""
    if row.get("extrapolated"):
        return f"{row['source']}, extrapolated ({', '.join(row['extrapolated_axes'])})"
    return row["source"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def speedup_text(row: dict, key: str) -> str:
    """A row's speedup with its 95% interval: "1.47x [1.45, 1.50]"."""
    lo, hi = row[f"{key}_ci"]
    return f"{row[key]:.2f}x [{lo:.2f}, {hi:.2f}]"


def _metric(result: ProfileResult) -> tuple[str, str]:
    """(the deciding speedup's row key, its name for people)."""
    return f"speedup_{result.spec.metric}", METRIC_NAMES[result.spec.metric]


def speedup_heatmaps(result: ProfileResult) -> go.Figure:
    spec = result.spec
    key, label = _metric(result)
    panels = [(length, depth, b) for length in spec.lengths for b in spec.per_block for depth in spec.depths]
    cols = len(spec.depths)
    rows = len(panels) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"L={length}, D={d}, B={b}" for length, d, b in panels],
                        horizontal_spacing=0.06, vertical_spacing=min(0.08, 0.6 / max(rows, 1)))
    by_key = {(r["kernel_size"], r["dilation_factor"], r["depth"], r["per_block"]): r for r in result.candidates}
    values = [e.get(key) for r in result.candidates for e in r["by_length"] if e.get(key) is not None]
    zmax = max(values + [spec.min_speedup * 2])
    for i, (length, depth, b) in enumerate(panels):
        z, text = [], []
        for k in spec.kernel_sizes:
            zrow, trow = [], []
            for f in spec.dilation_factors:
                row = by_key.get((k, f, depth, b))
                entry = next((e for e in row["by_length"] if e["length"] == length), None) if row else None
                v = entry.get(key) if entry else None
                zrow.append(v)
                tag = ("<br>(extrapolated)" if entry.get("extrapolated_axes") else "<br>(predicted)"
                       if entry.get("source") == "predicted" else "") if entry else ""
                trow.append("" if v is None else f"{v:.2f}x<br>R={row['receptive_field']}{tag}")
            z.append(zrow)
            text.append(trow)
        fig.add_trace(go.Heatmap(
            z=z, x=[str(f) for f in spec.dilation_factors], y=[str(k) for k in spec.kernel_sizes], text=text,
            texttemplate="%{text}", hovertemplate="K=%{y} f=%{x}<br>%{text}<extra></extra>",
            colorscale="RdBu", zmin=0, zmid=spec.min_speedup, zmax=zmax, showscale=i == 0,
            colorbar={"title": f"{label}<br>speedup"}), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text="dilation factor f", type="category")
    fig.update_yaxes(title_text="kernel size K", type="category")
    fig.update_layout(title=f"TCN {label} speedup over MEGA's EMA — {plot_text(result.device.device_name)}",
                      height=max(350, 300 * rows))
    return fig


DECISION_COLORS = {"survivor": "#1f77b4", "undecided": "#ff7f0e", "rejected": "#bbbbbb"}
SOURCE_SYMBOLS = {"measured": "circle", "predicted": "circle-open", "extrapolated": "diamond-open"}


def _source(row: dict) -> str:
    return "extrapolated" if row.get("extrapolated") else row["source"]


def speedup_scatter(result: ProfileResult, x: Callable[[dict], object], label: Callable[[dict], str] | None = None
                    ) -> go.Figure:
    """Each structure that ran, at `x(row)`, against its speedup with the 95% interval as error bars: one
    trace per (decision, source), colored by decision, filled if measured, an open circle if predicted and
    an open diamond if predicted beyond the measured range of some axis (extrapolated), and
    `min_speedup` as a dashed line. `label(row)` names the structure in the hover text (default its label)."""
    key, metric = _metric(result)
    label = label or (lambda r: r["tcn"])
    ok = [r for r in result.candidates if r["ok"]]
    fig = go.Figure()
    for decision, color in DECISION_COLORS.items():
        for source, symbol in SOURCE_SYMBOLS.items():
            group = [r for r in ok if r["decision"] == decision and _source(r) == source]
            if not group:
                continue
            fig.add_trace(go.Scatter(
                x=[x(r) for r in group], y=[r[key] for r in group], mode="markers",
                name=f"{decision}, {source}", marker={"color": color, "size": 9, "symbol": symbol},
                error_y={"type": "data", "symmetric": False, "array": [r[f"{key}_ci"][1] - r[key] for r in group],
                         "arrayminus": [r[key] - r[f"{key}_ci"][0] for r in group], "thickness": 1},
                text=[f"{label(r)} R={r['receptive_field']}<br>"
                      f"95% CI [{r[f'{key}_ci'][0]:.2f}, {r[f'{key}_ci'][1]:.2f}]" for r in group],
                hovertemplate=f"%{{text}}<br>%{{y:.2f}}x ({decision}, {source})<extra></extra>"))
    fig.add_hline(y=result.spec.min_speedup, line_dash="dash")
    # Not add_hline's annotation_text: on a log axis plotly.js reads an annotation's y as log10(y).
    fig.add_annotation(text=f"min speedup {result.spec.min_speedup:g}x", xref="paper", x=1, xanchor="right",
                       yref="y", y=math.log10(result.spec.min_speedup), yanchor="bottom", showarrow=False)
    fig.update_yaxes(type="log", title_text=f"{metric} speedup over the EMA")
    return fig


def latency_vs_receptive_field(result: ProfileResult) -> go.Figure:
    fig = speedup_scatter(result, lambda r: r["receptive_field"])
    fig.update_xaxes(type="log", title_text="receptive field R")
    fig.update_layout(title=f"Receptive field vs {result.spec.level}-level speedup (the least over lengths)")
    return fig


def survivors_table(result: ProfileResult) -> go.Figure:
    s = result.survivors + result.undecided
    head = ["K", "f", "D", "B", "R", "decision", "source", "pairs", "TCN fwd ms", "TCN fwd+bwd ms", "EMA fwd ms",
            "EMA fwd+bwd ms", "speedup fwd [95% CI]", "speedup fwd+bwd [95% CI]"]
    cols = [[r["kernel_size"] for r in s], [r["dilation_factor"] for r in s], [r["depth"] for r in s],
            [r["per_block"] for r in s], [r["receptive_field"] for r in s], [r["decision"] for r in s],
            [source_text(r) for r in s], [r["n_pairs"] for r in s],
            *[[_ms(r[k]) for r in s] for k in ("tcn_fwd_ms", "tcn_fwdbwd_ms", "ema_fwd_ms", "ema_fwdbwd_ms")],
            *[[speedup_text(r, k) for r in s] for k in ("speedup_fwd", "speedup_fwdbwd")]]
    fig = go.Figure(go.Table(header={"values": head}, cells={"values": cols}))
    fig.update_layout(title=f"{len(result.survivors)} survivors and {len(result.undecided)} undecided "
                            f"(times at L={max(result.spec.lengths)}, speedups the least over lengths)",
                      height=min(1200, 120 + 28 * max(len(s), 1)))
    return fig


def profile_figures(result: ProfileResult) -> list[go.Figure]:
    return [speedup_heatmaps(result), latency_vs_receptive_field(result), survivors_table(result)]


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _some(labels: list[str], most: int = 20) -> str:
    return f" ({', '.join(map(markdown_text, labels[:most]))}{' ...' if len(labels) > most else ''})" if labels else ""


def dashboard_figure(result: ProfileResult) -> go.Figure:
    """Each structure's speedup, fastest first, survivors marked (speedup_scatter's traces), sized for
    optuna-dashboard's study page."""
    key, metric = _metric(result)
    ranked = sorted((r for r in result.candidates if r["ok"]), key=lambda r: -r[key])
    fig = speedup_scatter(result, lambda r: r["tcn"])
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=[r["tcn"] for r in ranked],
                     title_text="structure K-f-D-B, fastest first", tickangle=-90, tickfont={"size": 9})
    if len(ranked) > 40:
        fig.update_traces(marker_size=5, error_y_thickness=0.5)
    # The dashboard draws it 450 px high in half the page's width: the legend goes above the plot.
    fig.update_layout(
        title={"text": f"Profile: {metric} speedup ({result.spec.level} level)", "font": {"size": 14},
               "y": 0.98, "yanchor": "top"},
        height=450, margin={"l": 60, "r": 20, "t": 90, "b": 100},
        legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "font": {"size": 10}})
    return fig


def profile_note(result: ProfileResult, frozen: list[str] | None = None) -> str:
    """The profile as a Markdown note. `frozen`: the labels of the survivors a study was created with (its
    parameter space), compared with what this profile keeps."""
    spec, dev = result.spec, result.device
    key, metric = _metric(result)
    rows = result.candidates
    count = {d: sum(r["decision"] == d for r in rows if r["ok"]) for d in ("survivor", "undecided", "rejected")}
    by_source = {s: sum(r["source"] == s for r in rows) for s in ("measured", "predicted")}
    failed = sum(not r["ok"] for r in rows)
    kept = result.kept()
    lines = [
        "## Latency profile",
        "",
        f"Device **{markdown_text(dev.device_name)}**: backend {markdown_text(dev.backend)}, "
        f"{_n(dev.threads, 'thread')}, {markdown_text(dev.dtype)}, torch {markdown_text(dev.torch_version)}, "
        f"CUDA {markdown_text(dev.cuda_version)}.",
        "",
        f"Level **{spec.level}**, mode **{spec.mode}** ({metric} speedup over MEGA's EMA, the least over the lengths "
        f"{', '.join(map(str, spec.lengths))}); {spec.channels} channels, batch {spec.batch}, EMA N={spec.ema_dim}.",
        "",
        f"Thresholds: min speedup **{spec.min_speedup:g}x**, required receptive field **R >= "
        f"{spec.required_receptive_field}**, precision {spec.precision:g}, undecided structures: "
        f"**{spec.undecided}**.",
        "",
        f"Of {len(rows)} structures: **{_n(count['survivor'], 'survivor')}**, {count['undecided']} undecided, "
        f"{count['rejected']} rejected" + (f", {failed} failed or missing" if failed else "")
        + f"; {by_source['measured']} measured, {by_source['predicted']} predicted by the latency model.",
        "",
        f"### Survivors{' and the undecided (kept)' if spec.undecided == 'keep' else ''}",
        "",
        "| structure | K | f | D | B | R | speedup [95% CI] | source | decision |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
        *(f"| {r['tcn']} | {r['kernel_size']} | {r['dilation_factor']} | {r['depth']} | {r['per_block']} | "
          f"{r['receptive_field']} | {speedup_text(r, key)} | {source_text(r)} | {r['decision']} |" for r in kept),
    ]
    if not kept:
        lines.append("| none | | | | | | | | |")
    if frozen is not None:
        drawn = list(frozen)
        now = [r["tcn"] for r in kept]
        gone, new = [x for x in drawn if x not in now], [x for x in now if x not in drawn]
        if gone or new:
            lines += ["", f"The study draws from the {len(drawn)} structures it was created with: "
                          f"{len(gone)} of them no longer survive{_some(gone)}, and {_n(len(new), 'new survivor')} "
                          f"not drawn{_some(new)}."]
    return "\n".join(lines)
