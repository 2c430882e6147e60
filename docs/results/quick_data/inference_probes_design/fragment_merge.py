"""Fragments merged before keeping one component (SUMMARY.md): the seed probe's U-net family single
trainings (../seed_ensemble_design/, three seeds in fp32 and in bf16), their probability as
infer.predict makes it (the quick study's scales and size-aware rule), thresholded at 0.5 at the
original size, then: keep_one (the study's rule); a morphological closing by an ellipse k input
pixels across (k/32 of the image's width and height) before keep_one; the kept component with every
component within k input pixels of it; the kept component's convex hull. Development sets only: the phantom's validation and test images and
pymust_far (pymust_heldout is not among them).

    PYTHONPATH=src python docs/results/quick_data/inference_probes_design/fragment_merge.py seedprobe30 seedprobe30bf16"""
import cv2
import numpy as np
from probe import main
from scipy import ndimage

from sonoseg.analysis.evaluate import dice


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


def score(maps, truth):
    return components(maps[""], truth, dice)


if __name__ == "__main__":
    main("fragment_merge", score,
         ["keep_one", "close1", "close2", "close3", "near1", "near2", "near3", "hull"])
