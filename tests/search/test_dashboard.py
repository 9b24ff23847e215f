"""The profile behind a study in optuna-dashboard (search.attach_profile): its figure and note, written as
run_study writes them, read back through the database, and rendered in headless Chromium."""

import dataclasses
import html
import json

import optuna
import optuna_dashboard
import pytest
from optuna_dashboard._custom_plot_data import SYSTEM_ATTR_PLOT_DATA, get_plotly_graph_objects

from tcnsearch.compat import optuna as compat_optuna
from tcnsearch.profile import ProfileSpec, dashboard_figure, decision, profile_note, run_profile
from tcnsearch.search import frozen, load_spec
from tcnsearch.search.dashboard import FIGURE_ID, NOTE_START, attach_profile
from tcnsearch.search.start import prepare_study
from tests.conftest import chromium_dom, needs_chromium, serve_dashboard

pytestmark = [pytest.mark.slow]

TINY = ProfileSpec(lengths=[64], kernel_sizes=[3, 5], dilation_factors=[2, 4], depths=[2, 3], per_block=[1],
                   channels=8, ema_dim=4, min_receptive_field=None, max_time=0.02, min_pairs=3)


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """A tiny real profile (8 structures at L=64) with at least one survivor: measured once, then decided
    again (from the stored pairs) at the best lower bound, so that the best one survives, just."""
    url = f"sqlite:///{tmp_path_factory.mktemp('profile') / 'latency.db'}"
    first = run_profile(TINY.model_copy(update={"min_speedup": 0.01}), gpu="cpu", storage=url, progress=False)
    threshold = max(r["speedup_fwdbwd_ci"][0] for r in first.candidates)
    result = run_profile(TINY.model_copy(update={"min_speedup": threshold}), gpu="cpu", storage=url, progress=False)
    assert result.survivors
    return result


def _study_as_run_study_makes_it(storage, profile, resume: bool = False) -> optuna.Study:
    """What run_study does up to the dashboard: the study (created, or resumed), then attach_profile."""
    spec = load_spec("assoc-recall", "tiny")
    grid = {"kernel_size": profile.spec.kernel_sizes, "dilation_factor": profile.spec.dilation_factors,
            "depth": profile.spec.depths, "per_block": profile.spec.per_block}
    study, survivors, _ = prepare_study(spec, storage, "recall-profiled", ["maximize"], [spec.objective.metric],
                                        profile.kept_survivors(), grid, resume, spec.sampler.build(),
                                        {"device": profile.device.device_name})
    attach_profile(study, profile, [s.label for s in survivors])
    return study


def _figures(study: optuna.Study) -> dict[str, dict]:
    return {k: json.loads(v) for k, v in get_plotly_graph_objects(compat_optuna.system_attrs(study)).items()}


def _note_labels(note: str) -> list[str]:
    return [line.split("|")[1].strip() for line in note.splitlines() if line.startswith("| K")]


def test_the_note_lists_the_survivors_and_the_figure_marks_them(profile, sqlite_url):
    study = _study_as_run_study_makes_it(sqlite_url, profile)
    survivors = [r["tcn"] for r in profile.survivors]
    note = optuna_dashboard.get_note(study)
    assert _note_labels(note) == survivors  # exactly the survivors, fastest first (undecided: drop)
    device = profile.device
    for text in (device.device_name, f"backend {device.backend}", f"{device.threads} thread",
                 f"Level **{profile.spec.level}**", f"mode **{profile.spec.mode}**",
                 f"min speedup **{profile.spec.min_speedup:g}x**", "R >= 1**", "precision 0.05",
                 "undecided structures: **drop**", f"{len(profile.undecided)} undecided", "8 measured, 0 predicted"):
        assert text in note, (text, note)
    row = profile.survivors[0]
    lo, hi = row["speedup_fwdbwd_ci"]
    assert f"| {row['speedup_fwdbwd']:.2f}x [{lo:.2f}, {hi:.2f}] | measured | survivor |" in note

    (fig,) = _figures(study).values()
    traces = {t["name"]: t for t in fig["data"]}
    marked = [x for name, t in traces.items() if name.startswith("survivor") for x in t["x"]]
    assert sorted(marked) == sorted(survivors)
    others = [x for name, t in traces.items() if not name.startswith("survivor") for x in t["x"]]
    assert sorted(marked + others) == sorted(r["tcn"] for r in profile.candidates)  # each structure once
    assert set(traces) <= {f"{d}, {s}" for d in ("survivor", "undecided", "rejected")
                           for s in ("measured", "predicted")}
    for t in traces.values():  # the 95% interval as error bars around each speedup
        lows = [r["speedup_fwdbwd_ci"][0] for x in t["x"] for r in profile.candidates if r["tcn"] == x]
        assert [round(y - m, 9) for y, m in zip(t["y"], t["error_y"]["arrayminus"], strict=True)] == \
               [round(lo, 9) for lo in lows]
    (line,) = fig["layout"]["shapes"]
    assert line["y0"] == line["y1"] == profile.spec.min_speedup and line["line"]["dash"] == "dash"
    ranked = sorted(profile.candidates, key=lambda r: -r["speedup_fwdbwd"])
    assert fig["layout"]["xaxis"]["categoryarray"] == [r["tcn"] for r in ranked]
    assert fig["layout"]["title"]["text"].startswith("Profile: forward+backward speedup")


def test_attaching_again_on_resume_replaces_the_figure_and_the_note(profile, sqlite_url):
    study = _study_as_run_study_makes_it(sqlite_url, profile)
    optuna_dashboard.save_note(study, optuna_dashboard.get_note(study) + "\n\nA remark of my own.")
    later = dataclasses.replace(profile, spec=profile.spec.model_copy(update={"precision": 0.04}))
    study = _study_as_run_study_makes_it(sqlite_url, later, resume=True)
    assert list(_figures(study)) == [FIGURE_ID]
    ids = {k[len(SYSTEM_ATTR_PLOT_DATA):].rsplit(":", 1)[0] for k in compat_optuna.system_attrs(study)
           if k.startswith(SYSTEM_ATTR_PLOT_DATA)}
    assert ids == {FIGURE_ID}
    note = optuna_dashboard.get_note(study)
    assert note.count(NOTE_START) == 1 and note.count("## Latency profile") == 1
    assert "precision 0.04" in note and "precision 0.05" not in note  # this run's profile
    assert note.endswith("A remark of my own.")  # what the user wrote stays


def test_the_note_says_when_the_frozen_survivors_differ(profile, sqlite_url):
    study = _study_as_run_study_makes_it(sqlite_url, profile)
    rejected = [r for r in profile.candidates if r["decision"] != "survivor"][0]
    moved = dataclasses.replace(profile, survivors=[rejected | {"decision": "survivor"}])
    study = _study_as_run_study_makes_it(sqlite_url, moved, resume=True)
    assert frozen(study)[0][0].label == profile.survivors[0]["tcn"]  # the study's space is frozen
    note = optuna_dashboard.get_note(study)
    assert f"{len(profile.survivors)} of them no longer survive ({profile.survivors[0]['tcn']}" in note
    assert f"1 new survivor not drawn ({rejected['tcn']})" in note


def _grid_of(profile, n_kernels: int = 6) -> object:
    """`profile` stretched to 150 structures (6 K x 5 f x 5 D), speedups spread around the threshold,
    every other one predicted: what a default-sized grid puts in the dashboard."""
    spec = profile.spec.model_copy(update={"kernel_sizes": [3, 5, 7, 9, 13, 17][:n_kernels],
                                           "dilation_factors": [2, 3, 4, 6, 8], "depths": [2, 3, 4, 5, 6]})
    template = profile.candidates[0]
    rows = []
    for i, cand in enumerate(spec.candidates()):
        med = spec.min_speedup * (0.5 + i / 100)
        ci = [med * 0.93, med * 1.08]
        verdict = decision((med, *ci), spec.min_speedup)
        rows.append(template | cand.as_dict() | {"tcn": cand.label, "receptive_field": cand.receptive_field,
                                                 "speedup_fwdbwd": med, "speedup_fwdbwd_ci": ci, "decision": verdict,
                                                 "survivor": verdict == "survivor",
                                                 "source": "predicted" if i % 2 else "measured"})
    key = lambda r: -r["speedup_fwdbwd"]  # noqa: E731
    return dataclasses.replace(profile, spec=spec, candidates=rows, predicted=len(rows) // 2,
                               survivors=sorted((r for r in rows if r["decision"] == "survivor"), key=key),
                               undecided=sorted((r for r in rows if r["decision"] == "undecided"), key=key))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_full_grid_fits_in_the_study(profile, backend, request):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    grid = _grid_of(profile)
    assert len(grid.candidates) == 150 and grid.survivors and grid.undecided
    study = optuna.create_study(study_name=f"grid-{backend}", storage=url, load_if_exists=True)
    attach_profile(study, grid)
    attach_profile(study, grid)
    again = optuna.load_study(study_name=f"grid-{backend}", storage=url)  # read back through the database
    assert _figures(again) == {FIGURE_ID: json.loads(dashboard_figure(grid).to_json())}
    assert NOTE_START + "\n\n" + profile_note(grid) in optuna_dashboard.get_note(again)
    assert _note_labels(optuna_dashboard.get_note(again)) == [r["tcn"] for r in grid.survivors]
    chunks = [k for k in compat_optuna.system_attrs(again) if k.startswith(SYSTEM_ATTR_PLOT_DATA)]
    assert len(chunks) < 60  # about 2 KB each
    smaller = _grid_of(profile, n_kernels=1)  # a smaller figure leaves no trace of the larger one
    attach_profile(again, smaller)
    assert _figures(again) == {FIGURE_ID: json.loads(dashboard_figure(smaller).to_json())}


@pytest.mark.browser
@needs_chromium
def test_the_dashboard_shows_the_profile_figure_and_note(profile, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _study_as_run_study_makes_it(url, profile)
    with serve_dashboard(url) as port:
        dom = chromium_dom(tmp_path, f"http://127.0.0.1:{port}/dashboard/studies/1")
        (tmp_path / "dom.html").write_text(dom)
        assert "recall-profiled" in dom, dom[:2000]
        assert f'id="user-defined-plot:{FIGURE_ID}"' in dom and "js-plotly-plot" in dom, dom[:3000]
        assert "Profile: forward+backward speedup (op level)" in dom  # the figure's title, drawn by plotly.js
        assert "min speedup" in dom and "survivor, measured" in dom  # the threshold line and the legend
        note = chromium_dom(tmp_path, f"http://127.0.0.1:{port}/dashboard/studies/1/note")
    (tmp_path / "note.html").write_text(note)
    assert "Latency profile" in note and html.escape(profile.device.device_name) in note, note[:3000]
    assert f"<td>{profile.survivors[0]['tcn']}</td>" in note.replace(' style="text-align: left;"', "")  # the table
    assert "tcnsearch:profile" not in note  # the note's markers render as nothing
