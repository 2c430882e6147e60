"""A run folder served as an ensemble is served whole, or refused naming what is missing or foreign: a
fold or seed gone (seen in the fold numbers, the models' records, the study's run sheet and the folds'
postprocess.json), a model in the wrong folder or of another network, a malformed post-processing choice,
and a run that tests another run's models (it has none of its own)."""

import csv
import json
import logging
import shutil

import cv2
import pytest
import torch
from conftest import sample_images

from sonoseg.errors import SonosegError
from sonoseg.serving import modelio, segmenter

NETWORK = "lighter_unet_c1"


def member(run, in_fold, in_seed, network=NETWORK, **facts):
    """A model file as training writes it at run/fold<in_fold>/seed<in_seed>/model.pt; ``facts`` as recorded
    (seed=..., fingerprint=...: leave one out for a file from before it was recorded). The weights are
    a placeholder: the checks read the recorded facts only."""
    path = run / f"fold{in_fold}" / f"seed{in_seed}" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    modelio.save_model(path, network=network, state_dict={"weight": torch.zeros(1)}, **facts)
    return path


def trained_run(run, folds=(0, 1), seeds=(0, 1), network=NETWORK, **facts):
    """A finished run as the workflow leaves it: every fold's every seed, each recording its seed and a
    fingerprint of its own, and each fold's postprocess.json listing the fold's models."""
    for fold in folds:
        for seed in seeds:
            member(run, fold, seed, network, seed=seed, fingerprint=f"{run.name}/{fold}/{seed}", **facts)
        models = [f"results/s/runs/{run.name}/fold{fold}/seed{seed}/model.pt" for seed in seeds]
        choice(run, fold, models, fingerprints={m: f"{run.name}/{fold}/{s}" for m, s in zip(models, seeds)})
    return run


def choice(run, fold, models=None, **fields):
    """fold<fold>/postprocess.json as sonoseg choose-postprocess writes it (``fields`` change it)."""
    record = {
        "chosen": "keep_one",
        "validation_dice": {"keep_one": 0.8, "none": 0.7},
        "validation_images": 4,
        "scales": [1.0],
        "shrink_above": None,
        "shrink_found_above": None,
        **({"models": models} if models is not None else {}),
        **fields,
    }
    path = run / f"fold{fold}" / "postprocess.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def run_sheet(study, *rows):
    """results/<study>/runs.tsv with ``rows`` (dicts of some of its columns)."""
    columns = ["name", "kind", "method", "seeds", "recipe", "model_from", "folds", "tta", "dataset"]
    study.mkdir(parents=True, exist_ok=True)
    with open(study / "runs.tsv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, delimiter="\t", restval="")
        writer.writeheader()
        writer.writerows(rows)


def names(run, members):
    return [m.relative_to(run).as_posix() for m in members]


def test_a_complete_run_folder_is_served_whole_in_fold_order(tmp_path):
    run = trained_run(tmp_path / "runs" / NETWORK, folds=range(11), seeds=(0, 2))
    folds = " ".join(map(str, range(11)))
    run_sheet(tmp_path, {"name": NETWORK, "method": NETWORK, "seeds": "0 2", "folds": folds, "recipe": "{}"})
    members = modelio.ensemble_members(run)
    assert names(run, members) == [f"fold{f}/seed{s}/model.pt" for f in range(11) for s in (0, 2)]  # fold10 last


def test_a_fold_missing_from_the_numbers_is_named(tmp_path):
    run = trained_run(tmp_path / "runs" / NETWORK, folds=(0, 1, 2))
    shutil.rmtree(run / "fold1")
    with pytest.raises(SonosegError, match=r"unet_c1: fold1 missing \(it has fold0, fold2\).*never as a smaller"):
        modelio.ensemble_members(run)


def test_a_last_fold_left_behind_away_from_the_study_is_named_from_the_folds_choices(tmp_path):
    """Copied away from its study (no run sheet beside it), a run folder still knows how many folds it
    has: each fold's postprocess.json records the run's count (sonoseg choose-postprocess, from the split)."""
    run = trained_run(tmp_path / "copied" / NETWORK, folds=(0, 1, 2))
    for fold in (0, 1, 2):
        record = json.loads((run / f"fold{fold}" / "postprocess.json").read_text())
        choice(run, fold, record["models"], folds=3)
    assert len(modelio.ensemble_members(run)) == 6
    shutil.rmtree(run / "fold2")
    with pytest.raises(SonosegError, match=r"unet_c1: fold2 missing: .*fold0/postprocess.json records a run of 3"):
        modelio.ensemble_members(run)
    trained_run(run, folds=(2, 3))  # a fold beyond the recorded count, left from another study
    choice(run, 2, json.loads((run / "fold2" / "postprocess.json").read_text())["models"], folds=3)
    with pytest.raises(SonosegError, match=r"unet_c1: fold3 beyond the 3 folds .* records for this run"):
        modelio.ensemble_members(run)
    shutil.rmtree(run / "fold3")
    choice(run, 1, json.loads((run / "fold1" / "postprocess.json").read_text())["models"], folds=5)
    with pytest.raises(SonosegError, match=r"fold1/postprocess.json: records a run of 5 folds, .*fold0.* one of 3"):
        modelio.ensemble_members(run)


def test_older_model_files_that_record_no_seed_are_not_refused_for_it(tmp_path):
    older = tmp_path / "older" / NETWORK
    for fold in (0, 1):
        member(older, fold, 0)  # no seed recorded: an older file
    assert len(modelio.ensemble_members(older)) == 2


def test_a_last_fold_or_a_whole_seed_missing_is_named_from_the_studys_run_sheet(tmp_path, caplog):
    run = trained_run(tmp_path / "runs" / NETWORK, folds=(0, 1), seeds=(0, 1))
    run_sheet(tmp_path, {"name": NETWORK, "seeds": "0 1", "folds": "0 1 2", "recipe": "{}"})
    with pytest.raises(SonosegError, match=r"fold2 missing: the study's run sheet \(.*runs.tsv\) lists folds 0 1 2"):
        modelio.ensemble_members(run)
    run_sheet(tmp_path, {"name": NETWORK, "seeds": "0 1 2", "folds": "0 1", "recipe": "{}"})
    with pytest.raises(SonosegError, match=r"seed2 missing: the study's run sheet .* lists seeds 0 1 2"):
        modelio.ensemble_members(run)
    run_sheet(tmp_path, {"name": "another_run", "seeds": "0 1 2", "folds": "0 1 2", "recipe": "{}"})
    assert len(modelio.ensemble_members(run)) == 4  # the sheet does not list this run: nothing to compare
    # A fold or seed the sheet no longer lists (left from a study with more) is not a member of this run: it is
    # left out, named, and left where it is.
    run_sheet(tmp_path, {"name": NETWORK, "seeds": "0 1", "folds": "0", "recipe": "{}"})
    for fold in (0, 1):  # each fold's choice made with the seeds the sheet lists, as a rerun of the study makes it
        choice(run, fold, [f"results/s/runs/{NETWORK}/fold{fold}/seed{s}/model.pt" for s in (0, 1)], folds=1)
    with caplog.at_level(logging.WARNING):
        members = modelio.ensemble_members(run)
    assert members == [run / "fold0" / f"seed{s}" / "model.pt" for s in (0, 1)]
    assert "fold1 not served: the study's run sheet" in caplog.text and (run / "fold1").is_dir()
    run_sheet(tmp_path, {"name": NETWORK, "seeds": "1", "folds": "0", "recipe": "{}"})
    choice(run, 0, [f"results/s/runs/{NETWORK}/fold0/seed1/model.pt"], folds=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert modelio.ensemble_members(run) == [run / "fold0" / "seed1" / "model.pt"]
    assert "fold1, fold0/seed0 not served" in caplog.text and "lists folds 0 and seeds 1 for run" in caplog.text
    run_sheet(tmp_path, {"name": NETWORK, "seeds": "0", "folds": "3", "recipe": "{}"})
    with pytest.raises(SonosegError, match=r"fold3 missing: the study's run sheet"):
        modelio.ensemble_members(run)
    # A row without its folds or seeds (hand-edited, or an older sheet) gives nothing to compare: the folder is
    # checked as one away from its study, by its folds' choices, and served whole.
    for row in ({"seeds": "", "folds": "0"}, {"seeds": "0 1", "folds": ""}):
        run_sheet(tmp_path, {"name": NETWORK, "recipe": "{}", **row})
        for fold in (0, 1):
            choice(run, fold, [f"results/s/runs/{NETWORK}/fold{fold}/seed{s}/model.pt" for s in (0, 1)], folds=2)
        assert len(modelio.ensemble_members(run)) == 4


def test_a_whole_seed_missing_from_every_fold_is_named_from_the_folds_choice(tmp_path):
    run = trained_run(tmp_path / "runs" / NETWORK, seeds=(0, 1, 2))
    for fold in (0, 1):
        shutil.rmtree(run / f"fold{fold}" / "seed2")
    with pytest.raises(
        SonosegError,
        match=r"fold0/postprocess.json: its choice was made with the models of seed2, which fold0 lacks "
        r"\(it has seed0, seed1\): a member is missing",
    ):
        modelio.ensemble_members(run)
    # A choice copied from another fold does not vouch for this fold's models.
    choice(run, 0, [f"results/s/runs/{NETWORK}/fold1/seed{s}/model.pt" for s in (0, 1)])
    with pytest.raises(SonosegError, match=r"fold0/postprocess.json: records the models of fold1, not of fold0"):
        modelio.ensemble_members(run)


def test_a_model_of_another_training_in_a_members_place_is_refused_by_the_folds_choice(tmp_path):
    # Another study's U-net of the same seed copied over a member: same network, seed and folder; only the
    # training fingerprint the fold's choice recorded tells it from the member.
    run = trained_run(tmp_path / "runs" / NETWORK)
    member(run, 0, 1, seed=1, fingerprint="another-study/0/1")
    with pytest.raises(
        SonosegError,
        match=r"fold0/seed1/model.pt: not the training .*fold0/postprocess.json was chosen with \(its training "
        r"fingerprint another-stud, the choice's lighter_unet\): a model of another study or training",
    ):
        modelio.ensemble_members(run)
    # A choice made before fingerprints were recorded vouches for no training: the member is served.
    recorded = json.loads((run / "fold0" / "postprocess.json").read_text())
    choice(run, 0, recorded["models"])
    assert len(modelio.ensemble_members(run)) == 4


def test_the_choice_records_its_models_training_fingerprints(tmp_path):
    from sonoseg.training import postprocess

    run = trained_run(tmp_path / "runs" / NETWORK)
    older = member(run, 1, 0, seed=0)  # a file from before fingerprints: left out
    models = [run / "fold0" / "seed0" / "model.pt", run / "fold0" / "seed1" / "model.pt", older]
    assert postprocess.training_fingerprints(models) == {
        str(models[0]): f"{NETWORK}/0/0",
        str(models[1]): f"{NETWORK}/0/1",
    }


def test_a_choice_that_cannot_be_read_or_lists_no_models_does_not_stop_the_members(tmp_path):
    """The members' check reads a fold's choice leniently: one that does not parse is named when one of
    its settings is read (segment told both reads none), one without ``models`` (hand-made) is no record."""
    run = trained_run(tmp_path / "runs" / NETWORK)
    (run / "fold0" / "postprocess.json").write_text("{")
    choice(run, 1)  # no models listed
    assert len(modelio.ensemble_members(run)) == 4


def test_copies_of_one_model_do_not_pass_as_seeds_or_folds(tmp_path):
    run = tmp_path / "runs" / NETWORK
    for seed in range(4):  # one model copied into seed0..seed3
        member(run, 0, seed, seed=0, fingerprint="one training")
    with pytest.raises(SonosegError, match=r"fold0/seed1/model.pt: records seed 0, not its folder's seed1"):
        modelio.ensemble_members(run)
    copied = tmp_path / "copied" / NETWORK  # fold0's model copied into fold1: same seed, same training
    for fold in (0, 1):
        member(copied, fold, 0, seed=0, fingerprint="one training")
    with pytest.raises(SonosegError, match=r"fold1/seed0/model.pt: the same training as .*fold0/seed0/model.pt"):
        modelio.ensemble_members(copied)


def test_a_model_of_another_network_in_a_run_folder_is_refused_by_name(tmp_path):
    run = trained_run(tmp_path / "runs" / NETWORK, folds=(0, 1, 2), seeds=(0,))
    foreign = member(run, 1, 0, "unet", seed=0, fingerprint="another run's")
    with pytest.raises(
        SonosegError,
        match=rf"{foreign}: a model of network 'unet' in a run folder of '{NETWORK}' \(as .*fold0/seed0/model.pt is\)",
    ):
        modelio.ensemble_members(run)
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    with pytest.raises(SonosegError, match=r"fold1/seed0/model.pt: a model of network 'unet'"):
        segmenter.segment_images(run, [image], tmp_path / "masks", device="cpu")  # not a warning: refused
    # One member of each: the run's network is the one it is named after, whichever fold holds it.
    shutil.rmtree(run / "fold2")
    member(run, 0, 0, "unet", seed=0, fingerprint="another run's too")
    member(run, 1, 0, seed=0, fingerprint="ours")
    with pytest.raises(
        SonosegError, match=rf"fold0/seed0/model.pt: a model of network 'unet' in a run folder of '{NETWORK}'"
    ):
        modelio.ensemble_members(run)


def test_a_malformed_choice_is_named_with_the_keys_it_lacks_not_blamed_on_an_intact_fold(tmp_path):
    run = trained_run(tmp_path / "runs" / NETWORK, seeds=(0,))
    members = modelio.ensemble_members(run)
    (run / "fold0" / "postprocess.json").write_text(json.dumps({"chosen": "none"}))
    choice(run, 1, scales=[1.0, 0.5])
    recorded = modelio.recorded_choice(members)
    for read in (recorded.scales, recorded.postprocess):
        with pytest.raises(
            SonosegError,
            match=r"fold0/postprocess.json: not a post-processing choice: it lacks validation_dice, validation_images "
            r"\(it records chosen;",
        ):
            read()
    choice(run, 0, validation_dice={"keep_one": 0.8})
    with pytest.raises(SonosegError, match=r"fold0/postprocess.json: .* lacks validation_dice.none"):
        modelio.recorded_choice(members).postprocess()
    # The scale selection is recorded whole: shrink_above without scales is a damaged file.
    damaged = json.loads(choice(run, 0, shrink_above=1.0).read_text())
    del damaged["scales"]
    (run / "fold0" / "postprocess.json").write_text(json.dumps(damaged))
    with pytest.raises(
        SonosegError, match=r"fold0/postprocess.json: records shrink_above, shrink_found_above but no scales"
    ):
        modelio.recorded_choice(members).scales()


def test_a_choice_from_before_scales_were_recorded_is_read_as_the_input_size_and_said(tmp_path, caplog):
    run = trained_run(tmp_path / "runs" / NETWORK, seeds=(0,))
    members = modelio.ensemble_members(run)
    older = {"chosen": "keep_one", "validation_dice": {"keep_one": 0.8, "none": 0.7}, "validation_images": 4}
    for fold in (0, 1):
        (run / f"fold{fold}" / "postprocess.json").write_text(json.dumps(older))
    with caplog.at_level(logging.WARNING):
        assert modelio.recorded_choice(members).scales() == ((1.0,), None, None)
    assert "fold0/postprocess.json: records no scales" in caplog.text
    # Beside a fold that records its scales, the one without is named, whichever fold it is.
    choice(run, 1, scales=[1.0, 0.5])
    with pytest.raises(
        SonosegError,
        match=r"fold0/postprocess.json: scales \[1.0\] .* differ from .*fold1/postprocess.json's \[1.0, 0.5\]",
    ) as refused:
        modelio.recorded_choice(members).scales()
    assert "fold0/postprocess.json records no scales" in str(refused.value)


def run_testing_models(runs, name):
    """A run that tests another run's models, as the workflow leaves it: predictions, metrics, no model."""
    (runs / name / "fold0" / "seed0" / "predictions").mkdir(parents=True)
    (runs / name / "fold0" / "seed0" / "metrics.csv").write_text("sample_id,dice\n")
    return runs / name


@pytest.mark.parametrize(
    "name, source, tta, how",
    [
        ("light_unet--tta", "light_unet", True, "flip-averaged"),
        ("light_unet--tta--on-pymust_far", "light_unet", True, "flip-averaged, on dataset pymust_far"),
        ("light_unet--on-pymust_far", "light_unet", False, "on dataset pymust_far"),
        ("unet--ensemble", "unet", False, "averaged as an ensemble"),
        ("unet--ensemble--on-pymust_far", "unet", False, "averaged as an ensemble, on dataset pymust_far"),
        ("unet--tested-inpaint", "unet", False, "on images with marks inpaint"),
        ("lighter_unet_c1--augment-paper--on-x", "lighter_unet_c1--augment-paper", False, "on dataset x"),
    ],
)
def test_a_run_that_tests_another_runs_models_names_the_run_to_serve(tmp_path, name, source, tta, how):
    run = run_testing_models(tmp_path / "results" / "quick" / "runs", name)
    expected = (
        rf"{run}: this run tests the models of run {source} \({how}\): it holds their predictions, no model of "
        rf"its own; to segment with those models, serve the run folder {run.parent / source}"
        + (r" with --tta" if tta else r"$")
    )
    with pytest.raises(SonosegError, match=expected):
        modelio.ensemble_members(run)


def test_the_run_sheet_says_which_runs_models_a_run_tests(tmp_path):
    """The study's run sheet, where it lies beside runs/, gives the run's model_from and tta; a floor
    (no model_from) keeps its own message, whatever its name."""
    runs = tmp_path / "runs"
    run = run_testing_models(runs, "unet--tta--on-far")
    run_sheet(tmp_path, {"name": "unet--tta--on-far", "kind": "external", "model_from": "unet", "tta": "True"})
    with pytest.raises(
        SonosegError, match=rf"tests the models of run unet .*serve the run folder {runs / 'unet'} with --tta"
    ):
        modelio.ensemble_members(run)
    floor = run_testing_models(runs, "threshold_baseline--marks-inpaint")
    run_sheet(tmp_path, {"name": floor.name, "kind": "baseline"})
    with pytest.raises(SonosegError, match=r"no model.pt \(it has predictions and no training history: a floor"):
        modelio.ensemble_members(floor)


def test_a_lone_model_of_another_network_is_refused_by_the_study_run_sheets_network(tmp_path):
    """One member cannot disagree with another; the study's run sheet says which network the run trains."""
    run = trained_run(tmp_path / "runs" / "unet", folds=(0,), seeds=(0,), network=NETWORK)
    run_sheet(tmp_path, {"name": "unet", "method": "unet", "seeds": "0", "folds": "0", "recipe": "{}"})
    with pytest.raises(
        SonosegError,
        match=rf"fold0/seed0/model.pt: a model of network '{NETWORK}' in a run folder of 'unet' \(the network the "
        r"study's run sheet, .*runs.tsv, says run unet trains\)",
    ):
        modelio.ensemble_members(run)


def test_a_test_run_given_by_a_relative_path_names_the_run_to_serve_where_it_is(tmp_path, monkeypatch):
    """`--model ..` from inside the test run's fold folder: the run to serve is named by where it lies, not
    relative to the folder the command ran in."""
    runs = tmp_path / "results" / "quick" / "runs"
    run = run_testing_models(runs, "light_unet--tta")
    monkeypatch.chdir(run / "fold0")
    with pytest.raises(SonosegError, match=rf"serve the run folder {runs / 'light_unet'} with --tta"):
        modelio.ensemble_members("..")
    monkeypatch.chdir(runs)
    with pytest.raises(SonosegError, match=rf"serve the run folder {runs / 'light_unet'} with --tta"):
        modelio.ensemble_members("light_unet--tta/fold0/..")


def test_the_serving_stage_reads_run_names_and_the_sheet_as_the_study_writes_them(tmp_path):
    """modelio keeps its own copy of the run sheet's file name and of how a run's name marks a test of
    another run's models (the serving stage imports no study code): every test run the study plans (flip
    averaged, ensembles, external sets, marks ablation) is read back to the run whose models it tests."""
    import yaml

    from sonoseg.study import layout, runsheet
    from sonoseg.study.commands import load_config

    assert (modelio.RUN_SHEET, modelio.NAME_SEPARATOR) == (layout.SHEET, runsheet.SEPARATOR)
    changes = {
        "networks": ["unet"],
        "seeds": [0, 1],
        "predict": {"tta": True},
        "ladder": {"enabled": False},
        "external_datasets": [{"name": "far_set", "role": "held_out", "layout": "folder", "root": "far"}],
        "ablation": {"marks": True},
    }
    (tmp_path / "changes.yaml").write_text(yaml.safe_dump(changes))
    planned = runsheet.build(load_config([str(tmp_path / "changes.yaml")]))  # as the workflow merges a config
    tests_of_models = [run for run in planned if run.model_from and run.name != run.model_from]
    assert {"tta", "ensemble", "external"} <= {run.kind for run in tests_of_models}
    runs = tmp_path / "elsewhere" / "runs"  # no run sheet beside it: the name alone tells
    for run in tests_of_models:
        with pytest.raises(SonosegError, match=rf"this run tests the models of run {run.model_from} "):
            modelio.ensemble_members(run_testing_models(runs, run.name))


def test_folders_that_are_no_member_are_named_once(tmp_path, caplog):
    # A copy kept beside the members is never served: said, so that it is not believed served.
    run = trained_run(tmp_path / "runs" / NETWORK)
    (run / "fold0" / "seed1 (copy)").mkdir()
    (run / "backup").mkdir()
    (run / ".ipynb_checkpoints").mkdir()  # an editor's: passed over
    with caplog.at_level(logging.WARNING):
        assert len(modelio.ensemble_members(run)) == 4
    assert f"{run}: backup, fold0/seed1 (copy) not read (a run folder's members are fold<k>/seed<s>/model.pt)" in (
        caplog.text
    )
    assert ".ipynb_checkpoints" not in caplog.text


def test_a_choice_written_on_windows_is_read_alike(tmp_path):
    # Its models named with backslashes: the seeds and their trainings are still told.
    run = trained_run(tmp_path / "runs" / NETWORK)
    models = [f"results\\s\\runs\\{NETWORK}\\fold0\\seed{s}\\model.pt" for s in (0, 1)]
    choice(run, 0, models, fingerprints={m: f"{NETWORK}/0/{s}" for m, s in zip(models, (0, 1))})
    assert len(modelio.ensemble_members(run)) == 4
    member(run, 0, 1, seed=1, fingerprint="another-study/0/1")
    with pytest.raises(SonosegError, match=r"fold0/seed1/model.pt: not the training "):
        modelio.ensemble_members(run)
