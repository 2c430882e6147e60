"""What a network costs to run: parameters, forward GFLOPs per image (counted by
torch.utils.flop_counter, not by hand) and measured CPU latency (batch 1, median of repeats, with
the fastest and slowest repeat, and the ratio to U-net's median measured in the same process).

Latency depends on the machine and on what else runs on it: every row carries the CPU model and the
thread count; the ratio to U-net is what compares across runs and machines.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sonoseg.errors import SonosegError
from sonoseg.networks import models
from sonoseg.serving.options import BACKENDS

COLUMNS = [
    "network",
    "parameters",
    "gflops",
    "latency_ms",
    "latency_min_ms",
    "latency_max_ms",
    "latency_vs_unet",
    "backend",
    "threads",
    "cpu",
]
REFERENCE = "unet"  # latency_vs_unet divides by its median, measured in the same process


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def forward_gflops(model: nn.Module, size: int) -> float:
    """FLOPs (multiply and add counted separately) of one forward pass of one size x size image, in 1e9."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def timings_ms(run: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Wall time of each of ``repeats`` calls of ``run``, in milliseconds, after ``warmup`` untimed calls."""
    if repeats < 1:
        raise SonosegError(f"cost: repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return times


def median_ms(run: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time of ``run`` in milliseconds after ``warmup`` untimed calls."""
    return statistics.median(timings_ms(run, repeats, warmup))


def torch_fast_path(model: nn.Module) -> tuple[bool, bool]:
    """(bf16, channels_last) of the training fast path on this CPU (sonoseg.serving.device.FastPath's rules):
    bf16 only with fast bf16 units, channels_last where it was measured to pay."""
    from sonoseg.serving.device import resolve_precision, use_channels_last

    precision = resolve_precision("auto", torch.device("cpu"))
    return precision == "bf16", use_channels_last(model, torch.device("cpu"), precision)


def torch_runner(model: nn.Module, size: int, threads: int, fast: bool = False) -> Callable[[], object]:
    """One batch-1 forward pass in torch: plain fp32 NCHW, or (``fast``) the CPU fast path of torch_fast_path."""
    torch.set_num_threads(threads)
    model = model.eval()
    x = torch.rand(1, 3, size, size)
    bf16, channels_last = torch_fast_path(model) if fast else (False, False)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = x.contiguous(memory_format=memory_format)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return run


def onnxruntime_runner(model: nn.Module, size: int, threads: int) -> Callable[[], object]:
    """One batch-1 forward pass of the model exported as sonoseg export does it, in ONNX Runtime."""
    from sonoseg.serving.export import export_network, onnx_session, run_session

    with tempfile.TemporaryDirectory() as tmp:
        path = export_network(model, None, size, Path(tmp) / "model.onnx")
        session = onnx_session(path, threads)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    return lambda: run_session(session, x)


def torch_latency_ms(
    model: nn.Module, size: int, threads: int, repeats: int, warmup: int = 1, fast: bool = False
) -> float:
    """Median batch-1 latency in torch (torch_runner)."""
    return median_ms(torch_runner(model, size, threads, fast), repeats, warmup)


def onnxruntime_latency_ms(model: nn.Module, size: int, threads: int, repeats: int, warmup: int = 1) -> float:
    """Median batch-1 latency in ONNX Runtime (onnxruntime_runner)."""
    return median_ms(onnxruntime_runner(model, size, threads), repeats, warmup)


def latency_timings_ms(
    model: nn.Module, backend: str, size: int, threads: int, repeats: int, warmup: int = 1
) -> list[float]:
    """Every repeat's batch-1 latency on ``backend``: torch's fastest path on this CPU (what one would
    deploy in torch), or ONNX Runtime."""
    if backend == "torch":
        return timings_ms(torch_runner(model, size, threads, fast=True), repeats, warmup)
    if backend == "onnxruntime":
        return timings_ms(onnxruntime_runner(model, size, threads), repeats, warmup)
    raise SonosegError(f"cost: unknown backend {backend!r}; one of {BACKENDS}")


def latency_ms(model: nn.Module, backend: str, size: int, threads: int, repeats: int, warmup: int = 1) -> float:
    return statistics.median(latency_timings_ms(model, backend, size, threads, repeats, warmup))


def cost_table(
    networks: list[str], size: int, backend: str, threads: int, repeats: int, warmup: int = 1, seed: int = 0
) -> pd.DataFrame:
    """One row per network: parameters, GFLOPs and latency at size x size (weights do not change cost):
    the median of the repeats, the fastest and slowest repeat, and the median relative to U-net's, timed
    in this process (U-net is timed for it when the study has none)."""
    if backend not in BACKENDS:
        raise SonosegError(f"cost: unknown backend {backend!r}; one of {BACKENDS}")
    rows = []
    cpu = cpu_model()
    measured = {}
    for name in [*networks, *([] if REFERENCE in networks else [REFERENCE])]:
        torch.manual_seed(seed)
        model = models.build(name).eval()
        measured[name] = latency_timings_ms(model, backend, size, threads, repeats, warmup)
        if name not in networks:
            continue
        times = measured[name]
        rows.append(
            {
                "network": name,
                "parameters": models.count_parameters(model),
                "gflops": round(forward_gflops(model, size), 3),
                "latency_ms": round(statistics.median(times), 2),
                "latency_min_ms": round(min(times), 2),
                "latency_max_ms": round(max(times), 2),
                "backend": backend,
                "threads": threads,
                "cpu": cpu,
            }
        )
    reference = statistics.median(measured[REFERENCE])
    table = pd.DataFrame(rows)
    table["latency_vs_unet"] = [round(statistics.median(measured[n]) / reference, 3) for n in table["network"]]
    return table[COLUMNS]
