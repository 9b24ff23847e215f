"""Study files: `studies/NAME.yaml`, one per study, validated here.

A study file names the task, the objective, the search space, the profile that picks the TCN
structures, the budget and the scheduler. Its `presets:` section overlays any of these per
preset (tiny, cpu, paper); each preset's training settings start from `train.PRESETS`.

    task: assoc-recall
    objective: {metric: accuracy, mode: max}
    space:                                    # dotted TrainConfig keys; the TCN comes from the profile
      lr: {low: 1.0e-3, high: 3.0e-2, log: true}
      model.dropout: {choices: [0.0, 0.1]}
    profile: {kernel_sizes: [3, 5], depths: [3, 4], min_receptive_field: 32}
    budget: {trials: 16, max_concurrent: 2, cpus_per_trial: 1}
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}
    presets:
      tiny: {budget: {trials: 8}, train: {steps: 300}}
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from tcnsearch._names import SAFE, file_name
from tcnsearch.choices import PRESET_NAMES
from tcnsearch.errors import UserError, read_yaml, validation_message
from tcnsearch.profile import ProfileSpec
from tcnsearch.search.samplers import Sampler
from tcnsearch.structure import Structure
from tcnsearch.train import PRESETS, TrainConfig, get_dotted, make_config, merge_overrides, set_dotted

STRUCTURE_PARAMS = ("K", "f", "D", "B", "tcn")  # drawn from the profile's survivors, never from `space`


class Param(BaseModel):
    """One searched hyperparameter: `choices`, or a range `low`..`high` (ints give an integer range)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    choices: list[float | int | str | bool | None] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either choices: [...] or low: and high:")
        if self.choices is not None and not self.choices:
            raise ValueError("choices must not be empty")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.choices is not None:
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.is_int:
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1),
                                                        log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, step=self.step, log=self.log)

    def suggest(self, trial, name: str):
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.is_int:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class Objective(BaseModel):
    """What a study optimises, and the latency budget a trained model must keep, if any.

    `max_latency_ms` (the TCN's profiled latency at the study's level) and `min_speedup` (over the
    profile's EMA baseline at that level) are constraints: a structure over budget is never
    trained, and the sampler is told it is infeasible (`trial.set_constraint`).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    metric: Literal["loss", "accuracy", "bpc"] = "loss"
    mode: Literal["min", "max"] = "min"
    max_latency_ms: float | None = Field(default=None, gt=0)
    min_speedup: float | None = Field(default=None, gt=0)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    trials: int = Field(default=16, ge=1, description="finished trials the study should hold")
    max_concurrent: int = Field(default=2, ge=1)
    cpus_per_trial: float = Field(default=1, gt=0)
    gpus_per_trial: float = Field(default=0, ge=0, description="fractions share a GPU")
    max_failures: int = Field(default=1, ge=0, description="retries of a trial whose worker died")


class Scheduler(BaseModel):
    """ASHA over evaluations: a trial is one rung further each `eval_every` steps."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(default=2, ge=1, description="evaluations before a trial can be stopped")
    reduction_factor: float = Field(default=2, gt=1)


class StudySpec(BaseModel):
    """A study file with one preset applied."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(description="letters, digits, '.', '_', '-': it names the study and its files")
    task: str
    preset: Literal[PRESET_NAMES] = "tiny"
    description: str = ""
    objective: Objective = Field(default_factory=Objective)
    train: dict = Field(default_factory=dict, description="TrainConfig overrides on the preset's defaults")
    space: dict[str, Param] = Field(default_factory=dict)
    profile: dict = Field(default_factory=dict, description="ProfileSpec fields; shapes default to training's")
    budget: Budget = Field(default_factory=Budget)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    sampler: Sampler = Field(default_factory=Sampler)
    heartbeat_s: int = Field(default=10, ge=1, description="a driver's trials go stale after 3 missed beats")
    checkpoint_every: int = Field(default=1, ge=0, description="evaluations between a trial's checkpoints (through "
                                  "Ray Tune; a retried trial resumes from its last); 0: none")
    keep_best: int = Field(default=3, ge=0, description="the best trials whose final weights are kept as Optuna "
                           "artifacts; 0: none")
    _document: dict = PrivateAttr(default_factory=dict)

    @property
    def document(self) -> dict:
        """The study file's document, presets and all (what a study stores to be built again at another preset)."""
        return copy.deepcopy(self._document)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not SAFE.fullmatch(name):
            raise ValueError(f"{name[:60]!r} is not a usable study name: use 1-100 letters, digits, '.', '_' or "
                             "'-', starting with a letter or digit")
        return name

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        if self.task not in PRESETS:
            raise ValueError(f"task: unknown task {self.task!r}; choose one of {', '.join(PRESETS)}")
        if any(k in STRUCTURE_PARAMS or k.startswith("model.tcn") for k in self.space):
            raise ValueError("space: the TCN structure (K, f, D, B) comes from the profile's survivors; drop "
                             "model.tcn keys")
        if self.sampler.type == "grid":
            ranged = [k for k, p in self.space.items() if p.choices is None]
            if ranged:
                raise ValueError(f"space.{ranged[0]}: the grid sampler needs choices: [...], not a range")
        return self

    def base_config(self) -> TrainConfig:
        """The trial config before any searched value: the preset with the study's `train` overrides."""
        return make_config(self.task, self.preset, self.train)

    def trial_config(self, values: dict, structure: Structure | None = None) -> TrainConfig:
        """The config of one trial: searched `values` (dotted keys) and the TCN structure."""
        overrides = copy.deepcopy(self.train)
        for dotted, value in values.items():
            set_dotted(overrides, dotted, value)
        if structure is not None:
            set_dotted(overrides, "model.tcn", {**get_dotted(overrides, "model.tcn", {}), **structure.as_dict()})
        return make_config(self.task, self.preset, overrides)

    def profile_spec(self) -> ProfileSpec:
        """The profile the study draws from; lengths, channels, batch and the model follow training's."""
        cfg = self.base_config()
        if cfg.task == "enwik8":
            lengths = sorted({cfg.model.chunk_size * c for c in cfg.chunk_counts})
        else:
            lengths = [cfg.seq_len]
        # LRA classifies with non-causal mixers: a centred TCN against MEGA's bidirectional EMA. The
        # default level is the study's own model in the precision it trains in, so the latency it
        # records is that of the step it trains.
        defaults = {"lengths": lengths, "channels": cfg.model.d_model, "batch": cfg.batch_size,
                    "ema_dim": cfg.model.ema_dim, "bidirectional": cfg.task.startswith("lra-"), "level": "model",
                    "model": cfg.model.model_dump(exclude={"tcn"}), "dtype": cfg.precision,
                    # On the CPU a trial trains with its cpus_per_trial threads (Ray sets them): measure so.
                    "threads": max(1, int(self.budget.cpus_per_trial))}
        try:
            return ProfileSpec(**(defaults | self.profile))
        except ValidationError as err:
            raise UserError(f"study {self.name}: {validation_message(err, prefix='profile')}") from None


def shipped_studies() -> dict[str, Path]:
    """The study files that ship with tcnsearch (package data `tcnsearch.studies`), by name."""
    folder = resources.files("tcnsearch.studies")
    return {Path(p.name).stem: Path(str(p)) for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")}


def list_studies() -> list[dict]:
    """Every study NAME can name: ./studies first (yours), then the shipped ones it does not shadow."""
    found: dict[str, dict] = {}
    local = Path.cwd() / "studies"
    shipped = shipped_studies()
    for origin, files in (("./studies", {p.stem: p for p in sorted(local.glob("*.yaml"))} if local.is_dir() else {}),
                          ("shipped", shipped)):
        for name, path in files.items():
            if name in found:
                continue
            same = name in shipped and path.resolve() == shipped[name].resolve()  # run from the checkout
            try:
                doc = read_yaml(path)
                task, description = doc.get("task", "?"), doc.get("description", "")
            except (UserError, AttributeError):
                task, description = "?", "(not a valid study file)"
            found[name] = {"name": name, "task": task, "description": description,
                           "origin": "shipped" if same else origin,
                           "path": str(path)}
    return list(found.values())


def find_study_file(name: str) -> Path:
    """NAME is a path to a .yaml file, or a file in ./studies or a shipped study (without .yaml)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"study file {name} not found")
        return path
    local = Path.cwd() / "studies" / f"{name}.yaml"  # your own studies/ first, then the shipped ones
    if SAFE.fullmatch(name) and local.is_file():
        return local
    shipped = shipped_studies()
    if name in shipped:
        return shipped[name]
    known = ", ".join(s["name"] for s in list_studies()) or "none"
    raise UserError(f"unknown study {name!r}; choose one of {known} (tcnsearch study --list), or give a path to "
                    "a .yaml file")


def load_spec(name: str, preset: str = "tiny") -> StudySpec:
    """The study file `name` with `preset` applied, checked down to one trial's config.

    Raises:
        UserError: no such study, unreadable or malformed YAML, or an invalid field (named).
    """
    path = find_study_file(name)
    return spec_from_document(read_yaml(path), preset, str(path), default_name=file_name(path.stem))


def spec_from_document(doc, preset: str, where: str, default_name: str = "study") -> StudySpec:
    """A study file's document (before its `presets:` are applied) at `preset`; `where` names it in errors.

    The spec keeps the document (`spec.document`): a study stores it, so that `tcnsearch promote`
    can build the same study at another preset.
    """
    if not isinstance(doc, dict):
        raise UserError(f"{where}: expected a mapping with task, objective, space, ...")
    original = copy.deepcopy(doc)
    doc = copy.deepcopy(doc)
    presets = doc.pop("presets", None) or {}
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise UserError(f"{where}: presets must map a preset name to a mapping of overrides")
    unknown = set(presets) - set(PRESET_NAMES)
    if unknown:
        raise UserError(f"{where}: presets: unknown preset {sorted(unknown)[0]!r}; use {', '.join(PRESET_NAMES)}")
    doc = merge_overrides(doc, presets.get(preset, {}))
    doc.setdefault("name", default_name)
    try:
        spec = StudySpec(**doc, preset=preset)
    except ValidationError as err:
        raise UserError(f"{where}: {validation_message(err)}") from None
    except TypeError as err:
        raise UserError(f"{where}: {err}") from None
    # Every searched key must land in a valid config: try the range ends now, not in trial 1.
    try:
        spec.base_config()
        for key, param in spec.space.items():
            probe = param.choices if param.choices is not None else [param.low, param.high]
            for value in probe:
                spec.trial_config({key: int(value) if param.is_int else value})
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    spec.profile_spec()
    spec._document = original | {"name": doc["name"]}
    return spec
