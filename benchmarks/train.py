"""Training-step throughput of TCNCA against the MEGA baseline at equal size, in one process.

Both models share every setting but the sequence mixer (TCN vs EMA), as `MegaLayer` builds them.
Each step: the forward pass with autograd (what a training step pays), then the backward pass,
timed separately (median of repeats). The paper measured 1.37x / 1.24x forward / backward on
enwik8 (V100). On a GPU the step runs in the precision training uses there (hardware.
resolve_precision: bf16 where the GPU has it, fp16 on a V100), timed with CUDA events.

Why a clock per phase and not torch.utils.benchmark here: the backward pass needs a fresh graph
each time, so the forward has to run untimed between timed backwards, which the Timer's
statement/setup split cannot express per iteration.

    python benchmarks/train.py
    python benchmarks/train.py --device cuda --length 8192 --d-model 512
    python benchmarks/train.py --length 8192 --d-model 256 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from tcnsearch import hardware
from tcnsearch.models import ModelConfig, build_model


class _Clock:
    """perf_counter on the CPU; CUDA events on a GPU (read once the step is done)."""

    def __init__(self, device: torch.device):
        self.device = device

    def mark(self):
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, a, b) -> float:
        if self.device.type != "cuda":
            return b - a
        b.synchronize()
        return a.elapsed_time(b) / 1e3


def step_times(model, tokens, repeats: int, precision: str = "fp32") -> tuple[float, float]:
    """Median forward and backward seconds of a language-model training step."""
    device = tokens.device
    clock, scaler = _Clock(device), hardware.grad_scaler(device, precision)
    targets = tokens.roll(-1, dims=1)
    fwd, bwd = [], []
    for i in range(repeats + 2):  # two warm-up steps
        t0 = clock.mark()
        with hardware.autocast(device, precision):
            loss = F.cross_entropy(model(tokens).float().flatten(0, 1), targets.flatten())
        t1 = clock.mark()
        scaler.scale(loss).backward()
        t2 = clock.mark()
        model.zero_grad(set_to_none=True)
        if i >= 2:
            fwd.append(clock.seconds(t0, t1))
            bwd.append(clock.seconds(t1, t2))
    return statistics.median(fwd), statistics.median(bwd)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--ema-dim", type=int, default=16)
    parser.add_argument("--kernel-size", type=int, default=5)
    parser.add_argument("--dilation-factor", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=hardware.PRECISIONS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA device")
    precision = hardware.device_precision(args.precision, device)

    d = args.d_model
    base = dict(d_model=d, z_dim=d // 2, h_dim=2 * d, ffn_dim=2 * d, n_layers=args.layers, chunk_size=args.chunk,
                rel_pos="rotary", ema_dim=args.ema_dim, dropout=0.1,  # MEGA enwik8: dropout 0.1 (SPEC §4)
                tcn=dict(kernel_size=args.kernel_size, dilation_factor=args.dilation_factor, depth=args.depth))
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (args.batch, args.length), device=device)
    rows = {}
    for arch in ("tcnca", "mega"):
        model = build_model(ModelConfig(arch=arch, **base)).to(device).train()
        f, b = step_times(model, tokens, args.repeats, precision)
        rows[arch] = {"fwd_ms": 1e3 * f, "bwd_ms": 1e3 * b, "parameters": model.num_parameters(),
                      "tokens_per_s": args.batch * args.length / (f + b)}
        print(f"{arch}: fwd {1e3 * f:.1f} ms, bwd {1e3 * b:.1f} ms", file=sys.stderr, flush=True)
    result = {
        "shape": vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__, "precision": precision,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", **rows,
        "speedup_fwd": rows["mega"]["fwd_ms"] / rows["tcnca"]["fwd_ms"],
        "speedup_bwd": rows["mega"]["bwd_ms"] / rows["tcnca"]["bwd_ms"],
        "speedup_step": rows["tcnca"]["tokens_per_s"] / rows["mega"]["tokens_per_s"],
        "paper_enwik8_v100": {"fwd": 1.37, "bwd": 1.24},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"# TCNCA vs MEGA training step: batch {args.batch} x {args.length} bytes, d_model {d}, "
          f"{args.layers} layers, chunk {args.chunk}, TCN K={args.kernel_size} f={args.dilation_factor} "
          f"D={args.depth}, EMA N={args.ema_dim}; {result['device']}, {precision}, {torch.get_num_threads()} threads")
    print("| model | parameters | forward ms | backward ms | tokens/s |")
    print("|---|---|---|---|---|")
    for arch, r in rows.items():
        print(f"| {arch} | {r['parameters']:,} | {r['fwd_ms']:.1f} | {r['bwd_ms']:.1f} | {r['tokens_per_s']:,.0f} |")
    print(f"TCNCA speedup: forward {result['speedup_fwd']:.2f}x, backward {result['speedup_bwd']:.2f}x, "
          f"step {result['speedup_step']:.2f}x (paper, enwik8 on a V100: 1.37x / 1.24x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
