"""The `tcnsearch` command: thin shells over library functions.

Exit codes (SPEC §7): 0 success; 2 bad input, with one line on stderr; 1 a failure while running.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import click

from tcnsearch import __version__
from tcnsearch._names import file_name
from tcnsearch._quiet import quiet_third_party
from tcnsearch.errors import UserError


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
@click.option("--gpu", default="auto", show_default=True, metavar="NAME",
              help="Target device: auto, cpu, v100, a100, h100, h200, b200, l4, l40s, t4, a10g, p100.")
@click.option("--lengths", callback=_ints, help="Sequence lengths, e.g. 1024,4096 (default 1024,4096).")
@click.option("--kernel-sizes", callback=_ints, help="Kernel sizes K (default 3,5,7,9,13,17).")
@click.option("--dilation-factors", callback=_ints, help="Dilation factors f (default 2,3,4,6,8,12,16).")
@click.option("--depths", callback=_ints, help="Depths D (default 2,3,4,5,6).")
@click.option("--per-block", callback=_ints, help="Convolutions per residual block B (default 1,2).")
@click.option("--channels", type=int, help="Channels C (default 64).")
@click.option("--batch", type=int, help="Batch size (default 1).")
@click.option("--ema-dim", type=int, help="EMA dimensions N of the baseline (default 16, MEGA's).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), help="Default float32.")
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
@click.option("--level", type=click.Choice(["op", "layer", "model"]),
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
        _print_profile(result, report)
    return 0


def _ci(row: dict, key: str) -> str:
    lo, hi = row[f"{key}_ci"]
    return f"{row[key]:.2f}x [{lo:.2f}, {hi:.2f}]"


def _print_profile(result, report: Path) -> None:
    from rich.console import Console

    from tcnsearch._tables import Col, print_table

    spec = result.spec
    train_mode = spec.mode == "train"
    cols = [Col("K,f,D,B"), Col("R", right=True, drop=3), Col("decision"),
            Col("fwd x [95% CI]", right=True, drop=0 if not train_mode else 2),
            Col("train x [95% CI]", right=True, drop=2 if not train_mode else 0), Col("pairs", right=True, drop=1)]
    rows = [[f"{r['kernel_size']},{r['dilation_factor']},{r['depth']},{r['per_block']}", str(r["receptive_field"]),
             r["decision"] + (" (pred.)" if r["source"] == "predicted" else ""), _ci(r, "speedup_fwd"),
             _ci(r, "speedup_fwdbwd"), str(r["n_pairs"])] for r in result.survivors + result.undecided]
    console = Console()
    print_table(f"{spec.level}-level profile on {result.device.device_name}, {result.device.backend} "
                f"(survives: {'train' if train_mode else 'fwd'} interval >= {spec.min_speedup}x at every length)",
                cols, rows, console)
    if result.device.is_fallback:
        console.print("[yellow]warning:[/] the native TCN kernel could not be built here (no C compiler?): these "
                      "are the PyTorch fallback's timings, stored under a fingerprint of their own")
    rejected = sum(r["decision"] == "rejected" for r in result.candidates)
    console.print(f"{len(result.survivors)} survive, {len(result.undecided)} undecided, {rejected} rejected of "
                  f"{len(result.candidates)} candidates ({result.predicted} predicted by the latency model); "
                  f"measured {result.measured} ({result.pairs} pairs), from the table {result.cached}, "
                  f"{len(result.failed)} failed; {result.elapsed_s:.1f} s. Stored in {result.storage}. "
                  f"Report: {report}")


def _list_profiles(storage, as_json) -> int:
    from tcnsearch._tables import Col, print_table
    from tcnsearch.profile import LatencyTable
    from tcnsearch.storage import create_engine

    table = LatencyTable(create_engine(storage, read_only=True), create=False)
    rows = table.summary() if table.has_tables() else []
    if as_json:
        _emit_json(rows)
        return 0
    if not rows:
        click.echo("nothing stored yet: run `tcnsearch profile`")
        return 0
    cols = [Col("device"), Col("software", flex=True, drop=2), Col("level"), Col("B x C x L"),
            Col("TCNs", right=True), Col("pairs", right=True, drop=3), Col("failed", right=True, drop=4),
            Col("last measured", drop=1)]
    print_table("Stored profiles", cols, [
        [r["device_name"], f"{r['backend']}, {r['threads']} threads, torch {r['torch_version']}, "
                           f"CUDA {r['cuda_version']}, {r['dtype']}", r["level"],
         f"{r['batch']} x {r['channels']} x {r['length']}{' bidir' if r['bidirectional'] else ''}", str(r["tcn"]),
         str(r["pairs"] or 0), str(r["failed"]), str(r["last"])[:16]] for r in rows])
    return 0


@cli.command("train")
@click.argument("task")
@click.option("--preset", type=click.Choice(["tiny", "cpu", "paper"]), default="tiny", show_default=True,
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
@click.option("--preset", type=click.Choice(["tiny", "cpu", "paper"]), default="tiny", show_default=True,
              help="tiny: seconds per trial on a laptop CPU; cpu: a meaningful CPU run; paper: the paper's sizes.")
@STORAGE_OPTION
@click.option("--trials", type=click.IntRange(min=1), help="Finished trials the study should hold (default: "
                                                           "the study file's budget).")
@click.option("--gpu", default="auto", show_default=True,
              help="Target device of the profile and the trials: auto, cpu, v100, a100, h100, ...")
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
@click.option("--sampler", type=click.Choice(["tpe", "gp", "random", "nsga2", "grid"]),
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
        _print_study(result)
    if result.interrupted or result.terminated:
        how = "terminated" if result.terminated else "interrupted"
        click.echo(f"tcnsearch: {how}; {result.interrupted} running trial(s) re-queued, "
                   f"--resume continues the study", err=True)
        return 143 if result.terminated else 130
    return 0


def _list_studies(as_json: bool) -> int:
    from tcnsearch._tables import Col, print_table
    from tcnsearch.search.spec import list_studies

    studies = list_studies()
    if as_json:
        _emit_json(studies)
        return 0
    print_table("Studies (tcnsearch study NAME)", [Col("NAME"), Col("task", drop=2), Col("from", drop=1),
                                                   Col("description", flex=True)],
                [[s["name"], s["task"], s["origin"], s["description"]] for s in studies])
    return 0


def _print_study(result, console=None) -> None:
    from rich.console import Console

    from tcnsearch._tables import Col, print_table

    metric = result.metric_names[0]
    cols = [Col("#", right=True), Col("state"), Col("TCN"), Col("R", right=True, drop=3),
            Col("latency ms", right=True, drop=2), Col(metric, right=True), Col("params", right=True, drop=4),
            Col("note", flex=True, drop=1)]
    best = {b["number"] for b in result.best}
    rows = []
    for t in result.trials:
        if "infeasible" in t or "warm_start_from" in t:
            continue  # never trained here: counted below
        searched = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items()
                             if k not in ("tcn", "K", "f", "D", "B"))
        rows.append([f"{t['number']}{' *' if t['number'] in best else ''}", t["state"],
                     str(t.get("tcn", t["params"].get("tcn", "-"))), str(t.get("receptive_field", "-")),
                     f"{t['latency_ms']:.3g}" if "latency_ms" in t else "-",
                     f"{t['values'][0]:.4f}" if t["values"] else "-", f"{t.get('num_parameters', '-')}",
                     t.get("fail_reason") or searched])
    console = console or Console()
    print_table(f"Study {result.study_name} ({result.task}, preset {result.preset}) on {result.device}", cols, rows,
                console)
    for note in result.warnings:
        console.print(f"[yellow]warning:[/] {note}")
    counts = ", ".join(f"{n} {s}" for s, n in result.counts.items() if n and s not in ("INFEASIBLE", "WARM_START"))
    apart = [f"{result.counts[k]} {what}" for k, what in (("INFEASIBLE", "proposals outside the survivors or the "
                                                                         "budget, never trained"),
                                                          ("WARM_START", "trials copied by the warm start"))
             if result.counts.get(k)]
    counts += f" ({'; '.join(apart)})" if apart else ""
    console.print(f"{counts}; this run: {result.ran} trial(s), {result.elapsed_s:.1f} s; {result.survivors} TCN "
                  f"structures survived the profile. Stored in {result.storage}. * best. Browse: tcnsearch "
                  f"dashboard --storage {result.storage}")


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


if __name__ == "__main__":
    sys.exit(main())
