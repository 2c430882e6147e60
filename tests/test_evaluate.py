import math

import numpy as np
import pytest

from sonoseg.analysis import evaluate
from sonoseg.analysis.evaluate import dice_hd95
from sonoseg.serving.infer import keep_one_lesion


def square(size=40, top=10, left=10, side=10):
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_identical_masks():
    result = dice_hd95(square(), square())
    assert result["dice"] == 1.0 and result["hd95_px"] == 0.0 and result["hd95_policy"] == "medpy"


def test_shifted_square_by_hand():
    # 10x10 squares shifted by 2 columns: overlap 80 -> Dice 160/200; every boundary point is at most 2 px away.
    result = dice_hd95(square(left=12), square(left=10))
    assert result["dice"] == pytest.approx(0.8)
    assert result["hd95_px"] == pytest.approx(2.0)


def test_spacing_gives_mm():
    result = dice_hd95(square(left=12), square(left=10), spacing=0.5)
    assert result["hd95_mm"] == pytest.approx(1.0)


def test_both_empty():
    empty = np.zeros((30, 40), bool)
    result = dice_hd95(empty, empty)
    assert (result["dice"], result["hd95_px"], result["hd95_policy"]) == (1.0, 0.0, "both_empty")


@pytest.mark.parametrize("empty_side", ["prediction", "truth"])
def test_one_side_empty_is_penalised_not_nan(empty_side):
    empty, full = np.zeros((30, 40), bool), square(size=40)[:30]
    pred, truth = (empty, full) if empty_side == "prediction" else (full, empty)
    result = dice_hd95(pred, truth)
    assert result["dice"] == 0.0
    assert result["hd95_px"] == pytest.approx(math.hypot(30, 40))
    assert result["hd95_policy"] == f"penalty_empty_{empty_side}"


def test_largest_component_kept_and_holes_filled():
    mask = np.zeros((50, 50), bool)
    mask[5:25, 5:25] = True  # big lesion with a hole
    mask[12:16, 12:16] = False
    mask[40:44, 40:44] = True  # small speck
    out = keep_one_lesion(mask)
    assert out[12:16, 12:16].all(), "hole filled"
    assert not out[40:44, 40:44].any(), "small component removed"
    assert out.sum() == 400


def test_contour_points_rule_prefers_the_longer_outline():
    mask = np.zeros((60, 60), bool)
    mask[5:25, 5:25] = True  # area 400, outline ~76 points
    mask[40:42, 2:58] = True  # area 112, outline ~110 points
    assert keep_one_lesion(mask, "area")[10, 10]
    kept = keep_one_lesion(mask, "contour_points")
    assert kept[41, 30] and not kept[10, 10]


def test_empty_prediction_stays_empty():
    assert not keep_one_lesion(np.zeros((10, 10), bool)).any()


def test_each_masks_lesions_are_counted_beside_its_scores(tmp_path):
    """A truth of two lesions scored against a post-processing that keeps one: Dice cannot reach 1 there, and
    the long table now says which images those are."""
    import cv2
    import pandas as pd

    truth = np.zeros((40, 60), np.uint8)
    truth[5:15, 5:15] = 255
    truth[20:30, 40:50] = 255
    kept = truth.copy()
    kept[20:30, 40:50] = 0  # the perfect prediction, after keeping one component
    cv2.imwrite(str(tmp_path / "truth.png"), truth)
    (tmp_path / "predictions").mkdir()
    cv2.imwrite(str(tmp_path / "predictions" / "s1.png"), kept)
    samples = pd.DataFrame([{"sample_id": "s1", "mask": str(tmp_path / "truth.png"), "pixel_spacing": ""}])
    row = evaluate.evaluate(tmp_path / "predictions", samples).iloc[0]
    assert (row["truth_lesions"], row["prediction_lesions"]) == (2, 1)
    assert row["dice"] == pytest.approx(2 / 3)
