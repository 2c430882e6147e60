"""Training speed: the fast path against plain fp32, and end-to-end train() against its bare step.

For each network and input size it prints, measured in this one run:
- bare training step (forward, soft-Dice loss, backward, Adam step) in images/s: fp32 NCHW (the
  old path), fp32 channels_last, bf16 autocast (NCHW and channels_last, only where the CPU has
  fast bf16 units, or with --bf16 to force the emulated path), and the fast path that
  `train.precision: auto` picks here, with its ratio to fp32;
- end-to-end `train()` images/s at the small size for a few epochs (resident data, augmentation
  on the device, validation, checkpoint and history writing included) and its ratio to the bare
  fast step, measured once before and once right after train() (their mean: the machine's load
  can drift during a long train() call);
- the CPU model, the flags that decide `auto`, and what `auto` chose.

Run: python bench/bench_train.py [--threads 2] [--networks unet,fcn8s] [--sizes 64,256] [--bf16]
     [--epoch-images 96 --val-images 32 --epochs 2]
Adam's default loop against its fused kernel (training's), fp32 at the quick study's size:
     python bench/bench_train.py --threads 1 --networks unet,light_unet,lighter_unet_c128,lighter_unet_c1 --adam 32
Paper-sized epochs (the paper's 416 training and 140 validation images, end-to-end at 64 only):
     python bench/bench_train.py --sizes 64 --epoch-images 416 --val-images 140 --epochs 1
Targets (issue 8): U-net at 256 fast path >= 2.5x its fp32 step (only reachable on a CPU with
bf16 units: AMX / AVX512-BF16); end-to-end >= 90 % of the bare fast step for every network.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sonoseg.data.provenance import cpu_model
from sonoseg.networks import models
from sonoseg.serving.device import FastPath, cpu_has_fast_bf16, resolve_precision
from sonoseg.training import train
from sonoseg.training.recipe import Recipe

NETWORKS = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1", "fcn8s", "deeplabv3plus_mobilenetv2"]
BATCH = {64: 8, 256: 2}  # fewer, smaller steps at 256 keep the whole run within minutes on 2 cores
STEPS = {64: 3, 256: 2}


def step_rate(
    network: str,
    size: int,
    precision: str,
    channels_last: bool,
    batch: int | None = None,
    steps: int | None = None,
    device: str = "cpu",
    fused: bool = True,
) -> float:
    """Images per second of the bare training step (after one warm-up step); ``fused``: Adam's fused
    kernel, as training uses it (False: PyTorch's default loop)."""
    torch.manual_seed(0)
    model = models.build(network).train().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused or None)
    batch = batch or BATCH.get(size, 2)
    x = torch.rand(batch, 3, size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        loss = train.soft_dice_loss(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    steps = steps or STEPS.get(size, 2)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return batch * steps / (time.perf_counter() - started)


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def synthetic_split(workdir: Path, size: int, counts=(("train", 96), ("val", 32))) -> list[Path]:
    """Random uint8 caches in the preprocess layout (the study's 3:1 train/validation ratio by default)."""
    rng = np.random.default_rng(0)
    paths = []
    for part, count in counts:
        path = workdir / f"{part}{size}.npz"
        with open(path, "wb") as handle:
            np.savez(
                handle,
                images=rng.integers(0, 255, (count, size, size, 3), dtype=np.uint8),
                masks=(rng.random((count, size, size)) > 0.7).astype(np.uint8),
                sample_ids=np.array([f"{part}{i}" for i in range(count)]),
            )
        paths.append(path)
    return paths


def end_to_end_rate(
    network: str, size: int, workdir: Path, epochs: int = 2, epoch_images: int = 96, val_images: int = 32
) -> float:
    """Training images per second of train() over a few epochs, everything included."""
    paths = synthetic_split(workdir, size, (("train", epoch_images), ("val", val_images)))
    recipe = Recipe(min_epochs=epochs, max_epochs=epochs, batch_size=BATCH.get(size, 8))
    started = time.perf_counter()
    train.train(
        network=network,
        seed=0,
        train_data=paths[0],
        val_data=paths[1],
        recipe=recipe,
        model_out=workdir / "model.pt",
        history_out=workdir / "history.csv",
        checkpoint=workdir / "checkpoint.pt",
        device="cpu",
        threads=torch.get_num_threads(),
    )
    return epoch_images * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--bf16", action="store_true", help="also measure bf16 where the CPU only emulates it")
    parser.add_argument("--epoch-images", type=int, default=96, help="training images per end-to-end epoch")
    parser.add_argument("--val-images", type=int, default=32, help="validation images per end-to-end epoch")
    parser.add_argument("--epochs", type=int, default=2, help="end-to-end epochs")
    parser.add_argument(
        "--adam", type=int, metavar="SIZE", help="only compare Adam's default loop with its fused kernel at SIZE"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    fast_bf16 = cpu_has_fast_bf16()
    auto = resolve_precision("auto", cpu)
    print(
        f"CPU: {cpu_model()}, {args.threads} threads, torch {torch.__version__}, "
        f"ATen capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"bf16 units (amx_bf16 / avx512_bf16 flags): {'yes' if fast_bf16 else 'no'} -> train.precision auto = {auto}")
    if args.adam:
        return adam_kernels(args.networks.split(","), args.adam)
    measure_bf16 = fast_bf16 or args.bf16
    sizes = [int(s) for s in args.sizes.split(",")]
    header = ("network", "size", "fp32", "fp32+CL", "bf16", "bf16+CL", "fast path", "fast", "x fp32", "e2e", "e2e/fast")
    print(
        f"\nimages/s of a training step (batch 8 at 64, 2 at 256); e2e = train() over {args.epochs} epoch(s) of "
        f"{args.epoch_images} images at {min(sizes)} with validation of {args.val_images} images, checkpoint and "
        "history; e2e/fast = e2e / mean of the fast step measured before and right after train()"
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    with tempfile.TemporaryDirectory() as tmp:
        for network in args.networks.split(","):
            model = models.build(network)
            path = FastPath(model, cpu, "auto")
            for size in sizes:
                rates = {(p, cl): None for p in ("fp32", "bf16") for cl in (False, True)}
                for precision, channels_last in rates:
                    if precision == "bf16" and not measure_bf16:
                        continue
                    rates[precision, channels_last] = step_rate(network, size, precision, channels_last)
                fast = rates[path.precision, path.channels_last]
                e2e = fast_after = None
                if size == min(sizes):
                    e2e = end_to_end_rate(network, size, Path(tmp), args.epochs, args.epoch_images, args.val_images)
                    fast_after = step_rate(network, size, path.precision, path.channels_last)
                cells = [network, str(size)] + [f"{r:.2f}" if r else "-" for r in rates.values()]
                cells += [
                    path.describe(),
                    f"{fast:.2f}",
                    f"{fast / rates['fp32', False]:.2f}",
                    f"{e2e:.2f}" if e2e else "-",
                    f"{2 * e2e / (fast + fast_after):.2f}" if e2e else "-",
                ]
                print(" | ".join(cells), flush=True)


def adam_kernels(networks: list[str], size: int, rounds: int = 3) -> None:
    """The fp32 training step (batch 8) with Adam's default loop and with its fused kernel, in turn,
    ``rounds`` times each (the median), and their ratio: what training's fused=True saves."""
    print(f"\nfp32 training step at {size}x{size}, batch 8, images/s (median of {rounds} interleaved rounds)")
    print("network | Adam loop | Adam fused | fused / loop")
    print("--- | --- | --- | ---")
    for network in networks:
        loop, fused = [], []
        for _ in range(rounds):
            loop.append(step_rate(network, size, "fp32", False, 8, 8, fused=False))
            fused.append(step_rate(network, size, "fp32", False, 8, 8, fused=True))
        loop_rate, fused_rate = float(np.median(loop)), float(np.median(fused))
        print(f"{network} | {loop_rate:.1f} | {fused_rate:.1f} | {fused_rate / loop_rate:.2f}", flush=True)


if __name__ == "__main__":
    main()
