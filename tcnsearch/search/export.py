"""From a study's pick to the training run its user wants next: the trial's config as a file, with where it
came from.

    trial = choose_trial(study, None)                  # the best; a Pareto study needs a number
    doc = export_config(study, trial, url, artifacts)  # task, preset, what was searched, provenance
    cfg = config_for(doc, preset="paper")              # the pick at the paper's sizes

What a study chose is its `searched` part: the TCN structure (`model.tcn`) and the searched
hyperparameters, dotted as the study file names them. The study file's own `train:` overrides at
the preset it ran (`study_train`) describe the proxy it trained at: they are applied only when the
export is trained at that same preset, where they reproduce the trial's model exactly.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tcnsearch import __version__
from tcnsearch.choices import PRESET_NAMES, TASKS
from tcnsearch.errors import UserError, read_yaml, validation_message
from tcnsearch.files import write_atomic
from tcnsearch.search.artifacts import artifact_folder, load_weights, open_store, weights_of
from tcnsearch.search.spec import spec_from_document
from tcnsearch.search.trials import INFEASIBLE, frozen, frozen_document, load_study, trained
from tcnsearch.storage import masked, resolve_url
from tcnsearch.structure import Structure
from tcnsearch.train import TrainConfig, make_config, merge_overrides, set_dotted


class ExportedConfig(BaseModel):
    """An exported training config (`tcnsearch export`), as `tcnsearch train --config` reads it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    task: Literal[TASKS]
    preset: Literal[PRESET_NAMES] = Field(description="the preset the study trained the trial at")
    searched: dict[str, Any] = Field(description="what the study chose, dotted: model.tcn and the searched keys")
    study_train: dict = Field(default_factory=dict, description="the study file's train: overrides at `preset`")
    provenance: dict = Field(default_factory=dict)


def choose_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """The trial to export or train: `number`, else the study's best (of its own COMPLETE trials).

    Raises:
        UserError: no such trial, one that did not finish (FAIL, PRUNED, RUNNING) or was never trained;
            no finished trial at all; a Pareto study without `number` (the front is named).
    """
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        trial = next((t for t in trials if t.number == number), None)
        if trial is None:
            raise UserError(f"study {study.study_name!r} has no trial {number} (its trials are 0-{len(trials) - 1})")
        if not trained(trial) or trial.state != TrialState.COMPLETE:
            why = trial.user_attrs.get(INFEASIBLE) or trial.user_attrs.get("fail_reason") or trial.state.name
            raise UserError(f"trial {number} of {study.study_name!r} did not finish its training ({why}); choose a "
                            "COMPLETE trial")
        return trial
    complete = [t for t in trials if trained(t) and t.state == TrialState.COMPLETE]
    if not complete:
        raise UserError(f"study {study.study_name!r} has no finished trial yet; run it (tcnsearch study --resume)")
    if len(study.directions) > 1:
        front = ", ".join(f"#{t.number} ({t.user_attrs.get('tcn', '?')}: "
                          + ", ".join(f"{v:.4g}" for v in t.values) + ")"
                          for t in sorted(study.best_trials, key=lambda t: t.values[0]) if trained(t))
        raise UserError(f"study {study.study_name!r} optimises {len(study.directions)} objectives: choose a trial of "
                        f"its Pareto front with --trial N: {front}")
    sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
    return min(complete, key=lambda t: (sign * t.value, t.number))


def searched_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """What a study chose for `trial`: its structure (`model.tcn`) and its searched hyperparameters."""
    structure = Structure.parse(trial.user_attrs["tcn"])
    return {"model.tcn": structure.as_dict(),
            **{k: v for k, v in trial.params.items() if k not in ("K", "f", "D", "B")}}


def export_config(study: optuna.Study, trial: optuna.trial.FrozenTrial, storage: str,
                  artifacts: Path | None = None) -> dict:
    """The trial's training config with its provenance (what `tcnsearch export` writes)."""
    document = frozen_document(study)
    if document is None:
        raise UserError(f"study {study.study_name!r} does not store the study file it was built from (an earlier "
                        "tcnsearch made it); start a new study with --warm-start to export from it")
    preset = study.user_attrs.get("preset", "tiny")
    spec = spec_from_document(document, preset, f"study {study.study_name!r}'s study file")
    survivors = {s.label: s for s in frozen(study)[0]}
    survivor = survivors.get(trial.user_attrs.get("tcn"))
    kept = weights_of(study, trial)
    metric = (study.metric_names or [spec.objective.metric])[0]
    provenance = {
        "study": study.study_name, "trial": trial.number, "storage": storage,
        "objective": {"metric": metric, "direction": study.directions[0].name.lower(), "value": trial.values[0]},
        "structure": trial.user_attrs["tcn"],
        "receptive_field": Structure.parse(trial.user_attrs["tcn"]).receptive_field,
        "device": study.user_attrs.get("device"), "profile_level": study.user_attrs.get("profile_level"),
        "profile_precision": study.user_attrs.get("profile_precision"),
        "num_parameters": trial.user_attrs.get("num_parameters"),
        "artifact": kept,
        "artifacts": str(artifacts) if kept and artifacts is not None else None,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "tcnsearch": __version__}
    if survivor is not None:
        provenance |= {"latency_ms": survivor.latency_ms, "speedup_fwdbwd": survivor.speedup_fwdbwd,
                       "speedup_fwdbwd_ci": list(survivor.speedup_fwdbwd_ci), "speedup_fwd": survivor.speedup_fwd,
                       "speedup_fwd_ci": list(survivor.speedup_fwd_ci), "latency_source": survivor.source}
    train = {k: v for k, v in spec.train.items() if k != "data_path"}  # the data set is the user's to name
    return ExportedConfig(task=spec.task, preset=preset, searched=searched_of(trial), study_train=train,
                          provenance=provenance).model_dump()


def write_export(doc: dict, path: Path) -> Path:
    header = (f"# Exported by tcnsearch {__version__} from study {doc['provenance'].get('study')}, trial "
              f"{doc['provenance'].get('trial')}. Train it with\n"
              f"#   tcnsearch train {doc['task']} --config {path.name}            (at its preset, {doc['preset']})\n"
              f"#   tcnsearch train {doc['task']} --config {path.name} --preset paper   (the pick at the paper's "
              "sizes)\n")
    return write_atomic(path, header + yaml.safe_dump(doc, sort_keys=False))


def read_export(path: str | Path) -> dict:
    """An export file, checked.

    Raises:
        UserError: unreadable, not YAML, or not an export (the field and the problem named).
    """
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not an exported training config (expected task, preset, searched)")
    try:
        return ExportedConfig(**doc).model_dump()
    except ValidationError as err:
        raise UserError(f"{path}: {validation_message(err)}") from None


def config_for(doc: dict, preset: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """The training config of an export at `preset` (default: the one it was trained at), `overrides` on top."""
    preset = preset or doc["preset"]
    chosen: dict = {}
    for dotted, value in doc["searched"].items():
        set_dotted(chosen, dotted, value)
    settings = merge_overrides(doc["study_train"] if preset == doc["preset"] else {}, chosen)
    return make_config(doc["task"], preset, merge_overrides(settings, overrides or {}))


def pick(task: str, *, config: str | Path | None = None, from_study: str | None = None, trial: int | None = None,
         storage: str | None = None, preset: str | None = None, overrides: dict | None = None,
         init_from_artifact: bool = False, artifacts: str | Path | None = None
         ) -> tuple[TrainConfig, dict | None, dict | None]:
    """What `tcnsearch train TASK --config FILE` or `--from-study STUDY` trains: (its config at `preset`, the
    stored weights to start from where shapes match (with `init_from_artifact`), the export it came from).

    Raises:
        UserError: both or neither source; a task that is not the export's; a missing study or trial; no
            stored weights for the trial, or weights that are not tcnsearch's. Before anything trains.
    """
    if config is not None and from_study is not None:
        raise UserError("give --config FILE or --from-study STUDY, not both")
    if config is None and from_study is None:
        raise UserError("--trial and --init-from-artifact need --config FILE or --from-study STUDY")
    if config is not None:
        doc = read_export(config)
    else:
        url = resolve_url(storage)
        study = load_study(from_study, url)
        doc = export_config(study, choose_trial(study, trial), masked(url), artifact_folder(url, artifacts).resolve())
    if doc["task"] != task:
        raise UserError(f"the config is for task {doc['task']!r}, not {task!r}: tcnsearch train {doc['task']} ...")
    cfg = config_for(doc, preset, overrides)
    weights = None
    if init_from_artifact:
        prov = doc["provenance"]
        if not prov.get("artifact"):
            raise UserError(f"trial {prov.get('trial')} of {prov.get('study')!r} kept no weights (only the study's "
                            "best keep_best trials do); train it from scratch, or pick one of those")
        folder = Path(artifacts or prov.get("artifacts") or "")
        weights = load_weights(open_store(folder, create=False), prov["artifact"], "--init-from-artifact")["model"]
    return cfg, weights, doc
