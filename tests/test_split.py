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
    with pytest.raises(SonosegError, match=r"split.csv: no sample in the val part"):
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
