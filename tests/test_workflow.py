"""The real Snakemake workflow on tiny configs: validation, a full run, incrementality, the DAG."""

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import BIN, TINY, jobs_of, run_snakemake, study_dag, synth_folder, write_config

from sonoseg.serving.cost import COLUMNS as COST_COLUMNS


def test_schema_rejects_unknown_key_and_bad_value(workflow_copy):
    bad_key = {**TINY, "train": {**TINY["train"], "learning_rat": 0.1}}
    result = run_snakemake(["-n", "--cores", "1", "--configfile", write_config(workflow_copy, bad_key)], workflow_copy)
    assert result.returncode != 0
    assert "learning_rat" in result.stderr + result.stdout
    bad_value = {**TINY, "preprocess": {"size": 100}}
    result = run_snakemake(
        ["-n", "--cores", "1", "--configfile", write_config(workflow_copy, bad_value)], workflow_copy
    )
    assert result.returncode != 0
    assert "100 is not a multiple of 32" in result.stderr + result.stdout


@pytest.mark.slow
def test_tiny_study_end_to_end_then_nothing_to_do(workflow_copy, tiny_study, tmp_path, monkeypatch):
    # One network alone: its dry run, in a copy where nothing has run yet, lists only that network's
    # jobs (and the shared data jobs).
    dry = run_snakemake(
        ["results/tiny/networks/unet.csv", "-n", "--cores", "1", "--configfile", write_config(workflow_copy, TINY)],
        workflow_copy,
    )
    assert dry.returncode == 0, dry.stderr
    assert "lighter_unet_c1" not in dry.stdout and "ladder" not in dry.stdout
    assert jobs_of(dry.stdout)["train"] == 1
    # The ladder alone (README): its steps' trainings, not the study's networks, floors or tables.
    dry = run_snakemake(["ladder", "-n", "--cores", "1", "--configfile", "config/tiny.yaml"], workflow_copy)
    assert dry.returncode == 0, dry.stderr
    ladder_jobs = jobs_of(dry.stdout)
    assert ladder_jobs["train"] == len(TINY["ladder"]["steps"]), ladder_jobs
    assert "collect" not in ladder_jobs and "table" not in ladder_jobs and "cost" not in ladder_jobs
    runs = set(re.findall(r"wildcards: run=([^,\s]+)", dry.stdout))
    assert runs == {f"ladder--{step['name']}" for step in TINY["ladder"]["steps"]}, runs

    # The whole study, run once for the session by the tiny_study fixture (`snakemake all`, which must succeed).
    workdir, config, out = tiny_study.workdir, tiny_study.config, tiny_study.out
    for table in ("table1", "table2", "ladder"):
        frame = pd.read_csv(out / "tables" / f"{table}.csv")
        # Table 1 and Table 2 end with the methods without training (on by default): floors and a reference.
        untrained = ["threshold_baseline", "caliper_reader", "position_prior", "dark_in_prior"]
        assert len(frame) == {"table1": 5, "table2": 6, "ladder": 2}[table]
        if table != "ladder":
            assert frame["network"].tail(4).tolist() == untrained
            assert (frame["parameters"].tail(4) == 0).all()
            assert frame["label"].iloc[-3].startswith("Caliper reader (reference:")
        assert frame[["dice_mean", "hd95_mean"]].notna().all().all()
        assert (out / "tables" / f"{table}.md").read_text().count("|") > 10
        assert "input 32x32 px (area)" in (out / "tables" / f"{table}.md").read_text()  # the caption's scale
        assert "\\begin{tabular}" in (out / "tables" / f"{table}.tex").read_text()
    cost = pd.read_csv(out / "tables" / "cost.csv")
    assert list(cost.columns) == COST_COLUMNS
    assert sorted(cost["network"]) == ["lighter_unet_c1", "unet"] and (cost["latency_ms"] > 0).all()
    choices = pd.read_csv(out / "tables" / "selection.csv")
    assert sorted(choices["network"].unique()) == ["lighter_unet_c1"]  # the one network whose decay is auto
    assert choices["chosen"].sum() == 1 and (choices["criterion"] == "lowest validation loss").all()
    # Its Markdown twin is captioned with the data and the commit that made it, as every table is.
    selection_md = (out / "tables" / "selection.md").read_text()
    assert selection_md.startswith("**The recipe selection") and "Data fingerprint " in selection_md
    # the header names the column, the chosen row marks it: one candidate chosen
    assert "unknown" not in selection_md.split("\n\n", 1)[0] and selection_md.count("| chosen |") == 2
    # Its seed-0 run is the chosen candidate itself (same network, seed, recipe and data), not a retraining.
    chosen = f"{choices.loc[choices['chosen'], 'weight_decay'].item():g}"
    for name in ("model.pt", "history.csv"):
        adopted = (out / "runs" / "lighter_unet_c1" / "fold0" / "seed0" / name).read_bytes()
        assert adopted == (out / "runs" / f"lighter_unet_c1--wd{chosen}" / "fold0" / "seed0" / name).read_bytes()
    # ... and its recipe is the one the selection chose.
    assert json.loads((out / "runs" / "lighter_unet_c1" / "fold0" / "recipe.json").read_text())[
        "weight_decay"
    ] == float(chosen)
    assert "adopted" in (out / "logs" / "train" / "lighter_unet_c1" / "fold0" / "seed0.log").read_text()
    # preprocess.interpolation (area in TINY) reaches the caches and, through training, the model files.
    assert str(np.load(out / "data" / "cache" / "keep" / "fold0" / "test.npz")["interpolation"]) == "area"
    model = torch.load(out / "runs" / "unet" / "fold0" / "seed0" / "model.pt", weights_only=False)
    assert model["input_interpolation"] == "area"
    metrics = pd.read_csv(out / "runs" / "unet" / "fold0" / "seed0" / "metrics.csv", dtype={"prediction_commit": str})
    split = pd.read_csv(out / "data" / "split.csv")
    assert sorted(metrics["sample_id"]) == sorted(split.loc[split["split"] == "test", "sample_id"])
    # The baseline is a run like a network's: predictions, per-image metrics and a summary, no history.
    baseline = pd.read_csv(
        out / "runs" / "threshold_baseline" / "fold0" / "seed0" / "metrics.csv", dtype={"prediction_commit": str}
    )
    assert sorted(baseline["sample_id"]) == sorted(metrics["sample_id"])
    assert len(list((out / "runs" / "threshold_baseline" / "fold0" / "seed0" / "predictions").glob("*.png"))) == len(
        baseline
    )
    summary = pd.read_csv(out / "networks" / "threshold_baseline.csv")
    assert len(summary) == 1 and summary["epochs"].isna().all() and (summary["parameters"] == 0).all()
    # Each test row names the rule its mask was made with: a trained run's the validation choice recorded beside
    # its models, a floor's the paper's one lesion; the tables count and mark a choice of every component.
    assert (baseline["postprocess"] == "keep_one").all()
    chosen = json.loads((out / "runs" / "unet" / "fold0" / "postprocess.json").read_text())["chosen"]
    assert (metrics["postprocess"] == chosen).all()
    # ... and the code that made it: the commit a study's rows were predicted at (an upgrade's rerun keeps some).
    from sonoseg.data.provenance import sonoseg_commit

    assert set(metrics["prediction_commit"]) == set(baseline["prediction_commit"]) == {sonoseg_commit()}
    table2 = pd.read_csv(out / "tables" / "table2.csv").set_index("network")
    assert (table2.loc["unet", "every_component_trainings"] > 0) == (chosen == "none")
    assert table2.loc["unet", "label"].endswith("§") == (chosen == "none")
    assert not (out / "runs" / "threshold_baseline" / "recipe.json").exists()
    assert not list((out / "runs" / "threshold_baseline").rglob("model.pt"))
    # The run sheet, as a person reads it: one row per run, every kind.
    sheet = pd.read_csv(out / "runs.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert set(sheet["kind"]) == {"network", "candidate", "ladder_step", "baseline", "external"}
    # The built-in external sets (config.yaml): every network's models segment each in full, and the
    # generalization table sets their Dice beside the in-domain one.
    external = sheet[sheet["kind"] == "external"]
    assert sorted(external["name"]) == sorted(
        f"{n}--on-{d}" for n in TINY["networks"] for d in ("pymust_far", "pymust_fresh", "pymust_heldout")
    )
    generalization = pd.read_csv(out / "tables" / "generalization.csv")
    assert set(generalization["dataset"]) == {"in-domain", "pymust_far", "pymust_fresh", "pymust_heldout"}
    patients = generalization.groupby("dataset")["patients"].unique()
    assert (patients["pymust_heldout"] == [16]).all() and (patients["pymust_fresh"] == [32]).all()
    assert (out / "report" / "generalization.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(sheet["name"])
    # Ladder runs are runs like any other: their per-seed files parse as <run>/seed<N>, curves included.
    assert (out / "report" / "curves" / "ladder--adam.png").stat().st_size > 0
    history = pd.read_csv(out / "runs" / "unet" / "fold0" / "seed0" / "history.csv")
    assert list(history.columns) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_dice",
        "val_loss_monitored",
        "lr",
        "seconds",
        "steps",
        "ended_by",
        "train_seconds",
        "bn_seconds",
        "val_seconds",
        "precision",
        "device",
        "processor",
        "commit",
    ]
    # What each epoch ran on (trainings.csv gathers it per training): this machine's CPU, in fp32 or bf16.
    assert set(history["device"]) == {"cpu"} and history["precision"].iloc[0].split(" ")[0] in ("fp32", "bf16")
    trainings = pd.read_csv(out / "trainings.csv")
    assert trainings["processor"].notna().all() and (trainings["device"] == "cpu").all()
    assert history["ended_by"].iloc[-1] in ("rule", "cap")  # one epoch allowed: the cap ended it
    assert "epoch 1" in (out / "logs" / "train" / "unet" / "fold0" / "seed0.log").read_text()

    again = run_snakemake(["all", "--cores", "2", "--configfile", config], workdir)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # A model deleted (to have it trained again, or lost) is made again, with what was made from it; Snakemake
    # alone said "Nothing to be done" while the tables made from it were there. So are deleted masks.
    model = out / "runs" / "unet" / "fold0" / "seed0" / "model.pt"
    kept = model.read_bytes()
    model.unlink()
    shutil.rmtree(out / "runs" / "threshold_baseline" / "fold0" / "seed0" / "predictions")
    dry = run_snakemake(["all", "-n", "--cores", "1", "--configfile", config], workdir)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert re.search(r"rule train:\n(.*\n)*?\s+output: \S*runs/unet/fold0/seed0/model.pt", dry.stdout), dry.stdout[
        -3000:
    ]
    assert "runs/threshold_baseline/fold0/seed0/predictions" in dry.stdout
    redone = run_snakemake(["all", "--cores", "2", "--configfile", config], workdir)
    assert redone.returncode == 0, redone.stderr[-3000:]
    assert model.read_bytes() == kept  # the same training again, bit for bit

    # Settings no run reads (how often a checkpoint is written, how many jobs share a GPU) rerun nothing: not
    # the run sheet, nor the long table and the tables after it (the sheet's rule leaves them out of its config).
    quiet = {**TINY, "train": {**TINY["train"], "checkpoint_seconds": 5, "runs_per_gpu": 2, "threads": 2}}
    dry = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workdir, quiet, "checkpoints.yaml")], workdir
    )
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]

    # The training device reruns what runs a model, never the floors and references, which predict without one.
    on_auto = {**TINY, "train": {**TINY["train"], "device": "auto"}}
    dry = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workdir, on_auto, "device.yaml")], workdir
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    predicted = [
        line for line in dry.stdout.splitlines() if line.strip().startswith("output:") and "/predictions" in line
    ]
    assert predicted and not any(
        floor in line for line in predicted for floor in ("threshold_baseline", "position_prior")
    )

    # Changing one network's settings reruns only that network (and the tables that list it).
    # (Changed configs get their own file names: the study's own config stays as the run was made.)
    overrides = {**TINY["train"]["overrides"], "unet": {"learning_rate": 0.001}}
    changed = {**TINY, "train": {**TINY["train"], "overrides": overrides}}
    dry = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workdir, changed, "changed.yaml")], workdir
    )
    assert dry.returncode == 0, dry.stderr
    jobs = jobs_of(dry.stdout)
    # Its predictions: its own test images, and the three built-in external sets in one job (one model load).
    assert jobs.get("train") == 1 and jobs.get("recipe") == 1
    assert jobs.get("predict") == 1 and jobs.get("predict_on_pymust_far_on_pymust_fresh_on_pymust_heldout") == 1
    assert jobs.get("choose_postprocess") == 1  # the new models' post-processing, chosen again
    # What is redone (the jobs' outputs; the collect job lists every run's files as its inputs).
    redone = "\n".join(line for line in dry.stdout.splitlines() if line.strip().startswith("output:"))
    assert "runs/unet/fold0/seed0/model.pt" in redone and "runs/lighter_unet_c1/fold0/seed0/model.pt" not in redone
    assert "runs/ladder--" not in redone

    # The precision is part of the recipe: changing it retrains every network, candidate and ladder step.
    bf16 = {**TINY, "train": {**TINY["train"], "precision": "bf16"}}
    dry = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workdir, bf16, "bf16.yaml")], workdir
    )
    assert dry.returncode == 0, dry.stderr
    jobs = jobs_of(dry.stdout)
    # U-net, Lighter U-net @1's two candidates and its run (which adopts one of them), two ladder steps.
    assert jobs.get("train") == 6 and jobs.get("recipe") == 6

    # Determinism: retraining the same network with the same seed gives the same history,
    # predictions and metrics, byte for byte (wall-clock seconds aside). Only U-net's chain is rerun
    # (train, the post-processing choice, predict and score), the files compared being U-net's, and in
    # a copy of the study, so the session's study stays as it was made for the tests that read it after.
    rerun_dir = tmp_path / "rerun"
    shutil.copytree(workdir, rerun_dir, symlinks=True)
    rerun_out = rerun_dir / "results" / "tiny"
    before = {p.name: p.read_bytes() for p in (out / "runs" / "unet" / "fold0" / "seed0" / "predictions").glob("*.png")}
    metrics_before = (out / "runs" / "unet" / "fold0" / "seed0" / "metrics.csv").read_bytes()
    # The README's "one network alone" target, run for real: U-net's chain and nothing else.
    target = "results/tiny/networks/unet.csv"
    # A forced rerun is the training it was and adopts its finished copy; told not to, it trains again.
    forced = [target, "--cores", "2", "--configfile", config, "--forcerun", "train"]
    rerun = run_snakemake(forced, rerun_dir, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    rerun_log = rerun_out / "logs" / "train" / "unet" / "fold0" / "seed0.log"
    assert "adopted" in rerun_log.read_text() and "epoch 1" not in rerun_log.read_text()
    monkeypatch.setenv("SONOSEG_ADOPT_FINISHED", "0")
    rerun = run_snakemake(forced, rerun_dir, timeout=1200)
    monkeypatch.delenv("SONOSEG_ADOPT_FINISHED")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "adopted" not in rerun_log.read_text() and "epoch 1" in rerun_log.read_text()
    assert jobs_of(rerun.stdout + rerun.stderr) == {"train": 1, "choose_postprocess": 1, "predict": 1, "summarize": 1}
    after = {
        p.name: p.read_bytes() for p in (rerun_out / "runs" / "unet" / "fold0" / "seed0" / "predictions").glob("*.png")
    }
    assert before == after and len(before) > 0
    assert (rerun_out / "runs" / "unet" / "fold0" / "seed0" / "metrics.csv").read_bytes() == metrics_before
    rerun_history = pd.read_csv(rerun_out / "runs" / "unet" / "fold0" / "seed0" / "history.csv")
    timing = ["seconds", "train_seconds", "bn_seconds", "val_seconds"]  # wall time: never reproducible
    assert rerun_history.drop(columns=timing).equals(history.drop(columns=timing))


def test_a_dataset_with_a_bad_file_stops_the_run_naming_it_on_screen(workflow_copy):
    """The ingest lists every problem file in its log; the profile shows a failed job's log, so the user
    reads the file's name on screen, not only a path to the log."""
    synth_folder(workflow_copy / "mydata", patients=4, seed=1)
    # The default profile, found through the top-level link as in the repository (copy_workflow leaves it out).
    shutil.copytree(workflow_copy / "workflow" / "profiles", workflow_copy / "profiles")
    bad = sorted((workflow_copy / "mydata" / "images").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated PNG
    folder = {**TINY, "study": "bad", "dataset": {"layout": "folder", "root": "mydata"}}
    config = write_config(workflow_copy, folder, "bad.yaml")
    result = run_snakemake(["results/bad/data/manifest.csv", "--cores", "1", "--configfile", config], workflow_copy)
    assert result.returncode != 0
    shown = result.stdout + result.stderr
    assert "problem(s) found (on_bad_sample: fail)" in shown and bad.name in shown, shown[-3000:]


def test_quick_study_on_a_synth_folder_dataset_is_the_same_dag(workflow_copy):
    """The quick study runs on a folder dataset written by `sonoseg synth` exactly as on the built-in one."""
    synthetic = TINY["synthetic"]
    synth_folder(
        workflow_copy / "mydata", synthetic["patients"], synthetic["seed"], synthetic["height"], synthetic["width"]
    )
    folder = {**TINY, "dataset": {"layout": "folder", "root": str(workflow_copy / "mydata")}}
    result = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workflow_copy, folder)], workflow_copy
    )
    assert result.returncode == 0, result.stderr
    builtin = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workflow_copy, TINY)], workflow_copy
    )
    jobs, builtin_jobs = jobs_of(result.stdout), jobs_of(builtin.stdout)
    builtin_jobs.pop("synthesize")
    assert jobs == builtin_jobs


def test_recipe_selection_never_takes_the_test_split(workflow_copy):
    # Learning rate and weight decay auto for all three: candidates (2 x 2 each), selections, seed 0
    # adopted from the chosen candidates, seed 1 trained.
    train = {
        **TINY["train"],
        "learning_rate": "auto",
        "learning_rate_grid": [0.001, 0.003],
        "weight_decay": "auto",
        "overrides": {},
    }
    auto = {**TINY, "networks": ["unet", "lighter_unet_c1", "fcn8s"], "seeds": [0, 1], "train": train}
    auto["external_datasets"] = []  # external datasets reach no training either: tests/test_generalization.py
    labels, ancestors = study_dag(workflow_copy, auto)

    test_cache = {n for n, label in labels.items() if label.startswith("preprocess") and "part: test" in label}
    assert len(test_cache) == 1
    # A node's label is its rule, then its wildcards (Snakemake leaves some out), one per line.
    rule_of = {n: label.split("\\n")[0] for n, label in labels.items()}
    selection = [n for n, rule in rule_of.items() if rule in ("select_recipe", "train", "recipe")]
    # trainings: candidates (3 x 4), seeds 0 (adopting a candidate) and 1 (3 x 2), ladder steps (2 x 2);
    # selections (3); recipes: one per trained run (3 networks + 12 candidates + 2 steps)
    assert len(selection) == 3 * 4 + 3 * 2 + 2 * 2 + 3 + (3 + 12 + 2)
    for node in selection:
        assert not (ancestors(node) & test_cache), labels[node]
    # ... while the evaluation does use it.
    # (The floors' predictions read the test images themselves, not the resized cache.)
    trainings = {n for n, rule in rule_of.items() if rule == "train"}
    evaluation = [n for n, rule in rule_of.items() if rule == "predict" and ancestors(n) & trainings]
    assert len(evaluation) == 3 * 2 + 2 * 2 + 3  # each network's seeds, the ladder's, each network's ensemble
    assert all(ancestors(n) & test_cache for n in evaluation)


@pytest.mark.slow
def test_a_choice_redone_with_the_same_outcome_retrains_nothing(workflow_copy):
    """A changed predict.* setting redoes the probe's development-set predictions, so its augmentation
    choice and the recipes that read it are redone, and Snakemake reruns the trainings after them. Each
    is the training it was (network, seed, recipe, data, fast path, code): it adopts its finished copy."""
    auto = {"ultrasound_augment": "auto"}
    train = {**TINY["train"], "overrides": {"unet": auto, "lighter_unet_c1": auto}}
    probe = {
        **TINY,
        "train": train,
        "augmentation_choice": {"network": "lighter_unet_c1"},
        "ladder": {"enabled": False},
        "external_datasets": [
            {"name": "pymust_far", "role": "development", "layout": "folder", "root": "data/external/pymust_far"}
        ],
    }
    target = "results/tiny/networks/unet.csv"
    first = run_snakemake([target, "--cores", "2", "--configfile", write_config(workflow_copy, probe)], workflow_copy)
    assert first.returncode == 0, first.stderr[-4000:]
    run = workflow_copy / "results" / "tiny" / "runs" / "unet" / "fold0" / "seed0"
    log = workflow_copy / "results" / "tiny" / "logs" / "train" / "unet" / "fold0" / "seed0.log"
    trained = {name: (run / name).read_bytes() for name in ("model.pt", "history.csv")}
    assert "epoch 1 " in log.read_text() and "adopted" not in log.read_text()
    choice = workflow_copy / "results" / "tiny" / "selection" / "lighter_unet_c1" / "augmentation.json"
    chosen = json.loads(choice.read_text())

    changed = {**probe, "predict": {"scales": [1.0, 0.875]}}
    config = write_config(workflow_copy, changed, "scales.yaml")
    dry = run_snakemake([target, "-n", "--cores", "1", "--configfile", config], workflow_copy)
    assert dry.returncode == 0, dry.stderr
    # U-net's training alone: the probe's candidates read no choice, and are not rerun.
    assert jobs_of(dry.stdout).get("choose_augmentation") == 1 and jobs_of(dry.stdout).get("train") == 1
    again = run_snakemake([target, "--cores", "2", "--configfile", config], workflow_copy)
    assert again.returncode == 0, again.stderr[-4000:]
    assert jobs_of(again.stdout + again.stderr)["train"] == 1
    # The choice was made again, with the same outcome (else U-net's would be another training) ...
    assert json.loads(choice.read_text())["chosen"] == chosen["chosen"]
    # ... and U-net's training adopted its finished copy: no epoch trained, the same files.
    assert "adopted" in log.read_text() and "epoch 1 " not in log.read_text()
    assert {name: (run / name).read_bytes() for name in trained} == trained


def test_lint_is_clean(workflow_copy):
    result = run_snakemake(["--lint", "--configfile", "config/quick.yaml"], workflow_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


@pytest.mark.slow
def test_killed_training_resumes_through_snakemake(workflow_copy):
    """kill -9 of the whole Snakemake run mid-training; the rerun of the same target continues
    from the checkpoint, which Snakemake's cleanup of incomplete outputs leaves alone."""
    import os
    import signal
    import time

    config = write_config(
        workflow_copy,
        {
            **TINY,
            "preprocess": {"size": 64},
            "ladder": {"enabled": False},
            # A checkpoint after every epoch: these epochs are shorter than the default interval.
            "train": {
                **TINY["train"],
                "weight_decay": 0.0001,
                "min_epochs": 8,
                "max_epochs": 8,
                "checkpoint_seconds": 0,
            },
        },
    )
    target = "results/tiny/runs/unet/fold0/seed0/model.pt"
    log = workflow_copy / "results" / "tiny" / "logs" / "train" / "unet" / "fold0" / "seed0.log"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    process = subprocess.Popen(
        [str(BIN / "snakemake"), target, "--cores", "1", "--configfile", config],
        cwd=workflow_copy,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not (log.exists() and " epoch 2 " in log.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    checkpoints = list((workflow_copy / "results" / "tiny" / "checkpoints").rglob("seed*.pt"))
    assert len(checkpoints) == 1 and not (workflow_copy / target).exists()

    # As a user would after a kill -9: release Snakemake's lock, then rerun the same target.
    assert run_snakemake([target, "--unlock", "--configfile", config], workflow_copy).returncode == 0
    rerun = run_snakemake([target, "--cores", "1", "--configfile", config], workflow_copy)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    text = log.read_text()
    resumed_after = int(re.search(r"resumed from \S+ after epoch (\d+)", text)[1])
    assert resumed_after >= 2
    history = pd.read_csv(workflow_copy / target.replace("model.pt", "history.csv"))
    assert history["epoch"].tolist() == list(range(1, 9))
    # Snakemake starts a job's log afresh: the killed attempt's lines, kept beside the checkpoint, lead it, then
    # the rerun's, which trains only the epochs after the checkpoint.
    earlier, marker, this = text.partition("--- this attempt ---\n")
    assert marker and "--- earlier attempts at this training (stopped; from " in earlier
    killed = [int(n) for n in re.findall(r"sonoseg.training.train: epoch (\d+) ", earlier)]
    assert killed[:2] == [1, 2] and killed[-1] >= resumed_after
    trained = [int(n) for n in re.findall(r"sonoseg.training.train: epoch (\d+) ", this)]
    assert trained == list(range(resumed_after + 1, 9))
    assert not list((workflow_copy / "results" / "tiny" / "checkpoints").rglob("seed*.pt"))
    assert not list((workflow_copy / "results" / "tiny" / "checkpoints").rglob("seed*.log"))  # finished: gone
    # ... and keeps its finished copy beside where the checkpoint was: the model itself.
    (kept,) = (workflow_copy / "results" / "tiny" / "checkpoints" / "unet" / "fold0" / "seed0.finished").glob(
        "*/model.pt"
    )
    assert kept.read_bytes() == (workflow_copy / target).read_bytes()
    assert torch.load(kept, weights_only=True)["fingerprint"].startswith(kept.parent.name)  # its training's folder
