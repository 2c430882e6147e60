"""Does a JPEG re-save change what the quick study's models segment? (development set only)

A hospital exports scans as JPEG more often than as PNG. This re-saves `pymust_far` (the development
external set; the held-out scans are not read) at JPEG quality 75 and 90 with OpenCV, segments the PNGs
and both JPEG sets with each U-net family network's run folder exactly as a user would
(`sonoseg segment --model results/quick/runs/<network>/`, the study's recorded scales and
post-processing), and scores every mask against the truth with medpy.

Run from the repository root after `make study`:
    .venv/bin/python docs/results/quick_data/jpeg_robustness/jpeg_resave.py /tmp/jpeg_resave
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pandas as pd
from medpy.metric.binary import dc

NETWORKS = ("unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1")
SOURCE = Path("data/external/pymust_far")
QUALITIES = (75, 90)


def main(work: Path) -> None:
    images = sorted((SOURCE / "images").glob("*.png"))
    sets = {"png": images}
    for quality in QUALITIES:
        folder = work / f"q{quality}"
        folder.mkdir(parents=True, exist_ok=True)
        sets[f"jpeg_q{quality}"] = []
        for image in images:
            target = folder / f"{image.stem}.jpg"
            cv2.imwrite(str(target), cv2.imread(str(image), cv2.IMREAD_GRAYSCALE), [cv2.IMWRITE_JPEG_QUALITY, quality])
            sets[f"jpeg_q{quality}"].append(target)
    rows = []
    for network in NETWORKS:
        for name, files in sets.items():
            out = work / f"masks_{network}_{name}"
            command = ["sonoseg", "segment", "--model", f"results/quick/runs/{network}/", "--outdir", str(out)]
            subprocess.run([*command, "--no-progress", *map(str, files)], check=True, capture_output=True)
            for image in images:
                truth = cv2.imread(str(SOURCE / "masks" / image.name), cv2.IMREAD_GRAYSCALE) > 127
                mask = cv2.imread(str(out / f"{image.stem}_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
                rows.append({"network": network, "input": name, "image": image.stem, "dice": dc(mask, truth)})
    scores = pd.DataFrame(rows)
    scores.to_csv(Path(__file__).with_name("scores.csv"), index=False)
    wide = scores.pivot_table(index=["network", "image"], columns="input", values="dice")
    print("Mean Dice on pymust_far (24 images):")
    print(scores.pivot_table(index="network", columns="input", values="dice").round(3).to_string())
    for name in sets:
        if name != "png":
            moved = (wide[name] - wide["png"]).abs() > 0.1
            print(f"\n{name}: {int(moved.sum())} of {len(wide)} network x image Dice moved by more than 0.1")
            print(wide[moved].round(3).to_string() if moved.any() else "")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
