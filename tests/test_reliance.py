"""Reliance on the marks, measured directly (issue 27): each network trained with the marks kept is
also tested, image by image, on the same test images with the marks inpainted."""

import re

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import (
    SIZE,
    TINY,
    collect,
    run_snakemake,
    sample_images,
    sheet_row,
    write_config,
    write_model,
    write_patient_manifest,
    write_run_metrics,
    write_samples,
)

from sonoseg.analysis import comparisons
from sonoseg.data import preprocess
from sonoseg.errors import SonosegError
from sonoseg.serving import infer
from sonoseg.study import runsheet


def test_prediction_takes_another_marks_condition_only_as_the_named_exception(tmp_path):
    model = write_model(tmp_path / "model.pt", "unet")  # an older file: trained with marks kept
    samples = write_samples(tmp_path, 2)
    inpainted = tmp_path / "inpaint.npz"
    preprocess.build_cache(samples, SIZE, inpainted, "bilinear", "inpaint")
    with pytest.raises(SonosegError, match="has its coloured marks inpaint"):
        infer.predict(model, inpainted, samples, tmp_path / "refused", device="cpu")
    assert infer.predict(model, inpainted, samples, tmp_path / "reliance", device="cpu", reliance=True) == 2
    kept = tmp_path / "keep.npz"
    preprocess.build_cache(samples, SIZE, kept, "bilinear", "keep")
    with pytest.raises(SonosegError, match="reliance: tests a model trained with marks kept"):
        infer.predict(model, kept, samples, tmp_path / "wrong", device="cpu", reliance=True)


def test_the_run_sheet_tests_every_kept_marks_network_inpainted(workflow_copy):
    config = {
        **TINY,
        "preprocess": {**TINY["preprocess"], "marks": "inpaint"},
        "ablation": {"marks": True},
        "ladder": {"enabled": False},
    }
    path = write_config(workflow_copy, config, "reliance.yaml")
    dry = run_snakemake(["all", "-n", "-p", "--cores", "1", "--configfile", path], workflow_copy)
    assert dry.returncode == 0, dry.stderr[-3000:]
    reliance = (
        r"sonoseg predict --model \S*runs/(\S+)/fold0/seed0/model\.pt --data \S*cache/(\w+)/fold0/test\.npz "
        r"--reliance .*--outdir \S*runs/(\S+)/fold0"
    )
    tested = re.findall(reliance, dry.stdout)
    # The kept-marks twins of both networks, their own models, on the inpainted test cache and (the phantom)
    # on its images rendered without calipers; floors have none.
    assert sorted(tested) == [
        (f"{n}--marks-keep", condition, f"{n}--marks-keep--tested-{condition}")
        for n in ("lighter_unet_c1", "unet")
        for condition in ("inpaint", "unmarked")
    ]
    assert "tables/marks_reliance.csv" in dry.stdout
    assert not re.search(r"sonoseg train .*tested-(inpaint|unmarked)", dry.stdout)  # nothing is trained for it
    # The unmarked images: the same phantom drawn without calipers, cached from the manifest's own samples.
    assert re.search(r"sonoseg synth \S*data/synthetic_unmarked .*--calipers false", dry.stdout)
    assert re.search(
        r"sonoseg preprocess .*--part test .*--marks unmarked .*--dataset-root \S*data/synthetic "
        r"--unmarked-images \S*data/synthetic_unmarked ",
        dry.stdout,
    )
    # A folder dataset has no calipers-free twin: the inpainted test only.
    assert (
        runsheet.reliance_runs([runsheet.Run("unet", "network", "unet", ("0",))], unmarked=False)[0].marks == "inpaint"
    )


def test_an_unmarked_cache_reads_each_image_from_the_calipers_free_twin(tmp_path):
    """The phantom's reliance cache: the manifest's samples (their masks) with each image read from the
    same place in the folder rendered without calipers; a model trained with marks kept may be tested
    on it, as the named exception."""
    root, twin = tmp_path / "synthetic", tmp_path / "synthetic_unmarked"
    rows = []
    for number, image in enumerate(sample_images(2)):
        for folder, pixels in ((root, image), (twin, 255 - image)):
            (folder / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / "images" / f"{number}.png"), pixels)
        cv2.imwrite(str(root / f"{number}_m.png"), (image[:, :, 0] > 150).astype(np.uint8) * 255)
        rows.append({"sample_id": str(number), "image": str(root / "images" / f"{number}.png")})
        rows[-1]["mask"] = str(root / f"{number}_m.png")
    samples = pd.DataFrame(rows).assign(height=[im.shape[0] for im in sample_images(2)], width=90)
    unmarked, twins = tmp_path / "unmarked.npz", tmp_path / "twins.npz"
    preprocess.build_cache(samples, SIZE, unmarked, "bilinear", "unmarked", unmarked=(root, twin))
    # The same samples listed with the twin's images, cached as they are: the same arrays.
    listed_twins = samples.assign(image=[str(twin / "images" / f"{n}.png") for n in samples["sample_id"]])
    preprocess.build_cache(listed_twins, SIZE, twins, "bilinear", "keep")
    read, expected = preprocess.load_cache(unmarked), preprocess.load_cache(twins)
    assert np.array_equal(read["images"], expected["images"]) and str(read["marks"]) == "unmarked"
    assert np.array_equal(read["masks"], expected["masks"])  # the manifest's masks
    with pytest.raises(SonosegError, match="not under the dataset root"):
        preprocess.build_cache(samples, SIZE, tmp_path / "x.npz", "bilinear", "unmarked", unmarked=(twin, root))
    model = write_model(tmp_path / "model.pt", "unet")  # trained with marks kept
    assert infer.predict(model, unmarked, samples, tmp_path / "reliance", device="cpu", reliance=True) == 2
    with pytest.raises(SonosegError, match="has its coloured marks unmarked"):
        infer.predict(model, unmarked, samples, tmp_path / "refused", device="cpu")


def test_reliance_is_paired_image_by_image_and_run_by_run(tmp_path):
    """The same models tested with the marks inpainted lose exactly 0.1 on every image: the paired
    difference is -0.1 with a CI of zero width (unpaired, the images' spread would widen it)."""
    rng = np.random.default_rng(0)
    samples = [f"p{p}v{v}" for p in range(12) for v in (1, 2)]
    dice = rng.uniform(0.5, 0.95, len(samples))
    runs = (("unet", dice), ("unet--tested-inpaint", dice - 0.1))
    for run, values in runs:
        write_run_metrics(tmp_path, run, 0, 0, samples, values)
    manifest = write_patient_manifest(tmp_path / "manifest.csv", samples, [s[:-2] for s in samples])
    rows = [sheet_row("unet"), sheet_row("unet--tested-inpaint", kind="reliance", method="unet", model_from="unet")]
    (tmp_path / "runs" / "unet" / "fold0" / "recipe.json").write_text('{"learning_rate": 0.003, "weight_decay": 0}')
    per_image = collect(tmp_path, rows, manifest)
    # The reliance run's rows name the recipe of the models it tests: unet's.
    assert per_image.loc[per_image["run"] == "unet--tested-inpaint", "learning_rate"].eq(0.003).all()
    table = comparisons.paired_runs(per_image, [("unet", "unet--tested-inpaint")], family="reliance")
    row = table.iloc[0]
    # method is the twin and reference the main run, as in every comparison (docs/statistics.md).
    assert (row["method"], row["reference"]) == ("unet--tested-inpaint", "unet")
    assert row["dice_method"] - row["dice_reference"] == pytest.approx(row["mean_difference"])
    assert row["mean_difference"] == pytest.approx(-0.1)
    assert row["ci_low"] == pytest.approx(-0.1) and row["ci_high"] == pytest.approx(-0.1)
    assert row["family"] == comparisons.paired_family("reliance", 1)
    # Decided as the statistics page decides (Holm's p < 0.05): a 0.1 loss on every image of 12 patients is.
    assert row["p_holm"] < 0.05 and bool(row["significant"])


def test_reliance_runs_come_only_with_the_ablation_and_only_for_kept_marks_networks():
    kept = runsheet.Run("unet", "network", "unet", ("0",), marks="keep")
    inpainted = runsheet.Run("fcn8s", "network", "fcn8s", ("0",), marks="inpaint")
    floor = runsheet.Run("threshold_baseline", "baseline", "threshold_baseline", ("0",), marks="keep")
    added = runsheet.reliance_runs([kept, inpainted, floor])
    assert [(r.name, r.model_from, r.marks, r.uses_model, r.trained) for r in added] == [
        ("unet--tested-inpaint", "unet", "inpaint", True, False)
    ]
    assert runsheet.tested_pairs([kept, *added], "reliance") == [(kept, added[0])]
