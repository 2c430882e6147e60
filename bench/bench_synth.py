"""Benchmarks, each printed as a ratio against a budget or a baseline measured in the same run.

1. Phantom speed: ms per image at the paper's sizes, and the projected time for the paper's set
   (348 patients x 2 views, PNG writing included) against issue 10's budget of one minute.
   `--full` writes the whole 348-patient set and times it for real.
2. Batch loading: slicing the preprocessed cache versus decoding and resizing PNGs per step
   (what training would do without the cache).
Run: python bench/bench_synth.py [--full]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg.data import preprocess, synth
from sonoseg.data.imageio import read_image, read_mask


def per_call(fn, repeats: int) -> float:
    start = time.perf_counter()
    for i in range(repeats):
        fn(i)
    return (time.perf_counter() - start) / repeats


PAPER_IMAGES = 348 * 2
BUDGET_S = 60.0  # issue 10: the 348-patient set in under a minute


def main() -> None:
    cpu = time.process_time()
    render = per_call(lambda i: synth.render(0, i, 1 + i % 2), 40)
    cpu = (time.process_time() - cpu) / 40
    print(f"phantom: {render * 1000:.1f} ms/image wall, {cpu * 1000:.1f} ms/image CPU (render only)")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        synth.write_dataset(Path(tmp) / "w", patients=20, seed=0)
        written = (time.perf_counter() - start) / 40
    projected = written * PAPER_IMAGES
    print(
        f"phantom with PNG writing: {written * 1000:.1f} ms/image -> 348 patients x 2 views in ~{projected:.0f} s; "
        f"budget {BUDGET_S:.0f} s -> ratio {projected / BUDGET_S:.2f} (<= 1 meets it)"
    )
    if "--full" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu = time.perf_counter(), time.process_time()
            synth.write_dataset(Path(tmp) / "full", patients=348, seed=0)
            took, cpu = time.perf_counter() - start, time.process_time() - cpu
        # CPU time too: on a shared machine the wall time mostly measures the other processes.
        print(
            f"phantom, full 348-patient set written: {took:.1f} s wall, {cpu:.1f} s CPU; "
            f"budget {BUDGET_S:.0f} s -> ratio {took / BUDGET_S:.2f} (wall), {cpu / BUDGET_S:.2f} (CPU)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        root = synth.write_dataset(Path(tmp) / "d", patients=16, seed=0)
        rows = pd.DataFrame(
            {
                "sample_id": [p.stem for p in sorted((root / "images").iterdir())],
                "image": sorted(str(p) for p in (root / "images").iterdir()),
                "mask": sorted(str(p) for p in (root / "masks").iterdir()),
            }
        )
        preprocess.build_cache(rows, 256, Path(tmp) / "train.npz")
        cache = preprocess.load_cache(Path(tmp) / "train.npz")
        order = np.random.default_rng(0).permutation(len(rows))

        def decode_batch(i):
            for j in order[(i * 8) % 32 : (i * 8) % 32 + 8]:
                preprocess.resize_sample(read_image(rows.image[j]).pixels, read_mask(rows["mask"][j]).pixels, 256)

        def cached_batch(i):
            batch = order[(i * 8) % 32 : (i * 8) % 32 + 8]
            return cache["images"][batch].astype(np.float32) / 255, cache["masks"][batch]

        decoded, cached = per_call(decode_batch, 8), per_call(cached_batch, 50)
        print(
            f"batch of 8 at 256x256: decode {decoded * 1000:.1f} ms, cache {cached * 1000:.2f} ms "
            f"-> cache is {decoded / cached:.0f}x faster"
        )


if __name__ == "__main__":
    main()
