"""Plotly HTML reports of a latency profile and of a study, and the Optuna dashboard on the database."""

from tcnsearch.report.dashboard import serve_dashboard
from tcnsearch.report.html import write_page, write_profile_report
from tcnsearch.report.study import load_study, pareto_front, study_figures, write_study_report

__all__ = ["load_study", "pareto_front", "serve_dashboard", "study_figures", "write_page", "write_profile_report",
           "write_study_report"]
