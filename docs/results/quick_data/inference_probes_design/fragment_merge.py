"""Fragments merged before keeping one component (SUMMARY.md): the seed probe's U-net family single
trainings (../seed_ensemble_design/, three seeds in fp32 and in bf16), their probability as
infer.predict makes it (the quick study's scales and size-aware rule), thresholded at 0.5 at the
original size, then: keep_one (the study's rule); a morphological closing by an ellipse k input
pixels across (k/32 of the image's width and height) before keep_one; the kept component with every
component within k input pixels of it; the kept component's convex hull. Development sets only: the phantom's validation and test images and
pymust_far (pymust_heldout is not among them).

    PYTHONPATH=src python docs/results/quick_data/inference_probes_design/fragment_merge.py seedprobe30 seedprobe30bf16"""
import sys
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
SCALES = (1.0, 0.875, 0.75, 0.625)


def sets(R: Path) -> dict:
    return {
        "phantom_val": (R / "data/manifest.csv", R / "data/split.csv", "val", R / "data/cache/inpaint/fold0/val.npz"),
        "phantom_test": (R / "data/manifest.csv", R / "data/split.csv", "test", Path("results/quick/data/cache/inpaint/fold0/test.npz")),
        "pymust_far": (R / "external/pymust_far/manifest.csv", R / "external/pymust_far/split.csv", "test",
                       R / "external/pymust_far/cache/inpaint/test.npz"),
    }


def keep_largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return ndimage.binary_fill_holes(mask)
    areas = ndimage.sum(mask, labels, np.arange(1, count + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(areas)))


def ellipse(k: float, shape) -> np.ndarray:
    """An ellipse k input pixels across (the network sees 32 x 32) at the original size."""
    h, w = shape
    ry, rx = max(1, round(k * h / 64)), max(1, round(k * w / 64))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rx + 1, 2 * ry + 1)).astype(bool)


def components(probability: np.ndarray, truth: np.ndarray, dice) -> dict:
    mask = probability > 0.5
    out = {"keep_one": dice(keep_largest(mask), truth)}
    for k in (1, 2, 3):
        closed = ndimage.binary_closing(np.pad(mask, 8 * k), structure=ellipse(k, mask.shape))[8 * k:-8 * k, 8 * k:-8 * k]
        out[f"close{k}"] = dice(keep_largest(closed | mask), truth)
        kept = keep_largest(mask)
        near = ndimage.binary_dilation(kept, structure=ellipse(k, mask.shape))
        labels, count = ndimage.label(mask)
        touching = set(np.unique(labels[near & mask])) - {0}
        out[f"near{k}"] = dice(ndimage.binary_fill_holes(kept | np.isin(labels, list(touching))), truth)
    kept = keep_largest(mask).astype(np.uint8)
    contours, _ = cv2.findContours(kept, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = np.zeros_like(kept)
    if contours:
        cv2.fillPoly(hull, [cv2.convexHull(np.concatenate(contours))], 1)
    out["hull"] = dice(hull.astype(bool), truth)
    return out


def job(args):
    import torch

    torch.set_num_threads(1)
    from sonoseg.analysis.evaluate import dice
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.data.preprocess import load_cache
    from sonoseg.serving import infer
    from sonoseg.serving.modelio import images_to_tensor

    study, net, seed = args
    R = Path(f"results/{study}")
    model = R / f"runs/{net}/fold0/seed{seed}/model.pt"
    predictor = infer.model_predictor([model], "cpu")
    run = infer.scale_adaptive(predictor.run, SCALES, str(model), infer.area_limit(predictor, SCALES, 1.0, str(model)))
    rows = []
    for name, (manifest, split_csv, part, cache) in sets(R).items():
        samples = split.samples_of_part(manifest, split_csv, part, 0).set_index("sample_id")
        arrays = load_cache(cache)
        probabilities = np.concatenate([b for _, b in infer.in_batches(run, images_to_tensor(arrays["images"]).numpy())])
        for sample_id, probability in zip((str(s) for s in arrays["sample_ids"]), probabilities):
            row = samples.loc[sample_id]
            truth = read_mask(row["mask"]).pixels
            resized = cv2.resize(probability.astype(np.float32), (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
            rows.append({"study": study, "network": net, "seed": seed, "set": name, "sample_id": sample_id,
                         "patient": row["patient"], **components(resized, truth, dice)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    studies = sys.argv[1:]
    with Pool(2) as pool:
        table = pd.concat(pool.map(job, [(s, n, seed) for s in studies for n in FAMILY for seed in (0, 1, 2)]))
    table.to_csv(Path(__file__).parent / "results/fragment_merge.csv.gz", index=False)
    cols = ["keep_one", "close1", "close2", "close3", "near1", "near2", "near3", "hull"]
    print(table.groupby(["set", "study"])[cols].mean().round(3).to_string())
    print(table.groupby(["set", "study", "network"])[cols].mean().round(3).to_string())
