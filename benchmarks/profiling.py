"""Can the profile's numbers be trusted? Repeatability, decisions, adaptive profiling, the latency model, levels.

Parts (all by default; `--parts repeat,levels` to pick), each in one process on this device:

  repeat    two independent full profiles of the same candidates (a spread-out sample of the
            default grid), in two databases, with the other parts' work between them when run
            together: repeat-to-repeat spread of the speedups (median, p90), Kendall tau, and
            decision agreement at the default threshold and at one near the median speedup
  adaptive  the default grid measured in full, then adaptively in a fresh database: time and
            decision agreement; the latency model fitted to 30% of the full profile (a spread-out
            sample), scored on the held-out 70%: share within +-10% of the measured latency, Spearman
  big       a grid of more than 1,000 candidates at op level, adaptively: time, measured share
  model     the default grid at model level (the assoc-recall tiny study's model), adaptively
  levels    op, layer and model speedups of the same structures, side by side

    python benchmarks/profiling.py                    # everything (about 40 minutes on 2 CPU cores)
    python benchmarks/profiling.py --parts repeat --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from scipy.stats import kendalltau, spearmanr

from tcnsearch.profile import (
    LatencyModel,
    LatencyTable,
    ProfileSpec,
    decision,
    default_cpu_threads,
    fingerprint,
    run_profile,
    spread_sample,
)
from tcnsearch.storage import create_engine

KEY = ("kernel_size", "dilation_factor", "depth", "per_block")
THREADS: int | None = None


def profile(spec: ProfileSpec, **kwargs):
    """run_profile at the benchmark's thread count."""
    return run_profile(spec.model_copy(update={"threads": THREADS}), **kwargs)


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def structures(spec: ProfileSpec, picked) -> ProfileSpec:
    """`spec` narrowed to a grid that holds `picked` (and whatever else that sub-grid holds)."""
    return spec.model_copy(update={"kernel_sizes": sorted({c.kernel_size for c in picked}),
                                   "dilation_factors": sorted({c.dilation_factor for c in picked}),
                                   "depths": sorted({c.depth for c in picked}),
                                   "per_block": sorted({c.per_block for c in picked})})


def by_key(result) -> dict:
    return {tuple(r[k] for k in KEY): r for r in result.candidates if r["ok"]}


def agreement(a: dict, b: dict, threshold: float, metric: str) -> dict:
    """Decisions of two runs at `threshold`: how many both decided, and how many of those agree."""
    both, agree, undecided = 0, 0, 0
    for k in a.keys() & b.keys():
        da = decision((a[k][metric], *a[k][f"{metric}_ci"]), threshold)
        db = decision((b[k][metric], *b[k][f"{metric}_ci"]), threshold)
        undecided += (da == "undecided") + (db == "undecided")
        if da != "undecided" and db != "undecided":
            both += 1
            agree += da == db
    return {"threshold": threshold, "decided_by_both": both, "agree": agree,
            "agree_share": agree / both if both else None, "undecided_either_run": undecided}


def part_repeat(args, tmp: Path, log, between=None) -> dict:
    sub = ProfileSpec(strategy="full", kernel_sizes=[3, 9, 17], dilation_factors=[2, 4, 8, 16], depths=[3, 4, 5, 6],
                      per_block=[1, 2])  # the default shapes; a sub-grid of the default grid
    log(f"repeat: {len(sub.candidates())} candidates, first run")
    start = time.perf_counter()
    first = profile(sub, gpu=args.gpu, storage=f"sqlite:///{tmp / 'repeat1.db'}", progress=not args.json)
    first_s = time.perf_counter() - start
    if between:
        between()
    log("repeat: second run")
    second = profile(sub, gpu=args.gpu, storage=f"sqlite:///{tmp / 'repeat2.db'}", progress=not args.json)
    a, b = by_key(first), by_key(second)
    common = sorted(a.keys() & b.keys())
    out = {"candidates": len(common), "first_run_s": round(first_s, 1),
           "pairs_per_candidate_median": statistics.median(r["n_pairs"] for r in a.values())}
    for m in ("speedup_fwd", "speedup_fwdbwd"):
        spread = [abs(a[k][m] - b[k][m]) / a[k][m] for k in common]
        out[m] = {"spread_median": statistics.median(spread), "spread_p90": quantile(spread, 0.9),
                  "kendall_tau": kendalltau([a[k][m] for k in common], [b[k][m] for k in common]).statistic,
                  "ci_width_median": statistics.median((a[k][f"{m}_ci"][1] - a[k][f"{m}_ci"][0]) / a[k][m]
                                                       for k in common)}
    near = statistics.median(a[k]["speedup_fwdbwd"] for k in common)
    out["decisions"] = [agreement(a, b, t, "speedup_fwdbwd") for t in (1.0, round(near, 2))]
    return out


def part_adaptive(args, tmp: Path, log) -> dict:
    spec = ProfileSpec(strategy="full")
    full_url = f"sqlite:///{tmp / 'full.db'}"
    log(f"adaptive: the default grid in full ({len(spec.candidates())} candidates)")
    start = time.perf_counter()
    full = profile(spec, gpu=args.gpu, storage=full_url, progress=not args.json)
    full_s = time.perf_counter() - start
    log("adaptive: the default grid adaptively")
    start = time.perf_counter()
    adaptive = profile(spec.model_copy(update={"strategy": "adaptive"}), gpu=args.gpu,
                           storage=f"sqlite:///{tmp / 'adaptive.db'}", progress=not args.json)
    adaptive_s = time.perf_counter() - start
    f, a = {tuple(r[k] for k in KEY): r for r in full.candidates}, {tuple(r[k] for k in KEY): r
                                                                     for r in adaptive.candidates}
    decided = [k for k in f if f[k]["decision"] in ("survivor", "rejected")]
    same = sum(a[k]["decision"] == f[k]["decision"] for k in decided)
    # At the default threshold of 1.0 every op-level candidate survives on a CPU, so the decisions above
    # are easy. Again at a threshold near the median speedup, where half the grid is a close call: the
    # full profile's decisions there follow from its stored intervals.
    metric = "speedup_fwdbwd"
    near = round(statistics.median(r[metric] for r in full.candidates if r["ok"]), 1)
    log(f"adaptive: the default grid adaptively at a threshold of {near}x, near the median speedup")
    start = time.perf_counter()
    hard = profile(spec.model_copy(update={"strategy": "adaptive", "min_speedup": near}), gpu=args.gpu,
                   storage=f"sqlite:///{tmp / 'adaptive-near.db'}", progress=not args.json)
    hard_s = time.perf_counter() - start
    f_near = {k: decision((r[metric], *r[f"{metric}_ci"]), near) for k, r in f.items() if r["ok"]}
    h = {tuple(r[k] for k in KEY): r for r in hard.candidates}
    decided_near = [k for k, d in f_near.items() if d != "undecided"]
    same_near = sum(h[k]["decision"] == f_near[k] for k in decided_near)
    near_median = {"threshold": near, "adaptive_s": round(hard_s, 1), "time_share": hard_s / full_s,
                   "measured": hard.measured, "predicted": hard.predicted, "decided_in_full": len(decided_near),
                   "undecided_in_full": len(f_near) - len(decided_near), "same_decision": same_near,
                   "same_share": same_near / len(decided_near) if decided_near else None,
                   "undecided_adaptive": len(hard.undecided)}
    # The latency model on held-out candidates: fit to a spread-out 30% of the full profile's measurements.
    table = LatencyTable(create_engine(full_url))
    fp_id = table.fingerprint_id(full.device)
    rows = table.all_rows(fp_id, "op", "")
    train_c = set(spread_sample(spec.candidates(), int(0.3 * len(spec.candidates()))))
    key = lambda r: (r["kernel_size"], r["dilation_factor"], r["depth"], r["per_block"])  # noqa: E731
    train = [r for r in rows if key(r) in {tuple(getattr(c, k) for k in KEY) for c in train_c}]
    held = [r for r in rows if r not in train]
    model = LatencyModel.fit(train)
    from tcnsearch.profile import Shape
    from tcnsearch.structure import Structure

    items = [(Shape(r["batch"], r["channels"], r["length"], r["ema_dim"], r["bidirectional"]), Structure(*key(r)))
             for r in held]
    preds = model.predict(items)
    scores = {}
    for m in ("fwd", "fwdbwd"):
        # Latency = the baseline's pooled time over the speedup, for the measurement and the prediction alike.
        measured = [model.base_time(s, m) / r[f"speedup_{m}"] for (s, _), r in zip(items, held, strict=True)]
        predicted = [model.base_time(s, m) / p[m][0] for (s, _), p in zip(items, preds, strict=True)]
        within = [abs(p / q - 1) <= 0.10 for p, q in zip(predicted, measured, strict=True)]
        covered = [p[m][1] <= r[f"speedup_{m}"] <= p[m][2] for p, r in zip(preds, held, strict=True)]
        scores[m] = {"within_10pct": sum(within) / len(within), "spearman": spearmanr(predicted, measured).statistic,
                     "interval_coverage": sum(covered) / len(covered)}
    return {"candidates": len(spec.candidates()), "full_s": round(full_s, 1), "adaptive_s": round(adaptive_s, 1),
            "time_share": adaptive_s / full_s, "adaptive_measured": adaptive.measured,
            "adaptive_predicted": adaptive.predicted, "decided_in_full": len(decided), "same_decision": same,
            "same_share": same / len(decided) if decided else None,
            "full_survivors": len(full.survivors), "full_undecided": len(full.undecided), "near_median": near_median,
            "latency_model": {"train_measurements": len(train), "held_out_measurements": len(held), **scores}}


def part_big(args, tmp: Path, log) -> dict:
    spec = ProfileSpec(kernel_sizes=[3, 5, 7, 9, 13, 17, 25, 33], dilation_factors=[2, 3, 4, 6, 8, 12, 16],
                       depths=[2, 3, 4, 5, 6, 7, 8], per_block=[1, 2, 3], min_receptive_field=None)
    log(f"big: {len(spec.candidates())} candidates at op level, adaptively")
    out = {"default_threshold": adaptive_run(spec, args, tmp / "big.db")}
    # On a CPU every TCN of this grid beats the EMA by 2x or more at op level: the default threshold
    # decides everything from the first sample. At the median speedup half the grid is a close call.
    near = round(out["default_threshold"]["median_speedup"], 1)
    log(f"big: again from an empty database at a threshold of {near}x, near the median speedup")
    out["near_median"] = adaptive_run(spec.model_copy(update={"min_speedup": near}), args, tmp / "big-near.db")
    return out


def adaptive_run(spec: ProfileSpec, args, db: Path) -> dict:
    """One adaptive profile from an empty database: its time and what it measured, predicted, decided."""
    start = time.perf_counter()
    result = profile(spec, gpu=args.gpu, storage=f"sqlite:///{db}", progress=not args.json)
    return {"candidates": len(spec.candidates()), "seconds": round(time.perf_counter() - start, 1),
            "threshold": spec.min_speedup, "median_speedup": statistics.median(
                r[f"speedup_{'fwdbwd' if spec.mode == 'train' else 'fwd'}"] for r in result.candidates if r["ok"]),
            "measured": result.measured, "predicted": result.predicted, "survivors": len(result.survivors),
            "undecided": len(result.undecided),
            "rejected": sum(r["decision"] == "rejected" for r in result.candidates)}


def _study_spec(level: str, **changes) -> ProfileSpec:
    from tcnsearch.search import load_spec

    return load_spec("assoc-recall", "tiny").profile_spec().model_copy(update={"level": level, **changes})


def part_model(args, tmp: Path, log) -> dict:
    spec = ProfileSpec().model_copy(update={
        k: getattr(_study_spec("model"), k) for k in ("lengths", "channels", "batch", "ema_dim", "level", "model")})
    spec = spec.model_copy(update={"min_receptive_field": None})
    log(f"model: the default grid ({len(spec.candidates())} candidates) at model level, adaptively")
    return adaptive_run(spec, args, tmp / "model.db")


def part_levels(args, tmp: Path, log) -> dict:
    base = _study_spec("op", strategy="full").model_copy(update={"kernel_sizes": [3, 5, 7], "dilation_factors": [2, 4],
                                                                  "depths": [3, 4], "per_block": [1, 2]})
    rows = {}
    for level in ("op", "layer", "model"):
        spec = base.model_copy(update={"level": level})
        log(f"levels: {level}, {len(spec.candidates())} structures")
        result = profile(spec, gpu=args.gpu, storage=f"sqlite:///{tmp / 'levels.db'}", progress=not args.json)
        for k, r in by_key(result).items():
            rows.setdefault(k, {"K": k[0], "f": k[1], "D": k[2], "B": k[3], "R": r["receptive_field"]})
            rows[k][level] = {m: [round(r[m], 2), [round(v, 2) for v in r[f"{m}_ci"]]]
                              for m in ("speedup_fwd", "speedup_fwdbwd")}
    return {"shape": {"lengths": base.lengths, "channels": base.channels, "batch": base.batch},
            "structures": [r for r in rows.values() if all(lv in r for lv in ("op", "layer", "model"))]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", default="auto")
    parser.add_argument("--parts", default="repeat,adaptive,big,model,levels")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads to measure with (default: all)")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON instead of the summary")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the parts' SQLite databases in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    global THREADS
    THREADS = args.threads
    parts = args.parts.split(",")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    import torch

    torch.set_num_threads(args.threads or default_cpu_threads())  # what the parts measure with, for the device line
    out: dict = {"threads": torch.get_num_threads(),
                 "device": fingerprint(torch.device("cuda" if torch.cuda.is_available() and args.gpu != "cpu"
                                                    else "cpu"), "fp32").as_dict()}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        others = [p for p in parts if p != "repeat"]

        def between():  # the other parts run between the two repeat runs: minutes apart, as users see it
            for p in others:
                out[p] = globals()[f"part_{p}"](args, tmp, log)
                log(json.dumps({p: out[p]}, default=str))

        if "repeat" in parts:
            out["repeat"] = part_repeat(args, tmp, log, between)
        else:
            between()
    print(json.dumps(out, indent=2, default=str) if args.json else summary(out))
    return 0


def summary(out: dict) -> str:
    """The figures that answer the benchmark's questions, one line each, aims alongside."""
    lines = [f"device: {out['device'].get('device_name')} ({out['device'].get('backend')}), {out['threads']} thread(s)"]
    if r := out.get("repeat"):
        lines.append(f"repeat ({r['candidates']} candidates, {r['pairs_per_candidate_median']} pairs each, median)")
        for m in ("speedup_fwd", "speedup_fwdbwd"):
            s = r[m]
            lines.append(f"  {m:15s} spread median {s['spread_median']:6.1%} (aim <= 5%)  p90 {s['spread_p90']:6.1%}"
                         f" (aim <= 10%)  Kendall tau {s['kendall_tau']:.3f} (aim >= 0.9)"
                         f"  interval width {s['ci_width_median']:.1%}")
        for d in r["decisions"]:
            lines.append(f"  decisions at {d['threshold']}x: {d['agree']}/{d['decided_by_both']} agree"
                         f" (aim >= 98%), {d['undecided_either_run']} undecided in either run")
    if a := out.get("adaptive"):
        lm = a["latency_model"]
        lines.append(f"adaptive ({a['candidates']} candidates): {a['adaptive_s']} s vs full {a['full_s']} s ="
                     f" {a['time_share']:.1%} (aim <= 50%), same decision {a['same_decision']}/{a['decided_in_full']}"
                     f" (aim >= 98%); measured {a['adaptive_measured']}, predicted {a['adaptive_predicted']}")
        if n := a.get("near_median"):
            lines.append(f"  at {n['threshold']}x (near the median): {n['adaptive_s']} s = {n['time_share']:.1%} of the"
                         f" full profile, same decision {n['same_decision']}/{n['decided_in_full']} (aim >= 98%);"
                         f" measured {n['measured']}, predicted {n['predicted']}, {n['undecided_adaptive']} undecided"
                         f" (full: {n['undecided_in_full']})")
        lines.append(f"latency model (fit to {lm['train_measurements']}, scored on {lm['held_out_measurements']}"
                     " held out)")
        for m in ("fwd", "fwdbwd"):
            lines.append(f"  {m:7s} within +-10% {lm[m]['within_10pct']:.1%} (aim >= 95%)  Spearman"
                         f" {lm[m]['spearman']:.3f} (aim >= 0.98)"
                         f"  95% interval coverage {lm[m]['interval_coverage']:.0%}")
    runs = [("big grid at op level", b) for b in out.get("big", {}).values()]
    runs += [("default grid at model level", out["model"])] if "model" in out else []
    for what, b in runs:
        lines.append(f"{what} ({b['candidates']} candidates, threshold {b['threshold']}x): {b['seconds']} s"
                     f" (aim < 600 s); measured {b['measured']}, predicted {b['predicted']}; {b['survivors']}"
                     f" survive, {b['undecided']} undecided, {b['rejected']} rejected")
    if lv := out.get("levels"):
        lines.append("levels: K f D B R | op fwd, fwd+bwd | layer fwd, fwd+bwd | model infer, train step")
        for s in lv["structures"]:
            cells = " | ".join(f"{s[level]['speedup_fwd'][0]:.2f}x {s[level]['speedup_fwdbwd'][0]:.2f}x"
                               for level in ("op", "layer", "model"))
            lines.append(f"  {s['K']} {s['f']} {s['D']} {s['B']} {s['R']} | {cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
