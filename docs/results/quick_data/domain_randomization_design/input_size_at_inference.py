# Multi-scale inference probe on the development sets (phantom val/test, pymust_far; probe_images.py):
# the seed-0 family models of the fp32 quick study fed the images resized to other input sizes; no
# held-out image read. From the repository root: PYTHONPATH=src python <this file>
import itertools

import cv2
import numpy as np
import pandas as pd
from probe_images import FAMILY, model_path, probe_images

from sonoseg.analysis.evaluate import dice
from sonoseg.serving import infer

SIZES = [32, 28, 24, 20, 48]
rows = []
for net in FAMILY:
    preds = {z: infer.torch_predictor(model_path(net), "cpu", size=z) for z in SIZES}
    for s, row, rgb, t in probe_images(net):
        probs = {}
        for z, p in preds.items():
            pr = p.run(p.prepare(rgb))[0]
            probs[z] = cv2.resize(pr, (64, 64), interpolation=cv2.INTER_LINEAR)
        out = dict(set=s, net=net, sid=row["sample_id"])
        for k in (1,):
            for combo in itertools.combinations(SIZES, k):
                avg = np.mean([probs[z] for z in combo], 0)
                out["+".join(map(str, combo))] = dice(infer.probability_to_mask(avg, *t.shape, "area", "keep_one"), t)
        rows.append(out)
d = pd.DataFrame(rows)
cols = [c for c in d.columns if c[0].isdigit()]
pd.set_option("display.width", 250)
print(d.groupby(["set", "net"])[cols].mean().round(3))
print(d.groupby("set")[cols].mean().round(3))
