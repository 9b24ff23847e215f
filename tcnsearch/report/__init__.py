"""Plotly HTML reports of a latency profile and of a study, and the Optuna dashboard on the database."""

from tcnsearch.report.compare import write_comparison
from tcnsearch.report.dashboard import serve_dashboard
from tcnsearch.report.html import write_page, write_profile_report
from tcnsearch.report.study import pareto_front, study_figures, write_study_report

__all__ = ["pareto_front", "serve_dashboard", "study_figures", "write_comparison", "write_page",
           "write_profile_report", "write_study_report"]
