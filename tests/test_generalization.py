"""Models that travel: external datasets as a study dimension, the generalization table, post-processing
chosen on validation and augmentation chosen on the development external set (docs/method.md)."""

import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, study_dag, unet_with_external_run, write_patient_manifest, write_run_metrics

from sonoseg.analysis import generalization, results
from sonoseg.data.options import NORMAL_LEFT_OUT
from sonoseg.errors import SonosegError
from sonoseg.serving import infer, modelio
from sonoseg.study import runsheet
from sonoseg.training import augmentation_choice, postprocess
from sonoseg.training.recipe import Recipe, resolve
from sonoseg.training.ultrasound_augment import (
    LESION_CONTRAST,
    P_APPLY,
    P_SAMPLE,
    PARAMETERS,
    RIM_LEVEL,
    SLOPE_DB,
    apply_ultrasound,
    draw_ultrasound,
)

EXTERNALS = [
    {"name": "dev_set", "role": "development", "layout": "folder", "root": "dev"},
    {"name": "far_set", "role": "held_out", "layout": "folder", "root": "far"},
]


def sheet(config_changes: dict) -> list[runsheet.Run]:
    """The run sheet of the repository's config with ``config_changes`` merged over it, as the workflow
    merges a --configfile (schema defaults filled in)."""
    import tempfile

    import yaml

    from sonoseg.study.commands import load_config

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as changes:
        yaml.safe_dump(config_changes, changes)
        changes.flush()
        return runsheet.build(load_config([changes.name]))


# ----------------------------------------------------------------------------- the run sheet


def test_a_floor_is_one_run_per_fold_whatever_the_seeds():
    # Fitted deterministically: under every seed it would be the same run again, counted as several (SD 0).
    runs = sheet({"networks": ["lighter_unet_c1"], "seeds": [0, 1], "baselines": ["threshold_baseline"]})
    floor = next(run for run in runs if run.name == "threshold_baseline")
    assert floor.seeds == ("0",) and next(run for run in runs if run.name == "lighter_unet_c1").seeds == ("0", "1")


def test_flip_twins_pair_each_run_with_its_flip_averaged_twin_where_both_are_in_the_sheet():
    """One prediction job per (run, its flip-averaged twin): on the study's own test images and on each
    external set; a run without a twin (a floor, an augmentation candidate) is predicted alone."""
    runs = sheet(
        {
            "networks": ["unet", "lighter_unet_c1"],
            "predict": {"tta": True},
            "ladder": {"enabled": False},
            "baselines": ["threshold_baseline"],
            "train": {"overrides": {"unet": {"ultrasound_augment": "auto"}}},
            "external_datasets": EXTERNALS,
        }
    )
    twins = runsheet.flip_twins(runs)
    names = {run.name for run in runs}
    assert set(twins) == {"", "--on-dev_set", "--on-far_set"}
    for suffix, bases in twins.items():
        assert sorted(bases) == ["lighter_unet_c1", "unet"]
        for base in bases:
            plain, flipped = runsheet.twin_names(base, suffix)
            assert plain in names and flipped in names and run_named(runs, flipped).tta
    paired = {name for suffix, bases in twins.items() for base in bases for name in runsheet.twin_names(base, suffix)}
    # The floor and the augmentation candidates (and their external tests) have no twin.
    assert "threshold_baseline" in names - paired and "unet--augment-paper--on-dev_set" in names - paired


def run_named(runs, name):
    return next(run for run in runs if run.name == name)


def test_every_network_run_is_tested_on_every_external_dataset_single_tta_and_as_one_ensemble():
    runs = sheet(
        {
            "networks": ["unet", "lighter_unet_c1"],
            "seeds": [0, 1],
            "split": {"folds": 2},
            "predict": {"tta": True},
            "ladder": {"enabled": False},
            "baselines": ["threshold_baseline"],
            "external_datasets": EXTERNALS,
        }
    )
    by_name = {run.name: run for run in runs}
    for network in ("unet", "lighter_unet_c1"):
        for dataset in ("dev_set", "far_set"):
            single = by_name[f"{network}--on-{dataset}"]
            assert (single.kind, single.model_from, single.dataset, single.variant) == (
                "external",
                network,
                dataset,
                "single",
            )
            assert single.folds == ("0", "1") and single.seeds == ("0", "1")  # every training tests it
            assert by_name[f"{network}--tta--on-{dataset}"].variant == "tta"
            ensemble = by_name[f"{network}--ensemble--on-{dataset}"]
            # One prediction by every fold's and seed's model.
            assert (ensemble.folds, ensemble.members, ensemble.member_folds) == (("0",), ("0", "1"), ("0", "1"))
    # Floors and weight-decay candidates are not externally tested; nothing external is trained.
    assert not [r for r in runs if r.dataset and (r.trained or r.method == "threshold_baseline")]
    pairs = {(a.name, b.name) for a, b in runsheet.external_pairs(runs, "tta")}
    assert ("unet--on-far_set", "unet--tta--on-far_set") in pairs and len(pairs) == 4


def test_a_single_training_has_no_external_ensemble_and_the_ablation_twins_are_not_external():
    runs = sheet(
        {
            "networks": ["unet"],
            "seeds": [0],
            "ladder": {"enabled": False},
            "ablation": {"marks": True},
            "external_datasets": EXTERNALS[:1],
        }
    )
    external = sorted(run.name for run in runs if run.kind == "external")
    assert external == ["unet--on-dev_set"]


@pytest.mark.parametrize(
    "externals, message",
    [
        ([{**EXTERNALS[0]}, {**EXTERNALS[1], "role": "development"}], "at most one development set"),
        ([EXTERNALS[0], {**EXTERNALS[1], "name": "dev_set"}], "names must be unique"),
        ([EXTERNALS[0], {**EXTERNALS[1], "name": "Dev_Set"}], "names must be unique, regardless of letter case"),
    ],
)
def test_external_datasets_are_checked(externals, message):
    with pytest.raises(SonosegError, match=message):
        sheet({"networks": ["unet"], "ladder": {"enabled": False}, "external_datasets": externals})


@pytest.mark.parametrize(
    "externals, main, message",
    [
        # One folder under two names, spelled two ways: its images would count twice.
        ([EXTERNALS[0], {**EXTERNALS[1], "root": "./dev/"}], {}, "'dev_set' .* and .*'far_set' .* the same folder"),
        ([EXTERNALS[0], {**EXTERNALS[1], "root": "dev/benign"}], {}, "folders one inside the other"),
        # An external set in the main dataset's folder would be tested on training images.
        (EXTERNALS[1:], {"layout": "busi", "root": "far"}, "config dataset .* tested on images they trained on"),
        # An option another layout reads would be ignored without a word.
        ([{**EXTERNALS[1], "layout": "busbra", "include_normal": True}], {}, "include_normal is read by the busi"),
        ([{**EXTERNALS[1], "layout": "busi", "csv": "list.csv"}], {}, "csv is read by the folder layout only"),
        (EXTERNALS, {"layout": "busbra", "root": "main", "include_normal": True}, "config dataset: include_normal"),
    ],
)
def test_external_datasets_sharing_a_folder_or_given_another_layouts_option_are_refused(externals, main, message):
    with pytest.raises(SonosegError, match=message):
        runsheet.check_external_datasets(externals, main)


def test_external_datasets_in_their_own_folders_pass(tmp_path, monkeypatch):
    runsheet.check_external_datasets(
        [*EXTERNALS, {"name": "b", "layout": "busi", "root": "busi", "include_normal": True, "csv": ""}],
        {"layout": "busbra", "root": "main"},
    )
    # The schema's defaults, filled in by Snakemake's validate, are no option given to another layout.
    defaults = {"csv": "", "include_normal": False, "pixel_spacing": None}
    runsheet.check_external_datasets([{**EXTERNALS[1], **defaults, "layout": "busbra"}], {"layout": "busi"})
    # A folder reached through a link is the folder itself.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "far").mkdir()
    (tmp_path / "link_to_far").symlink_to(tmp_path / "far")
    with pytest.raises(SonosegError, match="the same folder"):
        runsheet.check_external_datasets([EXTERNALS[1], {**EXTERNALS[0], "root": "link_to_far"}])
    # The built-in phantom has no folder of its own to share.
    runsheet.check_external_datasets(EXTERNALS, {"layout": "synthetic", "root": "dev"})


def test_a_dataset_inside_the_study_s_own_folder_is_refused(tmp_path, monkeypatch):
    # The study writes there: the built-in phantom (results/<study>/data/synthetic) would be tested on itself.
    monkeypatch.chdir(tmp_path)
    phantom = {"name": "phantom", "layout": "folder", "root": "results/quick/data/synthetic"}
    with pytest.raises(SonosegError, match="'phantom' .* reads the study's own folder 'results/quick'"):
        runsheet.check_external_datasets([phantom], {"layout": "synthetic"}, "quick")
    with pytest.raises(SonosegError, match="config dataset .* reads the study's own folder"):
        runsheet.check_external_datasets([], {"layout": "folder", "root": "./results/quick/"}, "quick")
    # A folder around the study's: its fingerprint would change with every file the study writes.
    with pytest.raises(SonosegError, match="config dataset .* holds the study's own folder 'results/quick'"):
        runsheet.check_external_datasets([], {"layout": "folder", "root": "."}, "quick")
    with pytest.raises(SonosegError, match="'phantom' .* holds the study's own folder"):
        runsheet.check_external_datasets([{**phantom, "root": "results"}], {"layout": "synthetic"}, "quick")
    # Another study's phantom is data like any other.
    runsheet.check_external_datasets([phantom], {"layout": "synthetic"}, "fair")


def test_one_folder_reached_by_a_bind_mount_is_the_same_folder(tmp_path):
    # Two paths that resolve apart and are one folder to the file system (what a case-insensitive file
    # system does with 'Far' and 'far'): os.path.samefile tells them, resolve() does not.
    far, mounted = tmp_path / "far", tmp_path / "mounted"
    (far / "benign").mkdir(parents=True)
    mounted.mkdir()
    if subprocess.run(["mount", "--bind", str(far), str(mounted)], capture_output=True).returncode:
        pytest.skip("bind mounts need root")
    try:
        with pytest.raises(SonosegError, match="the same folder"):
            runsheet.check_external_datasets(
                [{**EXTERNALS[1], "root": str(far)}, {**EXTERNALS[0], "root": str(mounted)}]
            )
        with pytest.raises(SonosegError, match="folders one inside the other"):
            runsheet.check_external_datasets(
                [{**EXTERNALS[1], "root": str(far)}, {**EXTERNALS[0], "root": str(mounted / "benign")}]
            )
    finally:
        subprocess.run(["umount", str(mounted)], check=True)


def test_an_external_dataset_name_that_would_be_ambiguous_is_refused():
    # (The schema allows letters, digits and _ only; the run sheet says why even without it.)
    with pytest.raises(SonosegError, match="must not contain"):
        runsheet.check_external_datasets([{"name": "a--b"}])


def test_augmentation_auto_needs_a_development_set_and_makes_two_candidates_per_network():
    config = {"networks": ["unet", "fcn8s"], "seeds": [0, 1], "ladder": {"enabled": False}}
    with pytest.raises(SonosegError, match="development"):
        sheet({**config, "train": {"ultrasound_augment": "auto"}, "external_datasets": EXTERNALS[1:]})
    runs = sheet(
        {**config, "train": {"overrides": {"unet": {"ultrasound_augment": "auto"}}}, "external_datasets": EXTERNALS}
    )
    by_name = {run.name: run for run in runs}
    assert by_name["unet"].augmentation_from == "unet" and not by_name["fcn8s"].augmentation_from
    candidates = runsheet.augmentation_choices(runs)
    assert set(candidates) == {"unet"} and set(candidates["unet"]) == {"paper", "ultrasound"}
    paper, ultrasound = candidates["unet"]["paper"], candidates["unet"]["ultrasound"]
    assert (paper.recipe.ultrasound_augment, ultrasound.recipe.ultrasound_augment) == (False, True)
    assert paper.seeds == ultrasound.seeds == ("0",)  # the selection seed, which the network's run adopts
    pairs = {(a.name, b.name) for a, b in runsheet.augmentation_pairs(runs)}
    assert pairs == {
        ("unet--augment-paper", "unet--augment-ultrasound"),
        ("unet--augment-paper--on-dev_set", "unet--augment-ultrasound--on-dev_set"),
        ("unet--augment-paper--on-far_set", "unet--augment-ultrasound--on-far_set"),
    }


# ----------------------------------------------------------------------------- the DAG


def _external_tiny(workflow_copy, tta=True, **train):
    """The tiny study with two phantom folders as external datasets (dev and held out)."""
    from sonoseg.data import synth

    for name, seed in (("dev", 5), ("far", 6)):
        synth.write_dataset(workflow_copy / name, patients=2, seed=seed, size=(48, 64))
    train = {**TINY["train"], **train}
    return {**TINY, "seeds": [0, 1], "train": train, "predict": {"tta": tta}, "external_datasets": EXTERNALS}


CHOICES = ("train", "recipe", "select_recipe", "choose_postprocess", "choose_augmentation")


@pytest.mark.slow
@pytest.mark.parametrize("tta", [True, False], ids=["flip twins", "external sets grouped"])
def test_external_images_never_reach_training_and_only_the_development_set_reaches_a_choice(workflow_copy, tta):
    overrides = {**TINY["train"]["overrides"], "unet": {"ultrasound_augment": "auto"}}
    labels, ancestors = study_dag(workflow_copy, _external_tiny(workflow_copy, tta, overrides=overrides))
    rule_of = {n: label.split("\\n")[0] for n, label in labels.items()}
    # Without flip twins, each network training's external sets are predicted by one job.
    assert any(rule.startswith("predict_on") for rule in rule_of.values()) is not tta
    external = {n for n, label in labels.items() if rule_of[n].endswith("_external")}
    held_out = {n for n in external if "far_set" in labels[n]}
    development = external - held_out
    assert held_out and development  # ingest, split and cache of each
    test_cache = {n for n, rule in rule_of.items() if rule == "preprocess" and "part: test" in labels[n]}
    choices = [n for n, rule in rule_of.items() if rule in CHOICES]
    assert {rule_of[n] for n in choices} == set(CHOICES)
    for node in choices:
        assert not ancestors(node) & (held_out | test_cache), labels[node]
    # The development set reaches the networks' trainings through their augmentation choice only.
    reached = [n for n in choices if ancestors(n) & development]
    choice = [n for n, rule in rule_of.items() if rule == "choose_augmentation"]
    assert reached and all(rule_of[n] == "choose_augmentation" or set(choice) & ancestors(n) for n in reached)
    # ... and the external sets are tested: every network's predictions on them.
    assert any(held_out & ancestors(n) for n, rule in rule_of.items() if rule == "generalization")


@pytest.mark.slow
def test_without_an_augmentation_choice_nothing_external_reaches_a_training_or_a_choice(workflow_copy):
    labels, ancestors = study_dag(workflow_copy, _external_tiny(workflow_copy))
    rule_of = {n: label.split("\\n")[0] for n, label in labels.items()}
    external = {n for n, rule in rule_of.items() if rule.endswith("_external")}
    for node in (n for n, rule in rule_of.items() if rule in CHOICES):
        assert not ancestors(node) & external, labels[node]
    # The post-processing choice reads its fold's validation images, never the test part's.
    postprocess_jobs = [n for n, rule in rule_of.items() if rule == "choose_postprocess"]
    assert postprocess_jobs
    for node in postprocess_jobs:
        caches = [labels[n] for n in ancestors(node) if rule_of[n] == "preprocess"]
        assert caches and all("part: test" not in label for label in caches)


# ----------------------------------------------------------------------------- the generalization table


def _long_table(tmp_path):
    """Two patients in-domain (one image each: view 2 and none; BUSI's classes malignant and normal) and
    three patients on one external set (its manifest without a view or class column), made by hand."""
    inside = write_patient_manifest(tmp_path / "inside.csv", ["a", "b"], ["P1", "P2"])
    frame = pd.read_csv(inside).assign(view=["2", ""], **{"class": ["malignant", "normal"]})
    frame.assign(image=["/data/images/rené (1).png", "/data/images/病例.png"]).to_csv(inside, index=False)
    outside = write_patient_manifest(tmp_path / "outside.csv", ["a", "x", "y"], ["Q1", "Q2", "Q3"])
    write_run_metrics(tmp_path, "unet", 0, 0, ["a", "b"], [0.8, 0.6])
    # Two trainings (folds) tested the external set; an image's Dice is their mean.
    write_run_metrics(tmp_path, "unet--on-ext", 0, 0, ["a", "x", "y"], [0.5, 0.3, 0.1])
    write_run_metrics(tmp_path, "unet--on-ext", 1, 0, ["a", "x", "y"], [0.7, 0.3, 0.3])
    rows = unet_with_external_run(tmp_path)
    return results.collect_per_image(tmp_path, rows, inside, {"ext": outside})


def test_collect_joins_each_dataset_with_its_own_manifest(tmp_path):
    per_image = _long_table(tmp_path)
    assert set(per_image["dataset"]) == {results.IN_DOMAIN, "ext"}
    # Sample "a" is in both datasets: each row has its own dataset's patient.
    patients = per_image.set_index(["dataset", "sample_id"])["patient"]
    assert patients[(results.IN_DOMAIN, "a")] == "P1" and set(patients[("ext", "a")]) == {"Q1"}
    # Each image's view stands beside its patient, so Dice breaks down by view without the manifest;
    # read back, a view is the manifest's text ("2", not 2.0), and an image without one has none.
    assert per_image.columns.get_loc("view") == per_image.columns.get_loc("patient") + 1
    results.write_table(per_image, tmp_path / "per_image.csv.gz")
    read = results.read_per_image(tmp_path / "per_image.csv.gz")
    inside = read[read["dataset"] == results.IN_DOMAIN].set_index("sample_id")["view"]
    assert inside["a"] == "2" and pd.isna(inside["b"])
    assert read.loc[read["dataset"] == "ext", "view"].isna().all()
    # So does its class (Dice by BUSI's benign / malignant / normal), after the view.
    assert per_image.columns.get_loc("class") == per_image.columns.get_loc("view") + 1
    classes = read[read["dataset"] == results.IN_DOMAIN].set_index("sample_id")["class"]
    assert (classes["a"], classes["b"]) == ("malignant", "normal")
    assert read.loc[read["dataset"] == "ext", "class"].isna().all()
    # And its image file: a row leads back to the file its cleaned sample id may not name.
    images = read[read["dataset"] == results.IN_DOMAIN].set_index("sample_id")["image"]
    assert (images["a"], images["b"]) == ("rené (1).png", "病例.png")  # under the folder they share: no machine's
    assert read.loc[read["dataset"] == "ext", "image"].isna().all()  # its hand-made manifest names none
    # A table collected before the long table carried a view and a class (docs/results/) is read as it is.
    results.write_table(per_image.drop(columns=["view", "class"]), tmp_path / "older.csv.gz")
    assert not {"view", "class"} & set(results.read_per_image(tmp_path / "older.csv.gz").columns)


def test_a_long_table_cut_short_or_damaged_is_refused_by_name(tmp_path):
    """A per_image.csv.gz cut mid-row (a full disk, a copy stopped) gave paired statistics on the rows left,
    rc 0; one cut within its compressed bytes, or empty, gave a bare EOFError / EmptyDataError."""
    import gzip

    per_image = _long_table(tmp_path)
    whole = tmp_path / "per_image.csv.gz"
    results.write_table(per_image, whole)
    text = gzip.decompress(whole.read_bytes())
    assert len(results.read_per_image(whole)) == len(per_image)
    cases = {
        "mid_row.csv.gz": gzip.compress(text[: text.rindex(b"\n", 0, len(text) - 1) + 12]),  # the last row cut
        "bytes.csv.gz": whole.read_bytes()[:-20],  # the compressed stream cut
        "empty.csv.gz": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(
            SonosegError, match=rf"^{re.escape(str(tmp_path / name))}: the per-image results table is cut short"
        ):
            results.read_per_image(tmp_path / name)
    # A row without its Dice (cut at a line's end, then a line of the run alone) is named by its line.
    (tmp_path / "blank.csv").write_bytes(text + b"unet\n")
    with pytest.raises(SonosegError, match=rf"line\(s\) {len(per_image) + 2} lack a value of run, sample_id, dice"):
        results.read_per_image(tmp_path / "blank.csv")


def test_the_generalization_table_by_hand(tmp_path):
    per_image = _long_table(tmp_path)
    table = generalization.generalization_table(per_image, ["unet"], {"ext": "held_out"}, resamples=200)
    inside, outside = table.iloc[0], table.iloc[1]
    assert (inside["dataset"], inside["variant"], inside["patients"]) == (results.IN_DOMAIN, "single", 2)
    assert inside["dice"] == pytest.approx(0.7)
    assert outside["dice"] == pytest.approx((0.6 + 0.3 + 0.2) / 3)
    assert outside["drop"] == pytest.approx(0.7 - 1.1 / 3)
    assert outside["drop_ci_low"] <= outside["drop"] <= outside["drop_ci_high"]
    assert outside["role"] == "held_out" and np.isnan(inside["drop"])
    markdown = generalization.markdown(table)
    assert "| U-net | single | 0.700" in markdown and "ext (held_out) Dice" in markdown
    # The caption says what each set is and how much of it was scored (in-domain: 2 patients, 1 image each;
    # ext: 3 patients of one image, each image's Dice the mean over the two folds' models).
    caption = markdown.split("\n")[0]
    assert "Scored, images with a lesion: in-domain (2 patients, 2 images), ext (held_out; 3 patients, 3 images)." in (
        caption
    )
    assert "the held_out sets no automated choice ever read" in caption
    assert generalization.dataset_labels(table)["ext"] == "ext (held_out; 3 patients, 3 images)"
    assert (
        generalization.markdown(table, ["ext: 1 image(s) also in main.", ""])
        .split("\n")[0]
        .endswith("ext (held_out; 3 patients, 3 images). ext: 1 image(s) also in main.")
    )
    one = table.assign(patients=table["patients"].where(table["dataset"] != "ext", 1))
    one = one.assign(images=one["images"].where(one["dataset"] != "ext", 1))
    assert generalization.dataset_labels(one)["ext"] == "ext (held_out; 1 patient, 1 image)"  # not "1 patients"


def test_the_generalization_table_names_what_is_missing(tmp_path):
    per_image = _long_table(tmp_path)
    with pytest.raises(SonosegError, match="other_set"):
        generalization.generalization_table(per_image, ["unet"], {"other_set": "held_out"})


# ----------------------------------------------------------------------------- post-processing


def test_the_post_processing_choice_keeps_what_scores_better_on_validation():
    table = pd.DataFrame({"model": ["m"] * 2, "sample_id": ["1", "2"], "keep_one": [0.8, 0.6], "none": [0.7, 0.9]})
    choice = postprocess.choose(table)
    assert choice["chosen"] == "none" and choice["validation_images"] == 2
    tie = table.assign(none=table["keep_one"])
    assert postprocess.choose(tie)["chosen"] == "keep_one"  # a tie keeps the paper's rule


def test_several_folds_choices_pool_their_validation_images(tmp_path):
    first, second = tmp_path / "fold0.json", tmp_path / "fold1.json"
    # Fold 0 prefers none on 1 image by 0.1; fold 1 prefers keep_one on 3 images by 0.05 each: keep_one.
    first.write_text(json.dumps({"validation_dice": {"keep_one": 0.5, "none": 0.6}, "validation_images": 1}))
    second.write_text(json.dumps({"validation_dice": {"keep_one": 0.55, "none": 0.5}, "validation_images": 3}))
    assert modelio.chosen_postprocess([first]) == "none"
    assert modelio.chosen_postprocess([first, second]) == "keep_one"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SonosegError, match="bad.json"):
        modelio.chosen_postprocess([tmp_path / "bad.json"])


def test_none_keeps_every_pixel_and_keep_one_keeps_one_component():
    mask = np.zeros((20, 20), bool)
    mask[2:6, 2:6] = mask[10:18, 10:18] = True
    assert infer.postprocessed(mask, "area", "none").sum() == 16 + 64
    assert infer.postprocessed(mask, "area", "keep_one").sum() == 64


def test_a_run_folder_serves_the_post_processing_recorded_beside_its_models(tmp_path):
    members = [tmp_path / f"fold{f}" / "seed0" / "model.pt" for f in (0, 1)]
    assert modelio.recorded_postprocess(members) == "keep_one"  # nothing recorded: the paper's rule
    (tmp_path / "fold0").mkdir()
    (tmp_path / "fold0" / "postprocess.json").write_text(
        json.dumps({"validation_dice": {"keep_one": 0.1, "none": 0.2}, "validation_images": 4})
    )
    with pytest.raises(SonosegError, match="fold1/postprocess.json"):
        modelio.recorded_postprocess(members)  # one fold recorded, the other not: named
    assert modelio.recorded_postprocess(members[:1]) == "none"


def test_a_run_folders_unreadable_or_malformed_choice_is_named(tmp_path):
    """A fold's postprocess.json that does not parse, or parses to something that is not a choice, is
    named by whichever setting is read from it: the post-processing, the scales, or both at once."""
    members = [tmp_path / f"fold{f}" / "seed0" / "model.pt" for f in (0, 1)]
    for fold in (0, 1):
        (tmp_path / f"fold{fold}").mkdir()
    good = {"validation_dice": {"keep_one": 0.1, "none": 0.2}, "validation_images": 4, "scales": [1.0, 0.5]}
    (tmp_path / "fold0" / "postprocess.json").write_text(json.dumps(good))
    (tmp_path / "fold1" / "postprocess.json").write_text('{"validation_dice": ')  # cut short
    for read in (modelio.recorded_postprocess, lambda m: modelio.recorded_choice(m).scales(), modelio.recorded_choice):
        with pytest.raises(SonosegError, match=r"fold1/postprocess.json: not a post-processing choice \(JSONDecode"):
            read(members)
    (tmp_path / "fold1" / "postprocess.json").write_text("[1.0, 0.5]")  # JSON, but not a choice
    choice = modelio.recorded_choice(members)  # parsed: each setting says what is wrong with it when asked
    with pytest.raises(SonosegError, match=r"fold1/postprocess.json: not a post-processing choice \(TypeError"):
        choice.postprocess()
    with pytest.raises(SonosegError, match=r"fold1/postprocess.json: not a post-processing choice \(AttributeErr"):
        choice.scales()
    (tmp_path / "fold1" / "postprocess.json").write_text(json.dumps(good))
    choice = modelio.recorded_choice(members)
    assert choice.postprocess() == "none" and choice.scales() == ((1.0, 0.5), None, None)


# ----------------------------------------------------------------------------- augmentation


def test_ultrasound_augmentation_is_seeded_keeps_the_range_and_can_be_the_identity():
    images = torch.rand(5, 3, 32, 32)

    def augmented(seed: int) -> torch.Tensor:
        draws = draw_ultrasound(5, torch.Generator().manual_seed(seed))
        return apply_ultrasound(images, draws, torch.Generator().manual_seed(seed))

    assert torch.equal(augmented(0), augmented(0)) and not torch.equal(augmented(0), augmented(1))
    assert augmented(0).min() >= 0 and augmented(0).max() <= 1
    off = torch.full((5, PARAMETERS), P_APPLY + 0.1)  # no transform drawn: the images unchanged
    assert torch.equal(apply_ultrasound(images, off, torch.Generator().manual_seed(0)), images)
    every = torch.zeros(5, PARAMETERS)  # every transform drawn, but the samples not among those changed
    every[:, -1] = P_SAMPLE + 0.1
    assert torch.equal(
        apply_ultrasound(images, every, torch.Generator().manual_seed(0), torch.ones(5, 1, 32, 32)), images
    )
    every[:, -1] = 0.0
    assert not torch.equal(apply_ultrasound(images, every, torch.Generator().manual_seed(0)), images)


def test_the_lesion_contrast_moves_the_lesions_mean_towards_the_tissue_and_keeps_its_texture():
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(1, 1, 32, 32)
    masks[..., 10:22, 8:20] = 1
    texture = 0.05 * torch.randn(1, 1, 32, 32, generator=generator)
    images = (0.6 - 0.4 * masks + texture).clamp(0, 1).expand(1, 3, 32, 32).contiguous()
    draws = torch.full((1, PARAMETERS), 0.99)  # every other transform off
    draws[0, -1] = 0.0  # the sample is one of those changed (P_SAMPLE)
    draws[0, 16], draws[0, 17] = 0.0, 0.0  # the lesion contrast on, at its lowest factor
    out = apply_ultrasound(images, draws, torch.Generator().manual_seed(0), masks)
    inside, outside = masks[0, 0] > 0, masks[0, 0] == 0
    before = images[0, 0][inside].mean() - images[0, 0][outside].mean()
    after = out[0, 0][inside].mean() - out[0, 0][outside].mean()
    assert after == pytest.approx(LESION_CONTRAST[0] * before, abs=0.02)
    core = torch.zeros_like(inside)
    core[10:22, 8:20] = True  # the texture inside the lesion is untouched
    assert torch.allclose(
        out[0, 0][core] - out[0, 0][core].mean(), images[0, 0][core] - images[0, 0][core].mean(), atol=1e-5
    )
    # Without masks (or with the transform off) the lesion is left as it is.
    assert torch.equal(apply_ultrasound(images, draws, torch.Generator().manual_seed(0)), images)


def test_the_lesion_rim_is_a_band_inside_the_edge_brighter_or_darker_and_the_rest_untouched():
    masks = torch.zeros(1, 1, 32, 32)
    masks[..., 10:22, 8:20] = 1  # 12 x 12: an equivalent radius of 6.8 px
    images = torch.full((1, 3, 32, 32), 0.5)
    draws = torch.full((1, PARAMETERS), 0.99)  # every other transform off
    draws[0, -1] = 0.0  # the sample is one of those changed (P_SAMPLE)
    draws[0, 18], draws[0, 19] = 0.0, 1.0  # the rim on, at its widest: 0.45 x 6.8 px, 3 px
    for level_draw, sign in ((1.0, 1), (0.0, -1)):  # an echogenic rim, then a dark halo
        draws[0, 20] = level_draw
        out = apply_ultrasound(images, draws, torch.Generator().manual_seed(0), masks)[0, 0]
        band = masks[0, 0].bool().clone()
        band[13:19, 11:17] = False  # the 3-pixel band inside the edge
        assert torch.allclose(out[band], torch.tensor(0.5 + sign * RIM_LEVEL[1]))  # the strongest
        assert torch.equal(out[~band], images[0, 0][~band])  # the core and the tissue untouched


def test_the_lesion_texture_is_smooth_zero_mean_inside_the_lesion_and_nothing_outside():
    masks = torch.zeros(2, 1, 32, 32)
    masks[..., 6:26, 6:26] = 1
    images = torch.full((2, 3, 32, 32), 0.5)
    draws = torch.full((2, PARAMETERS), 0.99)
    draws[:, -1] = 0.0
    draws[:, 21], draws[:, 22] = 0.0, 1.0  # the texture on, at its strongest
    out = apply_ultrasound(images, draws, torch.Generator().manual_seed(0), masks)
    inside = masks.expand_as(out).bool()
    assert torch.equal(out[~inside], images[~inside])
    lesion = out[inside].view(2, 3, -1)
    assert lesion.std(dim=-1).min() > 0.01  # heterogeneous
    assert lesion.mean(dim=-1) == pytest.approx(torch.full((2, 3), 0.5), abs=1e-4)  # its mean echo kept
    assert not torch.equal(lesion[0], lesion[1])  # each sample its own field
    # smooth: neighbouring pixels differ far less than the field's spread
    assert (out[0, 0, 7:25, 8:25] - out[0, 0, 7:25, 7:24]).abs().mean() < 0.3 * lesion[0, 0].std()


def test_the_depth_gain_brightens_the_deep_rows_when_its_slope_is_positive():
    images = torch.full((1, 3, 32, 32), 0.05)
    draws = torch.full((1, PARAMETERS), 0.99)
    draws[0, -1] = 0.0  # the sample is one of those changed (P_SAMPLE)
    draws[0, 0] = 0.0  # only the gain is on
    draws[0, 5], draws[0, 6] = 0.5, 1.0  # no overall gain, the full positive slope
    out = apply_ultrasound(images, draws, torch.Generator().manual_seed(0))
    assert out[0, 0, 0].mean() == pytest.approx(0.05, abs=1e-6) and out[0, 0, -1].mean() > 0.05 * 10 ** (
        (SLOPE_DB - 1) / 20
    )


def test_the_augmentation_choice_reads_the_development_set_by_patient(tmp_path):
    manifest = write_patient_manifest(tmp_path / "dev.csv", ["x1", "x2", "y"], ["P", "P", "Q"])
    paper = write_run_metrics(tmp_path, "paper", 0, 0, ["x1", "x2", "y"], [0.2, 0.4, 0.9])
    ultra = write_run_metrics(tmp_path, "ultra", 0, 0, ["x1", "x2", "y"], [0.6, 0.6, 0.6])
    choice = augmentation_choice.choose("unet", {"paper": [paper], "ultrasound": [ultra]}, manifest, "dev")
    # By patient: paper (0.3 + 0.9) / 2 = 0.6, ultrasound 0.6: a tie keeps the paper's augmentation.
    assert choice["dice"] == pytest.approx({"paper": 0.6, "ultrasound": 0.6})
    assert choice["chosen"] == {"ultrasound_augment": False}
    better = write_run_metrics(tmp_path, "better", 0, 0, ["x1", "x2", "y"], [0.6, 0.6, 0.7])
    choice = augmentation_choice.choose("unet", {"paper": [paper], "ultrasound": [better]}, manifest, "dev")
    assert choice["chosen"] == {"ultrasound_augment": True} and choice["patients"] == 2
    out = tmp_path / "augmentation.json"
    augmentation_choice.write_choice(choice, out)
    assert resolve(Recipe(), augmentation=out).ultrasound_augment is True


def test_a_probe_network_chooses_the_augmentation_for_every_auto_network():
    config = {"networks": ["unet", "lighter_unet_c1"], "ladder": {"enabled": False}, "external_datasets": EXTERNALS}
    runs = sheet(
        {**config, "train": {"ultrasound_augment": "auto"}, "augmentation_choice": {"network": "lighter_unet_c1"}}
    )
    by_name = {run.name: run for run in runs}
    assert by_name["unet"].augmentation_from == by_name["lighter_unet_c1"].augmentation_from == "lighter_unet_c1"
    assert runsheet.augmentation_takers(runs) == {"lighter_unet_c1": ["lighter_unet_c1", "unet"]}
    assert set(runsheet.augmentation_choices(runs)) == {"lighter_unet_c1"}  # one pair of candidates, the probe's
    with pytest.raises(SonosegError, match="augmentation_choice.network"):
        sheet({**config, "train": {"ultrasound_augment": "auto"}, "augmentation_choice": {"network": "fcn8s"}})


def test_flip_twins_are_grouped_by_training_with_the_own_test_images_apart():
    twins = {"": ["unet", "fcn8s"], "--on-far": ["unet", "fcn8s"], "--on-dev": ["unet"]}
    groups = runsheet.flip_twin_groups(twins)
    # The own test images alone, so that a changed external set never reruns them; a network's
    # external sets together; networks tested at other sets in other groups.
    assert groups == {("",): ["unet", "fcn8s"], ("--on-dev", "--on-far"): ["unet"], ("--on-far",): ["fcn8s"]}


def test_without_twins_a_trainings_external_sets_are_grouped_but_an_augmentation_candidates_are_not():
    config = {
        "networks": ["unet", "lighter_unet_c1"],
        "ladder": {"enabled": False},
        "external_datasets": EXTERNALS,
        "train": {"overrides": {"lighter_unet_c1": {"ultrasound_augment": "auto"}}},
        "augmentation_choice": {"network": "lighter_unet_c1"},
    }
    runs = sheet(config)
    groups = runsheet.external_groups(runs, set())
    # Each network's own models on both external sets in one job; the candidates' development-set
    # predictions decide the choice, so no job of theirs reads the held-out set too.
    assert groups == {("--on-dev_set", "--on-far_set"): ["unet", "lighter_unet_c1"]}
    candidates = {run.name for option in runsheet.augmentation_choices(runs).values() for run in option.values()}
    assert len(candidates) == 2 and not candidates & {b for bases in groups.values() for b in bases}
    # Grouped names are runs of the sheet, single (no ensemble or flip-averaged run among them).
    by_name = {run.name: run for run in runs}
    for places, bases in groups.items():
        for base in bases:
            assert all(by_name[base + place].variant == "single" for place in places)
    # With flip-averaged twins, the twin groups predict those sets: nothing is left to group here.
    with_tta = sheet({**config, "predict": {"tta": True}})
    twins = runsheet.flip_twins(with_tta)
    paired = {name for suffix, bases in twins.items() for base in bases for name in runsheet.twin_names(base, suffix)}
    assert runsheet.external_groups(with_tta, paired) == {}
    # One external set: nothing to group.
    assert runsheet.external_groups(sheet({**config, "external_datasets": EXTERNALS[:1]}), set()) == {}


def test_what_a_choice_waits_on_is_scheduled_first_then_what_waited_then_the_rest():
    config = {
        "networks": ["unet", "lighter_unet_c1", "fcn8s"],
        "external_datasets": EXTERNALS,
        "train": {
            "overrides": {"unet": {"ultrasound_augment": "auto"}, "lighter_unet_c1": {"ultrasound_augment": "auto"}}
        },
        "augmentation_choice": {"network": "lighter_unet_c1"},
        "predict": {"tta": True},
    }
    runs = sheet(config)
    priority = runsheet.schedule_priorities(runs, "dev_set")
    assert set(priority) == {run.name for run in runs}
    candidates = [run.name for option in runsheet.augmentation_choices(runs).values() for run in option.values()]
    assert len(candidates) == 2
    for name in candidates:
        # The candidates and their tests on the development set: the choice reads them.
        assert priority[name] == priority[runsheet.on_dataset(name, "dev_set")] == runsheet.GATES_A_CHOICE
        assert priority[runsheet.on_dataset(name, "far_set")] == runsheet.NETWORK  # nothing reads these first
    # The networks whose recipe waited for the choice, then their tests, then the other network and the rest.
    assert priority["unet"] == priority["unet--tta"] == priority["unet--on-far_set"] == runsheet.WAITED_ON_A_CHOICE
    assert priority["unet--ensemble--on-dev_set"] == runsheet.WAITED_ON_A_CHOICE
    # The default config's weight-decay grid: its candidates gate the recipe selection.
    assert {priority[run.name] for run in runs if run.kind == "candidate"} == {runsheet.GATES_A_CHOICE}
    # FCN-8s waits on its own recipe selection here; with a fixed weight decay it waits on nothing.
    assert priority["fcn8s"] == priority["fcn8s--on-dev_set"] == runsheet.WAITED_ON_A_CHOICE
    fixed = runsheet.schedule_priorities(
        sheet({**config, "train": {**config["train"], "weight_decay": 0.0001}}), "dev_set"
    )
    assert (
        fixed["fcn8s"] == fixed["fcn8s--on-dev_set"] == runsheet.NETWORK
        and fixed["unet"] == runsheet.WAITED_ON_A_CHOICE
    )
    by_kind = {run.kind: priority[run.name] for run in runs if run.kind in ("ladder_step", "baseline")}
    assert by_kind == {"ladder_step": runsheet.ANY_OTHER, "baseline": runsheet.ANY_OTHER}
    # Without a development set, nothing gates a choice through an external test.
    no_dev = runsheet.schedule_priorities(runs, "")
    assert all(no_dev[runsheet.on_dataset(name, "dev_set")] == runsheet.NETWORK for name in candidates)


def test_the_report_draws_the_generalization_table(tmp_path):
    table = generalization.generalization_table(_long_table(tmp_path), ["unet"], {"ext": "held_out"}, resamples=50)
    generalization.plot(table, tmp_path / "figure.png")
    import cv2

    drawn = cv2.imread(str(tmp_path / "figure.png"))
    assert drawn is not None and drawn.shape[0] > 100 and drawn.std() > 0
    # What an external set's tests left out is written under the figure, which grows by its height, where
    # it is blank otherwise.
    generalization.plot(table, tmp_path / "noted.png", ["ext: 1 image(s) also in main-dataset.", ""])
    noted = cv2.imread(str(tmp_path / "noted.png"), cv2.IMREAD_GRAYSCALE)
    bottom = slice(noted.shape[0] - 12, noted.shape[0])
    assert noted.shape[1] == drawn.shape[1] and noted.shape[0] > drawn.shape[0] and (noted[bottom] < 128).any()
    assert not (cv2.cvtColor(drawn, cv2.COLOR_BGR2GRAY)[bottom] < 128).any()
    # Legible where the report shows it: within the viewer's 1,180 px, no text under 8 pt.
    import matplotlib.text

    fig = generalization.figure(table, ["ext: 1 image(s) also in main-dataset."])
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    assert drawn.shape[1] <= 1180 and min(t.get_fontsize() for t in texts) >= 8


def test_what_an_external_sets_ingest_left_out_is_said_with_its_table(tmp_path, caplog):
    """A BUSI set read with on_bad_sample: exclude: an image without its mask and a normal scan (include_normal
    false) are left out at ingest; the generalization table's caption and figure say so, not the log alone."""
    import cv2

    from sonoseg import data
    from sonoseg.study import cli

    busi = tmp_path / "busi"
    lesion = np.zeros((48, 64), np.uint8)
    lesion[10:30, 20:40] = 255
    scan = np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8)
    for name, mask in (("benign/benign (1)", lesion), ("malignant/malignant (1)", lesion), ("normal/normal (1)", None)):
        (busi / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(busi / f"{name}.png"), scan)
        cv2.imwrite(str(busi / f"{name}_mask.png"), lesion * 0 if mask is None else mask)
    cv2.imwrite(str(busi / "benign" / "benign (2).png"), scan)  # no mask
    manifest = data.ingest(busi, "busi", on_bad_sample="exclude")
    note = generalization.ingest_note(manifest, "ext")
    assert note == (
        "ext: 2 entries left out at ingest, 1 with a problem (on_bad_sample: exclude) and 1 normal scan(s) "
        "(include_normal: false); each is listed with its reason in external/ext/manifest.csv."
    )
    assert generalization.ingest_note(manifest[manifest["status"] != "excluded"], "ext") == ""
    # A manifest ingested before the reason was named once counts its normal scans alike.
    older = manifest.replace({"reason": {NORMAL_LEFT_OUT: "normal image left out (dataset.include_normal: false)"}})
    assert generalization.ingest_note(older, "ext") == note

    per_image = _long_table(tmp_path)
    results.write_table(per_image, tmp_path / "per_image.csv.gz")
    manifest.to_csv(tmp_path / "ext_manifest.csv", index=False)  # as sonoseg ingest writes it
    out = tmp_path / "tables" / "generalization.csv"
    common = ["--networks", "unet", "--datasets", "ext=held_out", "--manifests", f"ext={tmp_path / 'ext_manifest.csv'}"]
    assert (
        cli.main(["generalization", "--per-image", str(tmp_path / "per_image.csv.gz"), *common, "--out", str(out)]) == 0
    )
    assert out.with_suffix(".md").read_text().split("\n")[0].endswith(note)
    # Without --manifest the caption has no provenance line, and the command says so (it was silent).
    assert "no --manifest: the caption names neither the data's fingerprint" in caplog.text
    assert "Data fingerprint" not in out.with_suffix(".md").read_text()
    figure = tmp_path / "generalization.png"
    assert cli.main(["report-generalization", "--table", str(out), common[4], common[5], "--out", str(figure)]) == 0
    assert figure.stat().st_size > 0


def test_the_generalization_figure_keeps_its_notes_under_the_axis_label(tmp_path):
    """However many notes (each external set's ingest and overlap notes) and however small the plot, the
    notes take their own height below the axes, tick labels and axis label included."""
    import matplotlib.pyplot as plt

    table = generalization.generalization_table(_long_table(tmp_path), ["unet"], {"ext": "held_out"}, resamples=50)
    for count in (1, 4):
        notes = [f"ext: note {i}, " + "a long sentence that wraps " * 8 for i in range(count)]
        figure = generalization.figure(table, notes)
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        assert figure.texts[0].get_window_extent(renderer).y1 <= figure.axes[0].get_tightbbox(renderer).y0
        plt.close(figure)
