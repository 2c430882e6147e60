"""Training: the recipe's parts, ladder steps, determinism, kill-and-resume, refused checkpoints."""

import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import easy_caches, keep_every_checkpoint

from sonoseg.data import preprocess, synth
from sonoseg.errors import SonosegError
from sonoseg.networks import models
from sonoseg.serving import device, modelio
from sonoseg.training import reuse, selection, train
from sonoseg.training.recipe import Recipe, ladder_recipes, recipe_from_config, resolve

REPO = Path(__file__).resolve().parents[1]


def build_caches(root: Path, size: int, interpolation: str = "bilinear") -> tuple[Path, Path]:
    """Train (8 patients) and val (2) caches of phantom images at size x size."""
    import cv2

    (root / "src").mkdir(exist_ok=True)
    paths = []
    for part, patients in (("train", range(0, 8)), ("val", range(8, 10))):
        rows = []
        for p in patients:
            image, mask = synth.render(5, p, 1, (96, 128))
            cv2.imwrite(str(root / "src" / f"{p}.png"), image[:, :, ::-1])
            cv2.imwrite(str(root / "src" / f"{p}_m.png"), mask)
            rows.append(
                {"sample_id": str(p), "image": str(root / "src" / f"{p}.png"), "mask": str(root / "src" / f"{p}_m.png")}
            )
        path = root / f"{part}{size}.npz"
        preprocess.build_cache(pd.DataFrame(rows), size, path, interpolation)
        paths.append(path)
    return paths[0], paths[1]


def fit(
    network: str, seed: int, data: tuple[Path, Path], recipe: Recipe, model_out: Path, history_out: Path, **options
):
    """train.train with the two caches as one pair (its arguments are keywords only)."""
    return train.train(
        network=network,
        seed=seed,
        train_data=data[0],
        val_data=data[1],
        recipe=recipe,
        model_out=model_out,
        history_out=history_out,
        **options,
    )


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> tuple[Path, Path]:
    return build_caches(tmp_path_factory.mktemp("cache"), 64)


@pytest.fixture(scope="module")
def small_caches(tmp_path_factory) -> tuple[Path, Path]:
    """32 px: for bf16 runs, which CPUs without bf16 units emulate (about ten times slower than fp32).
    Resized by area, as the reduced-size studies do."""
    return build_caches(tmp_path_factory.mktemp("cache32"), 32, "area")


def test_model_file_records_the_caches_interpolation(small_caches, tmp_path):
    recipe = Recipe(min_epochs=1, max_epochs=1)
    fit("lighter_unet_c1", 0, small_caches, recipe, tmp_path / "m.pt", tmp_path / "h.csv", device="cpu")
    saved = torch.load(tmp_path / "m.pt", weights_only=False)
    assert saved["input_interpolation"] == "area"
    # The parameter count (what the tables print) and the training's fingerprint (what adoption compares).
    assert saved["parameters"] == 1_983_583 and len(saved["fingerprint"]) == 64
    # The lesion scale it learned (the size-aware scale selection): each training mask's area in input
    # pixels, sorted, the images without a lesion left out.
    masks = preprocess.load_cache(small_caches[0])["masks"]
    areas = [int(a) for a in (masks > 0).reshape(len(masks), -1).sum(axis=1) if a]
    assert areas and saved["lesion_areas"] == sorted(areas)
    # A validation cache resized otherwise than the training cache is refused, naming both files.
    arrays = preprocess.load_cache(small_caches[1])
    mixed = tmp_path / "val_bilinear.npz"
    with open(mixed, "wb") as handle:
        np.savez(handle, **{**arrays, "interpolation": np.array("bilinear")})
    with pytest.raises(SonosegError, match=r"train32.npz was resized area\b.*val_bilinear.npz bilinear"):
        fit("lighter_unet_c1", 0, (small_caches[0], mixed), recipe, tmp_path / "x.pt", tmp_path / "x.csv", device="cpu")


def paper_ladder():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return config, ladder_recipes(recipe_from_config(config["train"]), config["ladder"]["steps"])


def test_ladder_steps_build_what_they_name():
    _, steps = paper_ladder()
    assert list(steps) == ["baseline", "augmentation", "dice_loss", "adam", "lr_plateau", "batch8", "weight_decay"]
    model = torch.nn.Linear(2, 1)
    expected = {  # step: (augment, loss, optimizer class, lr, plateau, batch, weight decay)
        "baseline": (False, "bce", torch.optim.SGD, 1e-3, False, 2, 0.0),
        "augmentation": (True, "bce", torch.optim.SGD, 1e-3, False, 2, 0.0),
        "dice_loss": (True, "dice", torch.optim.SGD, 1e-3, False, 2, 0.0),
        "adam": (True, "dice", torch.optim.Adam, 1e-4, False, 2, 0.0),
        "lr_plateau": (True, "dice", torch.optim.Adam, 1e-4, True, 2, 0.0),
        "batch8": (True, "dice", torch.optim.Adam, 1e-4, True, 8, 0.0),
        "weight_decay": (True, "dice", torch.optim.Adam, 1e-4, True, 8, 1e-4),
    }
    for name, (augment, loss, optimizer_class, lr, plateau, batch, decay) in expected.items():
        recipe = steps[name]
        optimizer = train.make_optimizer(model, recipe)
        assert type(optimizer) is optimizer_class, name
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
        assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(decay)
        assert train.make_loss(recipe) is {"bce": train.bce_loss, "dice": train.soft_dice_loss}[loss]
        assert (recipe.augment, recipe.lr_plateau, recipe.batch_size) == (augment, plateau, batch), name


def test_recipe_rejects_unknown_settings():
    with pytest.raises(SonosegError, match="not training settings"):
        Recipe().with_changes({"learning_rat": 0.1})
    with pytest.raises(SonosegError, match="train.loss"):
        Recipe(loss="focal")


def test_soft_dice_loss_by_hand():
    logits = torch.full((1, 1, 2, 2), 50.0)  # sigmoid ~ 1 everywhere
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert train.soft_dice_loss(logits, target).item() == pytest.approx(1 - 2 * 2 / (4 + 2), abs=1e-5)


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """As the training loop augments: one draw per sample from the generator, then the warp."""
    return train.warp(images, masks, train.draw_augmentation(len(images), generator))


def test_augmentation_keeps_masks_binary_and_is_seeded():
    images = torch.rand(4, 3, 32, 32)
    masks = (torch.rand(4, 1, 32, 32) > 0.5).float()
    a = augment(images, masks, torch.Generator().manual_seed(1))
    b = augment(images, masks, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(torch.unique(a[1]).tolist()) <= {0.0, 1.0}
    assert not torch.equal(a[0], images)


def test_augmentation_keeps_image_and_mask_aligned():
    """An image whose thresholded pixels equal its mask still agrees with the warped mask (>= 99.9 %)."""
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    blobs = []
    for cy, cx, ry, rx in ((60, 50, 30, 18), (70, 80, 20, 35), (40, 40, 25, 25), (90, 64, 15, 40)):
        blobs.append((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float())
    masks = torch.stack(blobs)[:, None]
    images = masks.repeat(1, 3, 1, 1)  # 1 inside, 0 outside: thresholding at 0.5 gives the mask back
    generator = torch.Generator().manual_seed(7)
    for _ in range(4):
        warped_images, warped_masks = augment(images, masks, generator)
        agree = ((warped_images[:, :1] > 0.5) == (warped_masks > 0.5)).float().mean().item()
        assert agree >= 0.999, agree
        assert not torch.equal(warped_masks, masks)


def test_precision_auto_follows_the_device(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert device.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert device.resolve_precision("auto", cpu) == "fp32"
    assert device.resolve_precision("bf16", cpu) == "bf16" and device.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(SonosegError, match="train.precision"):
        device.resolve_precision("fp16", cpu)
    with pytest.raises(SonosegError, match="train.precision"):
        Recipe(precision="half")


@pytest.mark.slow
@pytest.mark.parametrize(
    "precision",
    [
        pytest.param(
            "bf16",
            marks=pytest.mark.skipif(
                not device.cpu_has_fast_bf16(),
                reason="this CPU emulates bf16 (no AMX / AVX512-BF16): minutes per run; auto trains fp32 here and the "
                "bf16 path is checked by the bit-identical rerun and resume test",
            ),
        ),
        "auto",
    ],
)
def test_fast_path_training_learns(tmp_path, precision, caplog):
    train_npz, val_npz = easy_caches(tmp_path)
    recipe = Recipe(min_epochs=8, max_epochs=8, learning_rate=3e-3, batch_size=4, precision=precision)
    fit(
        "lighter_unet_c1",
        0,
        (train_npz, val_npz),
        recipe,
        tmp_path / "m.pt",
        tmp_path / "h.csv",
        device="cpu",
        threads=1,
    )
    history = pd.read_csv(tmp_path / "h.csv")
    # BatchNorm's statistics are re-estimated before every validation, so the first epoch may already
    # validate well: learning shows in losses that fall several-fold, ending in a high validation Dice.
    for column in ("train_loss", "val_loss"):
        assert history[column].iloc[-1] < 0.5 * history[column].iloc[0], history[column].tolist()
    assert history["val_dice"].iloc[-1] > 0.8, history["val_dice"].tolist()
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    # Weights are kept in fp32 and the standard layout, whatever the run computed in.
    assert all(t.dtype in (torch.float32, torch.int64) and t.is_contiguous() for t in saved["state_dict"].values())
    assert saved["trained_with"].startswith(device.resolve_precision(precision, torch.device("cpu")))
    # It records the network as built, and loading it under the same code says nothing of the code.
    # A built-in network's files too: its module and the network modules it imports (a change in forward alone).
    assert len(saved["code"]["architecture"]) == 16 and sorted(saved["code"]["files"]) == [
        "bilinear.py",
        "models/unet.py",
    ]
    modelio.load_model(tmp_path / "m.pt")
    assert "not the code it was trained with" not in caplog.text


def run_train(caches, out: Path, epochs: int, extra_env=None, precision: str = "fp32", **popen):
    train_npz, val_npz = caches
    recipe = out / "recipe.json"  # `sonoseg train --recipe` reads a run's recipe.json
    Recipe(min_epochs=epochs, max_epochs=epochs, precision=precision).write(recipe)
    command = [
        sys.executable,
        "-m",
        "sonoseg.study.cli",
        "train",
        "--network",
        "lighter_unet_c1",
        "--seed",
        "3",
        "--train",
        str(train_npz),
        "--val",
        str(val_npz),
        "--recipe",
        str(recipe),
        "--model",
        str(out / "model.pt"),
        "--history",
        str(out / "history.csv"),
        "--checkpoint",
        str(out / "ckpt" / "last.pt"),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--checkpoint-seconds",
        "0",
    ]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, **popen)


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def history(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=train.TIMING_COLUMNS)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_kill_and_resume_is_bit_identical_and_reruns_are_deterministic(caches, small_caches, tmp_path, precision):
    epochs = 6
    caches = caches if precision == "fp32" else small_caches
    reference, rerun, resumed = tmp_path / "reference", tmp_path / "rerun", tmp_path / "resumed"
    for out in (reference, rerun):
        assert run_train(caches, out, epochs, precision=precision).wait(timeout=600) == 0
    # Determinism: the same config and seed give identical weights and history.
    assert history(reference / "history.csv").equals(history(rerun / "history.csv"))
    for key, tensor in weights(reference / "model.pt").items():
        assert torch.equal(tensor, weights(rerun / "model.pt")[key]), key
    assert not (reference / "ckpt" / "last.pt").exists(), "a finished run leaves no checkpoint"

    process = run_train(caches, resumed, epochs, precision=precision)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if " epoch 3 " in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert (resumed / "ckpt" / "last.pt").exists() and not (resumed / "model.pt").exists()
    second = run_train(caches, resumed, epochs, precision=precision)
    log = second.stderr.read()
    assert second.wait(timeout=600) == 0, log
    assert "resumed from" in log and "after epoch 3" in log
    assert history(reference / "history.csv").equals(history(resumed / "history.csv"))
    for key, tensor in weights(reference / "model.pt").items():
        assert torch.equal(tensor, weights(resumed / "model.pt")[key]), key


@pytest.mark.parametrize(
    "ultrasound", [{}, {"ultrasound_augment": True, "ultrasound_clean_epochs": 2}], ids=["paper", "ultrasound"]
)
def test_resuming_from_any_epochs_checkpoint_is_bit_identical(caches, tmp_path, monkeypatch, caplog, ultrasound):
    """Every epoch's randomness comes from the checkpoint's generator states: a run resumed from the
    checkpoint of any earlier epoch - one that was the best so far (stored without a second copy of
    the best weights) or one that was not (stored with them) - ends with the same weights and history.
    With the ultrasound augmentation its own stream is restored too, and a resumed run turns it off for
    the same last epochs (here 4 and 5)."""
    epochs, improving = 5, {1, 2, 4}
    # Scripted validation losses fix which epochs improve; everything else is the real training.
    script = {1: 0.9, 2: 0.8, 3: 0.85, 4: 0.7, 5: 0.75}
    # train.save_atomic writes the checkpoints (the model file goes through modelio.save_model).
    real_evaluate = train.evaluate_loss
    calls = {"epoch": 0}

    def evaluate(*args, **kwargs):
        calls["epoch"] += 1
        return script[calls["epoch"]], real_evaluate(*args, **kwargs)[1]

    snapshots = keep_every_checkpoint(monkeypatch, tmp_path / "snapshots")
    monkeypatch.setattr(train, "evaluate_loss", evaluate)

    def run(out: Path, resume_from: int = 0) -> None:
        out.mkdir()
        if resume_from:
            shutil.copy(snapshots / f"epoch{resume_from}.pt", out / "last.pt")
        calls["epoch"] = resume_from
        recipe = Recipe(min_epochs=epochs, max_epochs=epochs, learning_rate=3e-3, batch_size=4, **ultrasound)
        fit(
            "lighter_unet_c1",
            3,
            caches,
            recipe,
            out / "model.pt",
            out / "history.csv",
            checkpoint=out / "last.pt",
            checkpoint_seconds=0,
            device="cpu",
            threads=1,
        )

    run(tmp_path / "reference")
    # A checkpoint after every epoch but the last (the model file follows it at once).
    assert not (snapshots / f"epoch{epochs}.pt").exists()
    for epoch in range(1, epochs):
        saved = torch.load(snapshots / f"epoch{epoch}.pt", weights_only=True)["state"]
        assert (saved["best_state"] is None) == (epoch in improving), epoch
    assert torch.load(tmp_path / "reference" / "model.pt", weights_only=True)["best_epoch"] == 4
    reference_weights = weights(tmp_path / "reference" / "model.pt")
    for epoch in range(1, epochs):
        out = tmp_path / f"resumed_after_{epoch}"
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sonoseg.training.train"):
            run(out, resume_from=epoch)
        assert f"after epoch {epoch}" in caplog.text
        assert history(tmp_path / "reference" / "history.csv").equals(history(out / "history.csv")), epoch
        resumed_weights = weights(out / "model.pt")
        assert all(torch.equal(tensor, resumed_weights[key]) for key, tensor in reference_weights.items()), epoch


def test_a_checkpoint_without_its_best_weights_is_refused(tmp_path):
    model = torch.nn.Linear(2, 1)
    with pytest.raises(SonosegError, match="lacks the weights of its best epoch 2"):
        train.resumed_state({"epoch": 3, "best_epoch": 2, "best_state": None}, model, tmp_path / "last.pt")
    restored = train.resumed_state({"epoch": 3, "best_epoch": 3, "best_state": None}, model, tmp_path / "last.pt")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in restored["best_state"].items())


def test_fp32_weights_are_standard_layout_copies():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model = model.to(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    copied = modelio.fp32_weights(model)
    for key, tensor in model.state_dict().items():
        assert copied[key].is_contiguous() and torch.equal(copied[key], tensor), key
        assert copied[key].untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr(), key


def test_changed_settings_do_not_resume_from_a_stale_checkpoint(caches, tmp_path):
    checkpoint = tmp_path / "last.pt"
    modelio.save_atomic({"format": modelio.CHECKPOINT_FORMAT, "fingerprint": "other settings"}, checkpoint)
    recipe = Recipe(min_epochs=1, max_epochs=1)
    fit(
        "lighter_unet_c8",
        0,
        caches,
        recipe,
        tmp_path / "m.pt",
        tmp_path / "h.csv",
        checkpoint=checkpoint,
        device="cpu",
        threads=1,
    )
    assert len(pd.read_csv(tmp_path / "h.csv")) == 1 and not checkpoint.exists()


def test_a_checkpoint_cut_short_starts_the_training_afresh_with_a_warning(caches, tmp_path, caplog):
    """A checkpoint damaged by hand (it is written atomically) stopped its training until deleted, and a workflow
    retried it into the same refusal: it holds a training's progress only, and the training starts over."""
    checkpoint = tmp_path / "last.pt"

    def train_one_epoch():
        with caplog.at_level("WARNING"):
            fit(
                "lighter_unet_c8",
                0,
                caches,
                Recipe(min_epochs=1, max_epochs=1),
                tmp_path / "m.pt",
                tmp_path / "h.csv",
                checkpoint=checkpoint,
                device="cpu",
                threads=1,
            )

    modelio.save_atomic({"format": modelio.CHECKPOINT_FORMAT, "fingerprint": "x", "pad": torch.zeros(512)}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    train_one_epoch()
    assert len(pd.read_csv(tmp_path / "h.csv")) == 1 and not checkpoint.exists()
    assert (
        f"{checkpoint}: refused" in caplog.text
        and "it holds only a training's progress: starting afresh" in caplog.text
    )
    # Bytes changed inside a tensor: torch.load takes them without a word (the training then went to NaN and
    # blamed itself); the archive's checksums do not. A kill's temporary checkpoint goes when the training ends.
    modelio.save_atomic({"format": modelio.CHECKPOINT_FORMAT, "fingerprint": "x", "pad": torch.zeros(512)}, checkpoint)
    with zipfile.ZipFile(checkpoint) as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith("/data/0"))
    damaged = bytearray(checkpoint.read_bytes())
    damaged[record.header_offset + 30 + len(record.filename) + len(record.extra) + 100] ^= 0xFF
    checkpoint.write_bytes(bytes(damaged))
    assert train.damaged_record(checkpoint) == record.filename
    checkpoint.with_name("last.pt.tmp").write_bytes(b"cut short by a kill")
    caplog.clear()
    train_one_epoch()
    assert f"its record {record.filename} fails its checksum (damaged)" in caplog.text
    assert not checkpoint.exists() and not checkpoint.with_name("last.pt.tmp").exists()


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_foreign_or_tampered_files_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"format": modelio.MODEL_FORMAT, "payload": Payload()}, handle)
    with pytest.raises(SonosegError, match="refused"):
        modelio.load_model(evil)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(SonosegError, match="format tag"):
        modelio.load_model(foreign)
    mismatched = tmp_path / "mismatched.pt"
    torch.save({"format": modelio.MODEL_FORMAT, "network": "unet", "state_dict": {"x": torch.zeros(1)}}, mismatched)
    with pytest.raises(SonosegError, match="do not fit"):
        modelio.load_model(mismatched)
    truncated = tmp_path / "truncated.pt"
    torch.save({"format": modelio.CHECKPOINT_FORMAT}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:30])
    with pytest.raises(SonosegError, match="refused"):
        modelio.load_checked(truncated, modelio.CHECKPOINT_FORMAT)
    # Reading only the recorded facts (tensors memory-mapped) refuses the same files.
    for path, match in ((evil, "refused"), (foreign, "format tag"), (truncated, "refused")):
        with pytest.raises(SonosegError, match=match):
            modelio.load_checked(path, modelio.MODEL_FORMAT, metadata_only=True)


def test_reading_a_model_files_facts_alone_gives_what_a_full_load_gives(tmp_path):
    """metadata_only memory-maps the weights instead of reading them: the facts and the weights are the
    same as a full load's (the summaries read the parameter count this way)."""
    path = tmp_path / "model.pt"
    network = models.build("lighter_unet_c1")
    modelio.save_model(path, network="lighter_unet_c1", state_dict=network.state_dict(), parameters=123, best_epoch=4)
    full = modelio.load_checked(path, modelio.MODEL_FORMAT)
    facts = modelio.load_checked(path, modelio.MODEL_FORMAT, metadata_only=True)
    assert {k: v for k, v in facts.items() if k != "state_dict"} == {k: v for k, v in full.items() if k != "state_dict"}
    assert facts["state_dict"].keys() == full["state_dict"].keys()
    assert all(torch.equal(facts["state_dict"][k], full["state_dict"][k]) for k in full["state_dict"])
    from sonoseg.analysis.tables import run_parameters

    assert run_parameters([path, path]) == 123
    # torch's legacy (non-zip) format cannot be memory-mapped: it is read in full instead.
    legacy = tmp_path / "legacy.pt"
    torch.save(full, legacy, _use_new_zipfile_serialization=False)
    assert modelio.load_checked(legacy, modelio.MODEL_FORMAT, metadata_only=True)["parameters"] == 123


def test_segment_new_images_with_a_trained_model(caches, tmp_path):
    import cv2

    from sonoseg.serving import segmenter

    recipe = Recipe(min_epochs=1, max_epochs=1)
    fit("lighter_unet_c1", 0, caches, recipe, tmp_path / "m.pt", tmp_path / "h.csv", device="cpu", threads=1)
    image, _ = synth.render(9, 0, 1, (120, 200))
    cv2.imwrite(str(tmp_path / "new scan.png"), image[:, :, ::-1])
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), image[:, :, 0])
    result = segmenter.segment_images(
        tmp_path / "m.pt", [tmp_path / "new scan.png", gray], tmp_path / "out", device="cpu"
    )
    assert [p.name for p in result.written] == ["new scan_mask.png", "gray_mask.png"] and not result.failed
    for path in result.written:
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (120, 200) and set(np.unique(mask)) <= {0, 255}
    with pytest.raises(SonosegError, match="refused"):
        segmenter.segment_images(tmp_path / "h.csv", [gray], tmp_path / "out", device="cpu")


def test_training_adopts_the_chosen_weight_decay_candidate_and_only_it(small_caches, tmp_path, monkeypatch):
    """The candidates' run whose training is this very one (same network, seed, recipe, data) is copied,
    not trained again; a candidate trained with another recipe is not taken for it."""
    base = Recipe(min_epochs=1, max_epochs=1, batch_size=4)
    candidates = {}
    for decay in (0.0001, 0.0):
        out = tmp_path / f"lighter_unet_c1--wd{decay:g}" / "seed0"
        recipe = base.with_changes({"weight_decay": decay})
        fit("lighter_unet_c1", 0, small_caches, recipe, out / "model.pt", out / "history.csv", device="cpu", threads=1)
        candidates[decay] = (out / "model.pt", out / "history.csv")
    selection_file = tmp_path / "selection" / "lighter_unet_c1.json"
    points = [({"weight_decay": d}, h) for d, (_, h) in candidates.items()]
    chosen = selection.write_selection("lighter_unet_c1", points, selection_file)[0]["weight_decay"]
    other = next(d for d in candidates if d != chosen)
    final_recipe = resolve(base, selection_file)  # the network's recipe.json, as `sonoseg recipe` writes it
    assert final_recipe.weight_decay == chosen

    epochs_trained = []
    real_epoch = train.train_epoch
    monkeypatch.setattr(train, "train_epoch", lambda *a, **k: epochs_trained.append(1) or real_epoch(*a, **k))

    def fit_chosen(out, reusable):
        """The network's own run: its recipe.json's recipe, offered these finished candidates."""
        return fit(
            "lighter_unet_c1",
            0,
            small_caches,
            final_recipe,
            out / "model.pt",
            out / "history.csv",
            device="cpu",
            threads=1,
            reusable=reusable,
        )

    out = tmp_path / "lighter_unet_c1" / "seed0"
    result = fit_chosen(out, [candidates[other], candidates[chosen]])  # the matching one is not simply the first
    assert not epochs_trained and result["adopted"] == str(candidates[chosen][0])
    assert (out / "model.pt").read_bytes() == candidates[chosen][0].read_bytes()
    assert (out / "history.csv").read_bytes() == candidates[chosen][1].read_bytes()

    # Offered only the candidate of the other weight decay, the run trains (and trains the chosen recipe).
    out = tmp_path / "retrained" / "seed0"
    result = fit_chosen(out, [candidates[other]])
    assert epochs_trained == [1] and "adopted" not in result and result["epochs"] == 1
    saved = torch.load(out / "model.pt", weights_only=True)
    assert Recipe.from_json(saved["recipe"]).weight_decay == chosen
    # It is the chosen candidate's training: the same fingerprint, not the other candidate's.
    fingerprints = {d: torch.load(m, weights_only=True)["fingerprint"] for d, (m, _) in candidates.items()}
    assert saved["fingerprint"] == fingerprints[chosen] != fingerprints[other]


def fit_keeping_copies(caches, recipe: Recipe, run: Path, kept: Path, **options) -> dict:
    """Lighter U-net @1 trained (or adopted) into ``run``, its finished copies kept in ``kept``."""
    return fit(
        "lighter_unet_c1",
        0,
        caches,
        recipe,
        run / "model.pt",
        run / "history.csv",
        device="cpu",
        threads=1,
        finished_copy=kept,
        **options,
    )


def test_a_rerun_of_the_same_training_adopts_its_finished_copy_unless_told_to_train(
    small_caches, tmp_path, monkeypatch, caplog
):
    """Snakemake deletes a job's outputs before it reruns it; the finished copies kept outside them let a
    rerun that is this very training (a redone augmentation choice with the same outcome, a setting put
    back) adopt it. A changed recipe, an unreadable copy or adopt_finished=False train."""
    epochs_trained = []
    real_epoch = train.train_epoch
    monkeypatch.setattr(train, "train_epoch", lambda *a, **k: epochs_trained.append(1) or real_epoch(*a, **k))
    recipe = Recipe(min_epochs=1, max_epochs=1, batch_size=4)
    run, kept = tmp_path / "runs" / "seed0", tmp_path / "finished" / "seed0"

    def fit_run(recipe, **options):
        return fit_keeping_copies(small_caches, recipe, run, kept, **options)

    def copy_of(model: Path) -> Path:
        """The folder keeping the finished copy of the training that wrote ``model``."""
        return kept / torch.load(model, weights_only=True)["fingerprint"][: reuse.FINGERPRINT_NAME]

    fit_run(recipe)
    assert epochs_trained == [1]
    first = {name: (run / name).read_bytes() for name in ("model.pt", "history.csv")}
    first_copy = copy_of(run / "model.pt")
    assert {name: (first_copy / name).read_bytes() for name in first} == first
    assert (first_copy / "model.pt").stat().st_ino == (run / "model.pt").stat().st_ino  # a hard link, not a copy

    for name in first:  # as Snakemake does before it reruns the job
        (run / name).unlink()
    result = fit_run(recipe)
    assert epochs_trained == [1] and result["adopted"] == str(first_copy / "model.pt")
    assert {name: (run / name).read_bytes() for name in first} == first

    # Told to train, it trains, taking neither its copy nor a matching candidate (its new training is kept).
    (run / "model.pt").unlink()
    offered = [(first_copy / "model.pt", first_copy / "history.csv")]
    assert "adopted" not in fit_run(recipe, adopt_finished=False, reusable=offered) and epochs_trained == [1, 1]
    # Another recipe is another training: trained, and kept beside the first.
    other = recipe.with_changes({"weight_decay": 0.0})
    assert "adopted" not in fit_run(other) and epochs_trained == [1, 1, 1]
    other_copy = copy_of(run / "model.pt")
    assert other_copy != first_copy and (first_copy / "model.pt").read_bytes() == first["model.pt"]
    # The first recipe put back adopts its training; so does the other, again.
    assert fit_run(recipe)["adopted"] == str(first_copy / "model.pt") and epochs_trained == [1, 1, 1]
    assert (run / "model.pt").read_bytes() == first["model.pt"]
    assert fit_run(other)["adopted"] == str(other_copy / "model.pt") and epochs_trained == [1, 1, 1]
    # Two more recipes: the copies kept are the last KEPT_FINISHED_COPIES trainings (an adopted one counts
    # as kept when it was adopted), so the first recipe's, kept longest ago, is the one deleted.
    assert reuse.KEPT_FINISHED_COPIES == 3
    for decay in (0.01, 0.02):
        fit_run(recipe.with_changes({"weight_decay": decay}))
    assert epochs_trained == [1] * 5
    assert len(list(kept.iterdir())) == 3 and not first_copy.exists() and other_copy.exists()
    assert "adopted" not in fit_run(recipe) and epochs_trained == [1] * 6  # deleted: trained again

    # Trained over the outputs it links while its copy cannot be kept (a full disk): a warning, and the
    # copy is still the earlier training, whole (model and history are replaced, never written in place).
    kept_before = {name: (first_copy / name).read_bytes() for name in first}
    with monkeypatch.context() as patched, caplog.at_level(logging.WARNING, logger=reuse.log.name):
        patched.setattr(reuse, "link_or_copy", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
        assert "adopted" not in fit_run(recipe, adopt_finished=False)
    assert {name: (first_copy / name).read_bytes() for name in first} == kept_before
    assert any("No space left" in r.getMessage() for r in caplog.records)
    # Where no hard link can be made (another file system), the copy is a copy.
    with monkeypatch.context() as patched:
        patched.setattr(reuse, "_hard_link", lambda source, target: False)
        fit_run(recipe, adopt_finished=False)
    assert (first_copy / "model.pt").read_bytes() == (run / "model.pt").read_bytes() == first["model.pt"]
    assert (first_copy / "model.pt").stat().st_ino != (run / "model.pt").stat().st_ino
    assert epochs_trained == [1] * 8
    # A copy that cannot be read is passed over with a warning naming it, never an error.
    caplog.clear()
    (first_copy / "model.pt").unlink()
    (first_copy / "model.pt").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger=reuse.log.name):
        assert "adopted" not in fit_run(recipe) and epochs_trained == [1] * 9
    assert any(str(first_copy / "model.pt") in r.getMessage() for r in caplog.records)


def test_the_copies_kept_are_the_last_trainings_and_nothing_else_in_their_folder(small_caches, tmp_path):
    """Pruning counts and deletes only the folders keep_finished_copy names; the copy just kept stays whatever
    the other folders' times say (a clock ahead on a shared disk); a copy an earlier sonoseg kept loose in
    the folder, whose fingerprint came from other code, is removed."""
    run, kept = tmp_path / "runs" / "seed0", tmp_path / "finished" / "seed0"
    recipe = Recipe(min_epochs=1, max_epochs=1, batch_size=4)

    def fit_run(recipe):
        return fit_keeping_copies(small_caches, recipe, run, kept)

    for decay in (0.0, 0.01, 0.02):
        fit_run(recipe.with_changes({"weight_decay": decay}))
    copies = sorted(kept.iterdir())
    assert len(copies) == 3 and all(reuse.COPY_NAME.fullmatch(path.name) for path in copies)
    ahead = time.time_ns() + 60 * 10**9
    for path in copies:
        os.utime(path, ns=(ahead, ahead))
    backup = kept / "backup"  # the user's own folder, holding a model: not a copy
    backup.mkdir()
    shutil.copy(run / "model.pt", backup / "model.pt")
    for name in ("model.pt", "history.csv"):  # as an earlier sonoseg kept its one copy
        shutil.copy(run / name, kept / name)
    fit_run(recipe.with_changes({"weight_decay": 0.03}))
    newest = kept / torch.load(run / "model.pt", weights_only=True)["fingerprint"][: reuse.FINGERPRINT_NAME]
    assert newest.is_dir() and (newest / "model.pt").stat().st_ino == (run / "model.pt").stat().st_ino
    assert (backup / "model.pt").is_file() and not (kept / "model.pt").exists() and not (kept / "history.csv").exists()
    assert len([path for path in kept.iterdir() if reuse.COPY_NAME.fullmatch(path.name)]) == 3
    assert newest in [model.parent for model, _ in reuse.offer_finished_copy(kept)]


def test_a_model_adopted_under_other_data_names_both_and_the_data_put_back_one():
    trained = {"dataset_fingerprint": "A", "sonoseg_version": "1", "commit": "c"}
    moved = reuse.restamped(trained, "B")
    assert moved == {**trained, "dataset_fingerprint": "B", "dataset_fingerprint_at_training": "A"}
    assert reuse.restamped(moved, "C")["dataset_fingerprint_at_training"] == "A"  # where it was trained
    assert reuse.restamped(moved, "A") == trained


def test_the_code_digest_reads_a_users_network_its_builder_and_its_architecture(tmp_path, monkeypatch):
    """A network of the user's own (config custom_networks): another builder, an edit to the file that
    defines it, or another built architecture is another training; the same network is the same."""
    import importlib

    from sonoseg.networks import catalog

    monkeypatch.setattr(catalog, "CATALOG", dict(catalog.CATALOG))
    source = tmp_path / "my_layers.py"
    source.write_text(
        "import torch\n"
        "class Block(torch.nn.Conv2d):\n    pass\n"
        "def small():\n    return torch.nn.Sequential(Block(3, 1, 3))\n"
        "def large():\n    return torch.nn.Sequential(Block(3, 4, 3), Block(4, 1, 1))\n"
        "def plain():\n    return torch.nn.Conv2d(3, 1, 3)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "my_layers", importlib.import_module("my_layers"))  # removed after

    def digest(builder):
        catalog.CATALOG.pop("my_net", None)  # the name is taken by the last builder registered
        catalog.register("my_net", builder=f"my_layers:{builder}")
        return reuse.code_digest("my_net", models.build("my_net"))

    before = digest("small")
    assert before == digest("small")
    assert len({before, digest("large"), digest("plain")}) == 3
    plain = digest("plain")  # layers all torch's: the builder's own file is still read
    source.write_text(source.read_text() + "# changed\n")
    assert digest("small") != before and digest("plain") != plain
    # A built-in network: its catalog builder and arguments (Lighter U-net's channels) tell them apart.
    assert reuse.code_digest("lighter_unet_c1", models.build("lighter_unet_c1")) != reuse.code_digest(
        "lighter_unet_c128", models.build("lighter_unet_c128")
    )
    # A layer defined where no source file is (a notebook, python -c) is digested by its repr alone.
    notebook = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    block = type("Block", (torch.nn.Conv2d,), {"__module__": "__main__"})
    catalog.CATALOG.pop("my_net", None)
    catalog.register("my_net", builder="my_layers:small")
    assert len(reuse.code_digest("my_net", torch.nn.Sequential(block(3, 1, 3)))) == 64


def test_a_bad_adopt_finished_setting_is_named(small_caches, tmp_path):
    """$SONOSEG_ADOPT_FINISHED is 0 or 1; anything else stops `sonoseg train` before it trains, naming it."""
    from conftest import BIN

    recipe = tmp_path / "recipe.json"
    recipe.write_text(Recipe(min_epochs=1, max_epochs=1).to_json())
    command = [str(BIN / "sonoseg"), "train", "--network", "lighter_unet_c1", "--seed", "0", "--recipe", str(recipe)]
    command += ["--train", str(small_caches[0]), "--val", str(small_caches[1])]
    command += ["--model", str(tmp_path / "m.pt"), "--history", str(tmp_path / "h.csv"), "--device", "cpu"]
    result = subprocess.run(
        command, env={**os.environ, "SONOSEG_ADOPT_FINISHED": "yes"}, capture_output=True, text=True
    )
    assert result.returncode == 2 and "$SONOSEG_ADOPT_FINISHED is 'yes'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m.pt").exists()


def test_the_fingerprint_tells_devices_apart(tmp_path):
    """fp32 describes one fast path on a CPU and on a GPU, which do not train alike."""
    data = tmp_path / "cache.npz"
    np.savez(data, images=np.zeros((2, 4, 4, 3), np.uint8), masks=np.zeros((2, 4, 4), np.uint8))
    fingerprints = {
        reuse.run_fingerprint(
            "unet",
            0,
            Recipe(),
            data,
            data,
            None,
            device.FastPath(torch.nn.Linear(2, 1), torch.device(kind), "fp32"),
            code="c",
        )
        for kind in ("cpu", "meta")
    }
    assert len(fingerprints) == 2


def test_paper_recipes_of_the_networks_after_2021_can_be_expressed():
    """BCE + Dice, AdamW, cosine and poly schedules (docs/modern_networks.md, "Their own recipes")."""
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    recipe = Recipe(loss="bce_dice", bce_weight=0.5)
    expected = 0.5 * train.bce_loss(logits, target) + train.soft_dice_loss(logits, target)
    assert torch.allclose(train.make_loss(recipe)(logits, target), expected)
    model = torch.nn.Conv2d(3, 1, 1)
    assert isinstance(train.make_optimizer(model, Recipe(optimizer="adamw")), torch.optim.AdamW)
    cosine = Recipe(lr_schedule="cosine", learning_rate=1e-3, min_learning_rate=1e-5, max_epochs=10, min_epochs=1)
    optimizer = train.make_optimizer(model, cosine)
    scheduler = train.make_scheduler(optimizer, cosine)
    rates = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[-1] == pytest.approx(1e-5) and all(a >= b for a, b in zip(rates, rates[1:]))
    poly = Recipe(optimizer="sgd", momentum=0.9, lr_schedule="poly", learning_rate=0.01, max_epochs=4, min_epochs=1)
    optimizer = train.make_optimizer(model, poly)
    scheduler = train.make_scheduler(optimizer, poly)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 1 / 4) ** 0.9)
    with pytest.raises(SonosegError, match="lr_schedule"):
        Recipe(lr_schedule="step")


@pytest.mark.parametrize("network", ["unext", "cmunext", "malunet", "egeunet"])
def test_each_network_after_2021_learns_with_the_studys_recipe(network, tmp_path):
    """Each lightweight network after the paper trains with the study's recipe (fp32, 32 px) and learns:
    its validation Dice rises from the untrained network's to above 0.8, and its validation loss falls."""
    from sonoseg.networks import models

    train_npz, val_npz = easy_caches(tmp_path)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    untrained = models.build(network)
    path = device.FastPath(untrained, cpu, "fp32")
    _, untrained_dice = train.evaluate_loss(untrained, train.ResidentSplit(val_npz, cpu), train.soft_dice_loss, path)
    recipe = Recipe(min_epochs=6, max_epochs=6, learning_rate=3e-3, batch_size=4, precision="fp32")
    fit(network, 0, (train_npz, val_npz), recipe, tmp_path / "m.pt", tmp_path / "h.csv", device="cpu", threads=1)
    history = pd.read_csv(tmp_path / "h.csv")
    assert history["val_dice"].max() > max(0.8, untrained_dice + 0.3), (untrained_dice, history["val_dice"].tolist())
    assert history["val_loss"].min() < history["val_loss"].iloc[0], history["val_loss"].tolist()


def test_deep_supervision_adds_egeunets_weighted_side_losses(tmp_path):
    """With deep_supervision (EGE-UNet's paper), a batch's loss is the final output's plus SIDE_WEIGHTS
    times each side output's; a network without side heads is refused by name."""
    from sonoseg.networks import models

    train_npz, val_npz = easy_caches(tmp_path)
    cpu = torch.device("cpu")
    split = train.ResidentSplit(val_npz, cpu)
    torch.manual_seed(0)
    model = models.build("egeunet")
    path = device.FastPath(model, cpu, "fp32")
    recipe = Recipe(augment=False, batch_size=len(split), deep_supervision=True, precision="fp32")
    loss_fn = train.make_loss(recipe)
    x, y = split.batch(torch.arange(len(split)))
    model.train()
    with torch.no_grad():
        logits, sides = path.forward_with_side_outputs(model, x)
        final = float(loss_fn(logits, y))
        expected = final + sum(w * float(loss_fn(s, y)) for w, s in zip(model.SIDE_WEIGHTS, sides))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    got = train.train_epoch(model, split, recipe, loss_fn, optimizer, path, train.TrainingDraws.seeded(0))
    assert got == pytest.approx(expected, rel=1e-5) and expected > final * 1.5  # five side terms, weights 0.1-0.5
    plain = Recipe(augment=False, batch_size=len(split), precision="fp32")
    draws = train.TrainingDraws.seeded(0)
    assert train.train_epoch(model, split, plain, loss_fn, optimizer, path, draws) == pytest.approx(final, rel=1e-5)
    with pytest.raises(SonosegError, match="'unet' has no side outputs"):
        fit("unet", 0, (train_npz, val_npz), recipe, tmp_path / "u.pt", tmp_path / "u.csv", device="cpu", threads=1)


def test_the_ultrasound_changes_draw_from_a_stream_of_their_own(small_caches, tmp_path, monkeypatch):
    """A training with the ultrasound augmentation sees the batches, in the order and warped as, the same
    seed's training without it: with its changes made the identity the two are the same training, bit for
    bit, over several epochs (drawn from the batch order's generator, the changes shifted every later
    epoch's order). Its clean epochs (the last ultrasound_clean_epochs before the cap) have no changes."""
    epochs = 4
    paper = Recipe(min_epochs=epochs, max_epochs=epochs, batch_size=4, precision="fp32")
    with_changes = paper.with_changes({"ultrasound_augment": True, "ultrasound_clean_epochs": 1})
    fit("lighter_unet_c1", 0, small_caches, paper, tmp_path / "paper.pt", tmp_path / "paper.csv", device="cpu")
    changed_epochs = []
    real_epoch = train.train_epoch

    def counted(*args, **kwargs):
        changed_epochs.append(args[-1])  # train passes the epoch's ultrasound flag last
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", counted)
    monkeypatch.setattr(train, "apply_ultrasound", lambda images, *_: images)
    fit("lighter_unet_c1", 0, small_caches, with_changes, tmp_path / "us.pt", tmp_path / "us.csv", device="cpu")
    assert changed_epochs == [True, True, True, False]
    assert history(tmp_path / "paper.csv").equals(history(tmp_path / "us.csv"))
    assert all(torch.equal(t, weights(tmp_path / "us.pt")[k]) for k, t in weights(tmp_path / "paper.pt").items())


def test_clean_epochs_are_counted_back_from_the_cap_and_checked():
    recipe = Recipe(ultrasound_augment=True, min_epochs=10, max_epochs=30, ultrasound_clean_epochs=6)
    assert [train.ultrasound_on(recipe, e) for e in (1, 24, 25, 30)] == [True, True, False, False]
    assert not train.ultrasound_on(recipe.with_changes({"ultrasound_augment": False}), 1)
    assert all(train.ultrasound_on(recipe.with_changes({"ultrasound_clean_epochs": 0}), e) for e in (1, 30))
    with pytest.raises(SonosegError, match="ultrasound_clean_epochs: need 0 <= it < max_epochs \\(30\\)"):
        recipe.with_changes({"ultrasound_clean_epochs": 30})
    # Without the augmentation the setting does nothing: a short ladder step under a larger value is fine.
    assert Recipe(min_epochs=5, max_epochs=8, ultrasound_clean_epochs=10).max_epochs == 8


def test_clean_epochs_leave_recipes_without_the_augmentation_and_earlier_ones_unchanged():
    """The paper's augmentation: the setting is not in the recipe (nor so in its runs' fingerprints). A
    recipe with the ultrasound augmentation written before the setting existed trained without clean
    epochs, and reads back so."""
    assert "ultrasound_clean_epochs" not in Recipe().to_json()
    assert Recipe.from_json(Recipe().to_json()) == Recipe()
    on = Recipe(ultrasound_augment=True)
    assert '"ultrasound_clean_epochs": 6' in on.to_json() and Recipe.from_json(on.to_json()) == on
    earlier = {k: v for k, v in on.as_dict().items() if k != "ultrasound_clean_epochs"}
    assert Recipe.from_json(json.dumps(earlier)).ultrasound_clean_epochs == 0


@pytest.mark.parametrize("clean", [0, 1, 6, 10])
@pytest.mark.parametrize("ultrasound", [False, True])
def test_a_recipe_reads_back_whole_with_any_clean_epochs(clean, ultrasound):
    """Every recipe reads back equal from its JSON, and a sheet recipe of a network whose augmentation is
    chosen (written without it, as `sonoseg recipe` reads it) keeps the configured clean epochs when the
    choice turns the augmentation on: the run trains as its candidate did."""
    from sonoseg.training.recipe import network_recipe

    recipe = Recipe(ultrasound_augment=ultrasound, ultrasound_clean_epochs=clean, min_epochs=10, max_epochs=30)
    assert Recipe.from_json(recipe.to_json()) == recipe
    train_section = {"min_epochs": 10, "max_epochs": 30, "ultrasound_clean_epochs": clean}
    sheet = network_recipe({**train_section, "overrides": {"unet": {"ultrasound_augment": "auto"}}}, "unet")
    chosen = Recipe.from_json(sheet.to_json()).with_changes({"ultrasound_augment": True})
    assert chosen == sheet.with_changes({"ultrasound_augment": True}) and chosen.ultrasound_clean_epochs == clean


def test_a_setting_added_later_leaves_earlier_recipes_unchanged():
    """Recipes written before deep_supervision existed (and their runs' fingerprints) stay the same."""
    assert "deep_supervision" not in Recipe().to_json()
    assert Recipe.from_json(Recipe().to_json()) == Recipe()
    on = Recipe(deep_supervision=True)
    assert '"deep_supervision": true' in on.to_json() and Recipe.from_json(on.to_json()) == on


def test_history_counts_optimizer_steps_and_says_what_ended_the_training(small_caches, tmp_path):
    """8 training images in batches of 4: 2 steps an epoch. Two epochs of a still-improving run end at
    the cap; a patience of 1 with a constant learning rate of 0 ends by the rule (nothing improves)."""
    capped = Recipe(min_epochs=1, max_epochs=2, batch_size=4, augment=False)
    fit("lighter_unet_c1", 0, small_caches, capped, tmp_path / "a.pt", tmp_path / "a.csv", device="cpu")
    rows = pd.read_csv(tmp_path / "a.csv")
    assert rows["steps"].tolist() == [2, 4]
    # Where each epoch's time went: its parts add up to no more than the epoch.
    parts = rows[["train_seconds", "bn_seconds", "val_seconds"]]
    assert (parts >= 0).all().all() and (parts.sum(axis=1) <= rows["seconds"] + 3e-3).all()  # each rounded to 1 ms
    assert (parts["train_seconds"] > 0).all()
    assert rows["ended_by"].fillna("").tolist() == ["", "cap"]
    frozen = Recipe(
        min_epochs=1, max_epochs=6, batch_size=4, augment=False, learning_rate=0.0, early_stopping_patience=1
    )
    fit("lighter_unet_c1", 0, small_caches, frozen, tmp_path / "b.pt", tmp_path / "b.csv", device="cpu")
    rows = pd.read_csv(tmp_path / "b.csv")
    assert rows["ended_by"].iloc[-1] == "rule" and len(rows) < 6
    assert rows["ended_by"].iloc[:-1].isna().all()


def test_a_failed_attempt_keeps_its_lines_and_its_error_for_the_next(tmp_path, caplog, capsys):
    # Snakemake empties a job's log per attempt: the lines, and why it stopped, kept beside the checkpoint.
    from sonoseg.training import reuse

    caplog.set_level(logging.INFO)
    checkpoint, log = tmp_path / "seed0.pt", logging.getLogger("sonoseg.training.train")
    with pytest.raises(RuntimeError), reuse.attempts_log(checkpoint):
        log.info("epoch 1  train_loss 0.9 (ü)")
        raise RuntimeError("CUDA out of memory")
    kept = (tmp_path / "seed0.log").read_text(encoding="utf-8")
    assert "epoch 1  train_loss 0.9 (ü)" in kept and "this attempt failed: RuntimeError: CUDA out of memory" in kept
    with reuse.attempts_log(checkpoint):
        log.info("epoch 2")
    replayed = capsys.readouterr().err
    assert "--- earlier attempts at this training (stopped; from " in replayed and "CUDA out of memory" in replayed
    assert not (tmp_path / "seed0.log").exists()  # finished: gone with the checkpoint


def test_a_second_process_waits_for_the_one_training_the_same_run(tmp_path, caplog):
    """A kill -9 of Snakemake leaves its training running; the rerun's training resumed from the checkpoint the
    first was still writing, and the two wrote over each other. The second now waits for the first to end."""
    checkpoint, ended = tmp_path / "checkpoints" / "seed0.pt", tmp_path / "first_ended"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from sonoseg.training import reuse\n"
            "with reuse.training_held(sys.argv[1]):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(1.5)\n"
            "    pathlib.Path(sys.argv[2]).write_text('done')\n",
            str(checkpoint),
            str(ended),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        caplog.set_level(logging.INFO, logger="sonoseg.training.reuse")
        with reuse.training_held(checkpoint):
            assert ended.exists()  # entered only once the first had finished
            assert checkpoint.with_suffix(".lock").read_text().strip() == str(os.getpid())
    finally:
        holder.wait(timeout=60)
    said = caplog.text
    assert f"another process (pid {holder.pid}) is training this run, fold and seed" in said
    assert "the other process ended: going on" in said
    # Alone, it goes straight on, and without a checkpoint (a training outside the workflow) there is no lock.
    caplog.clear()
    with reuse.training_held(checkpoint):
        pass
    assert "another process" not in caplog.text
    with reuse.training_held(None):
        pass


def test_a_recipe_out_of_range_names_the_key_to_change():
    """Cutting max_epochs under the paper's min_epochs (50) was refused with a dump of all 20 recipe fields."""
    with pytest.raises(SonosegError) as error:
        Recipe(min_epochs=50, max_epochs=3)
    assert str(error.value).startswith("train.min_epochs (50) is above train.max_epochs (3): lower train.min_epochs")
    assert "Recipe(" not in str(error.value)
    with pytest.raises(SonosegError, match=r"^train\.batch_size: need at least 1, got 0$"):
        Recipe(batch_size=0)
    with pytest.raises(SonosegError, match=r"^train\.max_epochs: need at least 1, got 0$"):
        Recipe(min_epochs=0, max_epochs=0)
