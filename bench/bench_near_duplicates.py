"""Benchmark: the near-duplicate search's worst case, images of one scanner and preset (the same field of
view, text overlay and ruler, only the speckle and the lesion differ), where every pair is a candidate
and each is confirmed (docs/near_duplicates.md). Times ingest of one such set, and the external sets'
overlap check of a second set against it (docs/method.md, "External validation"), on one thread and on
``--threads``, as the ratio one / several measured in the same run; the manifests and pairs must be equal.

Run: python bench/bench_near_duplicates.py [--images 120] [--threads 2] [--repeats 3]
Do not run it beside other jobs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from sonoseg import data
from sonoseg.data import duplicates, overlap


def scanner_frame(seed: int, size=(190, 320)) -> tuple[np.ndarray, np.ndarray]:
    """One frame of a made scanner (grayscale) and its lesion mask: the layout is every frame's."""
    rng = np.random.default_rng(seed)
    height, width = size
    speckle = cv2.GaussianBlur(rng.rayleigh(1.0, size).astype(np.float32), (0, 0), sigmaX=2.0, sigmaY=0.8)
    tissue = 0.8 + 0.4 * np.sin(np.linspace(0, 9, height, dtype=np.float32))[:, None] * np.ones((1, width))
    mask = np.zeros(size, np.uint8)
    centre = (int(rng.integers(width // 3, 2 * width // 3)), int(rng.integers(height // 3, 2 * height // 3)))
    cv2.ellipse(mask, centre, (int(rng.integers(15, 40)), int(rng.integers(10, 25))), 0, 0, 360, 255, -1)
    tissue[mask > 0] *= 0.15
    gray = np.clip(80 * np.log1p(6 * speckle * tissue), 0, 255).astype(np.uint8)
    for line, text in enumerate(("ACME US-9  L12-5", "BREAST  58 Hz  DR 60")):
        cv2.putText(gray, text, (4, 14 + 14 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 230, 1)
    for y in range(10, height, 15):
        cv2.line(gray, (width - 12, y), (width - 4, y), 255, 1)
    return gray, mask


def write_set(root: Path, seeds: range) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for seed in seeds:
        image, mask = scanner_frame(seed)
        cv2.imwrite(str(root / "images" / f"f{seed}.png"), image)
        cv2.imwrite(str(root / "masks" / f"f{seed}.png"), mask)
    return root


def median_time(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=120, help="images in each of the two sets")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        main_set = write_set(Path(tmp) / "main", range(args.images))
        external = write_set(Path(tmp) / "external", range(10_000, 10_000 + args.images))
        print(
            f"{args.images} images a set, one scanner; medians of {args.repeats}; ratio = one thread / {args.threads}"
        )
        ingested = {}
        for threads in (1, args.threads):
            seconds, ingested[threads] = median_time(
                lambda n=threads: data.ingest(main_set, "folder", threads=n), args.repeats
            )
            print(f"ingest, {threads} thread(s): {seconds:.2f} s")
            ingested[f"t{threads}"] = seconds
        pd.testing.assert_frame_equal(ingested[1], ingested[args.threads])
        print(f"ingest ratio: {ingested['t1'] / ingested[f't{args.threads}']:.2f}")
        mine, theirs = data.included(data.ingest(external, "folder")), data.included(ingested[1])
        fingerprints = [i.fingerprint for i in overlap.identities(mine) + overlap.identities(theirs)]
        proposals = duplicates.propose(fingerprints, 12)
        within = sum(p.second < len(mine) for p in proposals)
        across = sum(p.first < len(mine) <= p.second for p in proposals)
        print(f"candidates (12 bits): {within} pairs within one set, {across} across")
        found = {}
        for threads in (1, args.threads):
            seconds, found[threads] = median_time(
                lambda n=threads: overlap.find_overlap(mine, {"main": theirs}, 12, 0.7, n), args.repeats
            )
            print(f"overlap check, {threads} thread(s): {seconds:.2f} s ({len(found[threads])} pairs)")
            found[f"t{threads}"] = seconds
        pd.testing.assert_frame_equal(found[1], found[args.threads])
        print(f"overlap ratio: {found['t1'] / found[f't{args.threads}']:.2f}")


if __name__ == "__main__":
    main()
