"""Studies: Ray Tune trains models drawn from the profile's survivors; every trial lands in Optuna.

    spec = load_spec("assoc-recall", preset="tiny")          # studies/assoc-recall.yaml
    result = run_study("assoc-recall", preset="tiny", trials=8)
    result.best                                              # the best trial(s)
"""

import importlib

# Loaded on first use (PEP 562): a Ray worker imports tcnsearch.search._trainable, and with it this
# package, but needs none of Optuna, SQLAlchemy or the profiler that these modules bring in.
_EXPORTS = {
    "tcnsearch.search._study": ("LATENCY", "open_storage", "trial_row"),
    "tcnsearch.search.runner": ("StudyResult", "run_study", "summarize"),
    "tcnsearch.search.spec": ("Budget", "Objective", "Param", "Scheduler", "StudySpec", "find_study_file",
                              "load_spec"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'tcnsearch.search' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)


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
