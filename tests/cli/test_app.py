import subprocess
import sys

import pytest

from tcnsearch import __version__
from tcnsearch.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_help(capsys):
    assert main(["--help"]) == 0
    assert "Usage: tcnsearch" in capsys.readouterr().out


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such command" in err and "--help" in err


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "tcnsearch.cli", "--bogus-flag"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "tcnsearch: error: No such option '--bogus-flag'. (see 'tcnsearch --help')"
    assert "Traceback" not in out.stderr


SMALL = ["--lengths", "256", "--kernel-sizes", "3,5", "--dilation-factors", "4", "--depths", "3,4",
         "--per-block", "1", "--channels", "8", "--ema-dim", "4", "--min-receptive-field", "none",
         "--max-time", "0.05", "--min-pairs", "3", "--gpu", "cpu"]


def test_profile_json_contract(sqlite_url, tmp_path, capsys):
    import json

    report = tmp_path / "report.html"
    assert main(["profile", *SMALL, "--storage", sqlite_url, "--out", str(report), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["device"]["device_name"].startswith("cpu: ")
    assert (doc["measured"], doc["cached"], doc["predicted"]) == (4, 0, 0) and doc["n_candidates"] == 4
    assert doc["level"] == "op" and doc["device"]["backend"] == "native" and doc["pairs"] >= 4 * 3
    assert doc["report"] == str(report) and report.exists()
    assert doc["n_survivors"] + doc["n_undecided"] + doc["n_rejected"] == 4
    for s in doc["survivors"] + doc["undecided"]:
        assert {"kernel_size", "dilation_factor", "depth", "per_block", "receptive_field", "tcn_fwd_ms",
                "tcn_fwdbwd_ms", "ema_fwd_ms", "ema_fwdbwd_ms", "speedup_fwd", "speedup_fwdbwd", "speedup_fwd_ci",
                "speedup_fwdbwd_ci", "decision", "source", "n_pairs"} <= s.keys()
        low, high = s["speedup_fwdbwd_ci"]
        assert low <= s["speedup_fwdbwd"] <= high and s["source"] == "measured"
    for s in doc["survivors"]:
        assert s["speedup_fwdbwd_ci"][0] >= 1.0
    assert main(["profile", *SMALL, "--storage", sqlite_url, "--out", str(report), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["measured"], again["cached"], again["pairs"]) == (0, 4, 0)
    assert main(["profile", "--list", "--json", "--storage", sqlite_url]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["length"], r["level"], r["tcn"], r["backend"]) for r in listed] == [(256, "op", 4, "native")]


def test_profile_table_output(sqlite_url, tmp_path, capsys):
    assert main(["profile", *SMALL, "--storage", sqlite_url, "--out", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "op-level profile on cpu" in out and "survive" in out and "undecided" in out


@pytest.mark.parametrize("args,message", [
    (["--kernel-sizes", "1"], "kernel_sizes must be >= 2"),
    (["--dilation-factors", "0"], "dilation_factors must be >= 1"),
    (["--depths", "0"], "depths must be >= 1"),
    (["--lengths", "0"], "lengths must be >= 1"),
    (["--lengths", ","], "lengths: must not be empty"),
    (["--lengths", "abc"], "expected comma-separated integers"),
    (["--gpu", "x900"], "unknown GPU 'x900'"),
    (["--mode", "fast"], "Invalid value for '--mode'"),
    (["--min-receptive-field", "1000000000000"], "no candidate reaches the receptive field"),
    (["--storage", "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"], "cannot reach the database"),
    (["--storage", "not a url"], "is not a database URL"),
    (["--level", "kernel"], "Invalid value for '--level'"),
    (["--precision", "0"], "precision: Input should be greater than 0"),
    (["--precision", "nan"], "precision: Input should be a finite number"),
    (["--precision", "inf"], "precision: Input should be a finite number"),
    (["--max-time", "nan"], "max_time: Input should be a finite number"),
    (["--min-speedup", "inf"], "min_speedup: Input should be a finite number"),
    (["--undecided", "maybe"], "Invalid value for '--undecided'"),
    (["--predict"], "nothing to predict from"),
    (["--predict", "--level", "model"], "nothing to predict from"),
])
def test_profile_bad_input(args, message, sqlite_url, capsys):
    base = ["profile", "--storage", sqlite_url, "--gpu", "cpu"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err and "hunter2" not in err


def test_profile_from_study_file(sqlite_url, tmp_path, capsys):
    import json

    study = tmp_path / "study.yaml"
    study.write_text("profile:\n  lengths: [128]\n  kernel_sizes: [3]\n  dilation_factors: [2]\n"
                     "  depths: [2, 3]\n  per_block: [1]\n  channels: 4\n  ema_dim: 2\n"
                     "  min_receptive_field: null\n")
    assert main(["profile", "--study", str(study), "--gpu", "cpu", "--storage", sqlite_url, "--max-time",
                 "0.05", "--min-pairs", "3", "--depths", "3", "--out", str(tmp_path / "r.html"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["spec"]["lengths"] == [128] and doc["spec"]["depths"] == [3] and doc["n_candidates"] == 1
    assert main(["profile", "--study", str(tmp_path / "missing.yaml"), "--storage", sqlite_url]) == 2
    assert "cannot read" in capsys.readouterr().err
