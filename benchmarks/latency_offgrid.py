"""Does the latency model hold off its grid? Fit on one grid's stored profile, score on a grid it never saw.

  measure   the training grid (K 3,5,9,13; f 2,4,8; D 2-5; B 1,2) and the evaluation grid (K 7,11,21;
            f 3,6,12: every kernel size and dilation factor new, 21 and 12 beyond the stored range;
            D 2,3,5 and B 1,2 as stored), each measured in full at op level into its own database (kept with --keep,
            and reused from there by a rerun)
  score     the latency model fitted to the training grid's measurements only, predicting every
            evaluation measurement: share of latencies within +-10% of the measured one, Spearman,
            95% interval coverage, per metric (forward+backward decides by default), overall and for
            the extrapolated predictions (beyond the stored range of some axis) apart

    python benchmarks/latency_offgrid.py --keep /tmp/offgrid            # about 25 minutes on a busy 2-core VM
    python benchmarks/latency_offgrid.py --keep /tmp/offgrid --parts score --json

Shapes: op level, L = 512 and 2048, 64 channels, batch 1, EMA N = 16, one measuring thread by default.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from scipy.stats import spearmanr

from tcnsearch.profile import (
    LatencyModel,
    LatencyTable,
    ProfileSpec,
    Shape,
    default_cpu_threads,
    fingerprint,
    run_profile,
)
from tcnsearch.storage import create_engine
from tcnsearch.structure import Structure

SHAPES = {"lengths": [512, 2048], "channels": 64, "min_receptive_field": None, "strategy": "full"}
TRAIN = ProfileSpec(kernel_sizes=[3, 5, 9, 13], dilation_factors=[2, 4, 8], depths=[2, 3, 4, 5], per_block=[1, 2],
                    **SHAPES)
EVAL = ProfileSpec(kernel_sizes=[7, 11, 21], dilation_factors=[3, 6, 12], depths=[2, 3, 5], per_block=[1, 2],
                   **SHAPES)
KEY = ("kernel_size", "dilation_factor", "depth", "per_block")


def _measure(spec: ProfileSpec, db: Path, args, log) -> dict:
    log(f"measure: {len(spec.candidates())} candidates x {len(spec.lengths)} lengths into {db}")
    start = time.perf_counter()
    result = run_profile(spec.model_copy(update={"threads": args.threads}), gpu="cpu", storage=f"sqlite:///{db}",
                         progress=not args.json)
    return {"candidates": len(spec.candidates()), "measured": result.measured, "cached": result.cached,
            "pairs": result.pairs, "seconds": round(time.perf_counter() - start, 1),
            "fingerprint": result.device.as_dict()}


def _rows(db: Path, threads: int | None) -> list[dict]:
    """The stored op-level measurements of this CPU at the benchmark's thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or default_cpu_threads())  # part of the fingerprint, as in the profile
    try:
        fp = fingerprint(torch.device("cpu"), "fp32")
    finally:
        torch.set_num_threads(before)
    table = LatencyTable(create_engine(f"sqlite:///{db}"), create=False)
    fp_id = table.fingerprint_id(fp, create=False)
    return table.all_rows(fp_id, "op", "") if fp_id is not None else []


def _item(r: dict) -> tuple[Shape, Structure]:
    return (Shape(r["batch"], r["channels"], r["length"], r["ema_dim"], r["bidirectional"]),
            Structure(*(r[k] for k in KEY)))


def scores(model: LatencyModel, held: list[dict]) -> dict:
    """Within +-10%, Spearman and interval coverage of `model` on the measurements `held`."""
    items = [_item(r) for r in held]
    preds = model.predict(items)
    out: dict = {"n": len(held)}
    for m in ("fwd", "fwdbwd"):
        # A latency is the baseline's time over the speedup: the ratio of two latencies at one shape is
        # the inverse ratio of their speedups, so within +-10% is judged on the speedups.
        ratio = [r[f"speedup_{m}"] / p[m][0] for p, r in zip(preds, held, strict=True)]
        within = [abs(q - 1) <= 0.10 for q in ratio]
        covered = [p[m][1] <= r[f"speedup_{m}"] <= p[m][2] for p, r in zip(preds, held, strict=True)]
        out[m] = {"within_10pct": sum(within) / len(within),
                  "spearman": float(spearmanr([p[m][0] for p in preds], [r[f"speedup_{m}"] for r in held]).statistic),
                  "interval_coverage": sum(covered) / len(covered),
                  "median_abs_error": sorted(abs(q - 1) for q in ratio)[len(ratio) // 2]}
    return out


def part_score(train_db: Path, eval_db: Path, threads: int | None) -> dict:
    train, held = _rows(train_db, threads), _rows(eval_db, threads)
    start = time.perf_counter()
    model = LatencyModel.fit(train)
    fit_s = time.perf_counter() - start
    beyond = [r for r in held if model.extrapolated(*_item(r))]
    inside = [r for r in held if not model.extrapolated(*_item(r))]
    return {"train_measurements": len(train), "fit_s": round(fit_s, 2), "sd_scale": model.sd_scale,
            "sd_scale_unseen": model.sd_scale_unseen, "all": scores(model, held),
            "extrapolated": scores(model, beyond) if beyond else None,
            "within_range": scores(model, inside) if inside else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="measure,score")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads to measure with (default: all but one)")
    parser.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the two databases in this folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    out: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        train_db, eval_db = tmp / "train.db", tmp / "eval.db"
        if "measure" in args.parts:
            out["train_grid"] = _measure(TRAIN, train_db, args, log)
            out["eval_grid"] = _measure(EVAL, eval_db, args, log)
        if "score" in args.parts:
            out["score"] = part_score(train_db, eval_db, args.threads)
    print(json.dumps(out, indent=2, default=str) if args.json else summary(out))
    return 0


def summary(out: dict) -> str:
    lines = [f"{k}: {v['candidates']} candidates, {v['seconds']} s" for k, v in out.items() if k != "score"]
    if s := out.get("score"):
        lines.append(f"latency model fitted to {s['train_measurements']} measurements ({s['fit_s']} s), "
                     f"interval scale {s['sd_scale']} (seen values), {s['sd_scale_unseen']} (unseen)")
        for part in ("all", "within_range", "extrapolated"):
            if not s.get(part):
                continue
            for m in ("fwdbwd", "fwd"):
                v = s[part][m]
                lines.append(f"  {part:12s} {m:7s} n={s[part]['n']:3d} within +-10% {v['within_10pct']:6.1%} "
                             f"(aim >= 95%/90%)  Spearman {v['spearman']:.3f} (aim >= 0.98)  95% coverage "
                             f"{v['interval_coverage']:.0%} (aim 93-97%)  median |error| {v['median_abs_error']:.1%}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
