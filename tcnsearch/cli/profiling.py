"""`tcnsearch profile`: which TCN structures beat MEGA's EMA on a device."""

from __future__ import annotations

import re
from pathlib import Path

import click

from tcnsearch._names import file_name
from tcnsearch.choices import LEVELS, PRECISIONS
from tcnsearch.cli.options import GPU_HELP, STORAGE_OPTION, emit_json, ints, show
from tcnsearch.errors import UserError


def _receptive_field_rule(ctx, param, value: str | None):
    if value is None or value == "length":
        return value
    if value == "none":
        return "none"
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"expected a number, 'length' or 'none', got {value!r}") from None


@click.command()
@click.option("--gpu", default="auto", show_default=True, metavar="NAME", help=f"Target device: {GPU_HELP}.")
@click.option("--lengths", callback=ints, help="Sequence lengths, e.g. 1024,4096 (default 1024,4096).")
@click.option("--kernel-sizes", callback=ints, help="Kernel sizes K (default 3,5,7,9,13,17).")
@click.option("--dilation-factors", callback=ints, help="Dilation factors f (default 2,3,4,6,8,12,16).")
@click.option("--depths", callback=ints, help="Depths D (default 2,3,4,5,6).")
@click.option("--per-block", callback=ints, help="Convolutions per residual block B (default 1,2).")
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
@click.option("--max-candidates", type=int, help="Refuse a grid of more structures than this (10,000), counted "
                                                 "before any is built.")
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
            min_pairs, threads, undecided, strategy, max_candidates, predict, out, list_only, study_file, storage,
            as_json):
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
        "strategy": strategy, "max_candidates": max_candidates,
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
        emit_json(result.to_json() | {"report": str(report)})
    else:
        printers.print_profile(result, report)
    return 0


def _list_profiles(storage, as_json) -> int:
    from tcnsearch.cli import printers
    from tcnsearch.profile import LatencyTable
    from tcnsearch.storage import create_engine

    table = LatencyTable(create_engine(storage, read_only=True), create=False)
    show(table.summary() if table.has_tables() else [], as_json, printers.print_stored_profiles)
    return 0
