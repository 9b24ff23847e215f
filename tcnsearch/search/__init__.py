"""Studies: Ray Tune trains models drawn from the profile's survivors; every trial lands in Optuna.

    spec = load_spec("assoc-recall", preset="tiny")          # studies/assoc-recall.yaml
    result = run_study("assoc-recall", preset="tiny", trials=8)
    result.best                                              # the best trial(s)
"""

from tcnsearch.search._study import LATENCY, open_storage, trial_row
from tcnsearch.search.runner import StudyResult, run_study, summarize
from tcnsearch.search.spec import Budget, Objective, Param, Scheduler, StudySpec, find_study_file, load_spec

__all__ = [
    "LATENCY",
    "Budget",
    "Objective",
    "Param",
    "Scheduler",
    "StudyResult",
    "StudySpec",
    "find_study_file",
    "load_spec",
    "open_storage",
    "run_study",
    "summarize",
    "trial_row",
]
