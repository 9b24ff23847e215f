"""The `tcnsearch` command: thin shells over library functions.

Exit codes (SPEC §7): 0 success; 2 bad input, with one line on stderr; 1 a failure while running.
The commands live by what they drive: profiling (profile), studies (study, export, promote, report,
dashboard), training (train, data).
"""

from __future__ import annotations

import os

import click

from tcnsearch import __version__
from tcnsearch._quiet import quiet_third_party
from tcnsearch.cli.profiling import profile
from tcnsearch.cli.studies import (
    dashboard_command,
    export_command,
    promote_command,
    report_command,
    study_command,
)
from tcnsearch.cli.training import data, train_command
from tcnsearch.errors import UserError, disk_full


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="tcnsearch")
def cli() -> None:
    """Latency-aware TCN architecture selection and hyperparameter search for TCNCA.

    Profile candidate TCN structures against MEGA's EMA on a device, then train the faster ones
    with Ray Tune, every trial stored in an Optuna database.
    """


for command in (profile, study_command, export_command, promote_command, train_command, report_command,
                dashboard_command, data):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input becomes one line on stderr and exit code 2, never a traceback."""
    quiet_third_party()
    try:
        result = cli.main(args=argv, prog_name="tcnsearch", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"tcnsearch: error: {exc.format_message()}{hint}", err=True)
        return 2
    except UserError as exc:
        click.echo(f"tcnsearch: error: {exc}", err=True)
        return 2
    except (KeyboardInterrupt, click.Abort):
        click.echo("tcnsearch: interrupted", err=True)
        return 130
    except Exception as exc:  # a failure while running: one line, the traceback on request
        if os.environ.get("TCNSEARCH_DEBUG"):
            raise
        if (full := disk_full(exc)) is not None:
            click.echo(f"tcnsearch: failed: {full}", err=True)
            return 1
        click.echo(f"tcnsearch: failed: {type(exc).__name__}: {exc} (TCNSEARCH_DEBUG=1 shows the traceback)",
                   err=True)
        return 1
