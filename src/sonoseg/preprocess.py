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
