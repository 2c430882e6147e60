# Input blur probe at inference (development sets only, probe_images.py): the 32-px input low-passed
# before the network. From the repository root: PYTHONPATH=src python <this file>
import cv2
import numpy as np
import pandas as pd
from probe_images import FAMILY, model_path, probe_images

from sonoseg.analysis.evaluate import dice
from sonoseg.serving import infer

SIGMAS = [0, 0.5, 0.75, 1.0]
rows = []
for net in FAMILY:
    p = infer.torch_predictor(model_path(net), "cpu")
    for s, row, rgb, t in probe_images(net):
        x = p.prepare(rgb)
        out = dict(set=s, net=net, sid=row["sample_id"])
        for sg in SIGMAS:
            xb = x if sg == 0 else np.stack([cv2.GaussianBlur(c, (0, 0), sg, borderType=cv2.BORDER_REPLICATE) for c in x[0]])[None]
            out[f"blur{sg}"] = dice(infer.probability_to_mask(p.run(xb.astype(np.float32))[0], *t.shape, "area", "keep_one"), t)
        rows.append(out)
d = pd.DataFrame(rows)
cols = [c for c in d.columns if c.startswith("blur")]
pd.set_option("display.width", 250)
print(d.groupby(["set", "net"])[cols].mean().round(3))
print(d.groupby("set")[cols].mean().round(3))
