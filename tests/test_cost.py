"""The cost table: parameters, GFLOPs counted by torch's flop counter, measured latency, CPU model;
and the workflow rule that measures it alone."""

import pandas as pd
import pytest
import yaml
from conftest import run_snakemake

from sonoseg.errors import SonosegError
from sonoseg.networks import models
from sonoseg.networks.models.slim_unet import slim_unet
from sonoseg.serving import cost


def test_forward_gflops_of_the_unet_family():
    # A 3x3 conv at 32x32 from 3 to 64 channels alone is 2*9*3*64*32*32 FLOPs; U-net is far above it.
    unet = cost.forward_gflops(models.build("unet"), 32)
    slim = cost.forward_gflops(models.build("slim_unet"), 32)
    assert unet > 2 * 9 * 3 * 64 * 32 * 32 / 1e9
    assert 3.5 < unet / slim < 4.5  # half the width: about a quarter of the FLOPs
    assert cost.forward_gflops(models.build("unet"), 64) == pytest.approx(4 * unet, rel=1e-6)


def test_slim_unet_at_width_64_is_the_paper_unet():
    assert models.count_parameters(slim_unet(64)) == models.count_parameters(models.build("unet"))


@pytest.mark.parametrize("backend", cost.BACKENDS)
def test_cost_table_columns_and_values(backend):
    table = cost.cost_table(["lighter_unet_c1", "slim_unet"], size=32, backend=backend, threads=1, repeats=2, warmup=0)
    assert list(table.columns) == cost.COLUMNS
    assert table["network"].tolist() == ["lighter_unet_c1", "slim_unet"]
    assert table["parameters"].tolist() == [1_983_583, 4_320_609]
    assert (table["gflops"] > 0).all() and (table["latency_ms"] > 0).all()
    assert (table["backend"] == backend).all() and (table["threads"] == 1).all() and (table["repeats"] == 2).all()
    assert table["cpu"].iloc[0] == cost.cpu_model() != ""
    # The spread of the repeats, and each network against U-net timed in the same process (the study
    # has no U-net here: it is timed as the reference and not listed).
    assert (table["latency_min_ms"] <= table["latency_ms"]).all() and (
        table["latency_ms"] <= table["latency_max_ms"]
    ).all()
    assert (table["latency_vs_unet"] > 0).all()


def test_latency_relative_to_unet_is_one_for_unet_and_follows_the_medians():
    table = cost.cost_table(["unet", "lighter_unet_c1"], size=32, backend="torch", threads=1, repeats=3, warmup=1)
    rows = table.set_index("network")
    assert rows.loc["unet", "latency_vs_unet"] == 1.0
    expected = rows.loc["lighter_unet_c1", "latency_ms"] / rows.loc["unet", "latency_ms"]
    # latency_ms is rounded to 0.01 ms, the ratio is not: they agree up to that rounding.
    assert rows.loc["lighter_unet_c1", "latency_vs_unet"] == pytest.approx(expected, rel=0.05, abs=0.01)


def test_a_prepared_folder_gives_the_same_counts_and_is_checked(tmp_path):
    networks = ["lighter_unet_c1", "slim_unet"]
    prepared = cost.prepare(networks, 32, "onnxruntime", tmp_path / "prepared")
    # U-net's graph too: the ratio's reference is timed even when the study has no U-net.
    assert sorted(p.name for p in prepared.glob("*.onnx")) == ["lighter_unet_c1.onnx", "slim_unet.onnx", "unet.onnx"]
    timed = cost.cost_table(networks, 32, "onnxruntime", threads=1, repeats=2, warmup=0, prepared=prepared)
    whole = cost.cost_table(networks, 32, "onnxruntime", threads=1, repeats=2, warmup=0)
    counts = ["network", "parameters", "gflops", "backend", "threads"]
    pd.testing.assert_frame_equal(timed[counts], whole[counts])
    assert (timed["latency_ms"] > 0).all()
    with pytest.raises(SonosegError, match="prepared at 32 with onnxruntime, not at 64"):
        cost.cost_table(networks, 64, "onnxruntime", threads=1, repeats=1, prepared=prepared)
    with pytest.raises(SonosegError, match="no row for malunet"):
        cost.cost_table(["malunet"], 32, "onnxruntime", threads=1, repeats=1, prepared=prepared)
    with pytest.raises(SonosegError, match="networks.csv is missing"):
        cost.cost_table(networks, 32, "onnxruntime", threads=1, repeats=1, prepared=tmp_path / "elsewhere")


def test_cost_rule_runs_alone_and_is_part_of_all(workflow_copy):
    config = {
        "study": "tiny",
        "networks": ["unet", "slim_unet"],
        "seeds": [0],
        "preprocess": {"size": 32},
        "train": {"device": "cpu", "threads": 1, "weight_decay": 0.0001},
        "ladder": {"enabled": False},
        "cost": {"repeats": 1, "warmup": 0},
    }
    (workflow_copy / "config" / "tiny.yaml").write_text(yaml.safe_dump(config))
    dry = run_snakemake(["all", "-n", "-p", "--cores", "2", "--configfile", "config/tiny.yaml"], workflow_copy)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "results/tiny/tables/cost.csv" in dry.stdout
    assert (
        "sonoseg cost --networks unet slim_unet --size 32 --backend onnxruntime --threads 2 --repeats 1" in dry.stdout
    )
    assert "sonoseg cost-prepare --networks unet slim_unet --size 32 --backend onnxruntime" in dry.stdout
    # The whole rule: a real measurement, short.
    run = run_snakemake(
        ["results/tiny/tables/cost.csv", "--cores", "2", "--configfile", "config/tiny.yaml"], workflow_copy, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = pd.read_csv(workflow_copy / "results" / "tiny" / "tables" / "cost.csv")
    assert list(table.columns) == cost.COLUMNS and table["network"].tolist() == ["unet", "slim_unet"]
    assert not (workflow_copy / "results" / "tiny" / "cost_prepared").exists()  # the graphs: temporary
