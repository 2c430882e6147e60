"""A next rule, scanned on the phantom's validation images and the development external set only (no
test image of either kind, no held-out image): shrink an image only when the lesion predicted at the
input size is larger than the training lesions (the training masks' area at the input size, quantile
q), and then keep the most confident of the smaller sizes; against today's rule (always the most
confident size) and the input size alone. From the repository root: PYTHONPATH=src python <this file> RESULTS_DIR"""
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
train_areas = (load_cache(R / "data/cache/inpaint/fold0/train.npz")["masks"] > 0).reshape(56, -1).sum(1)
train_areas = train_areas[train_areas > 0]
QUANTILES = (0.5, 0.75, 0.9, 1.0)
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
    for net in ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]:
        postprocess = json.loads((R / f"runs/{net}/fold0/postprocess.json").read_text())["chosen"]
        run = infer.torch_predictor(R / f"runs/{net}/fold0/seed0/model.pt", "cpu").run
        probs, conf = {}, {}
        for f in FACTORS:
            side = round(size * f)
            small = run(x.numpy() if f == 1.0 else F.interpolate(x, size=(side, side), mode="area").numpy())
            conf[f] = infer.lesion_confidence(small)
            probs[f] = F.interpolate(torch.from_numpy(small)[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
        area_at_input = (probs[1.0] > 0.5).reshape(len(x), -1).sum(1)
        for i, sid in enumerate(str(s) for s in arrays["sample_ids"]):
            truth = read_mask(samples.loc[sid, "mask"]).pixels
            if not truth.any():
                continue
            row = {"set": name, "network": net}
            choices = {"input size": 1.0, "most confident": max(FACTORS, key=lambda f: (conf[f][i], f))}
            for q, limit in limits.items():
                smaller = max(FACTORS[1:], key=lambda f: conf[f][i])
                choices[f"larger than q{q:.2f} ({limit:.0f} px)"] = smaller if area_at_input[i] > limit else 1.0
            for label, f in choices.items():
                row[label] = dice(infer.probability_to_mask(probs[f][i], *truth.shape, "area", postprocess), truth)
            rows.append(row)
d = pd.DataFrame(rows)
cols = [c for c in d.columns if c not in ("set", "network")]
print(R, "training lesion areas at the input size:", sorted(train_areas.tolist()))
print(d.groupby("set")[cols].mean().round(3).T.to_string())
print(d.groupby(["set", "network"])[cols].mean().round(3).T.to_string())
