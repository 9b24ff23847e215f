import subprocess
import sys

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
