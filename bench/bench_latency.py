"""CPU inference cost of every registered network at 256x256, batch 1, against U-net in torch fp32
measured in the same run: parameters, forward GFLOPs (torch.utils.flop_counter), and the median
latency in

- torch fp32,
- torch on the training issue's fast path (sonoseg.serving.device.FastPath's rules): bf16 autocast only where
  the CPU has fast bf16 units (AMX or AVX512-BF16; elsewhere PyTorch emulates bf16, slower), and
  channels_last where it pays (bf16, or fp32 on networks without grouped convolutions); the column
  torch_fast says which,
- ONNX Runtime (the graph `sonoseg export` writes),

each also as a ratio to U-net torch fp32. U-net is always measured (it is the baseline).
Run: python bench/bench_latency.py [--networks unet slim_unet] [--threads 2] [--repeats 5] [--size 256]
Networks are measured one after another, alone: do not run it beside training jobs.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from sonoseg.networks import models
from sonoseg.serving import cost
from sonoseg.serving.device import cpu_has_fast_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=models.names(), choices=models.names())
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    networks = ["unet"] + [n for n in args.networks if n != "unet"]
    fast_bf16 = cpu_has_fast_bf16()
    print(
        f"CPU: {cost.cpu_model()} (torch capability {torch.backends.cpu.get_cpu_capability()}, "
        f"fast bf16: {'yes' if fast_bf16 else 'no: the fast path stays fp32'}), {args.threads} threads, "
        f"{args.size}x{args.size}, batch 1, median of {args.repeats} runs after {args.warmup} warm-up",
        flush=True,
    )
    timing = {"repeats": args.repeats, "warmup": args.warmup}
    rows = []
    for name in networks:
        torch.manual_seed(0)
        model = models.build(name).eval()
        row = {
            "network": name,
            "parameters": models.count_parameters(model),
            "gflops": cost.forward_gflops(model, args.size),
            "torch_fp32_ms": cost.torch_latency_ms(model, args.size, args.threads, **timing),
        }
        bf16, channels_last = cost.torch_fast_path(model)
        row["torch_fast"] = "+".join(["bf16" if bf16 else "fp32"] + (["channels_last"] if channels_last else []))
        row["torch_fast_ms"] = cost.torch_latency_ms(model, args.size, args.threads, fast=True, **timing)
        row["onnxruntime_ms"] = cost.onnxruntime_latency_ms(model, args.size, args.threads, **timing)
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k.endswith("_ms")), flush=True)
    table = pd.DataFrame(rows)
    baseline = table.loc[table["network"] == "unet", "torch_fp32_ms"].iloc[0]
    for column in [c for c in table.columns if c.endswith("_ms")]:
        table[column.replace("_ms", "_x_unet")] = table[column] / baseline
    print(table.to_markdown(index=False, floatfmt=".2f") if _has_tabulate() else table.round(2).to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401 - pandas' Markdown output needs it
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
