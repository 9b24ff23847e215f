"""Plotly HTML reports of a latency profile and of a study, and the Optuna dashboard (with the profile
behind a study attached to it)."""

from tcnsearch.report._dashboard_profile import attach_profile
from tcnsearch.report.dashboard import serve_dashboard
from tcnsearch.report.profile import profile_figures, write_profile_report
from tcnsearch.report.study import load_study, pareto_front, study_figures, write_study_report

__all__ = ["attach_profile", "load_study", "pareto_front", "profile_figures", "serve_dashboard", "study_figures",
           "write_profile_report", "write_study_report"]
