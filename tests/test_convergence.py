"""Convergence as a measured property (issue 27): the convergence check retrains chosen networks with
twice the epoch budget and says, per network, whether that changes its test Dice."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, jobs_of, run_snakemake, write_config


@pytest.mark.slow
def test_the_convergence_check_is_its_own_target_and_answers_per_network(workflow_copy):
    config = {
        **TINY,
        "networks": ["lighter_unet_c1"],
        "ladder": {"enabled": False},
        "baselines": [],
        "cost": {"enabled": False},
        "train": {**TINY["train"], "overrides": {}, "min_epochs": 1, "max_epochs": 1},
        "convergence": {"networks": ["lighter_unet_c1"], "margin": 0.05},
    }
    path = write_config(workflow_copy, config, "convergence.yaml")
    everything = run_snakemake(["all", "-n", "--cores", "1", "--configfile", path], workflow_copy)
    assert everything.returncode == 0, everything.stderr[-2000:]
    assert "budget2x" not in everything.stdout  # not part of all: its own target
    check = run_snakemake(["convergence_check", "--cores", "2", "--configfile", path], workflow_copy)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert (
        jobs_of(check.stdout + check.stderr)["train"] == 2
    )  # the network's seed-0 run and the same with twice the budget
    out = workflow_copy / "results" / "tiny"
    recipe = json.loads((out / "runs" / "lighter_unet_c1--budget2x" / "fold0" / "recipe.json").read_text())
    assert recipe["max_epochs"] == 2
    table = pd.read_csv(out / "tables" / "convergence.csv")
    row = table.iloc[0]
    assert row["network"] == "lighter_unet_c1" and row["checked_trainings"] == 1
    assert row["capped_trainings"] == 1  # one epoch allowed: the cap ended it
    if np.isnan(row["change_ci90_low"]):  # the tiny study tests one patient: no CI by patient, so no claim
        assert np.isnan(row["change_ci90_high"]) and not bool(row["converged"])
    else:
        assert row["change_ci90_low"] <= row["change"] <= row["change_ci90_high"]
        inside = -0.05 < row["change_ci90_low"] and row["change_ci90_high"] < 0.05
        assert bool(row["converged"]) == inside


def test_the_convergence_networks_must_be_the_studys(workflow_copy):
    config = {**TINY, "convergence": {"networks": ["fcn8s"]}}
    result = run_snakemake(["-n", "--cores", "1", "--configfile", write_config(workflow_copy, config)], workflow_copy)
    assert result.returncode != 0 and "convergence.networks: 'fcn8s'" in result.stdout + result.stderr
