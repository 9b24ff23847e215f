"""The prepared GPU check (`make gpu-check`): every CUDA path of tcnsearch, run once on a real GPU, in one table.

No GPU has been lent where tcnsearch is developed, so its CUDA paths are tested there by unit tests
of the decisions they make (tests/test_hardware.py and the like). Run this on a machine with a GPU:

    python benchmarks/gpu_check.py                 # about 5 minutes on one H100-class GPU
    python benchmarks/gpu_check.py --quick         # smaller benchmarks, about 2 minutes
    python benchmarks/gpu_check.py --rehearse      # the same checks on the CPU, small (a test runs this)

Checks, in order (each a row: pass / FAIL, seconds, the figures):
  1. device and build: the GPU, its compute capability, the PyTorch build's architectures, the
     driver; hardware.check_cuda_build refuses nothing; the precision `auto` resolves to
  2. profile --gpu auto at op and at model level on a small grid: every candidate measured on the
     GPU (backend cuda), none failed, none out of memory
  3. a 2-trial study with gpus_per_trial 0.5 on a local Ray runtime: both trials COMPLETE, each
     trained on the GPU Ray gave it (cuda:0 inside the trial)
  4. a training run resumed from a checkpoint written on the GPU: it continues at the saved step
  5. the paper's runtime benchmark (benchmarks/ops.py --device cuda, L = 8k to 131k, CUDA events)
  6. the training step, TCNCA against MEGA (benchmarks/train.py --device cuda)

It exits 0 when every check passes, 1 otherwise (and 2 on a machine without a CUDA device).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


class Target:
    """Where the checks run: the GPU (cuda:0), or the CPU for a rehearsal of the script itself."""

    def __init__(self, rehearse: bool, quick: bool):
        self.rehearse, self.quick = rehearse, quick or rehearse
        self.device = torch.device("cpu" if rehearse else "cuda", 0 if not rehearse else None)
        self.gpu = "cpu" if rehearse else "auto"
        self.backend = ("native", "fallback") if rehearse else ("cuda",)
        self.trial_device = "cpu" if rehearse else "cuda:0"


def _device_and_build(target: Target) -> dict:
    from tcnsearch import hardware

    device = target.device
    hardware.check_cuda_build(device)
    if target.rehearse:
        return {"device": hardware.cpu_name(), "torch": torch.__version__,
                "precision_auto": hardware.device_precision("auto", device)}
    capability = torch.cuda.get_device_capability(device)
    free, total = torch.cuda.mem_get_info(device)
    return {"gpu": torch.cuda.get_device_name(device), "capability": f"{capability[0]}.{capability[1]}",
            "torch": torch.__version__, "cuda": torch.version.cuda, "arch_list": " ".join(torch.cuda.get_arch_list()),
            "precision_auto": hardware.device_precision("auto", device),
            "memory_gib": f"{free / 2**30:.0f} free of {total / 2**30:.0f}"}


def _profile(target: Target, folder: Path, level: str) -> dict:
    from tcnsearch.profile import ProfileSpec, run_profile

    width, length = (16, 256) if target.rehearse else (128, 4096)
    model = {"arch": "tcnca", "d_model": width, "z_dim": width // 2, "h_dim": 2 * width, "ffn_dim": 2 * width,
             "n_layers": 2, "chunk_size": length // 8, "rel_pos": "rotary"} if level == "model" else None
    grid = ([3, 17], [3]) if target.rehearse else ([3, 5, 17], [3, 4])  # (kernel sizes, depths)
    spec = ProfileSpec(lengths=[length], kernel_sizes=grid[0], dilation_factors=[4, 8], depths=grid[1],
                       per_block=[1], channels=width, batch=4, level=level, model=model, min_receptive_field=None,
                       strategy="full", max_time=0.05 if target.rehearse else 0.5, min_pairs=3)
    result = run_profile(spec, gpu=target.gpu, storage=f"sqlite:///{folder / 'gpu.db'}", progress=False)
    assert result.device.backend in target.backend, f"measured on {result.device.device_name}, not the target"
    assert not result.failed and not result.oom, f"failed: {result.failed[:1]}, out of memory: {result.oom[:1]}"
    speedups = sorted(r[f"speedup_{spec.metric}"] for r in result.candidates if r["ok"])
    return {"measured": result.measured, "survivors": len(result.survivors), "precision": result.device.dtype,
            "speedup range": f"{speedups[0]:.2f}x to {speedups[-1]:.2f}x", "seconds": round(result.elapsed_s, 1)}


def _study(target: Target, folder: Path) -> dict:
    import yaml

    from tcnsearch.search import run_study

    doc = {"task": "assoc-recall", "objective": {"metric": "loss", "mode": "min"},
           "train": {"steps": 40 if target.rehearse else 100, "eval_every": 20 if target.rehearse else 50},
           "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}},
           "profile": {"kernel_sizes": [3, 5], "dilation_factors": [2, 4], "depths": [3, 4], "per_block": [1],
                       "min_receptive_field": 8, "min_speedup": 0.01,
                       "max_time": 0.05 if target.rehearse else 0.2},
           "budget": {"trials": 2, "max_concurrent": 2, "gpus_per_trial": 0 if target.rehearse else 0.5},
           "scheduler": {"type": "none"}}
    path = folder / "gpu-study.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_study(str(path), storage=f"sqlite:///{folder / 'gpu.db'}", gpu=target.gpu, progress=False)
    devices = [t.get("train_device") for t in result.trials if "infeasible" not in t]
    assert result.counts["COMPLETE"] == 2, result.counts
    assert devices == [target.trial_device] * 2, devices
    return {"complete": result.counts["COMPLETE"], "trial devices": ", ".join(devices),
            "seconds": round(result.elapsed_s, 1)}


def _resume(target: Target, folder: Path) -> dict:
    from tcnsearch.train import make_config, train

    cfg = make_config("assoc-recall", "tiny", {"steps": 200, "eval_every": 50, "device": target.device.type})
    ckpt = folder / "gpu.pt"
    first = train(cfg, checkpoint=ckpt, callback=lambda step, metrics, state: step < 100, progress=False)
    rest = train(cfg, checkpoint=ckpt, resume=True, progress=False)
    assert first.status == "stopped" and first.steps == 100, first
    assert rest.status == "completed" and rest.steps == 200 and [h["step"] for h in rest.history] == [50, 100, 150, 200]
    return {"resumed at": first.steps, "finished at": rest.steps, "device": rest.device, "precision": rest.precision,
            "accuracy": round(rest.metrics["accuracy"], 3)}


def _ops(target: Target) -> dict:
    import ops

    lengths = [1024, 4096] if target.rehearse else [8192, 32768] if target.quick else [8192, 16384, 32768, 65536,
                                                                                           131072]
    result = ops.run(lengths, 64, 1, 8, 17, 4, 0.05 if target.rehearse else 0.2 if target.quick else 0.5,
                     log=lambda s: None, device=target.device)
    figures = {f"L={r['length']}": f"fwd {r['speedup_fwd']:.2f}x, fwd+bwd {r['speedup_fwdbwd']:.2f}x"
               for r in result["rows"]}
    return figures | {"paper (V100)": f"fwd {ops.PAPER['fwd']}x, fwd+bwd {ops.PAPER['fwdbwd']}x"}


def _train_step(target: Target) -> dict:
    import train as train_bench

    size = (["--length", "512", "--d-model", "32", "--layers", "2", "--chunk", "128", "--batch", "2", "--repeats",
             "2"] if target.rehearse else
            ["--length", "4096" if target.quick else "8192", "--d-model", "256", "--layers", "4", "--chunk", "1024",
             "--batch", "4"])
    args = ["--device", target.device.type, "--json", *size]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        train_bench.main(args)
    doc = json.loads(buffer.getvalue())
    return {"speedup": f"fwd {doc['speedup_fwd']:.2f}x, bwd {doc['speedup_bwd']:.2f}x, step {doc['speedup_step']:.2f}x",
            "precision": doc["precision"], "paper (enwik8, V100)": "fwd 1.37x, bwd 1.24x"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller benchmarks")
    parser.add_argument("--rehearse", action="store_true", help="the same checks on the CPU, small (its own test)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    target = Target(args.rehearse, args.quick)
    if not args.rehearse and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)
        return 2
    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="tcns-gpu-") as tmp:
        folder = Path(tmp)
        checks = [("device and build", lambda: _device_and_build(target)),
                  ("profile, op level", lambda: _profile(target, folder, "op")),
                  ("profile, model level", lambda: _profile(target, folder, "model")),
                  ("study, 2 trials at 0.5 GPU", lambda: _study(target, folder)),
                  ("resume from a GPU checkpoint", lambda: _resume(target, folder)),
                  ("runtime benchmark (ops)", lambda: _ops(target)),
                  ("training step (train)", lambda: _train_step(target))]
        for name, check in checks:
            start = time.perf_counter()
            try:
                figures, status = check(), "pass"
            except Exception as err:  # noqa: BLE001 - every failure is a row of the table, and the exit code
                figures, status, ok = {"error": f"{type(err).__name__}: {err}"[:300]}, "FAIL", False
                traceback.print_exc(file=sys.stderr)
            rows.append({"check": name, "status": status, "seconds": round(time.perf_counter() - start, 1),
                         "figures": figures})
            print(f"{status:4} {name} ({rows[-1]['seconds']} s): "
                  + "; ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
    print("\n| check | result | s | figures |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['check']} | {r['status']} | {r['seconds']} | "
              + "; ".join(f"{k}: {v}" for k, v in r["figures"].items()) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
