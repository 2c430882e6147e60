"""Where a training step's GPU time goes: torch.profiler over a few steps of each named network at
256x256, bf16 + channels_last, under the kernels train() asks for (serving.device.make_deterministic).
The step is training's (Adam's fused kernel, the weight average's update).
Prints each network's top operators by CUDA time, and the step's wall time against its summed CUDA
time (a step far longer than its GPU work is bound by kernel launches on the CPU, not by the GPU).

    PYTHONPATH=src:bench python3 bench/gpu_profile.py unet lighter_unet_c1 --batch 8
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from sonoseg.networks import models
from sonoseg.serving.device import make_deterministic
from sonoseg.training import train
from sonoseg.training.weight_average import WeightAverage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("networks", nargs="+")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    make_deterministic(device)
    for network in args.networks:
        torch.manual_seed(0)
        model = models.build(network).train().to(device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as training's
        average = WeightAverage(model, 3, 52)  # as training's: the paper's 416 images in batches of 8
        x = torch.rand(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
        y = (torch.rand(args.batch, 1, args.size, args.size, device=device) > 0.5).float()

        step = functools.partial(training_step, model, optimizer, average, x, y, device)

        for _ in range(3):
            step()
        sync(device)
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync(device)
        wall = (time.perf_counter() - started) / args.steps  # unprofiled: the profiler adds CPU time
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
            sync(device)
        events = prof.key_averages()
        sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        # kernels only (operators' self device time repeats their kernels')
        gpu = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / args.steps / 1e6
        print(
            f"\n{network}, batch {args.batch}, {args.size}x{args.size}: step wall {wall * 1e3:.1f} ms, "
            f"GPU kernels {gpu * 1e3:.1f} ms of it"
        )
        print(events.table(sort_by=sort, row_limit=12, max_name_column_width=60))


def training_step(model, optimizer, average, x, y, device: torch.device) -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16):
        logits = model(x)
    loss = train.soft_dice_loss(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    average.update(model)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
