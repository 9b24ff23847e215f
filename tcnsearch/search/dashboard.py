"""The profile behind a study, in optuna-dashboard: a figure and a note on the study's page.

    attach_profile(study, profile, frozen)   # run_study does this when it creates or resumes a study

The figure is every structure's speedup over the EMA (survivors, undecided, rejected; measured or
predicted; the 95% interval as error bars; min_speedup as a line). The note is the survivors as a
table, the device, the level, mode and thresholds, and the counts (profile.figures draws both).

Both are study system attributes, in chunks of about 2 KB (optuna-dashboard's format; Optuna keeps
each in a Text column, unbounded on SQLite and PostgreSQL): a grid of 150 structures takes about
20 rows, 40 KB. Attaching again replaces both: the figure has a fixed id, and the note's profile
section sits between two invisible markers, so whatever a user wrote in the note around it is kept.
"""

from __future__ import annotations

import optuna

from tcnsearch.profile import ProfileResult, dashboard_figure, profile_note

FIGURE_ID = "tcnsearch-profile"
# Markdown link reference definitions, each alone between blank lines: they render as nothing.
NOTE_START = "[tcnsearch:profile:start]: #"
NOTE_END = "[tcnsearch:profile:end]: #"


def replace_section(note: str, section: str, name: str = "profile") -> str:
    """`note` with its `name` section (between its markers) replaced by `section`, or `section` first."""
    start_mark, end_mark = f"[tcnsearch:{name}:start]: #", f"[tcnsearch:{name}:end]: #"
    block = f"{start_mark}\n\n{section}\n\n{end_mark}"
    start, end = note.find(start_mark), note.find(end_mark)
    if start != -1 and end > start:
        return note[:start] + block + note[end + len(end_mark):]
    return block + ("\n\n" + note if note.strip() else "")


def attach_section(study: optuna.Study, name: str, section: str) -> None:
    """Put a Markdown `section` into the study's note under `name` (replacing the one before)."""
    import optuna_dashboard

    note = optuna_dashboard.get_note(study)
    updated = replace_section(note, section, name)
    if updated != note:
        optuna_dashboard.save_note(study, updated)


def attach_profile(study: optuna.Study, result: ProfileResult, frozen: list[str] | None = None) -> None:
    """Save the profile figure and note to `study` for optuna-dashboard, replacing any saved before.

    `frozen`: the labels of the survivors the study was created with, compared in the note with
    what this profile keeps."""
    import optuna_dashboard

    optuna_dashboard.save_plotly_graph_object(study, dashboard_figure(result), graph_object_id=FIGURE_ID)
    attach_section(study, "profile", profile_note(result, frozen))
