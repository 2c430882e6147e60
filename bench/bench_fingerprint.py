"""Benchmark: checking an unchanged dataset's fingerprint once its hash cache exists (issue 26:
under one second for 2,000 images), against the first check, which reads every file, measured in
the same run on the same files.

The dataset: N image/mask pairs of random bytes at the size of a BUSI PNG (about 200 kB an image,
5 kB a mask) and a patients.csv, in a temporary folder. Each figure is the minimum, median and maximum
of a few repeats; the first check is timed on a fresh cache each time (the operating system's file
cache is warm, so it measures hashing, not the disk).
Run: python bench/bench_fingerprint.py [--images 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from sonoseg.data import provenance

BUDGET_S = 1.0  # issue 26: an unchanged dataset of 2,000 images, cache present


def make_dataset(root: Path, images: int) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(images):
        (root / "images" / f"case{i:05d}.png").write_bytes(os.urandom(200_000))
        (root / "masks" / f"case{i:05d}.png").write_bytes(os.urandom(5_000))
    (root / "patients.csv").write_text("image,patient\n" + "".join(f"case{i:05d}.png,p{i}\n" for i in range(images)))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f} s, median {statistics.median(values):.3f} s, max {max(values):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "dataset", Path(tmp) / "results"
        make_dataset(root, args.images)
        config = {"dataset": {"layout": "folder", "root": str(root)}, "split": {}, "train": {}}
        files = 2 * args.images + 1
        first, cached = [], []
        for _ in range(args.repeats):
            first.append(timed(lambda: provenance.check_study(config, out, rehash=True)))
            check = None

            def again():
                nonlocal check
                check = provenance.check_study(config, out)

            cached.append(timed(again))
            assert check.hashed == 0 and not check.messages, "an unchanged dataset was read again"
        ratio = statistics.median(cached) / statistics.median(first)
        print(f"dataset: {args.images} images + masks + patients.csv ({files} files, 205 kB a pair)")
        print(f"first check (every file hashed): {spread(first)}")
        print(f"unchanged, cache present:        {spread(cached)}")
        print(f"ratio cached / first (medians): {ratio:.3f}")
        print(
            f"cached check vs the {BUDGET_S:.0f} s budget: {statistics.median(cached) / BUDGET_S:.2f} of it "
            f"({'within' if max(cached) < BUDGET_S else 'OVER'} budget at its maximum)"
        )


if __name__ == "__main__":
    main()
