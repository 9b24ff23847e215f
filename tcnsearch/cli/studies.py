"""`tcnsearch study` (train the survivors into an Optuna study), `report` and `dashboard` (look at it)."""

from __future__ import annotations

from pathlib import Path

import click

from tcnsearch._names import file_name
from tcnsearch.choices import PRESET_NAMES, SAMPLERS
from tcnsearch.cli.options import GPU_HELP, STORAGE_OPTION, emit_json, show


@click.command("study")
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the study files NAME can name (./studies, then the "
                                                         "shipped ones) and run nothing.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="tiny", show_default=True,
              help="tiny: seconds per trial on a laptop CPU; cpu: a meaningful CPU run; paper: the paper's sizes.")
@STORAGE_OPTION
@click.option("--trials", type=click.IntRange(min=1), help="Finished trials the study should hold (default: "
                                                           "the study file's budget).")
@click.option("--gpu", default="auto", show_default=True, metavar="NAME",
              help=f"Target device of the profile and the trials: {GPU_HELP}.")
@click.option("--ray-address", metavar="HOST:PORT", envvar="TCNSEARCH_RAY_ADDRESS",
              help="Join this Ray cluster (default: $TCNSEARCH_RAY_ADDRESS, else a local Ray runtime).")
@click.option("--resume", is_flag=True, help="Continue the stored study: finished trials stay, interrupted "
                                             "ones run again.")
@click.option("--multi-objective", is_flag=True, help="Optimise the objective and the TCN's latency together "
                                                      "(a Pareto front).")
@click.option("--study-name", help="Name in the database (default: NAME-PRESET, -pareto if multi-objective).")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Trials at once (default: the study file's).")
@click.option("--data", "data_path", type=click.Path(path_type=Path),
              help="enwik8: a local enwik8.zip or enwik8 (default: download once); LRA: the lra_release folder.")
@click.option("--sampler", type=click.Choice(SAMPLERS),
              help="The Optuna sampler (default: the study file's sampler:, else the GP).")
@click.option("--enqueue", multiple=True, metavar="paper|K,f,D,B",
              help="Train these structures first: 'paper' (TCNCA's K 17, B 1, D 4 and 3, f covering the length) "
                   "or K,f,D,B (repeatable).")
@click.option("--warm-start", metavar="STUDY", help="Seed a new study with the finished trials of STUDY (same "
                                                    "database) where their spaces agree.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def study_command(name, list_only, preset, storage, trials, gpu, ray_address, resume, multi_objective, study_name,
                  max_concurrent, data_path, sampler, enqueue, warm_start, as_json):
    """Train TCNCA models drawn from the profile's survivors; every trial lands in the Optuna study.

    NAME is a shipped study (tcnsearch study --list), a file in ./studies (without .yaml) or a path
    to a study file. The profile runs first where the latency table lacks it.
    """
    from tcnsearch.cli import printers
    from tcnsearch.search import run_study

    if list_only:
        return _list_studies(as_json)
    if name is None:
        raise click.UsageError("Missing argument 'NAME': a study name (tcnsearch study --list) or a study file")

    result = run_study(name, preset=preset, storage=storage, trials=trials, gpu=gpu.lower(),
                       ray_address=ray_address, resume=resume, multi_objective=multi_objective,
                       study_name=study_name, max_concurrent=max_concurrent, progress=not as_json,
                       data_path=str(data_path) if data_path else None, sampler=sampler, enqueue=list(enqueue),
                       warm_start=warm_start)
    if as_json:
        emit_json(result.to_json())
    else:
        printers.print_study(result)
    if result.interrupted or result.terminated:
        how = "terminated" if result.terminated else "interrupted"
        click.echo(f"tcnsearch: {how}; {result.interrupted} running trial(s) re-queued, "
                   f"--resume continues the study", err=True)
        return 143 if result.terminated else 130
    return 0


def _list_studies(as_json: bool) -> int:
    from tcnsearch.cli import printers
    from tcnsearch.search import list_studies

    show(list_studies(), as_json, printers.print_studies)
    return 0


@click.command("dashboard")
@STORAGE_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: everyone).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard_command(storage, host, port):
    """Serve optuna-dashboard on the database (Ctrl-C stops it)."""
    from tcnsearch.report import serve_dashboard

    serve_dashboard(storage, host=host, port=port)
    return 0


@click.command("report")
@click.argument("study")
@STORAGE_OPTION
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file (default dashboards/study-STUDY.html).")
@click.option("--json", "as_json", is_flag=True)
def report_command(study, storage, out, as_json):
    """Write a plotly HTML report of a stored STUDY: history, Pareto front, importances, its profile."""
    from tcnsearch.report import write_study_report

    path = write_study_report(study, storage, out or Path("dashboards") / f"study-{file_name(study)}.html")
    if as_json:
        emit_json({"study": study, "report": str(path)})
    else:
        click.echo(f"{study}: report written to {path}")
    return 0
