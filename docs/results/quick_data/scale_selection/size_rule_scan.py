"""Rules that know the training set's lesion scale, scanned on the phantom's validation images and the
development external set only (no test image of either kind, no held-out image). Each image is
predicted at the input size and shrunk by each factor; the rules:

- input size: the input size alone;
- most confident: the size whose own lesion has the highest mean probability (the rule of 1a1a6b1);
- input larger than q: shrink (to the most confident smaller size) only when the lesion predicted at the
  input size is larger than the training lesions' quantile q (size_aware_scan.py);
- smaller larger than q: shrink only when the lesion predicted at the most confident smaller size,
  measured at the input size, is larger than quantile q: a network that under-segments a lesion larger
  than any it was trained on still finds it whole once shrunk;
- either larger than q: shrink when either is;
- most confident, if larger than q: the most confident size, unless its lesion (at the input size) is
  no larger than quantile q (then the input size); "if either larger": unless neither its lesion nor
  the input size's is; "if the input's larger": unless the input size's is not.

The training lesion areas are the training masks' at the input size (scan_images.py). From the repository root:
PYTHONPATH=src python <this file> RESULTS_DIR"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scan_images import scanned_images, training_lesion_areas

from sonoseg.analysis.evaluate import dice
from sonoseg.serving import infer

R = Path(sys.argv[1])
FACTORS = (1.0, 0.875, 0.75, 0.625)
train_areas = training_lesion_areas(R)
QUANTILES = (0.75, 0.9, 0.95, 1.0)
limits = {q: float(np.quantile(train_areas, q)) for q in QUANTILES}
rows = []
for image in scanned_images(R, FACTORS):
    conf, area = image["conf"], image["area"]
    smaller = max(FACTORS[1:], key=lambda f: conf[f])
    choices = {"input size": 1.0, "most confident": max(FACTORS, key=lambda f: (conf[f], f))}
    for q, limit in limits.items():
        tag = f"q{q:.2f} ({limit:.0f} px)"
        choices[f"input larger than {tag}"] = smaller if area[1.0] > limit else 1.0
        choices[f"smaller larger than {tag}"] = smaller if area[smaller] > limit else 1.0
        choices[f"either larger than {tag}"] = smaller if max(area[1.0], area[smaller]) > limit else 1.0
        confident = choices["most confident"]
        choices[f"most confident, if larger than {tag}"] = confident if area[confident] > limit else 1.0
        choices[f"most confident, if either larger than {tag}"] = (
            confident if max(area[1.0], area[confident]) > limit else 1.0
        )
        choices[f"most confident, if the input's larger than {tag}"] = confident if area[1.0] > limit else 1.0
    row = {"set": image["set"], "network": image["network"]}
    for label, f in choices.items():
        mask = infer.probability_to_mask(image["probs"][f], *image["truth"].shape, "area", image["postprocess"])
        row[label] = dice(mask, image["truth"])
    rows.append(row)
d = pd.DataFrame(rows)
cols = [c for c in d.columns if c not in ("set", "network")]
print(R, "training lesion areas at the input size:", sorted(train_areas.tolist()))
pd.set_option("display.width", 250)
print(d.groupby("set")[cols].mean().round(3).T.to_string())
print(d.groupby(["set", "network"])[cols].mean().round(3).T.to_string())
by_network = d.groupby(["set", "network"])[cols].mean()
cost = by_network.loc["phantom_val"] - by_network.loc["phantom_val"]["input size"].to_numpy()[:, None]
print(pd.DataFrame({"largest validation loss against the input size": (-cost.min()).round(3),
                    "lowest pymust_far Dice of a network": by_network.loc["pymust_far"].min().round(3)}).to_string())
