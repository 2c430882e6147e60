"""Prediction with post-processing (SPEC.md section 3): probability at the training size, resized
bilinearly to the original size, thresholded at 0.5, one lesion kept, its holes filled."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from sonoseg.errors import SonosegError
from sonoseg.imageio import read_image
from sonoseg.preprocess import load_cache, resize_image
from sonoseg.train import images_to_tensor, load_model, select_device, to_tensors

COMPONENT_RULES = ("area", "contour_points")


def keep_one_lesion(mask: np.ndarray, rule: str = "area") -> np.ndarray:
    """Keep one connected component (8-connectivity) and fill its holes.

    rule "area" keeps the largest area (our default); "contour_points" keeps the component whose
    external contour has the most boundary points, as the authors' code did.
    """
    if rule not in COMPONENT_RULES:
        raise SonosegError(f"predict.component_rule: {rule!r} is not one of {COMPONENT_RULES}")
    mask = mask.astype(bool)
    if not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count > 1:
        if rule == "area":
            keep = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        else:
            points = []
            for label in range(1, count + 1):
                contours, _ = cv2.findContours((labels == label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                points.append(max(len(c) for c in contours))
            keep = 1 + int(np.argmax(points))
        mask = labels == keep
    return ndimage.binary_fill_holes(mask)


def probability_to_mask(probability: np.ndarray, height: int, width: int, rule: str = "area") -> np.ndarray:
    resized = cv2.resize(probability.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return keep_one_lesion(resized > 0.5, rule)


def write_mask(probability: np.ndarray, height: int, width: int, rule: str, path: Path) -> Path:
    """Post-process a probability map to the original size and save it as a 0/255 PNG."""
    cv2.imwrite(str(path), probability_to_mask(probability, height, width, rule).astype(np.uint8) * 255)
    return path


def predict(model_path: str | Path, data_path: str | Path, samples: pd.DataFrame, outdir: str | Path,
            rule: str = "area", device: str = "auto", batch_size: int = 8) -> int:
    """Write <outdir>/<sample_id>.png (0/255) at each sample's original size."""
    dev = select_device(device)
    model, _ = load_model(model_path, dev)
    arrays = load_cache(data_path)
    images, _ = to_tensors(arrays)
    sizes = samples.set_index("sample_id")[["height", "width"]]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [str(s) for s in arrays["sample_ids"]]
    missing = [s for s in ids if s not in sizes.index]
    if missing:
        raise SonosegError(f"{data_path}: samples {missing[:5]} are not in the manifest")
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            probability = torch.sigmoid(model(images[start:start + batch_size].to(dev))).cpu().numpy()[:, 0]
            for sample_id, prob in zip(ids[start:start + batch_size], probability):
                height, width = (int(v) for v in sizes.loc[sample_id])
                write_mask(prob, height, width, rule, outdir / f"{sample_id}.png")
    return len(ids)


def segment_images(model_path: str | Path, images: list[str | Path], outdir: str | Path, rule: str = "area",
                   device: str = "auto", size: int | None = None) -> list[Path]:
    """Segment new images with a trained model: <outdir>/<image stem>_mask.png at each image's size.

    The input size is the one the model was trained at (stored in model.pt), unless ``size`` is given.
    """
    dev = select_device(device)
    model, saved = load_model(model_path, dev)
    size = size or saved.get("input_size")
    if not size:
        raise SonosegError(f"{model_path}: no input size stored; pass --size")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    with torch.no_grad():
        for path in images:
            rgb = read_image(path).pixels
            batch = images_to_tensor(resize_image(rgb, size)[None]).to(dev)
            probability = torch.sigmoid(model(batch)).cpu().numpy()[0, 0]
            written.append(write_mask(probability, rgb.shape[0], rgb.shape[1], rule,
                                      outdir / f"{Path(path).stem}_mask.png"))
    return written
