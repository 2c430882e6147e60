"""What a reviewer's probe of the HTML report found, fixed: the table pages show the HD95 columns and the
provenance their Markdown twins show, GFLOPs keep their significant digits, the statistics page states
each table's bootstrap resamples, the front page names the results' commit and reads as written, and
the captions say what their figures do."""

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from sonoseg.analysis import families, generalization, pages, paper, report_labels, subgroups, tables
from sonoseg.data import provenance

FINGERPRINT = "a68876c8d5c7" + "0" * 52


def ladder_runs() -> pd.DataFrame:
    """Per-seed summaries of two ladder steps, one seed each, as the quick study's: the first step's
    predictions are mostly empty (13 of its 20 lesion images penalised), so its penalised HD95 (558.09)
    says little without the HD95 over the 7 images where both masks are non-empty (194.76)."""
    return pd.DataFrame(
        [
            {"step": "baseline", "dice": 0.002, "hd95_px": 558.09, "hd95_penalized": 13, "hd95_matched_px": 194.76},
            {"step": "adam", "dice": 0.418, "hd95_px": 146.37, "hd95_penalized": 0, "hd95_matched_px": 146.37},
        ]
    ).assign(
        seed=0,
        hd95_mm=np.nan,
        hd95_matched_mm=np.nan,
        lesion_images=20,
        hd95_matched_images=[7, 20],
        no_lesion_images=0,
        no_lesion_dice=np.nan,
        trainings=1,
        capped=0,
    )


def markdown_header(table_csv: Path) -> list[str]:
    """The column names of a table's Markdown twin (its first table line)."""
    line = next(line for line in table_csv.with_suffix(".md").read_text().splitlines() if line.startswith("| "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_ladder_page_shows_the_hd95_columns_of_its_markdown(tmp_path):
    table = tables.ladder_table(ladder_runs(), ["baseline", "adam"])
    tables.write_table(table, tmp_path / "ladder.csv", "Ladder", "Step", provenance.caption_line(FINGERPRINT))
    pages.study_table_html(tmp_path / "ladder.csv", "ladder", tmp_path / "ladder.html")
    page = (tmp_path / "ladder.html").read_text()
    hd95 = [column for column in markdown_header(tmp_path / "ladder.csv") if column.startswith("HD95")]
    assert hd95 == ["HD95 px (ours)", "HD95 px, both non-empty (ours)"]
    assert all(f"<th>{column}</th>" in page for column in hd95)
    # The cells the Markdown shows, and how many lesion images the penalty scored.
    assert "194.76 (7/20)" in (tmp_path / "ladder.md").read_text()
    assert "<td>558.09</td><td>194.76 (7/20)</td><td>13</td>" in page
    assert "<th>HD95 penalised images</th>" in page


def generalization_table() -> pd.DataFrame:
    """U-net's Dice in-domain and on one external set, as `sonoseg generalization` writes it."""
    return pd.DataFrame(
        {
            "network": ["unet", "unet"],
            "label": ["U-net", "U-net"],
            "variant": ["single", "single"],
            "dataset": [generalization.IN_DOMAIN, "pymust_far"],
            "role": ["", "development"],
            "run": ["unet", "unet--on-pymust_far"],
            "patients": [10, 24],
            "images": [20, 24],
            "dice": [0.848, 0.757],
            "ci_low": [0.786, 0.690],
            "ci_high": [0.901, 0.816],
            "drop": [np.nan, 0.091],
            "drop_ci_low": [np.nan, 0.005],
            "drop_ci_high": [np.nan, 0.179],
        }
    )


def subgroup_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "network": ["unet", "unet"],
            "label": ["U-net", "U-net"],
            "dataset": [generalization.IN_DOMAIN] * 2,
            "role": ["", ""],
            "run": ["unet", "unet"],
            "subgroup": ["meta_lesion_type"] * 2,
            "value": ["hypoechoic", "hyperechoic"],
            "patients": [3, 2],
            "images": [6, 4],
            "dice": [0.931, 0.715],
            "ci_low": [0.886, 0.631],
            "ci_high": [0.953, 0.799],
            "no_lesion_images": [0, 0],
            "no_lesion_dice": [np.nan, np.nan],
        }
    )


def write_every_table(folder: Path) -> dict[str, Path]:
    """Each kind of table the report shows, written by the stage that writes it, with its provenance."""
    source = provenance.caption_line(FINGERPRINT)
    runs = ladder_runs().rename(columns={"step": "network"}).assign(network=["unet", "light_unet"], parameters=1)
    written = {kind: folder / f"{kind}.csv" for kind in ("table2", "ladder", "generalization", "subgroups")}
    tables.write_table(
        tables.network_table(runs, paper.TABLE2, ["unet", "light_unet"]), written["table2"], "T2", source=source
    )
    tables.write_table(tables.ladder_table(ladder_runs(), ["baseline"]), written["ladder"], "Ladder", "Step", source)
    generalization.write(generalization_table(), written["generalization"], source=source)
    subgroups.write(subgroup_table(), written["subgroups"], subgroups.caption(subgroup_table(), source=source))
    return written


def test_every_table_page_shows_the_provenance_its_markdown_ends_with(tmp_path):
    source = provenance.caption_line(FINGERPRINT)
    for kind, table_csv in write_every_table(tmp_path).items():
        # The stage's own caption: bold for the paper's tables, plain for generalization and subgroups.
        assert source in table_csv.with_suffix(".md").read_text().split("\n\n")[0], kind
        pages.study_table_html(table_csv, kind, tmp_path / f"{kind}.html")
        page = (tmp_path / f"{kind}.html").read_text()
        assert f"<h2>{pages.TABLE_TITLES[kind]}</h2>" in page, kind
        notes = re.findall(r'<p class="note">(.*?)</p>', page, re.S)
        assert any(source in note for note in notes), kind
    # The generalization page's caption is the Markdown's, with the ingest and sizes notes it carries.
    assert "Scored, images with a lesion" in (tmp_path / "generalization.html").read_text()


def test_a_table_without_a_markdown_twin_says_its_provenance_is_not_recorded(tmp_path):
    pd.DataFrame(
        {
            "network": ["lighter_unet_c1"],
            "fold": [0],
            "weight_decay": [1e-4],
            "chosen": [True],
            "best_val_loss": [0.31],
            "val_dice_at_best": [0.8],
            "best_epoch": [3],
        }
    ).to_csv(tmp_path / "selection.csv", index=False)
    pages.study_table_html(tmp_path / "selection.csv", "selection", tmp_path / "selection.html")
    page = (tmp_path / "selection.html").read_text()
    assert "No caption was written beside selection.csv" in page and "are not recorded" in page


def test_gflops_keep_two_significant_digits_in_the_markdown_and_on_the_page(tmp_path):
    assert [tables.gflops_text(v) for v in (0.003, 0.018, 0.15, 1.254, 79.96, 0.0)] == [
        "0.0030",
        "0.018",
        "0.15",
        "1.25",
        "79.96",
        "0.00",
    ]
    runs = ladder_runs().rename(columns={"step": "network"}).assign(network=["malunet", "unext"], parameters=1)
    cost = tmp_path / "cost.csv"
    pd.DataFrame({"network": ["malunet", "unext"], "gflops": [0.003, 0.018], "latency_ms": [0.7, 0.5]}).to_csv(cost)
    table = tables.with_cost(tables.network_table(runs, {}, ["malunet", "unext"]), cost)
    tables.write_table(table, tmp_path / "beyond.csv", "Beyond")
    pages.study_table_html(tmp_path / "beyond.csv", "beyond", tmp_path / "beyond.html")
    for shown in ((tmp_path / "beyond.md").read_text(), (tmp_path / "beyond.html").read_text()):
        assert "0.0030" in shown and "0.018" in shown and "0.00 " not in shown


def test_statistics_page_states_the_resamples_of_each_table(tmp_path):
    # Two methods on six patients' images, an organ column with two values: one table by organ.
    rng = np.random.default_rng(0)
    samples = [f"s{i}" for i in range(6)]
    per_image = pd.DataFrame(
        [
            {"method": m, "run": "0", "sample_id": s, "patient": f"P{i}", "dice": base + rng.uniform(0, 0.05)}
            for m, base in (("unet", 0.8), ("threshold_baseline", 0.5))
            for i, s in enumerate(samples)
        ]
    )
    organs = ["breast", "thyroid"] * 3
    pd.DataFrame({"sample_id": samples, "status": "included", "organ": organs}).to_csv(tmp_path / "m.csv", index=False)
    found = families.paired_families(per_image, resamples=3000)
    pages.statistics_page(per_image, found, tmp_path / "m.csv", tmp_path / "paired.html", resamples=3000)
    page = (tmp_path / "paired.html").read_text()
    assert "CIs: 3,000 bootstrap resamples" in page
    assert "Test Dice per organ (patient-level 95 % CI, 2,000 bootstrap resamples)" in page
    # Three patients an organ: the subgroup table marks such a CI (read its value, not its interval); so does this
    # page, in each of its 2 methods x 2 organs cells.
    assert "‡: a CI over fewer than 5 patients" in page and page.count("(1 training) ‡</td>") == 2  # U-net
    assert page.count("(no training) ‡</td>") == 2  # the floor trains nothing: the tables' words, not "(1 training)"
    assert "<td>threshold_baseline</td><td>6</td><td>1</td><td>" in page and "(no training)</td></tr>" in page
    assert "Mean test Dice with its patient-level 95 % CI (3,000 bootstrap resamples)" in page


def test_results_source_names_the_commit_the_tables_say_made_them(tmp_path, monkeypatch):
    assert report_labels.results_source(tmp_path) == ""  # no table yet
    for name, commit in (("table1", "1111111aaaaa"), ("table2", "1111111aaaaa"), ("ladder", "2222222bbbbb+dirty")):
        monkeypatch.setattr(provenance, "sonoseg_commit", lambda commit=commit: commit)
        table = tables.ladder_table(ladder_runs(), ["baseline"])
        tables.write_table(table, tmp_path / f"{name}.csv", name, "Step", provenance.caption_line(FINGERPRINT))
        if name == "table2":  # the two tables so far agree: one source
            assert (
                report_labels.results_source(tmp_path) == f"sonoseg {provenance.sonoseg_version()} at commit {commit}"
            )
    version = provenance.sonoseg_version()
    assert report_labels.results_source(tmp_path) == (
        f"sonoseg {version} at commit 2222222bbbbb+dirty (ladder); sonoseg {version} at commit 1111111aaaaa "
        "(table1, table2)"
    )


def test_the_front_page_warns_of_tables_made_by_other_code_only_where_they_were():
    made_by = "sonoseg 1.0 at commit 1111111aaaaa"
    assert report_labels.made_by_other_code(made_by, "1111111aaaaa") == ""
    warning = report_labels.made_by_other_code(made_by, "2222222bbbbb")
    assert warning.startswith("The tables and pages were made by other code than this (commit 2222222bbbbb)")
    assert "make study" in warning  # what to do about it
    # Tables of two commits, this one among them: some pages are still the other code's.
    both = f"{made_by} (table1); sonoseg 1.0 at commit 2222222bbbbb (table2)"
    assert report_labels.made_by_other_code(both, "2222222bbbbb").startswith(
        "Some tables and pages (those named with another commit above) were made by other code than this"
    )
    assert report_labels.made_by_other_code("a sonoseg commit no table names yet", "2222222bbbbb") != ""


def render_caption(name: str, **context) -> str:
    """A caption of workflow/report/ as Snakemake renders it: Jinja with its settings (trim_blocks and
    lstrip_blocks: snakemake.report.auto_report), then reStructuredText to HTML, warnings raised."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        (REPO / "workflow" / "report" / f"{name}.rst").read_text()
    )
    rendered = text.render(categories={}, files=[], **context)
    publish_parts(rendered, writer="html", settings_overrides={"halt_level": 2})  # a warning fails
    return " ".join(rendered.split())


def quick_config() -> dict:
    """config/config.yaml under config/quick.yaml, as the quick study reads them (its scale selection on)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key, value in yaml.safe_load((REPO / "config" / "quick.yaml").read_text()).items():
        config[key] = (
            {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
        )
    return {**config, "report_provenance": "Results made from the dataset with fingerprint ``x``."}


def test_front_page_keeps_its_spaces_around_the_scale_rule():
    config = quick_config()
    assert config["predict"]["scales"] != [1.0] and config["predict"]["shrink_found_above"] is not None
    text = render_caption("workflow", snakemake=SimpleNamespace(config=config))
    assert f"or {config['predict']['shrink_found_above']} × it at a smaller scale) and the most confident" in text
    assert "partial" not in text and "it runs nothing, and stops at the first one missing, so ``snakemake all``" in text
    without_second = {**config, "predict": {**config["predict"], "shrink_found_above": None}}
    text = render_caption("workflow", snakemake=SimpleNamespace(config=without_second))
    assert "quantile of the training lesions') and the most confident" in text


@pytest.mark.parametrize(
    "floors, references, expected",
    [
        (
            ["threshold_baseline", "position_prior"],
            ["caliper_reader"],
            ": the floors, dashed (``threshold_baseline``, ",
        ),
        ([], ["caliper_reader"], "every panel: the references, dotted (``caliper_reader``)"),
        (["threshold_baseline"], [], "every panel: the floors, dashed (``threshold_baseline``)."),
    ],
)
def test_cost_caption_names_the_floors_and_references_the_rule_gives_it(floors, references, expected):
    params = SimpleNamespace(floors=floors, references=references)
    text = render_caption("cost", snakemake=SimpleNamespace(params=params))
    assert expected in text
    assert ("the references, dotted" in text) == bool(references) and ("the floors" in text) == bool(floors)


def test_every_report_table_has_a_page_title_and_an_entry_name():
    from sonoseg.networks import catalog

    assert set(report_labels.REPORT_ENTRIES) == set(pages.TABLE_TITLES) == set(catalog.REPORT_TABLES)


def test_the_front_page_says_what_the_trainings_computed_on(tmp_path):
    # A reader cannot tell bf16 from fp32 otherwise: the trainings table's precision, device and processor,
    # an adopted training (another row's) counted once, distinct values each with its count.
    trainings = tmp_path / "trainings.csv"
    rows = {
        "training": ["fold0/seed0", "fold0/seed1", "fold0/seed0", "fold0/seed0"],
        "precision": ["bf16 + channels_last", "bf16 + channels_last", "fp32", "bf16 + channels_last"],
        "device": ["cpu"] * 4,
        "processor": ["Intel Xeon"] * 4,
        "same_training_as": ["", "", "", "lighter_unet_c1--augment-paper"],
    }
    pd.DataFrame(rows).to_csv(trainings, index=False)
    assert report_labels.computed_on(trainings) == (
        "The 3 trainings ran in bf16 + channels_last (2), fp32 (1) on cpu (Intel Xeon)."
    )
    # The commit that trained them, where recorded: a probe's upgraded study remade its tables at a newer commit,
    # and the front page named only that one.
    pd.DataFrame({**rows, "commit": ["76dc9585a4f9"] * 4}).to_csv(trainings, index=False)
    assert report_labels.computed_on(trainings) == (
        "The 3 trainings ran at commit 76dc9585a4f9 in bf16 + channels_last (2), fp32 (1) on cpu (Intel Xeon)."
    )
    pd.DataFrame({k: v[:1] for k, v in rows.items()}).to_csv(trainings, index=False)
    assert report_labels.computed_on(trainings) == "The 1 training ran in bf16 + channels_last on cpu (Intel Xeon)."
    pd.DataFrame({"training": ["fold0/seed0"]}).to_csv(trainings, index=False)  # a study made before the columns
    assert report_labels.computed_on(trainings) == ""
    assert report_labels.computed_on(tmp_path / "none.csv") == ""
