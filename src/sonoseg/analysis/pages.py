"""The report's HTML pages: self-contained tables (no scripts, no external files) for the data
overview, the study's tables beside the paper's, the accuracy-cost front and the statistics."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from sonoseg.analysis import generalization, paper, stats, subgroups, tables
from sonoseg.analysis.results import written_caption
from sonoseg.analysis.tables import ci_cell, ci_header, gflops_text, plus_minus, seeds_cell
from sonoseg.data import MANIFEST_COLUMNS
from sonoseg.data.provenance import write_text_atomic
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: "DejaVu Sans", Arial, sans-serif; font-size: 14px; margin: 1em; color: #222; background: #fff; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em 0; }}
th, td {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
th {{ background: #eef; }} td:first-child, th:first-child {{ text-align: left; }}
caption {{ caption-side: top; text-align: left; font-weight: bold; padding-bottom: 4px; }}
p.note {{ color: #555; max-width: 60em; }}
div.table {{ overflow-x: auto; max-width: 100%; }}
</style></head><body>
<h2>{title}</h2>
{body}
</body></html>
"""


def html_table(frame: pd.DataFrame, caption: str = "") -> str:
    """A plain, escaped HTML table (no index); numbers already formatted by the caller. In a box of its own
    that scrolls sideways, so a table wider than the report's frame (Table 2 at a laptop's width) scrolls
    inside the page instead of running past its edge."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    caption_html = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<div class="table"><table>{caption_html}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def write_page(out: str | Path, title: str, parts: list[str]) -> None:
    write_text_atomic(out, PAGE.format(title=html.escape(title), body="\n".join(parts)))


def fmt(value: float, digits: int) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def signed(value: float, digits: int) -> str:
    return "-" if pd.isna(value) else stats.value_text(value, digits, signed=True)


# Manifest columns that describe files and flags, not the lesion or the patient: never broken down.
MANIFEST_FILE_COLUMNS = set(MANIFEST_COLUMNS) - {"view", "class"}  # view and class are categories to show


MAX_CATEGORIES = 20  # a column with more distinct values is an identifier or a measurement, not a category


def categorical_columns(manifest: pd.DataFrame) -> list[str]:
    """Metadata columns worth counting (class, view, organ, lesion type, …): few distinct non-empty values."""
    columns = []
    for column in manifest.columns:
        if column in MANIFEST_FILE_COLUMNS:
            continue
        values = manifest[column].dropna().astype(str)
        values = values[values != ""]
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all() and (numbers % 1 != 0).any():
            continue  # a measurement (contrast in dB, spacing), not a category
        if 1 <= values.nunique() <= MAX_CATEGORIES and values.nunique() < max(len(manifest), 2):
            columns.append(column)
    return columns


def data_overview(manifest_csv: str | Path, split_csv: str | Path, out_html: str | Path) -> None:
    """Manifest counts (included, excluded by reason, ignored), split sizes, metadata columns per split."""
    manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    split = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    # An entry is a sample (its image and mask files) or a file on its own: the files column adds up to the
    # ingest's "files found under the root" (the entries alone did not, read as files).
    files = (manifest["image"] != "").astype(int) + manifest["mask"].map(
        lambda cell: len(cell.split("|")) if cell else 0
    )
    status = (
        manifest.assign(files=files)
        .groupby("status", sort=False)
        .agg(entries=("status", "size"), files=("files", "sum"))
        .sort_values("entries", ascending=False, kind="stable")
        .reset_index()
    )
    excluded = manifest[manifest["status"] == "excluded"]
    reasons = excluded["reason"].value_counts().rename_axis("reason").reset_index(name="excluded")
    from sonoseg.data import provenance

    origin = provenance.read_manifest_provenance(manifest_csv)
    parts = [
        note(
            f"Dataset fingerprint {origin['dataset_fingerprint']} (the files under the dataset root its layout "
            f"reads, by content, or the phantom's settings; docs/own_data.md); manifest made by sonoseg "
            f"{origin['sonoseg_version']} at commit {origin['commit']}."
        ),
        html_table(
            status,
            f"The {int(status['files'].sum())} files under the dataset root, by status: an entry is a sample (its "
            "image and its mask files) or a file on its own",
        ),
        html_table(reasons, "Excluded, by reason") if len(reasons) else note("No file was excluded."),
    ]
    # K-fold cross-validation: one row per image and fold, each image tested in exactly one fold; its sizes and
    # counts are per fold (summed over folds, every image would count K times).
    folds = sorted(split["fold"].unique(), key=int) if "fold" in split.columns else []
    keys = ["sample_id", "split", *(["fold"] if folds else [])]
    samples = manifest[manifest["status"] == "included"].merge(split[keys], on="sample_id")
    by = ["fold", "split"] if folds else ["split"]
    sizes = samples.groupby(by).agg(
        patients=("patient", "nunique"), groups=("group", "nunique"), images=("sample_id", "size")
    )
    order = {part: rank for rank, part in enumerate(("train", "val", "test"))}
    sizes = sizes.reset_index().sort_values(by, key=lambda c: c.map(order) if c.name == "split" else c.astype(int))
    parts.append(
        html_table(
            sizes,
            f"Split sizes in each of the {len(folds)} folds (patient level: a patient's views never cross parts; "
            "each image is tested in exactly one fold)"
            if folds
            else "Split sizes (patient level: a patient's views never cross splits)",
        )
    )
    tested = samples[samples["split"] == "test"] if folds else samples
    for column in categorical_columns(samples.drop(columns=["split", *(["fold"] if folds else [])])):
        across = tested["fold"].map(lambda k: f"fold{k} test") if folds else tested["split"]
        counts = pd.crosstab(tested[column].replace("", "(none)"), across, margins=True, margins_name="all")
        wanted = [f"fold{k} test" for k in folds] if folds else [s for s in ("train", "val", "test") if s in counts]
        counts = counts[[c for c in wanted if c in counts.columns] + ["all"]].reset_index()
        title = f"Images per {column} in each fold's test part (every image once)" if folds else None
        parts.append(html_table(counts, title or f"Images per {column} and split"))
    write_page(out_html, "Data: manifest and split", parts)


# The report's page title of each kind of table (catalog.REPORT_TABLES).
TABLE_TITLES = {
    "table1": "Table 1: architectures",
    "table2": "Table 2: U-net and its lightweight variants",
    "beyond": "Beyond the paper: networks after 2021 and your own",
    "ladder": "Section 4.2 tuning ladder (cumulative steps)",
    "selection": "Learning rate and weight decay chosen per network and fold (lowest validation loss)",
    "generalization": "Generalization: in-domain Dice and Dice on external datasets the networks never saw",
    "subgroups": "Dice by subgroup: on which images each network fails, in-domain and off its training data",
    "marks_ablation": "The caliper ablation: each method trained and tested with the marks the other way, paired",
    "marks_reliance": "Reliance on the marks: the models trained with them, tested without them, paired",
    "tta": "Flip averaging: each network's models with and without horizontal-flip averaging, paired",
    "ensemble": "The ensemble of each network's trainings against its single trainings, paired",
    "augmentation": "The augmentation choice: the ultrasound augmentation against the paper's, paired",
}


def study_table_html(table_csv: str | Path, kind: str, out_html: str | Path) -> None:
    """One of the study's tables (catalog.REPORT_TABLES) as a page: its title, the caption the table stage
    wrote at the head of its Markdown twin (what the numbers are, at what scale, and, last, the data and
    the sonoseg commit they were made from), the table, then what its columns mean."""
    table = pd.read_csv(table_csv)
    if kind not in TABLE_TITLES:
        raise SonosegError(f"table kind {kind!r}: expected one of {', '.join(TABLE_TITLES)}")
    # The page's own words for a table without a Markdown twin, whose caption would say the same.
    composed = ""
    if kind in catalog.NETWORK_TABLES:
        shown = pd.DataFrame(
            {
                "Network": table["label"],
                "Parameters": table["parameters"].map(lambda p: f"{int(p):,}"),
                "Seeds": table["seeds"],
                # "(1 seed)", a floor "(no training)"; 2-4 seeds: each value; 5 or more: ± std (tables.seeds_cell).
                "Dice (ours)": [seeds_cell(row) for _, row in table.iterrows()],
                ci_header(table): [ci_cell(row) for _, row in table.iterrows()],
                "Dice (paper)": [
                    plus_minus(m, s, 3) for m, s in zip(table["paper_dice_mean"], table["paper_dice_std"])
                ],
                "Dice ours − paper": [signed(d, 3) for d in table["dice_mean"] - table["paper_dice_mean"]],
                **our_hd95(table),
                "HD95 px (paper)": [
                    plus_minus(m, s, 2) for m, s in zip(table["paper_hd95_mean"], table["paper_hd95_std"])
                ],
                "HD95 ours − paper": [signed(d, 2) for d in table["hd95_mean"] - table["paper_hd95_mean"]],
            }
        )
        if "gflops" in table and "latency_ms" in table:
            shown.insert(2, "GFLOPs", [gflops_text(v) for v in table["gflops"]])
            shown.insert(3, "CPU ms", [fmt(v, 1) for v in table["latency_ms"]])
        notes = [note(HD95_NOTE)]
    elif kind == "ladder":
        shown = pd.DataFrame(
            {
                "Step": table["step"],
                "Seeds": table["seeds"],
                # One seed: "(1 seed)"; 2-4 seeds: each seed's value; 5 or more: ± std (tables.seeds_cell).
                "Dice (ours)": [seeds_cell(row) for _, row in table.iterrows()],
                ci_header(table): [ci_cell(row) for _, row in table.iterrows()],
                f"Dice (paper, {catalog.label(paper.LADDER_NETWORK)})": [fmt(v, 3) for v in table["paper_dice_mean"]],
                "Dice ours − paper": [signed(d, 3) for d in table["dice_mean"] - table["paper_dice_mean"]],
                **our_hd95(table),
            }
        )
        notes = [note("Each step adds one change to the previous one; the paper's Dice is U-net's."), note(HD95_NOTE)]
    elif kind == "generalization":
        shown = pd.DataFrame(
            {
                "Network": table["label"],
                "Variant": table["variant"],
                "Dataset": list(map(generalization.with_role, table["dataset"], table["role"])),
                "Patients": table["patients"],
                "Images": table["images"],
                "Dice [95 % CI]": [
                    generalization.dice_cell(m, lo, hi)
                    for m, lo, hi in zip(table["dice"], table["ci_low"], table["ci_high"])
                ],
                "Drop from in-domain [95 % CI]": [
                    "" if pd.isna(d) else f"{signed(d, 3)} {stats.ci_text(lo, hi, signed=True)}"
                    for d, lo, hi in zip(table["drop"], table["drop_ci_low"], table["drop_ci_high"])
                ],
            }
        )
        composed = " ".join(
            [
                "Mean Dice over the images with a lesion, 95 % CI by patient then training. External datasets are "
                f"segmented in full by every fold's models. {generalization.ROLES_NOTE} The drop's CI resamples "
                "the two sets' patients independently. tta: horizontal-flip averaging; ensemble: the mean of the "
                "trainings' probabilities (in-domain each fold's seeds, external every fold and seed).",
                generalization.sizes_note(table),
                *generalization.lesionless_notes(table),
            ]
        )
        notes = []
    elif kind == "subgroups":
        table = subgroups.read(table_csv)  # values as text (a view 1, not 1.0)
        shown = pd.DataFrame(
            {
                "Network": table["label"],
                "Dataset": list(map(generalization.with_role, table["dataset"], table["role"])),
                "Column": table["subgroup"].map(subgroups.shown_name),
                "Value": table["value"],
                "Patients": table["patients"],
                "Images": table["images"],
                "Images without a lesion": table["no_lesion_images"],
                "Dice [95 % CI]": [subgroups.dice_text(row) for _, row in table.iterrows()],
            }
        )
        composed = subgroups.caption(table)
        notes = []
    elif kind in catalog.PAIRED_TABLES:  # its caption, with the family and the provenance, is its Markdown twin's
        shown = shown_comparison(table)
        shown.insert(4, "Dice method", [fmt(v, 3) for v in table["dice_method"]])
        shown.insert(5, "Dice reference", [fmt(v, 3) for v in table["dice_reference"]])
        if "dataset" in table:  # where each pair was compared (tables from before the column: the runs' names say)
            shown.insert(2, "Dataset", table["dataset"])
        # Holm's p < 0.05 and, with several trainings a side, the CI excluding 0 (older tables: none)
        shown["Significant"] = (
            table["significant"].map(lambda v: "yes" if str(v) == "True" else "no") if "significant" in table else ""
        )
        composed = "Runs paired on the same test images, by patient: method − reference."
        notes = []
    elif kind == "selection":
        chosen_settings = {
            label: table[column].map(lambda v: "" if pd.isna(v) else f"{v:g}")
            for column, label in (("learning_rate", "Learning rate"), ("weight_decay", "Weight decay"))
            if column in table
        }
        shown = pd.DataFrame(
            {
                "Network": table["network"],
                "Fold": table["fold"] if "fold" in table else "",
                **chosen_settings,
                "Chosen": table["chosen"].map(lambda c: "✔" if str(c).lower() in ("true", "1") else ""),
                "Best val loss": [fmt(v, 4) for v in table["best_val_loss"]],
                "Val Dice at best": [fmt(v, 3) for v in table["val_dice_at_best"]],
                "Best epoch": table["best_epoch"],
            }
        )
        notes = [
            note(
                "The paper tuned weight decay per network within {1e-2, 1e-3, 1e-4, 1e-5, 0} on the validation "
                "set and gave every network U-net's learning rate; here each network's auto settings are chosen "
                "in each fold on that fold's validation part. The test split is never read by this choice."
            )
        ]
    # Without a Markdown twin (a recipe selection's table made before sonoseg wrote one) the page says what is
    # not known rather than leave the provenance out unremarked.
    unrecorded = (
        f"No caption was written beside {Path(table_csv).name}: the data and the sonoseg commit its numbers "
        "come from are not recorded."
    )
    caption = written_caption(table_csv) or " ".join(part for part in (composed, unrecorded) if part)
    write_page(out_html, TABLE_TITLES[kind], [note(caption), html_table(shown), *notes])


HD95_NOTE = (
    "Mean ± sample standard deviation over seeds of the per-seed mean over the test images that have a lesion. "
    "HD95 penalised: lesion images with an empty prediction, scored Dice 0 and HD95 = image diagonal; 'both "
    "non-empty' averages HD95 over the images where neither mask is empty (images counted / lesion images, summed over"
    " seeds)."
)


def our_hd95(table: pd.DataFrame) -> dict[str, object]:
    """Our HD95 columns as the table's Markdown twin shows them (tables.our_columns), and how many of the
    lesion images the empty-prediction penalty scored (summed over seeds)."""
    return {**tables.our_columns(table), "HD95 penalised images": table["hd95_penalized"]}


def shown_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Comparison rows (stats.COMPARISON_COLUMNS) as a page shows them: who against whom, on how many patients,
    images and runs, and the difference with its CI and p-values."""
    return pd.DataFrame(
        {
            "Method": frame["method"],
            "Against": frame["reference"],
            "Patients / images": [f"{p} / {i}" for p, i in zip(frame["patients"], frame["images"])],
            "Runs": [f"{c} / {r}" for c, r in zip(frame["runs_candidate"], frame["runs_reference"])],
            **difference_columns(frame),
        }
    )


def difference_columns(comparison: pd.DataFrame) -> dict[str, list[str]]:
    """A comparison table's (stats.COMPARISON_COLUMNS) shown difference, CI and p-values."""
    return {
        "Mean Dice difference": [signed(v, 4) for v in comparison["mean_difference"]],
        "95 % CI (patients, then runs)": [
            stats.ci_text(lo, hi, 4, signed=True) for lo, hi in zip(comparison["ci_low"], comparison["ci_high"])
        ],
        "p (sign-flip)": [f"{p:.3g}" for p in comparison["p"]],
        # A Holm p within two Monte Carlo errors of 0.05 says so: its side of the line is not settled.
        "p (Holm)": [
            f"{p:.3g}" + (f" (± {e:.1g}: near 0.05)" if near else "")
            for p, e, near in zip(
                comparison["p_holm"],
                comparison.get("p_mc_error", pd.Series(0.0, index=comparison.index)),
                comparison.get("near_threshold", pd.Series(False, index=comparison.index)),
            )
        ],
    }


def front_page(front: pd.DataFrame, out_html: str | Path, source: str = "") -> None:
    """The parameter front's paired statistics as a page; ``source``: its provenance (results.source_line)."""
    shown = pd.DataFrame(
        {
            "Network": front["method"],
            "On the front": ["yes" if on else "no" for on in front["on_front"]],
            "Parameters": [f"{v:,.0f}" for v in front["parameters"]],
            "Against": front["reference"],
            "Its parameters": [f"{v:,.0f}" for v in front["reference_parameters"]],
            **difference_columns(front),
        }
    )
    write_page(
        out_html,
        "The accuracy-parameter front, by patient",
        [
            note(
                "The front: the networks no other beats (mean test Dice) with as few or fewer parameters. A network "
                "on it is compared with the front's next cheaper network (does its extra size buy accuracy?); one "
                "off it with the cheapest front network that is as small or smaller and scores at least as well (is "
                "it beaten at a lower cost?). Paired, by patient, then run; Holm over these rows (docs/statistics.md)."
            ),
            html_table(shown, f"Family: {front['family'].iloc[0] if len(front) else 'none'}"),
            *([note(source)] if source else []),
        ],
    )


BREAKDOWN_RESAMPLES = 2000  # the most bootstrap resamples a table of Dice by metadata value draws


def statistics_page(
    per_image: pd.DataFrame,
    found,
    manifest_csv: str | Path,
    out_html: str | Path,
    seed: int = 0,
    resamples: int = 10_000,
    source: str = "",
) -> None:
    """The statistics page: each method's mean Dice with its patient-level CI, the paired families
    (sonoseg.analysis.families.paired_families: ``found``) and Dice per metadata value (lesion type,
    class, ...) with counts and CIs; ``source`` (results.source_line: the data, the code and the trainings
    its numbers come from) ends it, as every table's caption."""
    reference, reference_note = found.reference, found.reference_note
    # No comparison at all (one network and no floor): the page still gives each method's Dice.
    family = found.comparison["family"].iloc[0] if len(found.comparison) else "none"
    comparison, beyond, versus_references = found.comparison, found.beyond, found.versus_references

    cells = stats.method_table(per_image, seed=seed, resamples=resamples)
    untrained = set(catalog.untrained())  # a floor's or a reference's cell says "(no training)", as the tables do
    # The tables by metadata value bootstrap every cell of every column: fewer resamples keep them quick.
    breakdown_resamples = min(resamples, BREAKDOWN_RESAMPLES)
    parts = [
        note(
            f"{reference_note} Over the test images with a lesion; patients are the manifest's patient groups "
            f"(a patient's views and duplicated images move together). CIs: {resamples:,} bootstrap resamples of "
            f"patients, then of runs (trainings: fold and seed) within each ({breakdown_resamples:,} in the "
            "tables by metadata value, as their titles say); p: a sign-flip test over patients "
            "(exact up to 16 patients, else enough random flips that a Holm p near 0.05 is within 0.002); Holm's "
            "correction within each family (docs/statistics.md). With fewer than 5 runs a cell lists each run's mean."
        ),
        html_table(
            pd.DataFrame(
                {
                    "Method": cells["method"],
                    "Patients": cells["patients"],
                    "Runs": cells["runs"],
                    "Dice": [
                        stats.format_cell(row, trained=row["method"] not in untrained) for _, row in cells.iterrows()
                    ],
                }
            ),
            f"Mean test Dice with its patient-level 95 % CI ({resamples:,} bootstrap resamples)",
        ),
    ]
    if not comparison.empty:
        parts.append(
            html_table(shown_comparison(comparison), f"Paired Dice difference against {reference} (family: {family})")
        )
    else:
        parts.append(note("No paired comparison: the study has one method to compare and no floor."))
    if not beyond.empty:
        verdict = beyond.groupby("method", sort=False).apply(
            lambda group: bool((group["ci_low"] > 0).all() and group["significant"].all()), include_groups=False
        )
        parts.append(
            html_table(
                shown_comparison(beyond),
                "Against every floor (family: every network vs every floor; floors use nothing derived from "
                "the test image's annotation). Beats every floor: "
                + ", ".join(f"{m}: {'yes' if v else 'no'}" for m, v in verdict.items()),
            )
        )
    if not versus_references.empty:
        parts.append(
            html_table(
                shown_comparison(versus_references),
                "Against each reference (family: every network vs each reference). A reference reads something "
                "derived from the test image's annotation (the caliper reader: the phantom draws its calipers "
                "from the mask): it is not a floor, and no verdict rests on it.",
            )
        )
    # The breakdowns read the manifest, not the long table's view and meta_* columns: it also has class, a
    # view for tables collected before they carried one, and every value as written (read back, the long
    # table parses meta_* as numbers: 9187.0 where another dataset's images have none).
    manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    tested = manifest[manifest["sample_id"].isin(set(per_image["sample_id"]))]
    for column in categorical_columns(tested):
        values = per_image.drop(columns=column, errors="ignore").merge(tested[["sample_id", column]], on="sample_id")
        values[column] = values[column].replace("", "(none)")
        if values[column].nunique() < 2:
            continue
        groups = stats.group_table(values, column, seed=seed, resamples=breakdown_resamples)
        groups["cell"] = [
            stats.format_cell(row, trained=row["method"] not in untrained)
            + (f" {subgroups.FEW_MARK}" if subgroups.few_patients(int(row["patients"])) else "")
            for _, row in groups.iterrows()
        ]
        shown = groups.pivot_table(index="method", columns=column, values="cell", aggfunc="first", sort=False)
        counts = groups.groupby(column)[["images", "patients"]].first()
        shown.columns = [
            f"{v} ({stats.counted(row['patients'], 'patient')}, {stats.counted(row['images'], 'image')})"
            for v, row in ((v, counts.loc[v]) for v in shown.columns)
        ]
        parts.append(
            html_table(
                shown.reset_index(),
                f"Test Dice per {column} (patient-level 95 % CI, {breakdown_resamples:,} bootstrap resamples)"
                + (f". {subgroups.few_note()}" if any(map(subgroups.few_patients, counts["patients"])) else ""),
            )
        )
    if source:
        parts.append(note(source))
    write_page(out_html, "Statistics by patient", parts)
