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
              help="enwik8: a local enwik8.zip or enwik8 (default: download once); LRA: lra_release.gz "
                   "(or a task's .tar.gz) or its folder.")
@click.option("--sampler", type=click.Choice(SAMPLERS),
              help="The Optuna sampler (default: the study file's sampler:, else the GP).")
@click.option("--enqueue", multiple=True, metavar="paper|K,f,D,B",
              help="Train these structures first: 'paper' (TCNCA's K 17, B 1, D 4 and 3, f covering the length) "
                   "or K,f,D,B (repeatable).")
@click.option("--warm-start", metavar="STUDY", help="Seed a new study with the finished trials of STUDY (same "
                                                    "database) where their spaces agree.")
@click.option("--artifacts", type=click.Path(path_type=Path), metavar="DIR", envvar="TCNSEARCH_ARTIFACTS",
              help="Where the best trials' weights go (default: beside the SQLite database, NAME-artifacts/).")
@click.option("--runs", metavar="DIR", envvar="TCNSEARCH_RUNS",
              help="Where Ray Tune keeps the trials' checkpoints (default: a private folder of this run; on a "
                   "cluster of several machines a folder every node reaches: $TCNSEARCH_RUNS).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def study_command(name, list_only, preset, storage, trials, gpu, ray_address, resume, multi_objective, study_name,
                  max_concurrent, data_path, sampler, enqueue, warm_start, artifacts, runs, as_json):
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
                       warm_start=warm_start, artifacts=artifacts, runs=runs)
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
@click.option("--artifacts", type=click.Path(path_type=Path), metavar="DIR", envvar="TCNSEARCH_ARTIFACTS",
              help="The trials' weights to list and download (default: beside the SQLite database).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: everyone).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard_command(storage, artifacts, host, port):
    """Serve optuna-dashboard on the database, with the best trials' weights (Ctrl-C stops it)."""
    from tcnsearch.report import serve_dashboard

    serve_dashboard(storage, host=host, port=port, artifacts=artifacts)
    return 0


@click.command("report")
@click.argument("studies", nargs=-1, required=True)
@STORAGE_OPTION
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file (default dashboards/study-STUDY.html, or dashboards/compare-A-B.html).")
@click.option("--json", "as_json", is_flag=True)
def report_command(studies, storage, out, as_json):
    """Write a plotly HTML report of a stored study (history, Pareto front, importances, its profile), or of
    several side by side (histories, fronts, best trials; a proxy study and its promotion)."""
    from tcnsearch.report import write_comparison, write_study_report

    if len(studies) == 1:
        default = Path("dashboards") / f"study-{file_name(studies[0])}.html"
        path = write_study_report(studies[0], storage, out or default)
    else:
        default = Path("dashboards") / f"compare-{file_name('-'.join(studies))}.html"
        path = write_comparison(list(studies), storage, out or default)
    if as_json:
        emit_json({"studies": list(studies), "report": str(path)})
    else:
        click.echo(f"{', '.join(studies)}: report written to {path}")
    return 0


@click.command("export")
@click.argument("study")
@click.option("--trial", type=click.IntRange(min=0), help="Which trial (default: the study's best; a Pareto "
                                                          "study needs one).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The YAML file (default STUDY-trial-N.yaml here).")
@click.option("--artifacts", type=click.Path(path_type=Path), metavar="DIR", envvar="TCNSEARCH_ARTIFACTS",
              help="The study's artifact folder (default: beside the SQLite database).")
@STORAGE_OPTION
@click.option("--json", "as_json", is_flag=True)
def export_command(study, trial, out, artifacts, storage, as_json):
    """Write a STUDY's pick as a training config, with where it came from (tcnsearch train --config)."""
    from tcnsearch.search import load_study
    from tcnsearch.search.artifacts import artifact_folder
    from tcnsearch.search.export import choose_trial, export_config, write_export
    from tcnsearch.storage import masked, resolve_url

    url = resolve_url(storage)
    stored = load_study(study, url)
    chosen = choose_trial(stored, trial)
    doc = export_config(stored, chosen, masked(url), artifact_folder(url, artifacts).resolve())
    path = write_export(doc, out or Path(f"{file_name(study)}-trial-{chosen.number}.yaml"))
    if as_json:
        emit_json(doc | {"path": str(path)})
    else:
        prov = doc["provenance"]
        click.echo(f"{study}: trial {chosen.number} ({prov['structure']}, {prov['objective']['metric']} "
                   f"{prov['objective']['value']:.4g}) written to {path}")
        if prov.get("artifact"):
            click.echo(f"its weights: artifact {prov['artifact']} in {prov['artifacts']}")
        click.echo(f"train it with: tcnsearch train {doc['task']} --config {path} [--preset paper]"
                   + (" [--init-from-artifact]" if prov.get("artifact") else ""))
    return 0


@click.command("promote")
@click.argument("study")
@click.option("--top", type=click.IntRange(min=2), default=5, show_default=True,
              help="How many of the study's best configurations to train again.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), help="The preset to train them at (default: the study's).")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps at that preset (warm-up capped at 10%).")
@STORAGE_OPTION
@click.option("--gpu", default="auto", show_default=True, metavar="NAME", help=f"Where to train: {GPU_HELP}.")
@click.option("--ray-address", metavar="HOST:PORT", envvar="TCNSEARCH_RAY_ADDRESS",
              help="Join this Ray cluster (default: $TCNSEARCH_RAY_ADDRESS, else a local Ray runtime).")
@click.option("--study-name", help="The promoted study's name (default: STUDY-promoted-PRESET[-STEPS]).")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Trials at once (default: the study file's).")
@click.option("--artifacts", type=click.Path(path_type=Path), metavar="DIR", envvar="TCNSEARCH_ARTIFACTS",
              help="Where the weights go.")
@click.option("--runs", metavar="DIR", envvar="TCNSEARCH_RUNS", help="Where Ray Tune keeps the checkpoints.")
@click.option("--data", "data_path", type=click.Path(path_type=Path),
              help="The data set (default: the one the study trained on).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def promote_command(study, top, preset, steps, storage, gpu, ray_address, study_name, max_concurrent, artifacts,
                    runs, data_path, as_json):
    """Train a STUDY's top configurations again at a larger preset, and say whether the ranking held.

    Reports Kendall's tau between the proxy's ranking and the promoted one (with a bootstrap 95%
    interval) and the regret of the proxy's pick at the larger scale; both studies' dashboard notes
    and reports show the same figures.
    """
    from tcnsearch.cli import printers
    from tcnsearch.search.promote import promote

    result = promote(study, top=top, preset=preset, steps=steps, storage=storage, ray_address=ray_address,
                     gpu=gpu.lower(), study_name=study_name, progress=not as_json, artifacts=artifacts, runs=runs,
                     max_concurrent=max_concurrent, data_path=str(data_path) if data_path else None)
    show(result.to_json() if as_json else result, as_json, printers.print_promotion)
    return 0
