"""The profile behind a study, in optuna-dashboard: a figure and a note on the study's page.

    attach_profile(study, profile)   # run_study does this when it creates or resumes a study

The figure is every structure's speedup over the EMA (survivors, undecided, rejected; measured or
predicted; the 95% interval as error bars; min_speedup as a line). The note is the survivors as a
table, the device, the level, mode and thresholds, and the counts.

Both are study system attributes, in chunks of about 2 KB (optuna-dashboard's format; Optuna keeps
each in a Text column, unbounded on SQLite and PostgreSQL): a grid of 150 structures takes about
20 rows, 40 KB. Attaching again replaces both: the figure has a fixed id, and the note's profile section
sits between two invisible markers, so whatever a user wrote in the note around it is kept.
"""

from __future__ import annotations

import optuna
import plotly.graph_objects as go

from tcnsearch.profile.runner import ProfileResult
from tcnsearch.report.profile import _metric, speedup_scatter

FIGURE_ID = "tcnsearch-profile"
# Markdown link reference definitions, each alone between blank lines: they render as nothing.
NOTE_START = "[tcnsearch:profile:start]: #"
NOTE_END = "[tcnsearch:profile:end]: #"


def _label(row: dict) -> str:
    """The structure's name as the study's trials carry it (the `tcn` parameter)."""
    from tcnsearch.search.runner import _label as study_label  # here: the search runner imports this package

    return study_label(row)


def _md(text: object) -> str:
    """`text` shown literally in Markdown, table cells included."""
    out = str(text)
    for ch in "\\`*_[]<>|#":
        out = out.replace(ch, "\\" + ch)
    return out


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _some(labels: list[str], most: int = 20) -> str:
    return f" ({', '.join(labels[:most])}{' ...' if len(labels) > most else ''})" if labels else ""


def profile_figure(result: ProfileResult) -> go.Figure:
    """Each structure's speedup, fastest first, survivors marked (speedup_scatter's traces)."""
    key, metric = _metric(result)
    ranked = sorted((r for r in result.candidates if r["ok"]), key=lambda r: -r[key])
    fig = speedup_scatter(result, _label, label=_label)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=[_label(r) for r in ranked],
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


def _interval(row: dict, key: str) -> str:
    lo, hi = row[f"{key}_ci"]
    return f"{row[key]:.2f}x [{lo:.2f}, {hi:.2f}]"


def profile_note(result: ProfileResult, frozen: list[dict] | None = None) -> str:
    """The note's profile section, in Markdown. `frozen`: the survivor records the study was created
    with (its parameter space), compared with what this profile keeps."""
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
        f"Device **{_md(dev.device_name)}**: backend {_md(dev.backend)}, {_n(dev.threads, 'thread')}, "
        f"{_md(dev.dtype)}, torch {_md(dev.torch_version)}, CUDA {_md(dev.cuda_version)}.",
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
        *(f"| {_label(r)} | {r['kernel_size']} | {r['dilation_factor']} | {r['depth']} | {r['per_block']} | "
          f"{r['receptive_field']} | {_interval(r, key)} | {r['source']} | {r['decision']} |" for r in kept),
    ]
    if not kept:
        lines.append("| none | | | | | | | | |")
    if frozen is not None:
        drawn = [s["label"] for s in frozen]
        now = [_label(r) for r in kept]
        gone, new = [x for x in drawn if x not in now], [x for x in now if x not in drawn]
        if gone or new:
            lines += ["", f"The study draws from the {len(drawn)} structures it was created with: "
                          f"{len(gone)} of them no longer survive{_some(gone)}, and {_n(len(new), 'new survivor')} "
                          f"not drawn{_some(new)}."]
    return "\n".join(lines)


def _replace_section(note: str, section: str) -> str:
    block = f"{NOTE_START}\n\n{section}\n\n{NOTE_END}"
    start, end = note.find(NOTE_START), note.find(NOTE_END)
    if start != -1 and end > start:
        return note[:start] + block + note[end + len(NOTE_END):]
    return block + ("\n\n" + note if note.strip() else "")


def attach_profile(study: optuna.Study, result: ProfileResult) -> None:
    """Save the profile figure and note to `study` for optuna-dashboard, replacing any saved before."""
    import optuna_dashboard

    optuna_dashboard.save_plotly_graph_object(study, profile_figure(result), graph_object_id=FIGURE_ID)
    section = profile_note(result, study.user_attrs.get("survivors"))
    note = optuna_dashboard.get_note(study)
    updated = _replace_section(note, section)
    if updated != note:
        optuna_dashboard.save_note(study, updated)


__all__ = ["FIGURE_ID", "attach_profile", "profile_figure", "profile_note"]
