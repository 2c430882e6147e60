"""The evidence's dimensions: patient-level cross-validation (every patient tested once, no leak),
coloured marks as data (inpainted alike in training, prediction and serving), and the tables' CIs."""

import re

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, run_snakemake, write_config

from sonoseg.analysis import tables
from sonoseg.data import preprocess, split, synth
from sonoseg.errors import SonosegError
from sonoseg.serving import infer, modelio


def samples(patients: int, kinds: int = 3) -> pd.DataFrame:
    rows = [
        {"sample_id": f"P{p}_v{v}", "patient": f"P{p}", "group": f"P{p}", "kind": f"k{p % kinds}"}
        for p in range(patients)
        for v in (1, 2)
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_every_patient_is_tested_exactly_once_and_never_trained_on_in_its_fold(folds):
    frame = split.fold_split(samples(31), seed=4, folds=folds, stratify="kind")
    frame = frame.merge(samples(31)[["sample_id", "kind"]], on="sample_id")
    assert sorted(frame["fold"].unique()) == list(range(folds))
    tested = frame[frame["split"] == "test"]
    assert tested.groupby("patient")["fold"].nunique().eq(1).all()
    assert set(tested["patient"]) == {f"P{p}" for p in range(31)}  # every patient once
    for fold, parts in frame.groupby("fold"):
        assert len(parts) == 62  # every sample has a part in every fold
        per_patient = parts.groupby("patient")["split"].nunique()
        assert per_patient.eq(1).all()  # a patient's two views stay together
        test = set(parts.loc[parts["split"] == "test", "patient"])
        fitted = set(parts.loc[parts["split"].isin(["train", "val"]), "patient"])
        assert not test & fitted and len(parts.loc[parts["split"] == "val"]) > 0
        # Stratified: each fold's test part gets each kind in proportion (off by less than two groups).
        shares = parts[parts["split"] == "test"].drop_duplicates("patient")["kind"].value_counts()
        expected = parts.drop_duplicates("patient")["kind"].value_counts() / folds
        assert (abs(shares.reindex(expected.index, fill_value=0) - expected) < 2).all(), fold
    split.check_no_leak(frame, "folds")


def test_folds_are_seeded_and_one_fold_is_the_plain_split():
    a = split.fold_split(samples(20), seed=1, folds=4)
    assert a.equals(split.fold_split(samples(20), seed=1, folds=4))
    assert not a.equals(split.fold_split(samples(20), seed=2, folds=4))
    plain = split.split_samples(samples(20), 1)
    assert split.fold_split(samples(20), seed=1, folds=1).equals(plain)
    with pytest.raises(SonosegError, match="need at least 8 patient groups"):
        split.fold_split(samples(7), seed=1, folds=4)


def test_samples_of_part_reads_one_fold(tmp_path):
    frame = split.fold_split(samples(12), seed=0, folds=3)
    manifest = samples(12).assign(status="included", image="x", mask="y", height=1, width=1)
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    frame.to_csv(tmp_path / "split.csv", index=False)
    for fold in range(3):
        test = split.samples_of_part(tmp_path / "manifest.csv", tmp_path / "split.csv", "test", fold)
        expected = frame[(frame["fold"] == fold) & (frame["split"] == "test")]["sample_id"]
        assert sorted(test["sample_id"]) == sorted(expected)
    with pytest.raises(SonosegError, match="no fold 3"):
        split.samples_of_part(tmp_path / "manifest.csv", tmp_path / "split.csv", "test", 3)


def test_no_folds_test_patients_reach_its_training_in_the_dag(workflow_copy):
    """With three folds and the caliper ablation: every training job reads the train and validation
    caches of its own fold only, never a test cache; predictions read their own fold's test cache."""
    config = {
        **TINY,
        "split": {"folds": 3},
        "ablation": {"marks": True},
        "synthetic": {**TINY["synthetic"], "patients": 9},
    }
    dry = run_snakemake(
        ["all", "-n", "-p", "--cores", "1", "--configfile", write_config(workflow_copy, config)], workflow_copy
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    trainings = re.findall(r"sonoseg train .*", dry.stdout)
    assert len(trainings) == 3 * (2 * 2 + 2 + 2)  # folds x (2 networks x 2 marks + 2 candidates + 2 steps)
    for command in trainings:
        run_fold = re.search(r"runs/\S+?/fold(\d)/seed\d/model\.pt", command)[1]
        caches = re.findall(r"data/cache/(keep|inpaint)/fold(\d)/(\w+)\.npz", command)
        assert {part for *_, part in caches} == {"train", "val"}
        assert {fold for _, fold, _ in caches} == {run_fold}
    for command in re.findall(r"sonoseg predict --model .*", dry.stdout):
        run_fold = re.search(r"runs/\S+?/fold(\d)/seed\d/model\.pt", command)[1]
        if "/external/" in command:  # an external dataset: all of it, by every fold's models
            assert re.search(r"--data \S+/external/\w+/cache/\w+/test\.npz .*--fold 0 ", command), command
        else:
            assert re.search(rf"data/cache/\w+/fold{run_fold}/test\.npz .*--fold {run_fold} ", command), command
    # The ablation's twins read the other condition's caches.
    assert re.search(r"runs/unet--marks-inpaint/fold0/seed0/model\.pt", dry.stdout)
    assert "tables/marks_ablation.csv" in dry.stdout


def test_inpainted_marks_are_recorded_and_refused_when_they_differ(tmp_path):
    """The cache records the marks setting and each image's count of changed pixels; a model trained
    on inpainted images records it; prediction refuses a cache treated otherwise, and serving
    inpaints a new image as training did."""
    options = synth.PhantomOptions(calipers=True)
    rows = []
    for patient in range(3):
        image, mask = synth.render(7, patient, 1, (96, 128), options)
        path = tmp_path / f"p{patient}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(tmp_path / f"p{patient}_mask.png"), mask)
        rows.append({"sample_id": f"p{patient}", "image": str(path), "mask": str(tmp_path / f"p{patient}_mask.png")})
    frame = pd.DataFrame(rows)
    preprocess.build_cache(frame, 32, tmp_path / "inpaint.npz", "area", "inpaint")
    preprocess.build_cache(frame, 32, tmp_path / "keep.npz", "area", "keep")
    inpainted, kept = preprocess.load_cache(tmp_path / "inpaint.npz"), preprocess.load_cache(tmp_path / "keep.npz")
    assert preprocess.cache_marks(inpainted) == "inpaint" and preprocess.cache_marks(kept) == "keep"
    assert (inpainted["mark_pixels"] > 0).all() and (kept["mark_pixels"] == 0).all()
    assert not np.array_equal(inpainted["images"], kept["images"])
    # A model file trained on inpainted images.
    from sonoseg.networks import models

    network = models.build("lighter_unet_c1")
    modelio.save_model(
        tmp_path / "model.pt",
        network="lighter_unet_c1",
        state_dict=network.state_dict(),
        input_size=32,
        input_interpolation="area",
        input_marks="inpaint",
        normalization=None,
    )
    with pytest.raises(SonosegError, match="marks keep, but .* trained on images with marks inpaint"):
        infer.predict(
            tmp_path / "model.pt", tmp_path / "keep.npz", frame.assign(height=96, width=128), tmp_path / "out"
        )
    predictor = infer.torch_predictor(tmp_path / "model.pt", "cpu")
    assert predictor.marks == "inpaint"
    raw = cv2.cvtColor(cv2.imread(rows[0]["image"]), cv2.COLOR_BGR2RGB)
    prepared = predictor.prepare(raw)
    expected = preprocess.resize_image(preprocess.remove_marks(raw, "inpaint")[0], 32, "area")
    assert np.allclose(prepared[0], torch.from_numpy(expected).permute(2, 0, 1).numpy() / 255)
    assert np.array_equal((prepared[0] * 255).round().astype(np.uint8), inpainted["images"][0].transpose(2, 0, 1))


def test_a_table_cell_never_claims_a_spread_it_has_not_measured():
    row = {"dice_mean": 0.8123, "dice_std": 0.0, "seeds": 1, "dice_per_seed": "0.8123"}
    assert tables.seeds_cell(pd.Series(row)) == "0.812 (1 seed)"
    # A floor or a reference trains nothing: it has no seed to count (a reviewer read "(1 seed)" as one training).
    for method in ("threshold_baseline", "caliper_reader"):
        assert tables.seeds_cell(pd.Series({**row, "network": method})) == "0.812 (no training)"
    assert tables.seeds_cell(pd.Series({**row, "network": "unet"})) == "0.812 (1 seed)"
    row = {"dice_mean": 0.81, "dice_std": 0.01, "seeds": 2, "dice_per_seed": "0.80 0.82"}
    assert tables.seeds_cell(pd.Series(row)) == "0.810 (seeds: 0.800, 0.820)"
    row = {"dice_mean": 0.81, "dice_std": 0.01, "seeds": 5, "dice_per_seed": "0.80 0.82 0.81 0.80 0.82"}
    assert tables.seeds_cell(pd.Series(row)) == "0.810 ± 0.010"
