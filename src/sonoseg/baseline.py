"""Non-learned baselines: the floor a trained network must clear ("beyond the paper" rows).

``threshold_baseline`` segments one image with no training at all:

1. grey level of the RGB image; the field of view is the non-black scan area (closed, holes
   filled, eroded a little so that its dark edge is not taken for a lesion);
2. denoise: a median filter, then a Gaussian blur whose width follows the image width (speckle is
   a few pixels wide);
3. threshold: Otsu's threshold over the field of view's pixels; lesions are darker than the
   tissue around them in most ultrasound, so the **dark** class is kept;
4. a small morphological opening to break thin bridges, then the networks' post-processing:
   ``sonoseg.infer.keep_one_lesion`` (one component by the same component rule, holes filled).

The predictions are written like a network's (0/255 PNG at the original size) and evaluated by the
same rules.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from sonoseg.errors import SonosegError
from sonoseg.imageio import read_image

BASELINES = ("threshold_baseline",)
LABELS = {"threshold_baseline": "Threshold baseline (no training; beyond the paper)"}
PARAMETERS = 0  # no learned parameters


def field_of_view(gray: np.ndarray) -> np.ndarray:
    """The scan area: non-black pixels, closed and hole-filled, eroded by ~1 % of the width."""
    size = max(3, int(gray.shape[1] * 0.012) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    fov = cv2.morphologyEx((gray > 0).astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(fov, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(fov, contours, -1, 1, thickness=cv2.FILLED)
    return cv2.erode(fov, kernel) > 0


def threshold_segment(rgb: np.ndarray, rule: str = "area") -> np.ndarray:
    """The threshold baseline's mask (bool, the image's size) for one RGB uint8 image."""
    from sonoseg.infer import keep_one_lesion  # the networks' post-processing, exactly

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SonosegError(f"threshold_baseline: expected an RGB uint8 image, got {rgb.dtype} {rgb.shape}")
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    fov = field_of_view(gray)
    if not fov.any():
        return np.zeros(gray.shape, dtype=bool)
    smooth = cv2.medianBlur(gray, 5)
    smooth = cv2.GaussianBlur(smooth, (0, 0), max(gray.shape[1] / 160, 1.0))
    threshold, _ = cv2.threshold(smooth[fov].reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = (smooth <= threshold) & fov
    size = max(3, int(gray.shape[1] * 0.008) | 1)
    dark = cv2.morphologyEx(
        dark.astype(np.uint8), cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    )
    return keep_one_lesion(dark > 0, rule)


def predict(name: str, samples: pd.DataFrame, outdir: str | Path, rule: str = "area") -> int:
    """Write <outdir>/<sample_id>.png (0/255) for every sample, as a network's predict does."""
    if name not in BASELINES:
        raise SonosegError(f"baseline {name!r} is not one of {BASELINES}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for row in samples.itertuples(index=False):
        mask = threshold_segment(read_image(row.image).pixels, rule)
        cv2.imwrite(str(outdir / f"{row.sample_id}.png"), mask.astype(np.uint8) * 255)
    return len(samples)
