import hashlib
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from sonoseg.data import synth
from sonoseg.errors import SonosegError

SMALL = (96, 128)


def caliper_pixels(image: np.ndarray) -> np.ndarray:
    """Light-blue pixels: the phantom's grey levels have R = G = B, calipers have blue >> red."""
    return image[:, :, 2].astype(int) - image[:, :, 0] > 60


def test_same_seed_same_bytes():
    a_img, a_mask, a_info = synth.render_sample(7, 3, 1)
    b_img, b_mask, b_info = synth.render_sample(7, 3, 1)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes() and a_info == b_info
    c_img, _ = synth.render(8, 3, 1)
    assert c_img.tobytes() != a_img.tobytes()


def test_images_look_like_the_papers():
    for patient in range(6):
        views = [synth.render_sample(0, patient, v) for v in (1, 2)]
        for image, mask, info in views:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[:2] in synth.ORIGINAL_SIZES
            assert set(np.unique(mask)) <= {0, 255} and mask.any()
            assert info["lesion_area_px"] == int((mask > 0).sum())
        # Both views of a patient share the image size, organ and lesion (one scanner, one lesion).
        assert views[0][0].shape == views[1][0].shape
        assert {k: views[0][2][k] for k in ("organ", "lesion_type", "margin")} == {
            k: views[1][2][k] for k in ("organ", "lesion_type", "margin")
        }


def lesion_vs_surround_db(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean grey inside the mask minus a ring just outside it, in grey levels."""
    import cv2

    lesion = mask > 0
    ring = cv2.dilate(mask, np.ones((25, 25), np.uint8)) > 0
    ring &= ~lesion & (image.sum(axis=2) > 0)
    return float(image[lesion, 0].mean() - image[ring, 0].mean())


def test_lesion_types_behave_acoustically():
    """Cysts and hypoechoic lesions are darker than their surroundings, hyperechoic ones brighter."""
    seen = Counter()
    for patient in range(60):
        image, mask, info = synth.render_sample(1, patient, 1, (216, 323))
        difference = lesion_vs_surround_db(image, mask)
        kind = info["lesion_type"]
        if kind == "anechoic_cyst":
            assert difference < -40, (patient, difference)
        elif kind == "hypoechoic" and info["contrast_db"] < -8:
            assert difference < -10, (patient, difference)
        elif kind == "hyperechoic" and info["contrast_db"] > 4:
            assert difference > 5, (patient, difference)
        else:
            continue
        seen[kind] += 1
    assert set(seen) == {"anechoic_cyst", "hypoechoic", "hyperechoic"}


def test_every_type_organ_and_margin_appears_in_a_348_patient_set():
    """The lesion and organ draws come from the patient's generator alone, so the metadata of the
    full set is known without rendering every image; a sample is rendered to check they agree."""
    counts = {"organ": Counter(), "lesion_type": Counter(), "margin": Counter()}
    options = synth.PhantomOptions()
    difficulty = synth.DIFFICULTIES[options.difficulty]
    for patient in range(348):
        rng = np.random.default_rng([0, patient])
        height, width = synth.ORIGINAL_SIZES[int(rng.integers(len(synth.ORIGINAL_SIZES)))]
        organ = synth._choose(rng, tuple(options.organs), list(options.organs.values()))
        lesion = synth._draw_lesion(rng, height, width, difficulty)
        counts["organ"][organ] += 1
        counts["lesion_type"][lesion.lesion_type] += 1
        counts["margin"][lesion.margin] += 1
        if patient % 50 == 0:
            _, _, info = synth.render_sample(0, patient, 1)
            assert (info["organ"], info["lesion_type"], info["margin"]) == (organ, lesion.lesion_type, lesion.margin)
    assert set(counts["organ"]) == set(synth.ORGANS)
    assert set(counts["lesion_type"]) == set(synth.LESION_TYPES)
    assert set(counts["margin"]) == set(synth.MARGINS)
    assert min(min(c.values()) for c in counts.values()) >= 10, counts


def test_calipers_off_means_no_caliper_pixels():
    options = synth.PhantomOptions(calipers=False)
    for patient in range(8):
        image, _, info = synth.render_sample(0, patient, 1, options=options)
        assert not caliper_pixels(image).any() and info["calipers"] is False
        assert np.array_equal(image[:, :, 0], image[:, :, 2])  # pure grey


def test_without_calipers_the_same_patients_differ_only_where_the_calipers_were():
    """The reliance runs' unmarked images: the phantom drawn without calipers is the same image (same
    anatomy, same speckle, same mask), with only the caliper pixels grey again."""
    for patient in range(6):
        marked, mask, info = synth.render_sample(0, patient, 1)
        plain, plain_mask, _ = synth.render_sample(0, patient, 1, options=synth.PhantomOptions(calipers=False))
        assert np.array_equal(mask, plain_mask)
        changed = (marked != plain).any(axis=2)
        assert info["calipers"] and changed.any()
        # Every changed pixel is coloured in the marked image (the phantom's own pixels are grey: R = B).
        assert not (changed & (marked[:, :, 0] == marked[:, :, 2])).any()


def test_calipers_never_on_the_mask_and_near_the_lesion():
    import cv2

    drawn = 0
    for patient in range(16):
        image, mask, info = synth.render_sample(0, patient, 1 + patient % 2)
        marks = caliper_pixels(image)
        assert info["calipers"] == bool(marks.any())
        if not marks.any():
            continue
        drawn += 1
        assert not (marks & (mask > 0)).any()
        # Every caliper pixel lies within a few marker sizes of the outlined lesion.
        near = cv2.dilate(mask, np.ones((2 * 30 + 1, 2 * 30 + 1), np.uint8)) > 0
        assert (marks <= near).all(), patient
    assert drawn >= 12


def test_difficulty_scales_contrast():
    easy = [abs(synth.render_sample(0, p, 1, SMALL, synth.PhantomOptions("easy"))[2]["contrast_db"]) for p in range(40)]
    hard = [abs(synth.render_sample(0, p, 1, SMALL, synth.PhantomOptions("hard"))[2]["contrast_db"]) for p in range(40)]
    assert np.median(easy) > np.median(hard)


def test_bad_options_are_refused():
    with pytest.raises(SonosegError, match="difficulty"):
        synth.PhantomOptions(difficulty="medium")
    with pytest.raises(SonosegError, match="organs"):
        synth.PhantomOptions(organs={"kidney": 1.0})
    only_liver = synth.PhantomOptions(organs={"liver": 1.0})
    assert {synth.render_sample(0, p, 1, SMALL, only_liver)[2]["organ"] for p in range(5)} == {"liver"}


def test_write_dataset_is_a_folder_dataset(tmp_path):
    synth.write_dataset(tmp_path / "d", patients=3, seed=1, size=SMALL)
    table = pd.read_csv(tmp_path / "d" / "patients.csv")
    assert len(table) == 6 and table["patient"].nunique() == 3
    assert set(synth.METADATA_COLUMNS) <= set(table.columns)
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == sorted(table["image"])
    digest = lambda d: hashlib.sha256(b"".join(p.read_bytes() for p in sorted((d / "images").iterdir()))).hexdigest()
    synth.write_dataset(tmp_path / "e", patients=3, seed=1, size=SMALL)
    assert digest(tmp_path / "d") == digest(tmp_path / "e")


def test_metadata_columns_reach_the_manifest(tmp_path):
    """`sonoseg synth` then `sonoseg ingest`: the phantom's metadata are manifest columns (meta_*)."""
    sonoseg = [sys.executable, "-m", "sonoseg.study.cli"]
    subprocess.run(
        [
            *sonoseg,
            "synth",
            str(tmp_path / "d"),
            "--patients",
            "3",
            "--seed",
            "4",
            "--height",
            "96",
            "--width",
            "128",
            "--calipers",
            "false",
            "--organs",
            '{"breast": 1, "lymph_node": 1}',
        ],
        check=True,
    )
    options = json.dumps({"root": str(tmp_path / "d"), "layout": "folder"})
    subprocess.run([*sonoseg, "ingest", "--options", options, "--out", str(tmp_path / "manifest.csv")], check=True)
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    included = manifest[manifest["status"] == "included"]
    assert len(included) == 6
    for column in synth.METADATA_COLUMNS:
        assert f"meta_{column}" in manifest.columns and included[f"meta_{column}"].notna().all(), column
    assert set(included["meta_organ"]) <= {"breast", "lymph_node"}
    assert not included["meta_calipers"].astype(bool).any()
    assert (included["meta_lesion_area_px"] > 0).all()
