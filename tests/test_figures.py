"""Report figures and tables on small hand-made inputs: the Figure-2 choice, the tables, the plots."""

import html
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import collect, sheet_row

from sonoseg.analysis import families, figures, pages, scoring, stats
from sonoseg.data import provenance
from sonoseg.errors import SonosegError
from sonoseg.study import layout

UNET_PARAMETERS = 17_267_393  # as training records it in the model file and the run's summary


def test_figure2_choice_is_best_median_worst_and_a_reproducible_random_one():
    dice = pd.Series({"e": 0.5, "a": 0.9, "c": 0.7, "b": 0.8, "d": 0.6, "f": 0.4, "g": 0.3})
    choice = figures.figure2_choice(dice, seed=0)
    assert choice[:3] == [("best", "a"), ("median", "d"), ("worst", "g")]
    assert choice[3][0] == "random" and choice[3][1] not in {"a", "d", "g"}
    assert figures.figure2_choice(dice, seed=0) == choice
    # Input order does not matter; ties are broken by sample id.
    assert figures.figure2_choice(dice.sample(frac=1, random_state=3), seed=0) == choice
    ties = pd.Series({"z": 1.0, "y": 1.0, "x": 0.0})
    assert figures.figure2_choice(ties, seed=5)[0] == ("best", "y")
    # Some seed picks another random image: the seed really drives the choice.
    assert len({figures.figure2_choice(dice, seed=s)[3][1] for s in range(20)}) > 1


def test_figure2_choice_with_few_images_has_no_duplicates():
    assert figures.figure2_choice(pd.Series({"only": 0.5}), seed=0) == [("best", "only")]
    assert [s for _, s in figures.figure2_choice(pd.Series({"a": 0.5, "b": 0.2}), seed=0)] == ["a", "b"]
    with pytest.raises(SonosegError):
        figures.figure2_choice(pd.Series(dtype=float), seed=0)


def test_thumbnails_keep_the_coloured_calipers_figure_2_shows():
    """A panel keeps one pixel per block: a thin caliper bar must survive it (every 4th pixel kept none of this
    bar's rows), the grey image stays its first pixels, and the panel has the outline grid's shape."""
    image = np.full((301, 640, 3), 90, np.uint8)
    image[101:104, 200:240] = (255, 230, 0)  # a yellow caliper tick, 3 px thick: rows 101-103
    small, step = figures._thumbnail(image)
    assert step == 4 and small.shape == image[::4, ::4].shape
    coloured = small.max(axis=2).astype(int) - small.min(axis=2) > 40
    assert (
        coloured.sum() == 10 and not (image[::4, ::4].max(axis=2).astype(int) - image[::4, ::4].min(axis=2) > 40).any()
    )
    assert (small[~coloured] == 90).all()
    grey = np.arange(300 * 640, dtype=np.uint32).reshape(300, 640).astype(np.uint8)
    assert np.array_equal(figures._thumbnail(grey)[0], grey[::4, ::4])


def test_reference_is_unet_or_the_first_network_and_says_so():
    assert families.reference_method(["fcn8s", "unet"])[0] == "unet"
    name, note = families.reference_method(["light_unet", "fcn8s"])
    assert name == "light_unet" and "no unet" in note


def test_categorical_columns_are_metadata_not_files():
    manifest = pd.DataFrame(
        {
            "sample_id": list("abcd"),
            "image": list("abcd"),
            "status": ["included"] * 4,
            "organ": ["breast", "thyroid", "breast", "liver"],
            "class": [""] * 4,
            "meta_size_mm": ["1.5", "2.5", "3.5", "4.5"],
            "meta_contrast_db": ["-3.5", "-3.5", "2.5", "2.5"],
        }
    )
    assert pages.categorical_columns(manifest) == ["organ"]


@pytest.fixture
def small_study(tmp_path: Path) -> dict:
    """Two methods (one without history), four test images with masks and predictions, an organ column,
    in the workflow's layout (sonoseg.study.layout: metrics.csv and predictions/ of fold 0, seed 0), with the
    runs' summaries (networks/<run>.csv: U-net's parameter count; the floor has none) and their
    collected per-image table (``collect()`` again after changing a metrics file)."""
    rng = np.random.default_rng(0)
    rows, metrics = [], {"unet": [], "threshold_baseline": []}
    for index in range(4):
        sample = f"s{index}"
        image = (rng.uniform(0, 255, (40, 60, 3))).astype(np.uint8)
        mask = np.zeros((40, 60), np.uint8)
        mask[10:25, 15 + index : 35 + index] = 255
        for kind, pixels in (("images", image), ("masks", mask)):
            (tmp_path / kind).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / kind / f"{sample}.png"), pixels)
        rows.append(
            {
                "sample_id": sample,
                "patient": f"P{index}",
                "group": f"P{index}",
                "view": "1",
                "class": "",
                "image": str(tmp_path / "images" / f"{sample}.png"),
                "mask": str(tmp_path / "masks" / f"{sample}.png"),
                "height": 40,
                "width": 60,
                "status": "included",
                "reason": "",
                "flags": "",
                "pixel_spacing": "",
                "organ": "breast" if index % 2 else "thyroid",
            }
        )
        for method, shift in (("unet", 0), ("threshold_baseline", 5)):
            directory = Path(layout.training_file(tmp_path, method, 0, 0, layout.PREDICTIONS))
            directory.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(directory / f"{sample}.png"), np.roll(mask, shift, axis=1))
            metrics[method].append(
                {
                    "sample_id": sample,
                    "dice": 0.9 - 0.1 * index - shift / 50,
                    "hd95_px": 2.0 + index + shift,
                    "hd95_mm": np.nan,
                    "truth_empty": False,
                    "prediction_empty": False,
                    "hd95_policy": "medpy",
                }
            )
    rows.append({**rows[0], "sample_id": "bad", "status": "excluded", "reason": "image without mask"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(4)],
            "split": ["train", "val", "test", "test"],
            "group": [f"P{i}" for i in range(4)],
        }
    ).to_csv(tmp_path / "split.csv", index=False)
    paths, summaries = [], []
    (tmp_path / "networks").mkdir()
    for method, frame in metrics.items():
        paths.append(Path(layout.training_file(tmp_path, method, 0, 0, layout.METRICS)))
        pd.DataFrame(frame).to_csv(paths[-1], index=False)
        summaries.append(tmp_path / "networks" / f"{method}.csv")
        parameters = UNET_PARAMETERS if method == "unet" else 0
        pd.DataFrame({"network": [method], "seed": [0], "parameters": [parameters]}).to_csv(summaries[-1], index=False)
    rows = [sheet_row("unet"), sheet_row("threshold_baseline", trained=False)]
    return {
        "root": tmp_path,
        "metrics": paths,
        "summaries": summaries,
        "collect": lambda: collect(tmp_path, rows, tmp_path / "manifest.csv"),
    }


@pytest.fixture
def plotted(monkeypatch) -> list[list[dict]]:
    """What each figure saved from now on shows, per panel: the labelled points (method -> x, y) and the
    labels of the horizontal lines (methods without that cost)."""
    figures_seen = []
    real_save = figures.save_figure

    def save(fig, out, **options):
        plotted_texts.append([text for legend in fig.legends for text in legend.get_texts()])
        figures_seen.append(
            [
                {
                    "points": {text.get_gid() or text.get_text(): text.xy for text in ax.texts if hasattr(text, "xy")},
                    "lines": [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")],
                }
                for ax in fig.axes
            ]
        )
        real_save(fig, out, **options)

    monkeypatch.setattr(figures, "save_figure", save)
    return figures_seen


plotted_texts: list[list] = []  # each saved figure's key entries (the figure-level legend), by the fixture above


def _png_size(path: Path) -> tuple[int, int]:
    pixels = cv2.imread(str(path))
    assert pixels is not None, path
    return pixels.shape[1], pixels.shape[0]


def test_data_overview_counts_and_metadata(small_study):
    root = small_study["root"]
    pages.data_overview(root / "manifest.csv", root / "split.csv", root / "overview.html")
    page = (root / "overview.html").read_text()
    assert "<td>image without mask</td><td>1</td>" in page
    # Entries and the files they hold (an included sample is its image and its mask: 4 entries, 8 files), which
    # add up to the files under the root (the entries were called files, and did not).
    assert "<td>included</td><td>4</td><td>8</td>" in page and "The 10 files under the dataset root" in page
    assert "Images per organ and split" in page and "<td>thyroid</td>" in page
    figures.sample_grid(root / "manifest.csv", root / "split.csv", root / "samples.png")
    width, height = _png_size(root / "samples.png")
    assert 200 < width < 1200 and height > 50


def test_figure2_says_whose_masks_it_shows_when_a_method_has_several_trainings(small_study, monkeypatch):
    # Ranked by the reference's Dice over all its trainings, drawn from its first seed's: the title says so.
    root, metrics = small_study["root"], small_study["collect"]()
    titles = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, out, **options: titles.append(fig._suptitle.get_text()))
    figures.figure2(root / "manifest.csv", metrics, root, root / "figure2.png")
    assert "each panel shows the mask and Dice" not in titles[-1].replace("\n", " ")
    twice = pd.concat([metrics, metrics.assign(seed=metrics["seed"] + 1)], ignore_index=True)
    figures.figure2(root / "manifest.csv", twice, root, root / "figure2.png")
    assert "each panel shows the mask and Dice of seed 0 (of the image's fold)" in titles[-1].replace("\n", " ")


def test_figure2_cost_and_statistics_include_a_method_without_history(small_study, plotted):
    root, metrics = small_study["root"], small_study["collect"]()
    note = figures.figure2(root / "manifest.csv", metrics, root, root / "figure2.png")
    assert "unet" in note
    assert _png_size(root / "figure2.png")[0] > 200
    # Parameter counts come from the runs' summaries (counted at training); a floor has none to plot.
    figures.cost_accuracy(metrics, root / "cost.png", summaries=small_study["summaries"])
    (panel,) = plotted[-1]
    assert panel["points"]["unet"][0] == pytest.approx(UNET_PARAMETERS * 1e-6)
    assert "threshold_baseline" not in panel["points"]
    assert len(panel["lines"]) == 1 and "threshold_baseline" in panel["lines"][0]  # a horizontal line instead
    # A point is labelled by a number; the key names it as a person reads it.
    assert [text.get_text() for text in plotted_texts[-1]] == ["1  U-net", "2  Threshold baseline (floor)"]
    # The front's statistics are by patient.
    with pytest.raises(SonosegError, match="by patient"):
        figures.cost_accuracy(
            metrics, root / "cost.png", summaries=small_study["summaries"], by_patient=False, front_csv=root / "f.csv"
        )
    figures.cost_accuracy(
        metrics,
        root / "cost.png",
        summaries=small_study["summaries"],
        front_csv=root / "front.csv",
        front_html=root / "front.html",
    )
    assert pd.read_csv(root / "front.csv").empty  # one network with a cost: nothing to compare it with
    assert "accuracy-parameter front" in (root / "front.html").read_text()
    # Without summaries or a cost table no count is known: nothing is built to count it.
    figures.cost_accuracy(metrics, root / "cost_unknown.png")
    assert not plotted[-1][0]["points"] and len(plotted[-1][0]["lines"]) == 2
    cost = pd.DataFrame(
        {
            "network": ["unet"],
            "parameters": [17267393],
            "gflops": [40.0],
            "latency_ms": [120.0],
            "backend": ["torch"],
            "threads": [1],
            "cpu": ["x86"],
        }
    )
    cost.to_csv(root / "cost.csv", index=False)
    figures.cost_accuracy(metrics, root / "cost_full.png", root / "cost.csv")
    assert len(plotted[-1]) == 3 and plotted[-1][0]["points"]["unet"][0] == pytest.approx(UNET_PARAMETERS * 1e-6)
    assert _png_size(root / "cost_full.png")[0] > _png_size(root / "cost.png")[0]  # three panels, not one
    figures.distributions(metrics, root / "distributions.png")
    figures.paired_statistics(
        metrics, root / "manifest.csv", root / "paired.csv", root / "paired.html", root / "forest.png", resamples=200
    )
    paired = pd.read_csv(root / "paired.csv")
    # Every method against U-net; then (a second family) every network against every floor.
    against_unet = paired[paired["reference"] == "unet"]
    assert against_unet["method"].tolist() == ["threshold_baseline"]
    assert against_unet["mean_difference"].tolist() == pytest.approx([-0.1])
    against_floor = paired[paired["reference"] == "threshold_baseline"]
    assert against_floor["method"].tolist() == ["unet"]
    assert against_floor["mean_difference"].tolist() == pytest.approx([0.1])
    page = (root / "paired.html").read_text()
    assert "-0.1000" in page and "Test Dice per organ" in page
    # Where its numbers come from, as every table's caption says it (the page named nothing of the kind).
    assert f"Data fingerprint unknown; sonoseg {provenance.sonoseg_version()} at commit" in page
    for name in ("distributions.png", "forest.png"):
        assert (root / name).stat().st_size < 200_000


def test_paired_statistics_and_distributions_leave_out_images_without_a_lesion(small_study):
    # A normal image: U-net predicts nothing (Dice 1 by the empty-empty rule), the baseline a false
    # lesion (Dice 0). Counted, it would move the paired difference from -0.1 to -0.28.
    root = small_study["root"]
    for path, dice in zip(small_study["metrics"], (1.0, 0.0)):
        frame = pd.read_csv(path)
        normal = {**frame.iloc[0].to_dict(), "sample_id": "normal", "dice": dice, "truth_empty": True}
        pd.concat([frame, pd.DataFrame([normal])]).to_csv(path, index=False)
    manifest = pd.read_csv(root / "manifest.csv")
    normal_row = {**manifest.iloc[0].to_dict(), "sample_id": "normal", "patient": "PN", "group": "PN"}
    pd.concat([manifest, pd.DataFrame([normal_row])]).to_csv(root / "manifest.csv", index=False)
    metrics = small_study["collect"]()
    figures.paired_statistics(
        metrics, root / "manifest.csv", root / "paired.csv", root / "paired.html", root / "forest.png", resamples=200
    )
    paired = pd.read_csv(root / "paired.csv")
    assert paired.loc[0, "images"] == 4 and paired.loc[0, "mean_difference"] == pytest.approx(-0.1)
    figures.distributions(metrics, root / "distributions.png")
    only_normal = pd.DataFrame(
        {"method": ["unet"], "seed": [0], "sample_id": ["n"], "dice": [1.0], "truth_empty": [True]}
    )
    with pytest.raises(SonosegError, match="no test image has a lesion"):
        figures.seed_summary(only_normal)


def test_training_curves_mark_the_kept_epoch(tmp_path):
    for seed in (0, 1):
        directory = Path(layout.training_dir(tmp_path, "unet", 0, seed))
        directory.mkdir(parents=True)
        pd.DataFrame(
            {
                "epoch": [1, 2, 3],
                "train_loss": [0.9, 0.6, 0.5],
                "val_loss": [0.8, 0.55, 0.6 + seed],
                "val_dice": [0.2, 0.45, 0.4],
                "lr": [1e-4] * 3,
                "seconds": [1.0] * 3,
            }
        ).to_csv(directory / "history.csv", index=False)
    assert scoring.kept_epoch(pd.read_csv(layout.training_file(tmp_path, "unet", 0, 0, layout.HISTORY))) == 2
    figures.training_curves(tmp_path, sheet_row("unet", seeds=(0, 1)), tmp_path / "curves.png")
    assert _png_size(tmp_path / "curves.png")[0] > 300
    with pytest.raises(SonosegError, match="seed2/history.csv: training history missing"):
        figures.training_curves(tmp_path, sheet_row("unet", seeds=(0, 2)), tmp_path / "curves.png")


def test_training_curves_name_each_training_as_the_tables_do(tmp_path, monkeypatch):
    # With several folds a legend entry is fold<F>/seed<S> ("seed 0/1" read as seed 0, fold 1); epochs are whole.
    for fold, seed in ((0, 0), (0, 1), (1, 0), (1, 1)):
        directory = Path(layout.training_dir(tmp_path, "unet", fold, seed))
        directory.mkdir(parents=True)
        history = {"epoch": [1, 2], "train_loss": [0.9, 0.6], "val_loss": [0.8, 0.7], "val_dice": [0.2, 0.4]}
        pd.DataFrame(history).to_csv(directory / "history.csv", index=False)
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, out, **options: drawn.append(fig))
    figures.training_curves(tmp_path, sheet_row("unet", folds=(0, 1), seeds=(0, 1)), tmp_path / "curves.png")
    loss_ax, dice_ax = drawn[0].axes
    assert [t.get_text() for t in dice_ax.get_legend().get_texts()] == [
        "fold0/seed0",
        "fold0/seed1",
        "fold1/seed0",
        "fold1/seed1",
    ]
    assert "fold0/seed1 train" in [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert dice_ax.get_title() == "U-net: validation Dice (★ kept epoch)"  # the network's name, not its identifier
    drawn[0].canvas.draw()
    assert all(float(tick).is_integer() for tick in dice_ax.get_xticks())


def test_study_tables_show_ours_the_paper_and_the_difference(tmp_path):
    table = pd.DataFrame(
        {
            "network": ["unet"],
            "label": ["U-net"],
            "parameters": [17267393],
            "seeds": [3],
            "dice_mean": [0.9],
            "dice_std": [0.01],
            "hd95_mean": [15.0],
            "hd95_std": [0.5],
            "hd95_mm_mean": [np.nan],
            "hd95_mm_std": [np.nan],
            "hd95_penalized": [0],
            "paper_dice_mean": [0.929],
            "paper_dice_std": [0.002],
            "paper_hd95_mean": [13.92],
            "paper_hd95_std": [0.34],
        }
    )
    table.to_csv(tmp_path / "table1.csv", index=False)
    pages.study_table_html(tmp_path / "table1.csv", "table1", tmp_path / "table1.html")
    page = (tmp_path / "table1.html").read_text()
    for text in ("17,267,393", "0.900 ± 0.010", "0.929 ± 0.002", "-0.029", "+1.08"):
        assert text in page, text
    assert "<h2>Table 1: architectures</h2>" in page
    # The caption the table stage wrote beside it (its Markdown twin) heads the table, under the title.
    (tmp_path / "table1.md").write_text("**Table 1. Test metrics at 32 px**\n\n| a |\n")
    pages.study_table_html(tmp_path / "table1.csv", "table1", tmp_path / "table1.html")
    page = (tmp_path / "table1.html").read_text()
    assert "<h2>Table 1: architectures</h2>" in page and '<p class="note">Table 1. Test metrics at 32 px</p>' in page
    with pytest.raises(SonosegError, match="table kind"):
        pages.study_table_html(tmp_path / "table1.csv", "table3", tmp_path / "x.html")


def test_seed_summary_averages_lesion_images_like_the_tables():
    # Two seeds; the image without a lesion (Dice 1: empty prediction on an empty truth) is left
    # out of the mean, as the tables leave it out of theirs.
    per_image = pd.DataFrame(
        {
            "method": ["unet"] * 4,
            "seed": [0, 0, 1, 1],
            "sample_id": ["a", "normal", "a", "normal"],
            "dice": [0.5, 1.0, 0.7, 1.0],
            "truth_empty": [False, True, False, True],
        }
    )
    summary = figures.seed_summary(per_image).set_index("method").loc["unet"]
    assert summary["dice_mean"] == pytest.approx(0.6)
    assert summary["dice_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def _front_summary() -> pd.DataFrame:
    # Parameters and mean Dice of five networks and a floor (no cost): the front by parameters is
    # tiny (1k, 0.70) -> small (10k, 0.80) -> large (1M, 0.85); mid (100k, 0.78) is beaten by small,
    # huge (10M, 0.84) by large.
    return pd.DataFrame(
        {
            "method": ["large", "small", "tiny", "mid", "huge", "caliper_reader"],
            "parameters": [1e6, 1e4, 1e3, 1e5, 1e7, np.nan],
            "dice_mean": [0.85, 0.80, 0.70, 0.78, 0.84, 0.90],
        }
    )


def test_front_neighbours_pair_each_network_with_the_front_point_it_is_judged_against():
    pairs = families.front_neighbours(_front_summary(), "parameters")
    assert sorted(pairs) == sorted(
        [
            ("large", "small", True),  # on the front: against the next cheaper front point
            ("small", "tiny", True),
            ("mid", "small", False),  # off it: the cheapest front point as small and at least as good
            ("huge", "large", False),
        ]
    )  # the cheapest point (tiny) has nothing cheaper; the floor has no cost


def test_front_statistics_compare_by_patient_with_holm_over_the_rows():
    # Four patients with two views each; each network's Dice is its mean plus a per-patient offset
    # shared by every network (so the paired differences are the means' differences exactly).
    summary = _front_summary()
    rows = []
    for method, dice in zip(summary["method"], summary["dice_mean"]):
        for patient in range(4):
            for view in range(2):
                offset = (patient - 1.5) * 0.02
                rows.append(
                    {
                        "method": method,
                        "run": "0",
                        "sample_id": f"p{patient}v{view}",
                        "patient": f"p{patient}",
                        "dice": dice + offset,
                    }
                )
    front = families.front_statistics(pd.DataFrame(rows), summary, "parameters", resamples=200)
    by_method = front.set_index("method")
    assert by_method.loc["mid", "reference"] == "small" and not by_method.loc["mid", "on_front"]
    assert by_method.loc["mid", "mean_difference"] == pytest.approx(-0.02)
    assert by_method.loc["large", "mean_difference"] == pytest.approx(0.05)
    assert by_method.loc["large", "reference_parameters"] == 1e4 and by_method.loc["large", "parameters"] == 1e6
    assert (by_method["patients"] == 4).all()
    assert set(front["family"]) == {"every network vs its neighbour on the parameters front"}
    assert front["p_holm"].tolist() == pytest.approx(stats.holm(front["p"]).tolist())


def test_marks_examples_pick_the_most_marked_images_and_count_the_rest(tmp_path, plotted):
    # Three grey images: two light-blue '+' calipers, one, none; and an excluded image with many marks.
    rows = []
    for name, crosses, status in (
        ("two", 2, "included"),
        ("one", 1, "included"),
        ("none", 0, "included"),
        ("bad", 5, "excluded"),
    ):
        image = np.full((120, 160, 3), 90, np.uint8)
        for k in range(crosses):
            x = 30 + 25 * k
            cv2.line(image, (x - 4, 60), (x + 4, 60), (120, 200, 255), 1)
            cv2.line(image, (x, 56), (x, 64), (120, 200, 255), 1)
        cv2.imwrite(str(tmp_path / f"{name}.png"), image[:, :, ::-1])
        rows.append({"sample_id": name, "image": str(tmp_path / f"{name}.png"), "status": status})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    counts = figures.marks_examples(tmp_path / "manifest.csv", tmp_path / "marks.png", count=4)
    assert counts["sample_id"].tolist() == ["two", "one", "none"]  # the excluded image is not shown
    assert counts["mark_pixels"].iloc[0] > counts["mark_pixels"].iloc[1] > 0 == counts["mark_pixels"].iloc[2]
    assert _png_size(tmp_path / "marks.png")[1] > 300  # two images with marks: two rows of three panels
    # Images without marks: a one-line figure saying so, not an error.
    pd.DataFrame(rows[2:3]).to_csv(tmp_path / "plain.csv", index=False)
    assert figures.marks_examples(tmp_path / "plain.csv", tmp_path / "plain.png")["mark_pixels"].tolist() == [0]
    assert _png_size(tmp_path / "plain.png")[1] < 150


# The report's viewer shows a figure at most this wide (Snakemake's report in a 1600-pixel browser window, less
# its sidebar), shrinking a wider one; text under 8 points at the size shown is not legible.
VIEWER_WIDTH, LEGIBLE_POINTS = 1180, 8


def test_every_report_figure_is_legible_at_the_width_the_report_shows_it(small_study, monkeypatch, tmp_path):
    import matplotlib.text

    smallest = {}  # each saved figure's smallest visible text, in points
    real_save = figures.save_figure

    def save(fig, out, **options):
        texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
        smallest[Path(out).name] = min(t.get_fontsize() for t in texts)
        real_save(fig, out, **options)

    monkeypatch.setattr(figures, "save_figure", save)
    root, metrics = small_study["root"], small_study["collect"]()
    figures.figure2(root / "manifest.csv", metrics, root, tmp_path / "figure2.png")
    figures.figure2(root / "manifest.csv", metrics, root, tmp_path / "figure2_all.png", every_method=True)
    figures.cost_accuracy(metrics, tmp_path / "cost.png", summaries=small_study["summaries"])
    cost = pd.DataFrame(
        {"network": ["unet"], "parameters": [UNET_PARAMETERS], "gflops": [1.25], "latency_ms": [16.1]}
    ).assign(backend="onnxruntime", threads=2, cpu="x86")
    cost.to_csv(tmp_path / "cost.csv", index=False)
    figures.cost_accuracy(metrics, tmp_path / "cost_full.png", tmp_path / "cost.csv", small_study["summaries"])
    figures.distributions(metrics, tmp_path / "distributions.png")
    figures.paired_statistics(
        metrics, root / "manifest.csv", tmp_path / "paired.csv", tmp_path / "paired.html", tmp_path / "forest.png"
    )
    figures.sample_grid(root / "manifest.csv", root / "split.csv", tmp_path / "samples.png")
    assert len(smallest) == 7
    for name, points in smallest.items():
        width = _png_size(tmp_path / name)[0]
        shown = points * min(1.0, VIEWER_WIDTH / width)
        assert shown >= LEGIBLE_POINTS, (
            f"{name}: {width} px wide, its smallest text {points} pt shows at {shown:.1f} pt"
        )


def test_cost_figure_numbers_cover_no_marker(tmp_path, monkeypatch):
    # The quick study's networks, where Lighter U-net @128 sits just left of and below U-net in the GFLOPs
    # panel: its number, written up and right of its point, covered U-net's marker. The floors stretch the
    # Dice axis as they did there.
    from matplotlib.transforms import Bbox

    points = {
        "unet": (1.25, 0.848, 17_267_393),
        "light_unet": (0.80, 0.872, 11_000_257),
        "lighter_unet_c128": (1.18, 0.828, 7_944_661),
        "lighter_unet_c1": (0.15, 0.843, 1_983_583),
        "unext": (0.018, 0.765, 1_471_921),
        "malunet": (0.003, 0.591, 177_943),
    }
    floors = {"threshold_baseline": 0.383, "position_prior": 0.328}
    dice = {**{m: d for m, (_, d, _) in points.items()}, **floors}
    per_image = pd.DataFrame(
        [
            {"method": m, "run": m, "training": "fold0/seed0", "seed": 0, "sample_id": f"s{i}", "dice": d}
            for m, d in dice.items()
            for i in range(3)
        ]
    ).assign(truth_empty=False, prediction_empty=False)
    pd.DataFrame(
        {
            "network": list(points),
            "parameters": [n for _, _, n in points.values()],
            "gflops": [x for x, _, _ in points.values()],
            "latency_ms": [16.1, 9.0, 12.5, 1.2, 0.5, 0.7],
        }
    ).assign(backend="onnxruntime", threads=2, cpu="x86").to_csv(tmp_path / "cost.csv", index=False)
    panels = []  # per panel with numbers: x label, [(method, the number's box, its point)], markers' radius
    real_save = figures.save_figure

    def save(fig, out, **options):
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            numbers = [text for text in ax.texts if text.get_gid() in points]
            if numbers:
                placed = [(t.get_gid(), t.get_window_extent(renderer), ax.transData.transform(t.xy)) for t in numbers]
                size = max(line.get_markersize() for line in ax.get_lines() if line.get_marker() == "o")
                panels.append((ax.get_xlabel(), placed, size / 2 * fig.dpi / 72))  # the markers' radius, pixels
        real_save(fig, out, **options)

    monkeypatch.setattr(figures, "save_figure", save)
    figures.cost_accuracy(per_image, tmp_path / "cost.png", tmp_path / "cost.csv", by_patient=False)
    assert [len(placed) for _, placed, _ in panels] == [len(points)] * 3
    for panel, placed, radius in panels:
        for method, box, _ in placed:
            for _, _, (x, y) in placed:
                marker = Bbox.from_extents(x - radius, y - radius, x + radius, y + radius)
                assert not box.overlaps(marker), f"{panel}: the number of {method} covers a marker"
            assert box.count_overlaps([other for _, other, _ in placed if other is not box]) == 0, (panel, method)


def test_data_overview_of_k_folds_counts_each_image_once_per_fold(small_study):
    """With K folds the split file has one row per image and fold: the page gives each fold's sizes and counts
    each image once, in the fold that tests it, never the folds summed."""
    root = small_study["root"]
    manifest = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    included = manifest[manifest["status"] == "included"][["sample_id", "patient", "group"]].reset_index(drop=True)
    rows = []
    for fold in (0, 1):
        for index, sample in included.iterrows():
            tested = index % 2 == fold
            rows.append(
                {**sample, "fold": fold, "split": "test" if tested else ("val" if index == 3 - fold else "train")}
            )
    pd.DataFrame(rows).to_csv(root / "split_folds.csv", index=False)
    pages.data_overview(root / "manifest.csv", root / "split_folds.csv", root / "overview_folds.html")
    page = html.unescape((root / "overview_folds.html").read_text())
    assert "Split sizes in each of the 2 folds" in page
    assert page.count("<td>test</td>") == 2  # a row per fold
    assert "Images per organ in each fold's test part (every image once)" in page
    assert "fold0 test" in page and "fold1 test" in page
    # The organ table's last row: all, then each fold's tested count and their sum, every image once.
    organ = page[page.index("Images per organ in each fold") :]
    assert f"<tr><td>all</td><td>2</td><td>2</td><td>{len(included)}</td></tr>" in organ


def test_figure2_ranks_the_images_with_a_lesion_as_the_tables_average_them(small_study, monkeypatch):
    """A test image without a lesion (a BUSI normal scan) scores 0 for any false positive: it is not the
    figure's worst (nor moves its median), as it is not in the tables' Dice."""
    root = small_study["root"]
    unet_metrics = next(path for path in small_study["metrics"] if "/unet/" in path.as_posix())
    frame = pd.read_csv(unet_metrics)
    frame.loc[frame["sample_id"] == "s3", ["truth_empty", "dice"]] = [True, 0.0]  # a normal scan, a false positive
    frame.to_csv(unet_metrics, index=False)
    ranked = []
    real_choice = figures.figure2_choice
    monkeypatch.setattr(figures, "figure2_choice", lambda dice, seed: ranked.append(dice) or real_choice(dice, seed))
    figures.figure2(root / "manifest.csv", small_study["collect"](), root, root / "figure2.png")
    (dice,) = ranked
    assert "s3" not in dice.index and len(dice) == 3
    assert dict(figures.figure2_choice(dice, 0))["worst"] == "s2"


def test_figures_name_methods_as_a_reader_does_and_tell_every_network_apart():
    """The statistics page's plots named runs by identifier (deeplabv3plus_mobilenetv2--tta), and the cost key
    read "DeepLab v3+" for each of the three DeepLab variants of the breadth study."""
    from sonoseg.analysis.figures import display_name, run_display_name
    from sonoseg.networks import catalog

    names = [display_name(network) for network in catalog.CATALOG]
    assert len(set(names)) == len(names), names
    assert display_name("deeplabv3plus_mobilenetv2") == "DeepLab v3+ (MobileNet)"
    assert display_name("threshold_baseline") == "Threshold baseline"  # its note is the caption's to give
    assert display_name("slim_unet") == "Slim U-net" and display_name("my_net") == "my_net"
    assert run_display_name("unet--tta") == "U-net (tta)"
    assert run_display_name("deeplabv3plus_mobilenetv2--marks-keep--tta") == "DeepLab v3+ (MobileNet; marks-keep, tta)"
    assert run_display_name("ladder--baseline") == "ladder--baseline" and run_display_name("unet") == "U-net"
    ladder_step = {"name": "ladder--adam", "kind": "ladder_step", "method": "lighter_unet_c1", "table_name": "adam"}
    assert figures.run_title(ladder_step) == "Lighter U-net @1, ladder step adam"
    assert figures.run_title({"name": "unet--tta", "kind": "network", "method": "unet"}) == "U-net (tta)"
