"""Ingest and the integrity check: every bad case, under both policies, on trees built here."""

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from sonoseg import data, synth
from sonoseg.errors import SonosegError


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
        "no_mask.png": "image without mask", "no_image.png": "mask without image", "zero.png": "empty file",
        "truncated.png": "truncated PNG", "garbage.png": "not a readable image", "size_mismatch.png": "but its mask is",
    }


PROBLEMS_TOTAL = 6


def test_fail_lists_every_problem_at_once(tmp_path):
    expected = build_bad_folder(tmp_path)
    with pytest.raises(SonosegError) as error:
        data.ingest(tmp_path, "folder", on_bad_sample="fail")
    message = str(error.value)
    assert f"{PROBLEMS_TOTAL} problem(s)" in message
    for name, keyword in expected.items():
        line = next(l for l in message.splitlines() if name in l)
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
        tmp_path / "list.csv", index=False)
    with pytest.raises(SonosegError, match="outside the dataset root"):
        data.ingest(tmp_path, "folder", dataset_csv="list.csv")


def test_explicit_csv_and_patients(tmp_path):
    for i in range(3):
        image, mask = lesion_pair(i)
        write(tmp_path / "scans" / f"s{i}.png", image)
        write(tmp_path / "labels" / f"s{i}_label.png", mask)
    pd.DataFrame([{"image": f"scans/s{i}.png", "mask": f"labels/s{i}_label.png", "patient": "A" if i < 2 else "B",
                   "view": i, "spacing": 0.1} for i in range(3)]).to_csv(tmp_path / "list.csv", index=False)
    manifest = data.ingest(tmp_path, "folder", dataset_csv="list.csv", pixel_spacing="spacing")
    samples = data.included(manifest)
    assert len(samples) == 3 and samples["patient"].tolist() == ["A", "A", "B"]
    assert samples["pixel_spacing"].astype(float).tolist() == [0.1] * 3


def build_busi(root: Path):
    for label, count in (("benign", 3), ("malignant", 2), ("normal", 2)):
        for i in range(1, count + 1):
            image, mask = lesion_pair(hash((label, i)) % 1000)
            if label == "normal":
                mask = np.zeros_like(mask)
            write(root / label / f"{label} ({i}).png", image)
            write(root / label / f"{label} ({i})_mask.png", mask)
    # A second lesion of benign (2), and a duplicate of benign (1) filed under malignant.
    second = np.zeros((64, 96), np.uint8)
    second[5:15, 5:15] = 255
    write(root / "benign" / "benign (2)_mask_1.png", second)
    image, mask = lesion_pair(hash(("benign", 1)) % 1000)
    write(root / "malignant" / "malignant (3).png", image)
    write(root / "malignant" / "malignant (3)_mask.png", mask)


def test_busi_layout(tmp_path):
    build_busi(tmp_path)
    manifest = data.ingest(tmp_path, "busi")
    samples = data.included(manifest).set_index("sample_id")
    assert len(samples) == 8
    assert samples.loc["benign__benign_1", "class"] == "benign"
    assert "merged_masks:2" in samples.loc["benign__benign_2", "flags"]
    assert samples.loc["benign__benign_2", "mask"].count("|") == 1
    assert "empty_mask" in samples.loc["normal__normal_1", "flags"]
    assert samples.loc["malignant__malignant_3", "group"] == samples.loc["benign__benign_1", "group"]
    assert "duplicate_of:benign__benign_1" in samples.loc["malignant__malignant_3", "flags"]
    without_normal = data.ingest(tmp_path, "busi", include_normal=False)
    normal_rows = without_normal[without_normal["class"] == "normal"]
    assert (normal_rows["status"] == "excluded").all() and len(normal_rows) == 2
    assert normal_rows["reason"].str.contains("include_normal").all()


def test_busbra_layout(tmp_path):
    for patient, views in (("0001", "lr"), ("0002", "l"), ("0003", "lr")):
        for view in views:
            image, mask = lesion_pair(int(patient) * 10 + ord(view))
            write(tmp_path / "Images" / f"bus_{patient}-{view}.png", image)
            write(tmp_path / "Masks" / f"mask_{patient}-{view}.png", mask)
    pd.DataFrame({"ID": ["bus_0001-l", "bus_0001-r", "bus_0002-l", "bus_0003-l", "bus_0003-r"],
                  "Pathology": ["benign", "benign", "malignant", "benign", "benign"]}).to_csv(
        tmp_path / "bus_data.csv", index=False)
    manifest = data.ingest(tmp_path, "busbra")
    samples = data.included(manifest)
    assert len(samples) == 5
    assert samples.groupby("patient").size().to_dict() == {"0001": 2, "0002": 1, "0003": 2}
    assert samples["meta_Pathology"].tolist().count("malignant") == 1
    assert (manifest.loc[manifest["image"].str.endswith("bus_data.csv"), "status"] == "metadata").all()


def test_missing_root_and_bad_layout(tmp_path):
    with pytest.raises(SonosegError, match="folder not found"):
        data.ingest(tmp_path / "nope", "folder")
    with pytest.raises(SonosegError, match="not one of"):
        data.ingest(tmp_path, "dicom")
