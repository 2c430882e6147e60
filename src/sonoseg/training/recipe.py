"""The training recipe: one dataclass, filled from the config's train section plus any deltas
(a tuning-ladder step, a recipe-selection candidate). Deltas are config, never code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from sonoseg.errors import SonosegError
from sonoseg.serving.options import PRECISIONS
from sonoseg.training.selection import SELECTABLE, read_selection

# "auto": bf16 autocast where the device has fast bf16 units, else fp32 (sonoseg.serving.device.resolve_precision)


# The settings a config may leave to a choice (``auto``): by validation loss, or on the development set.
AUTO_SETTINGS = (*SELECTABLE, "ultrasound_augment")

# Settings added after runs were first made, with the value every earlier run trained under.
ADDED_LATER = {
    "deep_supervision": False,
    "ultrasound_augment": False,
    "weight_averaging_epochs": 0.0,
    "ultrasound_clean_epochs": 0,
}


CLEAN_EPOCHS_DEFAULT = 6  # Recipe.ultrasound_clean_epochs's default, which as_dict leaves out of paper recipes


@dataclass(frozen=True)
class Recipe:
    augment: bool = True  # the paper's: flips and a random affine map (sonoseg.training.train)
    # Before it, ultrasound intensity changes: depth gain, shadows, blur, speckle noise, gamma and contrast
    # (sonoseg.training.ultrasound_augment).
    ultrasound_augment: bool = False
    # The ultrasound changes are off for the last this many epochs before max_epochs: the kept weights
    # (their average among them) last learn from the images as they are. 6 of the quick study's 30: chosen
    # on the development sets (docs/method.md, "Augmentation chosen on the development set"). Counted back
    # from the cap, so a training early stopping ends before them has the changes throughout.
    ultrasound_clean_epochs: int = CLEAN_EPOCHS_DEFAULT
    # "dice" (soft Dice, 1 - mean over the batch), "bce", or "bce_dice": bce_weight x BCE + soft Dice
    # (UNeXt and CMUNeXt: 0.5 x BCE + Dice; MALUNet and EGE-UNet: BCE + Dice)
    loss: str = "dice"
    bce_weight: float = 0.5
    optimizer: str = "adam"  # "adam", "adamw" (decoupled weight decay; MALUNet, EGE-UNet) or "sgd"
    learning_rate: float = 1e-4
    momentum: float = 0.0  # SGD only; 0 is plain SGD, as PyTorch and the paper's "SGD" have it
    lr_plateau: bool = (
        True  # whether the learning rate follows lr_schedule (off: a fixed rate; the ladder's first steps)
    )
    # "plateau": ReduceLROnPlateau on the (monitored) validation loss, the paper's; "cosine": cosine
    # annealing over max_epochs down to min_learning_rate (UNeXt's, MALUNet's and EGE-UNet's code);
    # "poly": lr x (1 - epoch / max_epochs) ** 0.9 (CMUNeXt's code steps it per batch; here per epoch).
    lr_schedule: str = "plateau"
    min_learning_rate: float = 1e-5
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    batch_size: int = 8
    weight_decay: float = 1e-4
    early_stopping_patience: int = 15
    # Early stopping and the plateau LR watch the median of the last this many validation losses
    # (1: the raw loss, the rule before docs/stopping.md).
    early_stopping_window: int = 3
    # Precise BatchNorm: re-estimate BatchNorm's running statistics on the training images before
    # each validation (docs/stopping.md), from at most bn_recalibration_images of them (0: all).
    bn_recalibration: bool = True
    bn_recalibration_images: int = 0
    # Weight averaging (sonoseg.training.weight_average): validate, keep and save an exponential moving
    # average of the weights over about this many epochs of steps, not the weights of the last step
    # (0: off, the paper's). Trains alike; what is evaluated is the average. 3: chosen on the
    # development external set (docs/method.md, "Weight averaging").
    weight_averaging_epochs: float = 3.0
    min_epochs: int = 50
    max_epochs: int = 200
    precision: str = "auto"  # one of PRECISIONS
    # Also train a network's side heads against the ground truth (EGE-UNet's GT-guided heads, its
    # paper's loss): the loss of the final logits plus the network's SIDE_WEIGHTS times each side
    # output's loss. Only for networks with forward_with_side_outputs.
    deep_supervision: bool = False

    def __post_init__(self):
        choices = {
            "loss": ("dice", "bce", "bce_dice"),
            "optimizer": ("adam", "adamw", "sgd"),
            "lr_schedule": ("plateau", "cosine", "poly"),
            "precision": PRECISIONS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise SonosegError(f"train.{key}: {getattr(self, key)!r} is not one of {allowed}")
        if self.early_stopping_window < 1 or self.bn_recalibration_images < 0 or self.bn_recalibration_images == 1:
            raise SonosegError(
                f"train: need early_stopping_window >= 1 and bn_recalibration_images 0 or >= 2, got {self}"
            )
        if self.weight_averaging_epochs < 0:
            raise SonosegError(f"train.weight_averaging_epochs: need >= 0 (0: off), got {self.weight_averaging_epochs}")
        if self.weight_averaging_epochs and not self.bn_recalibration:
            raise SonosegError(
                "train: weight_averaging_epochs > 0 needs bn_recalibration (the averaged weights' BatchNorm "
                "statistics are re-estimated for them); set weight_averaging_epochs: 0 to turn both off"
            )
        # 3 from a YAML file and 3.0 are one recipe (and one fingerprint)
        object.__setattr__(self, "weight_averaging_epochs", float(self.weight_averaging_epochs))
        if self.ultrasound_clean_epochs < 0 or (
            self.ultrasound_augment and self.ultrasound_clean_epochs >= self.max_epochs
        ):
            raise SonosegError(
                f"train.ultrasound_clean_epochs: need 0 <= it < max_epochs ({self.max_epochs}) with the ultrasound "
                f"augmentation on, got {self.ultrasound_clean_epochs}: set it lower (0: the changes in every epoch)"
            )
        if self.batch_size < 1:
            raise SonosegError(f"train.batch_size: need at least 1, got {self.batch_size}")
        if self.max_epochs < 1:
            raise SonosegError(f"train.max_epochs: need at least 1, got {self.max_epochs}")
        if self.min_epochs > self.max_epochs:
            # The first thing a user cutting the epochs meets: max_epochs lowered under the paper's min_epochs.
            raise SonosegError(
                f"train.min_epochs ({self.min_epochs}) is above train.max_epochs ({self.max_epochs}): lower "
                "train.min_epochs too (the stop rule ends no training before it)"
            )

    def with_changes(self, changes: dict) -> Recipe:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SonosegError(f"recipe change(s) {unknown} are not training settings; known: {sorted(known)}")
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """The settings, less those of ADDED_LATER left at their value then: a recipe (and so a run's
        fingerprint) from before such a setting existed is the same recipe today. Without the ultrasound
        augmentation its clean epochs change nothing: left out at today's default (so a paper recipe's
        JSON is what it was), and kept otherwise, so that a recipe the augmentation choice turns on later
        reads back with the configured value (from_json)."""
        values = {k: v for k, v in asdict(self).items() if k not in ADDED_LATER or v != ADDED_LATER[k]}
        if not self.ultrasound_augment:
            values.pop("ultrasound_clean_epochs", None)
            if self.ultrasound_clean_epochs != CLEAN_EPOCHS_DEFAULT:
                values["ultrasound_clean_epochs"] = self.ultrasound_clean_epochs
        return values

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "--recipe") -> Recipe:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SonosegError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(values, dict):
            raise SonosegError(f"{source}: expected a JSON object of training settings")
        # A whole recipe as as_dict writes it (every other setting given) that leaves out a setting of
        # ADDED_LATER had that setting's value of then: as_dict leaves it out only then. A partial one
        # (a few changes) takes today's defaults for what it leaves out.
        if not {f.name for f in fields(cls)} - set(values) - set(ADDED_LATER):
            given = values
            values = {**ADDED_LATER, **values}
            if not values["ultrasound_augment"] and "ultrasound_clean_epochs" not in given:
                del values["ultrasound_clean_epochs"]  # as_dict leaves today's default out without the augmentation
        return cls().with_changes(values)

    @classmethod
    def read(cls, path: str | Path) -> Recipe:
        """A run's recipe.json (written by `sonoseg recipe`)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SonosegError(f"{path}: cannot read the recipe ({exc.strerror})") from None
        return cls.from_json(text, str(path))

    def write(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.as_dict(), sort_keys=True, indent=2) + "\n")


def resolve(base: Recipe, selection: str | Path | None = None, augmentation: str | Path | None = None) -> Recipe:
    """A run's final recipe: its sheet row's recipe, with the settings that the recipe selection chose
    (``selection``: its JSON file) and the augmentation chosen on the development external set
    (``augmentation``: sonoseg.training.augmentation_choice) when the run's settings are chosen there."""
    from sonoseg.training.augmentation_choice import read_choice

    recipe = base.with_changes(read_selection(selection)["chosen"]) if selection else base
    return recipe.with_changes(read_choice(augmentation)) if augmentation else recipe


def recipe_from_config(train_section: dict) -> Recipe:
    """The base recipe from config['train'] (keys that are not recipe settings are skipped)."""
    known = {f.name for f in fields(Recipe)}
    values = {k: v for k, v in train_section.items() if k in known and v != "auto"}
    return Recipe().with_changes(values)


def describe_changes(base: Recipe, recipe: Recipe) -> str:
    """The settings in which ``recipe`` differs from ``base``, as "name value; ..." ('' when none):
    what a table row names when a network trains otherwise than the study's recipe."""
    ours, theirs = asdict(base), asdict(recipe)
    return "; ".join(
        f"{name} {value if isinstance(value, str) else json.dumps(value)}"
        for name, value in sorted(theirs.items())
        if value != ours[name]
    )


def network_recipe(train_section: dict, network: str, changes: dict | None = None) -> Recipe:
    """A network's training settings: the train section, then its overrides, then any changes.

    An override's pretrained_backbone is not a recipe setting (sonoseg.networks.catalog.pretrained_backbone_for),
    and an override's auto (learning_rate, weight_decay: the recipe selection; ultrasound_augment: the
    augmentation choice) is resolved later."""
    overrides = {
        k: v
        for k, v in train_section.get("overrides", {}).get(network, {}).items()
        if k != "pretrained_backbone" and not (k in AUTO_SETTINGS and v == "auto")
    }
    return recipe_from_config(train_section).with_changes(overrides).with_changes(changes or {})


def ladder_recipes(base: Recipe, steps: list[dict]) -> dict[str, Recipe]:
    """Each step of a tuning ladder: the base recipe with every change up to and including it."""
    recipes, changes = {}, {}
    for step in steps:
        changes.update(step["changes"])
        recipes[step["name"]] = base.with_changes(changes)
    return recipes
