"""A dataset's layout is read when the run is planned, as its ingest job will read it (workflow/rules/common.smk,
sonoseg.study.config_check.check_datasets, sonoseg.data.manifest.check_layout): a dataset declared with the
wrong layout, a folder without images, masks missing or a CSV without its column stops `snakemake -n`, naming
the dataset's config key, the file or folder and the problem, before any job runs; never a pixel is read."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, jobs_of, run_snakemake, write_config

from sonoseg.data import layouts, manifest, provenance, synth
from sonoseg.errors import SonosegError


def phantom_folder(path: Path, seed: int = 5) -> Path:
    """A small folder-layout dataset (images/, masks/, patients.csv), as a user makes one."""
    return synth.write_dataset(path, patients=2, seed=seed, size=(48, 64))


def plan(workdir: Path, config: dict):
    return run_snakemake(["all", "-n", "--cores", "1", "--configfile", write_config(workdir, config)], workdir)


# ----------------------------------------------------------------------------- the real workflow


@pytest.mark.slow
def test_external_datasets_declared_wrong_stop_the_dry_run_each_named_with_its_problem(workflow_copy):
    phantom_folder(workflow_copy / "folder_set")  # a folder-layout set...
    shutil.copytree(workflow_copy / "folder_set", workflow_copy / "folder_set_2")  # (one folder, one set)
    phantom_folder(workflow_copy / "no_masks")
    for mask in (workflow_copy / "no_masks" / "masks").iterdir():
        mask.unlink()
    phantom_folder(workflow_copy / "no_patient_column")
    patients = workflow_copy / "no_patient_column" / "patients.csv"
    patients.write_text(patients.read_text().replace(",patient,", ",subject,", 1))
    (workflow_copy / "no_images" / "masks").mkdir(parents=True)
    externals = [
        {"name": "as_busi", "layout": "busi", "root": "folder_set"},  # ...declared as BUSI
        {"name": "as_busbra", "layout": "busbra", "root": "folder_set_2"},
        {"name": "no_masks", "root": "no_masks"},
        {"name": "no_patient_column", "root": "no_patient_column"},
        {"name": "no_images", "root": "no_images"},
    ]
    dry = plan(workflow_copy, {**TINY, "external_datasets": externals})
    shown = dry.stdout + dry.stderr
    assert dry.returncode != 0, shown[-3000:]
    assert "5 dataset(s) in the config cannot be ingested as declared" in shown, shown[-3000:]
    image = sorted((workflow_copy / "folder_set" / "images").iterdir())[0].resolve()
    for key, problem in (
        ("external_datasets 'as_busi' (layout busi, root folder_set)", f"{image}: image without mask"),
        ("external_datasets 'as_busbra' (layout busbra", "the busbra layout needs Images/ and Masks/ folders"),
        ("external_datasets 'no_masks' (layout folder", "no_masks/images/P0000_v1.png: image without mask"),
        ("external_datasets 'no_patient_column' (layout folder", "patients.csv: missing column(s) ['patient']"),
        ("external_datasets 'no_images' (layout folder", "the folder layout needs an images/ folder"),
    ):
        line = next((line for line in shown.splitlines() if line.startswith(f"config {key}")), "")
        assert line, (key, shown[-3000:])
        assert problem in shown, (problem, shown[-3000:])
    assert "on_bad_sample: exclude in this dataset's config entry" in shown  # ingest's own advice
    assert not list(workflow_copy.glob("results/**/manifest.csv"))  # no job ran


@pytest.mark.slow
def test_the_main_dataset_declared_wrong_stops_the_dry_run(workflow_copy):
    phantom_folder(workflow_copy / "mine")
    dry = plan(workflow_copy, {**TINY, "dataset": {"layout": "busi", "root": "mine"}})
    shown = dry.stdout + dry.stderr
    assert dry.returncode != 0, shown[-3000:]
    assert "config dataset (layout busi, root mine): dataset " in shown, shown[-3000:]
    assert "8 problem(s) found (on_bad_sample: fail)" in shown  # 4 images and 4 masks, as BUSI pairs them
    assert f"{(workflow_copy / 'mine' / 'masks' / 'P0000_v1.png').resolve()}: image without mask" in shown


@pytest.mark.slow
def test_a_set_declared_right_still_plans_and_its_pixels_are_left_to_the_ingest(workflow_copy):
    phantom_folder(workflow_copy / "ext")
    broken = workflow_copy / "ext" / "images" / "P0000_v1.png"
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated PNG: only its pixels tell, and planning reads none
    (workflow_copy / "ext" / ".DS_Store").write_bytes(b"junk")
    (workflow_copy / "ext" / "README.txt").write_text("notes")
    wrong = plan(workflow_copy, {**TINY, "external_datasets": [{"name": "ext", "layout": "busbra", "root": "ext"}]})
    assert wrong.returncode != 0 and "config external_datasets 'ext' (layout busbra" in wrong.stdout + wrong.stderr
    config = {**TINY, "external_datasets": [{"name": "ext", "root": "ext"}]}
    dry = plan(workflow_copy, config)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert jobs_of(dry.stdout)["ingest_external"] == 1
    # The main dataset from a folder too, declared right.
    phantom_folder(workflow_copy / "mine", seed=7)
    dry = plan(workflow_copy, {**config, "dataset": {"layout": "folder", "root": str(workflow_copy / "mine")}})
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert jobs_of(dry.stdout)["ingest"] == 1 and "synthesize" not in jobs_of(dry.stdout)


@pytest.mark.slow
def test_a_layout_s_warning_is_shown_when_the_dataset_is_first_seen_or_changes_not_at_every_planning(workflow_copy):
    root = phantom_folder(workflow_copy / "ext")
    mask = next((root / "masks").iterdir())
    for name in ("unlisted_a", "unlisted_b"):  # images patients.csv names in no row: warned of
        shutil.copy(root / "images" / mask.name, root / "images" / f"{name}.png")
        shutil.copy(mask, root / "masks" / f"{name}.png")
    (root / "images" / "unlisted_b.png").rename(workflow_copy / "unlisted_b.png")
    (root / "masks" / "unlisted_b.png").rename(workflow_copy / "unlisted_b_mask.png")
    config = {**TINY, "external_datasets": [{"name": "ext", "root": "ext"}]}
    warning = "names 1 image(s) of images/ in no row"
    first = plan(workflow_copy, config)
    assert first.returncode == 0 and warning in first.stderr, first.stderr[-3000:]
    again = plan(workflow_copy, config)
    assert again.returncode == 0 and "in no row" not in again.stderr, again.stderr[-3000:]
    # The dataset changed: its warnings are news again.
    (workflow_copy / "unlisted_b.png").rename(root / "images" / "unlisted_b.png")
    (workflow_copy / "unlisted_b_mask.png").rename(root / "masks" / "unlisted_b.png")
    changed = plan(workflow_copy, config)
    assert changed.returncode == 0 and "names 2 image(s) of images/ in no row" in changed.stderr, changed.stderr[-3000:]
    # So do they when the same files are read with other options, and until a planning passes.
    other_options = {**config, "external_datasets": [{"name": "ext", "root": "ext", "on_bad_sample": "exclude"}]}
    assert "in no row" in plan(workflow_copy, other_options).stderr
    assert "in no row" not in plan(workflow_copy, other_options).stderr
    broken = {
        **other_options,
        "external_datasets": [*other_options["external_datasets"], {"name": "gone", "root": "x"}],
    }
    assert plan(workflow_copy, broken).returncode != 0
    (root / "masks" / "unlisted_b.png").unlink()  # with a problem of its own: the warning comes with the error
    stopped = plan(workflow_copy, config)
    assert stopped.returncode != 0 and "in no row" in stopped.stderr, stopped.stderr[-3000:]
    shutil.copy(mask, root / "masks" / "unlisted_b.png")
    assert "names 2 image(s) of images/ in no row" in plan(workflow_copy, config).stderr


@pytest.mark.slow
def test_a_broken_dataset_stops_the_planning_and_not_the_unlock(workflow_copy):
    # After a killed run a user must release the lock, whatever became of the data meanwhile.
    config = write_config(workflow_copy, {**TINY, "external_datasets": [{"name": "ext", "root": "gone"}]})
    assert run_snakemake(["all", "-n", "--cores", "1", "--configfile", config], workflow_copy).returncode != 0
    for unlock_flag in ("--unlock", "--unl"):  # as argparse takes it, abbreviated too
        unlock = run_snakemake(["all", unlock_flag, "--configfile", config], workflow_copy)
        assert unlock.returncode == 0 and "Unlocked" in unlock.stdout + unlock.stderr, unlock.stderr[-3000:]
    for cleanup_args in (["--cleanup-metadata", "results/tiny/runs.tsv"], ["--cm=results/tiny/runs.tsv"]):
        cleanup = run_snakemake([*cleanup_args, "--configfile", config], workflow_copy)
        assert "metadata was not present" in cleanup.stderr, cleanup.stderr[-3000:]  # Snakemake's answer: none yet


# ----------------------------------------------------------------------------- the check itself


def test_the_check_raises_what_the_ingest_raises_before_the_pixels(tmp_path):
    root = phantom_folder(tmp_path / "set")
    no_column = phantom_folder(tmp_path / "no_column")
    misnamed = phantom_folder(tmp_path / "misnamed")  # every patients.csv row names its image with images/ before it
    listing = pd.read_csv(misnamed / "patients.csv", dtype=str).assign(spacing_mm="0.1")
    listing.assign(image="images/" + listing["image"]).to_csv(misnamed / "patients.csv", index=False)
    (no_column / "patients.csv").write_text((no_column / "patients.csv").read_text().replace(",patient,", ",who,", 1))
    cases = [
        (root, {"layout": "busi"}),
        (root, {"layout": "busbra"}),
        (root, {"layout": "folder", "dataset_csv": "list.csv"}),
        (root, {"layout": "busi", "dataset_csv": "list.csv"}),
        (root, {"layout": "folder", "pixel_spacing": "spacing_mm"}),
        (misnamed, {"layout": "folder", "pixel_spacing": "spacing_mm"}),  # the problems first, then the spacing
        (no_column, {"layout": "folder"}),
        (tmp_path / "gone", {"layout": "folder"}),
    ]
    for where, settings in cases:
        with pytest.raises(SonosegError) as by_ingest:
            manifest.ingest(where, **settings)
        with pytest.raises(SonosegError) as by_check:
            manifest.check_layout(where, **settings)
        assert str(by_check.value) == str(by_ingest.value), settings
        if where == misnamed:
            assert "problem(s) found" in str(by_check.value) and "pixel_spacing" not in str(by_check.value)
    assert manifest.check_layout(root, "folder").images == 4


def test_the_check_reads_no_pixel(tmp_path):
    root = phantom_folder(tmp_path / "set")
    for image in (root / "images").iterdir():
        image.write_bytes(b"not an image at all")
    assert manifest.check_layout(root, "folder").images == 4  # the layout pairs them; their pixels are ingest's
    with pytest.raises(SonosegError, match="4 problem"):
        manifest.ingest(root, "folder")
    # With on_bad_sample: exclude, a layout problem is no stop, but a set where nothing pairs is.
    for mask in (root / "masks").iterdir():
        mask.unlink()
    with pytest.raises(SonosegError, match="no usable image-mask pair found for layout 'folder'"):
        manifest.check_layout(root, "folder", on_bad_sample="exclude")


def test_the_fingerprint_s_file_list_pairs_as_a_walk_of_the_root_does(tmp_path):
    """The planning check reuses the list of files the fingerprint made (no second walk): the files and the
    links refused are the walk's, but for the junk, which a layout only lists as ignored."""
    root = phantom_folder(tmp_path / "set")
    outside = tmp_path / "outside.png"
    shutil.copy(next((root / "images").iterdir()), outside)
    (root / "images" / "leaves.png").symlink_to(outside)
    (root / "images" / "broken.png").symlink_to(root / "nowhere.png")
    (root / "images" / "inside.png").symlink_to(root / "images" / "P0000_v1.png")
    (root / "folder_link").symlink_to(root / "masks")
    (root / ".DS_Store").write_bytes(b"junk")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "a.png").write_bytes(b"junk")
    (root / ".ipynb_checkpoints" / "away.png").symlink_to(outside)
    record = provenance.folder_record("dataset", root, provenance.HashCache(tmp_path / "hashes.json"))
    walked_files, walked_refused = layouts.list_files(root)
    listed_files, listed_refused = layouts.list_files(root, provenance.record_paths(record))
    assert listed_refused == walked_refused and len(walked_refused) == 4
    assert listed_files == [path for path in walked_files if not provenance.is_junk(path.relative_to(root))]
    with pytest.raises(SonosegError) as by_ingest:
        manifest.ingest(root, "folder")
    with pytest.raises(SonosegError) as by_check:
        manifest.check_layout(root, "folder", listed=provenance.record_paths(record))
    assert str(by_check.value) == str(by_ingest.value)
    assert "symbolic link leaves the dataset root" in str(by_check.value)
