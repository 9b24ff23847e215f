"""Tables for people: rich tables that fit the terminal by leaving out their least useful columns.

Rich squeezes a table that is too wide by wrapping every cell, which at 80 columns turns a
trial table into unreadable stacks of fragments. Here each column has a priority; the
lowest-priority columns go until the rest fit on one line each, and the caption says what was
left out (`--json` always has everything).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table


@dataclass
class Col:
    header: str
    right: bool = False  # numbers align right
    drop: int = 0  # 0: always shown; higher numbers are left out first when the terminal is narrow
    flex: bool = False  # free text (notes, reasons): takes what width is left, cut with an ellipsis


_FLEX_MIN = 12  # a free-text column keeps at least this many characters


def _width(cols: list[Col], rows: list[list[str]], keep: list[int]) -> int:
    # rich's default box: one space of padding either side of each cell and one rule between cells
    return 1 + sum(3 + (_FLEX_MIN if cols[i].flex else _content(cols, rows, i)) for i in keep)


def _content(cols: list[Col], rows: list[list[str]], i: int) -> int:
    return max([len(cols[i].header)] + [len(r[i]) for r in rows])


def print_table(title: str, cols: list[Col], rows: list[list[str]], console: Console | None = None,
                footer: str | None = None) -> None:
    """Print `rows` (strings) under `cols`, leaving out low-priority columns that do not fit the width."""
    console = console or Console()
    keep = list(range(len(cols)))
    left_out = []
    for i in sorted((i for i in keep if cols[i].drop), key=lambda i: -cols[i].drop):
        if _width(cols, rows, keep) <= console.width:
            break
        keep.remove(i)
        left_out.append(cols[i].header)
    caption = f"left out at this width: {', '.join(left_out)} (--json has them)" if left_out else None
    table = Table(title=title, caption=caption)
    spare = console.width - _width(cols, rows, keep)
    for i in keep:
        width = _content(cols, rows, i)
        if cols[i].flex:
            width = max(_FLEX_MIN, min(width, _FLEX_MIN + spare))
        table.add_column(cols[i].header, justify="right" if cols[i].right else "left", no_wrap=True,
                         overflow="ellipsis", min_width=width, max_width=width)
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    if footer:
        console.print(footer)
