"""`tcnsearch train` (one training run) and `tcnsearch data` (download, prepare or generate data sets)."""

from __future__ import annotations

from pathlib import Path

import click

from tcnsearch.choices import PRESET_NAMES, TASKS
from tcnsearch.cli.options import STORAGE_OPTION, emit_json
from tcnsearch.errors import UserError


@click.command("train")
@click.argument("task")
@click.option("--preset", type=click.Choice(PRESET_NAMES),
              help="tiny (default): seconds on a laptop CPU; cpu: a meaningful CPU run; paper: the paper's sizes. "
                   "With --config or --from-study: the preset the study trained at, unless given.")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps (overrides the preset).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any setting, e.g. --set lr=3e-3 --set model.tcn.depth=3 (repeatable).")
@click.option("--data", "data_path", type=click.Path(path_type=Path),
              help="enwik8: a local enwik8.zip or enwik8 instead of the download; LRA: lra_release.gz (or a "
                   "task's .tar.gz), checked and unpacked into the cache, or its folder (ListOps without it is "
                   "generated).")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Train a study's pick: a config `tcnsearch export` wrote (its TCN and searched settings).")
@click.option("--from-study", metavar="STUDY", help="Train a stored study's pick directly (--trial N, default "
                                                    "its best).")
@click.option("--trial", type=click.IntRange(min=0), help="With --from-study: which trial.")
@click.option("--init-from-artifact", is_flag=True, help="Start from the trial's stored weights where the shapes "
                                                         "match (and say which do not).")
@click.option("--artifacts", type=click.Path(path_type=Path), metavar="DIR", envvar="TCNSEARCH_ARTIFACTS",
              help="The artifact folder (default: the export's, or beside the SQLite database).")
@STORAGE_OPTION
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="Save state here.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as one JSON document.")
def train_command(task, preset, steps, sets, data_path, config, from_study, trial, init_from_artifact, artifacts,
                  storage, checkpoint, resume, as_json):
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
    weights, picked = None, None
    if config or from_study or trial is not None or init_from_artifact:
        from tcnsearch.search.export import pick

        cfg, weights, picked = pick(task, config=config, from_study=from_study, trial=trial, storage=storage,
                                    preset=preset, overrides=overrides, init_from_artifact=init_from_artifact,
                                    artifacts=artifacts)
    else:
        cfg = make_config(task, preset or "tiny", overrides)
    result = train(cfg, checkpoint=checkpoint, resume=resume, progress=not as_json, init=weights)
    if as_json:
        emit_json(result.to_json() | {"config": cfg.model_dump(),
                                      "picked": picked["provenance"] if picked else None})
    else:
        for note in result.notes:
            click.echo(f"note: {note}")
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k in ("loss", "bpc", "accuracy"))
        click.echo(f"{task}: {result.status} after {result.steps} steps; eval {shown}; "
                   f"{result.num_parameters} parameters; {result.elapsed_s:.1f} s")
    if result.status == "diverged":
        click.echo(f"tcnsearch: failed: {result.reason}", err=True)
        return 1
    return 0


@click.group()
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
@click.argument("dataset", type=click.Choice(["enwik8", *(t for t in TASKS if t.startswith("lra-"))]))
@click.option("--data", "source", type=click.Path(path_type=Path), required=True,
              help="A local copy: enwik8.zip or the unzipped enwik8; LRA: lra_release.gz, a task's .tar.gz "
                   "(cifar-10-binary.tar.gz, aclImdb_v1.tar.gz) or the unpacked folder.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def data_prepare(dataset, source, directory, as_json):
    """Check and unpack a local copy of DATASET (an archive is checked before anything is written)."""
    from tcnsearch.data import enwik8, lra

    if dataset == "enwik8":
        path = enwik8.prepare(source, directory)
    else:
        path = lra.prepare(dataset.removeprefix("lra-"), source, directory)
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
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    doc = {"dataset": dataset, "path": str(path), "bytes": size, **extra}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"{dataset}: {path} ({doc['bytes']:,} bytes)")
