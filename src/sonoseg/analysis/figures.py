"""The study's HTML report pieces: small PNG figures (matplotlib, headless Agg backend, DejaVu fonts
shipped with matplotlib) and self-contained HTML tables, one per report() item of the workflow.

Results come from the collected long table (sonoseg.analysis.results: per_image.csv.gz), where a compared
method is a run of the run sheet: a network or a method without training (which has predictions and
metrics but no history). Predictions and histories are found through sonoseg.study.layout.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on a cluster node or in CI
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sonoseg.analysis import families, pages, paper, stats
from sonoseg.analysis.results import as_compared, lesion_images, patient_table, trainings_of  # noqa: E402
from sonoseg.analysis.scoring import kept_epoch  # noqa: E402
from sonoseg.data.imageio import read_image, read_mask  # noqa: E402
from sonoseg.errors import SonosegError  # noqa: E402
from sonoseg.networks import catalog  # noqa: E402
from sonoseg.study import layout

plt.rcParams.update(
    {"font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8, "figure.dpi": 100, "savefig.dpi": 100}
)

THUMBNAIL_WIDTH = 160  # pixels per panel in image grids: keeps the paper-scale report small
OUTLINE_COLORS = {"truth": "#00e676", "prediction": "#ff1744"}


# ----------------------------------------------------------------------------- inputs


# ----------------------------------------------------------------------------- HTML


def _save(fig: plt.Figure, out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------- 1 data


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
    from sonoseg.data import marks

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
    """One row per chosen image: the image (calipers and all), the ground truth, then the methods'
    post-processed masks (red) over the ground truth (green): those figure2_methods picks, large
    enough to judge a boundary, or with ``every_method`` all of them (the full grid). Returns the
    note naming the reference."""
    per_image = as_compared(per_image)
    methods = list(dict.fromkeys(per_image["method"]))
    reference, reference_note = families.reference_method(methods)
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
            axes[row, column].set_title(f"{label}Dice {pages.fmt(value, 3)}", fontsize=5)
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
        front = families.front_statistics(patients, summary, "parameters", seed=seed)
        if front_csv:
            front.to_csv(front_csv, index=False)
        if front_html:
            pages.front_page(front, front_html)
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
        front = families.pareto_front(summary, column)
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
    from sonoseg.networks import catalog

    return catalog.label(method).split(" (")[0] if method in catalog.CATALOG else method


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
    per_image = patient_table(per_image)
    found = families.paired_families(per_image, seed=seed, resamples=resamples)
    pd.concat([found.comparison, found.beyond, found.versus_references], ignore_index=True).to_csv(out_csv, index=False)
    pages.statistics_page(per_image, found, manifest_csv, out_html, seed=seed, resamples=resamples)
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
        ax.annotate(f"p(Holm)={p:.2g}", (1.01, y), xycoords=("axes fraction", "data"), fontsize=6, va="center")
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(positions, comparison["method"], fontsize=6)
    ax.set_ylim(-0.7, max(len(comparison), 1) - 0.3)
    ax.set_xlabel(f"Dice difference vs {reference} (mean, 95 % CI by patient, then run)")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, out_png)
