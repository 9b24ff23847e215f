"""How long a default profile takes, how fast the cached re-run is, and how stable the numbers are.

1. The default `tcnsearch profile` grid on this device, from an empty database.
2. The same profile again: everything comes from the latency table (library call, and the CLI
   command's whole wall time including Python start-up and imports).
3. Stability: the within-measurement spread (interquartile range / median of the repeats), and
   the repeat-to-repeat spread: a sample of candidates measured again in a second database,
   compared speedup by speedup.

    python benchmarks/profiling.py            # the default grid (a few minutes on 2 CPU cores)
    python benchmarks/profiling.py --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tcnsearch.profile import ProfileSpec, run_profile


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", default="auto")
    parser.add_argument("--repeat-sample", type=int, default=24, help="candidates measured twice")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    spec = ProfileSpec()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        log(f"default grid: {len(spec.candidates())} candidates x {len(spec.lengths)} lengths")
        start = time.perf_counter()
        full = run_profile(spec, gpu=args.gpu, storage=url)
        full_s = time.perf_counter() - start

        start = time.perf_counter()
        cached = run_profile(spec, gpu=args.gpu, storage=url, progress=False)
        cached_s = time.perf_counter() - start
        start = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "tcnsearch.cli", "profile", "--gpu", args.gpu, "--storage", url,
                              "--json", "--out", str(Path(tmp) / "r.html")], capture_output=True, text=True)
        cli_s = time.perf_counter() - start
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["measured"] == 0

        ok = [r for r in full.candidates if r["ok"]]
        sample = random.Random(0).sample(ok, min(args.repeat_sample, len(ok)))
        sub = spec.model_copy(update={
            "kernel_sizes": sorted({r["kernel_size"] for r in sample}),
            "dilation_factors": sorted({r["dilation_factor"] for r in sample}),
            "depths": sorted({r["depth"] for r in sample}), "per_block": sorted({r["per_block"] for r in sample}),
        })
        again = run_profile(sub, gpu=args.gpu, storage=f"sqlite:///{Path(tmp) / 'again.db'}")
        first = {(r["kernel_size"], r["dilation_factor"], r["depth"], r["per_block"]): r for r in full.candidates}
        deltas = {"speedup_fwd": [], "speedup_fwdbwd": []}
        for r in again.candidates:
            before = first.get((r["kernel_size"], r["dilation_factor"], r["depth"], r["per_block"]))
            if r["ok"] and before and before["ok"]:
                for k in deltas:
                    deltas[k].append(abs(r[k] - before[k]) / before[k])

    within = [e[k] for r in ok for e in r["by_length"] for k in ("tcn_fwd_spread", "tcn_fwdbwd_spread")]
    within += [e[k] for e in full.ema if e["status"] == "ok" for k in ("fwd_spread", "fwdbwd_spread")]
    result = {
        "device": full.device.device_name,
        "candidates": len(full.candidates),
        "measurements": full.measured,
        "survivors": len(full.survivors),
        "full_profile_s": full_s,
        "cached_rerun_library_s": cached_s,
        "cached_rerun_cli_s": cli_s,
        "cached_measured": cached.measured,
        "within_spread_median": statistics.median(within),
        "within_spread_p90": quantile(within, 0.9),
        "repeat_pairs": len(deltas["speedup_fwd"]),
        "repeat_spread_median": {k: statistics.median(v) for k, v in deltas.items() if v},
        "repeat_spread_p90": {k: quantile(v, 0.9) for k, v in deltas.items() if v},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"# default profile on {result['device']}")
        print(f"candidates {result['candidates']}, measurements {result['measurements']}, "
              f"survivors {result['survivors']}")
        print(f"full profile: {full_s:.1f} s ({full_s / max(1, full.measured):.2f} s per measurement)")
        print(f"cached re-run: {cached_s:.2f} s in the library, {cli_s:.2f} s as a CLI command")
        print(f"within-measurement spread (IQR / median of the repeats): median "
              f"{100 * result['within_spread_median']:.1f}%, p90 {100 * result['within_spread_p90']:.1f}%")
        for k in deltas:
            if deltas[k]:
                print(f"repeat-to-repeat spread of {k} over {len(deltas[k])} candidates: "
                      f"median {100 * result['repeat_spread_median'][k]:.1f}%, "
                      f"p90 {100 * result['repeat_spread_p90'][k]:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
