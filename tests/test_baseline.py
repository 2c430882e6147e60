import cv2
import numpy as np
import pandas as pd
import pytest

from sonoseg import baseline, paper, report, synth
from sonoseg.errors import SonosegError


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def speckled(echo: np.ndarray, seed: int = 0) -> np.ndarray:
    """Grey levels with multiplicative speckle, as RGB uint8 (black outside a scan window)."""
    rng = np.random.default_rng(seed)
    gray = np.clip(echo * rng.exponential(1.0, echo.shape) ** 0.5, 0, 255).astype(np.uint8)
    gray[:15] = 0  # the black band above the scan area
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def test_easy_image_is_segmented_well():
    truth = np.zeros((240, 320), np.uint8)
    cv2.ellipse(truth, (170, 130), (55, 35), 10, 0, 360, 1, -1)
    rgb = speckled(np.where(truth > 0, 35.0, 150.0))
    predicted = baseline.threshold_segment(rgb)
    assert predicted.shape == truth.shape and predicted.dtype == bool
    assert dice(predicted, truth) > 0.85
    count, _ = cv2.connectedComponents(predicted.astype(np.uint8))
    assert count == 2  # one lesion kept (background + one component)


def test_textured_distractor_image_fools_it():
    """A faint lesion under a larger dark layer (like subcutaneous fat): the baseline takes the layer."""
    truth = np.zeros((240, 320), np.uint8)
    cv2.ellipse(truth, (160, 160), (35, 22), 0, 0, 360, 1, -1)
    echo = np.full(truth.shape, 150.0)
    echo[40:90] = 55.0  # a dark tissue layer across the image
    rows = np.arange(truth.shape[0])[:, None]
    echo *= 1 + 0.25 * np.sin(rows / 4.0)  # striated texture
    echo[truth > 0] = 110.0  # a faint hypoechoic lesion
    predicted = baseline.threshold_segment(speckled(echo, seed=1))
    assert dice(predicted, truth) < 0.2


def test_black_background_is_not_a_lesion():
    rgb = speckled(np.full((200, 300), 140.0))
    rgb[:, :40] = 0  # outside a narrow field of view
    predicted = baseline.threshold_segment(rgb)
    assert not predicted[:, :40].any()


def test_default_phantom_keeps_the_baseline_low():
    """Issue 10's floor: the threshold baseline's mean Dice on the default phantom is <= 0.5."""
    scores = []
    for patient in range(24):
        image, mask, _ = synth.render_sample(3, patient, 1 + patient % 2)
        scores.append(dice(baseline.threshold_segment(image), mask > 0))
    assert np.mean(scores) <= 0.5
    assert max(scores) > 0.7  # ... while it does find the obvious lesions


def test_predict_writes_a_mask_per_sample(tmp_path):
    rows = []
    for patient in range(2):
        image, _ = synth.render(0, patient, 1, (96, 128))
        path = tmp_path / f"p{patient}.png"
        cv2.imwrite(str(path), image[:, :, ::-1])
        rows.append({"sample_id": f"s{patient}", "image": str(path)})
    assert baseline.predict("threshold_baseline", pd.DataFrame(rows), tmp_path / "out") == 2
    written = cv2.imread(str(tmp_path / "out" / "s0.png"), cv2.IMREAD_UNCHANGED)
    assert written.shape == (96, 128) and set(np.unique(written)) <= {0, 255}
    with pytest.raises(SonosegError, match="not one of"):
        baseline.predict("magic_baseline", pd.DataFrame(rows), tmp_path / "out")


def test_a_run_without_history_is_summarised_and_tabled(tmp_path):
    metrics = tmp_path / "seed0.csv"
    pd.DataFrame(
        {"dice": [0.2, 0.4], "hd95_px": [30.0, 50.0], "hd95_mm": [np.nan, np.nan], "hd95_policy": ["medpy", "medpy"]}
    ).to_csv(metrics, index=False)
    summary = report.summarize_run(metrics, None)
    assert summary["dice"] == pytest.approx(0.3) and pd.isna(summary["epochs"]) and pd.isna(summary["best_epoch"])
    unet = {**summary, "dice": 0.9, "epochs": 3, "best_epoch": 2}
    runs = pd.DataFrame(
        [{"network": "unet", "seed": 0, **unet}, {"network": "threshold_baseline", "seed": 0, **summary}]
    )
    table = report.network_table(runs, paper.TABLE1, ["unet", "threshold_baseline"])
    row = table.set_index("network").loc["threshold_baseline"]
    assert row["parameters"] == 0 and "beyond the paper" in row["label"] and np.isnan(row["paper_dice_mean"])
    assert list(table["network"]) == ["unet", "threshold_baseline"]
