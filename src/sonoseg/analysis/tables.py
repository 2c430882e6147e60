"""Summaries and the paper's tables: per-run summaries, Table 1, Table 2, the tuning ladder and the
recipe-selection choices, as CSV, Markdown and LaTeX, with the paper's values beside ours."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg.analysis import paper
from sonoseg.analysis.results import IN_DOMAIN, markdown_header, markdown_row, patient_table, read_metrics, source_line
from sonoseg.analysis.results import write_table as write_csv
from sonoseg.analysis.scoring import empty_side, kept_epoch
from sonoseg.data.provenance import write_text_atomic
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog
from sonoseg.study import layout

log = logging.getLogger(__name__)


def summarize_run(metrics_csv, history_csv) -> dict:
    """Mean test metrics of one (network, seed) run, with the epoch whose weights were kept.

    ``metrics_csv`` may be a list: the out-of-fold metrics of a cross-validated run, pooled (every
    patient once); its histories likewise, and the epochs are then the largest over the folds.

    The main columns are over the images with a lesion in the ground truth (the paper has one
    lesion per image): Dice, and HD95 with the empty-prediction penalty (``hd95_px``, the image
    diagonal for an empty prediction, counted in ``hd95_penalized``). Beside it, HD95 over the
    images where both masks are non-empty (``hd95_matched_px``, over ``hd95_matched_images``).
    Images without a lesion (BUSI's normal images, other empty masks) are summarised apart: their
    count and mean Dice (1 when the prediction is empty too, else 0).

    A run without training (a baseline, ``history_csv`` None) has no epochs: those cells stay empty.
    """
    metrics_files = metrics_csv if isinstance(metrics_csv, (list, tuple)) else [metrics_csv]
    history_files = history_csv if isinstance(history_csv, (list, tuple)) else [history_csv]
    history_files = [h for h in history_files if h]
    per_training = [read_metrics(path) for path in metrics_files]  # a cross-validated run: one file per fold
    metrics = pd.concat(per_training, ignore_index=True)
    histories = [pd.read_csv(path) for path in history_files]
    if metrics.empty:
        raise SonosegError(f"{metrics_csv}: no test images were evaluated")
    truth_empty = empty_side(metrics, "truth")
    prediction_empty = empty_side(metrics, "prediction")
    lesion, no_lesion = metrics[~truth_empty], metrics[truth_empty]
    matched = metrics[~truth_empty & ~prediction_empty]
    return {
        "dice": lesion["dice"].mean(),
        "hd95_px": lesion["hd95_px"].mean(),
        "hd95_mm": lesion["hd95_mm"].mean() if lesion["hd95_mm"].notna().all() else float("nan"),
        "test_images": len(metrics),
        "lesion_images": len(lesion),
        "hd95_penalized": int(lesion["hd95_policy"].astype(str).str.startswith("penalty").sum()),
        "hd95_matched_px": matched["hd95_px"].mean(),
        "hd95_matched_mm": matched["hd95_mm"].mean() if matched["hd95_mm"].notna().all() else float("nan"),
        "hd95_matched_images": len(matched),
        "no_lesion_images": len(no_lesion),
        "no_lesion_dice": no_lesion["dice"].mean(),
        "epochs": max(len(h) for h in histories) if histories else pd.NA,
        "best_epoch": max(kept_epoch(h) for h in histories) if histories else pd.NA,
        "steps": _largest(_last(h, "steps") for h in histories),
        # Convergence as a measured property: trainings the epoch cap ended while still improving.
        "trainings": len(histories),
        "capped": sum(_last(h, "ended_by") == "cap" for h in histories),
        # The paper keeps one lesion; a validation choice may keep every component (predict.postprocess).
        # NA where predict wrote no postprocess column (a study predicted before it): not known, not 0.
        "every_component": (
            sum(_kept_every_component(frame) for frame in per_training)
            if all("postprocess" in frame for frame in per_training)
            else pd.NA
        ),
    }


def _kept_every_component(metrics: pd.DataFrame) -> bool:
    """Whether a training's test masks kept every connected component (its ``postprocess`` column, written by
    predict: ``none``, set so or chosen on validation), not the paper's one lesion."""
    return bool((metrics["postprocess"].astype(str) == "none").any())


def _largest(values) -> object:
    """The largest known value (histories from before a column are skipped); NA when none is known."""
    known = [int(v) for v in values if not pd.isna(v)]
    return max(known) if known else pd.NA


def _last(history: pd.DataFrame, column: str):
    """The last row's value of a history column (histories written before the column: missing)."""
    if column not in history or history.empty or pd.isna(history[column].iloc[-1]):
        return pd.NA if column == "steps" else ""
    return history[column].iloc[-1]


def mean_std(values: pd.Series) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds: NaN for a single seed, whose spread is unknown, not 0
    (docs/statistics.md)."""
    values = values.astype(float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def _count(group: pd.DataFrame, column: str) -> int:
    """A count summed over seeds (0 for summaries written before the column existed)."""
    return int(group[column].fillna(0).sum()) if column in group else 0


def _count_known(group: pd.DataFrame, column: str):
    """A count summed over seeds; NA where no seed's summary knows it (a column from before it was recorded)."""
    if column not in group or group[column].isna().all():
        return pd.NA
    return int(group[column].fillna(0).sum())


def aggregate(runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """Mean and std over seeds per network (or ladder step); counts are summed over seeds."""
    nan_pair = (float("nan"), float("nan"))
    rows = []
    for name, group in runs.groupby(key, sort=False):
        dice, dice_sd = mean_std(group["dice"])
        hd, hd_sd = mean_std(group["hd95_px"])
        hd_mm, hd_mm_sd = mean_std(group["hd95_mm"]) if "hd95_mm" in group else nan_pair
        matched, matched_sd = mean_std(group["hd95_matched_px"]) if "hd95_matched_px" in group else nan_pair
        matched_mm, matched_mm_sd = mean_std(group["hd95_matched_mm"]) if "hd95_matched_mm" in group else nan_pair
        no_lesion = _count(group, "no_lesion_images")
        no_lesion_dice, no_lesion_dice_sd = mean_std(group["no_lesion_dice"]) if no_lesion else nan_pair
        rows.append(
            {
                key: name,
                "seeds": len(group),
                "dice_per_seed": " ".join(f"{v:.6f}" for v in group["dice"].astype(float)),
                "dice_mean": dice,
                "dice_std": dice_sd,
                "hd95_mean": hd,
                "hd95_std": hd_sd,
                "hd95_mm_mean": hd_mm,
                "hd95_mm_std": hd_mm_sd,
                "hd95_penalized": int(group["hd95_penalized"].sum()),
                "lesion_images": _count(group, "lesion_images"),
                "hd95_matched_mean": matched,
                "hd95_matched_std": matched_sd,
                "hd95_matched_mm_mean": matched_mm,
                "hd95_matched_mm_std": matched_mm_sd,
                "hd95_matched_images": _count(group, "hd95_matched_images"),
                "no_lesion_images": no_lesion,
                "no_lesion_dice_mean": no_lesion_dice,
                "no_lesion_dice_std": no_lesion_dice_sd,
                "trainings": _count(group, "trainings"),
                "capped_trainings": _count(group, "capped"),
                "every_component_trainings": _count_known(group, "every_component"),
            }
        )
    return pd.DataFrame(rows)


# Columns of aggregate() that the tables carry as they are.
SUMMARY_COLUMNS = [
    "dice_per_seed",
    "dice_mean",
    "dice_std",
    "hd95_mean",
    "hd95_std",
    "hd95_mm_mean",
    "hd95_mm_std",
    "hd95_penalized",
    "lesion_images",
    "hd95_matched_mean",
    "hd95_matched_std",
    "hd95_matched_mm_mean",
    "hd95_matched_mm_std",
    "hd95_matched_images",
    "no_lesion_images",
    "no_lesion_dice_mean",
    "no_lesion_dice_std",
    "trainings",
    "capped_trainings",
    "every_component_trainings",
]


def run_parameters(model_files: list[str | Path]) -> int:
    """Trainable parameters of a run's network, as its model files recorded them at training (every
    seed's file must agree); a run without training (a floor) has none."""
    if not model_files:
        return 0
    from sonoseg.serving.modelio import MODEL_FORMAT, load_checked

    counts = {int(load_checked(path, MODEL_FORMAT, metadata_only=True)["parameters"]) for path in model_files}
    if len(counts) != 1:
        raise SonosegError(f"{model_files}: the seeds' model files disagree on the parameter count: {sorted(counts)}")
    return counts.pop()


def summarize(out: str | Path, row: dict) -> pd.DataFrame:
    """One row per seed of a run (a run sheet row: a network, a floor or a ladder step), its files found
    in the study folder ``out`` (sonoseg.study.layout): mean test metrics over its out-of-fold predictions
    (``fold`` "all"), the kept epoch and the network's parameter count; with several folds, also one
    row per seed and fold (the per-fold values). A run without training has no history: its epochs
    stay empty. The run's changes to the study's recipe are kept in every row, and whether its backbone
    started from ImageNet weights (``pretrained_backbone``: the run sheet's weights file, given or not)."""
    run, trained = row["name"], bool(row.get("recipe"))
    folds, seeds = str(row["folds"]).split(), str(row["seeds"]).split()

    def files(seed, name):
        return [layout.training_file(out, run, fold, seed, name) for fold in folds]

    parameters = run_parameters([path for seed in seeds for path in files(seed, layout.MODEL)] if trained else [])
    key, name = row.get("table_key") or "network", row.get("table_name") or run
    rows = []
    for seed in seeds:
        metrics = files(seed, layout.METRICS)
        histories = files(seed, layout.HISTORY) if trained else [None] * len(folds)
        rows.append({key: name, "seed": int(seed), "fold": "all", **summarize_run(metrics, histories)})
        if len(folds) > 1:
            for fold, metric, history in zip(folds, metrics, histories, strict=True):
                rows.append({key: name, "seed": int(seed), "fold": str(fold), **summarize_run(metric, history)})
    pretrained = row.get("pretrained_backbone") or ""
    pretrained = bool(pretrained) and not pd.isna(pretrained)  # a sheet read as a table: '' reads back as NaN
    return pd.DataFrame(rows).assign(
        parameters=parameters, run=run, recipe_changes=row.get("recipe_changes", ""), pretrained_backbone=pretrained
    )


def _span(frame: pd.DataFrame, column: str) -> str:
    """A column's whole numbers as 'low-high' (one number when they agree); '' when it holds none."""
    values = pd.to_numeric(frame[column], errors="coerce").dropna() if column in frame else pd.Series([], dtype=float)
    if values.empty:
        return ""
    low, high = int(values.min()), int(values.max())
    return f"{low}" if low == high else f"{low}-{high}"


def pooled(runs: pd.DataFrame) -> pd.DataFrame:
    """The summaries' out-of-fold rows (one per run and seed); summaries without folds are all pooled."""
    return runs[runs["fold"].astype(str) == "all"] if "fold" in runs else runs


def network_table(runs: pd.DataFrame, reference: dict, networks: list[str]) -> pd.DataFrame:
    """Rows in the paper's order, for the networks the study ran."""
    summary = aggregate(runs, "network").set_index("network")
    ordered = [n for n in reference if n in networks] + [n for n in networks if n not in reference]
    rows = []
    for name in ordered:
        if name not in summary.index:
            raise SonosegError(f"no results for network {name!r}")
        ours = summary.loc[name]
        label, p_dice, p_dice_sd, p_hd, p_hd_sd = reference.get(
            name, (catalog.label(name), np.nan, np.nan, np.nan, np.nan)
        )
        changes = recipe_changes_of(runs, name)
        label = f"{label} [{changes}]" if changes else label
        pretrained = pretrained_backbone_of(runs, name)
        unlike_paper = scratch_unlike_paper(name, pretrained, p_dice)
        label = f"{label} {SCRATCH_MARK}" if unlike_paper else label
        label = marked(label, ours)
        rows.append(
            {
                "network": name,
                "label": label,
                "parameters": int(runs.loc[runs["network"] == name, "parameters"].iloc[0]),
                "seeds": int(ours["seeds"]),
                **{c: ours[c] for c in SUMMARY_COLUMNS},
                "paper_dice_mean": p_dice,
                "paper_dice_std": p_dice_sd,
                "paper_hd95_mean": p_hd,
                "paper_hd95_std": p_hd_sd,
                # Whether our backbone started from ImageNet weights (NA: summaries from before it was
                # recorded), and whether the paper's implementation starts it so by default.
                "pretrained_backbone": pd.NA if pretrained is None else pretrained,
                "paper_pretrained_backbone": name in paper.BACKBONE_IMAGENET_BY_DEFAULT,
                "scratch_unlike_paper": unlike_paper,
            }
        )
    return pd.DataFrame(rows)


CAPPED_MARK = "†"  # a row some or all of whose trainings ended at the epoch cap, not by the stop rule
# A row some or all of whose trainings' test masks kept every component (the validation choice), not one lesion.
EVERY_COMPONENT_MARK = "§"


def marked(label: str, ours: pd.Series) -> str:
    """A row's label with the marks its trainings earn: CAPPED_MARK, EVERY_COMPONENT_MARK."""
    if ours.get("capped_trainings"):
        label = f"{label} {CAPPED_MARK}"
    if not pd.isna(ours.get("every_component_trainings", pd.NA)) and ours["every_component_trainings"]:
        label = f"{label} {EVERY_COMPONENT_MARK}"
    return label


# A row whose backbone trained from scratch, beside a paper figure whose implementation starts it from ImageNet.
SCRATCH_MARK = "‡"
SCRATCH_NOTE = (
    f"{SCRATCH_MARK}: backbone trained from scratch here, while the implementation the paper cites for it "
    "starts it from ImageNet weights by default (the paper does not say how it initialised it)"
)


def pretrained_backbone_of(runs: pd.DataFrame, network: str) -> bool | None:
    """Whether every training of the network started its backbone from ImageNet weights, as its summaries
    recorded (``pretrained_backbone``); None for summaries made before it was recorded."""
    if "pretrained_backbone" not in runs:
        return None
    values = [v for v in runs.loc[runs["network"] == network, "pretrained_backbone"] if not pd.isna(v)]
    if not values:
        return None
    return all(str(v).strip().lower() in ("true", "1", "1.0") for v in values)


def scratch_unlike_paper(network: str, pretrained: bool | None, paper_dice: float) -> bool:
    """A row to mark: its backbone trained from scratch, and the paper gives a figure for the network
    from an implementation that starts that backbone from ImageNet weights by default (paper.py)."""
    if network not in paper.BACKBONE_IMAGENET_BY_DEFAULT or pd.isna(paper_dice):
        return False
    if pretrained is None:
        log.warning("%s: its summaries do not say whether its backbone started from ImageNet weights", network)
        return False
    return not pretrained


def recipe_changes_of(runs: pd.DataFrame, network: str) -> str:
    """The network's changes to the study's recipe, from its summaries ('' for none, or for summaries
    made before they were recorded)."""
    if "recipe_changes" not in runs:
        return ""
    values = [v for v in runs.loc[runs["network"] == network, "recipe_changes"] if not pd.isna(v)]
    return str(values[0]) if values else ""  # an empty column reads back as NaN


COST_COLUMNS = ["gflops", "latency_ms"]


def with_cost(table: pd.DataFrame, cost_csv: str | Path | None) -> pd.DataFrame:
    """Add GFLOPs and CPU latency (tables/cost.csv) to a network table; networks without a cost row
    (the non-learned baseline) get none. The caption names the backend, threads and CPU."""
    if not cost_csv:
        return table
    cost = pd.read_csv(cost_csv)
    return table.merge(cost[["network", *COST_COLUMNS]], on="network", how="left")


def cost_caption(cost_csv: str | Path | None) -> str:
    if not cost_csv:
        return ""
    cost = pd.read_csv(cost_csv)
    if cost.empty:
        return ""
    row = cost.iloc[0]
    # The median of a few timed runs on a machine others may share: said, with where the spread is, so that a
    # difference of a few ms is not read as a ranking (a cost.csv from before the repeats column: "the").
    timed = f"{int(row['repeats'])} timed runs" if "repeats" in cost else "the timed runs"
    return (
        f"; latency: the median of {timed} (fastest and slowest in tables/cost.csv), batch 1, {row['backend']}, "
        f"{int(row['threads'])} threads, {row['cpu']}"
    )


def ladder_table(runs: pd.DataFrame, steps: list[str]) -> pd.DataFrame:
    summary = aggregate(runs, "step").set_index("step")
    rows = []
    for step in steps:
        ours = summary.loc[step]
        rows.append(
            {
                "step": step,
                "label": marked(step, ours),
                "seeds": int(ours["seeds"]),
                **{c: ours[c] for c in SUMMARY_COLUMNS},
                "paper_dice_mean": paper.LADDER.get(step, np.nan),
            }
        )
    return pd.DataFrame(rows)


MIN_SEEDS_FOR_STD = 5  # a cell gives a std over seeds from this many; below, each seed's value (Dice) or the mean


def seeds_cell(row, digits: int = 3) -> str:
    """Our Dice: mean ± std over 5 or more seeds; each seed's value with 2 to 4 (a std of so few is no
    summary); "(1 seed)" for a single run (never "± 0.000"); "(no training)" for a floor or a reference, which
    has neither a seed nor a training (a reviewer read "(1 seed)" there as one training among several)."""
    if pd.isna(row["dice_mean"]):
        return "-"
    if row.get("network") in catalog.untrained():
        return f"{row['dice_mean']:.{digits}f} (no training)"
    seeds = int(row["seeds"])
    values = str(row.get("dice_per_seed", "") or "")
    if seeds >= MIN_SEEDS_FOR_STD or not values or values == "nan":
        return (
            plus_minus(row["dice_mean"], row["dice_std"], digits)
            if seeds > 1
            else f"{row['dice_mean']:.{digits}f} (1 seed)"
        )
    if seeds == 1:
        return f"{row['dice_mean']:.{digits}f} (1 seed)"
    return f"{row['dice_mean']:.{digits}f} (seeds: {', '.join(f'{float(v):.{digits}f}' for v in values.split())})"


def ci_header(table: pd.DataFrame) -> str:
    """The CI column's name: what its bootstrap resamples (patients; then each fold's trainings where a row has
    several seeds: with one training per fold the interval carries no training-to-training variance, and says
    so)."""
    several = "seeds" in table.columns and (pd.to_numeric(table["seeds"], errors="coerce") > 1).any()
    return "Dice 95 % CI (patients, then trainings)" if several else "Dice 95 % CI (patients)"


def ci_cell(row, digits: int = 3) -> str:
    """The Dice CI of a summary row; "-" for a row without one (a summary made before CIs were)."""
    from sonoseg.analysis import stats

    if "dice_ci_low" not in row or "dice_ci_high" not in row:
        return "-"
    return stats.ci_text(float(row["dice_ci_low"]), float(row["dice_ci_high"]), digits)


def plus_minus(mean: float, std: float, digits: int) -> str:
    """A mean and its SD; the mean alone where the SD is unknown (one seed); '-' without a mean."""
    if pd.isna(mean):
        return "-"
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _with_count(text: str, count: int, total: int | None = None) -> str:
    if text == "-":
        return text
    return f"{text} ({count}/{total})" if total else f"{text} (n={count})"


def gflops_text(value: float) -> str:
    """GFLOPs as every table shows them: two decimals, but two significant digits under 0.1, where two
    decimals would print a 3-MFLOP network as 0.00 and one of 18 MFLOPs as 0.02."""
    if pd.isna(value):
        return "-"
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:#.2g}"


def our_columns(table: pd.DataFrame) -> dict[str, list[str]]:
    """Our HD95 columns and the no-lesion images' Dice, the same in the Markdown and LaTeX tables and on
    the report's pages: "HD95 px (ours)", the mean with the empty-prediction penalty; "HD95 px, both
    non-empty (ours)", over the images where prediction and ground truth both have a lesion, with (images
    counted / lesion images) over all seeds; "HD95 mm (ours)" where the images have a pixel spacing; and
    "No-lesion images: Dice (ours)" (mean Dice and count over all seeds) where the test set has images
    without a lesion. Mean ± std over seeds with 5 seeds or more, as the Dice column (OVER_SEEDS: a std of so
    few is no summary); the mean alone below."""
    rows = table.to_dict("records")

    def cell(row: dict, column: str, digits: int) -> str:
        spread = row[f"{column}_std"] if int(row["seeds"]) >= MIN_SEEDS_FOR_STD else np.nan
        return plus_minus(row[f"{column}_mean"], spread, digits)

    def shown(column: str) -> bool:
        return column in table.columns and table[column].notna().any()

    columns = {"HD95 px (ours)": [cell(row, "hd95", 2) for row in rows]}
    if shown("hd95_matched_mean"):
        columns["HD95 px, both non-empty (ours)"] = [
            _with_count(cell(row, "hd95_matched", 2), int(row["hd95_matched_images"]), int(row["lesion_images"]))
            for row in rows
        ]
    if shown("hd95_mm_mean"):
        columns["HD95 mm (ours)"] = [cell(row, "hd95_mm", 2) for row in rows]
    if "no_lesion_images" in table.columns and (table["no_lesion_images"].fillna(0) > 0).any():
        columns["No-lesion images: Dice (ours)"] = [
            _with_count(cell(row, "no_lesion_dice", 3), int(row["no_lesion_images"])) for row in rows
        ]
    return columns


# LaTeX's special characters as text, and ± as the math sign: every cell, header and caption passes through
# latex_escape, so a "95 %" or a network's name (lighter_unet_c1) cannot comment out or break the table.
LATEX_TEXT = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}


def latex_escape(text: str) -> str:
    """Plain text as LaTeX typesets it (LATEX_TEXT), one character at a time, so no replacement is escaped again."""
    return "".join(LATEX_TEXT.get(character, character) for character in str(text))


def to_markdown_and_latex(table: pd.DataFrame, first: str, caption: str, paper_of: str = "") -> tuple[str, str]:
    """Human tables: label, parameters (when present), ours (our_columns: HD95, no-lesion images) and the
    paper's (``paper_of``: the network the paper's figures are of, where one network's figures stand
    beside every row, as in the ladder)."""
    has_params = "parameters" in table.columns
    has_ci = "dice_ci_low" in table.columns and table["dice_ci_low"].notna().any()
    has_cost = all(c in table.columns for c in COST_COLUMNS)
    has_paper_hd = "paper_hd95_mean" in table.columns
    ours = our_columns(table)
    header = (
        [first]
        + (["Parameters"] if has_params else [])
        + (["GFLOPs", "CPU ms"] if has_cost else [])
        + ["Dice (ours)"]
        + ([ci_header(table)] if has_ci else [])
        + list(ours)
        + [f"Dice (paper, {paper_of})" if paper_of else "Dice (paper)"]
        + (["HD95 px (paper)"] if has_paper_hd else [])
    )
    lines = []
    for index, row in enumerate(table.to_dict("records")):
        cells = [str(row.get("label", row[table.columns[0]]))]
        if has_params:
            cells.append(f"{row['parameters']:,}")
        if has_cost:
            cells += [gflops_text(row["gflops"]), "-" if pd.isna(row["latency_ms"]) else f"{row['latency_ms']:.1f}"]
        cells.append(seeds_cell(row))
        if has_ci:
            cells.append(ci_cell(row))
        cells += [values[index] for values in ours.values()]
        cells.append(plus_minus(row["paper_dice_mean"], row.get("paper_dice_std", np.nan), 3))
        if has_paper_hd:
            cells.append(plus_minus(row["paper_hd95_mean"], row["paper_hd95_std"], 2))
        lines.append(cells)
    markdown = (
        "\n".join([f"**{caption}**", "", *markdown_header(header)] + [markdown_row(cells) for cells in lines]) + "\n"
    )
    tex_rows = [" & ".join(map(latex_escape, cells)) + r" \\" for cells in lines]
    latex = (
        "\n".join(
            [
                r"\begin{table}[t]",
                r"\centering",
                r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
                r"\hline",
                " & ".join(map(latex_escape, header)) + r" \\",
                r"\hline",
                *tex_rows,
                r"\hline",
                r"\end{tabular}",
                rf"\caption{{{latex_escape(caption)}}}",
                r"\end{table}",
            ]
        )
        + "\n"
    )
    return markdown, latex


def write_table(
    table: pd.DataFrame,
    out_csv: str | Path,
    caption: str,
    first: str = "Network",
    source: str = "",
    paper_of: str = "",
) -> None:
    """The table as CSV, Markdown and LaTeX; ``source`` (sonoseg.data.provenance.caption_line: the data's
    fingerprint, the version and commit) closes the Markdown and LaTeX captions; ``paper_of``: the network
    the paper's column is of (to_markdown_and_latex)."""
    out_csv = Path(out_csv)
    write_csv(table, out_csv)  # whole or not at all
    markdown, latex = to_markdown_and_latex(table, first, f"{caption} {source}".strip(), paper_of)
    write_text_atomic(out_csv.with_suffix(".md"), markdown)
    write_text_atomic(out_csv.with_suffix(".tex"), latex)


# How a cell gives its seeds (seeds_cell), as every caption says it.
OVER_SEEDS = (
    "the mean over seeds: ± std with 5 seeds or more, each seed's value (Dice; HD95 the mean alone) with 2 to 4, "
    "(1 seed) for one run: a count of seeds, not of images; (no training) for a floor or reference"
)
CAPTIONS = {
    "table1": f"Table 1. Test metrics by architecture ({OVER_SEEDS}",
    "table2": f"Table 2. U-net and its lightweight variants ({OVER_SEEDS}",
    "beyond": f"Beyond the paper: networks after 2021 and your own, same split and recipe ({OVER_SEEDS}",
}


def study_table(
    kind: str,
    summaries: list[str | Path],
    out_csv: str | Path,
    input_size: int = 0,
    interpolation: str = "",
    ladder_network: str = "unet",
    cost_csv: str | Path | None = None,
    per_image: pd.DataFrame | None = None,
    manifest_csv: str | Path | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Table 1, Table 2 or the ladder from per-run summaries, written as CSV, Markdown and LaTeX, with
    each row's Dice CI by patient from the collected per-image table (sonoseg.analysis.results) when given. The
    caption says at what scale the numbers were made: input size and epochs actually trained."""
    runs = pd.concat(
        [pd.read_csv(p, dtype={"network": str, "step": str, "fold": str}) for p in summaries], ignore_index=True
    )
    folds = runs["fold"].astype(str).loc[lambda f: f != "all"].nunique() if "fold" in runs else 0
    # Each training's own row (one per fold and seed): a pooled row gives its seed's longest fold only.
    trainings = runs[runs["fold"].astype(str) != "all"] if folds else runs
    runs = pooled(runs)
    scale = f"input {input_size}x{input_size} px ({interpolation})" if input_size else ""
    # The networks' input size is not the HD95's unit: predictions are resized back before they are scored
    # (sonoseg.analysis.evaluate), so a pixel of the HD95 columns is one of the original image.
    scale += f"{'; ' if scale else ''}HD95 in pixels at each image's original resolution"
    trained = _span(trainings, "epochs")
    if trained:
        steps = _span(trainings, "steps")
        if steps:
            trained += f" ({steps} optimizer steps)"
        # Whether the stop rule or the epoch cap ended a training is the dagger's to say (ended_by in the
        # histories); what holds of every run is which epoch's weights were kept (scoring.kept_row).
        scale += (
            f"; epochs trained per run: {trained}, the weights kept those of the epoch of lowest validation loss "
            "(their running average where the recipe averages them: train.weight_averaging_epochs)"
        )
    if folds > 1:
        scale += (
            f"{'; ' if scale else ''}{folds}-fold cross-validation by patient, every patient tested once: a seed's "
            "value pools its trainings' predictions over the folds, so the std over seeds compares the same images"
        )
    scale = f"; {scale}" if scale else ""
    scale += test_set_note(per_image, list(runs["run"]) if "run" in runs else [])
    # The caption's trainings are this table's (a run of the long table that is not in it is not named there).
    shown = per_image
    if per_image is not None and "run" in runs and "run" in per_image:
        shown = per_image[per_image["run"].isin(runs["run"])]
    source = source_line(manifest_csv, shown)
    if kind == "ladder":
        table = ladder_table(runs, list(runs["step"].drop_duplicates()))
        table = with_confidence(table, "step", runs, per_image, seed)
        caption = (
            f"Section 4.2 tuning ladder ({ladder_network}, cumulative steps; test set{scale}; "
            f"{ladder_note(ladder_network)}{unchanged_steps_note(runs, per_image)}{capped_note(table)})"
        )
        write_table(table, out_csv, caption, "Step", source, paper_of=catalog.label(paper.LADDER_NETWORK))
        return table
    if kind not in CAPTIONS:
        raise SonosegError(f"unknown table {kind!r}; one of {sorted(CAPTIONS)} or ladder")
    reference = catalog.paper_table(kind)
    networks = list(runs["network"].drop_duplicates())
    table = with_cost(network_table(runs, reference, networks), cost_csv)
    table = with_confidence(table, "network", runs, per_image, seed)
    changed = (
        "; in [ ]: a row's changes to the study's recipe" if any(recipe_changes_of(runs, n) for n in networks) else ""
    )
    changed += capped_note(table)
    if table["scratch_unlike_paper"].any():
        changed += f"; {SCRATCH_NOTE}"
    write_table(table, out_csv, f"{CAPTIONS[kind]}{scale}{cost_caption(cost_csv)}{changed})", source=source)
    return table


def test_set_note(per_image: pd.DataFrame | None, runs: list[str]) -> str:
    """The caption's word on what the numbers are means over: the test images of the table's runs (in-domain),
    with a lesion and without, and their patients ("n = 1" in a cell was read as a sample size)."""
    if per_image is None or not runs:
        return ""
    rows = per_image[per_image["run"].isin(runs)]
    if "dataset" in rows:
        rows = rows[rows["dataset"].fillna(IN_DOMAIN).isin([IN_DOMAIN, ""])]
    if rows.empty:
        return ""
    lesion = ~empty_side(rows, "truth")
    note = (
        f"; test set: {rows.loc[lesion, 'sample_id'].nunique()} images with a lesion"
        f" of {rows.loc[lesion, 'patient'].nunique()} patient groups"
    )
    without = rows.loc[~lesion, "sample_id"].nunique()
    return note + (f" (and {without} without, counted apart)" if without else "")


def capped_note(table: pd.DataFrame) -> str:
    """The caption's word on the dagger and the section sign, where a row carries them."""
    note = ""
    if table["capped_trainings"].fillna(0).astype(int).any():
        note += (
            f"; {CAPPED_MARK}: trainings ended at the epoch cap, not by the stop rule "
            "(capped_trainings of trainings in the CSV)"
        )
    if "every_component_trainings" in table:
        counts = pd.to_numeric(table["every_component_trainings"], errors="coerce")
        if counts.fillna(0).astype(int).any():
            note += (
                f"; {EVERY_COMPONENT_MARK}: test masks kept every connected component, not the paper's one lesion, as "
                "predict.postprocess said (none, or the choice made on validation; every_component_trainings of "
                "trainings in the CSV)"
            )
        if counts.isna().any():
            note += (
                "; every_component_trainings empty: predictions made before sonoseg recorded the post-processing "
                "(the runs' fold<k>/postprocess.json say which)"
            )
    return note


def unchanged_steps_note(runs: pd.DataFrame, per_image: pd.DataFrame | None) -> str:
    """The ladder caption's word on a step whose change did nothing: its predictions scored exactly as the step
    before (e.g. lr_plateau, where validation never stalled long enough within the budget to halve the rate), so
    its +0.000 is no measured effect of the change."""
    if per_image is None:
        return ""
    run_of_step = runs.drop_duplicates("step").set_index("step")["run"]
    steps = list(run_of_step.index)
    scored = per_image.sort_values(["fold", "seed", "sample_id"]) if "fold" in per_image else per_image
    same = []
    for before, step in zip(steps, steps[1:], strict=False):
        first, second = (scored.loc[scored["run"] == run_of_step[s], "dice"].to_numpy() for s in (before, step))
        if len(first) and len(first) == len(second) and np.array_equal(first, second, equal_nan=True):
            same.append(f"{step} scored exactly as {before}")
    if not same:
        return ""
    return f"; {', '.join(same)} on every test image: its change had no effect within the epoch budget"


def ladder_note(ladder_network: str) -> str:
    """The ladder caption's word on its paper column: whose figures they are (the paper's ladder is on
    U-net, paper.LADDER_NETWORK) and, when the study's ladder runs on another network, that it does."""
    paper_network = catalog.label(paper.LADDER_NETWORK)
    note = f"the paper's column: its ladder, on {paper_network} (its Section 4.2)"
    if ladder_network != paper.LADDER_NETWORK:
        note += f"; ours runs on {catalog.label(ladder_network)} ({ladder_network}), not on {paper_network}"
    return note


# ----------------------------------------------------------------------------- evidence


def with_confidence(
    table: pd.DataFrame, key: str, summaries: pd.DataFrame, per_image: pd.DataFrame | None, seed: int = 0
) -> pd.DataFrame:
    """Add each row's Dice 95 % CI by patient, then training (sonoseg.analysis.stats.method_table;
    docs/statistics.md), from the collected per-image table; the summaries name each row's run."""
    if per_image is None:
        return table
    from sonoseg.analysis import stats

    run_of_row = summaries.drop_duplicates(key).set_index(key)["run"]
    runs = [run_of_row[name] for name in table[key]]
    bounds = stats.method_table(patient_table(per_image, runs), methods=runs, seed=seed)
    return table.assign(dice_ci_low=bounds["ci_low"].to_numpy(), dice_ci_high=bounds["ci_high"].to_numpy())
