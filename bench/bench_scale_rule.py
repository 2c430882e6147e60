"""What test-time scale selection costs at inference (docs/method.md, "Scale chosen per image"): the
median time to predict a batch of images with one network, in torch fp32 on the CPU, under each rule,
as a ratio to the input size alone measured in the same run:

- input size: one pass per image (predict.scales [1.0]);
- size-aware rule, no image over its limit: the input size's pass only (the rule's best case; a
  study's own test images are mostly here);
- size-aware rule, every image over its limit: every image at every size (its worst case);
- with the second trigger (predict.shrink_found_above): every image at every size, whatever its lesion.

The quick study's scales (1, 0.875, 0.75, 0.625): the smaller sizes add 0.77 + 0.56 + 0.39 of the input
size's pixels, so a network whose cost follows its pixels pays about 2.7 x; one whose cost is mostly
fixed per call pays up to 4 x. The network is untrained (the cost does not depend on its weights);
the limits are set so that no image, or every image, is over them.
Run: python bench/bench_scale_rule.py [--networks light_unet lighter_unet_c1] [--sizes 32 128]
Do not run it beside training jobs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sonoseg.networks import models
from sonoseg.serving import cost, infer

SCALES = (1.0, 0.875, 0.75, 0.625)


def median_seconds(run, images: np.ndarray, repeats: int, warmup: int) -> float:
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        for _ in infer.in_batches(run, images):
            pass
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=["light_unet", "lighter_unet_c1"], choices=models.names())
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cost.cpu_model()}, torch {torch.__version__}, {args.threads} thread(s), fp32, batch 8")
    print("network             size  input size (s)  size-aware, none over  size-aware, all over  second trigger")
    for name in args.networks:
        torch.manual_seed(0)
        network = models.build(name).eval()

        def run(batch: np.ndarray, network=network) -> np.ndarray:
            with torch.no_grad():
                return torch.sigmoid(network(torch.from_numpy(batch))).numpy()[:, 0]

        for size in args.sizes:
            images = np.random.default_rng(0).random((args.images, 3, size, size), dtype=np.float32)
            label = f"{name}@{size}"
            rules = {
                "size-aware, none over": infer.scale_adaptive(run, SCALES, label, area_limit=float(size * size)),
                "size-aware, all over": infer.scale_adaptive(run, SCALES, label, area_limit=-1.0),
                "second trigger": infer.scale_adaptive(
                    run, SCALES, label, area_limit=float(size * size), found_above=1.3
                ),
            }
            base = median_seconds(run, images, args.repeats, args.warmup)
            ratios = [median_seconds(r, images, args.repeats, args.warmup) / base for r in rules.values()]
            print(f"{name:18s} {size:5d}  {base:14.3f}  " + "  ".join(f"{r:20.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
