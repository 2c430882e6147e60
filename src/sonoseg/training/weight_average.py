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
does: after n updates the next one decays by ``min(decay, (1 + n) / (10 + n))``, so that in a short
training the average does not lag behind on its first, poorest weights. It starts as a copy of the
weights after the first step. Its buffers (BatchNorm's running statistics) are not averaged: before
each validation they are copied from the trained network and the statistics re-estimated for the
averaged weights (sonoseg.training.bn_recalibration; the recipe refuses averaging without it), so a
step updates the parameters only. Deterministic: no
random numbers; a checkpoint carries the average.

Written with PyTorch's multi-tensor kernels, as its own EMA (torch.optim.swa_utils) computes it,
rather than through AveragedModel, whose update reads a step counter on the host and copies it to
the device at every step: on a GPU that waits for the queued work, once per optimizer step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

WARMUP = 10  # after n updates, the next one decays by at most (1 + n) / (WARMUP + n)


class WeightAverage:
    """The averaged copy of ``model`` (same device, layout and modes), updated after each step;
    ``.model`` is the averaged network itself."""

    def __init__(self, model: nn.Module, horizon_epochs: float, steps_per_epoch: int):
        if horizon_epochs <= 0 or steps_per_epoch < 1:
            raise ValueError(
                f"need horizon_epochs > 0 and steps_per_epoch >= 1, got {horizon_epochs}, {steps_per_epoch}"
            )
        self.decay = 1.0 - 1.0 / max(1.0, horizon_epochs * steps_per_epoch)
        self.updates = 0  # on the host: the warm-up reads no device tensor
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)

    def step_decay(self) -> float:
        """The decay of the next update (after ``self.updates`` of them)."""
        return min(self.decay, (1 + self.updates) / (WARMUP + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """averaged <- d x averaged + (1 - d) x trained, d = step_decay(), for every parameter (the first
        update copies)."""
        averaged, trained = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        if self.updates == 0:
            torch._foreach_copy_(averaged, trained)
        else:
            torch._foreach_lerp_(averaged, trained, 1.0 - self.step_decay())
        self.updates += 1

    @torch.no_grad()
    def copy_buffers_from(self, model: nn.Module) -> None:
        """The trained network's buffers (BatchNorm's statistics and step count, constants), copied not
        averaged: once before each re-estimation, which then overwrites the statistics, not every step."""
        buffers = list(self.model.buffers())
        if buffers:
            torch._foreach_copy_(buffers, list(model.buffers()))

    def state_dict(self) -> dict:
        return {"weights": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
