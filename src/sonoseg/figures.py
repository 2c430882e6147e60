"""The study's HTML report pieces: small PNG figures (matplotlib, headless Agg backend, DejaVu fonts
shipped with matplotlib) and self-contained HTML tables, one per report() item of the workflow.

Results come from the collected long table (sonoseg.results: per_image.csv.gz), where a compared
method is a run of the run sheet: a network or a method without training (which has predictions and
metrics but no history). Predictions and histories are found through sonoseg.layout.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on a cluster node or in CI
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sonoseg import catalog, layout, paper, stats  # noqa: E402
from sonoseg.data import MANIFEST_COLUMNS  # noqa: E402
from sonoseg.errors import SonosegError  # noqa: E402
from sonoseg.imageio import read_image, read_mask  # noqa: E402
from sonoseg.results import as_compared, lesion_images, patient_table, trainings_of  # noqa: E402
from sonoseg.scoring import kept_epoch  # noqa: E402
from sonoseg.tables import ci_cell, seeds_cell  # noqa: E402

plt.rcParams.update(
    {"font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8, "figure.dpi": 100, "savefig.dpi": 100}
)

# Manifest columns that describe files and flags, not the lesion or the patient: never broken down.
MANIFEST_FILE_COLUMNS = set(MANIFEST_COLUMNS) - {"view", "class"}  # view and class are categories to show
MAX_CATEGORIES = 20  # a column with more distinct values is an identifier or a measurement, not a category
THUMBNAIL_WIDTH = 160  # pixels per panel in image grids: keeps the paper-scale report small
OUTLINE_COLORS = {"truth": "#00e676", "prediction": "#ff1744"}


# ----------------------------------------------------------------------------- inputs


def reference_method(methods: list[str], preferred: str = "unet") -> tuple[str, str]:
    """The method others are compared with: U-net as in the paper, else the first one; and a note saying which."""
    if preferred in methods:
        return preferred, f"Reference: {preferred} (the paper's baseline)."
    if not methods:
        raise SonosegError("no methods to compare")
    return methods[0], f"Reference: {methods[0]} — the study has no {preferred}, so the first network listed is used."


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


# ----------------------------------------------------------------------------- HTML


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: "DejaVu Sans", Arial, sans-serif; font-size: 14px; margin: 1em; color: #222; background: #fff; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em 0; }}
th, td {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
th {{ background: #eef; }} td:first-child, th:first-child {{ text-align: left; }}
caption {{ caption-side: top; text-align: left; font-weight: bold; padding-bottom: 4px; }}
p.note {{ color: #555; max-width: 60em; }}
</style></head><body>
<h2>{title}</h2>
{body}
</body></html>
"""


def html_table(frame: pd.DataFrame, caption: str = "") -> str:
    """A plain, escaped HTML table (no index); numbers already formatted by the caller."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    caption_html = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{caption_html}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def write_page(out: str | Path, title: str, parts: list[str]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(PAGE.format(title=html.escape(title), body="\n".join(parts)))


def _fmt(value: float, digits: int) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _pm(mean: float, std: float, digits: int) -> str:
    return "-" if pd.isna(mean) else f"{mean:.{digits}f} ± {0.0 if pd.isna(std) else std:.{digits}f}"


def _signed(value: float, digits: int) -> str:
    return "-" if pd.isna(value) else f"{value:+.{digits}f}"


def _save(fig: plt.Figure, out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------- 1 data


def data_overview(manifest_csv: str | Path, split_csv: str | Path, out_html: str | Path) -> None:
    """Manifest counts (included, excluded by reason, ignored), split sizes, metadata columns per split."""
    manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    split = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    status = manifest["status"].value_counts().rename_axis("status").reset_index(name="files")
    excluded = manifest[manifest["status"] == "excluded"]
    reasons = excluded["reason"].value_counts().rename_axis("reason").reset_index(name="excluded")
    from sonoseg import provenance

    origin = provenance.read_manifest_provenance(manifest_csv)
    parts = [
        note(
            f"Dataset fingerprint {origin['dataset_fingerprint']} (every file under the dataset root by content, "
            f"or the phantom's settings; docs/method.md); manifest made by sonoseg {origin['sonoseg_version']} "
            f"at commit {origin['commit']}."
        ),
        html_table(status, "Files under the dataset root, by status"),
        html_table(reasons, "Excluded, by reason") if len(reasons) else note("No file was excluded."),
    ]
    samples = manifest[manifest["status"] == "included"].merge(split[["sample_id", "split"]], on="sample_id")
    sizes = samples.groupby("split").agg(
        patients=("patient", "nunique"), groups=("group", "nunique"), images=("sample_id", "size")
    )
    sizes = sizes.reindex([s for s in ("train", "val", "test") if s in sizes.index]).reset_index()
    parts.append(html_table(sizes, "Split sizes (patient level: a patient's views never cross splits)"))
    for column in categorical_columns(samples.drop(columns="split")):
        counts = pd.crosstab(samples[column].replace("", "(none)"), samples["split"], margins=True, margins_name="all")
        counts = counts[[s for s in ("train", "val", "test") if s in counts.columns] + ["all"]].reset_index()
        parts.append(html_table(counts, f"Images per {column} and split"))
    write_page(out_html, "Data: manifest and split", parts)


def _thumbnail(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """Every n-th pixel so the panel is at most THUMBNAIL_WIDTH wide (outlines are drawn on the same grid)."""
    step = max(1, int(np.ceil(pixels.shape[1] / THUMBNAIL_WIDTH)))
    return pixels[::step, ::step], step


def _outline(ax: plt.Axes, mask: np.ndarray, step: int, color: str, width: float = 1.0) -> None:
    small = mask[::step, ::step].astype(float)
    if small.any() and not small.all():
        ax.contour(small, levels=[0.5], colors=[color], linewidths=width)


def _panel(ax: plt.Axes, image: np.ndarray, title: str = "") -> int:
    small, step = _thumbnail(image)
    ax.imshow(small, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)
    return step


def sample_grid(
    manifest_csv: str | Path, split_csv: str | Path, out_png: str | Path, count: int = 8, seed: int = 0
) -> None:
    """A few included images of every split (chosen reproducibly) with the lesion mask outlined."""
    manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    split = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    samples = manifest[manifest["status"] == "included"].merge(split[["sample_id", "split"]], on="sample_id")
    if samples.empty:
        raise SonosegError(f"{manifest_csv}: no included sample to show")
    rng = np.random.default_rng(seed)
    chosen = samples.iloc[np.sort(rng.choice(len(samples), size=min(count, len(samples)), replace=False))]
    columns = 4
    rows = int(np.ceil(len(chosen) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, chosen.itertuples()):
        ax.axis("on")
        step = _panel(ax, read_image(sample.image).pixels, f"{sample.sample_id} ({sample.split})")
        _outline(ax, read_mask(sample.mask).pixels, step, OUTLINE_COLORS["truth"])
    fig.suptitle("Sample images, lesion mask outlined", fontsize=9)
    _save(fig, out_png)


def marks_examples(manifest_csv: str | Path, out_png: str | Path, count: int = 4) -> pd.DataFrame:
    """The included images with the most coloured-mark pixels (marks.find_marks), each shown as it is,
    with its marks in red, and inpainted (marks.inpaint_marks, what preprocess.marks: inpaint feeds the
    networks); the title counts the images with marks. Returns every included image's mark-pixel count
    (sample_id, mark_pixels), the most marked first."""
    from sonoseg import marks

    manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    samples = manifest[manifest["status"] == "included"]
    if samples.empty:
        raise SonosegError(f"{manifest_csv}: no included sample to show")
    counts = pd.DataFrame(
        {
            "sample_id": samples["sample_id"].to_numpy(),
            "image": samples["image"].to_numpy(),
            "mark_pixels": [int(marks.find_marks(read_image(path).pixels).sum()) for path in samples["image"]],
        }
    ).sort_values(["mark_pixels", "sample_id"], ascending=[False, True], kind="stable")
    shown = counts[counts["mark_pixels"] > 0].head(count)
    marked = int((counts["mark_pixels"] > 0).sum())
    title = f"Coloured marks: {marked} of {len(counts)} included images carry them"
    if shown.empty:
        fig, ax = plt.subplots(figsize=(5.0, 1.0))
        ax.axis("off")
        ax.text(0.5, 0.5, title + "; nothing to inpaint", ha="center", va="center", fontsize=9)
        _save(fig, out_png)
        return counts[["sample_id", "mark_pixels"]].reset_index(drop=True)
    fig, axes = plt.subplots(len(shown), 3, figsize=(9.0, 2.2 * len(shown)), squeeze=False)
    for row, sample in zip(axes, shown.itertuples()):
        image = read_image(sample.image).pixels
        found = marks.find_marks(image)
        highlighted = image.copy()
        highlighted[found] = (255, 0, 0)
        for ax, pixels, label in (
            (row[0], image, f"{sample.sample_id}: as stored"),
            (row[1], highlighted, f"{sample.mark_pixels:,} mark pixels (red)"),
            (row[2], marks.inpaint_marks(image)[0], "inpainted"),
        ):
            ax.imshow(pixels, interpolation="antialiased")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(label, fontsize=7)
    fig.suptitle(title + f"; the {len(shown)} with the most", fontsize=9)
    _save(fig, out_png)
    return counts[["sample_id", "mark_pixels"]].reset_index(drop=True)


# ----------------------------------------------------------------------------- 2 tables


def study_table_html(table_csv: str | Path, kind: str, out_html: str | Path) -> None:
    """Table 1, Table 2, the ladder or the recipe selection's choices, ours beside the paper's with the difference."""
    table = pd.read_csv(table_csv)
    if kind in ("table1", "table2", "beyond"):
        title = {
            "table1": "Table 1: architectures",
            "table2": "Table 2: U-net and its lightweight variants",
            "beyond": "Beyond the paper: networks after 2021 and your own",
        }[kind]
        shown = pd.DataFrame(
            {
                "Network": table["label"],
                "Parameters": table["parameters"].map(lambda p: f"{int(p):,}"),
                "Seeds": table["seeds"],
                # One seed: "n = 1"; 2-4 seeds: each seed's value; 5 or more: ± std (tables.seeds_cell).
                "Dice (ours)": [seeds_cell(row) for _, row in table.iterrows()],
                "Dice 95 % CI (patients, seeds)": [ci_cell(row) for _, row in table.iterrows()],
                "Dice (paper)": [_pm(m, s, 3) for m, s in zip(table["paper_dice_mean"], table["paper_dice_std"])],
                "Dice ours − paper": [_signed(d, 3) for d in table["dice_mean"] - table["paper_dice_mean"]],
                "HD95 px (ours)": [_pm(m, s, 2) for m, s in zip(table["hd95_mean"], table["hd95_std"])],
                "HD95 px (paper)": [_pm(m, s, 2) for m, s in zip(table["paper_hd95_mean"], table["paper_hd95_std"])],
                "HD95 ours − paper": [_signed(d, 2) for d in table["hd95_mean"] - table["paper_hd95_mean"]],
                "HD95 penalised images": table["hd95_penalized"],
            }
        )
        # The columns the Markdown table shows when the study has them (report.to_markdown_and_latex).
        if "hd95_matched_mean" in table and table["hd95_matched_mean"].notna().any():
            shown.insert(
                shown.columns.get_loc("HD95 penalised images"),
                "HD95 px, both non-empty (ours)",
                [_pm(m, s, 2) for m, s in zip(table["hd95_matched_mean"], table["hd95_matched_std"])],
            )
        if "no_lesion_images" in table and (table["no_lesion_images"].fillna(0) > 0).any():
            shown["No-lesion images: Dice (ours)"] = [
                _pm(m, s, 3) for m, s in zip(table["no_lesion_dice_mean"], table["no_lesion_dice_std"])
            ]
        if "gflops" in table and "latency_ms" in table:
            shown.insert(2, "GFLOPs", [_fmt(v, 2) for v in table["gflops"]])
            shown.insert(3, "CPU ms", [_fmt(v, 1) for v in table["latency_ms"]])
        notes = [
            note(
                "Mean ± sample standard deviation over seeds of the per-seed mean over the test images that "
                "have a lesion. HD95 penalised: lesion images with an empty prediction, scored Dice 0 and "
                "HD95 = image diagonal; 'both non-empty' averages HD95 over the images where neither mask is empty."
            )
        ]
    elif kind == "ladder":
        title = "Section 4.2 tuning ladder (cumulative steps)"
        shown = pd.DataFrame(
            {
                "Step": table["step"],
                "Seeds": table["seeds"],
                # One seed: "n = 1"; 2-4 seeds: each seed's value; 5 or more: ± std (tables.seeds_cell).
                "Dice (ours)": [seeds_cell(row) for _, row in table.iterrows()],
                "Dice 95 % CI (patients, seeds)": [ci_cell(row) for _, row in table.iterrows()],
                "Dice (paper)": [_fmt(v, 3) for v in table["paper_dice_mean"]],
                "Dice ours − paper": [_signed(d, 3) for d in table["dice_mean"] - table["paper_dice_mean"]],
                "HD95 px (ours)": [_pm(m, s, 2) for m, s in zip(table["hd95_mean"], table["hd95_std"])],
            }
        )
        notes = [note("Each step adds one change to the previous one; the paper's Dice is U-net's.")]
    elif kind == "selection":
        title = "Learning rate and weight decay chosen per network and fold (lowest validation loss)"
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
                "Best val loss": [_fmt(v, 4) for v in table["best_val_loss"]],
                "Val Dice at best": [_fmt(v, 3) for v in table["val_dice_at_best"]],
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
    else:
        raise SonosegError(f"table kind {kind!r}: expected table1, table2, beyond, ladder or selection")
    write_page(out_html, _caption_of(table_csv) or title, [html_table(shown), *notes])


def _caption_of(table_csv: str | Path) -> str:
    """The caption the table stage wrote first in its Markdown twin (it names the input size, the
    epochs and the ladder's network), when there is one."""
    markdown = Path(table_csv).with_suffix(".md")
    first = markdown.read_text().splitlines()[0].strip() if markdown.is_file() else ""
    return first.strip("*").strip() if first.startswith("**") else ""


# ----------------------------------------------------------------------------- 3 curves


def training_curves(out: str | Path, row: dict, out_png: str | Path) -> None:
    """One run's (a run sheet row's) train/validation loss and validation Dice per epoch, one colour per
    training (fold and seed), the kept epoch marked; its histories found in the study folder ``out``."""
    method = row["name"]
    trainings = trainings_of(row)
    if not row.get("recipe") or not trainings:
        raise SonosegError(f"training curves: run {method!r} has no training")
    several_folds = len({fold for fold, _ in trainings}) > 1
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(7.5, 2.6))
    for index, (fold, seed) in enumerate(trainings):
        path = layout.training_file(out, method, fold, seed, layout.HISTORY)
        if not Path(path).is_file():
            raise SonosegError(f"{path}: training history missing")
        history = pd.read_csv(path)
        seed = f"{fold}/{seed}" if several_folds else seed
        color = f"C{index % 10}"
        best = kept_epoch(history)
        best_row = history[history["epoch"] == best].iloc[0]
        loss_ax.plot(history["epoch"], history["train_loss"], color=color, lw=1, label=f"seed {seed} train")
        loss_ax.plot(
            history["epoch"], history["val_loss"], color=color, lw=1, ls="--", marker=".", label=f"seed {seed} val"
        )
        loss_ax.plot([best], [best_row["val_loss"]], marker="*", ms=10, color=color, ls="none")
        dice_ax.plot(history["epoch"], history["val_dice"], color=color, lw=1, marker=".", label=f"seed {seed}")
        dice_ax.plot([best], [best_row["val_dice"]], marker="*", ms=10, color=color, ls="none")
        dice_ax.axvline(best, color=color, lw=0.6, ls=":")
    loss_ax.set(xlabel="epoch", ylabel="loss", title=f"{method}: loss (★ kept epoch)")
    dice_ax.set(xlabel="epoch", ylabel="validation Dice", title=f"{method}: validation Dice (★ kept epoch)")
    loss_ax.legend(fontsize=6, ncol=2)
    dice_ax.legend(fontsize=6)
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
    _save(fig, out_png)


# ----------------------------------------------------------------------------- 4 figure 2


def figure2_choice(dice_by_image: pd.Series, seed: int) -> list[tuple[str, str]]:
    """The paper's Figure 2 images: best, median and worst by the reference network's Dice, plus one
    random other image. Ties are broken by sample id, the random pick by the seed: reproducible."""
    if dice_by_image.empty:
        raise SonosegError("figure 2: no per-image Dice")
    ordered = (
        dice_by_image.rename("dice")
        .rename_axis("sample_id")
        .reset_index()
        .sort_values(["dice", "sample_id"], ascending=[False, True], kind="mergesort")["sample_id"]
        .tolist()
    )
    picks = [("best", ordered[0]), ("median", ordered[(len(ordered) - 1) // 2]), ("worst", ordered[-1])]
    chosen, unique = set(), []
    for role, sample in picks:
        if sample not in chosen:
            chosen.add(sample)
            unique.append((role, sample))
    others = [s for s in sorted(ordered) if s not in chosen]
    if others:
        unique.append(("random", others[int(np.random.default_rng(seed).integers(len(others)))]))
    return unique


def _untrained_kind(method: str) -> str:
    """ "floor" or "reference" for a method without training (catalog family); "floor" when unknown."""
    from sonoseg import catalog

    return catalog.entry(method).family if method in catalog.references() else "floor"


def figure2_methods(per_image: pd.DataFrame, reference: str) -> list[str]:
    """What the paper's Figure 2 shows, at a size where a boundary can be judged: the reference
    (U-net), the best lightweight U-net, the best network of every other family, then the floors.
    "Best" is the highest mean test Dice over the images with a lesion; unknown methods are "user"."""
    from sonoseg import catalog

    mean = lesion_images(per_image).groupby("method", sort=False)["dice"].mean()
    family = {m: catalog.entry(m).family if m in catalog.CATALOG else "user" for m in mean.index}
    chosen = [reference] if reference in mean.index else []
    for kind in dict.fromkeys(family[m] for m in mean.index):
        if kind in catalog.UNTRAINED_FAMILIES:
            continue
        candidates = mean[[m for m in mean.index if family[m] == kind and m not in chosen]]
        if len(candidates):
            chosen.append(candidates.idxmax())
    return chosen + [m for m in mean.index if family[m] in catalog.UNTRAINED_FAMILIES]


def figure2(
    manifest_csv: str | Path,
    per_image: pd.DataFrame,
    out: str | Path,
    out_png: str | Path,
    seed: int = 0,
    every_method: bool = False,
) -> str:
    """One row per chosen image: the image (calipers and all), the ground truth, then the methods'
    post-processed masks (red) over the ground truth (green): those figure2_methods picks, large
    enough to judge a boundary, or with ``every_method`` all of them (the full grid). Returns the
    note naming the reference."""
    per_image = as_compared(per_image)
    methods = list(dict.fromkeys(per_image["method"]))
    reference, reference_note = reference_method(methods)
    shown = methods if every_method else figure2_methods(per_image, reference)
    reference_dice = per_image[per_image["method"] == reference].groupby("sample_id")["dice"].mean()
    choice = figure2_choice(reference_dice, seed)
    manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False).set_index("sample_id")
    # The first seed of each method; with cross-validation its folds' folders together hold every image.
    first_seed = per_image.groupby("method", sort=False)["seed"].first()
    directories = {
        method: [
            Path(layout.training_file(out, method, fold, first_seed[method], layout.PREDICTIONS))
            for fold in per_image.loc[per_image["method"] == method, "fold"].unique()
        ]
        for method in shown
    }
    dice = per_image.set_index(["method", "seed", "sample_id"])["dice"]
    columns = 2 + len(directories)
    panel = 1.35 if every_method else 2.4  # inches per panel: the default figure is for judging boundaries
    fig, axes = plt.subplots(
        len(choice), columns, figsize=(panel * columns, panel * 0.8 * len(choice) + 0.4), squeeze=False
    )
    for row, (role, sample) in enumerate(choice):
        image = read_image(manifest.loc[sample, "image"]).pixels
        truth = read_mask(manifest.loc[sample, "mask"]).pixels
        _panel(axes[row, 0], image, "image" if row == 0 else "")
        axes[row, 0].set_ylabel(f"{role}\n{sample}", fontsize=6)
        step = _panel(axes[row, 1], image, "ground truth" if row == 0 else "")
        _outline(axes[row, 1], truth, step, OUTLINE_COLORS["truth"])
        for column, (method, folders) in enumerate(directories.items(), start=2):
            step = _panel(axes[row, column], image)
            _outline(axes[row, column], truth, step, OUTLINE_COLORS["truth"], 0.6)
            found = [folder / f"{sample}.png" for folder in folders if (folder / f"{sample}.png").is_file()]
            if found:
                _outline(axes[row, column], read_mask(found[0]).pixels, step, OUTLINE_COLORS["prediction"])
            value = dice.get((method, first_seed[method], sample), np.nan)
            label = f"{method}\n" if row == 0 else ""
            axes[row, column].set_title(f"{label}Dice {_fmt(value, 3)}", fontsize=5)
    fig.suptitle(f"Figure 2 rebuilt: green = ground truth, red = prediction. {reference_note}", fontsize=7)
    _save(fig, out_png)
    return reference_note


# ----------------------------------------------------------------------------- 5 cost


def _parameter_count(method: str, cost: pd.DataFrame | None, counts: dict[str, float]) -> float:
    """From the cost table, else from the runs' summaries (counted at training); a floor has none to plot."""
    if cost is not None and method in set(cost["network"]):
        return float(cost.set_index("network").loc[method, "parameters"])
    count = counts.get(method, np.nan)
    return count if count else np.nan


def seed_summary(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per method: Dice mean ± std over seeds of the per-seed mean over the images with a lesion."""
    per_image = lesion_images(per_image)
    per_seed = per_image.groupby(["method", "seed"], sort=False)["dice"].mean().reset_index()
    return (
        per_seed.groupby("method", sort=False)["dice"]
        .agg(dice_mean="mean", dice_std="std", seeds="size")
        .fillna({"dice_std": 0.0})
        .reset_index()
    )


def cost_accuracy(
    per_image: pd.DataFrame,
    out_png: str | Path,
    cost_csv: str | Path | None = None,
    summaries: list[str | Path] = (),
    by_patient: bool = True,
    seed: int = 0,
    front_csv: str | Path | None = None,
    front_html: str | Path | None = None,
) -> None:
    """The accuracy-cost front: Dice against parameters (and GFLOPs and CPU latency when a cost table
    exists), one labelled point per network with its 95 % CI by patient, then seed (with the manifest;
    else ± std over seeds), the front of the networks no other beats at a lower cost drawn as a step
    line, the floors (methods without a cost) as horizontal lines, the paper's Dice as hollow markers.
    Parameter counts come from the cost table or the runs' summaries (networks/<run>.csv).
    By patient, front_csv / front_html get front_statistics over the parameter front."""
    patients = patient_table(per_image) if by_patient else None
    per_image = as_compared(per_image)
    summary = seed_summary(per_image)
    summary["low"], summary["high"] = (
        summary["dice_mean"] - summary["dice_std"],
        summary["dice_mean"] + summary["dice_std"],
    )
    interval = "mean ± std over seeds"
    if patients is not None:
        bounds = stats.method_table(patients, methods=list(summary["method"]), seed=seed, resamples=2000)
        summary["low"], summary["high"] = bounds["ci_low"].to_numpy(), bounds["ci_high"].to_numpy()
        interval = "95 % CI by patient, then seed"
    cost = pd.read_csv(cost_csv) if cost_csv else None
    counts = {}
    for path in summaries:
        frame = pd.read_csv(path)
        if "parameters" in frame and "network" in frame:
            counts[str(frame["network"].iloc[0])] = float(frame["parameters"].iloc[0])
    summary["parameters"] = [_parameter_count(m, cost, counts) for m in summary["method"]]
    if front_csv or front_html:
        if patients is None:
            raise SonosegError("report: the front's statistics are by patient (by_patient)")
        front = front_statistics(patients, summary, "parameters", seed=seed)
        if front_csv:
            front.to_csv(front_csv, index=False)
        if front_html:
            _front_page(front, front_html)
    axes_spec = [("parameters", "parameters (millions)", 1e-6)]
    if cost is not None:
        summary = summary.merge(
            cost[["network", "gflops", "latency_ms"]], left_on="method", right_on="network", how="left"
        )
        axes_spec += [("gflops", "GFLOPs per image", 1.0), ("latency_ms", f"CPU latency (ms, {_cpu_label(cost)})", 1.0)]
    reference = {**paper.TABLE1, **paper.TABLE2}
    # Points carry numbers, and a key gives each number the catalog's name: names written beside the
    # points overlapped into an unreadable cluster where the U-nets sit.
    key = {method: number for number, method in enumerate(summary["method"], start=1)}
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(4.2 * len(axes_spec), 3.4), squeeze=False)
    for ax, (column, label, scale) in zip(axes[0], axes_spec):
        front = pareto_front(summary, column)
        if len(front) > 1:
            ax.step(front[column] * scale, front["dice_mean"], where="post", color="0.5", lw=1, zorder=0, label="front")
        for index, row in enumerate(summary.itertuples()):
            color = f"C{index % 10}"
            x = getattr(row, column)
            if pd.isna(x):  # a method without this cost (a floor or a reference): a horizontal line
                ax.axhline(
                    row.dice_mean, color=color, lw=0.8, ls="--", label=f"{_untrained_kind(row.method)}: {row.method}"
                )
                continue
            error = [[row.dice_mean - row.low], [row.high - row.dice_mean]]
            ax.errorbar(x * scale, row.dice_mean, yerr=error, fmt="o", color=color, ms=4, capsize=2)
            ax.annotate(
                str(key[row.method]),
                (x * scale, row.dice_mean),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
                gid=row.method,  # the number's method, for whoever reads the figure's objects
            )
            if column == "parameters" and row.method in reference and not pd.isna(reference[row.method][1]):
                paper_x = catalog.entry(row.method).printed_parameters or x
                ax.errorbar(
                    paper_x * scale,
                    reference[row.method][1],
                    yerr=reference[row.method][2],
                    fmt="o",
                    mfc="none",
                    color=color,
                    ms=5,
                    capsize=2,
                )
        ax.set(xlabel=label, ylabel=f"test Dice ({interval})")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_title("filled: ours, hollow: paper", fontsize=7)
    handles = [
        matplotlib.lines.Line2D(
            [],
            [],
            color=f"C{index % 10}",
            marker="o" if not pd.isna(row.parameters) else None,
            ls="" if not pd.isna(row.parameters) else "--",
            label=f"{key[row.method]}  {display_name(row.method)}"
            + ("" if not pd.isna(row.parameters) else f" ({_untrained_kind(row.method)})"),
        )
        for index, row in enumerate(summary.itertuples())
    ]
    if any(line.get_label() == "front" for line in axes[0, 0].get_lines()):
        handles.append(matplotlib.lines.Line2D([], [], color="0.5", lw=1, label="the front"))
    fig.tight_layout()  # the panels first, then the key just right of them
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=6, frameon=False)
    _save(fig, out_png)


def display_name(method: str) -> str:
    """A method's name as a person reads it: the catalog's label without its parenthesised notes
    ("Lighter U-net @128", "Threshold baseline"); the identifier for a method the catalog lacks."""
    from sonoseg import catalog

    return catalog.label(method).split(" (")[0] if method in catalog.CATALOG else method


def pareto_front(summary: pd.DataFrame, column: str) -> pd.DataFrame:
    """The networks no other beats at a lower or equal cost in ``column``: cheapest first, each with a
    higher mean Dice than every cheaper one."""
    costed = summary[summary[column].notna()].sort_values([column, "dice_mean"], ascending=[True, False])
    best, rows = -np.inf, []
    for index, row in costed.iterrows():
        if row["dice_mean"] > best:
            best = row["dice_mean"]
            rows.append(index)
    return costed.loc[rows]


def front_neighbours(summary: pd.DataFrame, column: str) -> list[tuple[str, str, bool]]:
    """(network, the front network it is compared with, whether it is on the front) for every network
    with a cost in ``column``. A network on the front is compared with the front's next cheaper point:
    does its extra cost buy accuracy? A network off the front is compared with the cheapest front
    network that costs no more and scores at least as well: is it beaten at a lower cost? The
    cheapest front network has nothing cheaper to be compared with."""
    front = pareto_front(summary, column)
    on_front = list(front["method"])
    pairs = []
    for row in summary[summary[column].notna()].itertuples():
        cost = getattr(row, column)
        if row.method in on_front:
            position = on_front.index(row.method)
            if position:
                pairs.append((row.method, on_front[position - 1], True))
        else:
            beating = front[(front[column] <= cost) & (front["dice_mean"] >= row.dice_mean)]
            pairs.append((row.method, beating["method"].iloc[0], False))
    return pairs


def front_statistics(
    per_image: pd.DataFrame, summary: pd.DataFrame, column: str, seed: int = 0, resamples: int = 10_000
) -> pd.DataFrame:
    """The accuracy-cost front under the statistics of the tables: each pair of front_neighbours
    compared by stats.hierarchical_comparison (patients, then runs), Holm's correction over all of
    them (one family). per_image carries the patient groups (tables.patient_table)."""
    pairs = front_neighbours(summary, column)
    if not pairs:
        columns = list(stats.COMPARISON_COLUMNS)
        return pd.DataFrame(columns=columns[:2] + ["on_front", column, f"reference_{column}"] + columns[2:])
    costs = summary.set_index("method")[column]
    flips = stats.permutations_for(len(pairs))  # the whole family's size, not one call's
    rows = stats.as_family(
        [
            stats.compare_methods(
                per_image, reference, "", methods=[method], seed=seed, resamples=resamples, permutations=flips
            )
            for method, reference, _ in pairs
        ],
        f"every network vs its neighbour on the {column} front",
    )
    rows.insert(2, "on_front", [on for _, _, on in pairs])
    rows.insert(3, column, [costs[method] for method, _, _ in pairs])
    rows.insert(4, f"reference_{column}", [costs[reference] for _, reference, _ in pairs])
    return rows


def _difference_columns(comparison: pd.DataFrame) -> dict[str, list[str]]:
    """A comparison table's (stats.COMPARISON_COLUMNS) shown difference, CI and p-values."""
    return {
        "Mean Dice difference": [_signed(v, 4) for v in comparison["mean_difference"]],
        "95 % CI (patients, then runs)": [
            f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(comparison["ci_low"], comparison["ci_high"])
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


def _front_page(front: pd.DataFrame, out_html: str | Path) -> None:
    shown = pd.DataFrame(
        {
            "Network": front["method"],
            "On the front": ["yes" if on else "no" for on in front["on_front"]],
            "Parameters": [f"{v:,.0f}" for v in front["parameters"]],
            "Against": front["reference"],
            "Its parameters": [f"{v:,.0f}" for v in front["reference_parameters"]],
            **_difference_columns(front),
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
        ],
    )


def _cpu_label(cost: pd.DataFrame) -> str:
    first = cost.iloc[0]
    parts = [str(first.get(k, "")) for k in ("backend", "threads") if str(first.get(k, "")) not in ("", "nan")]
    return ", ".join(parts[:1] + [f"{parts[1]} threads"] if len(parts) == 2 else parts) or "CPU"


# ----------------------------------------------------------------------------- 6 statistics


def distributions(per_image: pd.DataFrame, out_png: str | Path) -> None:
    """Per-image Dice and HD95 per method (images with a lesion, averaged over seeds), as box plots
    with the points."""
    per_image = as_compared(lesion_images(per_image))
    methods = list(dict.fromkeys(per_image["method"]))
    by_image = per_image.groupby(["method", "sample_id"], sort=False)[["dice", "hd95_px"]].mean()
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 0.45 * len(methods) * 2), 3.2))
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, column, label in zip(axes, ("dice", "hd95_px"), ("Dice per image", "HD95 per image (px)")):
        values = [by_image.loc[m, column].to_numpy() for m in methods]
        ax.boxplot(values, showfliers=False)
        for position, points in enumerate(values, start=1):
            ax.plot(position + rng.uniform(-0.15, 0.15, len(points)), points, ".", ms=2, color="C0", alpha=0.5)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=60, ha="right", fontsize=6)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    _save(fig, out_png)


def paired_statistics(
    per_image: pd.DataFrame,
    manifest_csv: str | Path,
    out_csv: str | Path,
    out_html: str | Path,
    out_png: str | Path,
    seed: int = 0,
    resamples: int = 10_000,
) -> None:
    """The statistics of docs/statistics.md, over the test images with a lesion, as the tables:

    - each method's mean Dice with a patient-level (hierarchical: patients, then runs) 95 % CI;
    - each method against the reference (U-net): the paired Dice difference, its CI, the sign-flip p
      and Holm's correction over that family;
    - each network against each floor (a second family, Holm-corrected): a network segments beyond
      the image's cues only when every one of its CIs against the floors lies above 0; the references
      (which read something derived from the test annotation, e.g. the caliper reader) are a third
      family, compared with, never counted as floors;
    - Dice per metadata value (lesion type, class, ...) with counts and CIs.
    Patients are the manifest's patient groups (a patient's views, and duplicated images, move together)."""
    from sonoseg import catalog

    per_image = patient_table(per_image)
    methods = list(dict.fromkeys(per_image["method"]))
    reference, reference_note = reference_method(methods)
    family = f"every method vs {reference}"
    comparison = stats.compare_methods(per_image, reference, family, seed=seed, resamples=resamples)
    floors = [m for m in methods if m in catalog.floors()]
    references = [m for m in methods if m in catalog.references()]
    networks = [m for m in methods if m not in floors + references]

    def against_each(untrained: list[str], family_name: str) -> pd.DataFrame:
        """Every network against each of ``untrained``, one family (one call per method compared with:
        a result does not depend on the others)."""
        flips = stats.permutations_for(len(untrained) * len(networks))  # the whole family's size
        calls = [
            stats.compare_methods(
                per_image, method, "", methods=networks, seed=seed, resamples=resamples, permutations=flips
            )
            for method in untrained
            if networks
        ]
        return stats.as_family(calls, family_name) if calls else pd.DataFrame()

    beyond = against_each(floors, "every network vs every floor")
    versus_references = against_each(references, "every network vs each reference")
    pd.concat([comparison, beyond, versus_references], ignore_index=True).to_csv(out_csv, index=False)

    def shown_comparison(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "Method": frame["method"],
                "Against": frame["reference"],
                "Patients / images": [f"{p} / {i}" for p, i in zip(frame["patients"], frame["images"])],
                "Runs": [f"{c} / {r}" for c, r in zip(frame["runs_candidate"], frame["runs_reference"])],
                **_difference_columns(frame),
            }
        )

    cells = stats.method_table(per_image, seed=seed, resamples=resamples)
    parts = [
        note(
            f"{reference_note} Over the test images with a lesion; patients are the manifest's patient groups "
            f"(a patient's views and duplicated images move together). CIs: {resamples} bootstrap resamples of "
            "patients, then of runs (trainings: fold and seed) within each; p: a sign-flip test over patients "
            "(exact up to 16 patients, else enough random flips that a Holm p near 0.05 is within 0.002); Holm's "
            "correction within each family (docs/statistics.md). With fewer than 5 runs a cell lists each run's mean."
        ),
        html_table(
            pd.DataFrame(
                {"Method": cells["method"], "Patients": cells["patients"], "Runs": cells["runs"], "Dice": cells["cell"]}
            ),
            "Mean test Dice with its patient-level 95 % CI",
        ),
        html_table(shown_comparison(comparison), f"Paired Dice difference against {reference} (family: {family})"),
    ]
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
    manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    tested = manifest[manifest["sample_id"].isin(set(per_image["sample_id"]))]
    for column in categorical_columns(tested):
        values = per_image.drop(columns=column, errors="ignore").merge(tested[["sample_id", column]], on="sample_id")
        values[column] = values[column].replace("", "(none)")
        if values[column].nunique() < 2:
            continue
        groups = stats.group_table(values, column, seed=seed, resamples=min(resamples, 2000))
        groups["cell"] = [stats.format_cell(row) for _, row in groups.iterrows()]
        shown = groups.pivot_table(index="method", columns=column, values="cell", aggfunc="first", sort=False)
        counts = groups.groupby(column)[["images", "patients"]].first()
        shown.columns = [
            f"{v} ({counts.loc[v, 'patients']} patients, {counts.loc[v, 'images']} images)" for v in shown.columns
        ]
        parts.append(html_table(shown.reset_index(), f"Test Dice per {column} (patient-level 95 % CI)"))
    write_page(out_html, "Statistics by patient", parts)

    fig, ax = plt.subplots(figsize=(5.0, 0.35 * max(len(comparison), 1) + 1.0))
    positions = np.arange(len(comparison))[::-1]
    ax.errorbar(
        comparison["mean_difference"],
        positions,
        xerr=[
            comparison["mean_difference"] - comparison["ci_low"],
            comparison["ci_high"] - comparison["mean_difference"],
        ],
        fmt="s",
        color="C0",
        capsize=3,
        ms=4,
    )
    for y, p in zip(positions, comparison["p_holm"]):
        ax.annotate(f"p(Holm)={p:.2g}", (1.01, y), xycoords=("axes fraction", "data"), fontsize=6, va="center")
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(positions, comparison["method"], fontsize=6)
    ax.set_ylim(-0.7, max(len(comparison), 1) - 0.3)
    ax.set_xlabel(f"Dice difference vs {reference} (mean, 95 % CI by patient, then run)")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, out_png)
