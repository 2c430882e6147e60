"""Ingest and the integrity check: every bad case, under both policies, on trees built here."""

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import unicodedata
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from sonoseg import data
from sonoseg.data import duplicates, imageio, layouts, synth
from sonoseg.errors import SonosegError
from sonoseg.serving import image_warnings


def write(path: Path, pixels: np.ndarray, ext: str = ".png") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(ext, pixels)
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def lesion_pair(seed: int, size=(64, 96)):
    image, mask = synth.render(seed, 0, 1, size)
    return image[:, :, ::-1].copy(), mask  # BGR for cv2 writing


def build_bad_folder(root: Path) -> dict[str, str]:
    """A folder dataset with one file per bad case; returns file name -> expected outcome keyword."""
    images, masks = root / "images", root / "masks"
    for i in range(4):
        image, mask = lesion_pair(i)
        write(images / f"good{i}.png", image)
        write(masks / f"good{i}.png", mask)
    image, mask = lesion_pair(10)
    write(images / "no_mask.png", image)
    write(masks / "no_image.png", mask)
    write(images / "zero.png", image)
    (images / "zero.png").write_bytes(b"")
    write(masks / "zero.png", mask)
    write(images / "truncated.png", image)
    (images / "truncated.png").write_bytes((images / "truncated.png").read_bytes()[:200])
    write(masks / "truncated.png", mask)
    (images / "garbage.png").write_text("this is not an image")
    write(masks / "garbage.png", mask)
    write(images / "size_mismatch.png", image)
    write(masks / "size_mismatch.png", cv2.resize(mask, (50, 40), interpolation=cv2.INTER_NEAREST))
    (root / "README.txt").write_text("notes")
    # Allowed, flagged: JPEG mask (non-binary values), empty mask, 16-bit, grayscale, RGBA images.
    write(images / "jpeg_mask.png", image)
    write(masks / "jpeg_mask.jpg", mask, ".jpg")
    write(images / "empty_mask.png", lesion_pair(11)[0])
    write(masks / "empty_mask.png", np.zeros_like(mask))
    write(images / "sixteen.png", lesion_pair(12)[0].astype(np.uint16) * 257)
    write(masks / "sixteen.png", lesion_pair(12)[1])
    write(images / "gray.png", cv2.cvtColor(lesion_pair(13)[0], cv2.COLOR_BGR2GRAY))
    write(masks / "gray.png", lesion_pair(13)[1])
    write(images / "rgba.png", cv2.cvtColor(lesion_pair(14)[0], cv2.COLOR_BGR2BGRA))
    write(masks / "rgba.png", lesion_pair(14)[1])
    # Duplicates: identical pixels under another name, and a near-duplicate (slightly brightened).
    write(images / "dup_exact.png", lesion_pair(0)[0])
    write(masks / "dup_exact.png", lesion_pair(0)[1])
    write(images / "dup_near.png", np.clip(lesion_pair(1)[0].astype(int) + 3, 0, 255).astype(np.uint8))
    write(masks / "dup_near.png", lesion_pair(1)[1])
    return {
        "no_mask.png": "image without mask",
        "no_image.png": "mask without image",
        "zero.png": "empty file",
        "truncated.png": "truncated PNG",
        "garbage.png": "not a readable image",
        "size_mismatch.png": "size_mismatch.png is 50x40 (width x height, pixels)",
    }


PROBLEMS_TOTAL = 6


def test_fail_lists_every_problem_at_once(tmp_path):
    expected = build_bad_folder(tmp_path)
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder", on_bad_sample="fail")
    message = str(error.value)
    assert f"{PROBLEMS_TOTAL} problem(s)" in message
    for name, keyword in expected.items():
        line = next(text for text in message.splitlines() if name in text)
        assert keyword in line, (name, line)


def test_exclude_accounts_for_every_file(tmp_path):
    expected = build_bad_folder(tmp_path)
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    every_file = {str(p.resolve()) for p in tmp_path.rglob("*") if p.is_file()}
    listed = set(manifest["image"]) | {m for cell in manifest["mask"] for m in str(cell).split("|") if m}
    assert every_file <= listed
    by_name = {Path(p).name: row for p, row in zip(manifest["image"], manifest.to_dict("records"))}
    for name, keyword in expected.items():
        assert by_name[name]["status"] == "excluded" and keyword in by_name[name]["reason"], name
    assert by_name["README.txt"]["status"] == "ignored"
    flags = {name: row["flags"] for name, row in by_name.items()}
    assert "mask_thresholded" in flags["jpeg_mask.png"]
    assert "empty_mask" in flags["empty_mask.png"]
    assert "converted_16bit" in flags["sixteen.png"]
    assert "converted_grayscale" in flags["gray.png"]
    assert "converted_rgba" in flags["rgba.png"]
    # The later file (by path) names the earlier one as its twin.
    assert "duplicate_of:images__dup_exact" in flags["good0.png"]
    assert "near_duplicate_of:images__dup_near" in flags["good1.png"]
    # Duplicates share a split group with their twin.
    assert by_name["dup_exact.png"]["group"] == by_name["good0.png"]["group"]
    assert by_name["dup_near.png"]["group"] == by_name["good1.png"]["group"]
    assert by_name["good2.png"]["group"] != by_name["good3.png"]["group"]
    assert set(manifest.loc[manifest["status"] == "included", "sample_id"]) >= {"images__good0", "images__sixteen"}


def test_symlink_leaving_the_root_is_refused(tmp_path):
    root = tmp_path / "data"
    image, mask = lesion_pair(0)
    write(root / "images" / "a.png", image)
    write(root / "masks" / "a.png", mask)
    write(tmp_path / "outside.png", image)
    os.symlink(tmp_path / "outside.png", root / "images" / "link.png")
    with pytest.raises(SonosegError, match="symbolic link leaves the dataset root"):
        data.ingest(root, "folder")
    manifest = data.ingest(root, "folder", on_bad_sample="exclude")
    row = manifest[manifest["image"].str.endswith("link.png")].iloc[0]
    assert row["status"] == "excluded"


def test_csv_paths_outside_the_root_are_refused(tmp_path):
    image, mask = lesion_pair(0)
    write(tmp_path / "images" / "a.png", image)
    write(tmp_path / "masks" / "a.png", mask)
    pd.DataFrame([{"image": "../elsewhere/a.png", "mask": "masks/a.png", "patient": "p"}]).to_csv(
        tmp_path / "list.csv", index=False
    )
    with pytest.raises(SonosegError, match="outside the dataset root"):
        data.ingest(tmp_path, "folder", dataset_csv="list.csv")


def test_explicit_csv_and_patients(tmp_path):
    for i in range(3):
        image, mask = lesion_pair(i)
        write(tmp_path / "scans" / f"s{i}.png", image)
        write(tmp_path / "labels" / f"s{i}_label.png", mask)
    pd.DataFrame(
        [
            {
                "image": f"scans/s{i}.png",
                "mask": f"labels/s{i}_label.png",
                "patient": "A" if i < 2 else "B",
                "view": i,
                "spacing": 0.1,
            }
            for i in range(3)
        ]
    ).to_csv(tmp_path / "list.csv", index=False)
    manifest = data.ingest(tmp_path, "folder", dataset_csv="list.csv", pixel_spacing="spacing")
    samples = data.included(manifest)
    assert len(samples) == 3 and samples["patient"].tolist() == ["A", "A", "B"]
    assert samples["pixel_spacing"].astype(float).tolist() == [0.1] * 3


def build_busi(root: Path):
    for label, count in (("benign", 3), ("malignant", 2), ("normal", 2)):
        for i in range(1, count + 1):
            image, mask = lesion_pair(zlib.crc32(f"{label}{i}".encode()) % 1000)
            if label == "normal":
                mask = np.zeros_like(mask)
            write(root / label / f"{label} ({i}).png", image)
            write(root / label / f"{label} ({i})_mask.png", mask)
    # A second lesion of benign (2), and a duplicate of benign (1) filed under malignant.
    second = np.zeros((64, 96), np.uint8)
    second[5:15, 5:15] = 255
    write(root / "benign" / "benign (2)_mask_1.png", second)
    image, mask = lesion_pair(zlib.crc32(b"benign1") % 1000)
    write(root / "malignant" / "malignant (3).png", image)
    write(root / "malignant" / "malignant (3)_mask.png", mask)


def test_busi_layout(tmp_path):
    build_busi(tmp_path)
    manifest = data.ingest(tmp_path, "busi", include_normal=True)
    samples = data.included(manifest).set_index("sample_id")
    assert len(samples) == 8
    assert samples.loc["benign__benign_1", "class"] == "benign"
    assert "merged_masks:2" in samples.loc["benign__benign_2", "flags"]
    assert samples.loc["benign__benign_2", "mask"].count("|") == 1
    assert "empty_mask" in samples.loc["normal__normal_1", "flags"]
    assert samples.loc["malignant__malignant_3", "group"] == samples.loc["benign__benign_1", "group"]
    assert "duplicate_of:benign__benign_1" in samples.loc["malignant__malignant_3", "flags"]
    # The copy is filed under another class than its twin: flagged (its mask is the same: no mask flag).
    flags = samples.loc["malignant__malignant_3", "flags"]
    assert "duplicate_class_differs:benign__benign_1(benign/malignant)" in flags
    assert "duplicate_mask_differs" not in flags


def test_duplicates_whose_labels_disagree_are_flagged_and_named_in_the_log(tmp_path, caplog):
    """A probe's copy of an image with another mask was flagged duplicate_of alone, and both masks were scored
    as truths without a word."""
    for i in range(3):
        image, mask = lesion_pair(20 + i)
        write(tmp_path / "images" / f"s{i}.png", image)
        write(tmp_path / "masks" / f"s{i}.png", mask)
    image, mask = lesion_pair(20)
    write(tmp_path / "images" / "s0_copy.png", image)
    write(tmp_path / "masks" / "s0_copy.png", np.roll(mask, 6, axis=1))  # the same scan, another outline
    image, mask = lesion_pair(21)
    write(tmp_path / "images" / "s1_copy.png", image)
    write(tmp_path / "masks" / "s1_copy.png", mask)  # an agreeing copy
    with caplog.at_level("WARNING", logger="sonoseg.data.manifest"):
        manifest = data.ingest(tmp_path, "folder").set_index("sample_id")
    assert "duplicate_mask_differs:images__s0" in manifest.loc["images__s0_copy", "flags"]
    assert "duplicate_mask_differs" not in manifest.loc["images__s1_copy", "flags"]
    assert manifest.loc["images__s0_copy", "status"] == "included"  # kept: which outline is right is the user's call
    (warning,) = [r.getMessage() for r in caplog.records if "disagree" in r.getMessage()]
    assert warning.startswith("1 duplicate image(s) disagree with their twin") and "images__s0_copy" in warning


def test_busi_normal_images_are_left_out_by_default(tmp_path):
    """The paper has one lesion per image: BUSI's normal/ images (empty masks) are excluded unless asked for."""
    build_busi(tmp_path)
    manifest = data.ingest(tmp_path, "busi")
    assert len(data.included(manifest)) == 6
    normal_rows = manifest[manifest["class"] == "normal"]
    assert (normal_rows["status"] == "excluded").all() and len(normal_rows) == 2
    assert normal_rows["reason"].str.contains("include_normal: false").all()


def test_busi_mask_suffix_in_capitals(tmp_path):
    """NAME_MASK.png and NAME_Mask_1.png are masks too, not images without masks."""
    build_busi(tmp_path)
    first, second = lesion_pair(20), lesion_pair(21)[1]
    write(tmp_path / "benign" / "benign (9).png", first[0])
    write(tmp_path / "benign" / "benign (9)_MASK.png", first[1])
    write(tmp_path / "benign" / "benign (9)_Mask_1.png", second)
    samples = data.included(data.ingest(tmp_path, "busi")).set_index("sample_id")
    assert "merged_masks:2" in samples.loc["benign__benign_9", "flags"]


BUSI_CLASSES_WARNING = "BUSI's classes are benign, malignant and normal"


def build_busi_capitalised(root: Path):
    """build_busi's tree with its class folders renamed Benign/ Malignant/ Normal/."""
    build_busi(root)
    for label in ("benign", "malignant", "normal"):
        (root / label).rename(root / label.capitalize())


def test_busi_class_folders_in_capitals_are_its_classes(tmp_path, caplog):
    """Benign/ Malignant/ Normal/, as some copies of BUSI name them: its classes, lower-case; Normal/ left out."""
    build_busi_capitalised(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sonoseg.data.layouts"):
        manifest = data.ingest(tmp_path, "busi")
    assert sorted(manifest["class"].unique()) == ["benign", "malignant", "normal"]
    normal = manifest[manifest["class"] == "normal"]
    assert len(normal) == 2 and (normal["status"] == "excluded").all()
    assert normal["reason"].str.contains("include_normal: false").all()
    assert len(data.included(manifest)) == 6
    assert not [r for r in caplog.records if BUSI_CLASSES_WARNING in r.getMessage()]


def test_busi_normal_folder_in_capitals_is_included_when_asked_for(tmp_path):
    build_busi_capitalised(tmp_path)
    samples = data.included(data.ingest(tmp_path, "busi", include_normal=True))
    assert len(samples) == 8
    assert (samples["class"] == "normal").sum() == 2


def test_busi_other_folder_is_a_class_of_its_own_warned_of_once(tmp_path, caplog):
    """A folder other than benign/ malignant/ normal/ (any case) keeps its name as the class, with one warning."""
    build_busi(tmp_path)
    (tmp_path / "malignant").rename(tmp_path / "Suspicious")
    with caplog.at_level(logging.WARNING, logger="sonoseg.data.layouts"):
        manifest = data.ingest(tmp_path, "busi")
    suspicious = data.included(manifest)[lambda frame: frame["image"].str.contains("Suspicious")]
    assert len(suspicious) == 3 and (suspicious["class"] == "Suspicious").all()
    warned = [r.getMessage() for r in caplog.records if BUSI_CLASSES_WARNING in r.getMessage()]
    assert warned == [f"{BUSI_CLASSES_WARNING}; folder Suspicious taken as a class of its own"]
    assert [r.levelname for r in caplog.records if BUSI_CLASSES_WARNING in r.getMessage()] == ["WARNING"]


def test_busi_images_in_sub_folders_take_their_class_folders_class(tmp_path, caplog):
    """A probe's malignant/patient 07/ images became a class "patient 07"; a copy kept under a wrapper folder
    (Dataset_BUSI_with_GT/benign/...) keeps its classes. The nested images are named in a warning."""
    build_busi(tmp_path / "Dataset_BUSI_with_GT")
    nested = tmp_path / "Dataset_BUSI_with_GT" / "malignant" / "patient 07"
    for i in (70, 71):
        image, mask = lesion_pair(100 + i)
        write(nested / f"malignant ({i}).png", image)
        write(nested / f"malignant ({i})_mask.png", mask)
    with caplog.at_level(logging.WARNING, logger="sonoseg.data.layouts"):
        manifest = data.included(data.ingest(tmp_path, "busi")).set_index("sample_id")
    assert set(manifest["class"]) == {"benign", "malignant"}
    assert manifest.loc["Dataset_BUSI_with_GT__malignant__patient_07__malignant_70", "class"] == "malignant"
    assert not [r for r in caplog.records if BUSI_CLASSES_WARNING in r.getMessage()]
    (warning,) = [r.getMessage() for r in caplog.records if "sub-folders of their class" in r.getMessage()]
    assert (
        warning.startswith("2 image(s) lie in sub-folders") and "Dataset_BUSI_with_GT/malignant/patient 07" in warning
    )


def test_an_image_and_its_mask_named_in_two_unicode_forms_are_one_pair(tmp_path):
    """An image saved on macOS (NFD) and its mask on Windows (NFC) were "image without mask" and "mask without
    image", printed alike; in BUSI too. Their sample id is the one either form gives."""
    decomposed, composed = (unicodedata.normalize(form, "rené") for form in ("NFD", "NFC"))
    for i, name in enumerate(["plain", decomposed]):
        image, mask = lesion_pair(i)
        write(tmp_path / "folder" / "images" / f"{name}.png", image)
        write(tmp_path / "folder" / "masks" / f"{composed if name == decomposed else name}.png", mask)
        write(tmp_path / "busi" / "benign" / f"{name}.png", image)
        write(tmp_path / "busi" / "benign" / f"{composed if name == decomposed else name}_mask.png", mask)
    for layout in ("folder", "busi"):
        manifest = data.ingest(tmp_path / layout, layout, on_bad_sample="fail")
        assert len(data.included(manifest)) == 2, layout
    ids = {layouts.sample_id_for(tmp_path, tmp_path / "images" / f"{name}.png") for name in (decomposed, composed)}
    assert len(ids) == 1


def test_files_in_sub_folders_of_images_are_named_as_such_and_busi_second_masks_as_suffixed(tmp_path):
    """A patient's sub-folder of images/ read "not part of the folder layout"; a BUSI-named second mask
    (s_mask_1.png) in masks/ was a bare "mask without image", unlike s_mask.png."""
    for i, name in enumerate(["a", "b"]):
        image, mask = lesion_pair(i)
        write(tmp_path / "images" / f"{name}.png", image)
        write(tmp_path / "masks" / f"{name}.png", mask)
    image, mask = lesion_pair(5)
    write(tmp_path / "images" / "patient 07" / "view0.png", image)
    write(tmp_path / "images" / "c.png", image)
    write(tmp_path / "masks" / "c_mask_1.png", mask)
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude").set_index("image")
    reason = manifest.loc[str(tmp_path.resolve() / "images" / "patient 07" / "view0.png"), "reason"]
    assert reason.startswith("in a sub-folder of images/: the folder layout reads the files of images/ and masks/")
    assert "with a word added" in manifest.loc[str(tmp_path.resolve() / "masks" / "c_mask_1.png"), "reason"]


def build_busbra(root: Path):
    for patient, views in (("0001", "lr"), ("0002", "l"), ("0003", "lr")):
        for view in views:
            image, mask = lesion_pair(int(patient) * 10 + ord(view))
            write(root / "Images" / f"bus_{patient}-{view}.png", image)
            write(root / "Masks" / f"mask_{patient}-{view}.png", mask)


def test_busbra_layout(tmp_path):
    build_busbra(tmp_path)
    pd.DataFrame(
        {
            "ID": ["bus_0001-l", "bus_0001-r", "bus_0002-l", "bus_0003-l", "bus_0003-r"],
            "Pathology": ["benign", "benign", "malignant", "benign", "benign"],
        }
    ).to_csv(tmp_path / "bus_data.csv", index=False)
    manifest = data.ingest(tmp_path, "busbra")
    samples = data.included(manifest)
    assert len(samples) == 5
    assert samples.groupby("patient").size().to_dict() == {"0001": 2, "0002": 1, "0003": 2}
    assert samples["meta_Pathology"].tolist().count("malignant") == 1
    assert (manifest.loc[manifest["image"].str.endswith("bus_data.csv"), "status"] == "metadata").all()


def test_busbra_files_of_one_id_in_two_formats_are_ambiguous(tmp_path):
    """Two masks of one id (mask_0001-l.png and .jpg), or two images (bus_0002-l.png and .jpg): which is
    meant? Each image is a problem saying so, never paired with either file unseen; the others pair."""
    build_busbra(tmp_path)
    write(tmp_path / "Masks" / "mask_0001-l.jpg", lesion_pair(11)[1], ".jpg")
    write(tmp_path / "Images" / "bus_0002-l.jpg", lesion_pair(12)[0], ".jpg")
    manifest = data.ingest(tmp_path, "busbra", on_bad_sample="exclude")
    reason = {
        Path(p).name: r
        for p, r, status in zip(manifest["image"], manifest["reason"], manifest["status"])
        if status == "excluded"
    }
    assert reason == {
        "bus_0001-l.png": "ambiguous: masks mask_0001-l.jpg and mask_0001-l.png both match",
        # ... and both masks are listed, saying why they pair with nothing.
        "mask_0001-l.jpg": "ambiguous: one of the masks mask_0001-l.jpg and mask_0001-l.png of bus_0001-l.png",
        "mask_0001-l.png": "ambiguous: one of the masks mask_0001-l.jpg and mask_0001-l.png of bus_0001-l.png",
        "bus_0002-l.jpg": "ambiguous: images bus_0002-l.jpg and bus_0002-l.png share the id 0002-l",
        "bus_0002-l.png": "ambiguous: images bus_0002-l.jpg and bus_0002-l.png share the id 0002-l",
        "mask_0002-l.png": "ambiguous: the mask of images bus_0002-l.jpg and bus_0002-l.png",
    }
    assert len(data.included(manifest)) == 3


def test_missing_root_and_bad_layout(tmp_path):
    with pytest.raises(SonosegError, match="folder not found"):
        data.ingest(tmp_path / "nope", "folder")
    with pytest.raises(SonosegError, match="not one of"):
        data.ingest(tmp_path, "dicom")


# ----------------------------------------------------------------------------- reading masks


def lesion_block(value, dtype=np.uint8, channels: int = 0) -> np.ndarray:
    """A 40x60 mask, 0 outside a block whose pixels hold value (on every channel when channels > 0)."""
    mask = np.zeros((40, 60, channels) if channels else (40, 60), dtype)
    mask[10:30, 15:40] = value
    return mask


def test_mask_values_rule(tmp_path):
    """0/1 and 0/255 are binary; 0/128/255 counts 128 as lesion, flagged mask_thresholded (docs/own_data.md)."""
    for name, pixels in (("binary01", lesion_block(1)), ("binary255", lesion_block(255))):
        mask = imageio.read_mask(write(tmp_path / f"{name}.png", pixels))
        assert mask.pixels.sum() == 20 * 25 and mask.notes == [], name
    three_levels = lesion_block(255)
    three_levels[30:35, 40:50] = 128
    mask = imageio.read_mask(write(tmp_path / "three_levels.png", three_levels))
    assert mask.pixels.sum() == 20 * 25 + 5 * 10 and mask.notes == ["mask_thresholded"]
    sixteen = imageio.read_mask(write(tmp_path / "sixteen.png", lesion_block(65535, np.uint16)))
    assert sixteen.pixels.sum() == 20 * 25


@pytest.mark.parametrize(
    "pixels, expected",
    [
        (lesion_block(255, np.uint16), "values 0..255, none reaches the lesion threshold 32768"),
        (lesion_block(100), "values 0..100, none reaches the lesion threshold 128"),
    ],
    ids=["16bit_0_255", "8bit_0_100"],
)
def test_mask_below_the_threshold_is_an_error_not_an_empty_mask(tmp_path, pixels, expected):
    path = write(tmp_path / "faint.png", pixels)
    with pytest.raises(SonosegError, match=re.escape(f"{path}: mask values 0..")) as error:
        imageio.read_mask(path)
    assert expected in str(error.value) and str(error.value).endswith("or as 1 on 0")


def test_a_0_1_mask_saved_as_jpeg_is_told_to_be_saved_as_png(tmp_path):
    """JPEG smears a 0/1 mask into 0..2, under the threshold: 'save it as 1 on 0' alone would fail again."""
    mask = np.zeros((64, 64), np.uint8)
    cv2.circle(mask, (32, 32), 15, 1, -1)
    path = write(tmp_path / "mask.jpg", mask, ".jpg")
    assert cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).max() == 2  # JPEG's compression at OpenCV's quality 95
    with pytest.raises(SonosegError) as error:
        imageio.read_mask(path)
    assert str(error.value).endswith("or as 1 on 0 in a PNG (JPEG's compression changes a 0/1 mask's values)")


def test_float_mask_is_refused_like_a_float_image_unless_it_holds_only_0_and_1_or_255(tmp_path):
    path = write(tmp_path / "float.tif", lesion_block(200, np.float32), ".tif")
    for read in (imageio.read_mask, imageio.read_image):
        with pytest.raises(SonosegError, match=re.escape(f"{path}: unsupported pixel type float32")):
            read(path)
    for top in (1, 255):  # values that say what is lesion without guessing
        binary = write(tmp_path / f"binary{top}.tif", lesion_block(top, np.float32), ".tif")
        assert imageio.read_mask(binary).pixels.sum() == 20 * 25
        with pytest.raises(SonosegError, match="unsupported pixel type float32"):
            imageio.read_image(binary)


def test_rgba_mask_with_the_lesion_in_the_alpha_channel_only(tmp_path):
    alpha_only = np.zeros((40, 60, 4), np.uint8)
    alpha_only[10:30, 15:40, 3] = 255
    read = imageio.read_mask(write(tmp_path / "alpha_only.png", alpha_only))
    assert read.pixels.sum() == 20 * 25 and "mask_from_alpha" in read.notes  # the manifest says so
    # An overlay: opaque black with a transparent hole where the lesion is. Read from alpha it would be
    # inverted (lesion everywhere but the lesion); read from colour, empty: neither is told, it is an error.
    overlay = np.zeros((40, 60, 4), np.uint8)
    overlay[..., 3] = 255
    overlay[10:30, 15:40, 3] = 0
    path = write(tmp_path / "overlay.png", overlay)
    with pytest.raises(SonosegError, match=re.escape(f"{path}: an RGBA mask, black in colour, opaque over most")):
        imageio.read_mask(path)
    # An opaque mask (alpha 255 everywhere) is read from its colour channels, empty or not.
    opaque = lesion_block(255, channels=4)
    opaque[..., 3] = 255
    assert imageio.read_mask(write(tmp_path / "opaque.png", opaque)).pixels.sum() == 20 * 25
    opaque[..., :3] = 0
    assert not imageio.read_mask(write(tmp_path / "opaque_empty.png", opaque)).pixels.any()


def test_faint_mask_is_a_problem_at_ingest(tmp_path):
    for i in range(2):
        image, mask = lesion_pair(i)
        write(tmp_path / "images" / f"good{i}.png", image)
        write(tmp_path / "masks" / f"good{i}.png", mask)
    write(tmp_path / "images" / "faint.png", lesion_pair(5)[0])
    write(tmp_path / "masks" / "faint.png", (lesion_pair(5)[1] > 0).astype(np.uint8) * 100)
    with pytest.raises(SonosegError, match="none reaches the lesion threshold 128"):
        data.ingest(tmp_path, "folder")
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    row = manifest[manifest["image"].str.endswith("faint.png")].iloc[0]
    assert row["status"] == "excluded" and "mask values 0..100" in row["reason"]


# ----------------------------------------------------------------------------- checking files before decoding


def test_trailing_bytes_after_the_end_marker_are_not_a_truncation(tmp_path):
    """Scanners and tools append bytes after PNG's IEND or JPEG's end-of-image marker; OpenCV reads
    such files whole. Files cut short are still caught."""
    image = lesion_pair(0)[0]
    for suffix in (".png", ".jpg"):
        path = write(tmp_path / f"trailing{suffix}", image, suffix)
        whole = path.read_bytes()
        path.write_bytes(whole + b"TRAILER-FROM-THE-SCANNER" * 20)
        assert imageio.problem_with_file(path) is None, suffix
        assert imageio.read_image(path).pixels.shape == image.shape
        path.write_bytes(whole[: len(whole) * 2 // 3])
        assert "truncated" in imageio.problem_with_file(path), suffix
    # A JPEG that carries a thumbnail (its own start of scan and end marker) and is cut short: the
    # thumbnail's end marker lies inside its EXIF segment, before the image's scan, so it is still truncated.
    thumbnail = cv2.imencode(".jpg", image[::8, ::8])[1].tobytes()
    main = cv2.imencode(".jpg", image)[1].tobytes()
    exif = b"\xff\xe1" + (len(thumbnail) + 8).to_bytes(2, "big") + b"Exif\0\0" + thumbnail
    cut = tmp_path / "thumbnail.jpg"
    cut.write_bytes(main[:2] + exif + main[2 : len(main) // 2])
    assert "truncated JPEG" in imageio.problem_with_file(cut)
    cut.write_bytes(main[:2] + exif + main[2:])  # whole, it passes
    assert imageio.problem_with_file(cut) is None


def test_a_jpeg_damaged_within_its_scan_is_a_problem(tmp_path):
    """Bytes overwritten or lost in the middle of a JPEG's scan: the file still ends with its end marker and
    OpenCV decodes it (libjpeg only warns; the rows after the damage come out grey), so it is told by
    libjpeg's warning. Progressive and baseline files, with a lost stretch or an overwritten one."""
    for name in ("good", "overwritten", "lost", "progressive"):
        image, mask = lesion_pair(len(name))
        write(tmp_path / "images" / f"{name}.jpg", image, ".jpg")
        write(tmp_path / "masks" / f"{name}.png", mask)
    progressive = tmp_path / "images" / "progressive.jpg"
    progressive.write_bytes(cv2.imencode(".jpg", cv2.imread(str(progressive)), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1])
    for name, damage in {
        "overwritten": lambda data, middle: data[:middle] + bytes(64) + data[middle + 64 :],
        "lost": lambda data, middle: data[:middle] + data[middle + 300 :],
        "progressive": lambda data, middle: data[:middle] + bytes(64) + data[middle + 64 :],
    }.items():
        path = tmp_path / "images" / f"{name}.jpg"
        whole = path.read_bytes()
        assert imageio.read_image(path).pixels.shape == lesion_pair(len(name))[0].shape  # whole: read
        path.write_bytes(damage(whole, len(whole) // 2))
        assert imageio.problem_with_file(path) is None  # its structure is whole: not a truncation
        assert cv2.imread(str(path)) is not None  # and OpenCV alone decodes it
        with pytest.raises(SonosegError, match=rf"^{re.escape(str(path))}: damaged JPEG \(Corrupt JPEG data"):
            imageio.read_image(path)
    # Padding between the last coded block and the end marker, as some encoders leave it: the pixels are
    # whole, so the image is read, with a note (segment warns of it; ingest flags it), not refused.
    padded = tmp_path / "images" / "good.jpg"
    whole = padded.read_bytes()
    padded.write_bytes(whole[:-2] + bytes(3) + whole[-2:])
    decoded = imageio.read_image(padded)
    assert len(decoded.notes) == 1 and decoded.notes[0].startswith("jpeg_extra_bytes:")  # libjpeg's count
    assert np.array_equal(
        decoded.pixels, cv2.cvtColor(cv2.imdecode(np.frombuffer(whole, np.uint8), 1), cv2.COLOR_BGR2RGB)
    )
    assert "bytes it did not expect" in image_warnings.warnings_for(decoded, 32, "keep")[0]
    # Padding before another marker (a table between a progressive JPEG's scans) is noted alike, not refused.
    progressive_whole = cv2.imencode(".jpg", lesion_pair(9)[0], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    table = progressive_whole.index(b"\xff\xc4", progressive_whole.index(b"\xff\xda"))  # a table after the first scan
    padded_tables = tmp_path / "padded_tables.jpg"
    padded_tables.write_bytes(progressive_whole[:table] + bytes(2) + progressive_whole[table:])
    notes = imageio.read_image(padded_tables).notes  # read, not refused (libjpeg may or may not count the bytes)
    assert all(note.startswith("jpeg_extra_bytes:") for note in notes)
    padded_tables.unlink()
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    assert manifest.loc[manifest["image"] == str(padded.resolve()), "flags"].item() == decoded.notes[0]
    status = {
        Path(image).stem: (row_status, reason)
        for image, row_status, reason in manifest[["image", "status", "reason"]].itertuples(index=False)
    }
    assert status["good"][0] == "included"
    for name in ("overwritten", "lost", "progressive"):
        assert status[name][0] == "excluded" and status[name][1].startswith("damaged JPEG"), status[name]


def test_unreadable_file_is_a_problem_not_a_traceback(tmp_path, monkeypatch):
    for name in ("good0", "good1", "locked"):
        image, mask = lesion_pair(len(name))
        write(tmp_path / "images" / f"{name}.png", image)
        write(tmp_path / "masks" / f"{name}.png", mask)
    locked = (tmp_path / "images" / "locked.png").resolve()
    real_open = open

    def refusing_open(file, *args, **kwargs):  # chmod does not stop root: refuse this file here
        if Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(SonosegError, match=re.escape(f"{locked}: cannot be read (Permission denied)")):
        data.ingest(tmp_path, "folder")
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    row = manifest[manifest["image"] == str(locked)].iloc[0]
    assert row["status"] == "excluded" and row["reason"] == "cannot be read (Permission denied)"
    assert len(data.included(manifest)) == 2


def test_a_problem_names_the_file_that_has_it_once(tmp_path, caplog):
    """In the folder layout an image and its mask share a name: a broken mask is named by its full path,
    a broken image's path is not repeated; the log counts each kind of problem once."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(2):
        image, mask = lesion_pair(i)
        write(images / f"good{i}.png", image)
        write(masks / f"good{i}.png", mask)
    for name in ("bad_mask1", "bad_mask2", "bad_image", "garbage"):
        image, mask = lesion_pair(len(name))
        write(images / f"{name}.png", image)
        write(masks / f"{name}.png", mask)
    for path in (masks / "bad_mask1.png", masks / "bad_mask2.png", images / "bad_image.png"):
        path.write_bytes(path.read_bytes()[:200])
    (images / "garbage.png").write_text("this is not an image")
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder")
    lines = str(error.value).splitlines()
    root = tmp_path.resolve()
    truncated = "truncated PNG (its chunks run past the file's end before an IEND chunk)"
    for number in (1, 2):
        image, mask = root / "images" / f"bad_mask{number}.png", root / "masks" / f"bad_mask{number}.png"
        assert f"  {image}: {mask}: {truncated}" in lines
    assert f"  {root / 'images' / 'bad_image.png'}: {truncated}" in lines
    assert f"  {root / 'images' / 'garbage.png'}: not a readable image" in lines
    with caplog.at_level(logging.INFO, logger="sonoseg.data.manifest"):
        data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    counts = [record.getMessage() for record in caplog.records if record.getMessage().startswith("  ")]
    assert sorted(counts) == [
        f"  mask: {truncated}: 2",
        "  not a readable image: 1",
        f"  {truncated}: 1",
    ]


def test_count_lines_keep_the_whole_reason(tmp_path, caplog):
    """BUSI's normal images, left out by default: the count line is the reason, whole."""
    build_busi(tmp_path)
    with caplog.at_level(logging.INFO, logger="sonoseg.data.manifest"):
        data.ingest(tmp_path, "busi")
    counts = [record.getMessage() for record in caplog.records if record.getMessage().startswith("  ")]
    assert counts == ["  normal image left out (include_normal: false): 2"]


# ----------------------------------------------------------------------------- sample ids


def build_colliding_names(root: Path) -> None:
    """Three images whose cleaned names collide: 'a b' and 'a_b' both clean to a_b; a_b_2 is a name of its own."""
    for number, name in enumerate(("a b.png", "a_b.png", "a_b_2.png")):
        image, mask = lesion_pair(number)
        write(root / "images" / name, image)
        write(root / "masks" / name, mask)


def test_sample_ids_are_unique_when_cleaned_names_collide(tmp_path):
    build_colliding_names(tmp_path)
    manifest = data.ingest(tmp_path, "folder")
    ids = dict(zip(manifest["image"].map(lambda p: Path(p).name), manifest["sample_id"]))
    # The first of two colliding names and every name that collides with nothing keep their id.
    assert ids == {"a b.png": "images__a_b", "a_b.png": "images__a_b_3", "a_b_2.png": "images__a_b_2"}


def test_sample_ids_differing_only_in_letter_case_are_made_unique(tmp_path):
    """A probe's A.png beside a.png got ids images__A and images__a: their prediction files would be one file
    on a case-insensitive file system (results copied to macOS or Windows). The later one is numbered."""
    for number, name in enumerate(("A.png", "a.png", "b.png")):
        image, mask = lesion_pair(number)
        write(tmp_path / "images" / name, image)
        write(tmp_path / "masks" / name, mask)
    manifest = data.ingest(tmp_path, "folder")
    ids = dict(zip(manifest["image"].map(lambda p: Path(p).name), manifest["sample_id"]))
    assert ids == {"A.png": "images__A", "a.png": "images__a_2", "b.png": "images__b"}


def test_patient_ids_that_differ_only_in_case_or_leading_zeros_are_named_in_a_warning(caplog):
    """P1 and p1, 007 and 7: two patients as given, but one patient spelt two ways would have views in training
    and in test. Named, not merged (sonoseg does not guess which spelling is right)."""
    from sonoseg.data import manifest as manifest_module

    with caplog.at_level(logging.WARNING):
        manifest_module._warn_of_look_alike_patients(["007", "7", "P1", "P10", "bus_0007-l", "bus_7-l", "p1"])
    (said,) = [record.getMessage() for record in caplog.records]
    assert said.startswith("3 set(s) of patient ids differ only in letter case or leading zeros, e.g. 007 / 7; ")
    assert "P1 / p1" in said and "bus_0007-l / bus_7-l" in said and "P10" not in said
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        manifest_module._warn_of_look_alike_patients([f"P{number:04d}" for number in range(40)])
    assert not caplog.records  # the phantom's P0000..P0039: a number each


def test_ingest_refuses_duplicate_sample_ids(tmp_path, monkeypatch):
    """The last guard: should two images ever get one id, one prediction would be scored for both."""
    from sonoseg.data import manifest as manifest_module

    build_colliding_names(tmp_path)
    monkeypatch.setattr(manifest_module, "_unique_ids", lambda ids: ids)
    with pytest.raises(SonosegError, match=r"sample id 'images__a_b': .*a b\.png.*a_b\.png"):
        data.ingest(tmp_path, "folder")


def test_names_without_latin_letters_or_digits_get_a_hashed_id(tmp_path):
    """BUSI class folders and file names in another script clean to nothing: such an image's id is a
    short hash of its path under the root (a prediction file 'img_....png', not the hidden '.png')."""
    for number, relative in enumerate(("良性/病例.png", "恶性/病例.png", "benign/benign (1).png")):
        image, mask = lesion_pair(number)
        write(tmp_path / relative, image)
        write((tmp_path / relative).with_name(Path(relative).stem + "_mask.png"), mask)
    manifest = data.ingest(tmp_path, "busi")
    ids = dict(
        zip(manifest["image"].map(lambda p: Path(p).relative_to(tmp_path.resolve()).as_posix()), manifest["sample_id"])
    )
    for relative in ("良性/病例.png", "恶性/病例.png"):
        assert ids[relative] == "img_" + hashlib.blake2b(relative.encode(), digest_size=4).hexdigest()
    assert ids["benign/benign (1).png"] == "benign__benign_1"


# ----------------------------------------------------------------------------- pairing by name


def good_folder(root: Path, count: int = 2) -> None:
    for i in range(count):
        image, mask = lesion_pair(i)
        write(root / "images" / f"good{i}.png", image)
        write(root / "masks" / f"good{i}.png", mask)


def test_the_stem_fallback_pairs_only_an_image_whose_stem_is_its_own(tmp_path):
    """images/s.png and images/s.jpg share the stem s: masks/s.tif is neither's by name; each is a
    problem naming the other, not two images scored with one mask. A unique stem still pairs."""
    good_folder(tmp_path)
    write(tmp_path / "images" / "s.png", lesion_pair(5)[0])
    write(tmp_path / "images" / "s.jpg", lesion_pair(6)[0], ".jpg")
    write(tmp_path / "masks" / "s.tif", lesion_pair(5)[1], ".tif")
    write(tmp_path / "images" / "unique.jpg", lesion_pair(7)[0], ".jpg")
    write(tmp_path / "masks" / "unique.png", lesion_pair(7)[1])
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder")
    lines = str(error.value).splitlines()
    for name in ("s.jpg", "s.png"):
        line = next(text for text in lines if text.strip().startswith(str(tmp_path.resolve() / "images" / name)))
        assert line.endswith("ambiguous: images s.jpg and s.png share the stem s"), line
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    by_name = {Path(p).name: row for p, row in zip(manifest["image"], manifest.to_dict("records"))}
    assert by_name["s.png"]["status"] == by_name["s.jpg"]["status"] == "excluded"
    assert by_name["unique.jpg"]["status"] == "included" and by_name["unique.jpg"]["mask"].endswith("unique.png")
    assert by_name["s.tif"]["reason"] == "ambiguous: the mask of images s.jpg and s.png"


def test_an_image_whose_stem_two_masks_share_is_ambiguous(tmp_path):
    """images/t.tif with masks/t.png and masks/t.bmp: neither mask is its by name, both by stem."""
    good_folder(tmp_path)
    write(tmp_path / "images" / "t.tif", lesion_pair(5)[0], ".tif")
    write(tmp_path / "masks" / "t.png", lesion_pair(5)[1])
    write(tmp_path / "masks" / "t.bmp", lesion_pair(5)[1], ".bmp")
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    reason = dict(zip(manifest["image"].map(lambda p: Path(p).name), manifest["reason"]))
    assert reason["t.tif"] == "ambiguous: masks t.bmp and t.png both match"
    assert reason["t.png"] == reason["t.bmp"] == "ambiguous: one of the masks t.bmp and t.png of t.tif"


def test_an_exact_name_still_pairs_beside_a_shared_stem(tmp_path):
    good_folder(tmp_path)
    write(tmp_path / "images" / "s.png", lesion_pair(5)[0])
    write(tmp_path / "images" / "s.jpg", lesion_pair(6)[0], ".jpg")
    write(tmp_path / "masks" / "s.png", lesion_pair(5)[1])
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    by_name = {Path(p).name: row for p, row in zip(manifest["image"], manifest.to_dict("records"))}
    assert by_name["s.png"]["status"] == "included" and by_name["s.png"]["mask"].endswith("masks/s.png")
    assert by_name["s.jpg"]["status"] == "excluded"
    assert by_name["s.jpg"]["reason"] == "ambiguous: images s.jpg and s.png share the stem s"


def test_patients_csv_listing_an_image_twice_is_refused(tmp_path):
    """Which row's patient would count? The last row won silently; now the run stops naming both rows."""
    good_folder(tmp_path, 3)
    rows = {"image": ["good0.png", "good1.png", "good0.png", "good2.png"], "patient": ["A", "B", "C", "D"]}
    pd.DataFrame(rows).to_csv(tmp_path / "patients.csv", index=False)
    for policy in ("fail", "exclude"):
        with pytest.raises(SonosegError) as error:
            data.ingest(tmp_path, "folder", on_bad_sample=policy)
        assert str(error.value).startswith(f"{tmp_path.resolve() / 'patients.csv'}: an image may be listed only once")
        assert "image 'good0.png' is listed in rows 2 and 4, which differ in patient ('A', 'C')" in str(error.value)
    # A row copied twice whole says one thing: accepted (and logged).
    rows["patient"][2] = "A"
    pd.DataFrame(rows).to_csv(tmp_path / "patients.csv", index=False)
    samples = data.included(data.ingest(tmp_path, "folder"))
    assert samples.set_index("sample_id").loc["images__good0", "patient"] == "A"


def test_busi_images_of_one_name_in_two_formats_are_ambiguous(tmp_path, caplog):
    """benign/x.png and benign/x.jpg with x_mask.png: which one the mask outlines is not said. The log
    counts such files as one kind (their names, in the manifest, would make a line per pair)."""
    build_busi(tmp_path)
    image, mask = lesion_pair(77)
    write(tmp_path / "benign" / "x.png", image)
    write(tmp_path / "benign" / "x.jpg", image, ".jpg")
    write(tmp_path / "benign" / "x_mask.png", mask)
    with caplog.at_level(logging.INFO, logger="sonoseg.data.manifest"):
        rows = outcomes(data.ingest(tmp_path, "busi", on_bad_sample="exclude"), tmp_path)
    assert "  ambiguous: several files of one name: 3" in [record.getMessage() for record in caplog.records]
    for name in ("x.png", "x.jpg"):
        assert rows[f"benign/{name}"] == ("excluded", "ambiguous: images x.jpg and x.png share the name x")
    assert rows["benign/x_mask.png"] == ("excluded", "ambiguous: the mask of images x.jpg and x.png")


def test_a_mask_path_with_the_separator_is_a_problem_at_ingest_and_an_image_path_is_not(tmp_path, caplog):
    """'|' joins an image's masks in the manifest: such a mask would be read back as two wrong paths. An
    image's path is never split, and `segment` reads images that are in no manifest: both take it."""
    good_folder(tmp_path)
    image, mask = lesion_pair(5)
    write(tmp_path / "images" / "a|b.png", image)
    write(tmp_path / "masks" / "a|b.png", mask)
    expected = "path contains '|', which the manifest uses to separate mask files"
    mask_path = tmp_path.resolve() / "masks" / "a|b.png"
    with pytest.raises(SonosegError, match=re.escape(f"{mask_path}: {expected}")):
        data.ingest(tmp_path, "folder")
    with caplog.at_level(logging.INFO, logger="sonoseg.data.manifest"):
        manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    row = manifest[manifest["image"].str.endswith("a|b.png")].iloc[0]
    assert row["status"] == "excluded" and row["reason"] == f"{mask_path}: {expected}"
    assert f"  mask: {expected}: 1" in [record.getMessage() for record in caplog.records]
    assert imageio.read_image(tmp_path / "images" / "a|b.png").pixels.shape == (64, 96, 3)


# ----------------------------------------------------------------------------- files that are not images

SUPPORTED = "(supported: .bmp, .jpeg, .jpg, .png, .tif, .tiff)"


def add_strays(folder: Path) -> None:
    """What operating systems leave in a folder of images: ignored wherever it lies."""
    for junk in ("Thumbs.db", ".DS_Store", "desktop.ini", "._scan.png"):
        (folder / junk).write_bytes(b"\0" * 16)


def outcomes(manifest: pd.DataFrame, root: Path) -> dict[str, tuple[str, str]]:
    """Relative path -> (status, reason) of every row."""
    return {
        Path(p).relative_to(root.resolve()).as_posix(): (status, reason)
        for p, status, reason in zip(manifest["image"], manifest["status"], manifest["reason"])
    }


@pytest.mark.parametrize("layout", ["folder", "busi", "busbra"])
def test_unsupported_image_formats_where_the_images_lie_are_problems(tmp_path, layout):
    """A .webp or DICOM file among the images was ignored as 'not an image file'; it is a problem now.
    The junk of operating systems there, and notes at the dataset root, are still ignored."""
    if layout == "folder":
        good_folder(tmp_path)
        folders = ["images", "masks"]
    elif layout == "busi":
        build_busi(tmp_path)
        folders = ["benign", "malignant"]
    else:
        build_busbra(tmp_path)
        folders = ["Images", "Masks"]
    for folder in folders:
        add_strays(tmp_path / folder)
    (tmp_path / folders[0] / "scan7.webp").write_bytes(b"RIFF\0\0\0\0WEBP")
    (tmp_path / folders[1] / "scan8.dcm").write_bytes(b"\0" * 128 + b"DICM")
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / folders[0] / "notes.txt").write_text("scanned on the old machine")  # not an image format
    (tmp_path / folders[1] / "scan9.json").write_text("{}")  # an annotation tool's file
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, layout)
    assert "2 problem(s)" in str(error.value)
    rows = outcomes(data.ingest(tmp_path, layout, on_bad_sample="exclude"), tmp_path)
    assert rows[f"{folders[0]}/scan7.webp"] == ("excluded", f"unsupported image format .webp {SUPPORTED}")
    assert rows[f"{folders[1]}/scan8.dcm"] == ("excluded", f"unsupported image format .dcm {SUPPORTED}")
    for folder in folders:
        for junk in ("Thumbs.db", ".DS_Store", "desktop.ini", "._scan.png"):
            assert rows[f"{folder}/{junk}"][0] == "ignored", (folder, junk)
    assert (
        rows["README.txt"][0] == rows[f"{folders[0]}/notes.txt"][0] == rows[f"{folders[1]}/scan9.json"][0] == "ignored"
    )


# ----------------------------------------------------------------------------- rows naming missing files


def test_patients_csv_rows_naming_missing_images_are_problems_like_the_others(tmp_path):
    for i in range(3):
        image, mask = lesion_pair(i)
        write(tmp_path / "images" / f"s{i}.png", image)
        write(tmp_path / "masks" / f"s{i}.png", mask)
    write(tmp_path / "images" / "lonely.png", lesion_pair(5)[0])  # another problem: no mask
    pd.DataFrame(
        {"image": ["s0.png", "s1.png", "s2.png", "ghost.png", "gone.png"], "patient": ["A", "A", "B", "C", "D"]}
    ).to_csv(tmp_path / "patients.csv", index=False)
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder")
    message = str(error.value)
    assert "3 problem(s)" in message
    for name, keyword in (
        ("ghost.png", "patients.csv (row 5)"),
        ("gone.png", "patients.csv (row 6)"),
        ("lonely.png", "image without mask"),
    ):
        assert keyword in next(line for line in message.splitlines() if name in line), name
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    assert data.included(manifest)["patient"].tolist() == ["A", "A", "B"]
    ghost = manifest[manifest["image"].str.endswith("ghost.png")].iloc[0]
    assert ghost["status"] == "excluded" and "no such image" in ghost["reason"]


def test_dataset_csv_rows_naming_missing_files_are_problems_like_the_others(tmp_path):
    for i in range(3):
        image, mask = lesion_pair(i)
        write(tmp_path / "scans" / f"s{i}.png", image)
        write(tmp_path / "labels" / f"s{i}.png", mask)
    (tmp_path / "scans" / "broken.png").write_bytes(b"")
    write(tmp_path / "labels" / "broken.png", lesion_pair(0)[1])
    for i in (3, 4):  # images whose rows name no usable mask
        write(tmp_path / "scans" / f"s{i}.png", lesion_pair(i)[0])
    rows = [{"image": f"scans/s{i}.png", "mask": f"labels/s{i}.png", "patient": f"P{i}"} for i in range(3)]
    rows += [
        {"image": "scans/missing.png", "mask": "labels/s0.png", "patient": "Q"},
        {"image": "scans/s3.png", "mask": "labels/missing_mask.png", "patient": "R"},
        {"image": "scans/s4.png", "mask": "", "patient": "S"},
        {"image": "scans/broken.png", "mask": "labels/broken.png", "patient": "T"},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "list.csv", index=False)
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder", dataset_csv="list.csv")
    message = str(error.value)
    assert "4 problem(s)" in message
    assert "image listed in list.csv row 5 does not exist" in message
    assert "mask listed in list.csv row 6 does not exist" in message
    assert "list.csv row 7: the mask cell is empty" in message
    assert "empty file" in message
    manifest = data.ingest(tmp_path, "folder", dataset_csv="list.csv", on_bad_sample="exclude")
    assert data.included(manifest)["patient"].tolist() == ["P0", "P1", "P2"]
    assert (manifest.loc[manifest["patient"].isin(["Q", "R", "S", "T"]), "status"] == "excluded").all()


# ----------------------------------------------------------------------------- what the CSV cells say


def problem_line(message: str, path: Path) -> str:
    """The line of a refusal's listing that names ``path`` (under a resolved root)."""
    return next(line.strip() for line in message.splitlines() if line.strip().startswith(f"{path}: "))


def test_an_empty_patient_cell_is_a_problem_of_its_sample(tmp_path):
    """An empty patient cell made every such image patient '' (one patient, one split group), unseen."""
    folder, listed = tmp_path / "folder", tmp_path / "listed"
    good_folder(folder, 3)
    pd.DataFrame({"image": ["good0.png", "good1.png", "good2.png"], "patient": ["A", "", "  "]}).to_csv(
        folder / "patients.csv", index=False
    )
    with pytest.raises(SonosegError) as error:
        data.ingest(folder, "folder")
    assert "2 problem(s)" in str(error.value)
    for name, row in (("good1.png", 3), ("good2.png", 4)):
        line = problem_line(str(error.value), folder.resolve() / "images" / name)
        assert line.endswith(f": patients.csv row {row}: the patient cell is empty"), line
    assert data.included(data.ingest(folder, "folder", on_bad_sample="exclude"))["patient"].tolist() == ["A"]

    good_folder(listed, 3)
    rows = [{"image": f"images/good{i}.png", "mask": f"masks/good{i}.png", "patient": p} for i, p in enumerate("A ")]
    rows.append({"image": "images/good2.png", "mask": "masks/good2.png", "patient": ""})
    pd.DataFrame(rows).to_csv(listed / "list.csv", index=False)
    with pytest.raises(SonosegError) as error:
        data.ingest(listed, "folder", dataset_csv="list.csv")
    assert "2 problem(s)" in str(error.value)
    for name, row in (("good1.png", 3), ("good2.png", 4)):
        line = problem_line(str(error.value), listed.resolve() / "images" / name)
        assert line.endswith(f": list.csv row {row}: the patient cell is empty"), line
    manifest = data.ingest(listed, "folder", dataset_csv="list.csv", on_bad_sample="exclude")
    assert data.included(manifest)["patient"].tolist() == ["A"]


def test_patients_csv_rows_with_an_empty_image_cell_are_problems_not_one_image_listed_twice(tmp_path):
    """Two such rows were refused as "image '' is listed in rows 3 and 5"; each is a problem of its own."""
    good_folder(tmp_path, 2)
    pd.DataFrame({"image": ["good0.png", "", "good1.png", " "], "patient": ["A", "B", "C", "D"]}).to_csv(
        tmp_path / "patients.csv", index=False
    )
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder")
    assert "2 problem(s)" in str(error.value) and "listed only once" not in str(error.value)
    rows = outcomes(data.ingest(tmp_path, "folder", on_bad_sample="exclude"), tmp_path)
    assert rows["row3-of-patients"] == ("excluded", "patients.csv row 3: the image cell is empty")
    assert rows["row5-of-patients"] == ("excluded", "patients.csv row 5: the image cell is empty")
    assert rows["images/good1.png"] == ("included", "")


def test_patient_view_and_file_cells_are_trimmed(tmp_path):
    """'P1', 'P1 ' and ' P1' were three patients, whose images could land in train and test; 'b.png '
    named no image. Spaces inside a name ('scan 1.png') are part of it."""
    folder, listed = tmp_path / "folder", tmp_path / "listed"
    names = ["a.png", "b.png", "scan 1.png", "c.png"]
    for i, name in enumerate(names):
        image, mask = lesion_pair(i)
        write(folder / "images" / name, image)
        write(folder / "masks" / name, mask)
        write(listed / "scans" / name, image)
        write(listed / "labels" / f"mask {i}.png", mask)
    pd.DataFrame(
        {
            "image": ["a.png", " b.png ", "scan 1.png", "c.png"],
            "patient": ["P1", "P1 ", " P1", "P2"],
            "view": [" left", "right ", "left", "left"],
        }
    ).to_csv(folder / "patients.csv", index=False)
    samples = data.included(data.ingest(folder, "folder"))
    assert [Path(p).name for p in samples["image"]] == ["a.png", "b.png", "c.png", "scan 1.png"]
    assert samples["patient"].tolist() == ["P1", "P1", "P2", "P1"]
    assert samples["view"].tolist() == ["left", "right", "left", "left"]
    assert samples["group"].nunique() == 2

    pd.DataFrame(
        {
            "image": [f"scans/{name}" for name in names[:2]] + [" scans/scan 1.png", "scans/c.png  "],
            "mask": ["labels/mask 0.png ", " labels/mask 1.png", "labels/mask 2.png", "labels/mask 3.png"],
            "patient": ["P1", " P1", "P1\t", "P2"],
        }
    ).to_csv(listed / "list.csv", index=False)
    manifest = data.ingest(listed, "folder", dataset_csv="list.csv")
    samples = data.included(manifest)
    assert samples["patient"].tolist() == ["P1", "P1", "P1", "P2"]
    assert [Path(p).name for p in samples["mask"]] == [f"mask {i}.png" for i in range(4)]
    assert set(manifest["status"]) == {"included", "metadata"}  # no file left over as "not listed"


def test_images_patients_csv_names_in_no_row_are_their_own_patients_and_logged(tmp_path, caplog):
    """They became patients of their own without a word; the log now counts them and names the first."""
    good_folder(tmp_path, 8)
    pd.DataFrame({"image": ["good0.png", "good1.png"], "patient": ["A", "A"]}).to_csv(
        tmp_path / "patients.csv", index=False
    )
    with caplog.at_level(logging.INFO, logger="sonoseg.data.layouts"):
        samples = data.included(data.ingest(tmp_path, "folder"))
    assert samples["patient"].tolist() == ["A", "A"] + [f"good{i}" for i in range(2, 8)]
    assert (
        f"{tmp_path.resolve() / 'patients.csv'} names 6 image(s) of images/ in no row; each is its own patient "
        "(flag not_in_patients_csv): good2.png, good3.png, good4.png, good5.png, good6.png, … (1 more)"
    ) in [record.getMessage() for record in caplog.records]
    root = tmp_path.resolve()
    found = layouts.folder_layout(root, layouts.list_files(root)[0], None)
    flags = {c.image.name: c.flags for c in found.candidates}
    assert flags["good0.png"] == flags["good1.png"] == []
    assert all(flags[f"good{i}.png"] == ["not_in_patients_csv"] for i in range(2, 8))
    # Without patients.csv every image is its own patient, as documented: nothing to flag.
    (tmp_path / "patients.csv").unlink()
    assert all(not c.flags for c in layouts.folder_layout(root, layouts.list_files(root)[0], None).candidates)


def test_the_manifest_flags_images_patients_csv_names_in_no_row(tmp_path, caplog):
    good_folder(tmp_path, 3)
    pd.DataFrame({"image": ["good0.png"], "patient": ["A"]}).to_csv(tmp_path / "patients.csv", index=False)
    with caplog.at_level(logging.INFO, logger="sonoseg.data.manifest"):
        samples = data.included(data.ingest(tmp_path, "folder")).set_index("sample_id")
    assert "not_in_patients_csv" not in samples.loc["images__good0", "flags"]
    assert "not_in_patients_csv" in samples.loc["images__good1", "flags"].split(";")
    assert "not_in_patients_csv" in samples.loc["images__good2", "flags"].split(";")
    said = [record.getMessage() for record in caplog.records]
    assert "flagged not_in_patients_csv: 2 (images__good1, images__good2)" in said  # named, not only counted


def test_patients_csv_names_match_across_unicode_normalization_not_across_letter_case(tmp_path):
    """macOS writes file names decomposed (NFD), a CSV typed elsewhere holds them composed (NFC): one name.
    A name in another letter case is not guessed (on Linux both may exist): the problem names the file."""
    decomposed = unicodedata.normalize("NFD", "lésion.png")
    for i, name in enumerate([decomposed, "Scan.png", "good.png"]):
        image, mask = lesion_pair(i)
        write(tmp_path / "images" / name, image)
        write(tmp_path / "masks" / name, mask)
    composed = unicodedata.normalize("NFC", "lésion.png")
    assert composed != decomposed

    def refused(rows: dict[str, str]) -> str:
        """The ingest's refusal with patients.csv listing ``rows`` (image -> patient)."""
        pd.DataFrame({"image": list(rows), "patient": list(rows.values())}).to_csv(
            tmp_path / "patients.csv", index=False, encoding="utf-8"
        )
        with pytest.raises(SonosegError) as error:
            data.ingest(tmp_path, "folder")
        return str(error.value)

    listed = {composed: "A", "scan.png": "B", "good.png": "C"}
    message = refused(listed)
    assert "1 problem(s)" in message
    assert problem_line(message, tmp_path.resolve() / "images" / "Scan.png").endswith(
        ": patients.csv (row 3) names it 'scan.png', its name in another letter case: sonoseg does not guess that "
        "the row (patient 'B') means it, nor makes it a patient of its own who may be that one; write its name as "
        "the file has it"
    )
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    by_name = {Path(p).name: row for p, row in zip(manifest["image"], manifest.to_dict("records"))}
    assert by_name[decomposed]["patient"] == "A" and by_name["good.png"]["patient"] == "C"
    # Not B's, and not a patient of its own either (B's other views could then fall on the other side of the split).
    assert by_name["Scan.png"]["status"] == "excluded" and "another letter case" in by_name["Scan.png"]["reason"]
    # A file another row lists exactly is that row's: the row naming it in another case is the problem, as before.
    message = refused({**listed, "Scan.png": "D"})
    assert "1 problem(s)" in message
    assert problem_line(message, tmp_path.resolve() / "images" / "scan.png").endswith(
        "(images/ has Scan.png: the names differ in letter case only, and sonoseg does not guess)"
    )
    # Two files that differ from the row's name in letter case alone: which one is meant is not said; the row is
    # the problem, and each file its own patient, flagged, as before.
    write(tmp_path / "images" / "SCAN.png", lesion_pair(4)[0])
    write(tmp_path / "masks" / "SCAN.png", lesion_pair(4)[1])
    assert problem_line(refused(listed), tmp_path.resolve() / "images" / "scan.png").endswith(
        ": listed in patients.csv (row 3), but images/ has no such image (images/ has SCAN.png and Scan.png: the "
        "names differ in letter case only, and sonoseg does not guess)"
    )


def test_a_patients_csv_cell_with_the_folder_or_without_the_extension_is_told_how_to_name_it(tmp_path):
    """dataset.csv names files by their path under the root, so a user writes images/s0.png in patients.csv too,
    or the name without its extension (masks pair by it): each problem says how a cell names the file."""
    good_folder(tmp_path, 3)
    pd.DataFrame({"image": ["images/good0.png", "good1", "good2.png"], "patient": ["A", "A", "B"]}).to_csv(
        tmp_path / "patients.csv", index=False
    )
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder")
    message = str(error.value)
    assert (
        "listed in patients.csv (row 2), but images/ has no such image (images/ has good0.png: a cell names the "
        "file by its name alone, without its folder)" in message
    )
    assert (
        "listed in patients.csv (row 3), but images/ has no such image (images/ has good1.png: a cell names the "
        "file with its extension)" in message
    )


def test_masks_named_after_their_images_with_a_word_added_are_told_how_the_folder_layout_pairs(tmp_path):
    """NAME_mask.png in masks/ (the most common naming) gave one 'image without mask' and one 'mask without image'
    per file and no advice; each now says how the layout pairs, in one note, so the counts stay one line each."""
    for i in range(3):
        image, mask = lesion_pair(i)
        write(tmp_path / "images" / f"s{i}.png", image)
        write(tmp_path / "masks" / f"s{i}_mask.png", mask)
    write(tmp_path / "masks" / "other_mask.png", lesion_pair(4)[1])  # names no image: a plain orphan
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder")
    note = (
        " (masks/ names masks after their images with a word added, as in s0_mask.png: the folder layout pairs a "
        "mask by its image's own name; rename them, or list the pairs in a dataset.csv: docs/own_data.md)"
    )
    root = tmp_path.resolve()
    for i in range(3):
        assert problem_line(str(error.value), root / "images" / f"s{i}.png").endswith(": image without mask" + note)
        assert problem_line(str(error.value), root / "masks" / f"s{i}_mask.png").endswith(": mask without image" + note)
    assert problem_line(str(error.value), root / "masks" / "other_mask.png").endswith(": mask without image")


def test_a_csv_a_spreadsheet_wrote_with_semicolons_or_tabs_is_read(tmp_path):
    """Excel in locales with a decimal comma writes CSV with ';' (and a text export tabs): read as written, not
    "missing column(s) ['image', 'patient']; found ['image;patient']"."""
    good_folder(tmp_path, 3)
    for separator in (";", "\t"):
        pd.DataFrame({"image": ["good0.png", "good1.png", "good2.png"], "patient": ["007", "007", "8,5"]}).to_csv(
            tmp_path / "patients.csv", index=False, sep=separator, encoding="utf-8-sig"
        )
        samples = data.included(data.ingest(tmp_path, "folder"))
        assert samples["patient"].tolist() == ["007", "007", "8,5"], separator


def test_dataset_csv_listing_an_image_twice_is_refused_like_patients_csv(tmp_path, caplog):
    """One image in two rows became two samples with two masks, scored twice."""
    for i in range(2):
        image, mask = lesion_pair(i)
        write(tmp_path / "scans" / f"s{i}.png", image)
        write(tmp_path / "labels" / f"s{i}.png", mask)
    write(tmp_path / "labels" / "s0_redrawn.png", lesion_pair(0)[1])
    rows = [{"image": f"scans/s{i}.png", "mask": f"labels/s{i}.png", "patient": f"P{i}"} for i in range(2)]
    rows.append({"image": "./scans/s0.png", "mask": "labels/s0_redrawn.png", "patient": "P0"})
    pd.DataFrame(rows).to_csv(tmp_path / "list.csv", index=False)
    for policy in ("fail", "exclude"):
        with pytest.raises(SonosegError) as error:
            data.ingest(tmp_path, "folder", dataset_csv="list.csv", on_bad_sample=policy)
        assert str(error.value) == (
            f"{tmp_path.resolve() / 'list.csv'}: an image may be listed only once:\n"
            "  image 'scans/s0.png' is listed in rows 2 and 4, which differ in mask ('labels/s0.png', "
            "'labels/s0_redrawn.png')"
        )
    # A row alike (here once the cells are trimmed) says one thing: one sample, logged.
    rows[2] = {"image": "scans/s0.png ", "mask": "labels/s0.png", "patient": " P0"}
    (tmp_path / "labels" / "s0_redrawn.png").unlink()  # else a mask that no row names
    pd.DataFrame(rows).to_csv(tmp_path / "list.csv", index=False)
    with caplog.at_level(logging.INFO, logger="sonoseg.data.layouts"):
        manifest = data.ingest(tmp_path, "folder", dataset_csv="list.csv")
    assert data.included(manifest)["sample_id"].tolist() == ["scans__s0", "scans__s1"]
    assert f"{tmp_path.resolve() / 'list.csv'}: image 'scans/s0.png' is listed in rows 2, 4, alike; one is used" in [
        record.getMessage() for record in caplog.records
    ]


def test_a_dataset_csv_may_not_name_or_be_junk(tmp_path):
    """Junk is never read, and the fingerprint leaves it out: a file there would change unseen."""
    good_folder(tmp_path, 2)
    write(tmp_path / ".old" / "good1.png", lesion_pair(1)[0])
    rows = [{"image": "images/good0.png", "mask": "masks/good0.png", "patient": "A"}]
    rows.append({"image": ".old/good1.png", "mask": "masks/good1.png", "patient": "B"})
    pd.DataFrame(rows).to_csv(tmp_path / "list.csv", index=False)
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder", dataset_csv="list.csv")
    assert problem_line(str(error.value), tmp_path.resolve() / ".old" / "good1.png").endswith(
        ": image listed in list.csv row 3 is in the hidden folder .old/, which sonoseg ignores (and the data "
        f"fingerprint leaves out): {tmp_path.resolve() / '.old' / 'good1.png'}"
    )
    shutil.copy(tmp_path / "list.csv", tmp_path / ".list.csv")
    with pytest.raises(SonosegError, match=r"csv: .*\.list\.csv is a hidden file, which sonoseg ignores"):
        data.ingest(tmp_path, "folder", dataset_csv=".list.csv")


# ----------------------------------------------------------------------------- hidden folders


def add_hidden_folders(root: Path, image_folder: str) -> dict[str, str]:
    """What notebooks, version control and macOS archives leave under a dataset; returns each file's
    expected reason in the manifest."""
    files = {
        f"{image_folder}/.ipynb_checkpoints/notes": f"in the hidden folder {image_folder}/.ipynb_checkpoints/",
        "notebooks/.ipynb_checkpoints/look-checkpoint.ipynb": "in the hidden folder notebooks/.ipynb_checkpoints/",
        ".git/HEAD": "in the hidden folder .git/",
        ".git/objects/ab/cdef0123": "in the hidden folder .git/",
        f"__MACOSX/{image_folder}/._x.png": "in __MACOSX/, the metadata a macOS archive carries",
        f"__MACOSX/{image_folder}/x": "in __MACOSX/, the metadata a macOS archive carries",
    }
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\0" * 64)
    write(root / image_folder / ".ipynb_checkpoints" / "x-checkpoint.png", lesion_pair(40)[0])
    return {name: f"not an image file ({reason})" for name, reason in files.items()}


@pytest.mark.parametrize("layout", ["folder", "busi"])
def test_files_in_hidden_folders_and_macosx_are_ignored(tmp_path, layout):
    """They were read as images of a class '.ipynb_checkpoints' (BUSI), or as unsupported image formats
    among the images (a file without extension beside a checkpoint's .png), and stopped a default run."""
    if layout == "folder":
        good_folder(tmp_path)
        image_folder = "images"
    else:
        build_busi(tmp_path)
        image_folder = "benign"
    expected = add_hidden_folders(tmp_path, image_folder)
    root = tmp_path.resolve()
    files = layouts.list_files(root)[0]
    found = layouts.folder_layout(root, files, None) if layout == "folder" else layouts.busi_layout(root, files, False)
    checkpoint = root / image_folder / ".ipynb_checkpoints" / "x-checkpoint.png"
    assert checkpoint not in {c.image for c in found.candidates}
    assert found.orphans[checkpoint] == f"in the hidden folder {image_folder}/.ipynb_checkpoints/"
    assert not found.problem_files
    rows = outcomes(data.ingest(tmp_path, layout, on_bad_sample="exclude"), tmp_path)
    for name, reason in expected.items():
        assert rows[name] == ("ignored", reason), name
    assert not layouts.is_image_name(checkpoint, root) and layouts.is_image_name(checkpoint)
    # A dataset lying in a hidden folder (~/.cache) is read whole: only the folders under the root count.
    assert layouts.junk_reason(root / image_folder, checkpoint) == "in the hidden folder .ipynb_checkpoints/"
    assert layouts.junk_reason(checkpoint.parent, checkpoint) is None


def test_an_image_in_a_hidden_folder_stops_no_run(tmp_path):
    good_folder(tmp_path)
    write(tmp_path / "images" / ".ipynb_checkpoints" / "good0-checkpoint.png", lesion_pair(0)[0])
    write(tmp_path / "__MACOSX" / "images" / "good1.png", lesion_pair(1)[0])
    rows = outcomes(data.ingest(tmp_path, "folder"), tmp_path)
    assert rows["images/.ipynb_checkpoints/good0-checkpoint.png"][0] == "ignored"
    assert rows["__MACOSX/images/good1.png"][0] == "ignored"


# ----------------------------------------------------------------------------- near duplicates


def scanner_image(seed: int, size=(190, 320)) -> tuple[np.ndarray, np.ndarray]:
    """A B-mode-like image of one made-up scanner (BGR for writing) and its lesion mask.

    Every seed shares the field of view, the tissue layers, the text overlay and the depth ruler,
    as images of one machine do; only the speckle and the lesion differ.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    scatter = rng.rayleigh(1.0, size).astype(np.float32)
    speckle = cv2.GaussianBlur(scatter, (0, 0), sigmaX=2.0, sigmaY=0.8)
    depth = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    tissue = 0.8 + 0.4 * np.sin(depth * 9) * np.ones((1, width), np.float32)
    mask = np.zeros(size, np.uint8)
    center = (int(rng.integers(width // 3, 2 * width // 3)), int(rng.integers(height // 3, 2 * height // 3)))
    cv2.ellipse(
        mask,
        center,
        (int(rng.integers(15, 40)), int(rng.integers(10, 25))),
        float(rng.uniform(0, 180)),
        0,
        360,
        255,
        -1,
    )
    tissue[mask > 0] *= 0.15
    gray = np.clip(20 * np.log1p(6 * speckle * tissue) * 4, 0, 255)
    sector = np.zeros(size, np.uint8)
    cv2.ellipse(sector, (width // 2, -40), (height + 30, height + 30), 90, -32, 32, 255, -1)
    gray[sector == 0] = 0
    image = cv2.cvtColor(gray.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    for line, text in enumerate(("ACME US-9  L12-5", "BREAST  58 Hz  DR 60")):
        cv2.putText(image, text, (4, 14 + 14 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1)
    for y in range(10, height, 15):
        cv2.line(image, (width - 12, y), (width - 4, y), (255, 255, 255), 1)
    return image, mask & sector


def add_calipers(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Light-blue '+' marks at the lesion's lateral extent and a measurement label."""
    marked = image.copy()
    ys, xs = np.nonzero(mask)
    for x in (xs.min() - 4, xs.max() + 4):
        cv2.drawMarker(marked, (int(x), int(ys.mean())), (255, 200, 120), cv2.MARKER_CROSS, 9, 1)
    cv2.putText(marked, "D1 1.23cm", (4, mask.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 200, 120), 1)
    return marked


def test_near_duplicate_copies_are_merged_with_their_original(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    originals = {f"orig{i}": scanner_image(i) for i in range(4)}
    for name, (image, mask) in originals.items():
        write(images / f"{name}.png", image)
        write(masks / f"{name}.png", mask)
    image, mask = originals["orig0"]
    write(images / "orig0_reencoded.jpg", image, ".jpg")
    write(masks / "orig0_reencoded.png", mask)
    small = (image.shape[1] * 3 // 4, image.shape[0] * 3 // 4)
    write(images / "orig1_resized.png", cv2.resize(originals["orig1"][0], small, interpolation=cv2.INTER_AREA))
    write(masks / "orig1_resized.png", cv2.resize(originals["orig1"][1], small, interpolation=cv2.INTER_NEAREST))
    write(images / "orig2_brighter.png", np.clip(originals["orig2"][0].astype(int) + 30, 0, 255).astype(np.uint8))
    write(masks / "orig2_brighter.png", originals["orig2"][1])
    write(images / "orig3_calipers.png", add_calipers(*originals["orig3"]))
    write(masks / "orig3_calipers.png", originals["orig3"][1])

    manifest = data.included(data.ingest(tmp_path, "folder")).set_index("sample_id")
    for copy, original in (
        ("orig0_reencoded", "orig0"),
        ("orig1_resized", "orig1"),
        ("orig2_brighter", "orig2"),
        ("orig3_calipers", "orig3"),
    ):
        row = manifest.loc[f"images__{copy}"]  # the later path names the earlier one
        assert row["group"] == manifest.loc[f"images__{original}", "group"], copy
        flag = next(f for f in row["flags"].split(";") if f.startswith("near_duplicate_of:"))
        assert flag.startswith(f"near_duplicate_of:images__{original}(similarity="), flag
        assert float(flag.split("similarity=")[1].split(",")[0]) >= 0.9, flag
        assert "phash_bits=" in flag
    assert manifest.loc[[f"images__orig{i}" for i in range(4)], "group"].nunique() == 4


def test_images_of_one_scanner_are_not_merged(tmp_path):
    """Same field of view, layers and overlay, different patients: every pair is a hash candidate
    here (distance 64), and the texture check keeps them apart."""
    for i in range(6):
        image, mask = scanner_image(100 + i)
        write(tmp_path / "images" / f"p{i}.png", add_calipers(image, mask) if i % 2 else image)
        write(tmp_path / "masks" / f"p{i}.png", mask)
    manifest = data.included(data.ingest(tmp_path, "folder", near_duplicate_distance=64))
    assert manifest["group"].nunique() == 6
    assert not manifest["flags"].str.contains("duplicate").any()
    signatures = [
        duplicates.texture_signature(cv2.cvtColor(scanner_image(100 + i)[0], cv2.COLOR_BGR2RGB)) for i in range(6)
    ]
    worst = max(duplicates.duplicate_similarity(a, b) for k, a in enumerate(signatures) for b in signatures[k + 1 :])
    assert worst < 0.5 < duplicates.DEFAULT_DUPLICATE_SIMILARITY


@pytest.mark.slow
def test_default_phantom_gives_the_paper_split(tmp_path):
    """348 synthetic patients (the default phantom, whatever it draws) split 208 / 70 / 70: the
    duplicate check merges no two different patients."""
    from sonoseg.data import split
    from sonoseg.study import cli

    assert cli.main(["synth", str(tmp_path), "--patients", "348", "--seed", "0"]) == 0
    samples = data.included(data.ingest(tmp_path, "folder"))
    assert samples["group"].nunique() == 348
    result = split.split_samples(samples, seed=0)
    per_part = result.groupby("split")["patient"].nunique()
    assert (per_part["train"], per_part["val"], per_part["test"]) == (208, 70, 70)
    assert result.groupby("split").size().to_dict() == {"train": 416, "val": 140, "test": 140}


# ----------------------------------------------------------------------------- near duplicates as BUSI has them

# BUSI's duplicated images include crops, rescales and contrast changes of one frame. A copy here is made
# from a phantom frame the way such copies arise; docs/near_duplicates.md lists the cases and scores.


def phantom_frame(patient: int, view: int = 1, seed: int = 5, options=None, size=None):
    """One phantom view at the paper's image sizes (BGR for writing) and its mask."""
    image, mask = synth.render(seed, patient, view, size, options)
    return image[:, :, ::-1].copy(), mask


def crop_back(pixels: np.ndarray, left: float, right: float, top: float, bottom: float, nearest: bool = False):
    """Cut these fractions of the width / height at the borders, then resize back to the original size."""
    height, width = pixels.shape[:2]
    kept = pixels[
        round(top * height) : height - round(bottom * height), round(left * width) : width - round(right * width)
    ]
    return cv2.resize(kept, (width, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def rescale(pixels: np.ndarray, factor: float, nearest: bool = False):
    height, width = pixels.shape[:2]
    smooth = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(
        pixels, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_NEAREST if nearest else smooth
    )


def gamma(pixels: np.ndarray, exponent: float) -> np.ndarray:
    table = np.clip(255 * (np.arange(256) / 255) ** exponent, 0, 255).round().astype(np.uint8)
    return table[pixels]


def geometric(transform):
    """A copy made by a geometric transform: the mask follows it (nearest neighbour)."""
    return lambda image, mask: (transform(image, False), transform(mask, True))


def photometric(transform):
    return lambda image, mask: (transform(image), mask)


def combined(image: np.ndarray, mask: np.ndarray):
    """All at once: a one-sided crop (5 / 2 % of the width, 4 / 6 % of the height) resized back, rescaled
    to 0.75 and gamma 0.85 (then written as JPEG, quality 70)."""
    cut = geometric(lambda p, n: rescale(crop_back(p, 0.05, 0.02, 0.04, 0.06, n), 0.75, n))
    image, mask = cut(image, mask)
    return gamma(image, 0.85), mask


# copy name -> (how it is made from (image, mask), the expected zoom and field along x or None (the
# same pixels), its file type)
BUSI_COPIES = {
    "crop3": (geometric(lambda p, n: crop_back(p, 0.03, 0.03, 0.03, 0.03, n)), (1 / 0.94, 0.94), ".png"),
    "crop6": (geometric(lambda p, n: crop_back(p, 0.06, 0.06, 0.06, 0.06, n)), (1 / 0.88, 0.88), ".png"),
    "crop8_left_top": (geometric(lambda p, n: crop_back(p, 0.08, 0, 0.08, 0, n)), (1 / 0.92, 0.92), ".png"),
    "scale0.8": (geometric(lambda p, n: rescale(p, 0.8, n)), (0.8, 1.0), ".png"),
    "scale1.25": (geometric(lambda p, n: rescale(p, 1.25, n)), (1.25, 1.0), ".png"),
    "stretch": (
        photometric(lambda p: np.clip((p.astype(int) - 20) * 255 / 180, 0, 255).astype(np.uint8)),
        None,
        ".png",
    ),
    "gamma0.8": (photometric(lambda p: gamma(p, 0.8)), None, ".png"),
    "brighter20": (photometric(lambda p: np.clip(p.astype(int) + 20, 0, 255).astype(np.uint8)), None, ".png"),
    "jpeg70": (photometric(lambda p: p), None, ".jpg"),  # written as JPEG, quality 70
    "combined": (combined, (0.75 / 0.93, 0.93), ".jpg"),
}

MIXED_PATIENTS = 24  # default phantom: organ presets mixed; the first 8 with both views
BOTH_VIEWS = 8
SAME_PRESET_PATIENTS = 12  # breast only, one image size: similar layout, different lesions and speckle
SAME_PRESET = synth.PhantomOptions(organs={"breast": 1.0})


def build_busi_like(root: Path) -> dict[str, str]:
    """A folder dataset of 36 made patients (44 frames), the BUSI-like copies of 10 of them under other
    patient names, and one byte-identical copy. Returns copy file stem -> source file stem."""
    images, masks = root / "images", root / "masks"
    rows, sources = [], {}
    for patient in range(MIXED_PATIENTS):
        for view in (1, 2) if patient < BOTH_VIEWS else (1,):
            image, mask = phantom_frame(patient, view)
            name = f"a_mixed{patient:02d}_v{view}"
            write(images / f"{name}.png", image)
            write(masks / f"{name}.png", mask)
            rows.append({"image": f"{name}.png", "patient": f"mixed{patient:02d}"})
            sources[name] = (image, mask)
    for patient in range(SAME_PRESET_PATIENTS):
        image, mask = phantom_frame(patient, 1, seed=6, options=SAME_PRESET, size=(432, 646))
        name = f"b_breast{patient:02d}"
        write(images / f"{name}.png", image)
        write(masks / f"{name}.png", mask)
        rows.append({"image": f"{name}.png", "patient": f"breast{patient:02d}"})
    copies = {}
    for number, (copy, (make, _, suffix)) in enumerate(BUSI_COPIES.items()):
        source = f"a_mixed{number + BOTH_VIEWS:02d}_v1"  # patients with one view: a copy is their only twin
        image, mask = make(*sources[source])
        name = f"c_{copy}"
        path = images / f"{name}{suffix}"
        ok, encoded = cv2.imencode(suffix, image, [cv2.IMWRITE_JPEG_QUALITY, 70] if suffix == ".jpg" else [])
        assert ok
        path.write_bytes(encoded.tobytes())
        write(masks / f"{name}.png", mask)
        rows.append({"image": path.name, "patient": name})
        copies[name] = source
    # A byte-identical copy under another name (BUSI files some images twice).
    (images / "d_exact.png").write_bytes((images / "a_mixed00_v1.png").read_bytes())
    write(masks / "d_exact.png", sources["a_mixed00_v1"][1])
    rows.append({"image": "d_exact.png", "patient": "exact"})
    pd.DataFrame(rows).to_csv(root / "patients.csv", index=False)
    return copies


@pytest.fixture(scope="module")
def busi_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("busi_like")
    copies = build_busi_like(root)
    manifest = data.included(data.ingest(root, "folder")).set_index("sample_id")
    return root, copies, manifest


def near_duplicate_flags(cell: str) -> dict[str, dict[str, str]]:
    """'near_duplicate_of:ID(k=v,...)' flags of a manifest cell: ID -> {k: v}."""
    found = {}
    for flag in str(cell).split(";"):
        match = re.fullmatch(r"near_duplicate_of:([^()]+)\((.*)\)", flag)
        if match:
            found[match[1]] = dict(item.split("=", 1) for item in match[2].split(","))
    return found


def test_busi_like_copies_are_merged_with_their_source(busi_like):
    """Every copy (crops of 3-8 % resized back, rescales, contrast, gamma, brightness, JPEG, all at once)
    is flagged with its source, shares its group, and the flag's geometry says what the copy is."""
    _, copies, manifest = busi_like
    for copy, source in copies.items():
        row = manifest.loc[f"images__{copy}"]
        assert row["group"] == manifest.loc[f"images__{source}", "group"], copy
        flags = near_duplicate_flags(row["flags"])
        assert f"images__{source}" in flags, (copy, row["flags"])
        details = flags[f"images__{source}"]
        assert set(details) == {"similarity", "phash_bits", "zoom", "field"}, details
        assert float(details["similarity"]) >= 0.9, (copy, details)
        assert int(details["phash_bits"]) <= 12, (copy, details)
        expected = BUSI_COPIES[copy.removeprefix("c_")][1]
        zoom = [float(v) for v in details["zoom"].split("x")]
        field = [float(v) for v in details["field"].split("x")]
        if expected is None:  # intensity changes: the same pixels
            assert zoom == pytest.approx([1, 1], abs=0.01) and field == pytest.approx([1, 1], abs=0.01), details
        else:
            expected_zoom, expected_field = expected
            assert zoom[0] == pytest.approx(expected_zoom, abs=0.02), (copy, details)
            if expected_field is not None:
                assert field[0] == pytest.approx(expected_field, abs=0.02), (copy, details)
        # Only its source: no other made patient is named.
        assert set(flags) == {f"images__{source}"}, (copy, flags)


def test_busi_like_distinct_patients_are_not_merged(busi_like):
    """36 made patients, 12 of them of one organ preset and image size: no two share a group; the exact
    copy is flagged as before; a patient's two views are one patient whatever the finder says of them."""
    _, copies, manifest = busi_like
    originals = manifest[~manifest.index.str.startswith(("images__c_", "images__d_"))]
    assert originals["patient"].nunique() == MIXED_PATIENTS + SAME_PRESET_PATIENTS
    assert originals.groupby("patient")["group"].nunique().max() == 1
    assert originals.groupby("group")["patient"].nunique().max() == 1, "two different patients merged"
    assert manifest["group"].nunique() == MIXED_PATIENTS + SAME_PRESET_PATIENTS
    for sample_id, row in originals.iterrows():
        for other in near_duplicate_flags(row["flags"]):
            assert manifest.loc[other, "patient"] == row["patient"], (sample_id, other)
    exact = manifest.loc["images__d_exact"]
    assert "duplicate_of:images__a_mixed00_v1" in exact["flags"]
    assert exact["group"] == manifest.loc["images__a_mixed00_v1", "group"]


def test_the_manifest_is_the_same_on_several_threads(busi_like, tmp_path):
    """Threads read the images and confirm the near duplicates: every row, flag and problem the same,
    in the same order, as on one (a bad file among them: problems are listed alike)."""
    root, _, manifest = busi_like
    bad = tmp_path / "with_a_bad_file"
    shutil.copytree(root, bad)
    (bad / "images" / "a_mixed00_v1.png").write_bytes(b"not a png")
    for folder in (root, bad):
        one, four = (data.ingest(folder, "folder", on_bad_sample="exclude", threads=n) for n in (1, 4))
        pd.testing.assert_frame_equal(one, four)
    assert data.included(one).set_index("sample_id")["flags"].str.contains("near_duplicate_of").any()


def test_ingest_takes_its_threads_from_the_job(tmp_path):
    """`snakemake --set-threads ingest=N` reaches ingest through $OMP_NUM_THREADS, which Snakemake sets to a
    job's threads; --threads overrides it, and without either ingest runs on one."""
    synth.write_dataset(tmp_path / "set", patients=1, seed=3, size=(48, 64))
    command = [str(Path(sys.executable).parent / "sonoseg"), "ingest", "--out", str(tmp_path / "m.csv")]
    command += ["--options", f'{{"layout": "folder", "root": "{tmp_path / "set"}"}}']
    for env, extra, expected in ((None, [], 1), ("3", [], 3), ("3", ["--threads", "2"], 2)):
        environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        environment.update({"OMP_NUM_THREADS": env} if env else {})
        run = subprocess.run(command + extra, env=environment, capture_output=True, text=True)
        assert run.returncode == 0 and f"ingest on {expected} thread(s)" in run.stderr, run.stderr[-2000:]


def test_confirmations_on_threads_come_in_order_and_equal_one_threads():
    """Images of one scanner: every pair a candidate. On threads, with few queued at a time, each pair's
    match is the one a single thread finds, in the proposals' order; an error in a thread reaches the
    caller."""
    fingerprints = [duplicates.fingerprint(scanner_image(seed)[0][:, :, ::-1].copy()) for seed in range(10)]
    proposals = duplicates.propose(fingerprints, 64)
    assert len(proposals) == 45
    alone = list(duplicates.confirm(fingerprints, proposals, threads=1))
    assert list(duplicates.confirm(fingerprints, proposals, threads=4)) == alone
    assert len({match.similarity for match in alone}) > 40  # a different value per pair: order shows
    assert list(duplicates.in_threads(lambda n: n * n, range(50), threads=3, queued=2)) == [n * n for n in range(50)]

    def fails_at_7(n):
        if n == 7:
            raise SonosegError("item 7")
        return n

    with pytest.raises(SonosegError, match="item 7"):
        list(duplicates.in_threads(fails_at_7, range(50), threads=3, queued=2))


def test_near_duplicate_search_can_be_turned_off(busi_like):
    """near_duplicate_distance -1: no near-duplicate search; identical pixels are still duplicates."""
    root, copies, _ = busi_like
    manifest = data.included(data.ingest(root, "folder", near_duplicate_distance=-1)).set_index("sample_id")
    assert not manifest["flags"].str.contains("near_duplicate_of").any()
    assert "duplicate_of:images__a_mixed00_v1" in manifest.loc["images__d_exact", "flags"]
    assert manifest["group"].nunique() == MIXED_PATIENTS + SAME_PRESET_PATIENTS + len(copies)


def test_proposal_distance_is_in_hash_bits():
    """near_duplicate_distance counts bits of a 64-bit random-hyperplane hash: d bits <-> an angle of
    d/64 of a half turn between the thumbnails (12 bits: correlation 0.83); 64 bits take every pair."""
    assert duplicates.bits_of(1.0) == 0 and duplicates.bits_of(-1.0) == 64
    assert duplicates.bits_of(np.cos(np.pi * 12 / 64)) == pytest.approx(12)
    rng = np.random.default_rng(0)
    noise = [duplicates.fingerprint(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)) for _ in range(4)]
    assert len(duplicates.propose(noise, 64)) == 6 and duplicates.propose(noise, -1) == []


def rescanned(seed: int, patient: int, speckle_seed: int) -> np.ndarray:
    """The same anatomy (tissue, lesion, field of view) scanned again: new scatterers, a new frame."""
    scan = synth._scan
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synth, "_scan", lambda rng, echo, fov: scan(np.random.default_rng(speckle_seed), echo, fov))
        return synth.render(seed, patient, 1)[0]


def test_the_same_anatomy_scanned_again_is_another_frame():
    """Speckle is what identifies a frame: the same tissue and lesion with new speckle shares its layout
    and edges (the thumbnails are as near as a copy's) but is not a copy; a copy of either frame is."""
    for patient in range(3):
        first, again = synth.render(7, patient, 1)[0], rescanned(7, patient, 1000 + patient)
        a, b = duplicates.fingerprint(first), duplicates.fingerprint(again)
        match = duplicates.match_near_duplicate(a, b)
        assert match.bits < 16, match  # near in layout, as copies are (2.8-12.3 bits over 30 patients)
        assert match.similarity < 0.6 < duplicates.DEFAULT_DUPLICATE_SIMILARITY, match
        copy = duplicates.fingerprint(crop_back(again, 0.05, 0.05, 0.05, 0.05))
        assert duplicates.match_near_duplicate(b, copy).similarity >= 0.9


# ----------------------------------------------------------------------------- the fixtures themselves

# Builds every image tree of this module's builders in a fresh interpreter and prints one sha256 over
# the files' names and bytes. A seed taken from hash() of a string would change with PYTHONHASHSEED.
FIXTURE_DIGEST = """
import hashlib, sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
import test_data as fixtures

root = Path(sys.argv[2])
fixtures.build_bad_folder(root / "bad")
fixtures.build_busi(root / "busi")
fixtures.build_busbra(root / "busbra")
for seed in (0, 101):
    image, mask = fixtures.scanner_image(seed)
    fixtures.write(root / "scanner" / f"{seed}.png", fixtures.add_calipers(image, mask))
    fixtures.write(root / "scanner" / f"{seed}_mask.png", mask)
digest = hashlib.sha256()
for path in sorted(p for p in root.rglob("*") if p.is_file()):
    digest.update(path.relative_to(root).as_posix().encode() + b"\\0" + path.read_bytes())
print(digest.hexdigest())
"""


def fixture_digest(root: Path, hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", FIXTURE_DIGEST, str(Path(__file__).parent), str(root)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_fixtures_are_the_same_bytes_under_any_hash_seed(tmp_path):
    """The fixtures' seeds are plain numbers or CRC-32s of names, never hash(): two interpreters with
    different PYTHONHASHSEED write the same bytes."""
    first, second = fixture_digest(tmp_path / "a", "1"), fixture_digest(tmp_path / "b", "2")
    assert len(first) == 64 and first == second, (first, second)


def test_masks_that_would_be_misread_are_refused_naming_the_file(tmp_path):
    """A probe's own dataset: an inverted mask read as a lesion over 94 % of the image, a red lesion on a white
    page as 100 %, a VOC-style 0/1/255 label map as its 255 border alone, all without a word."""
    _, mask = lesion_pair(3)
    lesion = mask > 0
    cases = {
        "inverted.png": np.where(lesion, 0, 255).astype(np.uint8),
        "red_on_white.png": np.where(lesion[..., None], np.uint8([0, 0, 255]), np.uint8([255, 255, 255])),
        "voc.png": np.where(lesion, 1, 0).astype(np.uint8),
    }
    border = cv2.dilate(lesion.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~lesion
    cases["voc.png"][border] = 255  # PASCAL VOC's "ignore" ring
    expected = {
        "inverted.png": "an inverted mask (lesion black on white)",
        "red_on_white.png": "a coloured lesion on a white background",
        "voc.png": "a label map whose 1 is the lesion and 255 something else",
    }
    for name, pixels in cases.items():
        path = write(tmp_path / name, pixels)
        with pytest.raises(SonosegError, match=re.escape(expected[name])) as error:
            imageio.read_mask(path)
        assert str(error.value).startswith(f"{path}: ")
    # PASCAL VOC's own masks are palette PNGs: decoded, index 1 is dark red and 255 light grey, both "lesion".
    from PIL import Image

    voc = Image.fromarray(cases["voc.png"], mode="P")
    voc.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192])
    voc.save(tmp_path / "voc_palette.png")
    with pytest.raises(SonosegError, match="mask indices 0, 1 and 255"):
        imageio.read_mask(tmp_path / "voc_palette.png")
    binary = Image.fromarray(lesion.astype(np.uint8), mode="P")
    binary.putpalette([0, 0, 0, 255, 255, 255])
    binary.save(tmp_path / "binary_palette.png")
    assert np.array_equal(imageio.read_mask(tmp_path / "binary_palette.png").pixels, lesion)
    # A network's prediction is scored as it is, even one over the whole frame (a collapsed training).
    assert imageio.read_mask(tmp_path / "inverted.png", drawn=False).pixels.mean() > 0.5
    # What stays readable: the lesion white on black (0/255 or 0/1), a large lesion off the edge, an
    # anti-aliased edge with a few pixels at 1, a lesion at 255 over a background of 1, a binary palette PNG,
    # and an empty mask.
    big = np.zeros((64, 96), np.uint8)
    big[2:-2, 2:-2] = 255
    smooth = cv2.GaussianBlur(mask, (5, 5), 2)
    smooth[smooth == 2] = 1
    for name, pixels in {
        "plain.png": mask,
        "ones.png": (mask > 0).astype(np.uint8),
        "big.png": big,
        "smooth.png": smooth,
        "background_1.png": np.where(lesion, 255, 1).astype(np.uint8),
        "empty.png": np.zeros_like(mask),
    }.items():
        assert (
            imageio.read_mask(write(tmp_path / name, pixels)).pixels.sum()
            == (pixels >= (128 if pixels.max() > 1 else 1)).sum()
        )


def test_a_mask_of_another_size_is_named_and_a_scaled_one_told_how_to_fix_it(tmp_path):
    image, mask = lesion_pair(4)
    write(tmp_path / "images" / "half.png", image)
    write(tmp_path / "masks" / "half.png", cv2.resize(mask, (48, 32), interpolation=cv2.INTER_NEAREST))
    write(tmp_path / "images" / "odd.png", image)
    write(tmp_path / "masks" / "odd.png", cv2.resize(mask, (50, 40), interpolation=cv2.INTER_NEAREST))
    write(tmp_path / "images" / "padded.png", image)
    write(tmp_path / "masks" / "padded.png", np.pad(mask, ((0, 0), (0, 1))))  # a pixel wider: not a scale
    write(tmp_path / "images" / "good.png", image)
    write(tmp_path / "masks" / "good.png", mask)
    manifest = data.ingest(tmp_path, "folder", on_bad_sample="exclude")
    reason = dict(zip(manifest["image"].map(lambda p: Path(p).name), manifest["reason"]))
    assert f"{tmp_path / 'masks' / 'half.png'} is 48x32" in reason["half.png"]
    assert "the mask is the image scaled by 0.5; resize it to 96x64 with nearest-neighbour" in reason["half.png"]
    assert "is 50x40 (width x height, pixels)" in reason["odd.png"] and "scaled by" not in reason["odd.png"]
    assert "is 97x64 (width x height, pixels)" in reason["padded.png"] and "scaled by" not in reason["padded.png"]
