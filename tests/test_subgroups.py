"""Dice by subgroup (sonoseg.analysis.subgroups): each network's Dice per value of a manifest column,
in-domain and on each external set, computed by hand on a long table collected as the study collects it."""

import pandas as pd
import pytest
from conftest import unet_with_external_run, write_patient_manifest, write_run_metrics

from sonoseg.analysis import results, subgroups
from sonoseg.errors import SonosegError


def _long_table(tmp_path):
    """In-domain: four patients of one image each, BUSI-like classes (one image without a class) and
    lesion types; one external set of three patients whose manifest has lesion types but no class,
    tested by two folds' models."""
    inside = write_patient_manifest(tmp_path / "inside.csv", ["a", "b", "c", "d"], ["P1", "P2", "P3", "P4"])
    pd.read_csv(inside).assign(
        **{"class": ["benign", "malignant", "benign", ""], "meta_lesion_type": ["cyst", "solid", "solid", "cyst"]}
    ).to_csv(inside, index=False)
    outside = write_patient_manifest(tmp_path / "outside.csv", ["x", "y", "z"], ["Q1", "Q2", "Q3"])
    pd.read_csv(outside).assign(meta_lesion_type=["rim", "rim", "cyst"]).to_csv(outside, index=False)
    write_run_metrics(tmp_path, "unet", 0, 0, ["a", "b", "c", "d"], [0.9, 0.5, 0.7, 0.8])
    write_run_metrics(tmp_path, "unet--on-ext", 0, 0, ["x", "y", "z"], [0.4, 0.6, 0.9])
    write_run_metrics(tmp_path, "unet--on-ext", 1, 0, ["x", "y", "z"], [0.6, 0.2, 0.7])
    rows = unet_with_external_run(tmp_path)
    per_image = results.collect_per_image(tmp_path, rows, inside, {"ext": outside})
    results.write_table(per_image, tmp_path / "per_image.csv.gz")
    return results.read_per_image(tmp_path / "per_image.csv.gz")  # as the rule reads it: classes as text


def test_dice_by_subgroup_by_hand(tmp_path):
    per_image = _long_table(tmp_path)
    table = subgroups.subgroup_table(per_image, ["unet"], ["class", "lesion_type"], {"ext": "held_out"}, resamples=200)
    cell = table.set_index(["dataset", "subgroup", "value"])
    inside = results.IN_DOMAIN
    assert cell.loc[(inside, "class", "benign"), "dice"] == pytest.approx((0.9 + 0.7) / 2)
    assert cell.loc[(inside, "class", "malignant"), "dice"] == pytest.approx(0.5)
    # An image whose manifest gives no class is counted under its own value, not dropped.
    assert cell.loc[(inside, "class", subgroups.NO_VALUE), "images"] == 1
    assert cell.loc[(inside, "meta_lesion_type", "cyst"), "dice"] == pytest.approx((0.9 + 0.8) / 2)
    # The external set: each image's Dice is the mean over the folds' models; no class column there, no rows.
    assert cell.loc[("ext", "meta_lesion_type", "rim"), "dice"] == pytest.approx((0.5 + 0.4) / 2)
    assert cell.loc[("ext", "meta_lesion_type", "cyst"), "dice"] == pytest.approx(0.8)
    assert cell.loc[("ext", "meta_lesion_type", "rim"), ["patients", "images"]].tolist() == [2, 2]
    assert not ((table["dataset"] == "ext") & (table["subgroup"] == "class")).any()
    assert set(table.loc[table["dataset"] == "ext", "role"]) == {"held_out"}
    # Every image of a dataset is in exactly one value of each column.
    counts = table.groupby(["dataset", "subgroup"])["images"].sum()
    assert counts[(inside, "class")] == counts[(inside, "meta_lesion_type")] == 4
    assert counts[("ext", "meta_lesion_type")] == 3
    # The CI by patient holds the mean where a value has two patients or more.
    two = cell.loc[(inside, "class", "benign")]
    assert two["ci_low"] <= two["dice"] <= two["ci_high"]


def test_the_markdown_and_the_report_page_show_every_cell(tmp_path):
    per_image = _long_table(tmp_path)
    table = subgroups.subgroup_table(
        per_image, ["unet"], ["class", "meta_lesion_type"], {"ext": "held_out"}, resamples=200
    )
    caption = subgroups.caption(table, ["meta_organ"], ["class", "lesion_type"], "Data fingerprint abc.", resamples=200)
    subgroups.write(table, tmp_path / "tables" / "subgroups.csv", caption)
    markdown = (tmp_path / "tables" / "subgroups.md").read_text()
    assert "**ext (held_out), by lesion_type**" in markdown and "| Network | cyst (1) | rim (2) |" in markdown
    assert "| U-net | 0.800 [no CI" in markdown and "0.450 [" in markdown
    # Two patients give a bootstrap three distinct means: such a CI is marked, and the caption says why.
    rim = table.set_index(["dataset", "value"]).loc[("ext", "rim")]
    assert subgroups.dice_text(rim).endswith(f"] {subgroups.FEW_MARK}") and f"] {subgroups.FEW_MARK} |" in markdown
    assert f"{subgroups.FEW_MARK}: a CI over fewer than {subgroups.FEW_PATIENTS} patients" in markdown.split("\n")[0]
    assert "CIs: 200 bootstrap resamples" in markdown.split("\n")[0]
    assert markdown.split("\n")[0].endswith("Data fingerprint abc.")
    read = subgroups.read(tmp_path / "tables" / "subgroups.csv")
    assert read["value"].tolist() == table["value"].tolist() and read["dice"].tolist() == pytest.approx(
        table["dice"].tolist()
    )
    from sonoseg.analysis import pages

    pages.study_table_html(tmp_path / "tables" / "subgroups.csv", "subgroups", tmp_path / "subgroups.html")
    page = (tmp_path / "subgroups.html").read_text()
    assert all(f"{d:.3f}" in page for d in table["dice"]) and "ext (held_out)" in page
    # The page's note is the table's own caption: the column no dataset has, and the data's provenance.
    assert "has a value in: organ (columns there are" in page and "Data fingerprint abc." in page


def test_a_column_no_dataset_has_is_named_with_the_columns_there_are(tmp_path):
    per_image = _long_table(tmp_path)
    columns = ["lesion_type", "organ"]
    table = subgroups.subgroup_table(per_image, ["unet"], columns, {"ext": "held_out"}, resamples=50)
    assert set(table["subgroup"]) == {"meta_lesion_type"}
    absent = subgroups.absent_columns(per_image, columns)
    assert absent == ["meta_organ"]
    available = subgroups.available_columns(per_image)
    assert {"class", "lesion_type"} <= set(available) and "organ" not in available
    caption = subgroups.caption(table, absent, available)
    assert "No image of any dataset has a value in: organ (columns there are:" in caption and "lesion_type" in caption
    assert "No subgroup column was configured" not in caption
    # A folder dataset without metadata, the default columns: an empty table that names them, not "none configured".
    empty = subgroups.subgroup_table(per_image, ["unet"], ["organ"], {"ext": "held_out"}, resamples=50)
    assert empty.empty and "No subgroup column" not in subgroups.caption(empty, ["meta_organ"], available)
    assert "No subgroup column was configured" in subgroups.caption(empty, configured=False)


def test_a_network_without_in_domain_results_is_named(tmp_path):
    per_image = _long_table(tmp_path)
    with pytest.raises(SonosegError, match="light_unet"):
        subgroups.subgroup_table(per_image, ["light_unet"], ["class"], {})


def test_images_without_a_lesion_are_counted_apart_with_their_own_dice(tmp_path):
    # BUSI's normal scans: no lesion, so no Dice in the tables' sense; counted, and their own Dice shown.
    per_image = _long_table(tmp_path)
    inside = per_image["dataset"] == results.IN_DOMAIN
    normal = inside & per_image["sample_id"].isin(["b", "d"])
    per_image.loc[normal, "class"] = "normal"
    per_image.loc[normal, "truth_empty"] = True
    per_image.loc[per_image["sample_id"].eq("b") & inside, "dice"] = 1.0  # predicted empty too
    per_image.loc[per_image["sample_id"].eq("d") & inside, "dice"] = 0.0  # a lesion predicted where none is
    table = subgroups.subgroup_table(per_image, ["unet"], ["class"], {}, resamples=50)
    cell = table.set_index("value")
    assert cell.loc["normal", ["images", "no_lesion_images"]].tolist() == [0, 2] and pd.isna(cell.loc["normal", "dice"])
    assert cell.loc["normal", "no_lesion_dice"] == pytest.approx(0.5)
    assert cell.loc["benign", ["images", "no_lesion_images"]].tolist() == [2, 0]
    markdown = subgroups.markdown(table, subgroups.caption(table))
    assert "| Network | benign (2) | normal (0; 2 without a lesion) |" in markdown
    assert "| U-net | 0.800 [0." in markdown and "| without a lesion 0.500 |" in markdown


def test_a_numeric_column_with_gaps_keeps_its_values_as_written(tmp_path):
    # A grade 3 in a column where some image has none is read back as the float 3.0: shown as 3.
    per_image = _long_table(tmp_path)
    per_image["meta_grade"] = [3.0, 5.0, None, 3.0, 0.5, 4.0, None, 0.5, 4.0, None][: len(per_image)]
    table = subgroups.subgroup_table(per_image, ["unet"], ["grade"], {"ext": "held_out"}, resamples=50)
    inside = table[table["dataset"] == results.IN_DOMAIN]
    assert inside["value"].tolist() == ["3", "5", subgroups.NO_VALUE]
    assert set(table.loc[table["dataset"] == "ext", "value"]) == {"0.5", "4", subgroups.NO_VALUE}


def test_a_view_keeps_its_text_and_numbers_sort_as_numbers():
    order = sorted(["10", "2", "benign", subgroups.NO_VALUE, "1"], key=subgroups._value_order)
    assert order == ["1", "2", "10", "benign", subgroups.NO_VALUE]
    assert subgroups.column_name("class") == "class" and subgroups.column_name("meta_x") == "meta_x"
    assert subgroups.column_name("lesion_type") == "meta_lesion_type"
