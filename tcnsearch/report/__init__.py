"""Plotly HTML reports: of a latency profile, and (with the studies) of a search."""

from tcnsearch.report.profile import profile_figures, write_profile_report

__all__ = ["profile_figures", "write_profile_report"]
