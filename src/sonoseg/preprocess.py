"""Preprocess once per study: decode, resize to the training size, cache one array file per split,
so that training never decodes an image per step."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from sonoseg.imageio import read_image, read_mask


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear to size x size, aspect not preserved (as the paper). Training and serving both use it."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def resize_sample(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image as resize_image; the mask resized bilinearly, then > 0.5."""
    mask = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR) > 0.5
    return resize_image(image, size), mask.astype(np.uint8)


def build_cache(samples: pd.DataFrame, size: int, out_path: str | Path) -> int:
    """Write images (N, size, size, 3) uint8 RGB, masks (N, size, size) uint8 {0,1} and sample ids."""
    images = np.zeros((len(samples), size, size, 3), dtype=np.uint8)
    masks = np.zeros((len(samples), size, size), dtype=np.uint8)
    for i, row in enumerate(samples.itertuples()):
        images[i], masks[i] = resize_sample(read_image(row.image).pixels, read_mask(row.mask).pixels, size)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "wb") as handle:  # a file handle keeps numpy from appending .npz
        np.savez(handle, images=images, masks=masks, sample_ids=samples["sample_id"].to_numpy(dtype=str))
    return len(samples)


def load_cache(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        return {k: arrays[k] for k in arrays.files}


# ImageNet statistics (RGB, on [0, 1] inputs): used when a network starts from ImageNet weights.
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def normalize_tensor(x, normalization: dict | None):
    """(x - mean) / std per RGB channel on an (N, 3, H, W) tensor in [0, 1]; identity for None.

    The normalization a model was trained with is stored in its model.pt ("normalization") and
    applied by training, prediction, `segment` and export alike.
    """
    if not normalization:
        return x
    mean = x.new_tensor(normalization["mean"]).view(1, -1, 1, 1)
    std = x.new_tensor(normalization["std"]).view(1, -1, 1, 1)
    return (x - mean) / std
