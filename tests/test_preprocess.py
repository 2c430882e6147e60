"""Resizing to the network input: preprocess.interpolation, recorded in the cache and the model file."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from sonoseg.data import preprocess
from sonoseg.errors import SonosegError
from sonoseg.study import cli


def speckle(height: int = 432, width: int = 646) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_area_averages_what_bilinear_skips():
    # Pure speckle shrunk ~20x: area averages ~270 pixels per output pixel, bilinear blends at most 4.
    image = speckle()
    area = preprocess.resize_image(image, 32, "area").astype(float)
    bilinear = preprocess.resize_image(image, 32, "bilinear").astype(float)
    assert area.shape == bilinear.shape == (32, 32, 3)
    assert area.std() < 0.25 * bilinear.std()
    assert np.array_equal(preprocess.resize_image(image, 32), bilinear)  # the default is the paper's
    # A flat image is flat either way.
    flat = np.full((432, 646, 3), 77, np.uint8)
    assert (preprocess.resize_image(flat, 32, "area") == 77).all()


def test_mask_is_resized_like_its_image():
    mask = np.zeros((432, 646), np.uint8)
    cv2.ellipse(mask, (300, 200), (120, 70), 15, 0, 360, 1, -1)
    for interpolation in preprocess.INTERPOLATIONS:
        image, small = preprocess.resize_sample(np.dstack([mask * 200] * 3), mask, 32, interpolation)
        assert set(np.unique(small)) == {0, 1}
        # The lesion keeps its share of the picture (within the 32 x 32 grid's rounding).
        assert abs(small.mean() - mask.mean()) < 0.02
        assert np.array_equal(image[..., 0] > 100, small.astype(bool))  # the same resampling for both


def test_cache_records_its_interpolation(tmp_path):
    rows = []
    for i in range(2):
        image_path, mask_path = tmp_path / f"i{i}.png", tmp_path / f"m{i}.png"
        cv2.imwrite(str(image_path), speckle(120, 200))
        mask = np.zeros((120, 200), np.uint8)
        mask[30:80, 50:120] = 255
        cv2.imwrite(str(mask_path), mask)
        rows.append({"sample_id": f"s{i}", "image": str(image_path), "mask": str(mask_path)})
    samples = pd.DataFrame(rows)
    for interpolation in ("area", "bilinear"):
        path = tmp_path / f"{interpolation}.npz"
        preprocess.build_cache(samples, 32, path, interpolation)
        arrays = preprocess.load_cache(path)
        assert preprocess.cache_interpolation(arrays) == interpolation
    area, bilinear = (preprocess.load_cache(tmp_path / f"{k}.npz")["images"] for k in ("area", "bilinear"))
    assert not np.array_equal(area, bilinear)
    # A cache written before the option existed was resized bilinearly.
    assert preprocess.cache_interpolation({"images": area}) == "bilinear"
    with pytest.raises(SonosegError, match="preprocess.interpolation: 'cubic'"):
        preprocess.build_cache(samples, 32, tmp_path / "x.npz", "cubic")


def test_a_caches_content_digest_leaves_out_only_the_datasets_fingerprint(tmp_path):
    """What a training's fingerprint reads of its caches: a cache made from another version of the dataset with
    the same images and masks is the same; a changed mask pixel, order, interpolation or marks is not."""
    rows = []
    for i in range(3):
        image_path, mask_path = tmp_path / f"i{i}.png", tmp_path / f"m{i}.png"
        cv2.imwrite(str(image_path), speckle(120, 200))
        mask = np.zeros((120, 200), np.uint8)
        mask[30 + i : 80, 50:120] = 255
        cv2.imwrite(str(mask_path), mask)
        rows.append({"sample_id": f"s{i}", "image": str(image_path), "mask": str(mask_path)})
    samples = pd.DataFrame(rows)

    def digest(name: str, samples=samples, **options) -> str:
        preprocess.build_cache(samples, 32, tmp_path / f"{name}.npz", **{"interpolation": "area", **options})
        return preprocess.cache_content_digest(tmp_path / f"{name}.npz")

    made = digest("made", dataset_fingerprint="A")
    assert digest("again", dataset_fingerprint="B") == made
    assert (tmp_path / "made.npz").read_bytes() != (tmp_path / "again.npz").read_bytes()
    renamed = samples.assign(sample_id=["a", "b", "c"])  # ids no training reads
    assert digest("renamed", renamed, dataset_fingerprint="A") == made
    assert digest("reordered", samples.iloc[::-1].reset_index(drop=True), dataset_fingerprint="A") != made
    assert digest("bilinear", interpolation="bilinear", dataset_fingerprint="A") != made
    assert digest("inpainted", marks="inpaint", dataset_fingerprint="A") != made
    mask = cv2.imread(rows[1]["mask"], cv2.IMREAD_GRAYSCALE)
    mask[100:120, 0:40] = 255  # an annotator's correction, as the caches see it at 32 px
    cv2.imwrite(rows[1]["mask"], mask)
    assert digest("corrected", dataset_fingerprint="A") != made
    # Two caches read in order: training and validation are not interchangeable.
    assert preprocess.cache_content_digest(tmp_path / "made.npz", tmp_path / "corrected.npz") != (
        preprocess.cache_content_digest(tmp_path / "corrected.npz", tmp_path / "made.npz")
    )


def test_the_schema_and_the_modules_agree_on_the_choices():
    """The data stage names its choices once (sonoseg.data.options): the schema repeats them (it cannot
    import Python), preprocess maps each interpolation to OpenCV and describes it for the export."""
    import yaml

    from sonoseg.data import options

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    interpolation = schema["properties"]["preprocess"]["properties"]["interpolation"]
    assert (
        tuple(interpolation["enum"]) == options.INTERPOLATIONS and interpolation["default"] == options.INTERPOLATIONS[0]
    )
    assert set(preprocess.INTERPOLATION_FLAGS) == set(preprocess.INTERPOLATION_MEANING) == set(options.INTERPOLATIONS)
    marks = schema["properties"]["preprocess"]["properties"]["marks"]
    assert tuple(marks["enum"]) == options.MARKS and marks["default"] == options.MARKS[0]
    # The command line reads the same tuples, without importing OpenCV or torch.
    assert cli.INTERPOLATIONS is options.INTERPOLATIONS and cli.MARKS is options.MARKS


def test_a_lesion_that_vanishes_at_the_input_size_is_named(tmp_path, caplog):
    """A 3 x 3-pixel lesion covers under half of every pixel of a 32-px input: the cache holds no lesion, and
    the network learned the image as one without a lesion, while the log said only "cached N images"."""
    rows = []
    for i, (top, side) in enumerate(((30, 50), (50, 3), (0, 0))):  # a large lesion, a tiny one, none
        image_path, mask_path = tmp_path / f"i{i}.png", tmp_path / f"m{i}.png"
        cv2.imwrite(str(image_path), speckle(120, 200))
        mask = np.zeros((120, 200), np.uint8)
        mask[top : top + side, top : top + side] = 255
        cv2.imwrite(str(mask_path), mask)
        rows.append({"sample_id": f"s{i}", "image": str(image_path), "mask": str(mask_path)})
    with caplog.at_level("WARNING", logger="sonoseg.data.preprocess"):
        preprocess.build_cache(pd.DataFrame(rows), 32, tmp_path / "c.npz", "area")
    masks = preprocess.load_cache(tmp_path / "c.npz")["masks"]
    assert masks[0].any() and not masks[1].any() and not masks[2].any()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("1 of 3 images: the lesion vanishes at 32x32") and warning.count("s1") == 1
    assert "s2" not in warning  # an image without a lesion loses none
