"""What a study's trainings table says each training computed on (precision, device, processor, from the
history's epochs), and which of its rows are one training adopted by another run (same_training_as)."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import easy_caches, sheet_row, write_patient_manifest, write_run_metrics

from sonoseg.analysis import report_labels, results
from sonoseg.data import provenance
from sonoseg.errors import SonosegError
from sonoseg.serving import cost, device
from sonoseg.study import layout
from sonoseg.training import train
from sonoseg.training.recipe import Recipe

XEON = "Intel(R) Xeon(R) Processor"
EPYC = "AMD EPYC 7B13, 64-Core"  # a comma: the history quotes it


def trained(name: str, kind: str = "network", method: str = "", seeds=("0",), **columns) -> dict:
    """conftest's run-sheet row of a trained run, with the two columns that say whose candidates it is offered."""
    offered = {"selected_from": "", "augmentation_from": ""}
    return sheet_row(name, seeds=seeds, **{"kind": kind, "method": method or name, **offered, **columns})


def epoch_row(epoch: int, **compute) -> dict:
    """One epoch of a history as training records it (the compute columns as given: none for an old one)."""
    return {
        "epoch": epoch,
        "train_loss": 0.5 - 0.01 * epoch,
        "val_loss": 0.6 - 0.01 * epoch,
        "val_dice": 0.3 + 0.01 * epoch,
        "lr": 0.001,
        "seconds": 1.25 + 0.001 * epoch,
        "steps": 7 * epoch,
        "train_seconds": 1.0,
        "bn_seconds": 0.125,
        "val_seconds": 0.125,
        **compute,
    }


def write_training(root: Path, run: str, rows: list[dict], fold="0", seed="0", old: bool = False) -> Path:
    """A run's recipe.json and one training's history.csv (``old``: as written before the compute columns)."""
    recipe = Path(layout.recipe(root, run, fold))
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(json.dumps({"learning_rate": 0.001, "weight_decay": 0.0001}))
    history = Path(layout.training_file(root, run, fold, seed, layout.HISTORY))
    history.parent.mkdir(parents=True, exist_ok=True)
    if old:
        columns = [c for c in train.HISTORY_COLUMNS if c not in train.COMPUTE_COLUMNS]
        pd.DataFrame(rows).reindex(columns=columns).to_csv(history, index=False)
    else:
        train.write_history(rows, history)
    return history


def cpu(processor: str = XEON, precision: str = "bf16 + channels_last") -> dict:
    return {"precision": precision, "device": "cpu", "processor": processor}


def test_a_history_with_the_compute_columns_gives_them_per_training(tmp_path):
    write_training(tmp_path, "unet", [epoch_row(e, **cpu()) for e in (1, 2, 3)])
    write_training(tmp_path, "malunet", [epoch_row(e, **cpu(precision="fp32")) for e in (1, 2)])
    table = results.collect_trainings(tmp_path, [trained("unet"), trained("malunet")]).set_index("run")
    assert list(table.columns[-5:]) == ["precision", "device", "processor", "commit", "same_training_as"]
    assert table.loc["unet", ["precision", "device", "processor"]].tolist() == ["bf16 + channels_last", "cpu", XEON]
    assert table.loc["malunet", "precision"] == "fp32"
    assert table.loc["unet", "epochs"] == 3 and table.loc["unet", "seconds"] == round(1.251 + 1.252 + 1.253, 3)
    assert (table["same_training_as"] == "").all()


def test_a_training_resumed_on_another_machine_gives_both_joined_in_order(tmp_path):
    """Epochs 1-2 on a Xeon, 3-4 on an EPYC (whose name has a comma), 5 on the Xeon again: each value once,
    in the order it first appears. A checkpoint written before the columns leaves its epochs empty."""
    rows = [epoch_row(1)] + [epoch_row(e, **cpu()) for e in (2,)] + [epoch_row(e, **cpu(EPYC, "fp32")) for e in (3, 4)]
    rows += [epoch_row(5, **cpu())]
    history = write_training(tmp_path, "unet", rows)
    written = pd.read_csv(history)
    assert written["processor"].tolist()[1:] == [XEON, EPYC, EPYC, XEON] and pd.isna(written["processor"].iloc[0])
    table = results.collect_trainings(tmp_path, [trained("unet")])
    assert table["processor"].iloc[0] == f"{XEON} / {EPYC}"
    assert table["precision"].iloc[0] == "bf16 + channels_last / fp32"
    assert table["device"].iloc[0] == "cpu"


def test_each_per_image_row_says_what_the_trainings_behind_its_models_ran_on(tmp_path):
    """U-net's two seeds trained on two machines; its flip-averaged run and its ensemble of both seeds test
    those models; a floor has no training."""
    manifest = write_patient_manifest(tmp_path / "manifest.csv", ["a", "b"], ["P1", "P2"])
    runs = [
        trained("unet", seeds=("0", "1")),
        sheet_row("unet--tta", seeds=("0", "1"), trained=False, kind="tta", method="unet", model_from="unet"),
        sheet_row("unet--ensemble", trained=False, kind="ensemble", method="unet", model_from="unet", members="0 1"),
        sheet_row("dark_in_prior", trained=False, kind="baseline"),
    ]
    for run in runs:
        for seed in run["seeds"].split():
            write_run_metrics(tmp_path, run["name"], 0, int(seed), ["a", "b"], [0.8, 0.6])
    write_training(tmp_path, "unet", [epoch_row(e, **cpu()) for e in (1, 2)], seed="0")
    write_training(tmp_path, "unet", [epoch_row(e, **cpu(EPYC, "fp32")) for e in (1, 2)], seed="1")
    per_image = results.collect_per_image(tmp_path, runs, manifest)
    shown = per_image.groupby(["run", "seed"])[["training_precision", "training_processor"]].first()
    assert shown.loc[("unet", 0)].tolist() == ["bf16 + channels_last", XEON]
    assert shown.loc[("unet", 1)].tolist() == ["fp32", EPYC]
    assert shown.loc[("unet--tta", 1)].tolist() == ["fp32", EPYC]  # the models of its own seed
    assert shown.loc[("unet--ensemble", 0)].tolist() == ["bf16 + channels_last / fp32", f"{XEON} / {EPYC}"]
    assert shown.loc[("dark_in_prior", 0)].tolist() == ["", ""]
    assert set(per_image["training_device"]) == {"cpu", ""}


def test_a_history_from_before_the_columns_gives_empty_values(tmp_path):
    write_training(tmp_path, "unet", [epoch_row(e) for e in (1, 2)], old=True)
    table = results.collect_trainings(tmp_path, [trained("unet")])
    assert table[["precision", "device", "processor", "commit", "same_training_as"]].iloc[0].tolist() == [""] * 5
    assert table["epochs"].iloc[0] == 2 and table["steps"].iloc[0] == 14


def test_only_the_training_that_adopted_a_candidate_says_whose_training_it_is(tmp_path):
    """The quick study's shape: lighter_unet_c1 chooses its own augmentation; its run with the candidates'
    seed (0) adopted the ultrasound candidate (its history a byte-for-byte copy), its seed 1 trained. unet
    follows lighter_unet_c1's choice (a probe network's: it is offered no candidate), and a ladder step is
    offered none either: neither is flagged even with a history of the same bytes. A network offered its
    recipe-selection candidates that trained anyway (another history) is not flagged either."""
    net, paper, ultrasound = "lighter_unet_c1", "lighter_unet_c1--augment-paper", "lighter_unet_c1--augment-ultrasound"
    chosen = write_training(tmp_path, ultrasound, [epoch_row(e, **cpu()) for e in (1, 2, 3)])
    write_training(tmp_path, paper, [epoch_row(e, **cpu(precision="fp32")) for e in (1, 2, 3)])
    for run in (net, "unet", "ladder--adam"):
        copy = Path(layout.training_file(tmp_path, run, "0", "0", layout.HISTORY))
        write_training(tmp_path, run, [])
        shutil.copyfile(chosen, copy)  # as reuse.adopt_identical_run copies it
    write_training(tmp_path, net, [epoch_row(e, **cpu()) for e in (1, 2)], seed="1")
    write_training(tmp_path, "light_unet", [epoch_row(e, **cpu()) for e in (1, 2, 4)])
    write_training(tmp_path, "light_unet--lr0.001", [epoch_row(e, **cpu()) for e in (1, 2, 3)])
    rows = [
        trained(net, seeds=("0", "1"), augmentation_from=net),
        trained("unet", augmentation_from=net),
        trained("light_unet", selected_from="light_unet"),
        trained(paper, "augmentation", net),
        trained(ultrasound, "augmentation", net),
        trained("light_unet--lr0.001", "candidate", "light_unet"),
        trained("ladder--adam", "ladder_step", net),
    ]
    table = results.collect_trainings(tmp_path, rows)
    flagged = table[table["same_training_as"] != ""]
    assert flagged[["run", "seed", "same_training_as"]].values.tolist() == [[net, 0, ultrasound]]
    # Summed over the unflagged rows, the adopted training's seconds count once.
    assert table.loc[table["run"] == net, "seconds"].iloc[0] == table.loc[table["run"] == ultrasound, "seconds"].iloc[0]


def test_a_chain_of_adoptions_names_the_training_that_ran(tmp_path):
    """A candidate that itself adopted one offered to it: every copy names the run that trained."""
    selection = write_training(tmp_path, "unet--lr0.001", [epoch_row(e, **cpu()) for e in (1, 2)])
    for run in ("unet--augment-paper", "unet"):
        write_training(tmp_path, run, [])
        shutil.copyfile(selection, layout.training_file(tmp_path, run, "0", "0", layout.HISTORY))
    write_training(tmp_path, "unet--augment-ultrasound", [epoch_row(e, **cpu()) for e in (1, 3)])
    rows = [
        trained("unet", selected_from="unet", augmentation_from="unet"),
        trained("unet--lr0.001", "candidate", "unet"),
        trained("unet--augment-paper", "augmentation", "unet", selected_from="unet"),
        trained("unet--augment-ultrasound", "augmentation", "unet", selected_from="unet"),
    ]
    table = results.collect_trainings(tmp_path, rows).set_index("run")["same_training_as"]
    assert table.to_dict() == {
        "unet": "unet--lr0.001",
        "unet--lr0.001": "",
        "unet--augment-paper": "unet--lr0.001",
        "unet--augment-ultrasound": "",
    }


def test_a_real_training_records_what_each_epoch_ran_on(tmp_path):
    """A tiny training (as tests/test_train.py runs them) writes the three columns in every epoch's row,
    and the trainings table reads them back."""
    data = easy_caches(tmp_path, 32, counts=(("train", 8), ("val", 2)))
    out = Path(layout.training_dir(tmp_path, "lighter_unet_c1", "0", "0"))
    recipe = Recipe(min_epochs=1, max_epochs=2, batch_size=4, augment=False, precision="fp32")
    train.train(
        network="lighter_unet_c1",
        seed=0,
        train_data=data[0],
        val_data=data[1],
        recipe=recipe,
        model_out=out / "model.pt",
        history_out=out / "history.csv",
        device="cpu",
        threads=1,
    )
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns[-4:]) == ["precision", "device", "processor", "commit"]
    # The sonoseg that trained it, as the captions of tables made later from its predictions name it.
    assert history["commit"].tolist() == [provenance.sonoseg_commit()] * 2
    assert history["precision"].tolist() == ["fp32", "fp32"] and history["device"].tolist() == ["cpu", "cpu"]
    cpu_named = f"{cost.cpu_model()} with {device.cpu_kernels()} kernels"  # the kernels too: fp32 differs between them
    assert history["processor"].tolist() == [cpu_named] * 2 and cost.cpu_model() != ""
    assert torch.load(out / "model.pt", weights_only=True)["trained_with"] == "fp32"
    Path(layout.recipe(tmp_path, "lighter_unet_c1", "0")).write_text(recipe.to_json())
    table = results.collect_trainings(tmp_path, [trained("lighter_unet_c1")])
    assert table[["precision", "device", "processor"]].iloc[0].tolist() == ["fp32", "cpu", cpu_named]
    assert table["commit"].iloc[0] == provenance.sonoseg_commit()


def test_auto_trains_fp32_where_torchs_kernels_are_held_below_bf16(monkeypatch):
    """On an AMX Xeon held to AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2: an emulated AVX2 machine,
    or a cluster's environment) `auto` read the CPU's flags alone and trained bf16, emulated ~10x slower."""
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    monkeypatch.setattr(device, "cpu_kernels", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert device.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert device.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert device.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # its older name
    assert device.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.delenv("DNNL_MAX_CPU_ISA")
    monkeypatch.setattr(device, "cpu_kernels", lambda: "AVX2")
    assert device.resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_the_device_and_processor_names():
    assert device.device_name(torch.device("cpu")) == "cpu"
    # The CPU by its model name, as /proc/cpuinfo gives it where there is one (not platform's "x86_64").
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.is_file()
        else []
    )
    kernels = torch.backends.cpu.get_cpu_capability()
    if names:
        assert device.processor_name(torch.device("cpu")) == f"{names[0]} with {kernels} kernels"
    assert device.processor_name(torch.device("cpu")) == f"{cost.cpu_model()} with {kernels} kernels" != ""
    if torch.cuda.is_available():
        assert device.device_name(torch.device("cuda")) == f"cuda:{torch.cuda.current_device()}"
        assert device.processor_name(torch.device("cuda:0")) == torch.cuda.get_device_name(0)


def test_a_results_table_is_the_same_bytes_for_the_same_rows_and_compressed_by_its_name(tmp_path):
    # gzip's header keeps no time (a checksum tells whether a rerun changed anything); other names as pandas infers.
    import lzma

    table = pd.DataFrame({"run": ["unet"], "dice": [0.5]})
    results.write_table(table, tmp_path / "a.csv.gz")
    first = (tmp_path / "a.csv.gz").read_bytes()
    results.write_table(table, tmp_path / "a.csv.gz")
    assert (tmp_path / "a.csv.gz").read_bytes() == first and first[4:8] == b"\0\0\0\0"  # its MTIME field
    results.write_table(table, tmp_path / "a.csv.xz")
    assert lzma.decompress((tmp_path / "a.csv.xz").read_bytes()).decode().startswith("run,dice")


def test_every_table_sonoseg_writes_reads_back_and_a_failed_write_leaves_the_old_one(tmp_path, monkeypatch):
    """The reader refused complete tables it did not write itself as cut short (an .xz, a last line without its
    line break), and a sample id "NA" (an image NA.png) as missing; a write cut short left a file behind."""
    table = pd.DataFrame(
        {"run": ["unet"] * 2, "fold": 0, "seed": 0, "training": "fold0/seed0", "sample_id": ["NA", "None"]}
    ).assign(patient=["P1", "P2"], dice=[0.5, 0.7])
    for name in ("p.csv.gz", "p.csv.xz", "p.csv.bz2", "p.csv"):
        results.write_table(table, tmp_path / name)
        read = results.read_per_image(tmp_path / name)
        assert read["sample_id"].tolist() == ["NA", "None"] and read["dice"].tolist() == [0.5, 0.7], name
    # Cut within its last value (0.7 read as 0.), or a whole field: the last line is not ended.
    for cut_bytes in (2, 6):
        cut = tmp_path / "cut.csv"
        cut.write_bytes((tmp_path / "p.csv").read_bytes()[:-cut_bytes])
        with pytest.raises(
            SonosegError,
            match=r"cut short or damaged; remake it \(delete it and rerun\) \(its last line is not ended: ",
        ):
            results.read_per_image(cut)
    # The .gz bytes pandas writes to a file of that name (its name in the header, no time): a checksum across
    # versions compares.
    (tmp_path / "pandas").mkdir()
    table.to_csv(tmp_path / "pandas" / "p.csv.gz", index=False, compression={"method": "gzip", "mtime": 0})
    assert (tmp_path / "pandas" / "p.csv.gz").read_bytes() == (tmp_path / "p.csv.gz").read_bytes()

    # A training's per-image metrics are read as the long table is: one cut short mid-row is refused by name.
    metrics = tmp_path / "metrics.csv"
    results.write_table(table[["sample_id", "dice"]].assign(hd95_px=[3.0, 4.0], hd95_policy="medpy"), metrics)
    assert results.read_metrics(metrics)["sample_id"].tolist() == ["NA", "None"]
    metrics.write_bytes(metrics.read_bytes()[:-8])
    with pytest.raises(SonosegError, match=r"metrics.csv: the per-image metrics is cut short or damaged"):
        results.read_metrics(metrics)

    def full_disk(path, data):  # write_bytes_atomic's own clean-up is provenance's test
        raise OSError(28, "No space left on device")

    before = (tmp_path / "p.csv.gz").read_bytes()
    monkeypatch.setattr(provenance, "write_bytes_atomic", full_disk)
    with pytest.raises(SonosegError, match=r"p.csv.gz: could not be written \(No space left on device\)"):
        results.write_table(table.assign(dice=0.1), tmp_path / "p.csv.gz")
    assert (tmp_path / "p.csv.gz").read_bytes() == before


def test_a_caption_over_runs_trained_differently_says_which_run_is_which():
    """A bf16 study's caption read "models trained in bf16 + channels_last / fp32": MALUNet trains in fp32 by
    its override, and nothing said which. Where the trained runs differ, the value most share leads and the
    others are named with their runs: a flip-averaged or external run counts as the run whose trainings it uses
    (model_from), a ladder step or a marks-kept twin as its own; a run's own several values (a resumed
    training) stay together."""
    rows = [
        ("unet", "", "aaa", "bf16 + channels_last"),
        ("unet--tta", "unet", "aaa", "bf16 + channels_last"),
        ("malunet", "", "aaa", "fp32"),
        ("malunet--on-pymust_far", "malunet", "aaa", "fp32"),
        ("lighter_unet", "", "bbb", "bf16 + channels_last"),
        ("lighter_unet", "", "aaa / bbb", "bf16 + channels_last"),  # its second seed resumed, newer
        ("ladder--adam", "", "ccc", "bf16 + channels_last"),  # trains its own (method lighter_unet)
        ("ege_unet", "", "aaa", "bf16 + channels_last"),
        ("dark_in_prior", "", "", ""),  # a floor trains nothing
    ]
    per_image = pd.DataFrame(rows, columns=["run", "model_from", "training_commit", "training_precision"])
    assert results.trained_in(per_image) == "bf16 + channels_last (malunet: fp32)"
    assert results.trained_at(per_image) == "aaa (lighter_unet: bbb, aaa; ladder--adam: ccc)"
    line = provenance.caption_line("a" * 64, results.trained_at(per_image), results.trained_in(per_image))
    assert line.endswith(
        "; models trained at commit aaa (lighter_unet: bbb, aaa; ladder--adam: ccc) in bf16 + channels_last "
        "(malunet: fp32)."
    )
    alike = per_image[per_image["run"].isin(["unet", "unet--tta", "dark_in_prior"])]
    assert (results.trained_at(alike), results.trained_in(alike)) == ("aaa", "bf16 + channels_last")
    assert results.trained_in(per_image[per_image["run"] == "dark_in_prior"]) == ""


def test_a_table_over_two_commits_predictions_says_so(tmp_path):
    """An upgraded study's rerun predicted the external set it added with the new code and kept the own test images'
    predictions of the old: the rows mixed two commits' prediction code without a word. Each row now carries the
    commit that made it (prediction_commit, read back as text) and the caption names the others than its writer's."""
    writer = provenance.sonoseg_commit()
    rows = [("unet", "0012345e7890"), ("unet--on-far", writer), ("dark_in_prior", "0012345e7890")]
    per_image = pd.DataFrame(rows, columns=["run", "prediction_commit"]).assign(model_from=["", "unet", ""])
    assert results.predicted_at(per_image) == f"0012345e7890 (unet--on-far: {writer})"  # each run its own job
    assert results.caption_from("a" * 64, per_image).endswith(
        f"; predictions from commit 0012345e7890 (unet--on-far: {writer})."
    )
    assert "predictions from" not in results.caption_from("a" * 64, per_image[per_image["run"] == "unet--on-far"])
    assert "predictions from" not in results.caption_from("a" * 64, per_image.drop(columns="prediction_commit"))
    # The upgrade that brings the column: the kept rows have none, the new ones the writer's commit. Said.
    upgraded = per_image.assign(prediction_commit=["", writer, ""])
    assert results.predicted_at(upgraded) == f"unrecorded (made before sonoseg recorded it) (unet--on-far: {writer})"
    assert "predictions from commit unrecorded" in results.caption_from("a" * 64, upgraded)
    assert results.predicted_at(per_image.assign(prediction_commit="")) == ""  # an older study: nothing to say
    manifest = write_patient_manifest(tmp_path / "manifest.csv", ["a", "b"], ["P1", "P2"])
    metrics = write_run_metrics(tmp_path, "unet", 0, 0, ["a", "b"], [0.8, 0.6])
    pd.read_csv(metrics).assign(prediction_commit="0012345e7890").to_csv(metrics, index=False)
    write_training(tmp_path, "unet", [epoch_row(1, **cpu(), commit="28e4beea095f")], seed="0")
    per_image = results.collect_per_image(tmp_path, [trained("unet")], manifest)
    results.write_table(per_image, tmp_path / "per_image.csv.gz")
    assert set(results.read_per_image(tmp_path / "per_image.csv.gz")["prediction_commit"]) == {"0012345e7890"}


def test_a_table_made_later_from_the_predictions_names_the_commit_that_trained_its_models(tmp_path):
    """A probe remade a finished study's tables with newer code: every caption named the newer commit alone, as
    if it had trained the models. The long table carries the training's commit, and captions name both."""
    manifest = write_patient_manifest(tmp_path / "manifest.csv", ["a", "b"], ["P1", "P2"])
    runs = [trained("unet", seeds=("0", "1")), sheet_row("dark_in_prior", trained=False, kind="baseline")]
    for run in runs:
        for seed in run["seeds"].split():
            write_run_metrics(tmp_path, run["name"], 0, int(seed), ["a", "b"], [0.8, 0.6])
    write_training(tmp_path, "unet", [epoch_row(e, **cpu(), commit="28e4beea095f") for e in (1, 2)], seed="0")
    resumed = [epoch_row(1, **cpu(), commit="28e4beea095f"), epoch_row(2, **cpu(), commit="c4d168faffd6")]
    write_training(tmp_path, "unet", resumed, seed="1")
    per_image = results.collect_per_image(tmp_path, runs, manifest)
    commits = per_image.groupby(["run", "seed"])["training_commit"].first()
    assert commits[("unet", 0)] == "28e4beea095f" and commits[("unet", 1)] == "28e4beea095f / c4d168faffd6"
    assert commits[("dark_in_prior", 0)] == ""
    assert results.trained_at(per_image) == "28e4beea095f, c4d168faffd6"
    assert results.trained_at(per_image[per_image["run"] == "dark_in_prior"]) == ""
    # Read back as the tables read it: a commit of digits alone stays text (12-hex hashes of digits, or of digits
    # and one e, are about 1 in 120), not 123456789012.0 or inf.
    digits = per_image.assign(training_commit=per_image["training_commit"].replace("28e4beea095f", "0012345e7890"))
    results.write_table(digits, tmp_path / "per_image.csv.gz")
    read = results.read_per_image(tmp_path / "per_image.csv.gz")
    assert results.trained_at(read) == "0012345e7890, 28e4beea095f, c4d168faffd6"
    line = provenance.caption_line("a" * 64, results.trained_at(per_image))
    assert line == (
        f"Data fingerprint {'a' * 12}; sonoseg {provenance.sonoseg_version()} at commit {provenance.sonoseg_commit()}"
        "; models trained at commit 28e4beea095f, c4d168faffd6."
    )
    # The report's front page still reads the commit that wrote the tables from such a caption.
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "table2.md").write_text(f"**Table 2 (...) {line}**\n")
    assert report_labels.results_source(tmp_path / "tables") == (
        f"sonoseg {provenance.sonoseg_version()} at commit {provenance.sonoseg_commit()}"
    )
