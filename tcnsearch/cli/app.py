"""The `tcnsearch` command: thin shells over library functions.

Exit codes (SPEC §7): 0 success; 2 bad input, with one line on stderr; 1 a failure while running.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

from tcnsearch import __version__
from tcnsearch._names import file_name
from tcnsearch._quiet import quiet_third_party
from tcnsearch.choices import GPUS, LEVELS, PRECISIONS, PRESET_NAMES, SAMPLERS, TASKS
from tcnsearch.errors import UserError

GPU_HELP = ", ".join(GPUS)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="tcnsearch")
def cli() -> None:
    """Latency-aware TCN architecture selection and hyperparameter search for TCNCA.

    Profile candidate TCN structures against MEGA's EMA on a device, then train the faster ones
    with Ray Tune, every trial stored in an Optuna database.
    """


def _ints(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def _receptive_field_rule(ctx, param, value: str | None):
    if value is None or value == "length":
        return value
    if value == "none":
        return "none"
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"expected a number, 'length' or 'none', got {value!r}") from None


def _emit_json(doc) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


STORAGE_OPTION = click.option(
    "--storage", envvar="TCNSEARCH_STORAGE", default=None, metavar="URL",
    help="SQLAlchemy URL of the database (default: $TCNSEARCH_STORAGE, else sqlite:///tcnsearch.db).")


@cli.command()
@click.option("--gpu", default="auto", show_default=True, metavar="NAME", help=f"Target device: {GPU_HELP}.")
@click.option("--lengths", callback=_ints, help="Sequence lengths, e.g. 1024,4096 (default 1024,4096).")
@click.option("--kernel-sizes", callback=_ints, help="Kernel sizes K (default 3,5,7,9,13,17).")
@click.option("--dilation-factors", callback=_ints, help="Dilation factors f (default 2,3,4,6,8,12,16).")
@click.option("--depths", callback=_ints, help="Depths D (default 2,3,4,5,6).")
@click.option("--per-block", callback=_ints, help="Convolutions per residual block B (default 1,2).")
@click.option("--channels", type=int, help="Channels C (default 64).")
@click.option("--batch", type=int, help="Batch size (default 1).")
@click.option("--ema-dim", type=int, help="EMA dimensions N of the baseline (default 16, MEGA's).")
@click.option("--dtype", type=click.Choice([*PRECISIONS, "float32", "bfloat16", "float16"]),
              help="The precision timed, as training runs it (default auto: fp32 on a CPU, bf16 on GPUs with native "
                   "bf16, fp16 on V100/T4).")
@click.option("--bidirectional", is_flag=True, default=None,
              help="Classification shapes: non-causal TCN against the bidirectional EMA.")
@click.option("--mode", type=click.Choice(["train", "infer"]),
              help="What 'faster' means: train = forward+backward (default), infer = forward.")
@click.option("--min-speedup", type=float, help="Survivors are at least this much faster at every length (1.0): "
                                               "the low end of the speedup's 95% interval.")
@click.option("--min-receptive-field", callback=_receptive_field_rule, metavar="N|length|none",
              help="Keep structures with R >= N; 'length' (default): R >= the longest length; 'none'.")
@click.option("--force", is_flag=True, help="Measure again what is already stored.")
@click.option("--ray-address", metavar="ADDR", envvar="TCNSEARCH_RAY_ADDRESS",
              help="Ray cluster to run on when the GPU is not local (default: $TCNSEARCH_RAY_ADDRESS).")
@click.option("--level", type=click.Choice(LEVELS),
              help="What is timed: op (TCN vs EMA operator, default), layer (a MEGA layer with either), model "
                   "(the whole model: a training step for --mode train, a forward for infer).")
@click.option("--precision", type=float, help="Stop measuring a candidate once its speedup's 95%% interval is "
                                              "narrower than this fraction of the speedup (0.05).")
@click.option("--max-time", type=float, help="Seconds of measuring per candidate and length at most (1.0).")
@click.option("--min-pairs", type=int, help="Pairs per candidate and length at least (6).")
@click.option("--threads", type=int, help="CPU threads to measure with (default: every core but one, which takes "
                                         "the OS's and the neighbours' work).")
@click.option("--undecided", type=click.Choice(["keep", "drop"]),
              help="What a study does with candidates whose interval still straddles --min-speedup (drop).")
@click.option("--strategy", type=click.Choice(["adaptive", "full"]),
              help="adaptive (default): a spread-out sample, then only what the latency model cannot decide; "
                   "full: measure every candidate.")
@click.option("--predict", is_flag=True, help="Measure nothing: fill the grid from the latency model fitted to "
                                              "what is stored for this device and level.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML report (default dashboards/profile-<device>.html).")
@click.option("--list", "list_only", is_flag=True, help="Show what is stored per device and shape, measure nothing.")
@click.option("--study", "study_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Take the grid and shapes from a study file's `profile:` section; flags override it.")
@STORAGE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def profile(gpu, lengths, kernel_sizes, dilation_factors, depths, per_block, channels, batch, ema_dim, dtype,
            bidirectional, mode, min_speedup, min_receptive_field, force, ray_address, level, precision, max_time,
            min_pairs, threads, undecided, strategy, predict, out, list_only, study_file, storage, as_json):
    """Time candidate TCN structures against MEGA's EMA on a device and keep the faster ones.

    Each candidate runs in interleaved blocks with the EMA; each pair of blocks gives one speedup,
    and a speedup is their median with a bootstrap 95% interval. Survivors: interval above
    --min-speedup at every length; rejected: below it; undecided: still straddling it at the time
    cap. Every pair is stored in the database; running again continues what is unfinished.
    """
    from tcnsearch.cli import printers
    from tcnsearch.profile import make_spec, run_profile
    from tcnsearch.report import write_profile_report

    if list_only:
        return _list_profiles(storage, as_json)
    given = {
        "lengths": lengths, "kernel_sizes": kernel_sizes, "dilation_factors": dilation_factors, "depths": depths,
        "per_block": per_block, "channels": channels, "batch": batch, "ema_dim": ema_dim, "dtype": dtype,
        "bidirectional": bidirectional, "mode": mode, "min_speedup": min_speedup,
        "min_receptive_field": min_receptive_field, "level": level, "precision": precision,
        "max_time": max_time, "min_pairs": min_pairs, "threads": threads, "undecided": undecided,
        "strategy": strategy,
    }
    given = {k: v for k, v in given.items() if v is not None}  # unset flags keep the spec's defaults
    if given.get("min_receptive_field") == "none":
        given["min_receptive_field"] = None
    spec = make_spec(study_file, **given)
    if not spec.candidates():
        raise UserError(f"no candidate reaches the receptive field {spec.required_receptive_field}; "
                        "widen the grid or lower --min-receptive-field")
    result = run_profile(spec, gpu=gpu, storage=storage, force=force, ray_address=ray_address, progress=not as_json,
                         predict=predict)
    slug = file_name(re.sub(r"[^a-z0-9]+", "-", result.device.device_name.lower()))
    report = write_profile_report(result, out or Path("dashboards") / f"profile-{slug}-{spec.level}.html")
    if as_json:
        _emit_json(result.to_json() | {"report": str(report)})
    else:
        printers.print_profile(result, report)
    return 0


def _list_profiles(storage, as_json) -> int:
    from tcnsearch.cli import printers
    from tcnsearch.profile import LatencyTable
    from tcnsearch.storage import create_engine

    table = LatencyTable(create_engine(storage, read_only=True), create=False)
    rows = table.summary() if table.has_tables() else []
    if as_json:
        _emit_json(rows)
    else:
        printers.print_stored_profiles(rows)
    return 0


@cli.command("train")
@click.argument("task")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="tiny", show_default=True,
              help="tiny: seconds on a laptop CPU; cpu: a meaningful CPU run; paper: the paper's sizes.")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps (overrides the preset).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any setting, e.g. --set lr=3e-3 --set model.tcn.depth=3 (repeatable).")
@click.option("--data", "data_path", type=click.Path(path_type=Path),
              help="enwik8: a local enwik8.zip or enwik8 instead of the download; LRA: the unpacked "
                   "lra_release folder (ListOps without it is generated).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="Save state here.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as one JSON document.")
def train_command(task, preset, steps, sets, data_path, checkpoint, resume, as_json):
    """Train one model on TASK and report its final metrics.

    TASK: assoc-recall, enwik8, lra-listops, lra-text, lra-retrieval, lra-image, lra-pathfinder, lra-pathx.
    """
    from tcnsearch.train import make_config, parse_set, train

    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")

    overrides = parse_set(list(sets))
    if steps is not None:
        overrides["steps"] = steps
    if data_path is not None:
        overrides["data_path"] = str(data_path)
    if resume and checkpoint is None:
        raise UserError("--resume needs --checkpoint PATH")
    cfg = make_config(task, preset, overrides)
    result = train(cfg, checkpoint=checkpoint, resume=resume, progress=not as_json)
    if as_json:
        _emit_json(result.to_json() | {"config": cfg.model_dump()})
    else:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k in ("loss", "bpc", "accuracy"))
        click.echo(f"{task}: {result.status} after {result.steps} steps; eval {shown}; "
                   f"{result.num_parameters} parameters; {result.elapsed_s:.1f} s")
    if result.status == "diverged":
        click.echo(f"tcnsearch: failed: {result.reason}", err=True)
        return 1
    return 0


@cli.command("study")
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
        _emit_json(result.to_json())
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

    studies = list_studies()
    if as_json:
        _emit_json(studies)
    else:
        printers.print_studies(studies)
    return 0


@cli.command("dashboard")
@STORAGE_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: everyone).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard_command(storage, host, port):
    """Serve optuna-dashboard on the database (Ctrl-C stops it)."""
    from tcnsearch.report import serve_dashboard

    serve_dashboard(storage, host=host, port=port)
    return 0


@cli.command("report")
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
        _emit_json({"study": study, "report": str(path)})
    else:
        click.echo(f"{study}: report written to {path}")
    return 0


@cli.group()
def data():
    """Download, prepare or generate data sets."""


@data.command("download")
@click.argument("dataset", type=click.Choice(["enwik8"]))
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to keep it (default $TCNSEARCH_DATA, else ~/.cache/tcnsearch/data).")
@click.option("--json", "as_json", is_flag=True)
def data_download(dataset, directory, as_json):
    """Download DATASET from its official source and check it."""
    from tcnsearch.data import enwik8

    path = enwik8.download(directory)
    _report_data(dataset, path, as_json)


@data.command("prepare")
@click.argument("dataset", type=click.Choice(["enwik8"]))
@click.option("--data", "source", type=click.Path(path_type=Path), required=True,
              help="A local copy: enwik8.zip or the unzipped enwik8.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def data_prepare(dataset, source, directory, as_json):
    """Check and unpack a local copy of DATASET."""
    from tcnsearch.data import enwik8

    path = enwik8.prepare(source, directory)
    _report_data(dataset, path, as_json)


@data.command("generate")
@click.argument("dataset", type=click.Choice(["assoc-recall"]))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="A .pt file.")
@click.option("--examples", type=click.IntRange(min=1), default=10000, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=3), default=64, show_default=True)
@click.option("--vocab-size", type=click.IntRange(min=4), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def data_generate(dataset, out, examples, seq_len, vocab_size, seed, as_json):
    """Generate a synthetic DATASET into a file (inputs and targets tensors)."""
    import torch

    from tcnsearch.data import associative_recall

    x, y = associative_recall(examples, seq_len, vocab_size, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"inputs": x, "targets": y, "seq_len": seq_len, "vocab_size": vocab_size, "seed": seed}, out)
    _report_data(dataset, out, as_json, examples=examples)


def _report_data(dataset: str, path: Path, as_json: bool, **extra) -> None:
    doc = {"dataset": dataset, "path": str(path), "bytes": path.stat().st_size, **extra}
    if as_json:
        _emit_json(doc)
    else:
        click.echo(f"{dataset}: {path} ({doc['bytes']:,} bytes)")


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
        click.echo(f"tcnsearch: failed: {type(exc).__name__}: {exc} (TCNSEARCH_DEBUG=1 shows the traceback)",
                   err=True)
        return 1
