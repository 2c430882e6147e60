"""Models that travel: a run folder served as an ensemble, and horizontal-flip test-time augmentation."""

import logging

import cv2
import numpy as np
import pytest
from conftest import sample_images, write_model

from sonoseg.errors import SonosegError
from sonoseg.serving import infer, modelio, segmenter


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as the workflow writes it: two folds, one seed each, two different models."""
    folder = tmp_path / "runs" / "unet"
    for fold, seed in ((0, 0), (1, 5)):
        path = folder / f"fold{fold}" / "seed0" / "model.pt"
        path.parent.mkdir(parents=True)
        write_model(path, "unet", weights_seed=seed)
    return folder


def test_the_ensemble_averages_its_members_probabilities(run_folder):
    members = modelio.ensemble_members(run_folder)
    assert [m.relative_to(run_folder).as_posix() for m in members] == ["fold0/seed0/model.pt", "fold1/seed0/model.pt"]
    single = [infer.torch_predictor(m, "cpu") for m in members]
    both = infer.ensemble(single, members)
    batch = single[0].prepare(sample_images(1)[0])
    first, second = single[0].run(batch), single[1].run(batch)
    assert not np.allclose(first, second)  # two different members, or the test shows nothing
    np.testing.assert_allclose(both.run(batch), (first + second) / 2, rtol=0, atol=1e-7)


def test_members_trained_on_other_data_are_named_in_the_warning(run_folder, caplog):
    import torch

    from sonoseg.serving.modelio import save_atomic

    members = modelio.ensemble_members(run_folder)
    for member, fingerprint in zip(members, ("a" * 64, "b" * 64)):
        saved = torch.load(member, weights_only=True)
        save_atomic({**saved, "provenance": {"dataset_fingerprint": fingerprint}}, member)
    with caplog.at_level(logging.WARNING):
        infer.ensemble([infer.torch_predictor(m, "cpu") for m in members], members)
    assert (
        f"trained on data with 2 different fingerprints: {'a' * 12}: {members[0]}; {'b' * 12}: {members[1]}"
        in caplog.text
    )


def test_segment_takes_a_run_folder(run_folder, tmp_path, caplog):
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    result = segmenter.segment_images(run_folder, [image], tmp_path / "masks", device="cpu", tta=True)
    assert result.written == [tmp_path / "masks" / "scan_mask.png"] and not result.failed
    # Its folds hold no choice: said of the folder (not "give it its run folder", which it was given).
    assert f"{run_folder}: no postprocess.json in its folds" in caplog.text
    assert "give `sonoseg segment` its run folder" not in caplog.text


def test_a_run_folder_with_a_missing_or_corrupt_member_is_refused_by_name(run_folder, tmp_path):
    (run_folder / "fold1" / "seed0" / "model.pt").unlink()
    with pytest.raises(SonosegError, match=r"fold1/seed0: this member of the run folder .* has no model.pt"):
        modelio.ensemble_members(run_folder)
    (run_folder / "fold1" / "seed0" / "model.pt").write_bytes(b"not a model")
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    with pytest.raises(SonosegError, match=r"fold1/seed0/model.pt"):
        segmenter.segment_images(run_folder, [image], tmp_path / "masks", device="cpu")
    # A member cut short (a copy that did not finish): said so, in a whole sentence.
    whole = (run_folder / "fold0" / "seed0" / "model.pt").read_bytes()
    (run_folder / "fold1" / "seed0" / "model.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        SonosegError, match=r"fold1/seed0/model.pt: .*cut short: its zip archive ends before its directory"
    ):
        segmenter.segment_images(run_folder, [image], tmp_path / "masks", device="cpu")


def test_members_that_see_different_inputs_are_refused(tmp_path):
    folder = tmp_path / "runs" / "unet"
    for fold, interpolation in ((0, "bilinear"), (1, "area")):
        path = folder / f"fold{fold}" / "seed0" / "model.pt"
        path.parent.mkdir(parents=True)
        write_model(path, "unet", interpolation=interpolation)
    members = modelio.ensemble_members(folder)
    with pytest.raises(SonosegError, match="fold1/seed0/model.pt: input .* differs"):
        infer.ensemble([infer.torch_predictor(m, "cpu") for m in members], members)


def test_flip_averaging_flips_back_exactly(run_folder):
    predictor = infer.torch_predictor(modelio.ensemble_members(run_folder)[0], "cpu")
    batch = predictor.prepare(sample_images(1)[0])
    averaged = infer.flip_averaged(predictor.run)
    mirrored = np.ascontiguousarray(batch[..., ::-1])
    # TTA of the mirror image is the mirror of TTA: the flip is undone exactly, along the width only.
    np.testing.assert_array_equal(averaged(mirrored), averaged(batch)[..., ::-1])
    plain = predictor.run(batch)
    by_hand = (plain + predictor.run(mirrored)[..., ::-1]) / 2
    np.testing.assert_array_equal(averaged(batch), by_hand)
    assert not np.array_equal(averaged(batch), plain)


def test_only_a_run_folder_with_the_same_seeds_in_every_fold_is_an_ensemble(run_folder, tmp_path):
    with pytest.raises(SonosegError, match="not a run folder"):
        modelio.ensemble_members(run_folder.parent)  # runs/: several runs would mix networks
    extra = run_folder / "fold0" / "seed1" / "model.pt"
    extra.parent.mkdir()
    write_model(extra, "unet", seed=2)
    with pytest.raises(SonosegError, match=r"fold1: seeds \['seed0'\] differ from fold0's \['seed0', 'seed1'\]"):
        modelio.ensemble_members(run_folder)


# ----------------------------------------------------------------------------- TTA as a dimension of the study


def test_tta_runs_test_each_network_runs_models_with_flip_averaging():
    from sonoseg.study import runsheet

    network = runsheet.Run("unet", "network", "unet", ("0", "1"), folds=("0", "1"), marks="inpaint")
    floor = runsheet.Run("threshold_baseline", "baseline", "threshold_baseline", ("0",))
    (tta,) = runsheet.tta_runs([network, floor])
    assert (tta.name, tta.kind, tta.model_from, tta.tta, tta.trained, tta.uses_model) == (
        "unet--tta",
        "tta",
        "unet",
        True,
        False,
        True,
    )
    assert (tta.seeds, tta.folds, tta.marks) == (network.seeds, network.folds, network.marks)
    assert runsheet.tested_pairs([network, floor, tta], "tta") == [(network, tta)]


def test_tta_is_a_column_of_the_run_sheet_and_of_the_long_table(workflow_copy, tmp_path):
    """predict.tta adds one run per network (its models, flip-averaged; nothing trained), tested paired
    with the plain one in tables/tta.csv, and the collected table says which rows are flip-averaged."""
    import re

    from conftest import (
        TINY,
        collect,
        run_snakemake,
        sheet_row,
        write_config,
        write_patient_manifest,
        write_run_metrics,
    )

    config = write_config(workflow_copy, {**TINY, "ladder": {"enabled": False}, "predict": {"tta": True}})
    dry = run_snakemake(["all", "-n", "-p", "--cores", "1", "--configfile", config], workflow_copy)
    assert dry.returncode == 0, dry.stderr[-3000:]
    flipped = re.findall(r"sonoseg predict --model \S+/runs/([\w-]+)/fold0/seed0/model\.pt (.*--tta.*)", dry.stdout)
    # Two jobs per network's training, each plain and flip-averaged: its own test images alone (a changed
    # external set never reruns them), and every external dataset together.
    assert sorted(network for network, _ in flipped) == ["lighter_unet_c1", "lighter_unet_c1", "unet", "unet"]
    outdirs = {}
    for network, command in flipped:
        tta_outdirs = re.search(r"--tta-outdir ((?:\S+/predictions ?)+)", command).group(1).split()
        outdirs.setdefault(network, []).append(tta_outdirs)
    for network, groups in outdirs.items():
        own = [f"results/tiny/runs/{network}--tta/fold0/seed0/predictions"]
        externals = [
            f"results/tiny/runs/{network}--tta--on-{dataset}/fold0/seed0/predictions"
            for dataset in runsheet_externals()
        ]
        assert sorted(map(sorted, groups)) == sorted([own, sorted(externals)])  # a job's places, in any order
    assert not re.search(r"sonoseg train .*--tta", dry.stdout)  # nothing is trained for it
    assert re.search(r"sonoseg paired --pairs (unet:unet--tta|lighter_unet_c1:lighter_unet_c1--tta) ", dry.stdout)
    assert "--family tta" in dry.stdout and "tables/tta.csv" in dry.stdout

    samples = ["p0v1", "p1v1", "p2v1"]
    for run in ("unet", "unet--tta"):
        write_run_metrics(tmp_path, run, 0, 0, samples, [0.5, 0.6, 0.7])
    manifest = write_patient_manifest(tmp_path / "manifest.csv", samples, ["p0", "p1", "p2"])
    rows = [sheet_row("unet"), sheet_row("unet--tta", kind="tta", method="unet", tta=True)]
    per_image = collect(tmp_path, rows, manifest)
    assert per_image.groupby("run")["tta"].first().to_dict() == {"unet": False, "unet--tta": True}


def runsheet_externals() -> list[str]:
    """The external datasets of the repository's config (config/config.yaml)."""
    import yaml

    return [d["name"] for d in yaml.safe_load(open("config/config.yaml"))["external_datasets"]]


# ----------------------------------------------------------------------------- ensembles in the study


def test_a_network_with_several_seeds_is_also_tested_as_the_ensemble_of_each_folds_seeds():
    from sonoseg.study import runsheet

    several = runsheet.Run("unet", "network", "unet", ("0", "1", "2"), folds=("0", "1"))
    single = runsheet.Run("fcn8s", "network", "fcn8s", ("0",))
    floor = runsheet.Run("threshold_baseline", "baseline", "threshold_baseline", ("0", "1"))
    (averaged,) = runsheet.ensemble_runs([several, single, floor])
    assert (averaged.name, averaged.kind, averaged.model_from, averaged.members) == (
        "unet--ensemble",
        "ensemble",
        "unet",
        ("0", "1", "2"),
    )
    assert averaged.seeds == ("0",) and averaged.folds == ("0", "1") and not averaged.trained
    assert runsheet.tested_pairs([several, single, averaged], "ensemble") == [(several, averaged)]


def test_the_study_predicts_the_ensemble_from_each_folds_members(workflow_copy):
    import re

    from conftest import TINY, run_snakemake, write_config

    config = write_config(workflow_copy, {**TINY, "seeds": [0, 1], "ladder": {"enabled": False}})
    dry = run_snakemake(["all", "-n", "-p", "--cores", "1", "--configfile", config], workflow_copy)
    assert dry.returncode == 0, dry.stderr[-3000:]
    ensembles = re.findall(
        r"sonoseg predict --model (\S+/runs/unet/fold0/seed\d/model\.pt) (\S+/runs/unet/fold0/seed\d/model\.pt) "
        r"--data \S+/data/cache/\S+ --postprocess-choice \S+ --manifest \S+ --split \S+ --fold 0 --outdir (\S+)",
        dry.stdout,
    )
    assert len(ensembles) == 1
    first, second, outdir = ensembles[0]
    assert (first.split("/")[-2], second.split("/")[-2]) == ("seed0", "seed1")
    assert outdir.endswith("runs/unet--ensemble/fold0/seed0/predictions")
    assert "--family ensemble" in dry.stdout and "tables/ensemble.csv" in dry.stdout
    assert not re.search(r"sonoseg train .*ensemble", dry.stdout)


def test_predict_averages_the_members_it_is_given(tmp_path):
    """predict with one model twice is that model; with two different models, neither alone."""
    from conftest import write_samples

    from sonoseg.data import preprocess

    samples = write_samples(tmp_path, 3)
    cache = tmp_path / "keep.npz"
    preprocess.build_cache(samples, 64, cache, "bilinear", "keep")
    a, b = write_model(tmp_path / "a.pt", "unet", seed=0), write_model(tmp_path / "b.pt", "unet", seed=1)

    def masks(models, name):
        infer.predict(models, cache, samples, tmp_path / name, device="cpu")
        return [cv2.imread(str(tmp_path / name / f"{n}.png"), cv2.IMREAD_GRAYSCALE) for n in range(3)]

    assert all(np.array_equal(x, y) for x, y in zip(masks([a, a], "aa"), masks(a, "a")))
    assert infer.predict([a, b], cache, samples, tmp_path / "ab", device="cpu") == 3


def test_predict_writes_a_run_and_its_flip_averaged_twin_in_one_pass_as_two_jobs_would(tmp_path):
    """--tta-outdir: the plain masks equal predict's without TTA, the twin's equal predict's with it."""
    from conftest import write_samples

    from sonoseg.data import preprocess

    samples = write_samples(tmp_path, 3)
    cache = tmp_path / "keep.npz"
    preprocess.build_cache(samples, 64, cache, "bilinear", "keep")
    model = write_model(tmp_path / "a.pt", "unet", seed=0)

    def masks(name):
        return [cv2.imread(str(tmp_path / name / f"{n}.png"), cv2.IMREAD_GRAYSCALE) for n in range(3)]

    infer.predict(model, cache, samples, tmp_path / "plain", device="cpu", postprocess="none")
    infer.predict(model, cache, samples, tmp_path / "tta", device="cpu", postprocess="none", tta=True)
    assert (
        infer.predict(
            model, cache, samples, tmp_path / "one", device="cpu", postprocess="none", tta_outdir=tmp_path / "twin"
        )
        == 3
    )
    assert all(np.array_equal(x, y) for x, y in zip(masks("one"), masks("plain")))
    assert all(np.array_equal(x, y) for x, y in zip(masks("twin"), masks("tta")))
    assert not all(np.array_equal(x, y) for x, y in zip(masks("plain"), masks("tta")))  # or the test shows nothing
    with pytest.raises(SonosegError, match="drop tta"):
        infer.predict(model, cache, samples, tmp_path / "x", device="cpu", tta=True, tta_outdir=tmp_path / "y")


def test_a_run_folder_exports_its_ensemble_as_one_onnx_graph(tmp_path, caplog):
    """The ONNX graph of a run folder gives the mean of its members' probabilities, as `segment` computes
    it in torch; the sidecar lists the members; a member prepared otherwise is refused by name."""
    import json

    from sonoseg.serving import export

    run = tmp_path / "runs" / "lighter_unet_c1"
    for fold, seed in ((0, 0), (0, 1), (1, 0), (1, 1)):
        (run / f"fold{fold}" / f"seed{seed}").mkdir(parents=True)
    members = [write_model(run / "fold0" / f"seed{s}" / "model.pt", "lighter_unet_c1", seed=s) for s in (0, 1)]
    (run / "fold1").rename(tmp_path / "fold1")  # one fold for now
    sidecar = export.export(run, tmp_path / "ensemble.onnx")
    assert [m["seed"] for m in sidecar["ensemble"]["members"]] == [0, 1]
    # Named within the run folder: the study machine's folders do not travel with the graph.
    assert json.loads((tmp_path / "ensemble.onnx.json").read_text())["ensemble"]["members"][1]["model"] == (
        "fold0/seed1/model.pt"
    )
    assert str(tmp_path) not in (tmp_path / "ensemble.onnx.json").read_text()
    batch = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    by_torch = np.mean([infer.torch_predictor(m, "cpu").run(batch) for m in members], axis=0)
    by_onnx = infer.onnxruntime_predictor(tmp_path / "ensemble.onnx").run(batch)
    assert np.abs(by_onnx - by_torch).max() < 1e-4
    single = infer.torch_predictor(members[0], "cpu").run(batch)
    assert np.abs(by_onnx - single).max() > 1e-3  # the ensemble, not its first member
    # segment says what it serves: the one graph's members, not "1 model".
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    with caplog.at_level(logging.INFO, logger="sonoseg.serving"):
        segmenter.segment_images(tmp_path / "ensemble.onnx", [image], tmp_path / "masks", backend="onnxruntime")
    assert any("an exported ensemble of 2 models" in r.getMessage() for r in caplog.records)
    (tmp_path / "fold1").rename(run / "fold1")
    write_model(run / "fold1" / "seed0" / "model.pt", "lighter_unet_c1", seed=0, interpolation="area")
    write_model(run / "fold1" / "seed1" / "model.pt", "lighter_unet_c1", seed=1, interpolation="area")
    with pytest.raises(SonosegError, match="fold1/seed0/model.pt: input .* differs"):
        export.export(run, tmp_path / "refused.onnx")
