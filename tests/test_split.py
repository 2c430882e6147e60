import pandas as pd
import pytest

from sonoseg import split
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


def test_too_few_patients_is_an_error():
    with pytest.raises(SonosegError, match="too few"):
        split.split_samples(samples(3), seed=0, fractions=(0.9, 0.05, 0.05))
