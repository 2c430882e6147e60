"""Benchmarks, each printed as a ratio against a baseline measured in the same run.

1. Phantom speed: ms per image, against the 50 ms budget of the issue and against the same
   renderer evaluating the lesion over the whole image (the baseline the bounding box replaced).
2. Batch loading: slicing the preprocessed cache versus decoding and resizing PNGs per step
   (what training would do without the cache).
Run: python bench/bench_synth.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg import preprocess, synth
from sonoseg.imageio import read_image, read_mask


def per_call(fn, repeats: int) -> float:
    start = time.perf_counter()
    for i in range(repeats):
        fn(i)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    render = per_call(lambda i: synth.render(0, i, 1), 40)
    print(f"phantom: {render * 1000:.1f} ms/image; budget 50 ms -> ratio {render / 0.05:.2f} (<= 1 meets it)")

    with tempfile.TemporaryDirectory() as tmp:
        root = synth.write_dataset(Path(tmp) / "d", patients=16, seed=0)
        rows = pd.DataFrame({"sample_id": [p.stem for p in sorted((root / "images").iterdir())],
                             "image": sorted(str(p) for p in (root / "images").iterdir()),
                             "mask": sorted(str(p) for p in (root / "masks").iterdir())})
        preprocess.build_cache(rows, 256, Path(tmp) / "train.npz")
        cache = preprocess.load_cache(Path(tmp) / "train.npz")
        order = np.random.default_rng(0).permutation(len(rows))

        def decode_batch(i):
            for j in order[(i * 8) % 32:(i * 8) % 32 + 8]:
                preprocess.resize_sample(read_image(rows.image[j]).pixels, read_mask(rows["mask"][j]).pixels, 256)

        def cached_batch(i):
            batch = order[(i * 8) % 32:(i * 8) % 32 + 8]
            return cache["images"][batch].astype(np.float32) / 255, cache["masks"][batch]

        decoded, cached = per_call(decode_batch, 8), per_call(cached_batch, 50)
        print(f"batch of 8 at 256x256: decode {decoded * 1000:.1f} ms, cache {cached * 1000:.2f} ms "
              f"-> cache is {decoded / cached:.0f}x faster")


if __name__ == "__main__":
    main()
