"""How a study starts: its sampler, the structures it may train, and what it is seeded with.

- `prepare_study`: create the study (its survivors frozen as its parameter space), or load it to resume.
- `sampler_named`: `--sampler NAME` over the study file's `sampler:` (keeping its seed).
- `structure_space`: the survivors as ordered K, f, D, B axes, with the objective's latency budget
  (`max_latency_ms`, `min_speedup`) as constraints; refuses a budget no survivor meets.
- `enqueue_structures`: `--enqueue paper` (the paper's TCN: K 17, B 1, D 4 and 3, the smallest f
  whose receptive field covers the length) and `--enqueue K,f,D,B`, queued before anything sampled.
- `warm_start_from`: `--warm-start STUDY` copies another study's finished trials where the two
  spaces agree; they inform the sampler but are not this study's runs (no budget, never best).
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError

from tcnsearch.compat import optuna as optuna_private
from tcnsearch.errors import UserError, validation_message
from tcnsearch.profile import Survivor
from tcnsearch.search.samplers import Sampler
from tcnsearch.search.space import StructureSpace
from tcnsearch.search.spec import StudySpec
from tcnsearch.search.trials import WARM_START, freeze, frozen, is_frozen, open_storage, trained
from tcnsearch.structure import Structure

PAPER = {"kernel_size": 17, "per_block": 1, "depths": (4, 3)}  # TCNCA's benchmark TCN; its models use D 3-4


def check_existing(storage, name: str, resume: bool, directions: list[str]) -> None:
    """Refuse to write into the stored study `name` (if there is one) when the run may not: it holds trials
    and `resume` is off, it optimises other objectives, or tcnsearch did not create it (or an earlier
    version did). A study driver checks this before it profiles, and again as it creates the study.

    Raises:
        UserError: naming the way out (--resume, --study-name, --warm-start).
    """
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return
    held = optuna_private.trial_count(existing)  # counted, not read: a resumed study may hold thousands
    if not resume and held:
        held = sum(1 for t in existing.get_trials(deepcopy=False) if trained(t))
        raise UserError(f"study {name!r} already holds {held} trials; "
                        "--resume continues it, --study-name NAME starts another")
    stored = [d.name.lower() for d in existing.directions]
    if stored != directions:
        raise UserError(f"study {name!r} optimises {stored}, not {directions}; "
                        "use --study-name NAME for a study with other objectives")
    if held or is_frozen(existing):
        frozen(existing)  # refuses a study of another tool or an earlier version


def prepare_study(spec: StudySpec, storage, name: str, directions: list[str], metric_names: list[str],
                  survivors: list[Survivor], grid: dict[str, list[int]], resume: bool, sampler,
                  attrs: dict) -> tuple[optuna.Study, list[Survivor], dict[str, list[int]]]:
    """Create the study `name` with `survivors` (over `grid`) frozen as its parameter space and `attrs` as its
    user attributes, or load it to resume; (study, its frozen survivors, its grid).

    Raises:
        UserError: the study holds trials and `resume` is off; it optimises other objectives; it was not
            created by this version of tcnsearch.
    """
    check_existing(storage, name, resume, directions)
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True,
                                sampler=sampler)
    if not is_frozen(study) and not study.get_trials(deepcopy=False):  # new (or never used)
        study.set_metric_names(metric_names)
        freeze(study, survivors, grid, spec.objective.model_dump(), spec.document)
        for key, value in attrs.items():
            study.set_user_attr(key, value)
    survivors, grid = frozen(study)  # refuses a study of another tool or an earlier version
    return study, survivors, grid


def sampler_named(name: str, spec: StudySpec) -> Sampler:
    try:
        return Sampler(type=name, **({"seed": spec.sampler.seed} if spec.sampler.seed is not None else {}))
    except ValidationError as err:
        raise UserError(f"--sampler: {validation_message(err)}") from None


def parse_enqueue(item: str) -> str | Structure:
    """'paper', a structure's label (K5-f4-D3-B1), or K,f,D,B."""
    if item == "paper":
        return item
    try:
        return Structure(*(int(v) for v in item.split(","))) if "," in item else Structure.parse(item)
    except (ValueError, TypeError):
        raise UserError(f"--enqueue {item!r}: give 'paper' or a structure as K,f,D,B or K5-f4-D3-B1") from None


def structure_space(survivors: list[Survivor], grid: dict[str, list[int]], spec: StudySpec) -> StructureSpace:
    """The survivors as K, f, D, B axes over the profile `grid`, with the objective's latency budget as
    constraints.

    Raises:
        UserError: a latency budget that no survivor meets (naming the fastest).
    """
    objective, metric = spec.objective, spec.profile_spec().metric
    budget = {}
    if objective.max_latency_ms is not None:
        budget["latency_ms"] = lambda s: s.latency_ms - objective.max_latency_ms
    if objective.min_speedup is not None:
        budget["speedup"] = lambda s: objective.min_speedup - s.speedup(metric)
    space = StructureSpace(grid, survivors, budget)
    if not space.allowed:
        fastest = min(survivors, key=lambda s: s.latency_ms)
        raise UserError(f"study {spec.name}: no survivor meets the latency budget ("
                        + ", ".join(f"{k}: {v}" for k, v in (("max_latency_ms", objective.max_latency_ms),
                                                           ("min_speedup", objective.min_speedup)) if v is not None)
                        + f"); the fastest, {fastest.label}, takes {fastest.latency_ms:.3g} ms at "
                          f"{fastest.speedup(metric):.2f}x; relax the budget in the study file's objective")
    return space


def grid_of(space: StructureSpace, spec: StudySpec) -> dict[str, list] | None:
    """The grid sampler's search space: every axis value and every searched choice."""
    if spec.sampler.type != "grid":
        return None
    return {a.name: a.values for a in space.axes} | {k: p.choices for k, p in spec.space.items()}


def paper_structures(length: int) -> list[Structure]:
    """TCNCA's benchmark TCN at `length`: K 17, B 1, D 4 and 3, the smallest f whose receptive field covers it."""
    out = []
    for depth in PAPER["depths"]:
        f = next(f for f in range(1, 1 << 20)
                 if Structure(PAPER["kernel_size"], f, depth, PAPER["per_block"]).receptive_field >= length)
        out.append(Structure(PAPER["kernel_size"], f, depth, PAPER["per_block"]))
    return out


def resolve_enqueue(space: StructureSpace, queued: list, lengths: list[int]) -> tuple[list[Survivor], list[str]]:
    """The allowed structures `--enqueue` asks for, and notes on what was queued instead.

    Raises:
        UserError: a K,f,D,B that this study may not train (named with its nearest that it may).
    """
    notes, chosen = [], []
    for item in queued:
        wanted = [(s, True) for s in paper_structures(max(lengths))] if item == "paper" else [(item, False)]
        for structure, paper in wanted:
            if structure in space.allowed:
                chosen.append(space.allowed[structure])
            elif paper:  # the paper's structure is rarely in a study's grid: its nearest allowed neighbour
                nearest = space.nearest(structure)
                chosen.append(nearest)
                notes.append(f"the paper's {structure} is not a survivor of this study's profile; queued its "
                             f"nearest, {nearest.label}")
            else:
                near = ", ".join(s.label for s in sorted(space.allowed.values(),
                                                         key=lambda s: space.distance(structure, s.structure))[:3])
                raise UserError(f"--enqueue {structure}: not a structure this study may train (not a "
                                f"survivor of its profile, or over its latency budget); the nearest that are: {near}")
    return chosen, notes


def enqueue_structures(study: optuna.Study, structures: list[Survivor]) -> None:
    """Queue `structures` first (once: a resumed study does not queue them again)."""
    if not structures:
        return
    already = {t.user_attrs.get("enqueued") for t in study.get_trials(deepcopy=False)}
    for s in structures:
        if s.label not in already:
            already.add(s.label)
            study.enqueue_trial(s.structure.as_params(), user_attrs={"enqueued": s.label})


def source_study(url: str, name: str, spec: StudySpec, multi_objective: bool) -> optuna.Study:
    """The study `--warm-start NAME` names (read-only), checked to optimise what this one does."""
    try:
        storage = open_storage(url, read_only=True)
        source = optuna.load_study(study_name=name, storage=storage)
    except (KeyError, UserError):
        try:
            stored = ", ".join(optuna.get_all_study_names(storage)) or "none"
        except Exception:  # noqa: BLE001 - no database, or no Optuna tables in it
            stored = "none"
        raise UserError(f"--warm-start {name!r}: no such study in this database (stored: {stored})") from None
    metric = spec.objective.metric
    directions = ["minimize" if spec.objective.mode == "min" else "maximize"] + (["minimize"] if multi_objective
                                                                                 else [])
    theirs = [d.name.lower() for d in source.directions]
    names = source.metric_names or []
    if theirs != directions or (names and names[0] != metric):
        raise UserError(f"--warm-start {name!r}: it optimises {names or ['?']} ({theirs}), this study "
                        f"{metric} ({directions}); warm-start from a study with the same objective")
    return source


def warm_start_from(study: optuna.Study, source: optuna.Study, ours: dict) -> list[str]:
    """Copy `source`'s finished trials whose parameters fit `ours` (this study's parameter space);
    returns notes on what was copied and what did not transfer."""
    if source.study_name in study.user_attrs.get("warm_started_from", []):
        return []  # done when the study was created
    copied, skipped = 0, {}
    for t in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if not trained(t):
            continue
        params, dists, missing = {}, {}, None
        for name, dist in ours.items():
            value = t.params.get(name)
            if value is None or not optuna_private.contains(dist, value):
                missing = f"{name}={value}" if value is not None else f"no {name}"
                break
            params[name], dists[name] = value, dist
        if missing is not None:
            skipped[missing] = skipped.get(missing, 0) + 1
            continue
        study.add_trial(optuna.trial.create_trial(
            state=t.state, values=t.values, params=params, distributions=dists,
            intermediate_values=t.intermediate_values, constraints=t.constraints or None,
            user_attrs={k: v for k, v in t.user_attrs.items() if k != WARM_START}
            | {WARM_START: f"{source.study_name}#{t.number}"}))
        copied += 1
    study.set_user_attr("warm_started_from", [*study.user_attrs.get("warm_started_from", []), source.study_name])
    notes = [f"warm start: copied {copied} finished trials of {source.study_name!r}"]
    if skipped:
        why = "; ".join(f"{n} with {what}" for what, n in sorted(skipped.items(), key=lambda kv: -kv[1])[:4])
        notes.append(f"warm start: {sum(skipped.values())} trials of {source.study_name!r} did not transfer "
                     f"(outside this study's space: {why})")
    return notes


def distributions(space: StructureSpace, spec: StudySpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """Every parameter a trial of this study draws: K, f, D, B and the searched ones."""
    return space.distributions() | {k: p.distribution() for k, p in spec.space.items()}


