"""The margin by which a smaller scale's lesion confidence must beat the input size's before it is kept:
the family's Dice on the phantom's validation images and on the development external set (pymust_far)
at each margin, with a finished quick study's models. Reads no test image of either kind and no held-out
image (scan_images.py). From the repository root: PYTHONPATH=src python <this file> RESULTS_DIR"""
import sys
from pathlib import Path

import pandas as pd
from scan_images import scanned_images

from sonoseg.analysis.evaluate import dice
from sonoseg.serving import infer

R = Path(sys.argv[1])
FACTORS = (0.875, 0.75, 0.625)
MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08)
rows = []
for image in scanned_images(R, (1.0, *FACTORS)):
    row = {"set": image["set"], "network": image["network"], "patient": image["patient"]}
    conf = image["conf"]
    for margin in MARGINS:
        best, best_conf = 1.0, conf[1.0]
        for f in FACTORS:
            if conf[f] > best_conf + (margin if best == 1.0 else 0.0):
                best, best_conf = f, conf[f]
        mask = infer.probability_to_mask(image["probs"][best], *image["truth"].shape, "area", image["postprocess"])
        row[f"margin {margin:.2f}"] = dice(mask, image["truth"])
    rows.append(row)
d = pd.DataFrame(rows)
print(R)
print(d.groupby("set")[[c for c in d.columns if c.startswith("margin")]].mean().round(3).T.to_string())
print(d.groupby(["set", "network"])[[c for c in d.columns if c.startswith("margin")]].mean().round(3).to_string())
