"""The best trials' final weights, as Optuna artifacts in a store that stays bounded.

    store = open_store(artifact_folder(url, None))          # beside the SQLite database by default
    keeper = ArtifactKeeper(study, store, keep_best=3)
    keeper.offer(trial_number, "final.pt")   # uploaded if the trial is among the best; trials that fell out removed

A trial's weights travel from its Ray worker in its last Tune checkpoint (`final.pt`: the model's
state and the config that built it, tensors and plain values only); the driver uploads them with
Optuna's FileSystemArtifactStore, which `tcnsearch dashboard` serves, so the trial's page in
optuna-dashboard lists and downloads them. A trial is ranked, so its weights kept, only once it is
COMPLETE, and Optuna's storages refuse any change to a finished trial's attributes; so the meta goes
where optuna-dashboard also looks for a trial's artifacts, a study system attribute
`dashboard:artifacts:<trial id>:<artifact id>`. A trial that falls out of the best `keep_best` is
removed from the store and its meta set to null, as optuna-dashboard removes one. Artifacts are only
ever read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from tcnsearch.compat import optuna as optuna_private
from tcnsearch.errors import UserError
from tcnsearch.search.trials import trained
from tcnsearch.storage import resolve_url, sqlite_path

META_PREFIX = "dashboard:artifacts:"  # + "<trial id>:<artifact id>": a study system attr, the artifact's meta
WEIGHTS_FILE = "final.pt"  # the name the dashboard shows for a trial's weights


def artifact_folder(url: str, given: str | Path | None) -> Path:
    """Where a study's artifacts go: `given`, else beside its SQLite database (`tcnsearch.db` ->
    `tcnsearch-artifacts/`), else `./tcnsearch-artifacts`."""
    if given:
        return Path(given)
    path = sqlite_path(resolve_url(url))
    if path:
        return Path(path).with_name(Path(path).stem + "-artifacts")
    return Path("tcnsearch-artifacts")


def check_store(folder: Path) -> None:
    """Refuse, before anything runs (and without creating anything), a folder that cannot take artifacts.

    Raises:
        UserError: the folder is a file, is not writable, or cannot be created.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--artifacts {folder}: is a file, not a folder; name a folder for the trials' weights")
    existing = next((p for p in (folder, *folder.absolute().parents) if p.exists()), Path("/"))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"--artifacts {folder}: {existing} is not a writable folder; pass --artifacts another one")


def open_store(folder: Path, create: bool = True) -> FileSystemArtifactStore:
    """The artifact store in `folder` (created if `create`).

    Raises:
        UserError: the folder is a file, or cannot be written (or, with `create` off, does not exist).
    """
    folder = Path(folder)
    if not create:
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--artifacts {folder}: is a file, not a folder; pass --artifacts the folder the study "
                            "wrote to")
        if not folder.is_dir():
            raise UserError(f"--artifacts {folder}: no such folder; pass --artifacts the folder the study wrote to")
        return FileSystemArtifactStore(str(folder))
    check_store(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def _meta(value) -> dict | None:
    return json.loads(value) if isinstance(value, str) else value


def _prefix(trial: optuna.trial.FrozenTrial) -> str:
    return f"{META_PREFIX}{optuna_private.trial_id(trial)}:"


def kept_artifacts(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, dict]:
    """The trial's artifacts still in the store: id -> meta (removed ones, whose meta is null, left out)."""
    prefix, out = _prefix(trial), {}
    for key, value in optuna_private.system_attrs(study).items():
        if key.startswith(prefix) and _meta(value):
            out[key.removeprefix(prefix)] = _meta(value)
    return out


def weights_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str | None:
    """The id of the trial's kept weights, if any."""
    return next(iter(kept_artifacts(study, trial)), None)


def kept_weights(study: optuna.Study) -> dict[int, str]:
    """Every kept trial's weights: trial number -> artifact id (one read of the study's attributes)."""
    by_id = {}
    for key, value in optuna_private.system_attrs(study).items():
        if key.startswith(META_PREFIX) and _meta(value):
            trial_id, _, artifact_id = key.removeprefix(META_PREFIX).partition(":")
            by_id[int(trial_id)] = artifact_id
    return {t.number: by_id[optuna_private.trial_id(t)] for t in study.get_trials(deepcopy=False)
            if optuna_private.trial_id(t) in by_id}


def load_weights(store: FileSystemArtifactStore, artifact_id: str, where: str = "the artifact") -> dict:
    """An artifact's weights and config, read safely (tensors and plain values only, nothing that runs).

    Raises:
        UserError: not found, or not an artifact tcnsearch wrote.
    """
    try:
        with store.open_reader(artifact_id) as fh:
            doc = torch.load(fh, map_location="cpu", weights_only=True)
    except ArtifactNotFound:
        raise UserError(f"{where} {artifact_id}: not in the artifact store (removed, or another folder); "
                        "pass --artifacts the folder the study wrote to") from None
    except Exception as err:  # weights_only refuses other objects; a torn or foreign file raises others
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"{where} {artifact_id}: not tcnsearch weights ({reason})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict) or not isinstance(doc.get("config"), dict):
        raise UserError(f"{where} {artifact_id}: not tcnsearch weights (expected the model's state and its config)")
    return doc


class ArtifactKeeper:
    """Keeps the final weights of a study's best `keep_best` trials in `store`, and only theirs."""

    def __init__(self, study: optuna.Study, store: FileSystemArtifactStore, keep_best: int):
        self.study, self.store, self.keep_best = study, store, keep_best

    def best(self) -> list[optuna.trial.FrozenTrial]:
        """The best `keep_best` of the study's own COMPLETE trials (a Pareto study: its front, by the first
        objective)."""
        complete = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if trained(t)]
        if len(self.study.directions) > 1:
            front = {t.number for t in self.study.best_trials}
            complete = [t for t in complete if t.number in front]
        sign = 1 if self.study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
        return sorted(complete, key=lambda t: (sign * t.values[0], t.number))[:self.keep_best]

    def offer(self, trial_number: int, path: str | Path) -> str | None:
        """Upload `path` as the (COMPLETE) trial's weights if it is among the best; remove the weights of any
        trial that is no longer. Safe to repeat. Returns the artifact's id (None: not kept)."""
        if self.keep_best == 0:
            return None
        best = {t.number: t for t in self.best()}
        trial = best.get(trial_number)
        if trial is not None and not kept_artifacts(self.study, trial):
            artifact_id = str(uuid.uuid4())
            with open(path, "rb") as fh:
                self.store.write(artifact_id, fh)  # the file first: a crash leaves a stray file, not a dead link
            meta = {"artifact_id": artifact_id, "filename": WEIGHTS_FILE, "mimetype": "application/octet-stream",
                    "encoding": None}
            self._set(trial, artifact_id, meta)
        self.prune(set(best))
        return weights_of(self.study, trial) if trial is not None else None

    def prune(self, best: set[int]) -> None:
        """Remove the weights of every trial not in `best` (numbers), from the store and from the study."""
        for t in self.study.get_trials(deepcopy=False):
            if t.number in best:
                continue
            for artifact_id in kept_artifacts(self.study, t):
                with contextlib.suppress(ArtifactNotFound):  # removed already: this is a repeated call
                    self.store.remove(artifact_id)
                self._set(t, artifact_id, None)

    def _set(self, trial: optuna.trial.FrozenTrial, artifact_id: str, meta: dict | None) -> None:
        optuna_private.set_system_attr(self.study, _prefix(trial) + artifact_id, json.dumps(meta))
