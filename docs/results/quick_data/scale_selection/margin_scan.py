"""The margin by which a smaller scale's lesion confidence must beat the input size's before it is kept:
the family's Dice on the phantom's validation images and on the development external set (pymust_far)
at each margin, with a finished quick study's models. Reads no test image of either kind and no held-out
image. From the repository root: PYTHONPATH=src python <this file> RESULTS_DIR"""
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
FACTORS = (0.875, 0.75, 0.625)
MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08)
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
    for net in ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]:
        postprocess = json.loads((R / f"runs/{net}/fold0/postprocess.json").read_text())["chosen"]
        run = infer.torch_predictor(R / f"runs/{net}/fold0/seed0/model.pt", "cpu").run
        size = x.shape[-1]
        probs = {1.0: run(x.numpy())}
        for f in FACTORS:
            side = round(size * f)
            small = run(F.interpolate(x, size=(side, side), mode="area").numpy())
            probs[f] = F.interpolate(torch.from_numpy(small)[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
            probs[(f, "conf")] = infer.lesion_confidence(small)
        probs[(1.0, "conf")] = infer.lesion_confidence(probs[1.0])
        for i, sid in enumerate(str(s) for s in arrays["sample_ids"]):
            truth = read_mask(samples.loc[sid, "mask"]).pixels
            if not truth.any():
                continue
            row = {"set": name, "network": net, "patient": samples.loc[sid, "patient"]}
            for margin in MARGINS:
                best, best_conf = 1.0, probs[(1.0, "conf")][i]
                for f in FACTORS:
                    if probs[(f, "conf")][i] > best_conf + (margin if best == 1.0 else 0.0):
                        best, best_conf = f, probs[(f, "conf")][i]
                row[f"margin {margin:.2f}"] = dice(infer.probability_to_mask(probs[best][i], *truth.shape, "area", postprocess), truth)
            rows.append(row)
d = pd.DataFrame(rows)
print(R)
print(d.groupby("set")[[c for c in d.columns if c.startswith("margin")]].mean().round(3).T.to_string())
print(d.groupby(["set", "network"])[[c for c in d.columns if c.startswith("margin")]].mean().round(3).to_string())
