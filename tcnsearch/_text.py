"""Strings from outside, shown in a page: as plotly text or as Markdown, they stay text.

A database is shared (a SQLite file, a PostgreSQL schema), and its strings (study names, study and
trial attributes, metric and parameter names, categorical choices, device names) end up in HTML: the
reports' plotly figures and optuna-dashboard's study page. Plotly reads a few tags in any text it
draws (an `<a href>` becomes a link, a `<span style>` can load a URL); optuna-dashboard renders its
note as GitHub Markdown (links, images, autolinks). Every such string passes through one of these.
"""

from __future__ import annotations

import html
import re


def plot_text(value: object) -> str:
    """`value` as plotly draws it literally (titles, hover labels, ticks, legends, table cells): `<`, `>`
    and `&` as entities, which plotly turns back into characters, never into tags."""
    return html.escape(str(value), quote=False)


# What starts Markdown syntax inside a line: escapes, code, emphasis, links and images, HTML and
# `<...>` autolinks, table cells, headings, entities. A backslash shows each as itself.
_MARKDOWN = re.compile(r"[\\`*_~\[\]<>|#&]")
# GitHub's bare autolinks (`http://`, `www.`, `name@host.org`) are found in the text once it is parsed,
# past any backslash: an invisible word joiner (U+2060) inside each keeps it text.
_AUTOLINK = re.compile(r"(?<=http)(?=://)|(?<=https)(?=://)|(?<=www)(?=\.)|(?<=[\w.+-])(?=@)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def markdown_text(value: object) -> str:
    """`value` shown literally in Markdown, inline or in a table cell; line breaks (and other control
    characters) become spaces, so that it stays on its line and starts no block."""
    text = _MARKDOWN.sub(lambda m: "\\" + m.group(), _CONTROL.sub(" ", str(value)))
    return _AUTOLINK.sub("\u2060", text)
