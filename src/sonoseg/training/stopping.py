"""Early stopping that does not stop on one noisy validation epoch (docs/stopping.md).

The rule, per epoch t with raw validation loss v_t:

* The **monitored value** m_t is the median of the last ``window`` raw losses, v_{t-w+1} .. v_t. It
  exists from epoch ``window`` on (before that there is nothing to compare, and a dip in epoch 1
  must not become a target that later epochs have to beat). With ``window`` 3, one spurious epoch, up
  or down, is never the median of its window (it moves the median by one rank at most).
  ``window`` 1 is the old rule exactly (m_t = v_t from epoch 1).
* **Patience** counts the epochs since the last *progress*: an epoch makes progress when m_t is
  below the best m so far, or when v_t is below the best raw loss so far (the epoch whose weights
  are kept); progress resets the count to 0, anything else adds 1. Training stops once
  ``epoch >= min_epochs`` and the count reaches ``patience``, and always at ``max_epochs``.
  A raw new best can only *extend* training (it is what the old rule counted from), so a dip
  cannot end a run early; the median's progress keeps a run going after a dip that later raw
  losses cannot beat. Counting from whichever of the two moved last, the rule never stops earlier
  than the old raw rule nor than a pure median rule; it stops when both have stalled for
  ``patience`` epochs - a real plateau.
* **The plateau schedule** (ReduceLROnPlateau) is stepped with m_t, from epoch ``window`` on, so a
  single dip does not reset its own patience either and the learning rate is not halved on noise.
* **The weights kept** are those of the epoch with the lowest *raw* loss (first such epoch on ties).
  The raw loss is an exact measurement of those very weights on the validation set; a smoothed value
  describes a window of several weight sets and is no score of any one of them. Smoothing decides
  *when to stop*; it does not relabel which weights were measured best. A genuine early dip that is
  never beaten is therefore still kept (it is the best model validation saw), but training no
  longer ends ``patience`` epochs after it: it runs until the median stalls too, by which time the
  raw best is, in practice, a later epoch (with precise BatchNorm, sonoseg.training.bn_recalibration, raw
  losses are no longer lucky draws of stale running statistics in the first place).

The rule is torch-free and deterministic: its whole state is a dict of plain numbers and lists
(``state_dict`` / ``load_state_dict``) that a checkpoint stores, so a run killed and resumed makes
the same decisions as one that never stopped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

STATE_FORMAT = "sonoseg-stop-rule-v1"


@dataclass(frozen=True)
class StopSettings:
    """The stop rule's parameters (a Recipe carries them: see ``from_recipe``).

    patience: epochs without improvement of the monitored value before stopping (Recipe
        ``early_stopping_patience``).
    min_epochs, max_epochs: never stop before ``min_epochs``; always stop at ``max_epochs``.
    window: the median window of the monitored value (Recipe ``early_stopping_window``); 1 monitors
        the raw validation loss (the old rule).
    """

    patience: int
    min_epochs: int
    max_epochs: int
    window: int = 3

    def __post_init__(self):
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0 <= self.min_epochs <= self.max_epochs or self.max_epochs < 1:
            raise ValueError(f"need 0 <= min_epochs <= max_epochs and max_epochs >= 1, got {self}")

    @classmethod
    def from_recipe(cls, recipe) -> StopSettings:
        """From a Recipe (``early_stopping_window`` defaults to 3 where the recipe lacks it)."""
        return cls(
            patience=recipe.early_stopping_patience,
            min_epochs=recipe.min_epochs,
            max_epochs=recipe.max_epochs,
            window=getattr(recipe, "early_stopping_window", 3),
        )


@dataclass(frozen=True)
class Decision:
    """What the training loop does after epoch ``epoch``.

    keep_weights: this epoch has the lowest raw validation loss so far: keep its weights as the best.
    monitored: the smoothed value (median of the window), or None while the window is not yet full.
    plateau_value: the value to step the plateau scheduler with, or None: do not step it this epoch.
    improved: the monitored value reached a new low.
    progress: the monitored value or the raw loss reached a new low: the patience counter was reset.
    stale_epochs: epochs since the last progress.
    stop: stop training now (after this epoch's checkpoint).
    """

    epoch: int
    val_loss: float
    keep_weights: bool
    monitored: float | None
    plateau_value: float | None
    improved: bool
    progress: bool
    stale_epochs: int
    stop: bool


def median(values: list[float]) -> float:
    """The median; for an even count the upper of the two middle values (never pulled down by a dip)."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


class StopRule:
    """Early stopping on the median of the last ``window`` validation losses; see the module docstring.

    >>> rule = StopRule(StopSettings(patience=2, min_epochs=1, max_epochs=10, window=3))
    >>> [rule.update(v).stop for v in [0.9, 0.1, 0.8, 0.7, 0.7, 0.7]]
    [False, False, False, False, False, True]
    """

    def __init__(self, settings: StopSettings):
        self.settings = settings
        self.epoch = 0
        self.recent: list[float] = []  # the last `window` raw losses, oldest first
        self.best_loss: float | None = None  # lowest raw loss (the kept weights' loss)
        self.best_epoch = 0
        self.best_monitored: float | None = None
        self.best_monitored_epoch = 0
        self.stale_epochs = 0

    # ------------------------------------------------------------------ the rule

    def update(self, val_loss: float, epoch: int | None = None) -> Decision:
        """Record the validation loss of the next epoch (``epoch``, if given, must be that epoch's
        1-based number: a check against a loop that skipped or repeated one)."""
        s = self.settings
        val_loss = float(val_loss)
        if not math.isfinite(val_loss):
            raise ValueError(f"validation loss {val_loss} at epoch {self.epoch + 1} is not finite")
        if epoch is not None and epoch != self.epoch + 1:
            raise ValueError(f"stop rule: expected epoch {self.epoch + 1}, got {epoch}")
        if self.stop:
            raise ValueError(f"stop rule: epoch {self.epoch + 1} after the rule said stop at epoch {self.epoch}")
        self.epoch += 1
        self.recent = (self.recent + [val_loss])[-s.window :]

        keep = self.best_loss is None or val_loss < self.best_loss
        if keep:
            self.best_loss, self.best_epoch = val_loss, self.epoch

        monitored = median(self.recent) if len(self.recent) == s.window else None
        improved = monitored is not None and (self.best_monitored is None or monitored < self.best_monitored)
        if improved:
            self.best_monitored, self.best_monitored_epoch = monitored, self.epoch
        progress = keep or improved
        self.stale_epochs = 0 if progress else self.stale_epochs + 1
        return Decision(
            epoch=self.epoch,
            val_loss=val_loss,
            keep_weights=keep,
            monitored=monitored,
            plateau_value=monitored,
            improved=improved,
            progress=progress,
            stale_epochs=self.stale_epochs,
            stop=self.stop,
        )

    @property
    def stop(self) -> bool:
        """Whether training should end now (also right after ``load_state_dict``)."""
        return bool(self.ended_by)

    @property
    def ended_by(self) -> str:
        """What ends training now: "rule" (min_epochs run and patience epochs without progress: the
        validation loss stopped improving), "cap" (max_epochs reached while it still improved), or ""
        (go on). The rule wins when both hold: such a run did stop improving."""
        s = self.settings
        if self.epoch >= s.min_epochs and self.stale_epochs >= s.patience:
            return "rule"
        return "cap" if self.epoch >= s.max_epochs else ""

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Plain numbers and lists (JSON- and ``torch.load(weights_only=True)``-safe)."""
        return {
            "format": STATE_FORMAT,
            "settings": asdict(self.settings),
            "epoch": self.epoch,
            "recent": list(self.recent),
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "best_monitored": self.best_monitored,
            "best_monitored_epoch": self.best_monitored_epoch,
            "stale_epochs": self.stale_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict``'s output; refuses a state of other settings (a changed recipe)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a stop-rule state ({STATE_FORMAT}): format {state.get('format')!r}")
        if state["settings"] != asdict(self.settings):
            raise ValueError(f"stop-rule state of settings {state['settings']}, not {asdict(self.settings)}")
        self.epoch = int(state["epoch"])
        self.recent = [float(v) for v in state["recent"]]
        self.best_loss = None if state["best_loss"] is None else float(state["best_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.best_monitored = None if state["best_monitored"] is None else float(state["best_monitored"])
        self.best_monitored_epoch = int(state["best_monitored_epoch"])
        self.stale_epochs = int(state["stale_epochs"])

    @classmethod
    def from_state_dict(cls, state: dict) -> StopRule:
        rule = cls(StopSettings(**state["settings"]))
        rule.load_state_dict(state)
        return rule


def replay(losses: list[float], settings: StopSettings) -> list[Decision]:
    """The decisions the rule makes on a whole loss sequence, up to and including the epoch it stops."""
    rule, decisions = StopRule(settings), []
    for loss in losses:
        decisions.append(rule.update(loss))
        if rule.stop:
            break
    return decisions
