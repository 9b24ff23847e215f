"""The TCNCA paper's runtime benchmark (supplementary H), in one process.

TCN: depth 4, kernel 17 (one kernel per channel, 68 parameters per channel), one convolution per
block, dilation factor raised until the receptive field covers the sequence. EMA: MEGA's
multi-dimensional damped EMA with N = 8, its kernel generated on every call (the paper's
runtimes include it). Batch 1, 64 channels. For each length: forward (inference, no autograd)
and forward+backward (training), the TCN's native kernel and its F.conv1d reference, the EMA
with and without kernel generation, and the TCN forward's achieved bandwidth against a copy of a
same-size tensor timed in the same run.

    python benchmarks/ops.py                     # the paper's lengths, 1k to 131k, on the CPU
    python benchmarks/ops.py --device cuda       # on the GPU, timed with CUDA events (the paper's V100 setting)
    python benchmarks/ops.py --lengths 4096 --json

On a GPU the TCN runs its PyTorch path (F.conv1d: PyTorch's own depthwise kernel; cuDNN does not
take dilated depthwise convolutions), so the "native" and "reference" columns are the same path.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils import benchmark

from tcnsearch.ops import TCN, MultiHeadEMA, dconv, receptive_field


class EventMeasurement:
    """A CUDA-event timing: the median and IQR of per-call times over blocks of calls (seconds)."""

    def __init__(self, times: list[float]):
        times = sorted(times)
        self.median = times[len(times) // 2]
        self.iqr = times[(3 * len(times)) // 4] - times[len(times) // 4]


CPU = torch.device("cpu")


def timeit(fn, min_run_time: float, device: torch.device = CPU):
    """torch.utils.benchmark on the CPU; CUDA events on a GPU (the GPU's own clock, no host sync per call)."""
    if device.type != "cuda":
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        return timer.blocked_autorange(min_run_time=min_run_time)
    with torch.cuda.device(device):
        for _ in range(3):  # warm-up: allocator, cuFFT plans, kernel selection
            fn()
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        per_call = max(start.elapsed_time(end) / 1e3, 1e-6)
        calls = max(1, min(1000, int(0.05 / per_call)))  # blocks of about 50 ms
        times, spent = [], 0.0
        while spent < min_run_time or len(times) < 5:
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            block = start.elapsed_time(end) / 1e3
            times.append(block / calls)
            spent += block
    return EventMeasurement(times)


def forward_fn(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def forward_backward_fn(module, x):
    x = x.detach().requires_grad_()
    grad = torch.randn_like(x)

    def run():
        module(x).backward(grad)
        x.grad = None
        module.zero_grad(set_to_none=True)
    return run

PAPER = {"fwd": 7.07, "fwdbwd": 2.86}  # V100, L up to 131k


def dilation_factor_for(length: int, kernel_size: int, depth: int) -> int:
    """The paper's rule: the smallest dilation factor whose receptive field reaches the length."""
    f = 2
    while receptive_field(kernel_size, f, depth) < length:
        f += 1
    return f


def compile_seconds() -> float:
    """Time one compilation of the native kernel from scratch (normally done once per machine)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        dconv.compile_to(Path(tmp) / "dconv.so")
        return time.perf_counter() - start


def run(lengths, channels, batch, ema_dim, kernel_size, depth, min_run_time, log,
        device: torch.device = CPU) -> dict:
    torch.manual_seed(0)
    rows = []
    on_gpu = device.type == "cuda"
    for length in lengths:
        f = dilation_factor_for(length, kernel_size, depth)
        tcn = TCN(channels, kernel_size, f, depth, backend="torch" if on_gpu else "native").to(device)
        ref = TCN(channels, kernel_size, f, depth, backend="torch").to(device)
        ref.load_state_dict(tcn.state_dict())
        ema = MultiHeadEMA(channels, ndim=ema_dim).to(device)  # training mode: the kernel is generated per call
        x = torch.randn(batch, length, channels, device=device)
        with torch.no_grad():
            k = ema.kernel(length)
        fns = {
            "tcn_fwd": forward_fn(tcn, x),
            "tcn_fwdbwd": forward_backward_fn(tcn, x),
            "ref_fwd": forward_fn(ref, x),
            "ref_fwdbwd": forward_backward_fn(ref, x),
            "ema_fwd": forward_fn(ema, x),
            "ema_fwdbwd": forward_backward_fn(ema, x),
            "ema_fwd_nokernel": forward_fn(lambda v, ema=ema, k=k: ema.convolve(v, k), x),
            "copy": x.clone,
        }
        t = {name: timeit(fn, min_run_time, device) for name, fn in fns.items()}
        med = {name: m.median for name, m in t.items()}
        # Every convolution reads its input once and writes its output once.
        tcn_bytes = 2 * depth * x.numel() * x.element_size()
        copy_bytes = 2 * x.numel() * x.element_size()
        row = {
            "length": length,
            "dilation_factor": f,
            "receptive_field": receptive_field(kernel_size, f, depth),
            **{f"{name}_ms": 1e3 * v for name, v in med.items()},
            "spread_tcn_fwd": t["tcn_fwd"].iqr / t["tcn_fwd"].median,
            "spread_ema_fwd": t["ema_fwd"].iqr / t["ema_fwd"].median,
            "speedup_fwd": med["ema_fwd"] / med["tcn_fwd"],
            "speedup_fwdbwd": med["ema_fwdbwd"] / med["tcn_fwdbwd"],
            "speedup_fwd_vs_ema_without_kernel_generation": med["ema_fwd_nokernel"] / med["tcn_fwd"],
            "reference_speedup_fwd": med["ema_fwd"] / med["ref_fwd"],
            "reference_speedup_fwdbwd": med["ema_fwdbwd"] / med["ref_fwdbwd"],
            "ema_kernel_generation_share": 1 - med["ema_fwd_nokernel"] / med["ema_fwd"],
            "tcn_fwd_gbps": tcn_bytes / med["tcn_fwd"] / 1e9,
            "copy_gbps": copy_bytes / med["copy"] / 1e9,
        }
        row["bandwidth_vs_copy"] = row["tcn_fwd_gbps"] / row["copy_gbps"]
        rows.append(row)
        log(f"L={length:>6}  f={f:<3} TCN fwd {row['tcn_fwd_ms']:8.2f} ms  EMA fwd {row['ema_fwd_ms']:8.2f} ms  "
            f"x{row['speedup_fwd']:5.2f} | fwd+bwd {row['tcn_fwdbwd_ms']:8.2f} vs {row['ema_fwdbwd_ms']:8.2f} ms  "
            f"x{row['speedup_fwdbwd']:5.2f}")
    return {
        "device": torch.cuda.get_device_name(device) if on_gpu else platform.processor() or platform.machine(),
        "cpu": torch.cuda.get_device_name(device) if on_gpu else dconv.cpu_model().split(":", 1)[-1].strip(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "native_kernel_compile_s": None if on_gpu else compile_seconds(),
        "shape": {"batch": batch, "channels": channels, "ema_dim": ema_dim, "kernel_size": kernel_size,
                  "depth": depth, "per_block": 1},
        "paper_v100": PAPER,
        "rows": rows,
    }


def print_table(result: dict) -> None:
    print(f"# TCN (K={result['shape']['kernel_size']}, D={result['shape']['depth']}, B=1) vs MEGA EMA "
          f"(N={result['shape']['ema_dim']}), batch {result['shape']['batch']}, "
          f"{result['shape']['channels']} channels; {result['cpu']}, {result['threads']} threads, "
          f"torch {result['torch']}")
    head = ("| L | f | TCN fwd ms | EMA fwd ms | fwd speedup | TCN fwd+bwd ms | EMA fwd+bwd ms | "
            "fwd+bwd speedup | fwd speedup vs EMA w/o kernel gen | conv1d ref speedup fwd / fwd+bwd | "
            "EMA kernel-gen share | "
            "TCN fwd GB/s (vs copy) |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in result["rows"]:
        print(f"| {r['length']} | {r['dilation_factor']} | {r['tcn_fwd_ms']:.2f} | {r['ema_fwd_ms']:.2f} | "
              f"**{r['speedup_fwd']:.2f}x** | {r['tcn_fwdbwd_ms']:.2f} | {r['ema_fwdbwd_ms']:.2f} | "
              f"**{r['speedup_fwdbwd']:.2f}x** | {r['speedup_fwd_vs_ema_without_kernel_generation']:.2f}x | "
              f"{r['reference_speedup_fwd']:.2f}x / "
              f"{r['reference_speedup_fwdbwd']:.2f}x | {100 * r['ema_kernel_generation_share']:.0f}% | "
              f"{r['tcn_fwd_gbps']:.1f} ({100 * r['bandwidth_vs_copy']:.0f}%) |")
    compiled = result["native_kernel_compile_s"]
    print((f"native kernel compilation: {compiled:.2f} s, once per machine (cached); " if compiled is not None
           else "on the GPU: the TCN's PyTorch path, timed with CUDA events; ")
          + f"paper (V100): fwd {PAPER['fwd']}x, fwd+bwd {PAPER['fwdbwd']}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1024,4096,16384,65536,131072")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--ema-dim", type=int, default=8)
    parser.add_argument("--kernel-size", type=int, default=17)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA device")
    try:
        lengths = [int(v) for v in args.lengths.split(",")]
        if any(v < 2 for v in lengths):
            raise ValueError
    except ValueError:
        parser.error(f"--lengths takes comma-separated integers >= 2, got {args.lengths!r}")
    if device.type == "cpu" and not dconv.available():
        print("warning: the native kernel is unavailable; the 'TCN' columns use the reference path",
              file=sys.stderr)
    result = run(lengths, args.channels, args.batch, args.ema_dim, args.kernel_size, args.depth,
                 args.min_run_time, log=lambda s: print(s, file=sys.stderr, flush=True), device=device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
