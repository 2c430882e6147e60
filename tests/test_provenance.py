"""The data fingerprint (sonoseg.data.provenance): a study redoes what depends on its data when the data
changes, says what changed, and names the data every result came from."""

import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import BIN, copy_workflow, jobs_of, run_snakemake, synth_folder, write_config

from sonoseg.data import provenance
from sonoseg.errors import SonosegError

# ----------------------------------------------------------------------------- the module alone


def make_folder(root: Path, n: int = 3) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        (root / "images" / f"p{i}.png").write_bytes(os.urandom(100 + i))
        (root / "masks" / f"p{i}.png").write_bytes(os.urandom(50 + i))
    (root / "patients.csv").write_text("image,patient\n" + "".join(f"p{i}.png,{i}\n" for i in range(n)))
    return root


def folder_config(root: Path) -> dict:
    return {"dataset": {"layout": "folder", "root": str(root)}, "split": {"file": ""}, "train": {}}


def test_unchanged_files_are_not_read_again(tmp_path):
    root = make_folder(tmp_path / "data")
    first = provenance.check_study(folder_config(root), tmp_path / "out")
    assert first.hashed == 7 and not first.messages
    again = provenance.check_study(folder_config(root), tmp_path / "out")
    assert again.hashed == 0 and again.dataset_fingerprint == first.dataset_fingerprint
    # --rehash trusts no cached hash, and finds the same fingerprint.
    rehashed = provenance.check_study(folder_config(root), tmp_path / "out", rehash=True)
    assert rehashed.hashed == 7 and rehashed.dataset_fingerprint == first.dataset_fingerprint


def test_touched_files_are_read_again_but_change_nothing(tmp_path):
    root = make_folder(tmp_path / "data")
    first = provenance.check_study(folder_config(root), tmp_path / "out")
    record = provenance.record_path(tmp_path / "out", "dataset")
    written = record.stat().st_mtime_ns
    for path in root.rglob("*"):
        os.utime(path)
    again = provenance.check_study(folder_config(root), tmp_path / "out")
    assert again.hashed == 7 and not again.messages
    assert again.dataset_fingerprint == first.dataset_fingerprint
    assert record.stat().st_mtime_ns == written  # unchanged data: the record keeps its time, nothing reruns


def test_an_edit_that_restores_the_old_modification_time_is_caught(tmp_path):
    root = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    first = provenance.check_study(folder_config(root), out)
    mask = root / "masks" / "p1.png"
    stat = mask.stat()
    time.sleep(0.05)  # past the file system's coarse clock tick, so the status-change time can move
    # Same size, new content, old modification time put back: the status-change time still moves.
    mask.write_bytes(bytes(b ^ 0xFF for b in mask.read_bytes()))
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = provenance.check_study(folder_config(root), out)
    assert changed.dataset_fingerprint != first.dataset_fingerprint
    assert "1 modified: masks/p1.png" in changed.messages[0]


def test_the_message_names_added_removed_and_modified_files_and_counts_the_rest(tmp_path):
    root = make_folder(tmp_path / "data", n=8)
    out = tmp_path / "out"
    provenance.check_study(folder_config(root), out)
    (root / "images" / "p0.png").unlink()
    for i in range(8, 15):
        (root / "images" / f"p{i}.png").write_bytes(b"new")
    (root / "patients.csv").write_text("image,patient\np1.png,1\n")
    message = provenance.check_study(folder_config(root), out).messages[0]
    assert "the dataset changed since the last run" in message
    assert "7 added: images/p10.png, images/p11.png, images/p12.png, images/p13.png, images/p14.png, … (2 more)" in (
        message
    )
    assert "1 removed: images/p0.png" in message and "1 modified: patients.csv" in message
    assert "redoes the ingest" in message


def test_the_phantom_is_fingerprinted_by_its_settings(tmp_path):
    config = {"dataset": {"layout": "synthetic"}, "synthetic": {"patients": 6, "seed": 2}, "split": {}, "train": {}}
    first = provenance.check_study(config, tmp_path)
    assert first.records["dataset"].settings == {"synthetic": {"patients": 6, "seed": 2}} and first.hashed == 0
    config["synthetic"]["seed"] = 3
    assert provenance.check_study(config, tmp_path).dataset_fingerprint != first.dataset_fingerprint


def test_split_file_and_pretrained_weights_are_sources(tmp_path):
    root = make_folder(tmp_path / "data")
    (tmp_path / "split.csv").write_text("sample_id,split\n")
    weights = tmp_path / "weights" / "vgg16-features.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    config = {**folder_config(root), "split": {"file": str(tmp_path / "split.csv")}}
    pretrained = provenance.pretrained_sources([str(weights), "", str(weights)])
    assert pretrained == {str(weights): "pretrained_vgg16_features"}
    check = provenance.check_study(config, tmp_path / "out", pretrained=pretrained)
    assert set(check.records) == {"dataset", "split_file", "pretrained_vgg16_features"}
    weights.write_bytes(b"other weights")
    message = provenance.check_study(config, tmp_path / "out", pretrained=pretrained).messages[0]
    assert "pretrained_vgg16_features changed" in message and "vgg16-features.pth" in message


def test_a_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(SonosegError, match=f"dataset: {tmp_path / 'gone'} not found"):
        provenance.check_study(folder_config(tmp_path / "gone"), tmp_path / "out")


def test_an_unreadable_file_is_recorded_not_a_crash(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "images" / "broken.png").symlink_to(tmp_path / "nowhere.png")
    record = provenance.check_study(folder_config(root), tmp_path / "out").records["dataset"]
    assert record.files["images/broken.png"] == [-1, f"broken link to {tmp_path / 'nowhere.png'}"]


def test_the_junk_the_ingest_ignores_is_no_change_of_the_data(tmp_path):
    """A .DS_Store that Finder adds, a notebook's checkpoint, a macOS archive's __MACOSX: the ingest lists
    them as ignored without reading them, so they must not redo the study. A file the layout reads or
    reports does; notes it ignores do not."""
    root = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    first = provenance.check_study(folder_config(root), out)
    junk = [".DS_Store", "images/.DS_Store", "images/Thumbs.db", "masks/._p0.png", "desktop.ini"]
    junk += ["images/.ipynb_checkpoints/p0-checkpoint.png", ".git/HEAD", "__MACOSX/images/._p0.png"]
    for name in junk:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"junk")
    again = provenance.check_study(folder_config(root), out)
    assert again.dataset_fingerprint == first.dataset_fingerprint and not again.messages
    assert set(again.records["dataset"].files) == set(first.records["dataset"].files)
    (root / "images" / "notes.txt").write_bytes(b"notes: the ingest lists them as ignored, unread")
    assert provenance.check_study(folder_config(root), out).messages == []
    (root / "images" / "scan.dcm").write_bytes(b"a scan sonoseg does not read: a problem the ingest reports")
    changed = provenance.check_study(folder_config(root), out)
    assert changed.dataset_fingerprint != first.dataset_fingerprint
    assert "1 added: images/scan.dcm" in changed.messages[0]


def test_only_the_folders_under_the_root_decide_what_is_junk(tmp_path):
    """A dataset may lie in a hidden folder (~/.cache): its files count, all of them."""
    root = make_folder(tmp_path / ".cache" / "data")
    record = provenance.check_study(folder_config(root), tmp_path / "out").records["dataset"]
    assert len(record.files) == 7
    assert provenance.is_junk("images/.ipynb_checkpoints/a.png") and provenance.is_junk("__MACOSX/a.png")
    assert not provenance.is_junk("images/a.png") and not provenance.is_junk("images/a .png")


def test_a_link_counts_wherever_it_lies(tmp_path):
    """The ingest checks every link (one leaving the root is a problem), in a hidden folder too."""
    root = make_folder(tmp_path / "data")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "out.png").symlink_to(tmp_path / "elsewhere.png")
    record = provenance.check_study(folder_config(root), tmp_path / "out").records["dataset"]
    assert record.files[".hidden/out.png"] == [-1, f"broken link to {tmp_path / 'elsewhere.png'}"]


def test_records_and_cache_are_written_atomically_and_only_on_change(tmp_path):
    path = tmp_path / "r.json"
    assert provenance.write_json_atomic(path, {"a": 1}) is True
    assert provenance.write_json_atomic(path, {"a": 1}) is False
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


# ----------------------------------------------------------------------------- the real workflow

FOLDER_STUDY = {
    "study": "fp",
    "dataset": {"layout": "folder"},
    "preprocess": {"size": 32, "interpolation": "area"},
    "networks": ["lighter_unet_c1"],
    "baselines": ["threshold_baseline"],
    "seeds": [0],
    "split": {"fractions": [0.5, 0.25, 0.25]},
    "train": {"device": "cpu", "threads": 1, "min_epochs": 1, "max_epochs": 1},
    "cost": {"enabled": False},
    "ladder": {"enabled": False},
}
TARGETS = ["all"]


def make_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def dry_run(study) -> tuple[dict[str, int], str]:
    result = run_snakemake([*TARGETS, "-n", "--cores", "1", "--configfile", study["config"]], study["workdir"])
    assert result.returncode == 0, result.stderr[-3000:]
    if "Nothing to be done" in result.stdout + result.stderr:
        return {}, result.stderr
    return jobs_of(result.stdout), result.stderr


def read_only_mount(source: Path, target: Path) -> bool:
    target.mkdir()
    bound = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if bound.returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(target)])
        return False
    return True


@pytest.fixture(scope="module")
def folder_study(tmp_path_factory):
    """A finished small study (one network, one floor, up to Table 2) on a folder dataset of 6
    patients, read through a read-only bind mount of the folder where the system allows one (the
    tests change the data through the writable folder)."""
    base = tmp_path_factory.mktemp("folder_study")
    writable = base / "dataset"
    synth_folder(writable, patients=6, seed=4)
    read_only = read_only_mount(writable, base / "mounted")
    root = base / "mounted" if read_only else writable
    workdir = copy_workflow(make_dir(base / "workflow"))
    config = write_config(workdir, {**FOLDER_STUDY, "dataset": {"layout": "folder", "root": str(root)}}, "fp.yaml")
    run = run_snakemake([*TARGETS, "--cores", "2", "--configfile", config], workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    yield {
        "workdir": workdir,
        "config": config,
        "data": writable,
        "read_only": read_only,
        "out": workdir / "results/fp",
    }
    if read_only:
        subprocess.run(["umount", str(base / "mounted")])


def assert_redoes_the_data_chain(study, *expected: str):
    jobs, stderr = dry_run(study)
    for rule in ("ingest", "split", "preprocess", "train", "predict", "table"):
        assert jobs.get(rule, 0) >= 1, (rule, jobs)
    assert "the dataset changed since the last run" in stderr
    for text in expected:
        assert text in stderr, stderr[-2000:]


def assert_nothing_to_do(study):
    jobs, stderr = dry_run(study)
    assert jobs == {}, jobs
    assert "the study redoes" not in stderr


@pytest.mark.slow
def test_a_finished_study_records_its_data(folder_study):
    out = folder_study["out"]
    made = json.loads((out / "data/manifest.json").read_text())
    record = json.loads((out / "data/sources/dataset.json").read_text())
    assert made["dataset_fingerprint"] == record["fingerprint"]
    assert made["commit"] and made["sonoseg_version"] == provenance.sonoseg_version()
    short = record["fingerprint"][: provenance.SHORT]
    # Tables, the report's data page and the model files name the data.
    assert f"Data fingerprint {short}" in (out / "tables/table2.md").read_text()
    assert f"Data fingerprint {short}" in (out / "tables/table2.tex").read_text()
    assert record["fingerprint"] in (out / "report/data/overview.html").read_text()
    saved = torch.load(out / "runs/lighter_unet_c1/fold0/seed0/model.pt", weights_only=False)
    assert saved["provenance"]["dataset_fingerprint"] == record["fingerprint"]
    # `segment` says what data its model was trained on.
    image = sorted((folder_study["data"] / "images").iterdir())[0]
    segment = subprocess.run(
        [str(BIN / "sonoseg"), "segment", "--model", str(out / "runs/lighter_unet_c1/fold0/seed0/model.pt")]
        + ["--outdir", str(out.parent / "segmented"), "--device", "cpu", str(image)],
        capture_output=True,
        text=True,
    )
    assert segment.returncode == 0, segment.stderr
    assert f"trained on data with fingerprint {record['fingerprint']}" in segment.stderr
    cache = np.load(next((out / "data/cache").rglob("train.npz")))
    assert str(cache["dataset_fingerprint"]) == record["fingerprint"]
    # The record lists every file under the root by content, but the junk the ingest ignores; adding junk
    # redoes nothing.
    data = folder_study["data"]
    added = [data / ".DS_Store", data / "images" / "Thumbs.db", data / "images" / ".ipynb_checkpoints" / "a.png"]
    for path in added:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"junk")
    on_disk = {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()}
    assert set(record["files"]) == {name for name in on_disk if not provenance.is_junk(name)}
    assert set(record["files"]) < on_disk
    assert_nothing_to_do(folder_study)
    for path in added:
        path.unlink()
    (data / "images" / ".ipynb_checkpoints").rmdir()


@pytest.mark.slow
def test_the_study_ran_on_a_read_only_dataset(folder_study):
    if not folder_study["read_only"]:
        pytest.skip("this system allows no read-only bind mount (needs root and mount privileges)")
    root = Path(json.loads((folder_study["out"] / "data/sources/dataset.json").read_text())["root"])
    assert root.name == "mounted"
    with pytest.raises(OSError):
        (root / "probe").write_text("x")


@pytest.mark.slow
def test_each_change_of_the_data_redoes_the_study_and_its_undoing_does_not(folder_study):
    data = folder_study["data"]
    mask = sorted((data / "masks").iterdir())[0]
    image = sorted((data / "images").iterdir())[0]
    csv = data / "patients.csv"
    original = {path: path.read_bytes() for path in (mask, image, csv)}

    def restore():
        for path, content in original.items():
            path.write_bytes(content)
        assert_nothing_to_do(folder_study)

    # (1) a mask rewritten in place, new content
    mask.write_bytes(original[mask][:-40] + bytes(40))
    assert_redoes_the_data_chain(folder_study, f"1 modified: masks/{mask.name}")
    # The report, made now from the old results, says that the data changed since they were made.
    report = folder_study["out"] / "report.html"
    made = run_snakemake(
        ["--report", str(report), "--cores", "1", "--configfile", folder_study["config"]], folder_study["workdir"]
    )
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    assert "the dataset has changed since" in report.read_text()
    assert "this --report runs nothing: the next run redoes it" in made.stderr
    restore()

    # (2) rewritten with its old modification time put back, but another size
    stat = mask.stat()
    mask.write_bytes(original[mask] + b"\0")
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert_redoes_the_data_chain(folder_study, f"1 modified: masks/{mask.name}")
    restore()

    # (3) an image added, with its mask (an image alone, without its mask, stops the planning:
    # tests/test_plan_layout_check.py)
    added = [data / "images" / "added.png", data / "masks" / "added.png"]
    shutil.copy(image, added[0])
    shutil.copy(mask, added[1])
    assert_redoes_the_data_chain(folder_study, "2 added: images/added.png, masks/added.png")
    for path in added:
        path.unlink()
    assert_nothing_to_do(folder_study)

    # (4) an image removed, with its mask and its row of patients.csv
    image.unlink()
    mask.unlink()
    rows = original[csv].splitlines(keepends=True)
    csv.write_bytes(b"".join(row for row in rows if not row.startswith(image.name.encode() + b",")))
    assert_redoes_the_data_chain(
        folder_study, f"2 removed: images/{image.name}, masks/{mask.name}", "1 modified: patients.csv"
    )
    restore()

    # (5) patients.csv edited: two patients' images are found to be one patient's
    edited = original[csv].replace(b",P0001,", b",P0000,")
    assert edited != original[csv]
    csv.write_bytes(edited)
    assert_redoes_the_data_chain(folder_study, "1 modified: patients.csv")
    restore()

    # (6) every file touched, nothing changed
    for path in data.rglob("*"):
        os.utime(path)
    assert_nothing_to_do(folder_study)


@pytest.mark.slow
def test_a_corrected_mask_is_taken_by_the_next_run(tmp_path, folder_study):
    """The whole chain really redone, in a copy of the finished study's data. A test image's mask corrected
    changes no training's data: the training adopts its finished copy, and its model file names the data
    now. A training image's mask corrected trains again."""
    import cv2

    data = shutil.copytree(folder_study["data"], tmp_path / "dataset")
    workdir = copy_workflow(make_dir(tmp_path / "workflow"))
    config = write_config(workdir, {**FOLDER_STUDY, "dataset": {"layout": "folder", "root": str(data)}}, "fp.yaml")
    first = run_snakemake([*TARGETS, "--cores", "2", "--configfile", config], workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    out = workdir / "results/fp"
    model = out / "runs/lighter_unet_c1/fold0/seed0/model.pt"
    train_log = out / "logs/train/lighter_unet_c1/fold0/seed0.log"

    def trained_again() -> list[str]:
        """The network's trainings that ran epochs in the last run (its own, or the recipe selection's
        candidates, one of which the network's run adopts)."""
        logs = (out / "logs/train").glob("lighter_unet_c1*/fold0/seed0.log")
        return [log.parent.parent.name for log in logs if "epoch 1" in log.read_text()]

    samples = pd.read_csv(out / "data/manifest.csv").merge(pd.read_csv(out / "data/split.csv"), on="sample_id")

    def correct_a_mask(part: str) -> tuple[str, str]:
        """The annotator's correction of one mask of ``part``: half its lesion was not lesion. The study's
        data fingerprint before and after the run that takes it."""
        mask = Path(samples.loc[samples["split"] == part, "mask"].iloc[0])
        pixels = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        pixels[:, : pixels.shape[1] // 2] = 0
        cv2.imwrite(str(mask), pixels)
        before = json.loads((out / "data/manifest.json").read_text())["dataset_fingerprint"]
        rerun = run_snakemake([*TARGETS, "--cores", "2", "--configfile", config], workdir)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert f"1 modified: masks/{mask.name}" in rerun.stderr
        after = json.loads((out / "data/manifest.json").read_text())["dataset_fingerprint"]
        assert after != before and after[: provenance.SHORT] in (out / "tables/table2.md").read_text()
        return before, after

    trained = model.read_bytes()
    before, after = correct_a_mask("test")
    assert not trained_again() and "adopted" in train_log.read_text()
    saved = torch.load(model, weights_only=False)
    assert saved["provenance"]["dataset_fingerprint"] == after
    assert saved["provenance"]["dataset_fingerprint_at_training"] == before
    first_weights = torch.load(io.BytesIO(trained), weights_only=False)["state_dict"]
    assert all(torch.equal(saved["state_dict"][name], first_weights[name]) for name in first_weights)
    # `segment` says so, served the run folder (an ensemble of one here) as a model file.
    image = samples["image"].iloc[0]
    for model_given in (model, model.parent.parent.parent):
        segment = subprocess.run(
            [str(BIN / "sonoseg"), "segment", "--model", str(model_given), "--device", "cpu"]
            + ["--outdir", str(tmp_path / "segmented" / model_given.name), image],
            capture_output=True,
            text=True,
        )
        assert segment.returncode == 0, segment.stderr
        assert f"made for data with fingerprint {after}, trained under {before}" in segment.stderr

    _, newest = correct_a_mask("train")
    assert trained_again() and ".finished" not in train_log.read_text()
    saved = torch.load(model, weights_only=False)
    assert (
        saved["provenance"]["dataset_fingerprint"] == newest
        and "dataset_fingerprint_at_training" not in saved["provenance"]
    )


@pytest.mark.slow
def test_a_dataset_that_disappears_is_a_clear_error(tmp_path):
    workdir = copy_workflow(make_dir(tmp_path / "workflow"))
    config = write_config(
        workdir, {**FOLDER_STUDY, "dataset": {"layout": "folder", "root": str(tmp_path / "gone")}}, "fp.yaml"
    )
    result = run_snakemake(["-n", "--cores", "1", "--configfile", config], workdir)
    assert result.returncode != 0
    assert f"dataset: {tmp_path / 'gone'} not found" in result.stdout + result.stderr


def test_a_link_to_a_folder_is_recorded_not_followed(tmp_path):
    root = make_folder(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "more").symlink_to(elsewhere)
    record = provenance.check_study(folder_config(root), tmp_path / "out").records["dataset"]
    assert record.files["more"] == [-1, f"link to folder {elsewhere}"]
    assert provenance.read_json(provenance.record_path(tmp_path / "out", "dataset"))  # readable JSON
    mode = provenance.record_path(tmp_path / "out", "dataset").stat().st_mode & 0o777
    assert mode & 0o044  # not owner-only: a results folder may be shared (umask permitting)


# ----------------------------------------------------------------------------- moving a study


def test_a_relative_root_is_recorded_as_written_and_a_move_with_the_checkout_is_no_change(tmp_path, monkeypatch):
    first, second = tmp_path / "checkout", tmp_path / "moved"
    make_folder(first / "data/mine")
    monkeypatch.chdir(first)
    config = {**folder_config(Path("data/mine"))}
    check = provenance.check_study(config, first / "out")
    record = provenance.record_path(first / "out", "dataset")
    assert json.loads(record.read_text())["root"] == "data/mine"
    written = record.stat().st_mtime_ns
    first.rename(second)  # the checkout and its results, moved together
    monkeypatch.chdir(second)
    again = provenance.check_study(config, second / "out")
    assert again.messages == [] and again.dataset_fingerprint == check.dataset_fingerprint
    assert provenance.record_path(second / "out", "dataset").stat().st_mtime_ns == written  # not rewritten


def test_a_record_of_the_same_folder_written_otherwise_is_kept(tmp_path, monkeypatch):
    """A study made when records held the resolved root: the config's relative root leads to the same
    folder, so nothing is rewritten and nothing redone."""
    make_folder(tmp_path / "data/mine")
    monkeypatch.chdir(tmp_path)
    provenance.check_study(folder_config(tmp_path / "data/mine"), tmp_path / "out")
    record = provenance.record_path(tmp_path / "out", "dataset")
    written = record.stat().st_mtime_ns
    check = provenance.check_study(folder_config(Path("data/mine")), tmp_path / "out")
    assert check.messages == []
    assert record.stat().st_mtime_ns == written
    assert json.loads(record.read_text())["root"] == str(tmp_path / "data/mine")


def test_the_same_files_read_from_another_folder_are_announced_and_recorded(tmp_path):
    make_folder(tmp_path / "first")
    provenance.check_study(folder_config(tmp_path / "first"), tmp_path / "out")
    shutil.copytree(tmp_path / "first", tmp_path / "second")
    check = provenance.check_study(folder_config(tmp_path / "second"), tmp_path / "out")
    (message,) = check.messages
    assert f"the dataset is now read from {tmp_path / 'second'} (its record says {tmp_path / 'first'})" in message
    assert "with the same files" in message and "the study redoes the ingest" in message
    assert json.loads(provenance.record_path(tmp_path / "out", "dataset").read_text())["root"] == str(
        tmp_path / "second"
    )


@pytest.mark.slow
def test_a_finished_study_moved_with_its_checkout_redoes_nothing(tmp_path):
    """A real study on a dataset beside the workflow (a relative root, as the built-in sets have), then the
    whole folder moved: its manifest's paths are relative, and the next run has nothing to do."""
    workdir = copy_workflow(make_dir(tmp_path / "workflow"))
    synth_folder(workdir / "data/mine", patients=6, seed=4)
    config = write_config(workdir, {**FOLDER_STUDY, "dataset": {"layout": "folder", "root": "data/mine"}}, "fp.yaml")
    run = run_snakemake([*TARGETS, "--cores", "2", "--configfile", config], workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    manifest = (workdir / "results/fp/data/manifest.csv").read_text()
    assert str(tmp_path) not in manifest and "data/mine/images/" in manifest
    moved = tmp_path / "moved"
    workdir.rename(moved)
    jobs, stderr = dry_run({"workdir": moved, "config": config})
    assert jobs == {}, (jobs, stderr[-2000:])
    assert "the study redoes" not in stderr
    # The same files read from another folder: said, the ingest redone to read them there, the training
    # (same data caches, same fingerprint) adopted rather than trained again.
    elsewhere = shutil.copytree(moved / "data/mine", tmp_path / "elsewhere")
    write_config(moved, {**FOLDER_STUDY, "dataset": {"layout": "folder", "root": str(elsewhere)}}, "fp.yaml")
    rerun = run_snakemake([*TARGETS, "--cores", "2", "--configfile", config], moved)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert f"the dataset is now read from {elsewhere} (its record says data/mine), with the same files" in rerun.stderr
    assert str(elsewhere) in (moved / "results/fp/data/manifest.csv").read_text()
    training_log = (moved / "results/fp/logs/train/lighter_unet_c1/fold0/seed0.log").read_text()
    assert "adopted" in training_log, training_log[-2000:]


def test_a_moved_dataset_whose_manifest_was_made_from_these_files_is_still_redone(tmp_path):
    """A study made elsewhere (its record's root another folder, its manifest made from the very same files):
    the record is rewritten with a date after the manifest's, so that the ingest does run again and the
    manifest names the files where they are now (a record dated before it would redo nothing)."""
    root = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    first = provenance.check_study(folder_config(root), out)
    record = provenance.record_path(out, "dataset")
    payload = json.loads(record.read_text())
    record.write_text(json.dumps({**payload, "root": str(tmp_path / "old_checkout" / "data")}))
    (out / "data" / "manifest.csv").write_text("sample_id\n")
    (out / "data" / "manifest.json").write_text(json.dumps({"dataset_fingerprint": first.dataset_fingerprint}))
    check = provenance.check_study(folder_config(root), out)
    assert any("is now read from" in m and "the study redoes the ingest" in m for m in check.messages)
    assert record.stat().st_mtime_ns >= (out / "data" / "manifest.json").stat().st_mtime_ns
    assert json.loads(record.read_text())["root"] == str(root)


def test_a_weights_file_reached_through_a_link_is_no_move(tmp_path):
    """A file's record names the folder its content lies in (the link's target), as records always did: an
    unchanged file is no change, whichever folder the link is in."""
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "resnet-abc.pt").write_bytes(os.urandom(64))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "resnet.pt").symlink_to(tmp_path / "hub" / "resnet-abc.pt")
    config = {**folder_config(make_folder(tmp_path / "data")), "split": {"file": ""}}
    pretrained = {str(tmp_path / "weights" / "resnet.pt"): "pretrained_resnet"}
    provenance.check_study(config, tmp_path / "out", pretrained=pretrained)
    record = provenance.record_path(tmp_path / "out", "pretrained_resnet")
    assert json.loads(record.read_text())["root"] == str(tmp_path / "hub")
    written = record.stat().st_mtime_ns
    assert provenance.check_study(config, tmp_path / "out", pretrained=pretrained).messages == []
    assert record.stat().st_mtime_ns == written


@pytest.mark.parametrize(
    "command",
    [
        ["equivalence", "--pairs", "a:b", "--per-image", "{per_image}", "--margin", "0.03"],
        ["selection-table", "--choices", "{per_image}"],
        ["table", "table2", "--summaries", "{per_image}"],
        ["generalization", "--per-image", "{per_image}", "--networks", "unet", "--datasets", "far=development"],
        ["subgroups", "--per-image", "{per_image}", "--networks", "unet"],
        [
            "report-statistics",
            "--per-image",
            "{per_image}",
            "--runs",
            "unet",
            "--distributions",
            "{out}.png",
            "--csv",
            "{out}.csv",
            "--table",
            "{out}.html",
            "--forest",
            "{out}.forest.png",
        ],
    ],
    ids=lambda command: command[0],
)
def test_a_manifest_that_is_not_there_is_named_not_captioned_unknown(tmp_path, capsys, command):
    """A mistyped --manifest of a table command gave the caption "Data fingerprint unknown" (or a figure before
    the error): it is named, and nothing is written."""
    from sonoseg.study.cli import main

    nope = tmp_path / "nope" / "manifest.csv"
    out = tmp_path / "made" / "out"
    words = [word.format(per_image=tmp_path / "x.csv.gz", out=out) for word in command]
    if "--out" not in words and words[0] != "report-statistics":
        words += ["--out", f"{out}.csv"]
    assert main([*words, "--manifest", str(nope)]) == 2
    assert f"{nope}: manifest not found" in capsys.readouterr().err
    assert not list(tmp_path.glob("made/*"))


def test_the_commit_is_dirty_for_a_change_anywhere_in_the_package(tmp_path):
    """A change to the analysis or the training code, not only to the data stage's folder, makes the commit
    that tables, the report and model files name '+dirty'."""
    import importlib.util
    import sys

    package = tmp_path / "src" / "sonoseg"
    (package / "data").mkdir(parents=True)
    (package / "analysis").mkdir()
    shutil.copy(provenance.__file__, package / "data" / "provenance.py")
    (package / "analysis" / "tables.py").write_text("X = 1\n")
    (package / "__init__.py").write_text("")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    spec = importlib.util.spec_from_file_location("copied_provenance", package / "data" / "provenance.py")
    copied = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = copied  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(copied)
    finally:
        del sys.modules[spec.name]
    clean = copied.sonoseg_commit()
    assert len(clean) == 12 and not clean.endswith("+dirty")
    (package / "analysis" / "tables.py").write_text("X = 2\n")
    copied.sonoseg_commit.cache_clear()  # asked once per process: the code that runs does not change under it
    assert copied.sonoseg_commit() == clean + "+dirty"


def test_a_package_installed_inside_another_repository_names_no_commit(tmp_path):
    # A venv inside a hospital's own deploy repository: git answers for the repository around site-packages,
    # whose commit is not sonoseg's.
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "README").write_text("deploy\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    installed = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages" / "sonoseg"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert provenance.commit_of(installed) == "unknown"
    # Even committed there (a venv checked in), it is no sonoseg checkout: its top is not two levels up.
    subprocess.run([*git, "add", "-f", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "venv"], check=True)
    assert provenance.commit_of(installed) == "unknown"
    checkout = tmp_path / "src" / "sonoseg"  # a folder two levels under the top, but untracked
    checkout.mkdir(parents=True)
    (checkout / "__init__.py").write_text("")
    assert provenance.commit_of(checkout) == "unknown"
    subprocess.run([*git, "add", "src"], check=True)
    subprocess.run([*git, "commit", "-qm", "src"], check=True)
    assert len(provenance.commit_of(checkout)) == 12


@pytest.mark.slow
def test_an_installed_wheel_names_the_commit_it_was_built_from(tmp_path):
    """A hospital engineer installs sonoseg as a wheel: no checkout around it, so its tables and `segment`'s
    records named commit 'unknown'. The build stamps the commit (setup.py); the installed package reads it."""
    import sys
    import zipfile

    repository = Path(__file__).resolve().parents[1]
    # Built from a clone with the working tree's package and build files over it (the build writes into the
    # tree it builds): the commit is HEAD's, '+dirty' where the package has uncommitted changes.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repository), str(clone)], check=True)
    unbuilt = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(repository / "src", clone / "src", ignore=unbuilt, dirs_exist_ok=True)
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(repository / name, clone / name)
    head = provenance.commit_of(clone / "src" / "sonoseg")
    assert head != "unknown"

    def wheel_of(source: Path, into: Path) -> Path:
        built = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(into),
                str(source),
            ],
            capture_output=True,
            text=True,
        )
        assert built.returncode == 0, built.stderr
        (wheel,) = into.glob("sonoseg-*.whl")
        return wheel

    wheel = wheel_of(clone, tmp_path)
    installed = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(installed)
    assert (installed / "sonoseg" / provenance.BUILT_FROM).read_text().strip() == head
    # The installed package, imported from there (no git repository around it), names that commit.
    said = subprocess.run(
        [sys.executable, "-c", "from sonoseg.data.provenance import sonoseg_commit; print(sonoseg_commit())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
    )
    assert said.returncode == 0, said.stderr
    assert said.stdout.strip() == head
    # An editable install (make's venv) asks git, and the source folder gets no stamp.
    assert not (repository / "src" / "sonoseg" / provenance.BUILT_FROM).exists()
    # `python -m build` and `uv build` make an sdist, then the wheel from it, where no git answers: the sdist
    # carries the stamp in its source tree.
    sdist = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"],
        capture_output=True,
        text=True,
        cwd=clone,
    )
    assert sdist.returncode == 0, sdist.stderr
    import tarfile

    with tarfile.open(tmp_path / sdist.stdout.strip().splitlines()[-1]) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    from_sdist = wheel_of(unpacked, tmp_path / "w")
    assert zipfile.ZipFile(from_sdist).read(f"sonoseg/{provenance.BUILT_FROM}").decode().strip() == head


def test_a_training_of_uncommitted_network_code_of_the_users_own_is_stamped_dirty(tmp_path, monkeypatch):
    """A probe edited its own network's module (beside the Snakefile, in the same checkout) without committing
    and retrained: the training was stamped with the clean commit its earlier training of other code had."""
    monkeypatch.setattr(provenance, "sonoseg_commit", lambda: "abc123")

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    module = tmp_path / "my_nets.py"
    module.write_text("def build():\n    return None\n")
    assert provenance.commit_with([module]) == "abc123+dirty"  # not tracked: not in the commit
    git("add", "my_nets.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "mine")
    assert provenance.commit_with([module]) == "abc123"
    module.write_text("def build():\n    return 1\n")
    assert provenance.commit_with([module]) == "abc123+dirty"
    outside = tmp_path.parent / f"{tmp_path.name}_elsewhere.py"  # in no repository: not judged
    outside.write_text("x = 1\n")
    assert provenance.commit_with([outside]) == "abc123" and provenance.commit_with([]) == "abc123"
    # Several files of one folder (asked of git at once) and of two: any one changed makes the training dirty.
    (tmp_path / "layers").mkdir()
    layer = tmp_path / "layers" / "block.py"
    layer.write_text("y = 2\n")
    git("checkout", "-q", "--", "my_nets.py")
    git("add", "layers/block.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "layers")
    helper = tmp_path / "helpers.py"
    assert provenance.commit_with([module, layer, outside]) == "abc123"
    helper.write_text("z = 3\n")  # untracked, beside the committed module
    assert provenance.commit_with([module, helper, layer]) == "abc123+dirty"
    helper.unlink()
    layer.write_text("y = 3\n")
    assert provenance.commit_with([module, layer]) == "abc123+dirty"
    # One git call per folder, however many of the network's files lie there (a git status per file before).
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a[0]) or real_run(*a, **k))
    siblings = [tmp_path / f"part{i}.py" for i in range(5)]
    for sibling in siblings:
        sibling.write_text("w = 1\n")
    git("add", *(sibling.name for sibling in siblings))
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "parts")
    git_calls = len(calls)
    provenance.commit_with([module, *siblings, layer])
    assert len(calls) - git_calls == 2  # tmp_path's six files, clean, then layers/'s, changed
