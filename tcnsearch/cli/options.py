"""What the commands share: the storage and JSON options, and the parsers of list-valued flags."""

from __future__ import annotations

import json

import click

from tcnsearch.choices import GPUS

GPU_HELP = ", ".join(GPUS)


def ints(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def emit_json(doc) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def show(doc, as_json: bool, printer) -> None:
    """`doc` as JSON with --json, else as `printer(doc)` prints it for people."""
    if as_json:
        emit_json(doc)
    else:
        printer(doc)


STORAGE_OPTION = click.option(
    "--storage", envvar="TCNSEARCH_STORAGE", default=None, metavar="URL",
    help="SQLAlchemy URL of the database (default: $TCNSEARCH_STORAGE, else sqlite:///tcnsearch.db).")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
