"""Hostile strings stay text: a shared database whose every string is a payload (study names, study and
trial attributes, fail reasons, metric and parameter names, categorical choices, device names), written
into each HTML report and optuna-dashboard's study page, rendered in headless Chromium.

What is asserted, page by page: no payload ran or loaded anything (a loopback sink the payloads call
home to receives no request), no payload became markup (no link, image, style or handler in the
rendered DOM, hover labels included, points to the sink or to `javascript:`), and the payload shows as
the text it is. A control page that writes the payload raw shows that the checks see it when it fires.
"""

import dataclasses
import html
import json
import threading
import urllib.request
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import markdown_it
import optuna
import pytest
from optuna.trial import TrialState

from tcnsearch.compat.optuna import storage_of, trial_id
from tcnsearch.profile import (
    Fingerprint,
    ProfileResult,
    ProfileSpec,
    dashboard_figure,
    profile_figures,
    profile_note,
    run_profile,
)
from tcnsearch.report import study_figures, write_comparison, write_page, write_profile_report, write_study_report
from tcnsearch.report.compare import best_table, fronts, histories
from tcnsearch.report.study import shown
from tcnsearch.search import frozen
from tcnsearch.search.dashboard import FIGURE_ID, attach_profile, attach_section
from tcnsearch.search.promote import promotion_note, summarize_promotion
from tcnsearch.search.trials import PROMOTED_FROM, freeze
from tests.conftest import chromium_dom, needs_chromium, serve_dashboard
from tests.search.conftest import survivor


def browser(test):
    return pytest.mark.browser(pytest.mark.slow(needs_chromium(test)))


# Each vector calls home to the sink at a path of its own ({s}: the sink's address).
VECTORS = {
    "script": "<script>fetch('{s}/script')</script>",
    "img": "<img src='{s}/img' onerror=\"fetch('{s}/onerror')\">",
    "svg": "\"><svg onload=\"fetch('{s}/svg')\">",
    "iframe": "<iframe src='{s}/iframe'></iframe>",
    "breakout": "</script><script>fetch('{s}/breakout')</script>",
    "link": "<a href='{s}/link'>link</a>",
    "js-link": "<a href=\"javascript:fetch('{s}/js-link')\">js</a>",
    "style": "<span style='background-image:url({s}/style)'>css</span>",
    "md-image": "![md]({s}/md-image.png)",
    "md-link": "[md](javascript:fetch('{s}/md-link'))",
    "autolink": "{s}/autolink",
}


class Sink:
    """A loopback HTTP server that records every request: where the payloads call home."""

    def __init__(self):
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def _hit(self):
                hits.append(self.path)
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_OPTIONS = _hit

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payload(self) -> str:
        return " ".join(v.format(s=f"http://{self.address}") for v in VECTORS.values())


@pytest.fixture(scope="module")
def sink():
    server = Sink()
    yield server
    server.server.shutdown()


# Appended to a copy of a static report: hover over every point of every figure, one at a time, and keep
# a copy of each hover label (plotly draws them only on hover) for the DOM dump.
HOVER_ALL = """<script>
window.addEventListener('load', async () => {
  const pause = () => new Promise(r => setTimeout(r, 60));
  await pause();
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    for (const [c, trace] of (gd.data || []).entries()) {
      if (!trace.x || trace.type === 'heatmap' || trace.type === 'table') continue;
      for (let p = 0; p < trace.x.length; p++) {
        Plotly.Fx.hover(gd, [{curveNumber: c, pointNumber: p}]);
        await pause();
        const layer = gd.querySelector('.hoverlayer');
        if (layer && layer.childNodes.length) {
          const copy = document.createElement('div');
          copy.className = 'hover-copy';
          copy.appendChild(layer.cloneNode(true));
          document.body.appendChild(copy);
        }
      }
    }
  }
  document.body.appendChild(Object.assign(document.createElement('div'), {id: 'hovered'}));
});
</script>"""

FIGURE_PLOT = f"user-defined-plot:{FIGURE_ID}"  # tcnsearch's figure on the dashboard's study page
DANGEROUS = {"href", "xlink:href", "src", "srcset", "style", "action", "formaction", "data", "poster", "background"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Dom(HTMLParser):
    """The rendered DOM's markup that a payload made (an attribute that loads, links or runs, pointing to
    the sink or to `javascript:`, or a script or style holding the sink's URL), each with the plotly
    figure it sits in (None: none); and the DOM's text nodes."""

    def __init__(self, sink: str):
        super().__init__(convert_charrefs=True)
        self.sink, self.injected, self.texts, self.ids, self.open = sink, [], [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.add(attrs.get("id"))
        plot = attrs.get("id") if "js-plotly-plot" in (attrs.get("class") or "") else None
        for name, value in attrs.items():
            value = (value or "").lower()
            if (name in DANGEROUS or name.startswith("on")) and (self.sink in value or "javascript:" in value):
                self.injected.append((self._plot(), f"<{tag} {name}={value!r}>"))
        if tag not in VOID:
            self.open.append((tag, plot))

    def _plot(self):
        return next((plot for _, plot in reversed(self.open) if plot), None)

    def handle_endtag(self, tag):
        while self.open and self.open.pop()[0] != tag:  # what the serializer left open closes with it
            pass

    def handle_data(self, data):
        inside = self.open[-1][0] if self.open else None
        if inside in ("script", "style"):
            if "//" + self.sink in data:
                self.injected.append((self._plot(), f"<{inside}>{data[:80]}"))
        else:
            self.texts.append(data.replace("\u2060", ""))  # the word joiners that keep a note's URLs text


def _render(tmp_path, sink: Sink, page: str) -> _Dom:
    """Render `page` (a URL) in Chromium; the DOM it ends with, parsed (the sink's record starts afresh)."""
    sink.hits.clear()
    dom = _Dom(sink.address)
    dom.feed(chromium_dom(tmp_path, page))
    return dom


def _check(dom: _Dom, sink: Sink, payload: str, least: int = 1, upstream_plots: bool = False) -> None:
    """No request reached the sink, no payload became markup (`upstream_plots`: but in optuna-dashboard's own
    plots, which draw stored metric and parameter names with plotly's tags), the payload shows as text."""
    injected = [m for plot, m in dom.injected if not (upstream_plots and plot and plot != FIGURE_PLOT)]
    assert not sink.hits, f"a payload ran or loaded: {sorted(set(sink.hits))}; markup made: {injected[:8]}"
    assert not injected, f"a payload became markup: {injected[:8]}"
    shown = sum(payload in t for t in dom.texts)
    assert shown >= least, f"the payload shows as text {shown} times, not at least {least}"


def _render_report(tmp_path, sink: Sink, path) -> _Dom:
    hovering = path.with_name(path.stem + "-hover.html")
    hovering.write_text(path.read_text().replace("</body>", HOVER_ALL + "</body>"))
    dom = _render(tmp_path, sink, hovering.as_uri())
    assert "hovered" in dom.ids, "the hover script did not finish"
    return dom


GRID = {"kernel_size": [3, 5, 7], "dilation_factor": [2], "depth": [3], "per_block": [1]}


def _hostile_study(url: str, name: str, payload: str, promoted_from: str | None = None) -> optuna.Study:
    """A study shaped like run_study's (frozen survivors, latencies, infeasible proposals, a failure), with the
    payload wherever a string is stored (its first 200 characters in names, which Optuna stores in 512)."""
    short = payload[:200]
    study = optuna.create_study(study_name=name, storage=url, direction="minimize")
    study.set_metric_names([f"loss {payload}"])
    survivors = [survivor(k, 2, 3, 1, latency_ms=0.5 * k, speedup=3.0 / k) for k in (3, 5, 7)]
    freeze(study, survivors, GRID, {"metric": payload, "mode": "min", "max_latency_ms": 3.0, "min_speedup": None})
    for key in ("task", "preset", "device", "profile_level"):
        study.set_user_attr(key, payload)
    if promoted_from is not None:
        study.set_user_attr("promoted_from", promoted_from)
        study.set_user_attr("kendall_tau", payload)
    for i in range(8):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical(f"act {short}", [f"relu {payload}", "gelu"])
        s = survivors[i % 3]
        trial.set_user_attr("tcn", s.label if i % 2 else payload)
        trial.set_user_attr(short, {"why": payload, short: [payload]})
        if promoted_from is not None:
            trial.set_user_attr(PROMOTED_FROM, i)
        if i == 6:  # proposed, never trained
            trial.set_user_attr("tcn", s.label)
            trial.set_user_attr("infeasible", payload)
            study.tell(trial, state=TrialState.PRUNED)
        elif i == 7:
            storage_of(study).set_trial_system_attr(trial_id(trial), "fail_reason", payload)
            study.tell(trial, state=TrialState.FAIL)
        else:
            trial.set_user_attr("latency_ms", s.latency_ms)
            trial.report(1.0 + i, 1)
            study.tell(trial, 0.1 * (i + 1) + (0.05 if promoted_from else 0.0))
    return study


def _hostile_database(url, payload: str) -> tuple[str, list[str], str]:
    """Two hostile studies at `url`, the second a promotion of the first; (url, their names, payload)."""
    names = [f"proxy {payload[:200]}", f"promoted {payload[:200]}"]
    _hostile_study(url, names[0], payload)
    _hostile_study(url, names[1], payload, promoted_from=names[0])
    return url, names, payload


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, sink):
    return _hostile_database(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'shared.db'}", sink.payload())


@browser
def test_the_checks_see_a_payload_that_fires(tmp_path, sink):
    """The control: the payload written raw into a page loads from the sink and becomes markup."""
    page = tmp_path / "raw.html"
    page.write_text(f"<!doctype html><html><body><p>{sink.payload()}</p></body></html>")
    dom = _render(tmp_path, sink, page.as_uri())
    try:
        assert {"/script", "/img", "/svg", "/iframe", "/breakout"} & set(sink.hits), sink.hits
        assert len(dom.injected) >= 4, dom.injected
    finally:
        sink.hits.clear()


@browser
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_hostile_study_report_shows_its_strings_as_text(backend, sink, tmp_path, request):
    url, names, payload = (request.getfixturevalue("hostile") if backend == "sqlite" else
                           _hostile_database(request.getfixturevalue("pg_fresh_url"), sink.payload()))
    path = write_study_report(names[1], url, tmp_path / "study.html")
    _check(_render_report(tmp_path, sink, path), sink, payload, least=5)


@browser
def test_a_hostile_comparison_shows_its_strings_as_text(hostile, sink, tmp_path):
    url, names, payload = hostile
    path = write_comparison(names, url, tmp_path / "compare.html")
    _check(_render_report(tmp_path, sink, path), sink, payload, least=5)


TINY = ProfileSpec(lengths=[64], kernel_sizes=[3, 5], dilation_factors=[2, 4], depths=[2, 3], per_block=[1],
                   channels=8, ema_dim=4, min_receptive_field=None, max_time=0.02, min_pairs=3, min_speedup=0.01)


@pytest.fixture(scope="module")
def hostile_profile(tmp_path_factory, sink):
    """A tiny real profile whose device fingerprint is hostile (as a Ray worker's GPU could report it)."""
    result = run_profile(TINY, gpu="cpu", storage=f"sqlite:///{tmp_path_factory.mktemp('p') / 'latency.db'}",
                         progress=False)
    payload = sink.payload()
    device = dataclasses.replace(result.device, device_name=payload, torch_version=payload, cuda_version=payload,
                                 dtype=payload, backend=payload)
    return dataclasses.replace(result, device=device)


@browser
def test_a_hostile_profile_report_shows_its_strings_as_text(hostile_profile, sink, tmp_path):
    path = write_profile_report(hostile_profile, tmp_path / "profile.html")
    _check(_render_report(tmp_path, sink, path), sink, sink.payload(), least=3)


@browser
def test_the_dashboard_shows_a_hostile_study_and_its_notes_as_text(hostile, hostile_profile, sink, tmp_path):
    """optuna-dashboard's study page with the profile figure and note tcnsearch attaches, and the promotion
    note; the figure is also hovered over in a page of its own."""
    url, names, payload = hostile
    source, promoted = (optuna.load_study(study_name=n, storage=url) for n in names)
    attach_profile(promoted, hostile_profile, [s.label for s in frozen(promoted)[0]] + [payload])
    chosen = [t for t in source.get_trials() if t.state == TrialState.COMPLETE]
    result = summarize_promotion(source, promoted, chosen, payload, None, payload, True, url)
    attach_section(promoted, "promotion", promotion_note(result))
    study_id = storage_of(promoted).get_study_id_from_name(names[1])
    with serve_dashboard(url) as port:
        # optuna-dashboard's own Content-Security-Policy keeps its pages from loading or sending anything
        # elsewhere (its plots draw a stored metric or parameter name with plotly's tags): relied on here.
        policy = urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard").headers["Content-Security-Policy"]
        assert {"default-src 'self'", "img-src 'self' data: blob:", "connect-src 'self'"} <= set(policy.split(";"))
        study_page = _render(tmp_path, sink, f"http://127.0.0.1:{port}/dashboard/studies/{study_id}")
        assert FIGURE_PLOT in study_page.ids  # tcnsearch's figure is drawn
        _check(study_page, sink, payload, upstream_plots=True)
        for page in ("/note", "/trials"):
            _check(_render(tmp_path, sink, f"http://127.0.0.1:{port}/dashboard/studies/{study_id}{page}"), sink,
                   payload)
    figure = write_page(tmp_path / "figure.html", "figure", "", [dashboard_figure(hostile_profile)])
    _check(_render_report(tmp_path, sink, figure), sink, payload, least=0)  # the figure shows no device name


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    return [s for v in value for s in _strings(v)] if isinstance(value, list) else []


def test_stored_strings_reach_figures_and_notes_as_text(tmp_path):
    """Without a browser: what the figures and notes hold of a hostile database is escaped plotly text and
    Markdown (plotly's tags, Markdown links and images, bare autolinks all broken up)."""
    payload = ("<a href='http://evil.test/a'>a</a> <span style='background:url(http://evil.test/s)'>s</span> "
               "<b>b</b> ![i](http://evil.test/i.png) [l](javascript:x) www.evil.test me@evil.test | # *x*\n# h")
    memory = optuna.storages.InMemoryStorage()
    _, names, _ = _hostile_database(memory, payload)
    fingerprint = Fingerprint(payload, payload, payload, payload, payload)
    profile = ProfileResult(fingerprint, "cpu", "memory", ProfileSpec(), 0, 0, 0, 0, 0.0, [], [])
    source, promoted = (optuna.load_study(study_name=name, storage=memory) for name in names)
    drawn = [shown(source), shown(promoted)]  # as write_comparison draws them
    figures = [*study_figures(promoted), histories(drawn), fronts(drawn), best_table(drawn),
               *profile_figures(profile), dashboard_figure(profile)]
    strings = [s for fig in figures for s in _strings(json.loads(fig.to_json()))]
    assert not [s for s in strings if any(tag in s for tag in ("<a ", "<span", "<b>"))]
    assert sum(html.escape(payload, quote=False).replace("\n", " ") in s.replace("\n", " ") for s in strings) >= 5

    chosen = [t for t in source.get_trials() if t.state == TrialState.COMPLETE]
    notes = [profile_note(profile, [payload]),
             promotion_note(summarize_promotion(source, promoted, chosen, payload, None, payload, True, "memory"))]
    for note in notes:
        page = markdown_it.MarkdownIt("commonmark").enable("table").render(note)
        assert not [tag for tag in ("<a", "<img", "<span", "<b>", "<h1") if tag in page], page
        assert "<em>" not in page and "http\u2060://" in note and "www\u2060." in note and "me\u2060@" in note
        assert "<code>" not in page and "<strong>" in page  # the note's own Markdown still works
