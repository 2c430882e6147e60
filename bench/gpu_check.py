"""The GPU check of issue 8, for a machine with one NVIDIA GPU and only python3 + PyTorch, torchvision,
numpy, pandas, OpenCV and PyYAML (no snakemake, no medpy, no pip): run through bench/gpu_check.sh.

Prints: U-net and Lighter U-net @128 training images/s at 256x256 in fp32 and bf16 (NCHW and
channels_last); end-to-end train() images/s on synthetic data for a few epochs with the fast path
that `train.precision: auto` picks; peak GPU memory; and the throughput of 1 vs 4 concurrent
Lighter U-net @1 trainings on the one GPU (4 processes, as train.runs_per_gpu: 4 would run them).
Goals (issue 8, H100 class): U-net >= 1,500 img/s at 256 in bf16; 4 concurrent @1 runs >= 2x one.
`--device cpu --smoke` runs the same code at toy scale on a CPU (checks the script, not the GPU).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import step_rate, synthetic_split  # noqa: E402

from sonoseg.networks import models  # noqa: E402
from sonoseg.serving.device import FastPath, make_deterministic, resolve_precision  # noqa: E402
from sonoseg.training import train
from sonoseg.training.recipe import Recipe  # noqa: E402

CONCURRENT_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[5])
from sonoseg.training import train
from sonoseg.training.recipe import Recipe
epochs = int(sys.argv[4])
started = time.perf_counter()
train.train(network="lighter_unet_c1", seed=0, train_data=sys.argv[1], val_data=sys.argv[2],
            recipe=Recipe(min_epochs=epochs, max_epochs=epochs), model_out=sys.argv[3] + "/m.pt",
            history_out=sys.argv[3] + "/h.csv", device=sys.argv[6])
print(time.perf_counter() - started)
"""


def concurrent_throughput(runs: int, paths: list[Path], images: int, epochs: int, workdir: Path, device: str) -> float:
    """Training images/s of `runs` Lighter U-net @1 trainings started together on the one device."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    started = time.perf_counter()
    children = []
    for i in range(runs):
        out = workdir / f"run{runs}_{i}"
        out.mkdir(parents=True, exist_ok=True)
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CONCURRENT_CHILD,
                    str(paths[0]),
                    str(paths[1]),
                    str(out),
                    str(epochs),
                    src,
                    device,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for child in children:
        child.communicate()
        if child.returncode:
            raise SystemExit(f"a concurrent training failed (exit {child.returncode})")
    return runs * images * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, to check the script on a CPU")
    parser.add_argument(
        "--parts",
        default="step,train,concurrent",
        help="comma-separated parts to run: step (one training step's rate), train (end-to-end train() "
        "with each epoch's time split), concurrent (1 vs 4 trainings at once), deterministic (the step's "
        "rate under the kernels training asks for, and two trainings' weights compared)",
    )
    parser.add_argument("--epochs", type=int, help="epochs of the end-to-end trainings (default 3)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    device = torch.device(args.device)
    size, batch, steps, epochs = (32, 2, 1, 1) if args.smoke else (256, 32, 10, 3)
    epochs = args.epochs or epochs
    if device.type == "cuda":
        print(
            f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"bf16 supported: {torch.cuda.is_bf16_supported()}"
        )
        torch.backends.cudnn.benchmark = True  # speed measurements; training itself asks for determinism
    print(f"train.precision auto on {device}: {resolve_precision('auto', device)}")
    if "step" in parts:
        step_table(device, size, batch, steps)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "train" in parts:
            end_to_end(device, size, epochs, args.smoke, workdir)
        if "concurrent" in parts:
            images = 416 if not args.smoke else 8
            paths = synthetic_split(workdir, size, (("train", images), ("val", images // 3)))
            one = concurrent_throughput(1, paths, images, epochs, workdir, str(device))
            four = concurrent_throughput(4, paths, images, epochs, workdir, str(device))
            print(
                f"\nLighter U-net @1, {size}x{size}: 1 run {one:.0f} img/s, 4 concurrent runs {four:.0f} img/s "
                f"in all ({four / one:.2f}x)"
            )
        if "deterministic" in parts:  # last: it switches cudnn.benchmark off for the rest of the process
            deterministic(device, size, epochs, args.smoke, workdir)


def step_table(device: torch.device, size: int, batch: int, steps: int) -> None:
    """One optimizer step's images/s for U-net and Lighter U-net @128 in each precision and layout."""
    print(f"\ntraining step, images/s at {size}x{size}, batch {batch}")
    print("network | fp32 | fp32+CL | bf16 | bf16+CL | peak GPU memory (GiB)")
    for network in ("unet", "lighter_unet_c128"):
        cells = [network]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for precision in ("fp32", "bf16"):
            for channels_last in (False, True):
                cells.append(f"{step_rate(network, size, precision, channels_last, batch, steps, str(device)):.0f}")
        cells.append(f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device.type == "cuda" else "-")
        print(" | ".join(cells), flush=True)


def end_to_end(device: torch.device, size: int, epochs: int, smoke: bool, workdir: Path) -> None:
    """train() as the workflow runs it, on synthetic data, with each epoch's time split as its history
    records it: the optimizer's pass, BatchNorm re-estimation, validation (the rest is the epoch's
    bookkeeping); the first epoch also pays for the kernels' first launch."""
    print(f"\nend-to-end train() on {device}, {epochs} epochs, fast path as `auto` picks it")
    for network in ("unet", "lighter_unet_c128"):
        model = models.build(network)
        path = FastPath(model, device, "auto")
        images = 416 if not smoke else 16  # the paper's training split: 208 patients x 2 views
        paths = synthetic_split(workdir, size, (("train", images), ("val", images // 3)))
        started = time.perf_counter()
        train.train(
            network=network,
            seed=0,
            train_data=paths[0],
            val_data=paths[1],
            recipe=Recipe(min_epochs=epochs, max_epochs=epochs),
            model_out=workdir / "m.pt",
            history_out=workdir / "h.csv",
            device=str(device),
        )
        total = time.perf_counter() - started
        history = pd.read_csv(workdir / "h.csv")
        print(f"{network} ({path.describe()}): {images * epochs / total:.0f} img/s in {total:.1f} s")
        print("  epoch | seconds | train | BN re-estimation | validation | training img/s")
        for _, row in history.iterrows():
            print(
                f"  {int(row['epoch'])} | {row['seconds']:.2f} | {row['train_seconds']:.2f} | "
                f"{row['bn_seconds']:.2f} | {row['val_seconds']:.2f} | {images / row['train_seconds']:.0f}",
                flush=True,
            )
        print(f"  outside the epochs (data loading, model set-up, saving): {total - history['seconds'].sum():.1f} s")


def deterministic(device: torch.device, size: int, epochs: int, smoke: bool, workdir: Path) -> None:
    """The training step's rate with the kernels train() asks for (serving.device.make_deterministic),
    at the recipe's batch (8) and at 32, then two identical trainings' weights hashed: the price of a
    bit-identical rerun, and whether it holds."""
    make_deterministic(device)
    print(f"\ntraining step under make_deterministic, images/s at {size}x{size}, bf16 + channels_last")
    for batch in (2,) if smoke else (8, 32):
        for network in ("unet", "lighter_unet_c128"):
            rate = step_rate(network, size, "bf16", True, batch, 1 if smoke else 20, str(device))
            print(f"batch {batch} | {network} | {rate:.0f}", flush=True)
    images = 16 if smoke else 96
    paths = synthetic_split(workdir, size, (("train", images), ("val", images // 3)))
    digests = []
    for attempt in range(2):
        started = time.perf_counter()
        train.train(
            network="unet",
            seed=0,
            train_data=paths[0],
            val_data=paths[1],
            recipe=Recipe(min_epochs=epochs, max_epochs=epochs),
            model_out=workdir / f"det{attempt}.pt",
            history_out=workdir / f"det{attempt}.csv",
            device=str(device),
        )
        digests.append(weights_digest(workdir / f"det{attempt}.pt"))
        seconds = time.perf_counter() - started
        print(f"U-net training {attempt} ({epochs} epochs, {images} images): {seconds:.1f} s, {digests[-1][:16]}")
    print(f"bit-identical: {digests[0] == digests[1]}")


def weights_digest(model_file: Path) -> str:
    """SHA-256 over every tensor of a model file's state dict, in key order."""
    import hashlib

    state = torch.load(model_file, map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if torch.is_tensor(value):
            digest.update(key.encode())
            digest.update(value.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


if __name__ == "__main__":
    main()
