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

The training lesion areas are the training masks' at the input size. From the repository root:
PYTHONPATH=src python <this file> RESULTS_DIR"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from sonoseg.analysis.evaluate import dice
from sonoseg.data import split
from sonoseg.data.imageio import read_mask
from sonoseg.data.preprocess import load_cache
from sonoseg.serving import infer
from sonoseg.serving.modelio import images_to_tensor

torch.set_num_threads(2)
R = Path(sys.argv[1])
FACTORS = (1.0, 0.875, 0.75, 0.625)
FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
train_masks = load_cache(R / "data/cache/inpaint/fold0/train.npz")["masks"] > 0
train_areas = train_masks.reshape(len(train_masks), -1).sum(1)
train_areas = train_areas[train_areas > 0]
QUANTILES = (0.75, 0.9, 0.95, 1.0)
limits = {q: float(np.quantile(train_areas, q)) for q in QUANTILES}
SETS = {
    "phantom_val": (R / "data/cache/inpaint/fold0/val.npz", R / "data/manifest.csv", R / "data/split.csv", "val"),
    "pymust_far": (R / "external/pymust_far/cache/inpaint/test.npz", R / "external/pymust_far/manifest.csv",
                   R / "external/pymust_far/split.csv", "test"),
}
rows = []
for name, (cache, manifest, split_csv, part) in SETS.items():
    arrays = load_cache(cache)
    samples = split.samples_of_part(manifest, split_csv, part, 0).set_index("sample_id")
    x = images_to_tensor(arrays["images"])
    size = x.shape[-1]
    for net in FAMILY:
        postprocess = json.loads((R / f"runs/{net}/fold0/postprocess.json").read_text())["chosen"]
        run = infer.torch_predictor(R / f"runs/{net}/fold0/seed0/model.pt", "cpu").run
        probs, conf = {}, {}
        for f in FACTORS:
            side = round(size * f)
            small = run(x.numpy() if f == 1.0 else F.interpolate(x, size=(side, side), mode="area").numpy())
            conf[f] = infer.lesion_confidence(small)
            probs[f] = F.interpolate(torch.from_numpy(small)[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
        area = {f: (p > 0.5).reshape(len(x), -1).sum(1) for f, p in probs.items()}
        for i, sid in enumerate(str(s) for s in arrays["sample_ids"]):
            truth = read_mask(samples.loc[sid, "mask"]).pixels
            if not truth.any():
                continue
            row = {"set": name, "network": net}
            smaller = max(FACTORS[1:], key=lambda f: conf[f][i])
            choices = {"input size": 1.0, "most confident": max(FACTORS, key=lambda f: (conf[f][i], f))}
            for q, limit in limits.items():
                tag = f"q{q:.2f} ({limit:.0f} px)"
                choices[f"input larger than {tag}"] = smaller if area[1.0][i] > limit else 1.0
                choices[f"smaller larger than {tag}"] = smaller if area[smaller][i] > limit else 1.0
                choices[f"either larger than {tag}"] = smaller if max(area[1.0][i], area[smaller][i]) > limit else 1.0
                confident = choices["most confident"]
                choices[f"most confident, if larger than {tag}"] = confident if area[confident][i] > limit else 1.0
                choices[f"most confident, if either larger than {tag}"] = (
                    confident if max(area[1.0][i], area[confident][i]) > limit else 1.0
                )
                choices[f"most confident, if the input's larger than {tag}"] = confident if area[1.0][i] > limit else 1.0
            for label, f in choices.items():
                row[label] = dice(infer.probability_to_mask(probs[f][i], *truth.shape, "area", postprocess), truth)
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
