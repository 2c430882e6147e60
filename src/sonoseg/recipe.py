"""The training recipe: one dataclass, filled from the config's train section plus any deltas
(a tuning-ladder step, a weight-decay candidate). Deltas are config, never code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from sonoseg.errors import SonosegError


@dataclass(frozen=True)
class Recipe:
    augment: bool = True
    loss: str = "dice"  # "dice" (soft Dice, 1 - mean over the batch) or "bce"
    optimizer: str = "adam"  # "adam" or "sgd"
    learning_rate: float = 1e-4
    momentum: float = 0.0  # SGD only; 0 is plain SGD, as PyTorch and the paper's "SGD" have it
    lr_plateau: bool = True  # ReduceLROnPlateau on validation loss
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    batch_size: int = 8
    weight_decay: float = 1e-4
    early_stopping_patience: int = 15
    min_epochs: int = 50
    max_epochs: int = 200
    # "auto": bf16 autocast where the device has fast bf16 units, else fp32 (sonoseg.train.resolve_precision)
    precision: str = "auto"

    def __post_init__(self):
        choices = {"loss": ("dice", "bce"), "optimizer": ("adam", "sgd"), "precision": ("auto", "fp32", "bf16")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise SonosegError(f"train.{key}: {getattr(self, key)!r} is not one of {allowed}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.min_epochs > self.max_epochs:
            raise SonosegError(f"train: need batch_size >= 1 and 1 <= min_epochs <= max_epochs, got {self}")

    def with_changes(self, changes: dict) -> Recipe:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SonosegError(f"recipe change(s) {unknown} are not training settings; known: {sorted(known)}")
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SonosegError(f"--recipe is not valid JSON: {exc}") from None
        return cls().with_changes(values)


def recipe_from_config(train_section: dict) -> Recipe:
    """The base recipe from config['train'] (keys that are not recipe settings are skipped)."""
    known = {f.name for f in fields(Recipe)}
    values = {k: v for k, v in train_section.items() if k in known and v != "auto"}
    return Recipe().with_changes(values)


def ladder_recipes(base: Recipe, steps: list[dict]) -> dict[str, Recipe]:
    """Each step of a tuning ladder: the base recipe with every change up to and including it."""
    recipes, changes = {}, {}
    for step in steps:
        changes.update(step["changes"])
        recipes[step["name"]] = base.with_changes(changes)
    return recipes
