"""Dice by subgroup: each network's Dice on the images of each value of a manifest column (BUSI's class,
the lesion type of the phantom and of the simulated external sets, a view, any ``meta_*`` column), on its
own test images and on each external dataset. The generalization table says how much a network loses off
its training data; this one says on which images: on the built-in physics-simulated scans the U-net
family segments the dark interior of a lesion with an echogenic rim and leaves the rim out, which no
dataset-level number shows.

Descriptive only: a subgroup holds a few images (their count heads its column), no two subgroups are
compared, and nothing is corrected for the number of cells; the CI (by patient, then training, as every
table's) is wide or absent where a subgroup has few patients. Single trainings only (every fold and
seed of a network; on an external set every fold's models). Reads the collected long table
(sonoseg.analysis.results) only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sonoseg.analysis import stats
from sonoseg.analysis.generalization import runs_of, with_role
from sonoseg.analysis.results import (
    IN_DOMAIN,
    as_compared,
    markdown_header,
    markdown_row,
    read_table,
    select_runs,
    write_table,
)
from sonoseg.analysis.scoring import empty_side
from sonoseg.data.provenance import write_text_atomic
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog

COLUMNS = [
    "network",
    "label",
    "dataset",
    "role",
    "run",
    "subgroup",
    "value",
    "patients",
    "images",
    "dice",
    "ci_low",
    "ci_high",
    "no_lesion_images",
    "no_lesion_dice",
]
NO_VALUE = "(none)"  # the value of an image whose manifest leaves the column empty: counted, not dropped
# Manifest columns the per-image table carries besides the meta_* ones (sonoseg.analysis.results).
PLAIN_COLUMNS = ("view", "class")
RESAMPLES = 10_000  # the bootstrap's, for every cell's CI (the caption says it)
# A bootstrap over so few patients draws so few distinct means (two patients: three) that its interval shows
# almost none of the uncertainty: such a cell's CI is marked, and the caption says why.
FEW_PATIENTS = 5
FEW_MARK = "‡"


def few_patients(patients: int) -> bool:
    """Whether a cell's CI stands on so few patients (two or more, fewer than FEW_PATIENTS) that it is marked."""
    return stats.MIN_PATIENTS_FOR_CI <= patients < FEW_PATIENTS


def few_note() -> str:
    """What FEW_MARK means, as every table that marks a cell with it says."""
    return (
        f"{FEW_MARK}: a CI over fewer than {FEW_PATIENTS} patients, which a bootstrap cannot make wide enough "
        "(two patients give at most three distinct means): read its value, not its interval."
    )


def column_name(name: str) -> str:
    """The per-image table's column a config entry names: ``class`` and ``view`` as they are, any other
    name as the manifest's metadata column (``lesion_type`` or ``meta_lesion_type``: meta_lesion_type)."""
    return name if name in PLAIN_COLUMNS or name.startswith("meta_") else f"meta_{name}"


def shown_name(column: str) -> str:
    """A column as a caption names it: without the metadata prefix."""
    return column.removeprefix("meta_")


def subgroup_table(
    per_image: pd.DataFrame,
    networks: list[str],
    columns: list[str],
    roles: dict[str, str],
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> pd.DataFrame:
    """One row per network x dataset (in-domain first, then ``roles``' external sets in order) x column x
    value, over the images with a lesion of the network's single trainings: their mean Dice and its 95 % CI
    by patient; and, apart, the value's images without a lesion (BUSI's normal scans): how many, and their
    mean Dice (1 where the prediction is empty too, else 0). A value whose images have no lesion has a row
    with no Dice of the first kind. A column a dataset does not have (or leaves empty on every image) gives
    that dataset no rows; an image without a value counts under NO_VALUE."""
    wanted = list(dict.fromkeys(column_name(c) for c in columns))
    rows = []
    for network in networks:
        found = runs_of(per_image, network)
        if ("single", IN_DOMAIN) not in found:
            raise SonosegError(f"subgroups: no in-domain results of network {network!r}")
        for dataset in [IN_DOMAIN, *roles]:
            run = found.get(("single", dataset))
            if run is None:
                continue
            scored = select_runs(per_image, [run])
            lesion = ~empty_side(scored, "truth")  # the Dice of the tables: a mean over the images with a lesion
            for column in wanted:
                if column not in scored or scored[column].isna().all():
                    continue
                values = as_text(scored[column])
                for value in sorted(set(values), key=_value_order):
                    chosen = values == value
                    without = scored[chosen & ~lesion]
                    if (chosen & lesion).any():
                        summary = stats.method_ci(
                            as_compared(scored[chosen & lesion]), run, seed=seed, resamples=resamples
                        )
                    else:
                        summary = {
                            "patients": 0,
                            "images": 0,
                            "mean": float("nan"),
                            "ci_low": float("nan"),
                            "ci_high": float("nan"),
                        }
                    rows.append(
                        {
                            "network": network,
                            "label": catalog.label(network),
                            "dataset": dataset,
                            "role": roles.get(dataset, IN_DOMAIN),
                            "run": run,
                            "subgroup": column,
                            "value": value,
                            "patients": summary["patients"],
                            "images": summary["images"],
                            "dice": summary["mean"],
                            "ci_low": summary["ci_low"],
                            "ci_high": summary["ci_high"],
                            "no_lesion_images": without["sample_id"].nunique(),
                            "no_lesion_dice": without["dice"].mean() if len(without) else float("nan"),
                        }
                    )
    return pd.DataFrame(rows, columns=COLUMNS)


def as_text(column: pd.Series) -> pd.Series:
    """A column's values as a caption names them: text as given, a number without a float's trailing .0
    (a grade 3 read as 3.0 where some image has none), an empty cell as NO_VALUE."""
    if pd.api.types.is_numeric_dtype(column):
        text = column.map(lambda v: "" if pd.isna(v) else format(v, "g")).astype("string")
    else:
        text = column.astype("string").str.strip()
    return text.replace("", pd.NA).fillna(NO_VALUE)


def _value_order(value: str) -> tuple:
    """Values in a column's natural order: numbers (views) by number, words alphabetically, NO_VALUE last."""
    if value == NO_VALUE:
        return (2, 0.0, value)
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def absent_columns(per_image: pd.DataFrame, columns: list[str]) -> list[str]:
    """The configured columns that no image of the table has a value in (a folder dataset without metadata,
    or a misspelt name): the caption names them with the columns there are."""
    return [
        column
        for column in dict.fromkeys(column_name(c) for c in columns)
        if column not in per_image or per_image[column].isna().all()
    ]


def available_columns(per_image: pd.DataFrame) -> list[str]:
    """The manifest columns a subgroup may be drawn from, as a config entry names them."""
    present = [
        c for c in per_image.columns if (c in PLAIN_COLUMNS or c.startswith("meta_")) and per_image[c].notna().any()
    ]
    return [shown_name(c) for c in present]


def caption(
    table: pd.DataFrame,
    absent: list[str] = (),
    available: list[str] = (),
    source: str = "",
    configured: bool = True,
    resamples: int = RESAMPLES,
) -> str:
    """The table's caption: what a cell is, the columns configured that no dataset has (``absent``, beside the
    ``available`` ones), or that none was (``configured`` False), then ``source`` (where the numbers come from)."""
    text = (
        "Dice by subgroup: each network's single trainings (every fold and seed; on an external set every fold's "
        "models), mean Dice over the images with a lesion of each value of a manifest column [95 % CI by patient], "
        "with the number of images of each value. Images without a lesion (BUSI's normal scans) are counted "
        "apart, with their own mean Dice: 1 where the prediction is empty too, else 0. Descriptive: subgroups are "
        "small, no two are compared and nothing is corrected for the number of cells; read a low cell as where to "
        f"look, not as a finding. CIs: {resamples:,} bootstrap resamples of patients, then trainings."
    )
    parts = [text]
    if any(map(few_patients, pd.to_numeric(table["patients"], errors="coerce").dropna())):
        parts.append(few_note())
    if absent:
        parts.append(
            f"No image of any dataset has a value in: {', '.join(shown_name(c) for c in absent)} "
            f"(columns there are: {', '.join(available) or 'none'}; config subgroups.columns)."
        )
    if not configured:
        parts.append("No subgroup column was configured (config subgroups.columns).")
    if source:
        parts.append(source)
    return " ".join(parts)


def markdown(table: pd.DataFrame, caption_text: str) -> str:
    """The table as a person reads it: its caption (``caption``), then a block per dataset and column, a row per
    network, a column per value."""
    blocks = [caption_text]
    for (dataset, column), part in table.groupby(["dataset", "subgroup"], sort=False):
        role = part["role"].iloc[0]
        title = with_role(dataset, role)
        values = list(dict.fromkeys(sorted(part["value"], key=_value_order)))
        counts = part.groupby("value")[["images", "no_lesion_images"]].max()
        header = ["Network", *(f"{value} ({count_text(*counts.loc[value])})" for value in values)]
        lines = [f"**{title}, by {shown_name(column)}** (images with a lesion per value in brackets)", ""]
        lines += markdown_header(header)
        for _, rows in part.groupby("network", sort=False):
            by_value = rows.set_index("value")
            cells = [rows["label"].iloc[0]]
            for value in values:
                if value not in by_value.index:
                    cells.append("")
                    continue
                cells.append(dice_text(by_value.loc[value]))
            lines.append(markdown_row(cells))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def count_text(images, no_lesion) -> str:
    """A value's images as its column's header counts them: those with a lesion, and those without apart."""
    return f"{int(images)}" + (f"; {int(no_lesion)} without a lesion" if no_lesion else "")


def dice_text(row: pd.Series) -> str:
    """A cell: the mean Dice over the images with a lesion and its CI; where the value has images without a
    lesion, their own mean Dice apart (1 where the prediction is empty too)."""
    parts = []
    if not pd.isna(row["dice"]):
        mark = f" {FEW_MARK}" if few_patients(int(row["patients"])) else ""
        parts.append(f"{row['dice']:.3f} {stats.ci_text(row['ci_low'], row['ci_high'])}{mark}")
    if row["no_lesion_images"]:
        parts.append(f"without a lesion {row['no_lesion_dice']:.3f}")
    return "; ".join(parts)


def write(table: pd.DataFrame, out_csv: str | Path, caption_text: str) -> None:
    """The table as CSV, and as Markdown beside it, headed by ``caption_text`` (``caption``)."""
    out_csv = Path(out_csv)
    write_table(table, out_csv)
    write_text_atomic(out_csv.with_suffix(".md"), markdown(table, caption_text))


def read(table_csv: str | Path) -> pd.DataFrame:
    """A subgroup table as `write` wrote it (values as text: a view 1 stays 1)."""
    return read_table(table_csv, "subgroup table", COLUMNS, dtype={"value": str})
