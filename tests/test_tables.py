"""Summaries and the study's tables (sonoseg.analysis.tables), and the recipe selection's choice
(sonoseg.training.selection)."""

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import collect, sheet_row, write_patient_manifest, write_run_metrics

from sonoseg.analysis import comparisons, paper, results, stats, tables
from sonoseg.analysis.results import IN_DOMAIN
from sonoseg.data import provenance
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog
from sonoseg.serving import modelio
from sonoseg.study import layout
from sonoseg.training import selection

UNET_PARAMETERS, FCN_PARAMETERS = 17_267_393, 18_643_713


def runs():
    """Per-seed summaries as `sonoseg summarize` writes them: the parameter count is the model files'."""
    return pd.DataFrame(
        [
            {"network": "unet", "seed": 0, "dice": 0.6, "hd95_px": 9.0, "hd95_penalized": 1},
            {"network": "unet", "seed": 1, "dice": 0.7, "hd95_px": 8.0, "hd95_penalized": 0},
            {"network": "fcn8s", "seed": 0, "dice": 0.5, "hd95_px": 12.0, "hd95_penalized": 0},
            {"network": "fcn8s", "seed": 1, "dice": 0.5, "hd95_px": 14.0, "hd95_penalized": 0},
        ]
    ).assign(parameters=[UNET_PARAMETERS] * 2 + [FCN_PARAMETERS] * 2)


def test_table1_rows_in_paper_order_with_mean_std_over_seeds():
    table = tables.network_table(runs(), paper.TABLE1, ["unet", "fcn8s"])
    assert table["network"].tolist() == ["fcn8s", "unet"]  # the paper's row order
    rows = table.set_index("network")
    unet = rows.loc["unet"]
    assert unet["dice_mean"] == pytest.approx(0.65) and unet["dice_std"] == pytest.approx(math.sqrt(0.005))
    # The parameter counts are the summaries' (counted at training), each network its own.
    assert unet["hd95_penalized"] == 1 and unet["parameters"] == UNET_PARAMETERS
    assert rows.loc["fcn8s", "parameters"] == FCN_PARAMETERS
    assert unet["paper_dice_mean"] == 0.929 and unet["paper_hd95_mean"] == 13.92


def test_one_seed_has_no_spread_in_the_table_not_a_spread_of_0(tmp_path):
    """docs/statistics.md: a single run's SD is unknown, not 0; the CSV leaves it empty and no cell shows ± 0."""
    table = tables.network_table(runs()[runs()["seed"] == 0], paper.TABLE1, ["unet", "fcn8s"])
    assert table["dice_std"].isna().all() and table["hd95_std"].isna().all()
    table.to_csv(tmp_path / "table1.csv", index=False)
    assert pd.read_csv(tmp_path / "table1.csv")["dice_std"].isna().all()
    assert "± 0.0" not in tables.plus_minus(0.6, table["hd95_std"].iloc[0], 2)
    assert tables.plus_minus(0.6, 0.05, 2) == "0.60 ± 0.05"


def test_tables_list_only_what_the_study_ran():
    table = tables.network_table(runs()[runs()["network"] == "unet"], paper.TABLE2, ["unet"])
    assert table["network"].tolist() == ["unet"]


def test_weight_decay_choice_is_the_lowest_validation_loss(tmp_path):
    candidates = []
    for decay, losses in ((0.01, [0.5, 0.4, 0.45]), (0.0, [0.6, 0.3, 0.35]), (0.001, [0.3, 0.5, 0.5])):
        path = tmp_path / f"{decay}.csv"
        pd.DataFrame({"epoch": [1, 2, 3], "val_loss": losses, "val_dice": [0.1, 0.2, 0.3]}).to_csv(path, index=False)
        candidates.append(({"weight_decay": decay}, path))
    chosen, table = selection.select(candidates)
    # 0.0 and 0.001 tie at 0.3: the larger decay wins the tie.
    assert chosen == {"weight_decay": 0.001}
    assert table.iloc[0]["best_epoch"] == 1 and len(table) == 3
    # The selection file says the same, and the choices table marks the chosen candidate.
    out = tmp_path / "selection" / "unet.json"
    assert selection.write_selection("unet", candidates, out)[0] == {"weight_decay": 0.001}
    chosen_file = selection.read_selection(out)
    assert chosen_file["chosen"] == {"weight_decay": 0.001} and chosen_file["criterion"] == selection.CRITERION
    choices = selection.choices_table([out])
    assert choices.loc[choices["chosen"], "weight_decay"].tolist() == [0.001] and len(choices) == 3
    # Each cross-validation fold chooses on its own: the table says which fold a row is.
    fold1 = tmp_path / "selection" / "unet" / "fold1.json"
    selection.write_selection("unet", candidates, fold1)
    assert selection.choices_table([out, fold1])["fold"].tolist() == [""] * 3 + ["1"] * 3
    (tmp_path / "not_a_selection.json").write_text("{}")
    with pytest.raises(SonosegError, match="not a recipe selection"):
        selection.read_selection(tmp_path / "not_a_selection.json")


def test_hd95_in_mm_appears_when_a_pixel_spacing_was_given():
    with_mm = runs().assign(hd95_mm=lambda f: f["hd95_px"] * 0.1)
    table = tables.network_table(with_mm, paper.TABLE2, ["unet"])
    assert table.loc[0, "hd95_mm_mean"] == pytest.approx(0.85)
    markdown, _ = tables.to_markdown_and_latex(table, "Network", "caption")
    # Two seeds: the mean alone, as the Dice column gives each seed's value rather than a std of two.
    assert "HD95 mm (ours)" in markdown and "| 0.85 |" in markdown and "±" not in markdown.split("|")[-4]
    five, _ = tables.to_markdown_and_latex(table.assign(seeds=5), "Network", "caption")
    assert "0.85 ± 0.07" in five
    plain, _ = tables.to_markdown_and_latex(
        tables.network_table(runs().assign(hd95_mm=float("nan")), paper.TABLE2, ["unet"]), "Network", "caption"
    )
    assert "mm" not in plain


def write_metrics(path, rows):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def metrics_rows():
    """Four lesion images (one predicted empty) and two images without a lesion."""
    import numpy as np

    from sonoseg.analysis.evaluate import dice_hd95

    def box(left, side=10):
        mask = np.zeros((60, 80), bool)
        if side:
            mask[20 : 20 + side, left : left + side] = True
        return mask

    pairs = [
        (box(12), box(10)),
        (box(14), box(10)),
        (box(10), box(10)),
        (box(0, 0), box(10)),  # lesion
        (box(0, 0), box(0, 0)),
        (box(30), box(0, 0)),
    ]  # no lesion: right, then a false lesion
    return [{"sample_id": f"s{i}", **dice_hd95(p, t)} for i, (p, t) in enumerate(pairs)]


def test_summary_keeps_no_lesion_images_apart_and_adds_hd95_over_both_non_empty(tmp_path):
    rows = metrics_rows()
    metrics = write_metrics(tmp_path / "m.csv", rows)
    history = tmp_path / "h.csv"
    pd.DataFrame({"epoch": [1, 2], "val_loss": [0.5, 0.4], "val_dice": [0.1, 0.2]}).to_csv(history, index=False)
    summary = tables.summarize_run(metrics, history)
    lesion = rows[:4]
    assert summary["lesion_images"] == 4 and summary["test_images"] == 6
    # Main columns: the lesion images only, HD95 with the empty-prediction penalty.
    assert summary["dice"] == pytest.approx(sum(r["dice"] for r in lesion) / 4)
    assert summary["hd95_px"] == pytest.approx(sum(r["hd95_px"] for r in lesion) / 4)
    assert summary["hd95_penalized"] == 1
    # Beside it: HD95 where both masks are non-empty, and how many such images.
    assert summary["hd95_matched_images"] == 3
    assert summary["hd95_matched_px"] == pytest.approx((2.0 + 4.0 + 0.0) / 3)
    # No-lesion images: their count and their own mean Dice.
    assert summary["no_lesion_images"] == 2 and summary["no_lesion_dice"] == pytest.approx(0.5)


def test_tables_show_matched_hd95_and_no_lesion_images(tmp_path):
    metrics = write_metrics(tmp_path / "m.csv", metrics_rows())
    history = tmp_path / "h.csv"
    pd.DataFrame({"epoch": [1], "val_loss": [0.5], "val_dice": [0.1]}).to_csv(history, index=False)
    summary = tables.summarize_run(metrics, history)
    runs_ = pd.DataFrame([{"network": "unet", "seed": s, **summary, "parameters": UNET_PARAMETERS} for s in (0, 1)])
    table = tables.network_table(runs_, paper.TABLE2, ["unet"])
    row = table.iloc[0]
    assert row["hd95_matched_images"] == 6 and row["lesion_images"] == 8 and row["no_lesion_images"] == 4
    markdown, latex = tables.to_markdown_and_latex(table, "Network", "caption")
    assert "HD95 px, both non-empty (ours)" in markdown and "| 2.00 (6/8) |" in markdown
    assert "No-lesion images: Dice (ours)" in markdown and "| 0.500 (n=4) |" in markdown
    assert "(6/8)" in latex
    ladder = tables.ladder_table(runs_.rename(columns={"network": "step"}).assign(step="baseline"), ["baseline"])
    assert ladder.loc[0, "hd95_matched_mean"] == pytest.approx(2.0)


def test_tables_without_lesion_free_images_have_no_such_column():
    markdown, _ = tables.to_markdown_and_latex(tables.network_table(runs(), paper.TABLE2, ["unet"]), "Network", "c")
    assert "No-lesion" not in markdown


def test_summary_reads_emptiness_from_the_policy_when_the_columns_are_absent(tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("truth_empty", "prediction_empty")} for r in metrics_rows()]
    summary = tables.summarize_run(write_metrics(tmp_path / "m.csv", rows), None)
    assert (summary["lesion_images"], summary["hd95_matched_images"], summary["no_lesion_images"]) == (4, 3, 2)


def test_tables_carry_gflops_and_cpu_latency_from_the_cost_table(tmp_path):
    cost = tmp_path / "cost.csv"
    pd.DataFrame(
        [
            {
                "network": "unet",
                "parameters": 17_267_393,
                "gflops": 79.96,
                "latency_ms": 350.5,
                "backend": "onnxruntime",
                "threads": 2,
                "cpu": "Test CPU",
            }
        ]
    ).to_csv(cost, index=False)
    table = tables.with_cost(tables.network_table(runs(), paper.TABLE1, ["unet", "fcn8s"]), cost)
    rows = table.set_index("network")
    assert rows.loc["unet", "gflops"] == pytest.approx(79.96) and math.isnan(rows.loc["fcn8s", "latency_ms"])
    markdown, _ = tables.to_markdown_and_latex(table, "Network", "T" + tables.cost_caption(cost))
    assert "| GFLOPs | CPU ms |" in markdown and "| 79.96 | 350.5 |" in markdown
    assert "onnxruntime, 2 threads, Test CPU" in markdown
    assert "latency: the median of the timed runs (fastest and slowest in tables/cost.csv)" in markdown  # no repeats
    pd.read_csv(cost).assign(repeats=10).to_csv(cost, index=False)
    assert "latency: the median of 10 timed runs (fastest" in tables.cost_caption(cost)


def write_model_file(path, parameters):
    """A model file as training writes it, as far as the summaries read it (the parameter count)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    modelio.save_model(path, network="unet", state_dict={}, parameters=parameters)
    return path


def write_training(out, run, fold, seed, rows=None, history=None, parameters=UNET_PARAMETERS):
    """One training's files where the study keeps them (sonoseg.study.layout): metrics, history, model."""
    write_metrics(layout.training_file(out, run, fold, seed, layout.METRICS), rows or metrics_rows())
    if history is not None:
        history.to_csv(layout.training_file(out, run, fold, seed, layout.HISTORY), index=False)
    if parameters:
        write_model_file(layout.training_file(out, run, fold, seed, layout.MODEL), parameters)


def epochs(n, **columns):
    return pd.DataFrame({"epoch": range(1, n + 1), "val_loss": [0.5] * n, "val_dice": [0.1] * n, **columns})


def other_fold(rows):
    """The same metrics for a second fold's images (other sample ids)."""
    return [{**r, "sample_id": f"f1_{r['sample_id']}"} for r in rows]


def test_summarize_gives_one_row_per_seed_with_the_model_files_parameter_count(tmp_path):
    for seed, n in ((0, 2), (1, 3)):
        write_training(tmp_path, "unet", 0, seed, history=epochs(n))
    summary = tables.summarize(tmp_path, sheet_row("unet", seeds=(0, 1)))
    assert summary["seed"].tolist() == [0, 1] and summary["epochs"].tolist() == [2, 3]
    assert (summary["network"] == "unet").all() and (summary["parameters"] == UNET_PARAMETERS).all()
    assert (summary["run"] == "unet").all()
    first = layout.training_file(tmp_path, "unet", 0, 0, layout.METRICS)
    history = layout.training_file(tmp_path, "unet", 0, 0, layout.HISTORY)
    assert summary.loc[0, "dice"] == pytest.approx(tables.summarize_run(first, history)["dice"])
    # A floor: no training, so no history, no model file and no parameters; the catalog gives its label.
    write_training(tmp_path, "threshold_baseline", 0, 0, parameters=0)
    floor = tables.summarize(tmp_path, sheet_row("threshold_baseline", trained=False))
    assert floor.loc[0, "parameters"] == 0 and pd.isna(floor.loc[0, "epochs"])
    row = tables.network_table(pd.concat([summary, floor]), paper.TABLE1, ["unet", "threshold_baseline"]).iloc[-1]
    assert (row["network"], row["parameters"]) == ("threshold_baseline", 0) and row["label"].startswith("Threshold")
    # A missing metrics file is named.
    with pytest.raises(SonosegError, match="seed7/metrics.csv: per-image metrics missing"):
        tables.summarize(tmp_path, sheet_row("threshold_baseline", seeds=(7,), trained=False))
    # Seeds whose model files disagree on the count are not one network.
    write_model_file(layout.training_file(tmp_path, "unet", 0, 1, layout.MODEL), FCN_PARAMETERS)
    with pytest.raises(SonosegError, match="disagree on the parameter count"):
        tables.summarize(tmp_path, sheet_row("unet", seeds=(0, 1)))


def test_study_tables_are_written_with_a_caption_that_gives_the_scale(tmp_path):
    summaries = []
    for key, name, run in (
        ("network", "unet", "unet"),
        ("step", "baseline", "ladder--baseline"),
        ("step", "adam", "ladder--adam"),
    ):
        write_training(tmp_path, run, 0, 0, history=epochs(2))
        summaries.append(tmp_path / f"{key}_{name}.csv")
        row = sheet_row(run, table_key=key, table_name=name)
        tables.summarize(tmp_path, row).to_csv(summaries[-1], index=False)
    table = tables.study_table("table2", summaries[:1], tmp_path / "tables" / "table2.csv", 32, "area")
    assert table["network"].tolist() == ["unet"] and table.loc[0, "parameters"] == UNET_PARAMETERS
    markdown = (tmp_path / "tables" / "table2.md").read_text()
    assert markdown.startswith("**Table 2. U-net and its lightweight variants")
    # A cell of one run reads "(1 seed)": the caption says how each count of seeds is given, not "± std" alone.
    assert (
        "(the mean over seeds: ± std with 5 seeds or more, each seed's value (Dice; HD95 the mean alone) with 2 to 4"
        in markdown
    )
    assert "(1 seed) |" in markdown
    assert "input 32x32 px (area); HD95 in pixels at each image's original resolution; epochs trained per run: 2" in (
        markdown
    )
    assert "17,267,393" in markdown and (tmp_path / "tables" / "table2.tex").exists()
    ladder = tables.study_table("ladder", summaries[1:], tmp_path / "tables" / "ladder.csv", ladder_network="unet")
    assert ladder["step"].tolist() == ["baseline", "adam"]
    assert "Section 4.2 tuning ladder (unet" in (tmp_path / "tables" / "ladder.md").read_text()
    with pytest.raises(SonosegError, match="unknown table 'table3'"):
        tables.study_table("table3", summaries[:1], tmp_path / "tables" / "table3.csv")
    assert "changes to the study's recipe" not in markdown  # no row changes it: no note
    assert "cross-validation" not in markdown  # one split
    # A second fold's images (other sample ids): the caption says how the table was made.
    write_training(tmp_path, "cv", 0, 0, history=epochs(2))
    write_training(tmp_path, "cv", 1, 0, other_fold(metrics_rows()), history=epochs(3))
    tables.summarize(tmp_path, sheet_row("cv", folds=(0, 1), table_name="unet")).to_csv(
        tmp_path / "cv.csv", index=False
    )
    tables.study_table("table2", [tmp_path / "cv.csv"], tmp_path / "tables" / "cv.csv")
    cv = (tmp_path / "tables" / "cv.md").read_text()
    assert "2-fold cross-validation by patient, every patient tested once" in cv
    # Each fold's training counted: the pooled row alone gives the seed's longest fold (3), not the range.
    assert "epochs trained per run: 2-3" in cv
    # A network trained otherwise than the study's recipe (its overrides): its row names the changes.
    write_training(tmp_path, "malunet", 0, 0, history=epochs(2))
    changed = tmp_path / "malunet.csv"
    tables.summarize(tmp_path, sheet_row("malunet", recipe_changes="precision fp32")).to_csv(changed, index=False)
    beyond = tables.study_table("beyond", [changed], tmp_path / "tables" / "beyond.csv")
    assert beyond.loc[0, "label"] == "MALUNet (2022) [precision fp32]"
    assert "; in [ ]: a row's changes to the study's recipe" in (tmp_path / "tables" / "beyond.md").read_text()
    # With the collected per-image table, each row gets its Dice CI by patient (the summaries name the run).
    manifest = write_patient_manifest(
        tmp_path / "manifest.csv",
        [r["sample_id"] for r in metrics_rows()],
        [f"p{i}" for i in range(len(metrics_rows()))],
    )
    per_image = collect(tmp_path, [sheet_row("ladder--baseline"), sheet_row("ladder--adam")], manifest)
    ladder = tables.study_table("ladder", summaries[1:], tmp_path / "tables" / "ladder.csv", per_image=per_image)
    assert (ladder["dice_ci_low"] <= ladder["dice_mean"]).all() and (
        ladder["dice_mean"] <= ladder["dice_ci_high"]
    ).all()
    # Its caption names the trainings of its own rows: a run of the long table the ladder does not show (trained
    # in another precision) is not named there.
    manifest.with_suffix(".json").write_text(json.dumps({"dataset_fingerprint": "f" * 64}))
    other = per_image.assign(run="elsewhere", method="elsewhere", training_precision="fp32")
    both = pd.concat([per_image.assign(training_precision="bf16"), other], ignore_index=True)
    tables.study_table(
        "ladder", summaries[1:], tmp_path / "tables" / "ladder.csv", per_image=both, manifest_csv=manifest
    )
    caption = (tmp_path / "tables" / "ladder.md").read_text().split("\n")[0]
    assert caption.endswith(" in bf16.**") and "elsewhere" not in caption and "fp32" not in caption


def test_a_run_of_the_statistics_is_one_training_labelled_by_fold_and_seed(tmp_path):
    """Seed s of fold 0 and seed s of fold 1 are two trainings: the run level resamples them apart (with
    the seed alone as label, fold 0 seed 0 and fold 1 seed 0 would share one run)."""
    import numpy as np

    from sonoseg.analysis import stats
    from sonoseg.analysis.results import patient_table

    rng = np.random.default_rng(0)
    samples = []
    for fold in (0, 1):
        fold_samples = [f"f{fold}p{p}v{v}" for p in range(4) for v in (1, 2)]
        samples += fold_samples
        for seed in (0, 1, 2):
            dice = rng.uniform(0.5, 0.9, len(fold_samples))
            write_run_metrics(tmp_path, "unet", fold, seed, fold_samples, dice, 3.0, "max_distance")
    manifest = write_patient_manifest(tmp_path / "manifest.csv", samples, [s[:4] for s in samples])
    per_image = collect(tmp_path, [sheet_row("unet", folds=(0, 1), seeds=(0, 1, 2))], manifest)
    assert sorted(per_image["training"].unique()) == [f"fold{f}/seed{s}" for f in (0, 1) for s in (0, 1, 2)]
    table = patient_table(per_image)
    labels = table.groupby("run")["sample_id"].nunique()
    assert sorted(labels.index) == [f"fold{f}/seed{s}" for f in (0, 1) for s in (0, 1, 2)]
    assert (labels == 8).all()  # each training's own fold's test images, none of the other fold's
    summary = stats.method_table(table, resamples=200)
    assert int(summary["runs"].iloc[0]) == 6


def test_tables_flag_networks_whose_trainings_the_cap_ended(tmp_path):
    def history(ended):
        return epochs(2, steps=[7, 14], ended_by=["", ended]).assign(val_loss=[0.5, 0.4])

    summaries = []
    for network, endings in (("unet", ("rule", "rule")), ("light_unet", ("cap", "rule"))):
        write_training(tmp_path, network, 0, 0, history=history(endings[0]))
        write_training(tmp_path, network, 1, 0, other_fold(metrics_rows()), history=history(endings[1]))
        summaries.append(tmp_path / f"{network}.csv")
        tables.summarize(tmp_path, sheet_row(network, folds=(0, 1))).to_csv(summaries[-1], index=False)
    table = tables.study_table("table2", summaries, tmp_path / "t.csv").set_index("network")
    assert table.loc["unet", "capped_trainings"] == 0 and table.loc["unet", "trainings"] == 2
    assert table.loc["light_unet", "capped_trainings"] == 1 and table.loc["light_unet", "label"].endswith("†")
    markdown = (tmp_path / "t.md").read_text()
    # The dagger says what ended_by == "cap" tells (the cap, not the rule, ended the training), no more.
    assert "†: trainings ended at the epoch cap, not by the stop rule" in markdown
    assert "epochs trained per run: 2 (14 optimizer steps)" in markdown


def test_tables_mark_rows_whose_masks_kept_every_component_not_the_papers_one_lesion(tmp_path):
    """A reviewer set Table 2 beside the paper's numbers, all made with the largest component kept; the default
    validation choice kept every component for some runs (predict.postprocess), and nothing said so."""

    def made_with(rows, rule):
        return [{**row, "postprocess": rule} for row in rows]

    summaries = []
    # unet: both folds' masks kept one lesion; light_unet: fold 1's kept every component; malunet: metrics
    # written before predict recorded the rule (no column: not marked).
    for network, rules in (("unet", ("keep_one", "keep_one")), ("light_unet", ("keep_one", "none"))):
        write_training(tmp_path, network, 0, 0, made_with(metrics_rows(), rules[0]), epochs(2))
        write_training(tmp_path, network, 1, 0, made_with(other_fold(metrics_rows()), rules[1]), epochs(2))
        summaries.append(tmp_path / f"{network}.csv")
        tables.summarize(tmp_path, sheet_row(network, folds=(0, 1))).to_csv(summaries[-1], index=False)
    write_training(tmp_path, "malunet", 0, 0, history=epochs(2))
    summaries.append(tmp_path / "malunet.csv")
    tables.summarize(tmp_path, sheet_row("malunet")).to_csv(summaries[-1], index=False)
    table = tables.study_table("table2", summaries, tmp_path / "t.csv").set_index("network")
    counts = table["every_component_trainings"]
    assert counts[["unet", "light_unet"]].tolist() == [0, 1] and pd.isna(counts["malunet"])  # not known, not 0
    assert table.loc["light_unet", "label"].endswith(tables.EVERY_COMPONENT_MARK)
    assert not table.loc["unet", "label"].endswith(tables.EVERY_COMPONENT_MARK)
    caption = (tmp_path / "t.md").read_text().split("\n")[0]
    assert "§: test masks kept every connected component, not the paper's one lesion" in caption
    assert "every_component_trainings empty: predictions made before sonoseg recorded the post-processing" in caption
    # Without such a row, the caption says nothing of it.
    tables.study_table("table2", summaries[:1], tmp_path / "u.csv")
    assert "§" not in (tmp_path / "u.md").read_text() and "every_component" not in (tmp_path / "u.md").read_text()


def test_a_caption_says_nothing_of_early_stopping_when_the_cap_ended_every_training(tmp_path):
    # What holds whatever ended the trainings: the kept weights are those of the lowest validation loss.
    write_training(tmp_path, "unet", 0, 0, history=epochs(2, steps=[7, 14], ended_by=["", "cap"]))
    tables.summarize(tmp_path, sheet_row("unet")).to_csv(tmp_path / "unet.csv", index=False)
    tables.study_table("table2", [tmp_path / "unet.csv"], tmp_path / "t.csv", 32, "area")
    caption = (tmp_path / "t.md").read_text().split("\n")[0]
    assert "early stopping" not in caption and "still improving" not in caption
    assert (
        "epochs trained per run: 2 (14 optimizer steps), the weights kept those of the epoch of lowest validation"
        in caption
    )
    assert "their running average where the recipe averages them" in caption  # weight averaging, not one step
    assert "†: trainings ended at the epoch cap, not by the stop rule" in caption
    # HD95 px is not a pixel of the 32x32 input: the predictions are scored at the images' own size.
    assert "input 32x32 px (area); HD95 in pixels at each image's original resolution" in caption
    assert r"HD95 in pixels at each image's original resolution" in (tmp_path / "t.tex").read_text()


# What may stand unescaped in a LaTeX table's text: the escapes of its specials and the ± sign (as
# tables.latex_escape writes them); a special left after they are taken out is one LaTeX would read.
LATEX_ESCAPES = re.compile(r"\\(textbackslash|textasciitilde|textasciicircum)\{\}|\\[&%$#_{}]|\$\\pm\$")
LATEX_SPECIALS = re.compile(r"[\\&%$#_{}~^]")


def test_latex_tables_escape_every_cell_header_and_caption(tmp_path):
    row = {
        "label": "net_c1 50% & #2 $5 {a} ~b ^c \\d",
        "parameters": 1234,
        "seeds": 2,
        "dice_per_seed": "0.6 0.7",
        "dice_mean": 0.65,
        "dice_std": 0.05,
        "dice_ci_low": 0.6,
        "dice_ci_high": 0.7,
        "hd95_mean": 3.0,
        "hd95_std": 0.5,
        "paper_dice_mean": 0.7,
    }
    caption = "Ladder (lighter_unet_c1; 95 % CI & # $ {x} ~ ^ \\) Data fingerprint ab_cd."
    tables.write_table(pd.DataFrame([row]), tmp_path / "t.csv", caption, first="Net_work % & # $")
    tex = (tmp_path / "t.tex").read_text().splitlines()
    start, end = tex.index(r"\hline") + 1, tex.index(r"\end{tabular}")
    body = [line for line in tex[start:end] if line != r"\hline"]
    assert len(body) == 2  # the header and the row
    for line in body:
        assert line.endswith(r" \\"), line
        text = LATEX_ESCAPES.sub("", line[: -len(r" \\")])
        assert text.count(" & ") == 5, line  # the six columns' separators, and no other ampersand
        assert not LATEX_SPECIALS.search(text.replace(" & ", " ")), line
    (caption_line,) = [line for line in tex if line.startswith(r"\caption{")]
    assert caption_line.endswith("}")
    assert not LATEX_SPECIALS.search(LATEX_ESCAPES.sub("", caption_line[len(r"\caption{") : -1])), caption_line
    # Nothing is escaped twice, and the deliberate LaTeX (the ± of "mean ± std") stays LaTeX.
    assert r"Dice 95 \% CI (patients, then trainings)" in body[0] and r"Net\_work \% \& \# \$" in body[0]
    assert r"& 3.00 &" in body[1] and r"lighter\_unet\_c1; 95 \% CI" in caption_line
    assert tables.latex_escape("a\\b_c") == r"a\textbackslash{}b\_c"


def test_the_generalization_caption_ends_with_the_data_s_provenance(tmp_path):
    from sonoseg.analysis import generalization
    from sonoseg.data import provenance

    # The main dataset's manifest and the provenance its ingest wrote beside it.
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("sample_id\n")
    fingerprint = "0123456789abcdef" * 4
    (tmp_path / "manifest.json").write_text(json.dumps({"dataset_fingerprint": fingerprint}))
    table = pd.DataFrame(
        [
            {"network": "unet", "label": "U-net", "variant": "single", "dataset": IN_DOMAIN, "role": IN_DOMAIN},
            {"network": "unet", "label": "U-net", "variant": "single", "dataset": "ext", "role": "held_out"},
        ]
    ).assign(run="unet", patients=2, images=3, dice=0.7, ci_low=0.6, ci_high=0.8, drop=0.1)
    table = table.assign(drop_ci_low=0.0, drop_ci_high=0.2).reindex(columns=generalization.COLUMNS)
    source = results.source_line(manifest)
    assert source == provenance.caption_line(fingerprint) and source.startswith("Data fingerprint 0123456789ab;")
    generalization.write(table, tmp_path / "generalization.csv", ["ext: a note."], source)
    caption = (tmp_path / "generalization.md").read_text().split("\n")[0]
    assert caption.endswith(f"ext: a note. {source}")  # as the other tables' captions end
    assert results.source_line(None) == ""
    # The report's figure of the table carries the same line in its PNG's text, and the sonoseg that drew it:
    # a figure taken out of the report still says where its numbers came from.
    from PIL import Image

    assert results.written_source(tmp_path / "generalization.csv") == source
    generalization.plot(table.dropna(axis=1, how="all"), tmp_path / "generalization.png", [], source)
    text = Image.open(tmp_path / "generalization.png").text
    assert text["Source"] == source
    assert text["Software"] == f"sonoseg {provenance.sonoseg_version()} at commit {provenance.sonoseg_commit()}"
    (tmp_path / "generalization.md").unlink()  # a table without its Markdown twin names no source
    assert results.written_source(tmp_path / "generalization.csv") == ""


def test_the_ci_column_says_seeds_only_where_a_row_has_several(tmp_path):
    # With one training per row the bootstrap resamples patients only: the header must not claim seeds.
    row = {"label": "U-net", "parameters": 1, "dice_per_seed": "0.7", "dice_mean": 0.7, "dice_std": float("nan")}
    row |= {"dice_ci_low": 0.6, "dice_ci_high": 0.8, "hd95_mean": 3.0, "hd95_std": float("nan")}
    row |= {"paper_dice_mean": 0.7}
    one = tables.to_markdown_and_latex(pd.DataFrame([{**row, "seeds": 1}]), "Network", "c")[0]
    assert "| Dice 95 % CI (patients) |" in one and "trainings)" not in one
    several = pd.DataFrame([{**row, "seeds": 1}, {**row, "label": "Light", "seeds": 3}])
    assert "| Dice 95 % CI (patients, then trainings) |" in tables.to_markdown_and_latex(several, "Network", "c")[0]


def test_a_backbone_trained_from_scratch_is_marked_where_the_paper_s_implementation_starts_it_from_imagenet(
    tmp_path,
):
    # Every network whose paper figure comes from an implementation that loads ImageNet weights by default
    # (paper.py) is one with a backbone and a figure in the paper; the extra Xception row has no figure.
    from sonoseg.networks import catalog

    with_figure = {n for n, row in paper.TABLE1.items() if not math.isnan(row[1]) and catalog.has_backbone(n)}
    assert set(paper.BACKBONE_IMAGENET_BY_DEFAULT) == with_figure
    assert {"deeplabv3plus_mobilenetv2", "fcn8s"} <= with_figure and "deeplabv3plus_xception" not in with_figure

    def table1(name, weights):
        """Table 1 of U-net and DeepLab v3+ (MobileNet), the latter's run sheet giving ``weights``."""
        summaries = []
        for network, backbone in (("deeplabv3plus_mobilenetv2", weights), ("unet", "")):
            write_training(tmp_path / name, network, 0, 0, history=epochs(2))
            summaries.append(tmp_path / name / f"{network}.csv")
            row = sheet_row(network, pretrained_backbone=backbone)
            tables.summarize(tmp_path / name, row).to_csv(summaries[-1], index=False)
        table = tables.study_table("table1", summaries, tmp_path / name / "table1.csv").set_index("network")
        return table, (tmp_path / name / "table1.md").read_text(), (tmp_path / name / "table1.tex").read_text()

    # Trained from scratch (the run sheet names no weights file): the row is marked, the caption says why.
    table, markdown, tex = table1("scratch", "")
    assert not table.loc["deeplabv3plus_mobilenetv2", "pretrained_backbone"]
    assert table.loc["deeplabv3plus_mobilenetv2", "label"] == f"DeepLab v3+ (MobileNet) {tables.SCRATCH_MARK}"
    assert table.loc["unet", "label"] == "U-net"  # no backbone: nothing to mark
    assert f"| DeepLab v3+ (MobileNet) {tables.SCRATCH_MARK} |" in markdown
    caption = markdown.split("\n")[0]
    assert f"{tables.SCRATCH_MARK}: backbone trained from scratch here" in caption
    assert "starts it from ImageNet weights by default (the paper does not say how it initialised it)" in caption
    assert f"DeepLab v3+ (MobileNet) {tables.SCRATCH_MARK} &" in tex
    assert f"{tables.SCRATCH_MARK}: backbone trained from scratch here" in tex.split(r"\caption{")[1]
    # The same network started from ImageNet weights: no mark, no note.
    table, markdown, tex = table1("pretrained", "/weights/mobilenet_v2.pth")
    assert table.loc["deeplabv3plus_mobilenetv2", "pretrained_backbone"]
    assert table.loc["deeplabv3plus_mobilenetv2", "label"] == "DeepLab v3+ (MobileNet)"
    assert tables.SCRATCH_MARK not in markdown and tables.SCRATCH_MARK not in tex
    # The mark follows the summaries' record, whatever the network: FCN-8s from scratch is marked, from
    # ImageNet it is not; summaries from before the record say nothing, so nothing is claimed.
    for pretrained, marked in ((False, True), (True, False)):
        row = tables.network_table(runs().assign(pretrained_backbone=pretrained), paper.TABLE1, ["unet", "fcn8s"])
        assert row.set_index("network").loc["fcn8s", "label"].endswith(tables.SCRATCH_MARK) == marked
    unknown = tables.network_table(runs(), paper.TABLE1, ["unet", "fcn8s"]).set_index("network")
    assert unknown.loc["fcn8s", "label"] == "FCN-8s" and pd.isna(unknown.loc["fcn8s", "pretrained_backbone"])


def test_the_ladder_caption_names_the_paper_s_network_and_says_when_ours_is_another(tmp_path):
    summaries = []
    for step in ("baseline", "adam"):
        write_training(tmp_path, f"ladder--{step}", 0, 0, history=epochs(2))
        summaries.append(tmp_path / f"{step}.csv")
        row = sheet_row(f"ladder--{step}", table_key="step", table_name=step)
        tables.summarize(tmp_path, row).to_csv(summaries[-1], index=False)

    def ladder(network):
        tables.study_table("ladder", summaries, tmp_path / network / "ladder.csv", ladder_network=network)
        return (tmp_path / network / "ladder.md").read_text(), (tmp_path / network / "ladder.tex").read_text()

    # The paper's ladder is U-net's (Section 4.2); the quick study's runs on Lighter U-net @1.
    assert paper.LADDER_NETWORK == "unet"
    markdown, tex = ladder("lighter_unet_c1")
    caption = markdown.split("\n")[0]
    assert "the paper's column: its ladder, on U-net (its Section 4.2)" in caption
    assert "ours runs on Lighter U-net @1 (lighter_unet_c1), not on U-net" in caption
    assert "| Dice (paper, U-net) |" in markdown and "& Dice (paper, U-net) \\\\" in tex
    assert r"ours runs on Lighter U-net @1 (lighter\_unet\_c1), not on U-net" in tex
    # A ladder on U-net, as the paper's: the caption names the paper's network and claims no difference.
    markdown, tex = ladder("unet")
    assert "the paper's column: its ladder, on U-net" in markdown and "| Dice (paper, U-net) |" in markdown
    assert "ours runs on" not in markdown and "ours runs on" not in tex


def test_the_ladder_marks_its_capped_steps_and_says_when_a_step_changed_nothing(tmp_path):
    """Tables 1 and 2 mark a row whose trainings hit the epoch cap; the ladder did not. And a step whose change
    never took effect (lr_plateau where validation never stalled long enough) read as a measured +0.000."""
    summaries = []
    for step, ended in (("baseline", ""), ("adam", "cap")):
        write_training(tmp_path, f"ladder--{step}", 0, 0, history=epochs(2, steps=[7, 14], ended_by=["", ended]))
        summaries.append(tmp_path / f"{step}.csv")
        tables.summarize(tmp_path, sheet_row(f"ladder--{step}", table_key="step", table_name=step)).to_csv(
            summaries[-1], index=False
        )
    tables.study_table("ladder", summaries, tmp_path / "ladder.csv", ladder_network="unet")
    labels = pd.read_csv(tmp_path / "ladder.csv").set_index("step")["label"]
    assert labels["adam"] == f"adam {tables.CAPPED_MARK}" and labels["baseline"] == "baseline"
    markdown = (tmp_path / "ladder.md").read_text()
    assert "†: trainings ended at the epoch cap, not by the stop rule" in markdown.split("\n")[0]
    assert "| adam † |" in markdown

    runs = pd.DataFrame(
        {
            "step": ["baseline", "adam", "lr_plateau"],
            "run": [f"ladder--{s}" for s in ("baseline", "adam", "lr_plateau")],
        }
    )
    scores = {
        "ladder--baseline": [0.1, 0.2, 0.3],
        "ladder--adam": [0.4, 0.5, 0.6],
        "ladder--lr_plateau": [0.4, 0.5, 0.6],
    }
    per_image = pd.DataFrame(
        [
            {"run": run, "fold": "0", "seed": "0", "sample_id": f"s{i}", "dice": dice}
            for run, values in scores.items()
            for i, dice in enumerate(values)
        ]
    ).sample(frac=1, random_state=0)  # the long table's row order is no guide
    note = tables.unchanged_steps_note(runs, per_image)
    assert "lr_plateau scored exactly as adam on every test image" in note and "as baseline" not in note
    per_image.loc[(per_image["run"] == "ladder--lr_plateau") & (per_image["sample_id"] == "s2"), "dice"] = 0.61
    assert tables.unchanged_steps_note(runs, per_image) == ""
    assert tables.unchanged_steps_note(runs, None) == ""


def paired_rows(shifts: dict[str, float], images: int) -> list[dict]:
    """Long-table rows of runs on the same images (one per patient): each run's Dice rising with the image,
    shifted by the run's ``shifts`` value."""
    return [
        {
            "run": run,
            "method": run,
            "fold": "0",
            "seed": "0",
            "training": "fold0/seed0",
            "sample_id": f"s{i}",
            "patient": f"p{i}",
            "dice": 0.5 + 0.04 * i + shift,
        }
        for run, shift in shifts.items()
        for i in range(images)
    ]


def test_a_paired_tables_family_names_the_pairs_holm_was_over():
    """`sonoseg paired --pairs` with one pair said "Holm over the networks and datasets", the study's family,
    beside a p corrected over that pair alone."""
    shifts = {"unet": 0.0, "unet--tta": 0.05, "light_unet": 0.0, "light_unet--tta": -0.01}
    per_image = pd.DataFrame(paired_rows(shifts, 8))
    one = comparisons.paired_runs(per_image, [("unet", "unet--tta")], family="tta")
    assert one["family"].iloc[0] == "tested with flip averaging vs without (same models), Holm over this table's 1 pair"
    two = comparisons.paired_runs(per_image, [("unet", "unet--tta"), ("light_unet", "light_unet--tta")], family="tta")
    assert set(two["family"]) == {"tested with flip averaging vs without (same models), Holm over this table's 2 pairs"}
    assert two["p_holm"].iloc[0] >= one["p_holm"].iloc[0]  # the larger family corrects more


def test_the_augmentation_table_says_which_option_the_study_adopted_and_for_whom(tmp_path, capsys):
    """The table paired the two options and never said which one the study's networks trained with: a reader had
    to find it in selection/<network>/augmentation.json. Its caption now says it, from that file."""
    from sonoseg.study import cli
    from sonoseg.training import augmentation_choice

    rows = [{**row, "lesion_pixels": 10, "dataset": IN_DOMAIN} for row in paired_rows({"a": 0.0, "b": -0.2}, 6)]
    results.write_table(pd.DataFrame(rows), tmp_path / "per_image.csv.gz")
    choice = {"chosen": {"ultrasound_augment": False}, "chosen_name": "paper", "dataset": "pymust_far"}
    choice |= {"dice": {"paper": 0.7291, "ultrasound": 0.4572}, "network": "lighter_unet_c1", "patients": 24}
    augmentation_choice.write_choice(choice, tmp_path / "augmentation.json")
    out = tmp_path / "augmentation.csv"
    common = ["paired", "--pairs", "a:b", "--per-image", str(tmp_path / "per_image.csv.gz"), "--family", "augmentation"]
    given = ["--choice", str(tmp_path / "augmentation.json"), "lighter_unet_c1", "unet"]
    assert cli.main([*common, *given, "--out", str(out)]) == 0
    caption = out.with_suffix(".md").read_text().partition("\n\n")[0]
    assert (
        "Adopted: Lighter U-net @1's choice, the paper augmentation (mean Dice on pymust_far, the development set: "
        "0.729 paper against 0.457 ultrasound; 24 patients); the networks trained with it: Lighter U-net @1, U-net."
        in caption
    )
    # A file that is no choice is refused, named, before the table is written.
    (tmp_path / "other.json").write_text(json.dumps({"chosen": {}}))
    assert cli.main([*common, "--choice", str(tmp_path / "other.json"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "other.json: not an augmentation choice (no chosen_name, dice, dataset, network)" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_a_paired_table_has_a_markdown_twin_that_says_where_its_numbers_come_from(tmp_path):
    """tta.csv, ensemble.csv and augmentation.csv were CSV alone: no caption, so nothing named the data or the
    code that made them. `sonoseg paired` now writes a Markdown twin whose caption ends with the provenance."""
    from sonoseg.study import cli

    rows = [
        {
            **row,
            "lesion_pixels": 10,
            "dataset": IN_DOMAIN,
            "training_commit": "abc1234",
            # a training resumed in another precision lists both
            "training_precision": "bf16 + channels_last" if row["sample_id"] != "s0" else "fp32",
        }
        for row in paired_rows({"unet": 0.0, "unet--tta": 0.05}, 6)
    ]
    results.write_table(pd.DataFrame(rows), tmp_path / "per_image.csv.gz")
    manifest = write_patient_manifest(
        tmp_path / "manifest.csv", [f"s{i}" for i in range(6)], [f"p{i}" for i in range(6)]
    )
    manifest.with_suffix(".json").write_text(json.dumps({"dataset_fingerprint": "f" * 64}))
    out = tmp_path / "tables" / "tta.csv"
    common = [
        "paired",
        "--pairs",
        "unet:unet--tta",
        "--per-image",
        str(tmp_path / "per_image.csv.gz"),
        "--family",
        "tta",
    ]
    assert cli.main([*common, "--manifest", str(manifest), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    caption, _, body = out.with_suffix(".md").read_text().partition("\n\n")
    assert caption.startswith("**Paired by patient: tested with flip averaging vs without (same models), Holm over")
    assert caption.endswith(
        f"Data fingerprint {'f' * 12}; sonoseg {provenance.sonoseg_version()} at commit "
        f"{provenance.sonoseg_commit()}; models trained at commit abc1234 in fp32 / bf16 + channels_last.**"
    )  # the precision too: a bf16 study's table and an fp32 one's, whose numbers differ, had one caption
    assert provenance.caption_line("f" * 64, "", "fp32").endswith("; models trained in fp32.")
    assert f"| `unet--tta` | `unet` | {table['dice_method'][0]:.3f} | {table['dice_reference'][0]:.3f} | +0.050" in body
    significant = "yes" if table["significant"][0] else "no"  # decided with the CI as well: said, not left to p
    # The images each pair was compared on, named: the runs' names said it only for an external set (--on-<set>).
    assert table["dataset"].tolist() == [IN_DOMAIN]
    assert body.rstrip().endswith(f"| {table['p_holm'][0]:.3g} | {significant} | 6 | {IN_DOMAIN} |")
    assert stats.value_text(-1.2e-05, signed=True) == "-1.2e-05" and stats.value_text(0.0512, signed=True) == "+0.051"
    # A bound that rounds to 0 keeps its sign: "[-0.286, -0.000]" read as a drop whose CI excludes 0.
    assert stats.ci_text(-0.286, -0.0002) == "[-0.286, -2.0e-04]" and stats.ci_text(0.0, 0.5) == "[0.000, 0.500]"
    assert stats.ci_text(0.0002, 0.0009) == "[0.000, 0.001]"  # a Dice has no sign to lose
    # The report shows it too (it showed none of the paired tables), captioned by its Markdown twin.
    from sonoseg.analysis import pages

    assert cli.main(["report-table", "tta", "--table", str(out), "--out", str(tmp_path / "tta.html")]) == 0
    page = (tmp_path / "tta.html").read_text()
    assert "Flip averaging: each network" in page and "models trained at commit abc1234" in page
    assert "<th>Significant</th>" in page and f"<td>{significant}</td>" in page and "<th>Dataset</th>" in page
    assert pages.TABLE_TITLES.keys() >= set(catalog.PAIRED_TABLES)


def test_a_tables_caption_says_what_its_means_are_over():
    """A reviewer read a cell's "n = 1" as a sample size, and no table page said the test set's size."""
    per_image = pd.DataFrame(
        {
            "run": ["unet"] * 4 + ["unet--on-ext"] * 3,
            "dataset": ["in-domain"] * 4 + ["ext"] * 3,
            "sample_id": ["a", "b", "c", "d", "x", "y", "z"],
            "patient": ["P1", "P1", "P2", "P3", "Q1", "Q2", "Q3"],
            "truth_empty": [False, False, False, True, False, False, False],
        }
    )
    note = tables.test_set_note(per_image, ["unet", "unet--on-ext"])
    assert note == "; test set: 3 images with a lesion of 2 patient groups (and 1 without, counted apart)"
    assert tables.test_set_note(per_image, ["light_unet"]) == "" and tables.test_set_note(None, ["unet"]) == ""
    assert tables.seeds_cell(pd.Series({"dice_mean": 0.8, "dice_std": 0.0, "seeds": 1, "dice_per_seed": "0.8"})) == (
        "0.800 (1 seed)"
    )


def test_a_label_holding_a_pipe_stays_in_its_markdown_cell():
    """A probe's network labelled "Mini | net_v3" split its rows into an extra column in every Markdown table
    (the HTML escaped it). Every Markdown table's rows come from one helper, which escapes it."""
    from sonoseg.analysis import results

    row = results.markdown_row(["Mini | net_v3 <b>", "0.812", "two\nlines"])
    assert row == "| Mini \\| net_v3 <b> | 0.812 | two lines |"
    assert row.replace("\\|", "").count("|") == 4  # three cells
    assert results.markdown_header(["A", "B"]) == ["| A | B |", "|---|---|"]
