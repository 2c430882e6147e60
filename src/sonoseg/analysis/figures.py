"""The study's HTML report pieces: small PNG figures (matplotlib, headless Agg backend, DejaVu fonts
shipped with matplotlib) and self-contained HTML tables, one per report() item of the workflow.

Results come from the collected long table (sonoseg.analysis.results: per_image.csv.gz), where a compared
method is a run of the run sheet: a network or a method without training (which has predictions and
metrics but no history). Predictions and histories are found through sonoseg.study.layout.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on a cluster node or in CI
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sonoseg.analysis import families, pages, paper, stats
from sonoseg.analysis.figure_files import save_figure
from sonoseg.analysis.results import (  # noqa: E402
    as_compared,
    compute_values,
    lesion_images,
    patient_table,
    source_line,
    trainings_of,
    write_table,
)
from sonoseg.analysis.scoring import kept_epoch  # noqa: E402
from sonoseg.data import marks  # noqa: E402
from sonoseg.data.imageio import read_image, read_mask  # noqa: E402
from sonoseg.errors import SonosegError  # noqa: E402
from sonoseg.networks import catalog  # noqa: E402
from sonoseg.study import layout

# The report's viewer (Snakemake's HTML report) shows a figure at most REPORT_WIDTH pixels wide: the page of a
# 1600-pixel browser window less the viewer's sidebar. It shrinks a wider figure, and its text with it, so
# every figure is at most that wide at DPI and none of its text smaller than SMALLEST_FONT points.
REPORT_WIDTH = 1180
DPI = 100
SMALLEST_FONT = 8
TITLE_FONT = 9
plt.rcParams.update(
    {
        "font.family": "DejaVu Sans",
        "font.size": SMALLEST_FONT,
        "axes.titlesize": SMALLEST_FONT,
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
    }
)
REPORT_INCHES = REPORT_WIDTH / DPI

THUMBNAIL_WIDTH = 160  # pixels per panel in image grids: keeps the paper-scale report small
OUTLINE_COLORS = {"truth": "#00e676", "prediction": "#ff1744"}


# ----------------------------------------------------------------------------- inputs


# ----------------------------------------------------------------------------- HTML


def trainings_line(histories: list[pd.DataFrame]) -> str:
    """A training curve's provenance: the commit(s) the trainings ran at and the precision(s) they computed in
    (their histories' columns; '' for histories from before them)."""
    if not histories:
        return ""
    joined = pd.concat(histories, ignore_index=True)
    at, precision = (compute_values(joined, c) if c in joined else "" for c in ("commit", "precision"))
    line = "Trained" + (f" at commit {at}" if at else "") + (f" in {precision}" if precision else "")
    return line + "." if at or precision else ""


# ----------------------------------------------------------------------------- 1 data


def _thumbnail(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """One pixel of each n x n block so the panel is at most THUMBNAIL_WIDTH wide (outlines are drawn on the same
    grid, every n-th pixel): the block's first pixel, or its most coloured one where the block holds a coloured
    mark. Every n-th pixel alone kept 0-2 of a caliper's 34-68 coloured pixels, and Figure 2's panels, whose
    caption shows the image as annotated, showed no calipers."""
    step = max(1, int(np.ceil(pixels.shape[1] / THUMBNAIL_WIDTH)))
    if step == 1 or pixels.ndim != 3:
        return pixels[::step, ::step], step
    height, width = pixels.shape[:2]
    rows, cols = -(-height // step), -(-width // step)
    padded = np.pad(pixels, ((0, rows * step - height), (0, cols * step - width), (0, 0)), mode="edge")
    blocks = padded.reshape(rows, step, cols, step, 3).transpose(0, 2, 1, 3, 4).reshape(rows, cols, step * step, 3)
    colour = marks.chroma(padded).reshape(rows, step, cols, step).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    most = colour.argmax(axis=2)
    chosen = np.where(colour.max(axis=2) > marks.CHROMA_THRESHOLD, most, 0)  # 0: the block's first pixel
    return np.take_along_axis(blocks, chosen[:, :, None, None], axis=2)[:, :, 0], step


def _outline(ax: plt.Axes, mask: np.ndarray, step: int, color: str, width: float = 1.0) -> None:
    small = mask[::step, ::step].astype(float)
    if small.any() and not small.all():
        ax.contour(small, levels=[0.5], colors=[color], linewidths=width)


def _panel(ax: plt.Axes, image: np.ndarray, title: str = "") -> int:
    small, step = _thumbnail(image)
    ax.imshow(small, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=SMALLEST_FONT)
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
    fig.suptitle("Sample images, lesion mask outlined", fontsize=TITLE_FONT)
    save_figure(fig, out_png, source=source_line(manifest_csv))


def marks_examples(manifest_csv: str | Path, out_png: str | Path, count: int = 4) -> pd.DataFrame:
    """The included images with the most coloured-mark pixels (marks.find_marks), each shown as it is,
    with its marks in red, and inpainted (marks.inpaint_marks, what preprocess.marks: inpaint feeds the
    networks); the title counts the images with marks. Returns every included image's mark-pixel count
    (sample_id, mark_pixels), the most marked first."""
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
        ax.text(0.5, 0.5, title + "; nothing to inpaint", ha="center", va="center", fontsize=TITLE_FONT)
        save_figure(fig, out_png, source=source_line(manifest_csv))
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
            ax.set_title(label, fontsize=SMALLEST_FONT)
    fig.suptitle(title + f"; the {len(shown)} with the most", fontsize=TITLE_FONT)
    save_figure(fig, out_png, source=source_line(manifest_csv))
    return counts[["sample_id", "mark_pixels"]].reset_index(drop=True)


# ----------------------------------------------------------------------------- 2 tables


# ----------------------------------------------------------------------------- 3 curves


def training_curves(out: str | Path, row: dict, out_png: str | Path) -> None:
    """One run's (a run sheet row's) train/validation loss and validation Dice per epoch, one colour per
    training (fold and seed), the kept epoch marked; its histories found in the study folder ``out``."""
    method = row["name"]
    trainings = trainings_of(row)
    if not row.get("recipe") or not trainings:
        raise SonosegError(f"training curves: run {method!r} has no training")
    several_folds = len({fold for fold, _ in trainings}) > 1
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    histories = []
    for index, (fold, seed) in enumerate(trainings):
        path = layout.training_file(out, method, fold, seed, layout.HISTORY)
        if not Path(path).is_file():
            raise SonosegError(f"{path}: training history missing")
        history = pd.read_csv(path, dtype={"commit": str, "precision": str})  # a commit of digits is no number
        histories.append(history)
        name = f"fold{fold}/seed{seed}" if several_folds else f"seed {seed}"  # as the tables name a training
        color = f"C{index % 10}"
        best = kept_epoch(history)
        best_row = history[history["epoch"] == best].iloc[0]
        loss_ax.plot(history["epoch"], history["train_loss"], color=color, lw=1, label=f"{name} train")
        loss_ax.plot(history["epoch"], history["val_loss"], color=color, lw=1, ls="--", marker=".", label=f"{name} val")
        loss_ax.plot([best], [best_row["val_loss"]], marker="*", ms=10, color=color, ls="none")
        dice_ax.plot(history["epoch"], history["val_dice"], color=color, lw=1, marker=".", label=name)
        dice_ax.plot([best], [best_row["val_dice"]], marker="*", ms=10, color=color, ls="none")
        dice_ax.axvline(best, color=color, lw=0.6, ls=":")
    shown = run_title(row)
    loss_ax.set(xlabel="epoch", ylabel="loss", title=f"{shown}: loss (★ kept epoch)")
    dice_ax.set(xlabel="epoch", ylabel="validation Dice", title=f"{shown}: validation Dice (★ kept epoch)")
    loss_ax.legend(fontsize=SMALLEST_FONT, ncol=2)
    dice_ax.legend(fontsize=SMALLEST_FONT)
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs are whole
    save_figure(fig, out_png, source=trainings_line(histories))


# ----------------------------------------------------------------------------- 4 figure 2


def figure2_choice(dice_by_image: pd.Series, seed: int) -> list[tuple[str, str]]:
    """The paper's Figure 2 images: best, median and worst by the reference network's Dice (figure2 passes
    the images with a lesion), plus one random other image. Ties are broken by sample id, the random pick
    by the seed: reproducible."""
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
    from sonoseg.networks import catalog

    return catalog.entry(method).family if method in catalog.references() else "floor"


def figure2_methods(per_image: pd.DataFrame, reference: str) -> list[str]:
    """What the paper's Figure 2 shows, at a size where a boundary can be judged: the reference
    (U-net), the best lightweight U-net, the best network of every other family, then the floors.
    "Best" is the highest mean test Dice over the images with a lesion; unknown methods are "user"."""
    from sonoseg.networks import catalog

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
    """One column per chosen image; rows: the image (calipers and all), the ground truth, then each
    method's post-processed mask (red) over the ground truth (green), with its Dice on that image:
    the methods figure2_methods picks, large enough to judge a boundary, or with ``every_method`` all
    of them (the full grid). Images run across and methods down, so that the figure stays within the
    report's width however many methods a study has. Returns the note naming the reference."""
    given = per_image
    per_image = as_compared(per_image)
    methods = list(dict.fromkeys(per_image["method"]))
    reference, reference_note = families.reference_method(methods)
    shown = methods if every_method else figure2_methods(per_image, reference)
    source = source_line(manifest_csv, given[given["run"].isin(shown)])  # the trainings of the runs it shows
    # Ranked over the images with a lesion, as the tables average them: a normal scan (BUSI's) scores 0 for any
    # false positive and would be the "worst" almost always.
    reference_dice = lesion_images(per_image[per_image["method"] == reference]).groupby("sample_id")["dice"].mean()
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
    images = {
        sample: (read_image(manifest.loc[sample, "image"]).pixels, read_mask(manifest.loc[sample, "mask"]).pixels)
        for _, sample in choice
    }
    # Inches per panel: the default figure is for judging boundaries; either fits the report's width
    # beside the column of method names.
    names = 1.6
    panel = min(1.2 if every_method else 2.4, (REPORT_INCHES - names) / len(choice))
    aspect = float(np.clip(np.median([image.shape[0] / image.shape[1] for image, _ in images.values()]), 0.5, 1.5))
    rows = 2 + len(directories)
    fig, axes = plt.subplots(
        rows,
        len(choice),
        figsize=(names + panel * len(choice), rows * (panel * aspect + 0.3) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for column, (role, sample) in enumerate(choice):
        image, truth = images[sample]
        _panel(axes[0, column], image, f"{role}\n{sample}")
        step = _panel(axes[1, column], image)
        _outline(axes[1, column], truth, step, OUTLINE_COLORS["truth"])
        for row, (method, folders) in enumerate(directories.items(), start=2):
            step = _panel(axes[row, column], image)
            _outline(axes[row, column], truth, step, OUTLINE_COLORS["truth"], 0.6)
            found = [folder / f"{sample}.png" for folder in folders if (folder / f"{sample}.png").is_file()]
            if found:
                _outline(axes[row, column], read_mask(found[0], drawn=False).pixels, step, OUTLINE_COLORS["prediction"])
            value = dice.get((method, first_seed[method], sample), np.nan)
            axes[row, column].set_title(f"Dice {pages.fmt(value, 3)}", fontsize=SMALLEST_FONT)
    for row, name in enumerate(["image", "ground truth", *map(display_name, directories)]):
        axes[row, 0].set_ylabel(
            textwrap.fill(name, 16), rotation=0, ha="right", va="center", fontsize=TITLE_FONT, labelpad=6
        )
    title = f"Figure 2 rebuilt: green = ground truth, red = prediction. {reference_note}"
    if per_image.groupby("method")["seed"].nunique().max() > 1:  # which training's mask a panel shows
        title += (
            " Images ranked by the reference's Dice averaged over its trainings; each panel shows the mask and Dice "
            f"of seed {', '.join(sorted({str(s) for s in first_seed[list(directories)]}))} (of the image's fold)."
        )
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 72 / (0.6 * TITLE_FONT))), fontsize=TITLE_FONT)
    save_figure(fig, out_png, palette=True, source=source)
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
    source: str = "",
) -> None:
    """The accuracy-cost front: Dice against parameters (and GFLOPs and CPU latency when a cost table
    exists), one labelled point per network with its 95 % CI by patient, then run (with the manifest;
    else ± std over seeds), the front of the networks no other beats at a lower cost drawn as a step
    line, the floors (methods without a cost) as horizontal lines, the paper's Dice as hollow markers.
    Parameter counts come from the cost table or the runs' summaries (networks/<run>.csv).
    By patient, front_csv / front_html get front_statistics over the parameter front. ``source``: the
    provenance the figure and the page carry (results.source_line)."""
    patients = patient_table(per_image) if by_patient else None
    per_image = as_compared(per_image)
    summary = seed_summary(per_image)
    summary["low"], summary["high"] = (
        summary["dice_mean"] - summary["dice_std"],
        summary["dice_mean"] + summary["dice_std"],
    )
    interval = "mean ± std over seeds"
    if patients is not None:
        # As many resamples as Table 2's CI of the same Dice (with_confidence), so the two intervals agree.
        bounds = stats.method_table(patients, methods=list(summary["method"]), seed=seed)
        summary["low"], summary["high"] = bounds["ci_low"].to_numpy(), bounds["ci_high"].to_numpy()
        interval = "95 % CI by patient, then run"  # runs: trainings (fold and seed), as the statistics resample
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
        front = families.front_statistics(patients, summary, "parameters", seed=seed)
        if front_csv:
            write_table(front, front_csv)
        if front_html:
            pages.front_page(front, front_html, source)
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
    # Two panels a row and the key in the first free cell: side by side, three panels and the key were
    # wider than the report shows a figure, which shrank their text below legibility.
    grid_rows = len(axes_spec) // 2 + 1
    fig, grid = plt.subplots(grid_rows, 2, figsize=(REPORT_INCHES - 1.0, 3.8 * grid_rows), squeeze=False)
    axes, spare = grid.flat[: len(axes_spec)], grid.flat[len(axes_spec) :]
    marked = []  # per panel: its numbers, and the markers and error bars they must not cover
    for ax, (column, label, scale) in zip(axes, axes_spec):
        front = families.pareto_front(summary, column)
        if len(front) > 1:
            ax.step(front[column] * scale, front["dice_mean"], where="post", color="0.5", lw=1, zorder=0, label="front")
        numbers, marks = [], []
        for index, row in enumerate(summary.itertuples()):
            color = f"C{index % 10}"
            x = getattr(row, column)
            if pd.isna(x):  # a method without this cost (a floor or a reference): a horizontal line
                kind = _untrained_kind(row.method)
                ax.axhline(row.dice_mean, color=color, lw=0.8, ls=UNTRAINED_LINES[kind], label=f"{kind}: {row.method}")
                continue
            error = [[row.dice_mean - row.low], [row.high - row.dice_mean]]
            ax.errorbar(x * scale, row.dice_mean, yerr=error, fmt="o", color=color, ms=POINT_SIZE, capsize=2)
            marks.append((x * scale, row.dice_mean, row.low, row.high))
            numbers.append(
                ax.annotate(
                    str(key[row.method]),
                    (x * scale, row.dice_mean),
                    fontsize=SMALLEST_FONT,
                    xytext=NUMBER_SPOTS[0],  # moved by _place_numbers once the layout is fixed
                    textcoords="offset points",
                    gid=row.method,  # the number's method, for whoever reads the figure's objects
                )
            )
            if column == "parameters" and row.method in reference and not pd.isna(reference[row.method][1]):
                paper_x = catalog.entry(row.method).printed_parameters or x
                paper_dice, paper_std = reference[row.method][1], reference[row.method][2]
                ax.errorbar(
                    paper_x * scale,
                    paper_dice,
                    yerr=paper_std,
                    fmt="o",
                    mfc="none",
                    color=color,
                    ms=POINT_SIZE,
                    capsize=2,
                )
                marks.append((paper_x * scale, paper_dice, paper_dice - paper_std, paper_dice + paper_std))
        marked.append((ax, numbers, marks))
        ax.set(xlabel=label, ylabel=f"test Dice ({interval})")
        ax.set_xscale("log")
        # 1, 2 and 5 of each decade labelled: the networks often span less than one, which left one label.
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("filled: ours, hollow: paper")
    handles = [
        matplotlib.lines.Line2D(
            [],
            [],
            color=f"C{index % 10}",
            marker="o" if not pd.isna(row.parameters) else None,
            ls="" if not pd.isna(row.parameters) else UNTRAINED_LINES[_untrained_kind(row.method)],
            label=f"{key[row.method]}  {display_name(row.method)}"
            + ("" if not pd.isna(row.parameters) else f" ({_untrained_kind(row.method)})"),
        )
        for index, row in enumerate(summary.itertuples())
    ]
    if any(line.get_label() == "front" for line in axes[0].get_lines()):
        handles.append(matplotlib.lines.Line2D([], [], color="0.5", lw=1, label="the front"))
    fig.tight_layout()  # the panels first; the numbers and the key go where the layout leaves them room
    for ax, numbers, marks in marked:
        _place_numbers(ax, numbers, marks)
    slot = spare[0].get_position()
    for ax in spare:
        ax.remove()
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(slot.x0, slot.y0 + slot.height / 2), frameon=False)
    save_figure(fig, out_png, source=source)


POINT_SIZE = 4  # points: the cost figure's markers
UNTRAINED_LINES = {"floor": "--", "reference": ":"}  # a method without a cost: its line, by its role
# Where a point's number may go, in points from the point: beside it, above or below, then the corners
# and farther out; the first spot that covers no marker, error bar or other number, inside the panel, wins.
NUMBER_SPOTS = [(5, 0), (-5, 0), (0, 5), (0, -5), (5, 5), (-5, 5), (5, -5), (-5, -5)]
NUMBER_SPOTS += [(2 * dx, 2 * dy) for dx, dy in NUMBER_SPOTS]


def _place_numbers(ax: plt.Axes, numbers: list, marks: list[tuple[float, float, float, float]]) -> None:
    """Move each point's number (an annotation at the point) to the first of NUMBER_SPOTS where it covers
    none of ``marks`` (x, y, error bar low and high, in data units: the marker and its bar) nor a number
    placed before it, inside the panel; where every spot covers something, to the one covering least."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    pixels = ax.figure.dpi / 72  # display pixels per point
    blocked = []
    for x, y, low, high in marks:
        (px, py), (_, bottom), (_, top) = ax.transData.transform([(x, y), (x, low), (x, high)])
        radius = (POINT_SIZE / 2 + 1) * pixels
        blocked.append(Bbox.from_extents(px - radius, py - radius, px + radius, py + radius))
        blocked.append(Bbox.from_extents(px - 3 * pixels, min(bottom, top), px + 3 * pixels, max(bottom, top)))
    panel = ax.get_window_extent(renderer)

    def covered(box: Bbox) -> float:
        inside = Bbox.intersection(box, panel)
        outside = box.width * box.height - (inside.width * inside.height if inside is not None else 0.0)
        overlaps = (Bbox.intersection(box, other) for other in blocked)
        return outside + sum(o.width * o.height for o in overlaps if o is not None)

    for number in numbers:
        best = None
        for dx, dy in NUMBER_SPOTS:
            number.xyann = (dx, dy)
            number.set_horizontalalignment("left" if dx > 0 else "right" if dx < 0 else "center")
            number.set_verticalalignment("bottom" if dy > 0 else "top" if dy < 0 else "center")
            cover = covered(number.get_window_extent(renderer))
            if best is None or cover < best[0]:
                best = (cover, dx, dy, number.get_horizontalalignment(), number.get_verticalalignment())
            if cover == 0:
                break
        _, dx, dy, horizontal, vertical = best
        number.xyann = (dx, dy)
        number.set_horizontalalignment(horizontal)
        number.set_verticalalignment(vertical)
        blocked.append(number.get_window_extent(renderer))


def display_name(method: str) -> str:
    """A method's name as a person reads it: the catalog's label without its notes ("Lighter U-net @128",
    "Threshold baseline", not "... (floor: ...; beyond the paper)") but with what tells networks apart ("DeepLab
    v3+ (MobileNet)" and "(ResNet-101)": both read "DeepLab v3+" in the breadth study's cost key); the
    identifier for a method the catalog lacks."""
    from sonoseg.networks import catalog

    if method not in catalog.CATALOG:
        return method
    name, _, note = catalog.label(method).partition(" (")
    if not note or ":" in note:  # no note, or a floor's or the reference's description
        return name
    kept = [part for part in note.rstrip(")").split(", ") if part not in ("extra", "ours")]
    return f"{name} ({', '.join(kept)})" if kept else name


def run_display_name(run: str) -> str:
    """A run's name as a person reads it: its method's display name, then its variant as the run sheet names it
    ("U-net (tta)", "DeepLab v3+ (marks-keep, tta)"); a ladder step's or a user's run as it is named."""
    method, *variant = run.split("--")
    shown = display_name(method)
    if not variant:
        return shown
    if shown == method:  # not the catalog's: as named
        return run
    if shown.endswith(")"):  # "DeepLab v3+ (MobileNet; tta)"
        return f"{shown[:-1]}; {', '.join(variant)})"
    return f"{shown} ({', '.join(variant)})"


def run_title(row: dict) -> str:
    """A run sheet row's name as a figure's title reads it: a tuning ladder step as its network and step
    ("Lighter U-net @1, ladder step adam", not "ladder--adam"), any other run as run_display_name names it."""
    if row.get("kind") == "ladder_step":
        return f"{display_name(row['method'])}, ladder step {row.get('table_name') or row['name']}"
    return run_display_name(row["name"])


def _cpu_label(cost: pd.DataFrame) -> str:
    first = cost.iloc[0]
    parts = [str(first.get(k, "")) for k in ("backend", "threads") if str(first.get(k, "")) not in ("", "nan")]
    return ", ".join(parts[:1] + [f"{parts[1]} threads"] if len(parts) == 2 else parts) or "CPU"


# ----------------------------------------------------------------------------- 6 statistics


def distributions(per_image: pd.DataFrame, out_png: str | Path, source: str = "") -> None:
    """Per-image Dice and HD95 per method (images with a lesion, averaged over seeds), as box plots
    with the points."""
    per_image = as_compared(lesion_images(per_image))
    methods = list(dict.fromkeys(per_image["method"]))
    by_image = per_image.groupby(["method", "sample_id"], sort=False)[["dice", "hd95_px"]].mean()
    # One panel above the other: side by side, a study's dozen methods made the figure wider than the
    # report shows one, and its names too small to read.
    width = min(REPORT_INCHES, max(6.0, 0.45 * len(methods)))
    fig, axes = plt.subplots(2, 1, figsize=(width, 7.0), layout="constrained")
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, column, label in zip(axes, ("dice", "hd95_px"), ("Dice per image", "HD95 per image (px)")):
        values = [by_image.loc[m, column].to_numpy() for m in methods]
        ax.boxplot(values, showfliers=False)
        for position, points in enumerate(values, start=1):
            ax.plot(position + rng.uniform(-0.15, 0.15, len(points)), points, ".", ms=2, color="C0", alpha=0.5)
        ax.set_xticks(range(1, len(methods) + 1), [run_display_name(m) for m in methods], rotation=60, ha="right")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, out_png, source=source)


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
    source = source_line(manifest_csv, per_image)  # the data, the code and the trainings, as every table's caption
    per_image = patient_table(per_image)
    found = families.paired_families(per_image, seed=seed, resamples=resamples)
    write_table(pd.concat([found.comparison, found.beyond, found.versus_references], ignore_index=True), out_csv)
    pages.statistics_page(per_image, found, manifest_csv, out_html, seed=seed, resamples=resamples, source=source)
    comparison, reference = found.comparison, found.reference

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
        ax.annotate(f"p(Holm)={p:.2g}", (1.01, y), xycoords=("axes fraction", "data"), va="center")
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(positions, [run_display_name(m) for m in comparison["method"]])
    ax.set_ylim(-0.7, max(len(comparison), 1) - 0.3)
    ax.set_xlabel(f"Dice difference vs {reference} (mean, 95 % CI by patient, then run)")
    ax.grid(alpha=0.3, axis="x")
    save_figure(fig, out_png, source=source)
