"""Precise BatchNorm: re-estimate BatchNorm's running statistics on the training images before validation.

Why (docs/stopping.md): BatchNorm's running statistics are an exponential moving average (momentum
0.1) of the batch statistics of the last ~10 training steps. In the quick study (56 training images,
batch 8: 7 steps per epoch, learning rate 1e-3, 32 x 32 input, so that U-net's deepest blocks see
2 x 2 maps and each batch statistic comes from 8 x 2 x 2 = 32 numbers per channel) that average is
both noisy and stale: it mixes statistics of weights from the previous epoch and a half, which moved a
lot since. Eval mode then normalises with statistics that belong to no model, and the validation loss
of the same weights swings by tenths from one epoch to the next. Recomputing the statistics of the
current weights on the whole training set just before validating removes that noise at its root.

How: every BatchNorm layer runs in train mode (normalising with its batch statistics, as in
training), every other module in eval mode (Dropout off: the statistics should describe what the
layer sees at inference), without gradients and without augmentation, over the training images in a
fixed order. Each layer's batch mean and variance (BatchNorm's own, read back after every call with
momentum 1) are merged, in float64, over all batches (Chan et al.'s pairwise update): the running
statistics become the pooled mean and the pooled unbiased variance of the whole set (not the mean of
per-batch variances, which ``momentum=None`` would give and which misses the spread between batch
means). The result does not depend on the previous running statistics and is deterministic for a
given model, image set and batch size; it uses no random numbers, so a seeded run's random streams
are untouched. Momentum, ``num_batches_tracked`` and the modules' train/eval modes are restored.

Cost: one forward pass over the training images (no backward): 15-30 % of a quick-study training
epoch on this project's CPU, less with ``max_images`` (docs/stopping.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

Forward = Callable[[nn.Module, torch.Tensor], object]


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers (1d/2d/3d, SyncBatchNorm) that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def recalibration_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches in a fixed order; a lone last sample joins the batch before it (a batch of
    one has no spread to normalise by, and breaks layers that pool to 1 x 1)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = list(range(0, n, batch_size))
    slices = [slice(s, min(s + batch_size, n)) for s in starts]
    if len(slices) > 1 and slices[-1].stop - slices[-1].start == 1:
        last = slices.pop()
        slices[-1] = slice(slices[-1].start, last.stop)
    return slices


def _as_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (as the training split keeps them) to float in [0, 1]; float images as they are."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


def evenly_spaced(n: int, k: int | None) -> torch.Tensor | slice:
    """The indices of ``k`` of ``n`` images spread evenly over the set (all of them for None or k >= n):
    a fixed subset that, unlike the first k, does not follow the order the set was written in."""
    if k is None or k >= n:
        return slice(0, n)
    if k < 2:
        raise ValueError(f"max_images must be >= 2, got {k}")
    return torch.linspace(0, n - 1, k).round().long()


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int,
    forward: Forward | None = None,
    max_images: int | None = None,
) -> int:
    """Set every BatchNorm layer's running mean and variance to its input statistics over ``images``.

    ``images``: (N, C, H, W), uint8 (divided by 255, as ``ResidentSplit.batch`` does) or float, on
    the model's device. ``batch_size``: the batch the statistics are computed under: the earlier
    layers normalise with the statistics of batches of that size, as in training (the quick study's
    validation losses after recalibrating with batches of 8, 32 and 56 agreed to 0.001; a larger
    batch is cheaper). ``forward``: how the model is called on a float batch, e.g.
    ``FastPath.forward`` (input normalisation, channels_last, bf16 autocast); default ``model(x)``.
    ``max_images``: at most that many images, evenly spaced over the set (a cap on the cost for
    large sets). Returns the number of layers recalibrated (0: the model has no BatchNorm and
    nothing was run).

    The batch statistics are BatchNorm's own: during the pass each layer's momentum is 1, so after
    every call its running buffers hold exactly that batch's mean and unbiased variance, which a
    forward hook merges into the set's (no second reduction over the activations). Momentum,
    ``num_batches_tracked`` and every module's train/eval mode are restored afterwards.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    images = images[evenly_spaced(len(images), max_images)]
    if len(images) < 2:
        raise ValueError("recalibrate_batchnorm needs at least 2 images")
    forward = forward or (lambda m, x: m(x))

    # Per layer: values seen per channel, and the mean and sum of squared deviations in float64,
    # merged batch by batch (Chan et al.'s pairwise update: no cancellation, one pass).
    totals: dict[_BatchNorm, list] = {layer: [0, None, None] for layer in layers}

    def accumulate(layer: _BatchNorm, inputs: tuple, output) -> None:
        x = inputs[0]
        n_b = x.numel() // x.shape[1]
        mean = layer.running_mean.double()  # momentum 1: this batch's mean ...
        m2 = layer.running_var.double() * (n_b - 1)  # ... and unbiased variance
        acc = totals[layer]
        n_a = acc[0]
        if n_a == 0:
            acc[:] = [n_b, mean, m2]
            return
        delta, n = mean - acc[1], n_a + n_b
        acc[:] = [n, acc[1] + delta * (n_b / n), acc[2] + m2 + delta * delta * (n_a * n_b / n)]

    modes = {m: m.training for m in model.modules()}
    momenta = {layer: layer.momentum for layer in layers}
    tracked = {layer: layer.num_batches_tracked.clone() for layer in layers if layer.num_batches_tracked is not None}
    handles = [layer.register_forward_hook(accumulate) for layer in layers]
    try:
        model.eval()
        for layer in layers:
            layer.train()  # normalise with batch statistics, as in training
            layer.momentum = 1.0
        for part in recalibration_slices(len(images), batch_size):
            forward(model, _as_input(images[part]))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        for layer, count in tracked.items():
            layer.num_batches_tracked.copy_(count)
    for layer in layers:
        n, mean, m2 = totals[layer]
        if n == 0:  # a layer the forward never reached: its buffers hold its last batch; cannot happen
            continue  # for the study's networks (every BatchNorm is on the forward path)
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_((m2 / max(n - 1, 1)).to(layer.running_var.dtype))
    return len(layers)
