"""What the commands print for people (`--json` prints the documents instead): tables that fit the terminal."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from tcnsearch.cli.tables import Col, print_table
from tcnsearch.profile import ProfileResult, speedup_text
from tcnsearch.search import ABANDONED, FAIL_REASON, INFEASIBLE, LATENCY, WARM_START, StudyResult
from tcnsearch.structure import AXES


def print_profile(result: ProfileResult, report: Path, console: Console | None = None) -> None:
    spec = result.spec
    train_mode = spec.mode == "train"
    cols = [Col("TCN"), Col("R", right=True, drop=3), Col("decision"),
            Col("fwd x [95% CI]", right=True, drop=0 if not train_mode else 2),
            Col("train x [95% CI]", right=True, drop=2 if not train_mode else 0), Col("pairs", right=True, drop=1)]
    rows = [[r["tcn"], str(r["receptive_field"]), r["decision"] + _source_tag(r),
             speedup_text(r, "speedup_fwd"), speedup_text(r, "speedup_fwdbwd"), str(r["n_pairs"])]
            for r in result.survivors + result.undecided]
    console = console or Console()
    print_table(f"{spec.level}-level profile on {result.device.device_name}, {result.device.backend}, "
                f"{result.device.dtype} (survives: {'train' if train_mode else 'fwd'} interval >= {spec.min_speedup}x "
                "at every length)", cols, rows, console)
    if result.device.is_fallback:
        console.print("[yellow]warning:[/] the native TCN kernel could not be built here (no C compiler?): these "
                      "are the PyTorch fallback's timings, stored under a fingerprint of their own")
    if result.oom:
        console.print(f"[yellow]warning:[/] {len({r['tcn'] for r in result.oom})} structures ran out of memory (not "
                      f"'slower': measured again next run), e.g. {result.oom[0]['tcn']}: {result.oom[0]['error']}")
    console.print(f"{len(result.survivors)} survive, {len(result.undecided)} undecided, {result.count('rejected')} "
                  f"rejected of {len(result.candidates)} candidates ({result.predicted} predicted by the latency "
                  f"model{_extrapolated(result)}); measured {result.measured} ({result.pairs} pairs), from the table "
                  f"{result.cached}, {len(result.failed)} failed, {result.count('oom')} out of memory; "
                  f"{result.elapsed_s:.1f} s. Stored in {result.storage}. Report: {report}")


def _source_tag(row: dict) -> str:
    if row.get("extrapolated"):
        return f" (pred., extrapolated {','.join(row['extrapolated_axes'])})"
    return " (pred.)" if row["source"] == "predicted" else ""


def _extrapolated(result: ProfileResult) -> str:
    n = result.count_extrapolated()
    return f", {n} of them extrapolated beyond the measured range" if n else ""


def print_stored_profiles(rows: list[dict]) -> None:
    """LatencyTable.summary() rows: per fingerprint, level and shape."""
    if not rows:
        Console().print("nothing stored yet: run `tcnsearch profile`")
        return
    cols = [Col("device"), Col("software", flex=True, drop=2), Col("level"), Col("B x C x L"),
            Col("TCNs", right=True), Col("pairs", right=True, drop=3), Col("failed", right=True, drop=4),
            Col("last measured", drop=1)]
    print_table("Stored profiles", cols, [
        [r["device_name"], f"{r['backend']}, {r['threads']} threads, torch {r['torch_version']}, "
                           f"CUDA {r['cuda_version']}, {r['dtype']}", r["level"],
         f"{r['batch']} x {r['channels']} x {r['length']}{' bidir' if r['bidirectional'] else ''}", str(r["tcn"]),
         str(r["pairs"] or 0), str(r["failed"]), str(r["last"])[:16]] for r in rows])


def print_studies(studies: list[dict]) -> None:
    """search.list_studies() rows."""
    print_table("Studies (tcnsearch study NAME)", [Col("NAME"), Col("task", drop=2), Col("from", drop=1),
                                                   Col("description", flex=True)],
                [[s["name"], s["task"], s["origin"], s["description"]] for s in studies])


def print_study(result: StudyResult, console: Console | None = None) -> None:
    metric = result.metric_names[0]
    cols = [Col("#", right=True), Col("state"), Col("TCN"), Col("R", right=True, drop=3),
            Col("latency ms", right=True, drop=2), Col(metric, right=True), Col("params", right=True, drop=4),
            Col("note", flex=True, drop=1)]
    best = {b["number"] for b in result.best}
    structure_params = {name for name, _ in AXES}
    rows = []
    for t in result.trials:
        if INFEASIBLE in t or WARM_START in t or ABANDONED in t:
            continue  # never trained here: counted below
        searched = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items()
                             if k not in structure_params)
        rows.append([f"{t['number']}{' *' if t['number'] in best else ''}", t["state"], str(t.get("tcn", "-")),
                     str(t.get("receptive_field", "-")), f"{t[LATENCY]:.3g}" if LATENCY in t else "-",
                     f"{t['values'][0]:.4f}" if t["values"] else "-", f"{t.get('num_parameters', '-')}",
                     t.get(FAIL_REASON) or searched])
    console = console or Console()
    print_table(f"Study {result.study_name} ({result.task}, preset {result.preset}) on {result.device}", cols, rows,
                console)
    for note in result.warnings:
        console.print(f"[yellow]warning:[/] {note}")
    counts = ", ".join(f"{n} {s}" for s, n in result.counts.items() if n and s not in ("INFEASIBLE", "WARM_START"))
    apart = [f"{result.counts[k]} {what}" for k, what in (("INFEASIBLE", "proposals outside the survivors or the "
                                                                         "budget, never trained"),
                                                          ("WARM_START", "trials copied by the warm start"))
             if result.counts.get(k)]
    counts += f" ({'; '.join(apart)})" if apart else ""
    console.print(f"{counts}; this run: {result.ran} trial(s), {result.elapsed_s:.1f} s; {result.survivors} TCN "
                  f"structures survived the profile. Stored in {result.storage}. * best. Browse: tcnsearch "
                  f"dashboard --storage {result.storage}")
    if result.best and len(result.best) == 1:
        best = result.best[0]
        weights = (f"its weights are artifact {best['weights_artifact']} in {result.artifacts}; "
                   if best.get("weights_artifact")
                   else "")
        console.print(f"Best: trial {best['number']} ({best.get('tcn', '?')}): {weights}train it further with "
                      f"tcnsearch export {result.study_name} && tcnsearch train {result.task} --config "
                      f"{result.study_name}-trial-{best['number']}.yaml")


def print_promotion(result, console: Console | None = None) -> None:
    """search.promote's result: the two rankings side by side, Kendall's tau and the pick's regret."""
    console = console or Console()
    cols = [Col("proxy #", right=True), Col("TCN"), Col("proxy", right=True), Col("rank", right=True),
            Col("promoted", right=True), Col("rank ", right=True), Col("promoted #", right=True, drop=1)]
    print_table(f"{result.source} -> {result.study_name} ({result.metric}, "
                f"{'lower' if result.minimize else 'higher'} is better)", cols,
                [[str(p["proxy_trial"]), str(p["tcn"]), f"{p['proxy_value']:.4g}", str(p["proxy_rank"]),
                  f"{p['promoted_value']:.4g}", str(p["promoted_rank"]), str(p["promoted_trial"])]
                 for p in result.pairs], console)
    if result.tau is None:
        console.print("fewer than two promoted trials finished: no ranking to compare yet (--resume continues)")
        return
    lo, hi = result.tau_ci
    console.print(f"Kendall's tau {result.tau:.2f} [95% interval {lo:.2f}, {hi:.2f}]; the proxy's pick (trial "
                  f"{result.pick['proxy_trial']}) ranks {result.pick['promoted_rank']} of {len(result.pairs)} at "
                  f"{result.preset}, regret {result.regret:.4g} ({100 * result.regret_relative:.1f}% of the best); "
                  f"{result.elapsed_s:.0f} s. Stored in {result.storage}.")
