"""What planning a study says and leaves behind (a user's probe): the data fingerprint covers the files a
dataset's layout reads and no others, so a README added beside the images redoes nothing; a dry run leaves
the fingerprint records as the last real run wrote them; a network of one's own listed among the built-in
ones, a misspelt name and a split the data cannot be dealt to are said at planning, each naming the key."""

import json
import shutil
from pathlib import Path

import cv2
import pytest
from conftest import TINY, jobs_of, run_snakemake, synth_folder, write_config

from sonoseg.data import manifest, provenance, synth
from sonoseg.errors import SonosegError
from sonoseg.study import config_check

SCHEMA = config_check.load_schema(Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml")


# ----------------------------------------------------------------------------- datasets in each layout


def folder_set(root: Path, patients: int = 2) -> Path:
    return synth.write_dataset(root, patients=patients, seed=3, size=(48, 64))


def busi_set(root: Path, patients: int = 2) -> Path:
    """A BUSI-layout set: benign/NAME.png with benign/NAME_mask.png (each image its own patient)."""
    source = folder_set(root.parent / f"{root.name}_source", patients)
    (root / "benign").mkdir(parents=True)
    for number, image in enumerate(sorted((source / "images").iterdir()), start=1):
        shutil.copy(image, root / "benign" / f"benign ({number}).png")
        shutil.copy(source / "masks" / image.name, root / "benign" / f"benign ({number})_mask.png")
    return root


def busbra_set(root: Path, patients: int = 2) -> Path:
    """A BUS-BRA-layout set: Images/bus_XXXX-V.png, Masks/mask_XXXX-V.png, a root CSV of the image ids."""
    source = folder_set(root.parent / f"{root.name}_source", patients)
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir()
    ids = []
    for image in sorted((source / "images").iterdir()):
        patient, view = image.stem.split("_")  # P0000_v1
        ident = f"{patient[1:]}-{view}"
        shutil.copy(image, root / "Images" / f"bus_{ident}.png")
        shutil.copy(source / "masks" / image.name, root / "Masks" / f"mask_{ident}.png")
        ids.append(f"bus_{ident}")
    (root / "bus_data.csv").write_text("ID,Histology\n" + "".join(f"{i},benign\n" for i in ids))
    return root


def listed_set(root: Path) -> Path:
    """A folder set listed by a CSV of its own (csv: list.csv)."""
    folder_set(root)
    rows = [f"images/{p.name},masks/{p.name},{p.stem[:5]}\n" for p in sorted((root / "images").iterdir())]
    (root / "list.csv").write_text("image,mask,patient\n" + "".join(rows))
    return root


# layout -> (how to make a set, the image folder, the options of its ingest)
LAYOUTS = {
    "folder": (folder_set, "images", {}),
    "busi": (busi_set, "benign", {}),
    "busbra": (busbra_set, "Images", {}),
    "folder_with_csv": (listed_set, "images", {"dataset_csv": "list.csv"}),
}


def add_files_no_layout_reads(root: Path, image_folder: str) -> list[str]:
    """Notes and the like, beside the data and among the images: files the ingest lists as ignored."""
    added = ["README.txt", "LICENSE", "docs/protocol.md", f"{image_folder}/annotations.json", "extra.xlsx"]
    for name in added:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("notes")
    return added


def add_files_the_ingest_reports(root: Path, image_folder: str) -> list[str]:
    """Files the ingest reports as problems: an image in a format it does not read, one without extension
    (DICOM), an image that pairs with nothing, at the root."""
    added = [f"{image_folder}/scan.webp", f"{image_folder}/scan0001", "stray.png"]
    for name in added:
        (root / name).write_bytes(b"an image")
    return added


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_a_file_the_fingerprint_leaves_out_is_one_the_ingest_ignores(tmp_path, kind):
    make, image_folder, options = LAYOUTS[kind]
    layout = "folder" if kind == "folder_with_csv" else kind
    root = make(tmp_path / "set")
    notes = add_files_no_layout_reads(root, image_folder)
    reported = add_files_the_ingest_reports(root, image_folder)
    csv = options.get("dataset_csv", "")
    record = provenance.folder_record("dataset", root, provenance.HashCache(tmp_path / "h.json"), "", layout, csv)
    found = manifest.ingest(root, layout, on_bad_sample="exclude", **options)
    # Each file the manifest lists -> its status (a mask: its image's row)
    status = {}
    for image, masks, row_status in found[["image", "mask", "status"]].fillna("").values:
        for path in [image, *filter(None, masks.split("|"))]:
            status[Path(path).resolve().relative_to(root.resolve()).as_posix()] = row_status
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    left_out = on_disk - set(record.files)
    assert all(status[name] == "ignored" for name in left_out), {name: status[name] for name in left_out}
    assert set(reported) <= set(record.files)  # problems the ingest reports change the data
    # A set listed by its own CSV may name a file of any name: there every file counts.
    assert left_out == (set() if csv else set(notes))
    # The planning's layout check on the record's file list finds what a walk of the root finds.
    listed = provenance.record_paths(record)
    settings = {"on_bad_sample": "exclude", **options}
    assert manifest.check_layout(root, layout, listed=listed, **settings) == manifest.check_layout(
        root, layout, **settings
    )
    with pytest.raises(SonosegError) as by_walk:
        manifest.check_layout(root, layout, **options)
    with pytest.raises(SonosegError) as by_record:
        manifest.check_layout(root, layout, listed=listed, **options)
    assert str(by_record.value) == str(by_walk.value)


def config_of(root: Path, external: dict | None = None) -> dict:
    config = {"dataset": {"layout": "folder", "root": str(root)}, "split": {"file": ""}, "train": {}}
    return {**config, "external_datasets": [external]} if external else config


def test_notes_added_beside_the_data_change_no_fingerprint_and_an_edited_mask_does(tmp_path):
    main, busi = folder_set(tmp_path / "main"), busi_set(tmp_path / "busi")
    config = config_of(main, {"name": "mybusi", "layout": "busi", "root": str(busi)})
    out = tmp_path / "out"
    first = provenance.check_study(config, out)
    add_files_no_layout_reads(main, "images")
    add_files_no_layout_reads(busi, "benign")
    again = provenance.check_study(config, out)
    assert again.messages == [] and again.rewritten == []
    assert {n: r.fingerprint for n, r in again.records.items()} == {n: r.fingerprint for n, r in first.records.items()}
    mask = busi / "benign" / "benign (1)_mask.png"
    mask.write_bytes(mask.read_bytes() + b"\0")
    (message,) = provenance.check_study(config, out).messages
    assert message.startswith("sonoseg: external dataset 'mybusi' changed since the last run (1 modified: benign/")
    assert "external_mybusi" not in message and "per_image.csv.gz" in message


def test_a_record_that_listed_every_file_is_kept_while_the_files_the_layout_reads_are_the_same(tmp_path):
    """A study made before the rule: its record also lists a README, and upgrading must redo nothing."""
    root = folder_set(tmp_path / "main")
    (root / "README.txt").write_text("notes")
    out = tmp_path / "out"
    earlier = provenance.folder_record("dataset", root, provenance.HashCache(tmp_path / "h.json"))  # every file
    assert "README.txt" in earlier.files
    record = provenance.record_path(out, "dataset")
    provenance.write_json_atomic(record, earlier.to_json())
    written = record.read_bytes()
    check = provenance.check_study(config_of(root), out)
    assert check.messages == [] and check.dataset_fingerprint == earlier.fingerprint
    assert record.read_bytes() == written
    (root / "masks" / "P0000_v1.png").write_bytes(b"corrected")
    (message,) = provenance.check_study(config_of(root), out).messages
    # The message names the mask alone (the README is still there); the record is now the new rule's.
    assert "(1 modified: masks/P0000_v1.png)" in message
    assert "README.txt" not in json.loads(record.read_text())["files"]


def test_a_record_that_listed_every_file_read_from_another_folder_is_a_move(tmp_path):
    """The same study's data copied elsewhere (the root changed in the config) after the upgrade: the same files
    as the layout reads them, so the message says the folder moved, not that the data changed."""
    import shutil

    root = folder_set(tmp_path / "main")
    (root / "README.txt").write_text("notes")
    out = tmp_path / "out"
    earlier = provenance.folder_record("dataset", root, provenance.HashCache(tmp_path / "h.json"))  # every file
    provenance.write_json_atomic(provenance.record_path(out, "dataset"), earlier.to_json())
    copy = shutil.copytree(root, tmp_path / "copy")
    (message,) = provenance.check_study(config_of(copy), out).messages
    assert f"is now read from {copy}" in message and "with the same files" in message and "changed" not in message


def test_undo_puts_each_record_back_as_it_was_unless_another_run_rewrote_it(tmp_path):
    main, busi = folder_set(tmp_path / "main"), busi_set(tmp_path / "busi")
    out = tmp_path / "out"
    fresh = provenance.check_study(config_of(main), out)
    fresh.undo()  # a dry run of a new study leaves no record
    assert not provenance.record_path(out, "dataset").exists()
    config = config_of(main, {"name": "mybusi", "layout": "busi", "root": str(busi)})
    provenance.check_study(config, out)
    records = {name: provenance.record_path(out, name) for name in ("dataset", "external_mybusi")}
    before = {name: (path.read_bytes(), path.stat().st_mtime_ns) for name, path in records.items()}
    (main / "masks" / "P0000_v1.png").write_bytes(b"corrected")
    (busi / "benign" / "benign (2)_mask.png").write_bytes(b"corrected")
    changed = provenance.check_study(config, out)
    assert len(changed.messages) == 2 and len(changed.rewritten) == 2
    provenance.write_json_atomic(records["dataset"], {"source": "dataset", "by": "another run"})
    changed.undo()
    external = records["external_mybusi"]
    assert (external.read_bytes(), external.stat().st_mtime_ns) == before["external_mybusi"]
    assert json.loads(records["dataset"].read_text())["by"] == "another run"  # not this check's to undo


# ----------------------------------------------------------------------------- the config at planning


def test_a_network_of_your_own_listed_in_networks_is_said_to_be_trained_from_custom_networks():
    config = {
        "networks": ["lighter_unet_c1", "light_unet", "tiny_unet"],
        "custom_networks": {"tiny_unet": {"builder": "my_networks:tiny_unet"}},
    }
    (line,) = [p for p in config_check.problems(config, SCHEMA) if p.startswith("config networks")]
    assert line.startswith("config networks.2: 'tiny_unet' is a network of your own (custom_networks)")
    assert "take it out of networks" in line and "docs/extending.md" in line


def test_a_misspelt_network_lists_every_accepted_name_the_closest_first():
    (line,) = [p for p in config_check.problems({"networks": ["lighter_unet_cl"]}, SCHEMA) if "networks" in p]
    accepted = SCHEMA["properties"]["networks"]["items"]["enum"]
    assert line.endswith("the accepted values are " + ", ".join(accepted))  # none cut off
    assert "did you mean 'lighter_unet_c1' or 'lighter_unet_c2'" in line  # one letter from each: both named
    (line,) = [p for p in config_check.problems({"dataset": {"layout": "bussi"}}, SCHEMA) if "layout" in p]
    assert line == (
        "config dataset.layout: 'bussi' is not accepted: did you mean 'busi'? the accepted values are "
        "synthetic, folder, busi, busbra"
    )


def split_config(dataset: dict, folds: int, **split) -> dict:
    return {"dataset": dataset, "split": {"folds": folds, "file": "", **split}, "synthetic": {"patients": 14}}


def test_the_split_is_checked_against_the_patients_the_data_can_hold(tmp_path):
    phantom = {"layout": "synthetic"}
    assert config_check.split_problem(split_config(phantom, 7)) == ""
    assert config_check.split_problem(split_config(phantom, 20)) == (
        "config split.folds: 20 folds need at least 40 patient groups, and the phantom has 14 "
        "(synthetic.patients): set split.folds to 7 or fewer, or use more patients"
    )
    assert "gives one split" in config_check.split_problem(split_config(phantom, 2, file="split.csv"))
    # A folder set: its patients.csv's patients (2 patients, 2 views each); BUSI: each image its own patient,
    # its normal images not counted when left out.
    folder = {"layout": "folder", "root": str(folder_set(tmp_path / "folder"))}
    assert len(config_check.layout_found(folder).patients) == 2
    assert "has at most 2, the patients of the images its layout pairs" in config_check.split_problem(
        split_config(folder, 2), config_check.layout_found(folder)
    )
    busi = busi_set(tmp_path / "busi", patients=3)
    (busi / "normal").mkdir()
    for name in ("normal (1).png", "normal (1)_mask.png"):
        shutil.copy(busi / "benign" / name.replace("normal", "benign"), busi / "normal" / name)
    assert len(config_check.layout_found({"layout": "busi", "root": str(busi)}).patients) == 6
    assert len(config_check.layout_found({"layout": "busi", "root": str(busi), "include_normal": True}).patients) == 7
    busi_options = {"layout": "busi", "root": str(busi)}
    assert config_check.split_problem(split_config(busi_options, 3), config_check.layout_found(busi_options)) == ""
    assert (
        len(config_check.layout_found({"layout": "busbra", "root": str(busbra_set(tmp_path / "busbra"))}).patients) == 2
    )
    # The planning hands the split check what its layout check found: the files are not paired again (this
    # root does not exist; only the patients given are counted).
    gone = {"layout": "folder", "root": str(tmp_path / "gone")}
    found = manifest.LayoutFound(images=6, patients=frozenset({"P1", "P2", "P3"}))
    assert "has at most 3, the patients" in config_check.split_problem(split_config(gone, 2), found)
    assert config_check.split_problem(split_config(gone, 1), found) == ""
    with pytest.raises(ValueError, match="what check_datasets found"):  # never a second pairing of the files
        config_check.split_problem(split_config(gone, 2))
    # A stratum column the dataset's manifest will not have stops the planning, as the split job would stop after
    # the ingest: the manifest's columns, and a CSV's as meta_<name>, are known from the layout.
    found = config_check.layout_found(folder)
    assert "meta_lesion_type" in found.columns and "class" in found.columns
    assert config_check.split_problem(split_config(folder, 1, stratify="meta_lesion_type"), found) == ""
    said = config_check.split_problem(split_config(folder, 1, stratify="meta_lesion_typ"), found)
    assert said.startswith("config split.stratify: column 'meta_lesion_typ' is not in the manifest; its columns are [")
    assert "'meta_lesion_type'" in said
    # A split file is read as given, never stratified: a stratum column layered under it stops nothing.
    assert config_check.split_problem(split_config(folder, 1, stratify="meta_lesion_typ", file="mine.csv"), found) == ""


# ----------------------------------------------------------------------------- the real workflow

STUDY = {
    "study": "probe",
    "preprocess": {"size": 32, "interpolation": "area"},
    "networks": ["lighter_unet_c1"],
    "seeds": [0],
    "train": {"device": "cpu", "threads": 1, "min_epochs": 1, "max_epochs": 1},
    "cost": {"enabled": False},
    "ladder": {"enabled": False},
}
MANIFESTS = ["results/probe/data/manifest.csv", "results/probe/external/mybusi/manifest.csv"]


def snakemake(workdir: Path, config: str, *args: str):
    return run_snakemake([*MANIFESTS, *args, "--cores", "1", "--configfile", config], workdir)


def busi_from(folder: Path, root: Path) -> Path:
    """A BUSI set made of a `sonoseg synth` folder's images."""
    (root / "benign").mkdir(parents=True)
    for number, image in enumerate(sorted((folder / "images").iterdir()), start=1):
        shutil.copy(image, root / "benign" / f"benign ({number}).png")
        shutil.copy(folder / "masks" / image.name, root / "benign" / f"benign ({number})_mask.png")
    return root


@pytest.mark.slow
def test_a_dry_run_says_what_changed_and_leaves_the_records_to_the_next_real_run(workflow_copy, tmp_path):
    main = synth_folder(tmp_path / "main", patients=4, seed=11)
    busi = busi_from(synth_folder(tmp_path / "busi_source", patients=3, seed=12), tmp_path / "busi")
    external = {"name": "mybusi", "role": "held_out", "layout": "busi", "root": str(busi)}
    config = write_config(
        workflow_copy,
        {**STUDY, "dataset": {"layout": "folder", "root": str(main)}, "external_datasets": [external]},
        "probe.yaml",
    )
    made = snakemake(workflow_copy, config)
    assert made.returncode == 0, made.stderr[-3000:]
    sources = workflow_copy / "results/probe/data/sources"

    def records():
        return {
            name: (sources / name).read_bytes() + str((sources / name).stat().st_mtime_ns).encode()
            for name in ("dataset.json", "external_mybusi.json")
        }

    # (1) notes beside each set's data: no change, nothing to do
    (main / "README.md").write_text("how the scans were taken")
    (busi / "README.txt").write_text("notes")
    (busi / "benign" / "annotations.json").write_text("{}")
    dry = snakemake(workflow_copy, config, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stderr[-3000:]
    assert "changed since the last run" not in dry.stderr
    # (2) a mask edited: said, by the set's config name, and planned; the records stay the real run's
    written = records()
    mask = busi / "benign" / "benign (1)_mask.png"
    original = mask.read_bytes()
    pixels = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    pixels[:4, :4] = 255 - pixels[:4, :4]
    cv2.imwrite(str(mask), pixels)
    dry = snakemake(workflow_copy, config, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "sonoseg: external dataset 'mybusi' changed since the last run (1 modified: benign/benign (1)_mask.png)" in (
        dry.stderr
    )
    assert jobs_of(dry.stdout) == {"ingest_external": 1}
    assert records() == written
    # (3) the mask restored: the next dry run compares with the real run's record, not the dry run's
    mask.write_bytes(original)
    dry = snakemake(workflow_copy, config, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr and "changed since" not in dry.stderr, dry.stderr[-3000:]
    # (4) edited again and run for real: that run's record is the one the next planning compares with
    cv2.imwrite(str(mask), pixels)
    run = snakemake(workflow_copy, config)
    assert run.returncode == 0 and "external dataset 'mybusi' changed" in run.stderr, run.stderr[-3000:]
    assert records() != written
    dry = snakemake(workflow_copy, config, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr and "changed since" not in dry.stderr, dry.stderr[-3000:]


def shown(result) -> str:
    """What a Snakemake run printed (it prints a Snakefile's error on stdout)."""
    return result.stdout + result.stderr


@pytest.mark.slow
def test_the_dry_run_stops_at_a_split_the_data_cannot_be_dealt_to_and_at_a_custom_network_in_networks(
    workflow_copy, tmp_path
):
    main = synth_folder(tmp_path / "main", patients=6, seed=11)
    folder = {**STUDY, "dataset": {"layout": "folder", "root": str(main)}, "split": {"folds": 4}}
    dry = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workflow_copy, folder)], workflow_copy
    )
    assert dry.returncode != 0
    assert (
        f"config split.folds: 4 folds need at least 8 patient groups, and the dataset (layout folder, root {main}) "
        "has at most 6, the patients of the images its layout pairs with masks: set split.folds to 3 or fewer"
    ) in shown(dry), shown(dry)[-3000:]
    assert not (workflow_copy / "results/probe/data/sources/dataset.json").exists()  # a planning that stopped
    phantom = {**TINY, "split": {"folds": 4}}  # 6 patients
    dry = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workflow_copy, phantom)], workflow_copy
    )
    assert dry.returncode != 0
    assert "and the phantom has 6 (synthetic.patients): set split.folds to 3 or fewer" in shown(dry), shown(dry)[-3000:]
    custom = {
        **TINY,
        "networks": ["lighter_unet_c1", "tiny_unet"],
        "custom_networks": {"tiny_unet": {"builder": "my_networks:tiny_unet"}},
    }
    dry = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workflow_copy, custom)], workflow_copy
    )
    assert dry.returncode != 0
    assert "config networks.1: 'tiny_unet' is a network of your own (custom_networks)" in shown(dry), shown(dry)[-3000:]
