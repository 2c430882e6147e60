import cv2
import numpy as np
import pandas as pd
import pytest

from sonoseg.analysis import paper, tables
from sonoseg.data import marks, synth
from sonoseg.errors import SonosegError
from sonoseg.networks import baseline, catalog


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


def with_calipers(points, shape=(300, 400), colour=(255, 255, 0), seed=0) -> np.ndarray:
    image = speckled(np.full(shape, 130.0), seed)
    for x, y in points:
        cv2.drawMarker(image, (int(x), int(y)), colour, cv2.MARKER_CROSS, 11, 1)
    return image


def ellipse_mask(shape, centre, axes, angle) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), angle, 0, 360, 1, -1)
    return mask > 0


def test_caliper_reader_two_marks_give_the_ellipse_between_them():
    image = with_calipers([(120, 150), (280, 150)])
    truth = ellipse_mask((300, 400), (200, 150), (80, 80 * baseline.MINOR_RATIO), 0)
    predicted = baseline.caliper_segment(image)
    assert predicted.dtype == bool and predicted.shape == (300, 400)
    assert dice(predicted, truth) > 0.97
    # A tilted pair: the major axis follows the line joining the marks.
    image = with_calipers([(130, 90), (270, 210)])
    length = np.hypot(140, 120) / 2
    truth = ellipse_mask(
        (300, 400), (200, 150), (length, length * baseline.MINOR_RATIO), np.degrees(np.arctan2(120, 140))
    )
    assert dice(baseline.caliper_segment(image), truth) > 0.95


def test_caliper_reader_four_marks_give_two_diameters():
    # A lateral pair and a depth pair, in scrambled order: the ellipse with those two axes.
    image = with_calipers([(200, 95), (110, 150), (200, 205), (290, 150)])
    truth = ellipse_mask((300, 400), (200, 150), (90, 55), 0)
    assert dice(baseline.caliper_segment(image), truth) > 0.97
    # Three marks: the third is one end of the minor diameter, mirrored for the other.
    image = with_calipers([(110, 150), (290, 150), (200, 95)])
    assert dice(baseline.caliper_segment(image), truth) > 0.97
    # The outline goes through every mark.
    outline = baseline.caliper_outline([(110, 150), (290, 150), (200, 80), (200, 190)])
    for point in [(110, 150), (290, 150), (200, 80), (200, 190)]:
        assert np.min(np.hypot(*(outline - point).T)) < 1e-6


def test_caliper_reader_without_marks_is_empty():
    assert not baseline.caliper_segment(speckled(np.full((200, 300), 130.0))).any()
    assert not baseline.caliper_segment(with_calipers([(150, 100)])).any()  # one mark bounds nothing
    image = speckled(np.full((200, 300), 130.0))
    cv2.putText(image, "D1 1.2cm", (10, 190), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    assert not baseline.caliper_segment(image).any()  # coloured text is not a caliper
    assert baseline.caliper_outline([]) is None and baseline.caliper_outline([(1.0, 2.0)]) is None
    with pytest.raises(SonosegError, match="caliper_reader: expected an RGB uint8"):
        baseline.caliper_segment(np.zeros((20, 20), np.uint8))


def test_caliper_reader_five_marks_fit_an_ellipse():
    angles = np.radians([0, 70, 150, 210, 290])
    points = [(200 + 90 * np.cos(a), 150 + 55 * np.sin(a)) for a in angles]
    truth = ellipse_mask((300, 400), (200, 150), (90, 55), 0)
    assert len(marks.caliper_centres(with_calipers(points))) == 5
    assert dice(baseline.caliper_segment(with_calipers(points)), truth) > 0.95


def test_caliper_reader_reads_the_phantoms_calipers():
    """The phantom's calipers sit just outside the lesion's extent: reading them is most of the
    answer (docs/marks_and_floors.md: mean Dice 0.853 on 60 images, seed 5). Here 8 images."""
    scores = []
    for patient in range(4):
        for view in (1, 2):
            image, mask, info = synth.render_sample(5, patient, view)
            assert info["calipers"]
            scores.append(dice(baseline.caliper_segment(image), mask > 0))
    assert np.mean(scores) > 0.75 and min(scores) > 0.5
    image, mask = synth.render(5, 0, 1, options=synth.PhantomOptions(calipers=False))
    assert not baseline.caliper_segment(image).any()


def disk(shape, centre, radius) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, centre, radius, 1, -1)
    return mask > 0


def test_position_prior_of_identical_masks_is_that_mask():
    masks = [disk((200, 300), (180, 90), 40)] * 5
    prior = baseline.PositionPrior.fit(masks)
    assert prior.prior.shape == baseline.PRIOR_SIZE
    assert dice(prior.segment(200, 300), masks[0]) > 0.97
    # In coordinates relative to the image: a test image twice the size gets the disk scaled.
    scaled = np.zeros((400, 600), np.uint8)
    cv2.ellipse(scaled, (360, 180), (80, 80), 0, 0, 360, 1, -1)
    assert dice(prior.segment(400, 600), scaled > 0) > 0.97
    # Training masks of other sizes are resized first: the same relative disk.
    prior = baseline.PositionPrior.fit([masks[0], disk((100, 150), (90, 45), 20)])
    assert dice(prior.segment(200, 300), masks[0]) > 0.95


def test_position_prior_threshold_rules():
    """The area rule keeps the region whose area is closest to the training masks' mean area; a
    fixed threshold keeps the pixels >= it."""
    shape, centre = (256, 256), (128, 128)
    # Disks of one radius, shifted: the prior ramps down at the edges and the area can be matched.
    shifted = [disk(shape, (118 + 4 * i, 128), 30) for i in range(6)]
    by_area = baseline.PositionPrior.fit(shifted).segment(*shape)
    assert abs(by_area.sum() - shifted[0].sum()) / shifted[0].sum() < 0.05
    # Nested disks of radius 20, 40, 60: the prior is 1, 2/3 and 1/3 in the three rings; the mean
    # area (that of radius 43) is nearest the 2/3 plateau's region, the disk of radius 40.
    masks = [disk(shape, centre, r) for r in (20, 40, 60)]
    assert dice(baseline.PositionPrior.fit(masks).segment(*shape), masks[1]) > 0.97
    assert dice(baseline.PositionPrior.fit(masks, threshold=0.83).segment(*shape), masks[0]) > 0.95  # 1 > 0.83 > 2/3
    assert dice(baseline.PositionPrior.fit(masks, threshold=0.17).segment(*shape), masks[2]) > 0.97  # 1/3 > 0.17 > 0
    # Masks that never overlap much: the 0.5 rule keeps nothing; the area rule still keeps a region.
    scattered = [disk(shape, (50 + 52 * i, 128), 25) for i in range(4)]  # disjoint: the prior is <= 1/4
    assert not baseline.PositionPrior.fit(scattered, threshold=0.5).segment(*shape).any()
    assert baseline.PositionPrior.fit(scattered).segment(*shape).sum() > 0.5 * scattered[0].sum()
    with pytest.raises(SonosegError, match="neither 'area' nor a number"):
        baseline.PositionPrior.fit(masks, threshold="median")
    with pytest.raises(SonosegError, match=r"in \(0, 1\]"):
        baseline.PositionPrior.fit(masks, threshold=0)
    with pytest.raises(SonosegError, match="no training masks"):
        baseline.PositionPrior.fit([])
    with pytest.raises(SonosegError, match="every training mask is empty"):
        baseline.PositionPrior.fit([np.zeros(shape, bool)])


def phantom_samples(tmp_path, patients, prefix, size=(96, 128)) -> pd.DataFrame:
    rows = []
    for patient in patients:
        image, mask = synth.render(0, patient, 1, size)
        image_path, mask_path = tmp_path / f"{prefix}{patient}.png", tmp_path / f"{prefix}{patient}_mask.png"
        cv2.imwrite(str(image_path), image[:, :, ::-1])
        cv2.imwrite(str(mask_path), mask)
        rows.append({"sample_id": f"{prefix}{patient}", "image": str(image_path), "mask": str(mask_path)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", baseline.BASELINES)
def test_every_baseline_predicts_one_png_per_sample(tmp_path, name):
    train = phantom_samples(tmp_path, range(4), "train")
    test = phantom_samples(tmp_path, range(4, 7), "test")
    outdir = tmp_path / name
    assert baseline.predict(name, test, outdir, train_samples=train) == 3
    assert sorted(p.name for p in outdir.iterdir()) == ["test4.png", "test5.png", "test6.png"]
    for path in outdir.iterdir():
        written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert written.shape == (96, 128) and set(np.unique(written)) <= {0, 255}
    expected = "reference" if name == "caliper_reader" else "floor"  # the calipers are drawn from the mask
    assert catalog.entry(name).family == expected and "beyond the paper" in catalog.label(name)


def test_the_position_prior_needs_the_training_samples(tmp_path):
    test = phantom_samples(tmp_path, range(2), "test")
    with pytest.raises(SonosegError, match="position_prior is fitted on the training samples: pass train_samples"):
        baseline.predict("position_prior", test, tmp_path / "out")
    with pytest.raises(SonosegError, match="no 'mask' column"):
        baseline.predict("position_prior", test, tmp_path / "out", train_samples=test[["sample_id", "image"]])
    with pytest.raises(SonosegError, match="training samples are empty"):
        baseline.predict("position_prior", test, tmp_path / "out", train_samples=test.iloc[:0])
    broken = test.assign(mask=str(tmp_path / "missing.png"))
    with pytest.raises(SonosegError, match="missing.png"):
        baseline.predict("position_prior", test, tmp_path / "out", train_samples=broken)
    # The others need no training samples (and ignore them when given).
    assert baseline.predict("caliper_reader", test, tmp_path / "out") == 2


def test_threshold_baseline_predictions_do_not_depend_on_training_samples(tmp_path):
    test = phantom_samples(tmp_path, range(2), "test")
    baseline.predict("threshold_baseline", test, tmp_path / "a")
    baseline.predict("threshold_baseline", test, tmp_path / "b", train_samples=test)
    for row in test.itertuples():
        a = cv2.imread(str(tmp_path / "a" / f"{row.sample_id}.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "b" / f"{row.sample_id}.png"), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(row.image)[:, :, ::-1].copy()
        assert np.array_equal(a, b) and np.array_equal(a > 0, baseline.threshold_segment(image))


def test_a_run_without_history_is_summarised_and_tabled(tmp_path):
    metrics = tmp_path / "seed0.csv"
    pd.DataFrame(
        {
            "sample_id": ["s0", "s1"],  # as evaluate writes every metrics file: read_metrics needs it
            "dice": [0.2, 0.4],
            "hd95_px": [30.0, 50.0],
            "hd95_mm": [np.nan, np.nan],
            "hd95_policy": ["medpy", "medpy"],
        }
    ).to_csv(metrics, index=False)
    summary = tables.summarize_run(metrics, None)
    assert summary["dice"] == pytest.approx(0.3) and pd.isna(summary["epochs"]) and pd.isna(summary["best_epoch"])
    unet = {**summary, "dice": 0.9, "epochs": 3, "best_epoch": 2}
    runs = pd.DataFrame(
        [
            {"network": "unet", "seed": 0, **unet, "parameters": 1000},
            {"network": "threshold_baseline", "seed": 0, **summary, "parameters": baseline.PARAMETERS},
        ]
    )
    table = tables.network_table(runs, paper.TABLE1, ["unet", "threshold_baseline"])
    row = table.set_index("network").loc["threshold_baseline"]
    assert row["parameters"] == 0 and "beyond the paper" in row["label"] and np.isnan(row["paper_dice_mean"])
    assert list(table["network"]) == ["unet", "threshold_baseline"]


def test_the_combined_cue_floor_is_fitted_on_the_training_masks_only(tmp_path):
    """dark_in_prior: the dark region inside the training prior's window. Its test predictions depend
    on the training masks and never on the test images' own masks."""
    train = phantom_samples(tmp_path, range(6), "train")
    test = phantom_samples(tmp_path, range(6, 9), "test")

    def predicted(train_samples, test_samples, name):
        outdir = tmp_path / name
        baseline.predict("dark_in_prior", test_samples, outdir, train_samples=train_samples)
        return {p.name: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(outdir.iterdir())}

    first = predicted(train, test, "first")
    # The test masks blanked: nothing changes (they are never read).
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((96, 128), np.uint8))
    same = predicted(train, test.assign(mask=str(blank)), "blank")
    assert all(np.array_equal(first[k], same[k]) for k in first)
    # The training masks moved to one corner: the window moves, and so do the predictions.
    corner = np.zeros((96, 128), np.uint8)
    corner[:24, :32] = 255
    cv2.imwrite(str(tmp_path / "corner.png"), corner)
    moved = predicted(train.assign(mask=str(tmp_path / "corner.png")), test, "moved")
    assert any(not np.array_equal(first[k], moved[k]) for k in first)
    for mask in moved.values():  # inside the corner window, or the prior's own region there
        assert not mask[48:, 64:].any()


def test_dark_in_prior_keeps_the_dark_region_inside_the_window_only():
    prior = baseline.PositionPrior.fit([np.pad(np.ones((20, 20), bool), ((40, 40), (60, 48)))], size=(100, 128))
    dark = np.zeros((100, 128), bool)
    dark[45:55, 65:75] = True  # inside the window
    dark[5:30, 5:30] = True  # a larger dark area outside it
    kept = prior.dark_in_window(dark)
    assert kept[50, 70] and not kept[10, 10]
    # No dark pixel in the window: the prior's own region.
    outside = np.zeros((100, 128), bool)
    outside[5:30, 5:30] = True
    assert np.array_equal(prior.dark_in_window(outside), prior.segment(100, 128))
