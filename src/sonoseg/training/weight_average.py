"""Weight averaging: an exponential moving average (EMA) of a network's weights over its last optimizer
steps, which is what a training validates, keeps and saves when ``weight_averaging_epochs`` > 0.

Why (docs/method.md, "Weight averaging"): with few training images and a learning rate of 1e-3 the
weights of one step are a noisy point of the trajectory: the quick study's validation Dice moves by
0.1 from one epoch to the next, and which epoch is kept decides a model's Dice on other scanners more
than its architecture does. Averaging the weights over the last few epochs (Polyak averaging, as in
SWA and SWAD, the latter made for generalization to unseen domains) smooths that trajectory at the
cost of one in-place update per step.

The average follows the trained weights with a decay per step set from the horizon in epochs:
``decay = 1 - 1 / (epochs x steps per epoch)``, warmed up as TensorFlow's ExponentialMovingAverage
does: the n-th update decays by ``min(decay, (1 + n) / (10 + n))``, so that in a short training the
average does not lag behind on its first, poorest weights. It starts as a copy of the weights after
the first step. Its
BatchNorm running statistics are not averaged: each update copies the trained network's, and they are
re-estimated for the averaged weights before each validation (sonoseg.training.bn_recalibration)
where that is on. Deterministic: no random numbers; a checkpoint carries the average.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

WARMUP = 10  # the n-th update's decay is at most (1 + n) / (WARMUP + n)


class WeightAverage:
    """The averaged copy of ``model`` (PyTorch's AveragedModel, exponential decay), updated after each
    step; ``.model`` is the averaged network itself (same device, layout and modes as ``model``)."""

    def __init__(self, model: nn.Module, horizon_epochs: float, steps_per_epoch: int):
        if horizon_epochs <= 0 or steps_per_epoch < 1:
            raise ValueError(
                f"need horizon_epochs > 0 and steps_per_epoch >= 1, got {horizon_epochs}, {steps_per_epoch}"
            )
        self.decay = 1.0 - 1.0 / max(1.0, horizon_epochs * steps_per_epoch)
        self.updates = 0  # on the host: the warm-up reads no device tensor
        # use_buffers=False: buffers are copied, not averaged (see above)
        self.averaged = AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=False)
        self.model = self.averaged.module

    def step_decay(self) -> float:
        """The decay of the next update (after ``self.updates`` of them)."""
        return min(self.decay, (1 + self.updates) / (WARMUP + self.updates))

    @torch.no_grad()
    def _lerp(self, averaged: list[torch.Tensor], trained: list[torch.Tensor], _count) -> None:
        torch._foreach_lerp_(averaged, trained, 1.0 - self.step_decay())  # as PyTorch's own EMA does

    def update(self, model: nn.Module) -> None:
        """averaged <- d x averaged + (1 - d) x trained, d = step_decay() (the first update copies)."""
        self.averaged.update_parameters(model)
        self.updates += 1

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)
        self.updates = int(state["n_averaged"])
