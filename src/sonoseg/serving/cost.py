"""What a network costs to run: parameters, forward GFLOPs per image (counted by
torch.utils.flop_counter, not by hand) and measured CPU latency (batch 1, median of repeats, with
the fastest and slowest repeat, and the ratio to U-net's median measured in the same process).

Latency depends on the machine and on what else runs on it: every row carries the CPU model and the
thread count; the ratio to U-net is what compares across runs and machines.

Two steps, so that only the timing needs a quiet machine: ``prepare`` builds each network, counts its
parameters and GFLOPs and (for ONNX Runtime) exports its graph, which takes seconds per network but
can run beside other work; ``cost_table`` then times what was prepared.
"""

from __future__ import annotations

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

from sonoseg.data.provenance import cpu_model, write_text_atomic
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
    "repeats",  # the timed runs latency_ms is the median of: the captions say it
    "cpu",
]
REFERENCE = "unet"  # latency_vs_unet divides by its median, measured in the same process


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
    from sonoseg.serving.export import export_network

    with tempfile.TemporaryDirectory() as tmp:
        return onnx_file_runner(export_network(model, None, size, Path(tmp) / "model.onnx"), size, threads)


def onnx_file_runner(path: Path, size: int, threads: int) -> Callable[[], object]:
    """One batch-1 forward pass of an exported graph (export_network's file) in ONNX Runtime."""
    from sonoseg.serving.export import onnx_session, run_session

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


PREPARED_TABLE = "networks.csv"  # in prepare's folder: network, parameters, gflops, size, backend


def measured_networks(networks: list[str]) -> list[str]:
    """The networks a cost table times: the study's, and U-net for the ratio when the study has none."""
    return [*networks, *([] if REFERENCE in networks else [REFERENCE])]


def prepare(networks: list[str], size: int, backend: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build each network (seeded: weights do not change cost), count its parameters and forward GFLOPs
    at size x size and, for ONNX Runtime, export its graph as ``<network>.onnx``: everything cost_table
    needs but the timing. Returns out_dir."""
    if backend not in BACKENDS:
        raise SonosegError(f"cost: unknown backend {backend!r}; one of {BACKENDS}")
    from sonoseg.serving.export import export_network

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in measured_networks(networks):
        torch.manual_seed(seed)
        model = models.build(name).eval()
        rows.append(
            {
                "network": name,
                "parameters": models.count_parameters(model),
                "gflops": round(forward_gflops(model, size), 3),
                "size": size,
                "backend": backend,
            }
        )
        if backend == "onnxruntime":
            export_network(model, None, size, out_dir / f"{name}.onnx")
    write_text_atomic(out_dir / PREPARED_TABLE, pd.DataFrame(rows).to_csv(index=False))  # whole or not at all
    return out_dir


def read_prepared(prepared: str | Path, networks: list[str], size: int, backend: str) -> pd.DataFrame:
    """prepare's table, checked against what is to be timed (a clear error, not a wrong row)."""
    path = Path(prepared) / PREPARED_TABLE
    if not path.is_file():
        raise SonosegError(f"cost: {path} is missing: run `sonoseg cost-prepare` into {prepared} first")
    table = pd.read_csv(path).set_index("network")
    missing = [name for name in measured_networks(networks) if name not in table.index]
    if missing:
        raise SonosegError(f"cost: {path} has no row for {', '.join(missing)}")
    mismatched = table[(table["size"] != size) | (table["backend"] != backend)]
    if len(mismatched):
        raise SonosegError(
            f"cost: {path} was prepared at {mismatched['size'].iloc[0]} with {mismatched['backend'].iloc[0]}, "
            f"not at {size} with {backend}"
        )
    return table


def cost_table(
    networks: list[str],
    size: int,
    backend: str,
    threads: int,
    repeats: int,
    warmup: int = 1,
    seed: int = 0,
    prepared: str | Path | None = None,
) -> pd.DataFrame:
    """One row per network: parameters, GFLOPs and latency at size x size (weights do not change cost):
    the median of the repeats, the fastest and slowest repeat, and the median relative to U-net's, timed
    in this process (U-net is timed for it when the study has none). With ``prepared`` (prepare's
    folder), the counts and graphs are read from there and only the timing happens here."""
    if backend not in BACKENDS:
        raise SonosegError(f"cost: unknown backend {backend!r}; one of {BACKENDS}")
    with tempfile.TemporaryDirectory() as tmp:
        counts = read_prepared(prepared or prepare(networks, size, backend, tmp, seed), networks, size, backend)
        graphs = Path(prepared or tmp)
        measured = {}
        for name in measured_networks(networks):
            if backend == "onnxruntime":
                runner = onnx_file_runner(graphs / f"{name}.onnx", size, threads)
            else:
                torch.manual_seed(seed)
                runner = torch_runner(models.build(name).eval(), size, threads, fast=True)
            measured[name] = timings_ms(runner, repeats, warmup)
    cpu = cpu_model()
    rows = [
        {
            "network": name,
            "parameters": int(counts.loc[name, "parameters"]),
            "gflops": float(counts.loc[name, "gflops"]),
            "latency_ms": round(statistics.median(measured[name]), 2),
            "latency_min_ms": round(min(measured[name]), 2),
            "latency_max_ms": round(max(measured[name]), 2),
            "latency_vs_unet": round(statistics.median(measured[name]) / statistics.median(measured[REFERENCE]), 3),
            "backend": backend,
            "threads": threads,
            "repeats": repeats,
            "cpu": cpu,
        }
        for name in networks
    ]
    return pd.DataFrame(rows)[COLUMNS]
