"""Tables fit an 80-column terminal: low-priority columns are left out (and named), free text is cut."""

import io

from rich.console import Console

from tcnsearch.cli import main
from tcnsearch.cli.printers import print_study
from tcnsearch.cli.tables import Col, print_table
from tcnsearch.search import StudyResult


def _render(width: int, *args) -> list[str]:
    out = io.StringIO()
    print_table(*args, console=Console(file=out, width=width))
    return out.getvalue().splitlines()


COLS = [Col("#", right=True), Col("state"), Col("latency ms", right=True, drop=2), Col("params", right=True, drop=3),
        Col("note", flex=True, drop=1)]
ROWS = [[str(i), "COMPLETE", "12.3", "123456", "lr=0.00123, model.dropout=0.1, weight_decay=0.0456 " * 2]
        for i in range(3)]


def test_a_wide_table_leaves_out_its_lowest_priority_columns_and_says_so():
    lines = _render(50, "t", COLS, ROWS)
    assert max(map(len, lines)) <= 50
    header = next(line for line in lines if line.startswith("┃"))
    assert "params" not in header and "state" in header and "left out at this width: params" in "\n".join(lines)
    assert all("COMPLETE" in line for line in lines if line.strip().startswith(("│ 0", "│ 1", "│ 2")))


def test_a_table_that_fits_keeps_every_column_and_cuts_only_free_text():
    lines = _render(200, "t", COLS, ROWS)
    text = "\n".join(lines)
    assert "params" in text and "left out" not in text and "123456" in text
    narrow = "\n".join(_render(80, "t", COLS, ROWS))
    assert "123456" in narrow and "…" in narrow  # the note is cut, the numbers stay
    assert max(map(len, narrow.splitlines())) <= 80


def test_the_study_table_fits_80_columns():
    trials = [{"number": i, "state": s, "tcn": "K17-f16-D6-B2",
               "params": {"K": 17, "f": 16, "D": 6, "B": 2, "lr": 0.00123456, "model.dropout": 0.1},
               "receptive_field": 1021, "latency_ms": 12.345, "values": [0.875] if s == "COMPLETE" else None,
               "num_parameters": 123456, **({"fail_reason": "non-finite training loss (nan) at step 250"}
                                           if s == "FAIL" else {})}
              for i, s in enumerate(["COMPLETE", "PRUNED", "FAIL"])]
    result = StudyResult(study_name="assoc-recall-tiny", storage="sqlite:///tcnsearch.db", preset="tiny",
                         task="assoc-recall", directions=["maximize"], metric_names=["accuracy"],
                         counts={"COMPLETE": 1, "PRUNED": 1, "FAIL": 1}, best=[trials[0]], ran=3, device="cpu",
                         survivors=31, elapsed_s=60.0, trials=trials)
    out = io.StringIO()
    print_study(result, Console(file=out, width=80))
    table = [line for line in out.getvalue().splitlines() if line.startswith(("┃", "│", "┏", "└", "┡", "┗"))]
    assert table and max(map(len, table)) <= 80
    assert "K17-f16-D6-B2" in out.getvalue() and "0.8750" in out.getvalue() and "FAIL" in out.getvalue()


def test_study_list_fits_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert "assoc-recall" in out and "lra-pathx" in out and max(map(len, out.splitlines())) <= 80
