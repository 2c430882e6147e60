"""Make the committed external sets simulated with pymust: data/external/pymust_*/ (sonoseg.data.simulated.SETS).

They were made once, on one CPU core, with (from the repository root, the project's environment
having pymust 0.1.9)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        .venv/bin/python data/external/make_sets.py --overwrite

The sets' settings, seeds and sizes live in sonoseg.data.simulated.SETS; each set's
simulation.json records them with the versions and the seconds each image took. The study reads the
committed files and never simulates at run time; rerun this only to change a set on purpose (the
same seed and versions give the same images).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from sonoseg.data import simulated

SHEET = "pymust_samples.jpg"
OUTLINE_BGR = (0, 200, 255)  # amber: visible on grey speckle
TILE_WIDTH = 256


def contact_sheet(out: Path, per_set: int = 4) -> np.ndarray:
    """The first images of each set under ``out``, one row per set: each image bare, then with its
    mask's outline (BGR uint8): the picture data/external/README.md shows."""
    rows = []
    # Tiles of one width, with each set's aspect ratio kept, padded below to the tallest set's height.
    tile_height = max(round(TILE_WIDTH * s.rows / s.cols) for s in simulated.SETS.values())
    for name in sorted(simulated.SETS):
        folder = out / name
        if not (folder / "patients.csv").is_file():
            continue
        tiles = []
        for image_name in pd.read_csv(folder / "patients.csv")["image"][:per_set]:
            image = cv2.imread(str(folder / "images" / image_name), cv2.IMREAD_GRAYSCALE)
            mask = cv2.imread(str(folder / "masks" / image_name), cv2.IMREAD_GRAYSCALE)
            height = round(TILE_WIDTH * image.shape[0] / image.shape[1])
            image = cv2.resize(image, (TILE_WIDTH, height), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (TILE_WIDTH, height), interpolation=cv2.INTER_NEAREST)
            image, mask = (np.pad(a, ((0, tile_height - height), (0, 0))) for a in (image, mask))
            outlined = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(outlined, contours, -1, OUTLINE_BGR, 1)
            tiles += [cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), outlined, np.zeros((tile_height, 4, 3), np.uint8)]
        rows.append(np.hstack(tiles))
    return np.vstack([np.pad(r, ((0, 4), (0, 0), (0, 0))) for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", metavar="SET", help=f"sets to make, of {sorted(simulated.SETS)} (all)")
    parser.add_argument("--out", type=Path, default=Path("data/external"), help="parent folder of the sets")
    parser.add_argument("--patients", type=int, default=None, help="images per set, instead of the set's own count")
    parser.add_argument("--overwrite", action="store_true", help="replace a set already there")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sets) - set(simulated.SETS))
    if unknown:
        parser.error(f"unknown set(s) {unknown}; known: {sorted(simulated.SETS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in args.sets or sorted(simulated.SETS):
        started = time.perf_counter()
        folder = simulated.write_set(args.out / name, name, patients=args.patients, overwrite=args.overwrite)
        logging.info("%s: written to %s in %.0f s", name, folder, time.perf_counter() - started)
    cv2.imwrite(str(args.out / SHEET), contact_sheet(args.out), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return 0


if __name__ == "__main__":
    sys.exit(main())
