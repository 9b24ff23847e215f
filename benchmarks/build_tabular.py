"""Build the tabular benchmark of real training runs that benchmarks/search_quality.py replays.

A grid study through tcnsearch itself (`benchmarks/data/tabular-lm.yaml`): the profile of 48 TCN
structures at model level on this machine, then Ray Tune trains every survivor x 3 learning
rates x 2 seeds, each to its last step, every run stored in an Optuna study as it finishes.
Interrupt it and run it again: it continues (the study is resumed). At the end the table is
written to benchmarks/data/tabular-lm.json.gz: one row per run with its structure, learning rate,
seed, bits per character at every evaluation (the learning curve a replayed ASHA stops on), the
final bpc, the training time and the structure's profiled latency and speedup.

    python benchmarks/build_tabular.py                 # ~40 min on 2 cores, resumable
    python benchmarks/build_tabular.py --export-only   # write the table from the stored study
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from attention_ablation import stdlib_corpus  # noqa: E402

from tcnsearch.search import frozen, run_study, trained  # noqa: E402

STUDY = HERE / "data" / "tabular-lm.yaml"
TABLE = HERE / "data" / "tabular-lm.json.gz"


def export(storage: str, path: Path = TABLE) -> dict:
    study = optuna.load_study(study_name="tabular-lm-tiny", storage=storage)
    frozen_survivors, grid = frozen(study)
    survivors = {s.label: s for s in frozen_survivors}
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not trained(t):
            continue
        s = survivors[t.user_attrs["tcn"]]
        rows.append({"K": s.structure.kernel_size, "f": s.structure.dilation_factor, "D": s.structure.depth,
                     "B": s.structure.per_block, "R": s.receptive_field, "lr": t.params["lr"], "seed": t.params["seed"],
                     "curve": [[step, round(v, 5)] for step, v in sorted(t.intermediate_values.items())],
                     "bpc": round(t.value, 5), "train_s": round(t.duration.total_seconds(), 2),
                     "latency_ms": round(s.latency_ms, 4), "speedup": round(s.speedup_fwdbwd, 4),
                     "latency_source": s.source})
    doc = {"task": "TCNCA byte-level LM, stdlib corpus (benchmarks/data/tabular-lm.yaml, preset tiny)",
           "metric": "bpc", "mode": "min", "device": study.user_attrs["device"],
           "profile_level": study.user_attrs.get("profile_level"), "grid": grid,
           "structures": len({(r["K"], r["f"], r["D"], r["B"]) for r in rows}), "rows": rows}
    with gzip.open(path, "wt") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    return doc


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", default=f"sqlite:///{HERE / 'results' / 'tabular-lm.db'}")
    parser.add_argument("--export-only", action="store_true")
    args = parser.parse_args(argv)
    (HERE / "results").mkdir(exist_ok=True)
    if not args.export_only:
        corpus = HERE / "results" / "stdlib-2mb.txt"
        if not corpus.exists():
            stdlib_corpus(corpus, 2_000_000)
        result = run_study(str(STUDY), preset="tiny", storage=args.storage, resume=True, data_path=str(corpus))
        print(f"{result.counts}; {result.elapsed_s:.0f} s")
    doc = export(args.storage)
    print(f"{len(doc['rows'])} runs of {doc['structures']} structures -> {TABLE} ({TABLE.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
