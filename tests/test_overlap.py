"""An external dataset that holds images of the study's own data (or a held-out set that holds the
development set's) is refused, or those patients are left out when the user asks: sonoseg.data.overlap."""

import csv
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_snakemake, write_config

from sonoseg import data
from sonoseg.data import overlap, split, synth
from sonoseg.errors import SonosegError
from sonoseg.study import cli


def add_image(root: Path, name: str, patient: str, image: np.ndarray, mask: np.ndarray, quality: int = 0) -> None:
    """An image (BGR; JPEG when quality is given) and its mask, listed in the folder's patients.csv."""
    suffix = ".jpg" if quality else ".png"
    cv2.imwrite(str(root / "images" / f"{name}{suffix}"), image, [cv2.IMWRITE_JPEG_QUALITY, quality] if quality else [])
    cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)
    with open(root / "patients.csv", "a", newline="") as handle:
        csv.writer(handle).writerow([f"{name}{suffix}", patient, 1] + [""] * len(synth.METADATA_COLUMNS))


def recropped(pixels: np.ndarray, nearest: bool = False) -> np.ndarray:
    """A copy as public sets re-publish one: 4 % cut at each side, resized back, then to 0.8."""
    height, width = pixels.shape[:2]
    cut = pixels[round(0.04 * height) : round(0.96 * height), round(0.04 * width) : round(0.96 * width)]
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(cut, (round(0.8 * width), round(0.8 * height)), interpolation=interpolation)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A main phantom dataset, and an external one of other phantom patients plus: an identical copy of
    a main image (patient COPY), and a cropped, rescaled, JPEG copy of another (patient RECROP, whose
    second image is a frame of its own)."""
    root = tmp_path_factory.mktemp("overlap")
    main = synth.write_dataset(root / "main", patients=4, seed=3)
    external = synth.write_dataset(root / "external", patients=3, seed=4)
    shutil.copy(main / "images" / "P0001_v1.png", external / "images" / "copied.png")
    shutil.copy(main / "masks" / "P0001_v1.png", external / "masks" / "copied.png")
    with open(external / "patients.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["copied.png", "COPY", 1] + [""] * len(synth.METADATA_COLUMNS))
    image = cv2.imread(str(main / "images" / "P0002_v2.png"))
    mask = cv2.imread(str(main / "masks" / "P0002_v2.png"), cv2.IMREAD_GRAYSCALE)
    add_image(external, "recropped", "RECROP", recropped(image), recropped(mask, nearest=True), quality=80)
    own_image, own_mask = synth.render(9, 0, 1)
    add_image(external, "recrop_other_view", "RECROP", own_image[:, :, ::-1], own_mask)
    # Near duplicates within one dataset (ingest's business, not an overlap): one in each.
    for folder, source, name in ((external, "P0000_v1", "inner_copy"), (main, "P0003_v1", "P0003_copy")):
        image = cv2.imread(str(folder / "images" / f"{source}.png"))
        mask = cv2.imread(str(folder / "masks" / f"{source}.png"), cv2.IMREAD_GRAYSCALE)
        add_image(folder, name, name.upper(), recropped(image), recropped(mask, nearest=True), quality=80)
    return data.included(data.ingest(main, "folder")), data.included(data.ingest(external, "folder")), root


def test_identical_and_near_duplicate_copies_of_main_images_are_found_and_nothing_else(datasets):
    main, external, _ = datasets
    # Each dataset holds a near duplicate of its own (ingest flags it), which is no overlap.
    for samples, pair in ((main, ("P0003_copy.jpg", "P0003_v1.png")), (external, ("inner_copy.jpg", "P0000_v1.png"))):
        flags = dict(zip(samples["image"].map(lambda p: Path(p).name), samples["flags"]))
        assert any("near_duplicate_of:" in flags[name] for name in pair), pair
    found = overlap.find_overlap(external, {"main": main}, near_duplicate_distance=12, near_duplicate_similarity=0.7)
    by_image = {Path(row.image).name: row for row in found.itertuples()}
    assert sorted(by_image) == ["copied.png", "recropped.jpg"]
    assert (by_image["copied.png"].kind, Path(by_image["copied.png"].other_image).name) == ("identical", "P0001_v1.png")
    near = by_image["recropped.jpg"]
    assert (near.kind, Path(near.other_image).name, near.dataset) == ("near_duplicate", "P0002_v2.png", "main")
    assert near.details.startswith("similarity=")
    # On several threads: the same pairs, in the same order.
    pd.testing.assert_frame_equal(found, overlap.find_overlap(external, {"main": main}, 12, 0.7, threads=3))
    # With the near-duplicate search off (-1, as ingest's setting), identical pixels are still found.
    found = overlap.find_overlap(external, {"main": main}, near_duplicate_distance=-1, near_duplicate_similarity=0.7)
    assert [Path(p).name for p in found["image"]] == ["copied.png"]


def test_fail_names_every_shared_image_and_exclude_leaves_their_patients_out(datasets, caplog):
    main, external, _ = datasets
    found = overlap.find_overlap(external, {"main": main}, 12, 0.7)
    tests = split.external_split(external)
    with pytest.raises(SonosegError) as error:
        overlap.apply_policy(tests, found, "fail", "ext")
    message = str(error.value)
    assert "external dataset 'ext': 2 image(s)" in message and "on_overlap: exclude" in message
    assert "copied.png: identical to main's" in message and "recropped.jpg: a near duplicate of main's" in message
    with caplog.at_level(logging.WARNING):
        kept = overlap.apply_policy(tests, found, "exclude", "ext")
    left_out = set(tests["sample_id"]) - set(kept["sample_id"])
    patients = dict(zip(external["sample_id"], external["patient"]))
    # Both of RECROP's images go, the one that is a frame of its own too: the patient was seen.
    assert sorted(patients[s] for s in left_out) == ["COPY", "RECROP", "RECROP"]
    assert len(kept) == len(tests) - 3 and "3 of 10 image(s) (2 patient group(s)) left out" in caplog.text
    # No overlap: the split as it was; every patient shared: nothing left is an error, not an empty test.
    assert overlap.apply_policy(tests, found.iloc[:0], "fail", "ext").equals(tests)
    every_group = pd.DataFrame([{**dict.fromkeys(overlap.OVERLAP_COLUMNS, ""), "group": g} for g in tests["group"]])
    with pytest.raises(SonosegError, match="nothing is left to test"):
        overlap.apply_policy(tests, every_group, "exclude", "ext")


def test_the_split_command_checks_each_dataset_given_and_writes_what_it_found(datasets, tmp_path, capsys):
    main, external, root = datasets
    data.ingest(root / "main", "folder").to_csv(tmp_path / "main.csv", index=False)
    data.ingest(root / "external", "folder").to_csv(tmp_path / "external.csv", index=False)
    clean = data.ingest(root / "main", "folder").query("sample_id.str.contains('P0000')")
    clean.to_csv(tmp_path / "clean.csv", index=False)
    args = ["split", "--manifest", str(tmp_path / "external.csv"), "--external", "--dataset", "ext"]
    out = ["--overlap-out", str(tmp_path / "overlap.csv"), "--out", str(tmp_path / "split.csv")]
    # Checked against a dataset it shares nothing with: every image tested, an empty record.
    assert cli.main([*args, "--against", f"dev={tmp_path / 'clean.csv'}", *out]) == 0
    assert len(pd.read_csv(tmp_path / "split.csv")) == len(external)
    assert pd.read_csv(tmp_path / "overlap.csv").empty
    assert cli.main([*args, "--against", f"dev={tmp_path / 'clean.csv'}", f"main={tmp_path / 'main.csv'}", *out]) == 2
    assert "'ext': 2 image(s) are also in another dataset" in capsys.readouterr().err
    # --against given twice adds up; one name given twice is refused.
    twice = ["--against", f"dev={tmp_path / 'clean.csv'}", "--against", f"main={tmp_path / 'main.csv'}"]
    assert cli.main([*args, *twice, *out]) == 2 and "main's" in capsys.readouterr().err
    assert cli.main([*args, *twice, "--against", f"main={tmp_path / 'clean.csv'}", *out]) == 2
    assert "a dataset is named twice" in capsys.readouterr().err
    assert cli.main([*args, "--against", f"main={tmp_path / 'main.csv'}", "--on-overlap", "exclude", *out]) == 0
    record = pd.read_csv(tmp_path / "overlap.csv")
    assert sorted(Path(p).name for p in record["image"]) == ["copied.png", "recropped.jpg"]
    assert len(pd.read_csv(tmp_path / "split.csv")) == len(external) - 3
    # The generalization table's caption says what the set's tests left out; an empty record says nothing.
    note = overlap.describe(overlap.read_record(tmp_path / "overlap.csv"), "ext")
    assert note.startswith("ext: 2 image(s) also in main (external/ext/overlap.csv); their 2 patient group(s)")
    assert overlap.describe(record.iloc[:0], "ext") == ""
    (tmp_path / "not_a_record.csv").write_text("image,split\na.png,test\n")
    with pytest.raises(SonosegError, match="not_a_record.csv: not an overlap record"):
        overlap.read_record(tmp_path / "not_a_record.csv")
    # --against belongs to an external split.
    assert cli.main(["split", "--manifest", str(tmp_path / "main.csv"), "--against", "x=y", "--out", "z"]) == 2
    assert "are for an external dataset's split (--external)" in capsys.readouterr().err
    assert cli.main(["split", "--manifest", str(tmp_path / "main.csv"), "--on-overlap", "exclude", "--out", "z"]) == 2


@pytest.mark.slow
def test_a_study_whose_external_set_holds_a_copy_of_its_own_image_stops_or_leaves_it_out(workflow_copy):
    """A real Snakemake run: the external set's split checks it against the phantom the study trains on."""
    external = synth.write_dataset(workflow_copy / "ext", patients=2, seed=8, size=(64, 96))
    config = {**TINY, "external_datasets": [{"name": "ext", "root": "ext"}]}
    target = ["results/tiny/external/ext/split.csv", "--cores", "1", "--configfile"]
    run = run_snakemake([*target, write_config(workflow_copy, config)], workflow_copy)
    assert run.returncode == 0, run.stderr[-3000:]
    assert pd.read_csv(workflow_copy / "results/tiny/external/ext/overlap.csv").empty
    assert len(pd.read_csv(workflow_copy / "results/tiny/external/ext/split.csv")) == 4

    phantom = workflow_copy / "results/tiny/data/synthetic"
    shutil.copy(phantom / "images" / "P0003_v2.png", external / "images" / "scan7.png")
    shutil.copy(phantom / "masks" / "P0003_v2.png", external / "masks" / "scan7.png")
    with open(external / "patients.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["scan7.png", "P7", 1] + [""] * len(synth.METADATA_COLUMNS))
    run = run_snakemake([*target, write_config(workflow_copy, config)], workflow_copy)
    log = (workflow_copy / "results/tiny/logs/split_external/ext.log").read_text()
    assert run.returncode != 0 and "scan7.png: identical to main-dataset's" in log and "P0003_v2.png" in log, log[
        -2000:
    ]

    # Left out when asked: the set is tested without it, and the generalization table and its figure say so.
    config["external_datasets"][0]["on_overlap"] = "exclude"
    shown = ["results/tiny/tables/generalization.md", "results/tiny/report/generalization.png"]
    run = run_snakemake([*shown, *target[1:], write_config(workflow_copy, config)], workflow_copy)
    assert run.returncode == 0, run.stderr[-3000:]
    tested = pd.read_csv(workflow_copy / "results/tiny/external/ext/split.csv")
    assert len(tested) == 4 and not tested["sample_id"].str.contains("scan7").any()
    record = pd.read_csv(workflow_copy / "results/tiny/external/ext/overlap.csv")
    assert [Path(p).name for p in record["image"]] == ["scan7.png"]
    per_image = pd.read_csv(workflow_copy / "results/tiny/per_image.csv.gz")
    on_ext = per_image[per_image["dataset"] == "ext"]
    assert len(on_ext) and on_ext["sample_id"].nunique() == 4 and not on_ext["sample_id"].str.contains("scan7").any()
    caption = (workflow_copy / "results/tiny/tables/generalization.md").read_text().split("\n")[0]
    assert (
        "ext: 1 image(s) also in main-dataset (external/ext/overlap.csv); their 1 patient "
        "group(s) are left out of its tests (on_overlap: exclude). Data fingerprint "
    ) in caption
    assert (workflow_copy / "results/tiny/report/generalization.png").stat().st_size > 0


@pytest.mark.slow
def test_a_held_out_set_is_checked_against_the_main_and_the_development_set_and_that_set_against_the_main(
    workflow_copy,
):
    """The workflow's wiring (a dry run): whose manifests each external set's split compares it with."""
    for name, seed in (("dev", 5), ("far", 6)):
        synth.write_dataset(workflow_copy / name, patients=1, seed=seed, size=(48, 64))
    externals = [{"name": "dev", "role": "development", "root": "dev"}, {"name": "far", "root": "far"}]
    targets = [f"results/tiny/external/{name}/split.csv" for name in ("dev", "far")]
    config = write_config(workflow_copy, {**TINY, "external_datasets": externals})
    run = run_snakemake([*targets, "-n", "-p", "--cores", "1", "--configfile", config], workflow_copy)
    assert run.returncode == 0, run.stderr[-3000:]
    commands = {
        name: next(line for line in run.stdout.splitlines() if f"--dataset {name} " in line) for name in ("dev", "far")
    }
    main = "main-dataset=results/tiny/data/manifest.csv"
    assert main in commands["dev"] and "external/dev/manifest.csv --external" in commands["dev"]
    assert "dev=results/tiny/external/dev/manifest.csv" not in commands["dev"]
    assert main in commands["far"] and "dev=results/tiny/external/dev/manifest.csv" in commands["far"]
