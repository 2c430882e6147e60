"""What the scale-selection scans (margin_scan.py, size_rule_scan.py) share: each U-net family network's
models of a finished quick study, on the phantom's validation images and the development external set
(pymust_far) only (no test image of either kind, no held-out image), each image predicted at the input
size and shrunk by each factor (area resizing), the probability brought back to the input size."""
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sonoseg.data import split
from sonoseg.data.imageio import read_mask
from sonoseg.data.preprocess import load_cache
from sonoseg.serving import infer
from sonoseg.serving.modelio import images_to_tensor

FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]


def development_sets(results: Path) -> dict:
    """name -> (cache, manifest, split, part)."""
    external = results / "external/pymust_far"
    return {
        "phantom_val": (results / "data/cache/inpaint/fold0/val.npz", results / "data/manifest.csv",
                        results / "data/split.csv", "val"),
        "pymust_far": (external / "cache/inpaint/test.npz", external / "manifest.csv", external / "split.csv", "test"),
    }


def scanned_images(results: Path, factors: tuple[float, ...], seed: int = 0):
    """One dict per (set, network, image with a lesion): set, network, patient, truth (the mask at its
    original size), postprocess (the run's choice), probs (factor -> probability at the input size),
    conf (factor -> the lesion confidence at that size), area (factor -> lesion pixels at the input size).
    ``factors`` must include 1.0; ``seed``: which of each network's trainings."""
    torch.set_num_threads(2)
    for name, (cache, manifest, split_csv, part) in development_sets(results).items():
        arrays = load_cache(cache)
        samples = split.samples_of_part(manifest, split_csv, part, 0).set_index("sample_id")
        x = images_to_tensor(arrays["images"])
        size = x.shape[-1]
        for net in FAMILY:
            postprocess = json.loads((results / f"runs/{net}/fold0/postprocess.json").read_text())["chosen"]
            run = infer.torch_predictor(results / f"runs/{net}/fold0/seed{seed}/model.pt", "cpu").run
            probs, conf = {}, {}
            for f in factors:
                side = round(size * f)
                small = run(x.numpy() if f == 1.0 else F.interpolate(x, size=(side, side), mode="area").numpy())
                conf[f] = infer.lesion_confidence(small)
                probs[f] = F.interpolate(torch.from_numpy(small)[:, None], size=(size, size), mode="bilinear",
                                         align_corners=False)[:, 0].numpy()
            area = {f: (p > 0.5).reshape(len(x), -1).sum(1) for f, p in probs.items()}
            for i, sid in enumerate(str(s) for s in arrays["sample_ids"]):
                truth = read_mask(samples.loc[sid, "mask"]).pixels
                if truth.any():
                    yield {
                        "set": name, "network": net, "seed": seed, "sample_id": sid, "patient": samples.loc[sid, "patient"], "truth": truth,
                        "postprocess": postprocess, "probs": {f: p[i] for f, p in probs.items()},
                        "conf": {f: c[i] for f, c in conf.items()}, "area": {f: a[i] for f, a in area.items()},
                    }


def training_lesion_areas(results: Path) -> np.ndarray:
    """The training masks' lesion areas at the input size (what training records in the model file)."""
    masks = load_cache(results / "data/cache/inpaint/fold0/train.npz")["masks"] > 0
    areas = masks.reshape(len(masks), -1).sum(1)
    return areas[areas > 0]
