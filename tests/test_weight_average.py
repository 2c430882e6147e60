"""Weight averaging (sonoseg.training.weight_average, recipe weight_averaging_epochs): the EMA's arithmetic,
what train() validates, keeps and saves, bit-identical reruns and resumes, the recipe field, Adam's fused kernel."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import easy_caches, keep_every_checkpoint
from torch import nn

from sonoseg.errors import SonosegError
from sonoseg.serving import modelio
from sonoseg.serving.device import FastPath
from sonoseg.training import reuse, train
from sonoseg.training.recipe import ADDED_LATER, Recipe
from sonoseg.training.weight_average import WeightAverage

# ----------------------------------------------------------------------------- the average by hand


def set_weights(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Fill every parameter with seeded random values; a copy of them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def averaged_weights(average: WeightAverage) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in average.model.named_parameters()}


def test_the_average_is_an_ema_whose_decay_follows_the_horizon_in_steps_after_a_warm_up():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    average = WeightAverage(model, horizon_epochs=2, steps_per_epoch=5)
    assert average.decay == 1 - 1 / (2 * 5)
    # The first update copies the weights, whatever the average held before (the copy made at construction).
    first = set_weights(model, 1)
    average.update(model)
    for name, value in averaged_weights(average).items():
        assert torch.equal(value, first[name]), name
    # The average is its own copy: training the model does not move it until the next update.
    second = set_weights(model, 2)
    for name, value in averaged_weights(average).items():
        assert torch.equal(value, first[name]), name
        assert value.data_ptr() != dict(model.named_parameters())[name].data_ptr(), name
    average.update(model)  # the second update (n = 1): decay (1 + 1) / (10 + 1), under the horizon's 0.9
    expected = {name: 2 / 11 * first[name] + 9 / 11 * second[name] for name in first}
    torch.testing.assert_close(averaged_weights(average), expected)
    assert not torch.allclose(expected["weight"], second["weight"])  # the update is really a mix
    third = set_weights(model, 3)
    average.update(model)  # n = 2: 3 / 12
    expected = {name: 3 / 12 * expected[name] + 9 / 12 * third[name] for name in first}
    torch.testing.assert_close(averaged_weights(average), expected)
    assert average.state_dict()["updates"] == average.updates == 3
    # From the 80th update on, (1 + n) / (10 + n) >= 0.9: the horizon's decay holds.
    average.updates = 79
    assert average.step_decay() < 0.9
    average.updates = 80
    assert average.step_decay() == average.decay
    latest = set_weights(model, 4)
    before = averaged_weights(average)
    average.update(model)
    expected = {name: 0.9 * before[name] + 0.1 * latest[name] for name in first}
    torch.testing.assert_close(averaged_weights(average), expected)


def test_a_horizon_shorter_than_a_step_follows_the_weights_and_nonsense_is_refused():
    model = nn.Linear(3, 2)
    assert WeightAverage(model, 1, 1).decay == 0.0  # horizon of one step: the average is the last weights
    short = WeightAverage(model, 0.1, 5)  # half a step: floored at one step, not a negative decay
    assert short.decay == 0.0
    set_weights(model, 1)
    short.update(model)
    latest = set_weights(model, 2)
    short.update(model)
    for name, value in averaged_weights(short).items():
        assert torch.equal(value, latest[name]), name
    for horizon, steps in ((0, 5), (-1, 5), (2, 0)):
        with pytest.raises(ValueError, match="horizon_epochs > 0 and steps_per_epoch >= 1"):
            WeightAverage(model, horizon, steps)


def test_batchnorms_statistics_are_copied_rather_than_averaged_and_the_state_round_trips():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    average = WeightAverage(model, 1, 4)
    set_weights(model, 1)
    average.update(model)
    model.train()
    model(torch.randn(8, 4) * 5 + 2)  # moves the trained network's running statistics
    trained = dict(model.named_buffers())
    assert not torch.equal(trained["1.running_mean"], dict(average.model.named_buffers())["1.running_mean"])
    average.update(model)  # a step's update moves the parameters only ...
    assert not torch.equal(trained["1.running_mean"], dict(average.model.named_buffers())["1.running_mean"])
    average.copy_buffers_from(model)  # ... the buffers are copied before BN re-estimation
    for name, value in average.model.named_buffers():
        assert torch.equal(value, trained[name]), name
        assert value.data_ptr() != trained[name].data_ptr(), name

    # A checkpoint's average (state_dict) restored into a fresh one continues bit for bit.
    restored = WeightAverage(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), 1, 4)
    restored.load_state_dict(average.state_dict())
    set_weights(model, 2)
    average.update(model)
    restored.update(model)
    for (name, value), (_, other) in zip(
        average.state_dict()["weights"].items(), restored.state_dict()["weights"].items()
    ):
        assert torch.equal(value, other), name
    assert restored.state_dict()["updates"] == 3


# ----------------------------------------------------------------------------- train() with the average


def tiny_caches(root: Path) -> tuple[Path, Path]:
    """conftest's easy caches, smaller: 12 training, 4 validation images."""
    return easy_caches(root, counts=(("train", 12), ("val", 4)))


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_caches(tmp_path_factory.mktemp("wa_cache"))


# 12 training images in batches of 5: slices of 5, 5 and 2, three optimizer steps an epoch.
STEPS_PER_EPOCH = 3


def recipe(epochs: int = 3, averaging: float = 1.0, **changes) -> Recipe:
    return Recipe(
        min_epochs=epochs,
        max_epochs=epochs,
        batch_size=5,
        learning_rate=3e-3,
        precision="fp32",
        weight_averaging_epochs=averaging,
        **changes,
    )


def fit(data, out: Path, run_recipe: Recipe, seed: int = 0, **options) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return train.train(
        network="lighter_unet_c1",
        seed=seed,
        train_data=data[0],
        val_data=data[1],
        recipe=run_recipe,
        model_out=out / "model.pt",
        history_out=out / "history.csv",
        device="cpu",
        threads=1,
        **options,
    )


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def history(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=train.TIMING_COLUMNS)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def script_validation_losses(monkeypatch, losses: dict[int, float]) -> dict:
    """Scripted validation losses (epoch -> loss) fix which epochs are kept; the Dice is measured."""
    real_evaluate = train.evaluate_loss
    calls = {"epoch": 0, "models": []}  # and the networks validated

    def evaluate(model, *args, **kwargs):
        calls["epoch"] += 1
        calls["models"].append(model)
        return losses[calls["epoch"]], real_evaluate(model, *args, **kwargs)[1]

    monkeypatch.setattr(train, "evaluate_loss", evaluate)
    return calls


def record_averages(monkeypatch) -> list:
    """The WeightAverage instances train() makes, with the trained network each was made for."""
    made = []

    class Recorded(WeightAverage):
        def __init__(self, model, horizon_epochs, steps_per_epoch):
            super().__init__(model, horizon_epochs, steps_per_epoch)
            made.append((self, model))

    monkeypatch.setattr(train, "WeightAverage", Recorded)
    return made


def test_training_validates_keeps_and_saves_the_average(caches, tmp_path, monkeypatch):
    """With decreasing validation losses the last epoch is kept: the model file holds the average's weights
    (not the trained network's), after STEPS_PER_EPOCH updates an epoch; BatchNorm's statistics are
    re-estimated for the average."""
    epochs = 3
    calls = script_validation_losses(monkeypatch, {1: 0.9, 2: 0.8, 3: 0.7})
    made = record_averages(monkeypatch)
    evaluated = []  # the network BatchNorm is re-estimated for (or not) before each validation
    real_recalibrate = train.recalibrate

    def recalibrate(model, *args, **kwargs):
        evaluated.append(model)
        real_recalibrate(model, *args, **kwargs)

    monkeypatch.setattr(train, "recalibrate", recalibrate)
    result = fit(caches, tmp_path, recipe(epochs, averaging=2.0))
    assert result["best_epoch"] == epochs
    [(average, trained)] = made
    assert average.decay == 1 - 1 / (2.0 * STEPS_PER_EPOCH)
    assert average.state_dict()["updates"] == epochs * STEPS_PER_EPOCH  # one update per optimizer step
    assert all(model is average.model for model in evaluated) and len(evaluated) == epochs
    assert all(model is average.model for model in calls["models"]) and len(calls["models"]) == epochs
    saved = weights(tmp_path / "model.pt")
    assert same_weights(saved, modelio.fp32_weights(average.model))
    trained_weights = modelio.fp32_weights(trained)
    assert not torch.equal(saved["outc.weight"], trained_weights["outc.weight"])
    running = [key for key in saved if key.endswith("running_mean")]
    assert running
    assert not any(torch.equal(saved[key], trained_weights[key]) for key in running)
    with pytest.raises(SonosegError, match="needs bn_recalibration"):
        recipe(epochs, averaging=2.0, bn_recalibration=False)
    assert recipe(epochs, averaging=0.0, bn_recalibration=False).weight_averaging_epochs == 0


def test_averaged_runs_are_deterministic_and_differ_from_unaveraged_ones(caches, tmp_path):
    runs = {
        "averaged": recipe(averaging=1.0),
        "rerun": recipe(averaging=1.0),
        "plain": recipe(averaging=0.0),
        # 9 updates: the warm-up keeps every decay under 1.0's cap (2/3), not under 0.5's (1/3)
        "shorter": recipe(averaging=0.5),
    }
    for name, run_recipe in runs.items():
        fit(caches, tmp_path / name, run_recipe)
    averaged = weights(tmp_path / "averaged" / "model.pt")
    assert same_weights(averaged, weights(tmp_path / "rerun" / "model.pt"))
    assert history(tmp_path / "averaged" / "history.csv").equals(history(tmp_path / "rerun" / "history.csv"))
    for other in ("plain", "shorter"):
        other_weights = weights(tmp_path / other / "model.pt")
        assert averaged.keys() == other_weights.keys()
        assert not torch.equal(averaged["outc.weight"], other_weights["outc.weight"]), other
    # The training itself is alike (the same steps, the same training losses); only what is evaluated differs.
    plain = pd.read_csv(tmp_path / "plain" / "history.csv")
    with_average = pd.read_csv(tmp_path / "averaged" / "history.csv")
    assert plain["train_loss"].tolist() == with_average["train_loss"].tolist()
    assert plain["val_loss"].tolist() != with_average["val_loss"].tolist()
    fingerprints = {name: torch.load(tmp_path / name / "model.pt", weights_only=True)["fingerprint"] for name in runs}
    assert fingerprints["averaged"] == fingerprints["rerun"]
    assert len({fingerprints[name] for name in ("averaged", "plain", "shorter")}) == 3


def test_resuming_an_averaged_run_from_any_epochs_checkpoint_is_bit_identical(caches, tmp_path, monkeypatch):
    """The checkpoint carries the average: a run resumed after an epoch that was the best so far (whose
    best weights the checkpoint leaves out: they are the average's own) or one that was not ends with
    the uninterrupted run's weights and history. Epoch 2 stays the best: the weights kept after resuming
    its checkpoint are the ones restored from it."""
    epochs, improving = 4, {1, 2}
    calls = script_validation_losses(monkeypatch, {1: 0.9, 2: 0.8, 3: 0.85, 4: 0.82})
    snapshots = keep_every_checkpoint(monkeypatch, tmp_path / "snapshots")

    def run(out: Path, resume_from: int = 0) -> None:
        out.mkdir()
        if resume_from:
            shutil.copy(snapshots / f"epoch{resume_from}.pt", out / "last.pt")
        calls["epoch"] = resume_from
        fit(caches, out, recipe(epochs, averaging=1.5), seed=3, checkpoint=out / "last.pt", checkpoint_seconds=0)

    run(tmp_path / "reference")
    reference = tmp_path / "reference"
    assert torch.load(reference / "model.pt", weights_only=True)["best_epoch"] == 2
    for epoch in range(1, epochs):
        saved = torch.load(snapshots / f"epoch{epoch}.pt", weights_only=True)
        assert saved["averaged"]["updates"] == epoch * STEPS_PER_EPOCH, epoch
        assert (saved["state"]["best_state"] is None) == (epoch in improving), epoch
    for epoch in range(1, epochs):
        out = tmp_path / f"resumed_after_{epoch}"
        run(out, resume_from=epoch)
        assert history(reference / "history.csv").equals(history(out / "history.csv")), epoch
        assert same_weights(weights(reference / "model.pt"), weights(out / "model.pt")), epoch


# ----------------------------------------------------------------------------- the recipe, the optimizer


def test_the_recipe_field_is_checked_and_off_leaves_earlier_recipes_unchanged(tmp_path):
    with pytest.raises(SonosegError, match="weight_averaging_epochs"):
        Recipe(weight_averaging_epochs=-1)
    assert ADDED_LATER["weight_averaging_epochs"] == 0.0 and Recipe().weight_averaging_epochs == 3.0
    # Off, a recipe's JSON is what it was before the field existed: the field is left out ...
    off = Recipe(weight_averaging_epochs=0)
    earlier = {k: v for k, v in ADDED_LATER.items() if k != "weight_averaging_epochs"}
    # (ultrasound_clean_epochs came later still, and is left out without the ultrasound augmentation)
    settings = {k: v for k, v in asdict(off).items() if k not in ("weight_averaging_epochs", "ultrasound_clean_epochs")}
    before = json.dumps({k: v for k, v in settings.items() if k not in earlier or v != earlier[k]}, sort_keys=True)
    assert off.to_json() == before and "weight_averaging_epochs" not in off.as_dict()
    # ... and such a JSON (one written before the field) reads back as off, not as today's default.
    assert Recipe.from_json(before) == off
    on = Recipe(weight_averaging_epochs=2.5)
    assert on.as_dict()["weight_averaging_epochs"] == 2.5 and '"weight_averaging_epochs": 2.5' in on.to_json()
    assert Recipe.from_json(on.to_json()) == on and Recipe.from_json(Recipe().to_json()) == Recipe()
    # A partial recipe (a few changes) takes today's defaults, averaging included.
    assert Recipe.from_json('{"optimizer": "sgd"}') == Recipe(optimizer="sgd")
    # 3 as YAML gives it and 3.0 are one recipe, one JSON.
    assert (
        Recipe(weight_averaging_epochs=3) == Recipe()
        and Recipe(weight_averaging_epochs=3).to_json() == Recipe().to_json()
    )
    data = tmp_path / "data.npz"
    np.savez(data, images=np.zeros((2, 4, 4, 3), np.uint8), masks=np.zeros((2, 4, 4), np.uint8))
    path = FastPath(nn.Linear(2, 1), torch.device("cpu"), "fp32")
    recipes = (off, on, Recipe(weight_averaging_epochs=1))
    fingerprints = {reuse.run_fingerprint("unet", 0, r, data, data, None, path, code="c") for r in recipes}
    assert len(fingerprints) == 3


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_and_adamw_use_the_fused_kernel(optimizer):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    made = train.make_optimizer(model, Recipe(optimizer=optimizer, learning_rate=1e-2))
    assert type(made) is {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    assert made.defaults["fused"] is True and made.param_groups[0]["fused"] is True
    before = model.weight.detach().clone()
    model(torch.randn(3, 4)).sum().backward()
    made.step()  # the fused kernel runs on the CPU
    assert not torch.equal(before, model.weight)
    assert not train.make_optimizer(model, Recipe(optimizer="sgd")).defaults.get("fused")
