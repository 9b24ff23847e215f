"""Studies: Ray Tune trains models drawn from the profile's survivors; every trial lands in Optuna.

    spec = load_spec("assoc-recall", preset="tiny")          # studies/assoc-recall.yaml
    result = run_study("assoc-recall", preset="tiny", trials=8)
    result.best                                              # the best trial(s)

Modules, in the order a study uses them: spec (study files, samplers), space (K, f, D, B as
ordered parameters, feasibility, repair), start (creating or resuming a study: its sampler,
survivors, warm start, queued structures), trials (a study's trials in the database: which count,
how they are told, retried and shown), searcher (Optuna as a Ray Tune searcher), dashboard (the
profile in optuna-dashboard), runner (run_study). A Ray worker imports none of these: it runs
tcnsearch.train.trial.
"""

from tcnsearch.search.runner import StudyResult, run_study, summarize
from tcnsearch.search.samplers import SAMPLERS, Sampler
from tcnsearch.search.space import INFEASIBLE, Proposer, StructureSpace
from tcnsearch.search.spec import (
    Budget,
    Objective,
    Param,
    Scheduler,
    StudySpec,
    find_study_file,
    list_studies,
    load_spec,
    spec_from_document,
)
from tcnsearch.search.trials import (
    ABANDONED,
    FAIL_REASON,
    LATENCY,
    WARM_START,
    frozen,
    frozen_objective,
    is_frozen,
    load_study,
    open_storage,
    opened_storage,
    trained,
    trial_row,
)

__all__ = [
    "ABANDONED",
    "FAIL_REASON",
    "INFEASIBLE",
    "LATENCY",
    "SAMPLERS",
    "WARM_START",
    "Budget",
    "Objective",
    "Param",
    "Proposer",
    "Sampler",
    "Scheduler",
    "StructureSpace",
    "StudyResult",
    "StudySpec",
    "find_study_file",
    "frozen",
    "frozen_objective",
    "is_frozen",
    "list_studies",
    "load_spec",
    "load_study",
    "open_storage",
    "opened_storage",
    "run_study",
    "spec_from_document",
    "summarize",
    "trained",
    "trial_row",
]
