"""Generalization: each network's Dice on its own test images (in-domain, out of fold) beside its Dice
on every external dataset (config ``external_datasets``: images no training, validation or floor of the
study saw; the development set alone may guide a choice, the held_out sets none), as trained,
flip-averaged (tta) and as an ensemble, with patient-level CIs and the drop from in-domain to external.
The drop's CI resamples the two sets' patients independently (they are other patients); the gains of tta
and of the ensemble on one dataset are paired by patient in tables/tta.csv and tables/ensemble.csv.
Reads the collected long table (sonoseg.analysis.results) only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sonoseg.analysis import stats
from sonoseg.analysis.results import (
    IN_DOMAIN,
    markdown_header,
    markdown_row,
    patient_table,
    read_table,
    select_runs,
    write_table,
)
from sonoseg.analysis.scoring import empty_side
from sonoseg.data.options import NORMAL_LEFT_OUT
from sonoseg.data.provenance import write_text_atomic
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog

VARIANTS = ("single", "tta", "ensemble")
COLUMNS = [
    "network",
    "label",
    "variant",
    "dataset",
    "role",
    "run",
    "patients",
    "images",
    "dice",
    "ci_low",
    "ci_high",
    "drop",
    "drop_ci_low",
    "drop_ci_high",
]


def variants(per_image: pd.DataFrame) -> pd.Series:
    """Each row's use of its models: ensemble (members averaged), tta (flip-averaged) or single."""
    # A column of no members at all is read back as floats (NaN): emptiness is what counts.
    members = per_image["members"].astype("string").fillna("").str.strip() != ""
    tta = per_image["tta"].astype(str).str.lower() == "true"
    return pd.Series(["ensemble" if m else "tta" if t else "single" for m, t in zip(members, tta)], per_image.index)


def runs_of(per_image: pd.DataFrame, network: str) -> dict[tuple[str, str], str]:
    """(variant, dataset) -> the run that tests ``network``'s models so: the network's own run, its tta
    and ensemble runs (in-domain), and its external runs."""
    owner = per_image["model_from"].fillna("").astype(str).where(lambda s: s != "", per_image["run"])
    kinds = per_image["kind"].isin(["network", "tta", "ensemble", "external"])
    mine = per_image[(owner == network) & kinds]
    keys = pd.DataFrame({"variant": variants(mine), "dataset": mine["dataset"].fillna(IN_DOMAIN), "run": mine["run"]})
    found: dict[tuple[str, str], str] = {}
    for (variant, dataset), runs in keys.groupby(["variant", "dataset"], sort=False)["run"]:
        names = sorted(set(runs))
        if len(names) > 1:
            raise SonosegError(f"generalization: {network} has several {variant} runs on {dataset}: {names}")
        found[(variant, dataset)] = names[0]
    return found


def generalization_table(
    per_image: pd.DataFrame, networks: list[str], roles: dict[str, str], seed: int = 0, resamples: int = 10_000
) -> pd.DataFrame:
    """One row per network x variant x dataset (in-domain first, then the external sets in ``roles``'
    order): mean Dice over the images with a lesion, its patient-level 95 % CI, and on an external set the
    drop from the same variant's in-domain Dice with its CI."""
    if "dataset" not in per_image:
        raise SonosegError("generalization: the per-image table has no dataset column (collect it again)")
    absent = [d for d in roles if d not in set(per_image["dataset"])]
    if absent:
        raise SonosegError(f"generalization: no results on external datasets {absent} in the per-image table")
    rows = []
    for network in networks:
        found = runs_of(per_image, network)
        if ("single", IN_DOMAIN) not in found:
            raise SonosegError(f"generalization: no in-domain results of network {network!r}")
        for variant in VARIANTS:
            in_domain = None
            for dataset in [IN_DOMAIN, *roles]:
                run = found.get((variant, dataset))
                if run is None:
                    continue
                chosen = select_runs(per_image, [run])
                if dataset != IN_DOMAIN and empty_side(chosen, "truth").all():
                    # A set of scans without lesions (normal scans): no Dice to give; its row says so.
                    rows.append(_row(network, variant, dataset, roles, run, patients=0, images=0, dice=float("nan")))
                    continue
                table = patient_table(chosen)
                summary = stats.method_ci(table, run, seed=seed, resamples=resamples)
                replicates = stats.method_replicates(
                    table, run, seed=seed + (dataset != IN_DOMAIN), resamples=resamples
                )
                row = _row(
                    network,
                    variant,
                    dataset,
                    roles,
                    run,
                    **{k: summary[k] for k in ("patients", "images")},
                    dice=summary["mean"],
                    ci_low=summary["ci_low"],
                    ci_high=summary["ci_high"],
                )
                if dataset == IN_DOMAIN:
                    in_domain = (summary["mean"], replicates)
                elif in_domain is not None:
                    low, high = stats.independent_difference_ci(in_domain[1], replicates)
                    row.update(drop=in_domain[0] - summary["mean"], drop_ci_low=low, drop_ci_high=high)
                rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def _row(network: str, variant: str, dataset: str, roles: dict[str, str], run: str, **values) -> dict:
    return {
        "network": network,
        "label": catalog.label(network),
        "variant": variant,
        "dataset": dataset,
        "role": roles.get(dataset, IN_DOMAIN),
        "run": run,
        **values,
    }


# A set none of whose images has a lesion has no Dice: its cell says so, in the markdown table and the report.
NO_DICE = "no lesion: no Dice"


def dice_cell(mean: float, low: float, high: float) -> str:
    """A Dice cell: the mean and its CI, or why there is none."""
    return NO_DICE if pd.isna(mean) else f"{mean:.3f} {stats.ci_text(low, high)}"


def lesionless_notes(table: pd.DataFrame) -> list[str]:
    """A caption's sentence for each external set none of whose images has a lesion (its rows: no Dice)."""
    external = table[table["dataset"] != IN_DOMAIN]
    without = external.groupby("dataset", sort=False)["images"].max()
    return [
        f"{dataset}: no image has a lesion, so it has no Dice (its predictions are in per_image.csv.gz)."
        for dataset, images in without.items()
        if images == 0
    ]


# What the table's external sets are, said once for the markdown caption, the report page and the figure.
ROLES_NOTE = (
    "No external image reaches training, validation, the recipe selection, the post-processing choice or the "
    "floors' fitting; the development set is the one set a choice may read (the augmentation's, where "
    "train.ultrasound_augment is auto: tables/augmentation.csv), the held_out sets no automated choice ever read."
)


def with_role(dataset: str, role: str) -> str:
    """A dataset as a table names it: an external set with its role beside it ("pymust_far (development)"),
    the study's own test images as they are."""
    return dataset if dataset == IN_DOMAIN else f"{dataset} ({role})"


def sizes(table: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Each dataset's patients and images with a lesion, as the table scored them (the largest over its
    rows: a network's ensemble row counts the same images as its single one)."""
    counts = table.groupby("dataset", sort=False)[["patients", "images"]].max()
    return {dataset: (int(row["patients"]), int(row["images"])) for dataset, row in counts.iterrows()}


def dataset_labels(table: pd.DataFrame) -> dict[str, str]:
    """Each dataset as a caption or a legend names it, in the table's order: its role beside an external
    set's name, and its size."""
    roles = table.groupby("dataset", sort=False)["role"].first()
    where = {dataset: "" if dataset == IN_DOMAIN else f"{role}; " for dataset, role in roles.items()}
    return {
        dataset: f"{dataset} ({where[dataset]}{stats.counted(patients, 'patient')}, {stats.counted(images, 'image')})"
        for dataset, (patients, images) in sizes(table).items()
    }


def sizes_note(table: pd.DataFrame) -> str:
    """A caption's sentence: every dataset's role and size."""
    return f"Scored, images with a lesion: {', '.join(dataset_labels(table).values())}."


def ingest_note(manifest: pd.DataFrame, dataset: str) -> str:
    """A caption's sentence: the files an external set's ingest left out (its manifest's excluded rows:
    samples with a problem under on_bad_sample: exclude, and normal scans without include_normal), or ''."""
    excluded = manifest[manifest["status"] == "excluded"]
    if excluded.empty:
        return ""
    # (A manifest ingested before the reason was named once says it as the main dataset's.)
    normal = (
        excluded["reason"].astype(str).isin([NORMAL_LEFT_OUT, "normal image left out (dataset.include_normal: false)"])
    )
    parts = [
        f"{count} {what}"
        for count, what in (
            (int((~normal).sum()), "with a problem (on_bad_sample: exclude)"),  # files and CSV rows alike
            (int(normal.sum()), "normal scan(s) (include_normal: false)"),
        )
        if count
    ]
    return (
        f"{dataset}: {len(excluded)} entries left out at ingest, {' and '.join(parts)}; each is listed with its "
        f"reason in external/{dataset}/manifest.csv."
    )


def _cell(mean: float, low: float, high: float) -> str:
    return "" if pd.isna(mean) else f"{mean:.3f} {stats.ci_text(low, high)}"


def markdown(table: pd.DataFrame, notes: list[str] = (), source: str = "") -> str:
    """The table as a person reads it: a row per network and variant; in-domain Dice, then per external
    set its Dice and the drop (in-domain - external), each with its 95 % CI; ``notes`` end the caption
    (what an external set's tests left out), then ``source`` (results.source_line: where the numbers come from)."""
    datasets = list(dict.fromkeys(table["dataset"]))
    header = ["Network", "Variant"]
    for dataset in datasets:
        role = table.loc[table["dataset"] == dataset, "role"].iloc[0]
        header += [f"{with_role(dataset, role)} Dice"] + ([] if dataset == IN_DOMAIN else [f"{dataset} drop"])
    lines = markdown_header(header)
    for (_, variant), rows in table.groupby(["network", "variant"], sort=False):
        by_dataset = rows.set_index("dataset")
        cells = [rows["label"].iloc[0], variant]
        for dataset in datasets:
            row = by_dataset.loc[dataset] if dataset in by_dataset.index else None
            dice = "" if row is None else dice_cell(row["dice"], row["ci_low"], row["ci_high"])
            if dataset == IN_DOMAIN:
                cells.append(dice)
            else:
                drop = "" if row is None else _cell(row["drop"], row["drop_ci_low"], row["drop_ci_high"])
                cells += [dice, drop]
        lines.append(markdown_row(cells))
    caption = (
        "Generalization: Dice on the study's own test images (in-domain, out of fold) and on each external "
        "dataset (every image, every fold's models), mean over images with a lesion [95 % CI by patient]; "
        "drop = in-domain - external, its CI resampling each set's patients independently. Variants: single "
        "trainings; tta = horizontal-flip averaging; ensemble = the mean of the trainings' probabilities "
        "(in-domain: each fold's seeds; external: every fold and seed)."
    )
    caption = " ".join([caption, ROLES_NOTE, sizes_note(table), *(note for note in [*notes, source] if note)])
    return caption + "\n\n" + "\n".join(lines) + "\n"


def write(table: pd.DataFrame, out_csv: str | Path, notes: list[str] = (), source: str = "") -> None:
    """The table as CSV, and as Markdown beside it (``markdown``: its caption ends with ``notes`` and ``source``)."""
    out_csv = Path(out_csv)
    write_table(table, out_csv)
    write_text_atomic(out_csv.with_suffix(".md"), markdown(table, notes, source))


def read(table_csv: str | Path) -> pd.DataFrame:
    """A generalization table as `write` wrote it."""
    return read_table(table_csv, "generalization table", COLUMNS)


def plot(table: pd.DataFrame, out_png: str | Path, notes: list[str] = (), source: str = "") -> None:
    """The report's figure (``figure``) written as a PNG, carrying ``source`` (results.written_source) in its text."""
    from sonoseg.analysis.figure_files import save_figure

    save_figure(figure(table, notes), out_png, source=source, dpi=120, bbox_inches=None)


def figure(table: pd.DataFrame, notes: list[str] = ()):
    """The report's figure: per network (the catalog's names), its Dice on each dataset with the 95 % CI
    by patient, single trainings as dots and the other variants as open marks; ``notes`` (what an
    external set's ingest and tests left out) under it. The caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(table["dataset"]))
    named = dataset_labels(table)
    labels = list(dict.fromkeys(table["label"]))
    markers = {"single": "o", "tta": "s", "ensemble": "D"}
    # 9.5 in at 120 dpi: 1,140 px, within the report viewer's width, so that its 8-pt text shows at 8 pt.
    fig, ax = plt.subplots(figsize=(9.5, 0.3 * len(labels) * len(datasets) + 1.2))
    colors = plt.get_cmap("tab10")
    height = 0.8 / (len(datasets) * len(VARIANTS))
    for row_number, label in enumerate(labels):
        for d, dataset in enumerate(datasets):
            for v, variant in enumerate(VARIANTS):
                chosen = table[
                    (table["label"] == label) & (table["dataset"] == dataset) & (table["variant"] == variant)
                ]
                if chosen.empty:
                    continue
                row = chosen.iloc[0]
                if pd.isna(row["dice"]):  # a set without lesions: no Dice (the caption says so)
                    continue
                y = row_number + (d * len(VARIANTS) + v) * height - 0.4
                ax.errorbar(
                    row["dice"],
                    y,
                    xerr=[[row["dice"] - row["ci_low"]], [row["ci_high"] - row["dice"]]],
                    fmt=markers[variant],
                    color=colors(d),
                    mfc=colors(d) if variant == "single" else "white",
                    ms=4,
                    lw=1,
                    label=f"{named[dataset]} ({variant})",
                )
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    # Beside the axes, not in them: on an external set a network's Dice may lie anywhere in [0, 1].
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice, images with a lesion (95 % CI by patient)")
    ax.set_title("Generalization: in-domain and external datasets", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    notes = [note for note in notes if note]
    if notes:
        import textwrap

        footer = "\n".join(textwrap.fill(note, 125) for note in notes)
        lines = footer.count("\n") + 1
        # The notes' height in inches (an 8-pt line takes about 0.135 in), the figure grown by as much, so
        # that they stay under the axis label however many there are and however small the plot.
        footer_height = 0.135 * lines + 0.05
        fig.set_figheight(fig.get_figheight() + footer_height)
        fig.text(0.01, 0.005, footer, fontsize=8, va="bottom")
        fig.tight_layout(rect=(0, footer_height / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout()
    return fig
