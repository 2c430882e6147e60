from pathlib import Path

import pandas as pd
import pytest

from sonoseg.data import split
from sonoseg.errors import SonosegError


def samples(patients: int) -> pd.DataFrame:
    rows = [
        {"sample_id": f"P{p}_v{v}", "patient": f"P{p}", "group": f"P{p}", "image": f"/x/P{p}_v{v}.png"}
        for p in range(patients)
        for v in (1, 2)
    ]
    return pd.DataFrame(rows)


def test_paper_split_sizes_and_no_patient_in_two_parts():
    result = split.split_samples(samples(348), seed=0)
    per_part = result.groupby("split")["patient"].nunique()
    assert (per_part["train"], per_part["val"], per_part["test"]) == (208, 70, 70)
    assert (result.groupby("patient")["split"].nunique() == 1).all()
    assert len(result) == 696


def test_split_is_seeded():
    a = split.split_samples(samples(50), seed=3)
    b = split.split_samples(samples(50), seed=3)
    c = split.split_samples(samples(50), seed=4)
    assert a.equals(b) and not a.equals(c)


def test_groups_never_cross():
    table = samples(40)
    table.loc[table["patient"].isin(["P1", "P2", "P3"]), "group"] = "P1"  # duplicates merged
    result = split.split_samples(table, seed=1)
    assert result[result["group"] == "P1"]["split"].nunique() == 1


def test_user_split_file(tmp_path):
    table = samples(5)
    file = tmp_path / "split.csv"
    pd.DataFrame({"sample_id": table["sample_id"], "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 2}).to_csv(
        file, index=False
    )
    result = split.user_split(table, file)
    assert list(result["split"]) == ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    pd.DataFrame({"sample_id": table["sample_id"], "split": ["train", "test"] * 5}).to_csv(file, index=False)
    with pytest.raises(SonosegError, match="more than one split"):
        split.user_split(table, file)


def test_a_split_file_with_an_empty_part_a_sample_twice_or_unknown_rows_is_named(tmp_path, caplog):
    table = samples(5)
    file = tmp_path / "split.csv"
    parts = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    # No validation image: refused at the split, not later at a training.
    pd.DataFrame({"sample_id": table["sample_id"], "split": ["train"] * 8 + ["test"] * 2}).to_csv(file, index=False)
    with pytest.raises(
        SonosegError,
        match=r"split.csv: its val part has 0 image\(s\) of 0 patient group\(s\).*move images between its parts",
    ):
        split.user_split(table, file)
    # One sample given two parts: refused (the last row is not silently kept).
    rows = pd.DataFrame({"sample_id": [*table["sample_id"], "P0_v1"], "split": [*parts, "test"]})
    rows.to_csv(file, index=False)
    with pytest.raises(SonosegError, match=r"1 sample_id\(s\) given more than one split, e.g. \['P0_v1'\]"):
        split.user_split(table, file)
    # A row naming no included sample: warned of, counted, named; the split is the rest's.
    rows = pd.DataFrame({"sample_id": [*table["sample_id"], "P9_v1", "P0_v1"], "split": [*parts, "train", "train"]})
    rows.to_csv(file, index=False)
    result = split.user_split(table, file)
    assert list(result["split"]) == parts
    warned = [r.getMessage() for r in caplog.records if "name no sample" in r.getMessage()]
    assert len(warned) == 1 and "1 row(s)" in warned[0] and "['P9_v1']" in warned[0]
    # Keyed by image name: a name two included images share (two sites' 001.png) cannot say which it means.
    table["image"] = [f"/site{'AB'[i % 2]}/{i // 2:03d}.png" for i in range(len(table))]
    pd.DataFrame({"image": [f"{i:03d}.png" for i in range(5)], "split": ["train"] * 3 + ["val", "test"]}).to_csv(
        file, index=False
    )
    with pytest.raises(SonosegError, match=r"5 image name\(s\) shared by several included images, e.g. \['000.png'"):
        split.user_split(table, file)


def test_too_few_patients_is_an_error():
    with pytest.raises(SonosegError, match="too few"):
        split.split_samples(samples(3), seed=0, fractions=(0.9, 0.05, 0.05))


def test_stratified_split_spreads_every_kind_in_proportion():
    table = samples(64)
    # Uneven strata, as the phantom's lesion types are; one patient's views disagree (its majority wins).
    kinds = ["hypoechoic"] * 18 + ["cyst"] * 9 + ["halo"] * 12 + ["heterogeneous"] * 6 + ["hyper"] * 12 + ["calc"] * 7
    table["kind"] = [kinds[p] for p in range(64) for _ in (1, 2)]
    table.loc[table["sample_id"] == "P0_v2", "kind"] = "cyst"
    table.loc[table["sample_id"] == "P1_v2", "kind"] = None  # one view unlabelled: its other view decides
    table.loc[table["patient"] == "P2", "kind"] = None  # no view labelled: a stratum of its own
    counts = split.group_counts(64, (0.6, 0.2, 0.2))
    for seed in range(5):
        result = split.split_samples(table, seed=seed, stratify="kind").merge(table[["sample_id", "kind"]])
        assert (result.groupby("group")["split"].nunique() == 1).all()
        per_part = result.groupby("split")["group"].nunique()
        assert tuple(per_part[p] for p in split.PARTS) == counts
        patients = result.drop_duplicates("group")
        for kind, members in patients.groupby("kind"):
            have = members["split"].value_counts()
            for part, fraction in zip(split.PARTS, (0.6, 0.2, 0.2)):
                assert abs(have.get(part, 0) - fraction * len(members)) < 2, (seed, kind, part, dict(have))
    stratified = split.split_samples(table, seed=0, stratify="kind")
    assert stratified.equals(split.split_samples(table, seed=0, stratify="kind"))
    assert not stratified.equals(split.split_samples(table, seed=1, stratify="kind"))


def test_stratify_by_a_missing_column_names_the_column():
    with pytest.raises(SonosegError, match="'lesion' is not in the manifest") as raised:
        split.split_samples(samples(20), seed=0, stratify="lesion")
    assert "phantom" not in str(raised.value)
    # The phantom's column, as config/quick.yaml sets it, over a user's own data: the error says what to set.
    with pytest.raises(SonosegError, match=r"'meta_lesion_type' is not in .*your own data wants split.stratify: ''"):
        split.split_samples(samples(20), seed=0, stratify="meta_lesion_type")


def test_stratify_by_a_column_of_near_unique_values_is_refused():
    table = samples(20)
    table["area"] = [float(i) for i in range(40)]  # a value per image: nothing left to shuffle
    with pytest.raises(SonosegError, match="'area' has 20 different values over 20 patient groups"):
        split.split_samples(table, seed=0, stratify="area")


def test_a_groups_stratum_prefers_a_known_value():
    assert split.group_stratum(pd.Series(["(missing)", "cyst"])) == "cyst"
    assert split.group_stratum(pd.Series(["halo", "cyst"])) == "cyst"  # a tie: the first in sorted order
    assert split.group_stratum(pd.Series(["(missing)", "(missing)"])) == "(missing)"


def test_a_split_file_tells_how_many_folds_it_deals(tmp_path):
    """choose-postprocess records this count beside a run's models (sonoseg.serving.modelio)."""
    for folds in (1, 2, 5):
        split.fold_split(samples(20), seed=1, folds=folds).to_csv(tmp_path / "split.csv", index=False)
        assert split.fold_count(tmp_path / "split.csv") == folds


def one_image_each(patients: int, flags: str = "") -> pd.DataFrame:
    rows = [{"sample_id": f"P{p}", "patient": f"P{p}", "group": f"P{p}", "flags": flags} for p in range(patients)]
    return pd.DataFrame(rows)


def test_a_split_no_training_can_run_on_is_refused_by_the_split_naming_the_fold_and_part(tmp_path, capsys):
    """A probe's 4 patients of one image each passed planning's 2K rule for K = 2, then every training failed
    (and was retried) for one training image; 2 patients in one split left its test part empty, said only by the
    preprocess. The split job now refuses both, naming each short part and what to change."""
    from sonoseg.study import cli

    def run(table: pd.DataFrame, *options: str) -> int:
        table.assign(status="included", height=64, width=64).to_csv(tmp_path / "m.csv", index=False)
        return cli.main(["split", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s.csv"), *options])

    assert run(one_image_each(4), "--folds", "2") == 2
    said = capsys.readouterr().err
    assert "split.folds 2 over 4 patient groups of 4 images: fold 0's train part has 1 image(s) of 1 patient " in said
    assert "fold 1's train part has 1 image(s)" in said and said.rstrip().endswith(
        "use fewer folds (split.folds) or more patients"
    )
    assert not (tmp_path / "s.csv").exists()
    assert run(one_image_each(2)) == 2
    assert "its val part has 0 image(s) of 0 patient group(s); its test part has 0 image(s)" in capsys.readouterr().err
    # Two images each in the same 4 patients: each fold's training part has two images, and it runs.
    assert run(samples(4).drop(columns="image"), "--folds", "2") == 0
    assert run(one_image_each(6), "--folds", "2") == 0


def test_a_split_whose_test_images_all_lack_a_lesion_is_refused():
    """A probe's split file put only BUSI's normal images in the test part: the split and the trainings ran,
    and then every table failed ("no test image has a lesion"). The split says so."""
    table = one_image_each(8)
    parts = split.fold_split(table, seed=0, folds=1, fractions=(0.5, 0.25, 0.25))
    normal = set(parts.loc[parts["split"] == "test", "sample_id"])
    table["flags"] = ["empty_mask;lesions:0" if sample in normal else "" for sample in table["sample_id"]]
    with pytest.raises(SonosegError, match=r"^x.csv: none of the 2 test image\(s\) has a lesion \(every mask is empty"):
        split.check_parts(parts, table, "x.csv", "move images between its parts")
    table.loc[table["sample_id"] == sorted(normal)[0], "flags"] = "lesions:2"  # one test image with a lesion: enough
    split.check_parts(parts, table, "x.csv", "move images between its parts")


def test_a_split_file_whose_rows_match_no_sample_says_what_its_key_is_matched_against(tmp_path):
    """A probe keyed its split by the path under the dataset's root (benign/benign (1).png, the long table's
    form) and was told only that every sample had no split."""
    table = samples(3)
    file = tmp_path / "split.csv"
    parts = ["train", "train", "val", "val", "test", "test"]
    pd.DataFrame({"image": [f"x/{Path(p).name}" for p in table["image"]], "split": parts}).to_csv(file, index=False)
    with pytest.raises(SonosegError, match=r"none of its 6 row\(s\) names an included sample \(e.g. \['x/P0_v1.png'"):
        split.user_split(table, file)
    with pytest.raises(
        SonosegError, match=r"matched against the image's file name alone \(no folder\), e.g. 'P0_v1.png'"
    ):
        split.user_split(table, file)
    pd.DataFrame({"image": [Path(p).name for p in table["image"]], "split": parts}).to_csv(file, index=False)
    assert list(split.user_split(table, file)["split"]) == parts


def test_an_external_split_with_a_split_file_is_refused_by_name(tmp_path, capsys):
    """A reviewer's `split --external --split-file f.csv` was checked as the study's own split ("fold 0's train
    part has 0 image(s)"); before, the file was ignored without a word. The two do not go together."""
    from sonoseg.study import cli

    one_image_each(3).assign(status="included", height=64, width=64).to_csv(tmp_path / "m.csv", index=False)
    given = ["--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s.csv"), "--external"]
    assert cli.main(["split", *given, "--split-file", str(tmp_path / "f.csv")]) == 2
    assert "--external tests every image of an external dataset; --split-file is the study's" in capsys.readouterr().err
    # Three one-image patients in one split: no fractions give every part its images; only more patients help.
    one_image_each(3).assign(status="included", height=64, width=64).to_csv(tmp_path / "m.csv", index=False)
    assert cli.main(["split", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s.csv")]) == 2
    said = capsys.readouterr().err
    assert "images: its train part has 1 image(s)" in said  # one split, no folds to name
    assert said.rstrip().endswith("use more patients: 3 patient group(s) cannot fill the three parts")
