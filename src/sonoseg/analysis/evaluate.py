"""Metrics per test image with medpy, at the original resolution (docs/method.md, "Metrics").

Empty-mask policy (medpy returns NaN for dc(empty, empty) and raises in hd95 on an empty mask):
- both empty: Dice 1, HD95 0 (a correct "no lesion");
- exactly one empty: Dice 0, HD95 = the image diagonal (the worst distance the image allows),
  and the row says ``hd95_policy = penalty_empty_prediction`` or ``penalty_empty_truth``.
So one empty prediction never turns a table into NaN, and it still costs what it should. The
summaries (sonoseg.analysis.tables.summarize_run) keep images without a lesion apart and add, beside the
penalised mean, HD95 over the images where both masks are non-empty.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from medpy.metric.binary import dc, hd95

from sonoseg.data.imageio import lesion_count, read_mask
from sonoseg.errors import SonosegError

METRIC_COLUMNS = [
    "sample_id",
    "dice",
    "hd95_px",
    "hd95_mm",
    "truth_empty",
    "prediction_empty",
    "hd95_policy",
    "truth_lesions",
    "prediction_lesions",
]


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice alone, with the empty-mask policy above (both empty: 1; one empty: 0)."""
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    if not prediction.any() or not truth.any():
        return float(prediction.any() == truth.any())
    return float(dc(prediction, truth))


def dice_hd95(prediction: np.ndarray, truth: np.ndarray, spacing: float | None = None) -> dict:
    """Dice and HD95 (pixels, and mm when a spacing in mm per pixel is given)."""
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    if prediction.shape != truth.shape:
        raise SonosegError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in size")
    pred_empty, truth_empty = not prediction.any(), not truth.any()
    if pred_empty and truth_empty:
        dice, distance, policy = 1.0, 0.0, "both_empty"
    elif pred_empty or truth_empty:
        dice = 0.0
        distance = math.hypot(*truth.shape)
        policy = "penalty_empty_prediction" if pred_empty else "penalty_empty_truth"
    else:
        dice, distance, policy = float(dc(prediction, truth)), float(hd95(prediction, truth)), "medpy"
    return {
        "dice": dice,
        "hd95_px": distance,
        "hd95_mm": distance * spacing if spacing else float("nan"),
        "truth_empty": truth_empty,
        "prediction_empty": pred_empty,
        "hd95_policy": policy,
    }


def evaluate(predictions: str | Path, samples: pd.DataFrame) -> pd.DataFrame:
    """One row per sample in ``samples`` (the test split); a missing prediction is an error. Besides Dice and
    HD95, each mask's lesions (connected regions: ``truth_lesions``, ``prediction_lesions``)."""
    predictions = Path(predictions)
    rows = []
    for row in samples.itertuples():
        path = predictions / f"{row.sample_id}.png"
        if not path.is_file():
            raise SonosegError(f"{path}: prediction missing for test sample {row.sample_id}")
        spacing = float(row.pixel_spacing) if str(row.pixel_spacing) not in ("", "nan") else None
        prediction, truth = read_mask(path, drawn=False).pixels, read_mask(row.mask).pixels
        rows.append(
            {
                "sample_id": row.sample_id,
                **dice_hd95(prediction, truth, spacing),
                # A truth of several lesions against a post-processing that keeps one: where Dice cannot reach 1.
                "truth_lesions": lesion_count(truth),
                "prediction_lesions": lesion_count(prediction),
            }
        )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)
