"""Self-contained HTML reports: plotly figures on one page that opens offline (plotly.js embedded once)."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go

from tcnsearch.files import write_atomic
from tcnsearch.profile import ProfileResult, profile_figures


def write_page(path: str | Path, title: str, meta: str, figures: list[go.Figure]) -> Path:
    """Write `figures` under `title` and a line of `meta` (both escaped) to `path`."""
    parts = [fig.to_html(full_html=False, include_plotlyjs=i == 0) for i, fig in enumerate(figures)]
    title, meta = html.escape(title), html.escape(meta)
    return write_atomic(path, f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
                              f"<body><h2>{title}</h2><p>{meta}</p>{''.join(parts)}</body></html>")


def write_profile_report(result: ProfileResult, path: str | Path) -> Path:
    """The profile report: heatmaps, receptive field against speedup, the survivors table."""
    dev, spec = result.device, result.spec
    meta = (f"level {spec.level}, backend {dev.backend} ({dev.threads} threads), torch {dev.torch_version}, "
            f"CUDA {dev.cuda_version}, {dev.dtype}, batch {spec.batch}, {spec.channels} channels, "
            f"EMA N={spec.ema_dim}, mode {spec.mode}, min speedup {spec.min_speedup}")
    return write_page(path, f"tcnsearch profile — {dev.device_name}", meta, profile_figures(result))
