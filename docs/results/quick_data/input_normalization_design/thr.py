"""The family's Dice at thresholds 0.2-0.6 on the phantom (validation, test) and pymust_far (SUMMARY.md).
From the repository root, after an fp32 quick study: PYTHONPATH=src python <this file>."""
import numpy as np, pandas as pd
from pathlib import Path
from sonoseg.analysis.evaluate import dice
from sonoseg.data import split
from sonoseg.data.imageio import read_mask
from sonoseg.data.preprocess import load_cache
from sonoseg.serving import infer
from sonoseg.serving.modelio import images_to_tensor
R = Path("results/quick")  # the fp32 quick study's results
SETS = {"phantom_val": (R/"data/manifest.csv", R/"data/split.csv", R/"data/cache/inpaint/fold0/val.npz", "val"),
        "phantom_test": (R/"data/manifest.csv", R/"data/split.csv", R/"data/cache/inpaint/fold0/test.npz", "test"),
        "pymust_far": (R/"external/pymust_far/manifest.csv", R/"external/pymust_far/split.csv", R/"external/pymust_far/cache/inpaint/test.npz", "test")}
TH = [0.2, 0.3, 0.4, 0.5, 0.6]
rows = []
for net in ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]:
    model = R/f"runs/{net}/fold0/seed0/model.pt"
    pred = infer.torch_predictor(model, "cpu")
    for s, (man, spl, cache, part) in SETS.items():
        samples = split.samples_of_part(man, spl, part, 0).set_index("sample_id")
        arr = load_cache(cache)
        probs = np.concatenate([b for _, b in infer.in_batches(pred.run, images_to_tensor(arr["images"]).numpy())])
        for sid, p in zip((str(x) for x in arr["sample_ids"]), probs):
            truth = read_mask(samples.loc[sid, "mask"]).pixels
            r = {"net": net, "set": s}
            for t in TH:
                m = infer.probability_to_mask(p, *truth.shape, "area", "keep_one") if t == 0.5 else None
                # threshold t: rescale so that t maps to 0.5 (probability_to_mask thresholds at 0.5)
                q = np.clip(p * (0.5 / t), 0, 1) if t <= 0.5 else np.clip(0.5 + (p - t) * (0.5 / (1 - t)), 0, 1)
                r[t] = dice(infer.probability_to_mask(q, *truth.shape, "area", "keep_one"), truth)
            rows.append(r)
df = pd.DataFrame(rows)
print(df.groupby(["set", "net"])[TH].mean().round(3).to_string())
print(df.groupby(["set"])[TH].mean().round(3).to_string())
