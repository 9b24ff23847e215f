import pytest

from tcnsearch.profile import ProfileSpec, profile_figures, run_profile
from tcnsearch.report import write_profile_report


@pytest.mark.slow
def test_profile_figures_and_their_html_report(sqlite_url, tmp_path):
    spec = ProfileSpec(lengths=[128, 256], kernel_sizes=[3, 5], dilation_factors=[2, 4], depths=[3, 4],
                       per_block=[1, 2], channels=8, ema_dim=4, min_receptive_field=None, max_time=0.02, min_pairs=3)
    result = run_profile(spec, gpu="cpu", storage=sqlite_url, progress=False)
    heat, scatter, table = profile_figures(result)
    heatmaps = [t for t in heat.data if t.type == "heatmap"]
    assert len(heatmaps) == 2 * 2 * 2  # lengths x B x D panels
    cell = heatmaps[0].z[0][0]  # L=128, B=1, D=3, K=3, f=2
    row = next(r for r in result.candidates if (r["kernel_size"], r["dilation_factor"], r["depth"], r["per_block"])
               == (3, 2, 3, 1))
    assert cell == row["by_length"][0]["speedup_fwdbwd"]
    n_marked = sum(len(t.x) for t in scatter.data if t.name.startswith("survivor"))
    assert n_marked == len(result.survivors)
    assert len(table.data[0].cells.values[0]) == len(result.survivors) + len(result.undecided)
    path = write_profile_report(result, tmp_path / "r" / "profile.html")
    text = path.read_text()
    assert text.startswith("<!doctype html>") and "plotly" in text.lower() and result.device.device_name in text
