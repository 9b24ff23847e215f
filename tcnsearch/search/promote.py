"""`tcnsearch promote STUDY --top K --preset P`: does what won at the cheap preset still win at the real scale?

    result = promote("assoc-recall-tiny", top=5, preset="cpu")
    result.tau, result.tau_ci      # Kendall's tau between the proxy's ranking and the promoted one
    result.regret                  # how much worse the proxy's first choice is than the best promoted one

The proxy study's top K configurations (its own COMPLETE trials, best first) are trained again at
preset P (or for `--steps N`) in a new study linked to it: `STUDY-promoted-P`, each trial carrying
`promoted_from` (the proxy trial it retrains), the same TCN structure and searched values, no
scheduler stopping any. The study file is the one the proxy was built from, stored with it,
applied at P. Rankings at low fidelity often disagree with full training (the NAS-Bench-201 and
performance-estimator line of work); this measures it for the user's own study, with an interval
(K pairs are few), and writes the figures into both studies' dashboard notes and reports.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.trial import TrialState

from tcnsearch._names import check_name
from tcnsearch._text import markdown_text
from tcnsearch.data import prepare_data
from tcnsearch.errors import UserError
from tcnsearch.search.artifacts import artifact_folder, check_store
from tcnsearch.search.dashboard import attach_section
from tcnsearch.search.spec import spec_from_document
from tcnsearch.search.start import prepare_study, structure_space
from tcnsearch.search.trials import (
    PROMOTED_FROM,
    budget_lock,
    frozen,
    frozen_document,
    load_study,
    occupied,
    open_storage,
    trained,
)
from tcnsearch.storage import create_engine, masked, resolve_url


@dataclass
class PromotionResult:
    source: str
    study_name: str
    preset: str
    steps: int | None
    metric: str
    minimize: bool
    storage: str
    pairs: list[dict] = field(default_factory=list)  # proxy trial, promoted trial, structure, both values, ranks
    tau: float | None = None
    tau_ci: tuple[float, float] | None = None
    regret: float | None = None
    regret_relative: float | None = None
    pick: dict | None = None  # the proxy's first choice, as promoted
    best: dict | None = None  # the best promoted
    elapsed_s: float = 0.0

    def to_json(self) -> dict:
        return {"source": self.source, "study": self.study_name, "preset": self.preset, "steps": self.steps,
                "metric": self.metric, "direction": "minimize" if self.minimize else "maximize",
                "storage": self.storage, "pairs": self.pairs, "kendall_tau": self.tau,
                "kendall_tau_ci": list(self.tau_ci) if self.tau_ci else None, "regret": self.regret,
                "regret_relative": self.regret_relative, "pick": self.pick, "best": self.best,
                "elapsed_s": round(self.elapsed_s, 3)}


def ranking_agreement(proxy: list[float], promoted: list[float], minimize: bool, resamples: int = 2000,
                      seed: int = 0) -> dict:
    """Kendall's tau between two rankings of the same configurations, with a bootstrap 95% interval over the
    pairs, and the regret of the proxy's first choice (its promoted value less the best promoted value, in
    the direction of the objective; relative: over the best's magnitude)."""
    from scipy.stats import kendalltau

    x, y = np.asarray(proxy, float), np.asarray(promoted, float)
    tau = float(kendalltau(x, y).statistic)
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(resamples):
        idx = rng.integers(0, len(x), len(x))
        if len(set(idx)) > 1:
            value = kendalltau(x[idx], y[idx]).statistic
            if not math.isnan(value):
                taus.append(value)
    sign = 1 if minimize else -1
    pick = int(np.argmin(sign * x))
    best = float(np.min(sign * y)) * sign
    regret = sign * (float(y[pick]) - best)
    return {"tau": tau, "tau_ci": (float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))) if taus
            else (math.nan, math.nan), "pick": pick, "regret": regret,
            "regret_relative": regret / abs(best) if best else math.inf}


def _top(source: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    if len(source.directions) > 1:
        raise UserError(f"study {source.study_name!r} optimises {len(source.directions)} objectives; promote ranks by "
                        "one: promote a single-objective study (or export a trial of the front and train it)")
    complete = [t for t in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if trained(t)]
    if len(complete) < top:
        raise UserError(f"--top {top}: study {source.study_name!r} holds {len(complete)} finished trials; promote "
                        f"at most that many (or run it further: tcnsearch study --resume)")
    sign = 1 if source.direction == optuna.study.StudyDirection.MINIMIZE else -1
    return sorted(complete, key=lambda t: (sign * t.value, t.number))[:top]


def promote(study: str, *, top: int = 5, preset: str | None = None, steps: int | None = None,
            storage: str | None = None, ray_address: str | None = None, gpu: str = "auto",
            study_name: str | None = None, progress: bool = True, artifacts: str | None = None,
            runs: str | None = None, max_concurrent: int | None = None, data_path: str | None = None,
            trainable=None) -> PromotionResult:
    """Train the top `top` configurations of `study` again at `preset` (or for `steps`), in a linked study,
    on `data_path` (default: the data set the study trained on).

    Raises:
        UserError: a missing study, one tcnsearch did not make, a Pareto study, `top` below 2 or above
            its finished trials, a bad name. Before anything trains or is created.
    """
    start = time.perf_counter()
    if top < 2:
        raise UserError(f"--top {top}: promote at least 2 configurations (a ranking needs two)")
    if study_name is not None:
        check_name(study_name, "--study-name")
    url = resolve_url(storage)
    source = load_study(study, url)
    frozen(source)  # refuses a study of another tool or version
    chosen = _top(source, top)
    document = frozen_document(source)
    if document is None:
        raise UserError(f"study {study!r} does not store its study file (an earlier tcnsearch made it)")
    preset = preset or source.user_attrs.get("preset", "tiny")
    spec = spec_from_document(document, preset, f"study {study!r}'s study file")
    if steps is not None:
        warmup = spec.train.get("warmup_steps", spec.base_config().warmup_steps)
        spec.train = spec.train | {"steps": steps, "warmup_steps": min(warmup, steps // 10)}
        spec.base_config()  # the overrides still make a valid run
    given = prepare_data(spec.task, data_path or source.user_attrs.get("data"))
    if given:
        spec.train = spec.train | {"data_path": given}
    name = study_name or f"{study}-promoted-{preset}" + (f"-{steps}" if steps else "")
    folder = artifact_folder(url, artifacts)
    if spec.keep_best:
        check_store(folder)

    engine = create_engine(url)
    rdb = open_storage(url, spec.heartbeat_s)
    survivors, grid = frozen(source)
    minimize = source.direction == optuna.study.StudyDirection.MINIMIZE
    metric = (source.metric_names or [spec.objective.metric])[0]
    with budget_lock(engine, f"tcnsearch-setup:{name}"):
        promoted, survivors, grid = prepare_study(
            spec, rdb, name, [source.direction.name.lower()], [metric], survivors, grid, True,
            optuna.samplers.RandomSampler(seed=0),
            {"task": spec.task, "preset": preset, "promoted_from": study, "top": top,
             "device": source.user_attrs.get("device"), "profile_level": source.user_attrs.get("profile_level")})
        queued = {t.user_attrs.get(PROMOTED_FROM) for t in promoted.get_trials(deepcopy=False)}
        for t in chosen:
            if t.number not in queued:
                promoted.enqueue_trial(dict(t.params), user_attrs={PROMOTED_FROM: t.number})
    source_rw = optuna.load_study(study_name=study, storage=rdb)
    source_rw.set_user_attr("promoted_to", name)
    space = structure_space(survivors, grid, spec)
    optuna.storages.fail_stale_trials(promoted)
    done = occupied(promoted.get_trials(deepcopy=False))
    if done < top:
        from tcnsearch.search._tune import train_study

        train_study(spec, promoted, space, engine, top, done, name=name, ray_address=ray_address, gpu=gpu,
                    multi_objective=False, artifacts=folder, runs=runs,
                    trial_attrs={"device": source.user_attrs.get("device"), "level": "promoted"},
                    max_concurrent=max_concurrent, progress=progress, use_scheduler=False, trainable=trainable)
    result = summarize_promotion(source, promoted, chosen, preset, steps, metric, minimize, masked(url))
    result.elapsed_s = time.perf_counter() - start
    note = promotion_note(result)
    for s in (source_rw, promoted):
        attach_section(s, "promotion", note)
    if result.tau is not None:
        promoted.set_user_attr("kendall_tau", round(result.tau, 3))
        source_rw.set_user_attr("promotion_kendall_tau", round(result.tau, 3))
    return result


def summarize_promotion(source: optuna.Study, promoted: optuna.Study, chosen: list[optuna.trial.FrozenTrial],
                        preset: str, steps: int | None, metric: str, minimize: bool, storage: str) -> PromotionResult:
    """The proxy's ranking of the promoted configurations against their ranking when trained again."""
    result = PromotionResult(source.study_name, promoted.study_name, preset, steps, metric, minimize, storage)
    again = {t.user_attrs[PROMOTED_FROM]: t for t in promoted.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if PROMOTED_FROM in t.user_attrs}
    pairs = [(t, again[t.number]) for t in chosen if t.number in again]
    sign = 1 if minimize else -1
    ranked = sorted(pairs, key=lambda p: sign * p[1].value)
    for rank, (proxy, trial) in enumerate(pairs, 1):
        result.pairs.append({"proxy_trial": proxy.number, "promoted_trial": trial.number,
                             "tcn": proxy.user_attrs.get("tcn"), "proxy_value": proxy.value,
                             "promoted_value": trial.value, "proxy_rank": rank,
                             "promoted_rank": 1 + [p[0].number for p in ranked].index(proxy.number)})
    if len(pairs) >= 2:
        stats = ranking_agreement([p.value for p, _ in pairs], [t.value for _, t in pairs], minimize)
        result.tau, result.tau_ci = stats["tau"], stats["tau_ci"]
        result.regret, result.regret_relative = stats["regret"], stats["regret_relative"]
        result.pick, result.best = result.pairs[stats["pick"]], next(p for p in result.pairs if p["promoted_rank"] == 1)
    return result


def promotion_note(result: PromotionResult) -> str:
    """The promotion as a Markdown section of both studies' dashboard notes (stored names shown as text)."""
    md = markdown_text
    scale = f"preset **{md(result.preset)}**" + (f", {result.steps} steps" if result.steps else "")
    lines = ["## Promotion", "",
             f"The top {len(result.pairs)} configurations of **{md(result.source)}** (the proxy) trained again at "
             f"{scale} in **{md(result.study_name)}**; {md(result.metric)}, "
             f"{'lower' if result.minimize else 'higher'} is better.", ""]
    if result.tau is not None:
        lo, hi = result.tau_ci
        lines += [f"Kendall's tau between the two rankings: **{result.tau:.2f}** (95% interval [{lo:.2f}, {hi:.2f}], "
                  f"bootstrap over the pairs). The proxy's pick (trial {result.pick['proxy_trial']}, "
                  f"{md(result.pick['tcn'])}) ranks **{result.pick['promoted_rank']}** of {len(result.pairs)} at the "
                  f"larger scale; its regret: {result.regret:.4g} ({100 * result.regret_relative:.1f}% of the best, "
                  f"trial {result.best['promoted_trial']}).", ""]
    lines += ["| proxy trial | structure | proxy value | proxy rank | promoted value | promoted rank |",
              "|---:|---|---:|---:|---:|---:|",
              *(f"| {p['proxy_trial']} | {md(p['tcn'])} | {p['proxy_value']:.4g} | {p['proxy_rank']} | "
                f"{p['promoted_value']:.4g} | {p['promoted_rank']} |" for p in result.pairs)]
    return "\n".join(lines)
