"""Training (docs/method.md, "Training"): augmentation, soft-Dice loss, Adam, plateau LR, early
stopping, best-validation weights kept, seeded, resumable from a checkpoint written after every epoch.

Validation (docs/stopping.md): before each validation BatchNorm's running statistics are re-estimated
on the training images (sonoseg.training.bn_recalibration), and early stopping and the plateau schedule watch
the median of the last validation losses (sonoseg.training.stopping), so that one noisy epoch stops nothing.

The fast path (docs/performance.md): the split stays resident on the training device as uint8,
augmentation runs there batched, forward and backward run under bf16 autocast where the device has
fast bf16 units (``train.precision: auto``) and in channels_last where that was measured to pay, and
the loss is read back to the host once per epoch, not once per step."""

from __future__ import annotations

import csv
import logging
import math
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sonoseg.analysis.results import COMPUTE_COLUMNS
from sonoseg.data.preprocess import (
    IMAGENET_NORMALIZATION,
    cache_dataset_fingerprint,
    cache_interpolation,
    cache_marks,
    load_cache,
)
from sonoseg.data.provenance import commit_with, stamp
from sonoseg.data.split import FEWEST_IMAGES
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog, models
from sonoseg.serving.device import FastPath, device_name, make_deterministic, processor_name, select_device
from sonoseg.serving.modelio import CHECKPOINT_FORMAT, fp32_weights, load_checked, save_atomic, save_model
from sonoseg.training.bn_recalibration import recalibrate_batchnorm
from sonoseg.training.recipe import Recipe
from sonoseg.training.reuse import (
    adopt_identical_run,
    code_digest,
    keep_finished_copy,
    offer_finished_copy,
    run_fingerprint,
)
from sonoseg.training.stopping import StopRule, StopSettings
from sonoseg.training.ultrasound_augment import apply_ultrasound, draw_ultrasound
from sonoseg.training.weight_average import WeightAverage

log = logging.getLogger(__name__)
# val_loss_monitored: what early stopping and the plateau schedule saw (the median of the last
# early_stopping_window validation losses; empty while the window fills).
# steps: optimizer steps so far (the budget in steps as well as epochs); ended_by, on the last row only:
# "rule" (the stop rule ended the training: it had converged) or "cap" (max_epochs, still improving).
# precision, device, processor, commit (COMPUTE_COLUMNS): what the epoch ran on and the sonoseg commit that ran
# it, per epoch since a training resumed from a checkpoint on another machine (or after a code change) ran on
# two; empty in a history written before they existed.
HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_dice",
    "val_loss_monitored",
    "lr",
    "seconds",
    "steps",
    "ended_by",
    "train_seconds",
    "bn_seconds",
    "val_seconds",
    *COMPUTE_COLUMNS,
]
# COMPUTE_COLUMNS: the fast path (FastPath.describe: "fp32", "bf16 + channels_last"), the torch device
# ("cpu", "cuda:0") and the processor's name (sonoseg.serving.device.processor_name: the CPU's model, or the
# GPU's name); named where the collect stage reads them (sonoseg.analysis.results), which imports no torch.
# A checkpoint at most this often (seconds of training); train.checkpoint_seconds in the config.
DEFAULT_CHECKPOINT_SECONDS = 60.0
TIMING_COLUMNS = ["seconds", "train_seconds", "bn_seconds", "val_seconds"]  # wall time: never reproducible
DICE_EPSILON = 1e-6  # only keeps an empty mask with an empty prediction from dividing by zero


# ----------------------------------------------------------------------------- losses, metrics


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over the batch of the per-sample soft Dice."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    intersection = (prob * target).sum(1)
    dice = (2 * intersection + DICE_EPSILON) / (prob.sum(1) + target.sum(1) + DICE_EPSILON)
    return 1 - dice.mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 0.5) -> torch.Tensor:
    """bce_weight x BCE + soft Dice: UNeXt's and CMUNeXt's loss (weight 0.5), MALUNet's (1)."""
    return bce_weight * bce_loss(logits, target) + soft_dice_loss(logits, target)


LOSSES = {"dice": soft_dice_loss, "bce": bce_loss, "bce_dice": bce_dice_loss}


def make_loss(recipe: Recipe):
    if recipe.loss == "bce_dice":
        return lambda logits, target: bce_dice_loss(logits, target, recipe.bce_weight)
    return LOSSES[recipe.loss]


def hard_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample Dice of the thresholded prediction; 1 when both are empty."""
    pred = (logits > 0).flatten(1).float()
    target = target.flatten(1)
    denominator = pred.sum(1) + target.sum(1)
    dice = 2 * (pred * target).sum(1) / denominator.clamp(min=1)
    return torch.where(denominator == 0, torch.ones_like(dice), dice)


# ----------------------------------------------------------------------------- augmentation


def draw_augmentation(n: int, generator: torch.Generator) -> torch.Tensor:
    """One random draw per sample: the sampling grids' affine matrices (n, 2, 3), float32.

    Flips (p=0.5 each) and, with p=0.5, an affine map: scale U(0.8,1.2) per axis, translation
    +-20 %, rotation +-45 deg, shear +-16 deg. Drawn on the host from the seeded generator (a few
    hundred numbers per epoch, the same on every device) and moved to the device once per epoch.
    """
    draw = lambda *shape: torch.rand(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    hflip, vflip, apply_affine = draw(n) < 0.5, draw(n) < 0.5, draw(n) < 0.5
    scale = 0.8 + 0.4 * draw(n, 2)
    shift = -0.2 + 0.4 * draw(n, 2)
    angle = torch.deg2rad(-45 + 90 * draw(n))
    shear = torch.deg2rad(-16 + 32 * draw(n))

    # Forward map in normalised coordinates: translate . rotate . shear . scale (then flips).
    eye = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    S, R, H, T, Fl = eye.clone(), eye.clone(), eye.clone(), eye.clone(), eye.clone()
    S[:, 0, 0], S[:, 1, 1] = scale[:, 0], scale[:, 1]
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    H[:, 0, 1] = shear.tan()
    T[:, 0, 2], T[:, 1, 2] = 2 * shift[:, 0], 2 * shift[:, 1]
    affine = T @ R @ H @ S
    affine = torch.where(apply_affine[:, None, None], affine, eye)
    Fl[:, 0, 0] = torch.where(hflip, -1.0, 1.0)
    Fl[:, 1, 1] = torch.where(vflip, -1.0, 1.0)
    forward = affine @ Fl
    # grid_sample looks up, for each output pixel, where it came from: the inverse map.
    return torch.linalg.inv(forward)[:, :2, :].float()


def warp(images: torch.Tensor, masks: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply per-sample affine grids on the images' device: bilinear image, nearest mask, zero fill."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images, masks


# ----------------------------------------------------------------------------- helpers


class ResidentSplit:
    """A cached split kept on the training device as uint8 (N, 3, H, W) images and (N, 1, H, W)
    masks: a quarter of float32's memory (~100 MB for 416 images at 256x256), and every batch is a
    gather on the device instead of a host-to-device copy."""

    def __init__(self, path: str | Path, device: torch.device):
        arrays = load_cache(path)
        self.interpolation = cache_interpolation(arrays)
        self.marks = cache_marks(arrays)
        self.dataset_fingerprint = cache_dataset_fingerprint(arrays)
        self.images = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).contiguous().to(device)
        self.masks = torch.from_numpy(arrays["masks"]).unsqueeze(1).contiguous().to(device)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def batch(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float().div_(255), self.masks[index].float()

    def lesion_areas(self) -> list[int]:
        """Each training image's lesion area in input pixels, sorted, images without a lesion left out:
        the scale the network learned, recorded in the model file for the size-aware scale selection
        (docs/method.md, "Size-aware scale selection")."""
        areas = (self.masks > 0).sum(dim=(1, 2, 3))
        return sorted(int(a) for a in areas[areas > 0].tolist())


# ----------------------------------------------------------------------------- optimisation


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    # Adam's fused kernel: one pass over each tensor instead of a dozen; the same update, deterministic, and
    # 10-20 % of a U-net training step at the quick study's 32 x 32 on a CPU (docs/performance.md).
    if recipe.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay, fused=True
        )
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay, fused=True
        )
    return torch.optim.SGD(
        model.parameters(), lr=recipe.learning_rate, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe):
    """The recipe's learning-rate schedule (stepped once per epoch, and only when lr_plateau is on):
    ReduceLROnPlateau on the validation loss, cosine annealing or the poly decay."""
    if recipe.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=recipe.max_epochs, eta_min=recipe.min_learning_rate
        )
    if recipe.lr_schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: max(0.0, 1 - epoch / recipe.max_epochs) ** 0.9
        )
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=recipe.plateau_factor, patience=recipe.plateau_patience
    )


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches over a shuffled order. A lone last sample breaks BatchNorm statistics (and
    DeepLab's 1x1 pooled branch): it is skipped for that epoch."""
    slices = [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if batch_size > 1 and len(slices) > 1 and slices[-1].stop - slices[-1].start == 1:
        slices.pop()
    return slices


VALIDATION_BATCH = 32  # forward only, no gradients: larger batches than training's cost little memory


def recalibrate(model, split: ResidentSplit, recipe: Recipe, path: FastPath) -> None:
    """Precise BatchNorm before validation (docs/stopping.md): the running statistics of the current
    weights, from up to ``recipe.bn_recalibration_images`` training images (0: all), no augmentation,
    under the run's precision and memory format. Uses no random numbers: the seeded streams, and so a
    resumed run, are untouched."""
    if recipe.bn_recalibration:
        recalibrate_batchnorm(
            model,
            split.images,
            VALIDATION_BATCH,
            forward=path.forward,
            max_images=recipe.bn_recalibration_images or None,
        )


def evaluate_loss(model, split: ResidentSplit, loss_fn, path: FastPath) -> tuple[float, float]:
    """Mean validation loss and hard Dice; summed on the device, read back once."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=path.device)
    dice_sum = torch.zeros((), dtype=torch.float64, device=path.device)
    with torch.inference_mode():
        for start in range(0, len(split), VALIDATION_BATCH):
            x, y = split.batch(slice(start, start + VALIDATION_BATCH))
            logits = path.forward(model, x)
            loss_sum += loss_fn(logits, y) * len(x)
            dice_sum += hard_dice(logits, y).sum()
    return float(loss_sum) / len(split), float(dice_sum) / len(split)


def write_history(rows: list[dict], path: Path) -> None:
    """Written whole to a temporary file, then renamed over ``path``: the file a finished copy links
    (keep_finished_copy) is never rewritten in place. A row from before a column existed (a checkpoint
    written by an earlier version, resumed) leaves it empty. Quoted as CSV only where a value needs it
    (a processor's name with a comma); every other cell is written as it always was."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HISTORY_COLUMNS)
        for row in rows:
            writer.writerow(
                "" if row.get(c) is None else repr(row[c]) if isinstance(row[c], float) else str(row[c])
                for c in HISTORY_COLUMNS
            )
    partial.replace(path)


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_state(state: dict) -> dict:
    """The training state as the checkpoint stores it.

    In an epoch that was the best so far the best weights are the model's own, which the checkpoint
    already holds: they are left out (a quarter less to write for Adam-trained networks) and
    ``resumed_state`` takes them back from the restored model.
    """
    return {**state, "best_state": None} if state["best_epoch"] == state["epoch"] else state


def resumed_state(saved_state: dict, model: torch.nn.Module, source: str | Path) -> dict:
    """The training state of checkpoint ``source``, its best weights restored; ``model`` holds its weights."""
    state = dict(saved_state)
    if state["best_state"] is None:
        if state["best_epoch"] != state["epoch"]:
            raise SonosegError(
                f"{source}: refused: the checkpoint of epoch {state['epoch']} lacks the weights of its best epoch "
                f"{state['best_epoch']}; delete it to train afresh"
            )
        state["best_state"] = fp32_weights(model)
    return state


# ----------------------------------------------------------------------------- training


ULTRASOUND_STREAM_OFFSET = 0x5EED  # the ultrasound changes' generator is seeded with the training seed + this


@dataclass
class TrainingDraws:
    """A training's seeded generators: ``order`` draws each epoch's batch order and geometric
    augmentation, ``ultrasound`` the ultrasound changes (and their noise's seed). Two streams, so that a
    training with the ultrasound augmentation and one without it, of the same seed, see the same
    batches warped the same way, epoch for epoch: the augmentation choice's pair then differs in the
    ultrasound changes alone (docs/method.md), and a clean epoch does not shift the order of the next."""

    order: torch.Generator
    ultrasound: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> TrainingDraws:
        return cls(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + ULTRASOUND_STREAM_OFFSET))


def ultrasound_on(recipe: Recipe, epoch: int) -> bool:
    """Whether epoch ``epoch`` (1-based) has the ultrasound changes: not in the last
    ultrasound_clean_epochs before max_epochs."""
    return recipe.ultrasound_augment and epoch <= recipe.max_epochs - recipe.ultrasound_clean_epochs


def fresh_state(rule: StopRule) -> dict:
    """Before the first epoch. The stop rule's state (plain numbers and lists) travels in the checkpoint:
    a resumed run decides alike."""
    return {
        "epoch": 0,
        "best_loss": math.inf,
        "best_epoch": 0,
        "history": [],
        "best_state": None,
        "stop_rule": rule.state_dict(),
    }


def damaged_record(path: Path) -> str | None:
    """The first record of a torch.save zip archive whose bytes fail the CRC-32 stored beside them, else None
    (None too for an archive that cannot be opened as one: load_checked says what is wrong with it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, ValueError):  # an OSError (permissions, the file system) is the caller's
        return None


def resume(
    checkpoint: Path, fingerprint: str, model, optimizer, scheduler, draws: TrainingDraws, device, rule, average=None
) -> dict:
    """The training state of ``checkpoint`` restored into model, optimizer, scheduler, stop rule, RNGs
    and the weight average; a fresh state when there is none or it belongs to other settings or data."""
    if not checkpoint.exists():
        return fresh_state(rule)
    try:
        damaged = damaged_record(checkpoint)  # torch.load takes bytes changed inside a tensor without a word
    except OSError as exc:  # a file that cannot be read (permissions, a file system's) is no reason to lose it
        raise SonosegError(f"{checkpoint}: the training's checkpoint cannot be read ({exc.strerror or exc})") from None
    try:
        if damaged:
            raise SonosegError(f"{checkpoint}: refused: its record {damaged} fails its checksum (damaged)")
        saved = load_checked(checkpoint, CHECKPOINT_FORMAT)
    except SonosegError as exc:  # cut short or damaged by hand (it is written atomically): progress, not results
        log.warning("%s; it holds only a training's progress: starting afresh", exc)
        return fresh_state(rule)
    if saved["fingerprint"] != fingerprint:
        log.info("checkpoint %s belongs to other settings or data: starting afresh", checkpoint)
        return fresh_state(rule)
    if average and saved.get("averaged") is None:  # the fingerprint says the recipe matches: cannot happen
        log.info("checkpoint %s holds no weight average: starting afresh", checkpoint)
        return fresh_state(rule)
    model.load_state_dict(saved["model"])
    if average:
        average.load_state_dict(saved["averaged"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    draws.order.set_state(saved["data_order"])
    if saved.get("ultrasound_draws") is not None:  # absent: written before the stream, by a run without it
        draws.ultrasound.set_state(saved["ultrasound_draws"])
    torch.set_rng_state(saved["torch_rng"])
    if device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    state = resumed_state(saved["state"], average.model if average else model, checkpoint)
    rule.load_state_dict(state["stop_rule"])
    log.info("resumed from %s after epoch %d", checkpoint, state["epoch"])
    return state


def save_checkpoint(
    checkpoint: Path, fingerprint: str, model, optimizer, scheduler, draws: TrainingDraws, device, state, average=None
) -> None:
    save_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "model": model.state_dict(),
            "averaged": average.state_dict() if average else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "data_order": draws.order.get_state(),
            "ultrasound_draws": draws.ultrasound.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "state": checkpoint_state(state),
        },
        checkpoint,
    )


def train(
    *,
    network: str,
    seed: int,
    train_data: str | Path,
    val_data: str | Path,
    recipe: Recipe,
    model_out: str | Path,
    history_out: str | Path,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    pretrained_backbone: str | None = None,
    reusable: list[tuple[str | Path, str | Path]] = (),
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    finished_copy: str | Path | None = None,
    adopt_finished: bool = True,
) -> dict:
    """Train one network with one seed; writes model_out and history_out. Returns a summary.

    ``reusable``: finished runs (model, history) one of which may be this very training (the chosen
    recipe-selection candidate, for the run with the candidates' seed); the one whose fingerprint matches
    is adopted (copied) instead of trained again.

    ``finished_copy``: a folder outside the workflow's outputs where the last few finished trainings' models
    and histories are kept (reuse.keep_finished_copy; the last one hard links), since Snakemake deletes a
    job's outputs before it reruns it. When a rerun is one of those trainings (its fingerprint: the same
    network, seed, recipe, training and validation data, device, fast path and code), it adopts that copy
    instead of training again: a study whose augmentation choice is redone with the same outcome (a changed
    ``predict.*`` setting), a setting put back or a test image's mask corrected retrains nothing.
    ``adopt_finished=False`` adopts nothing, neither a copy nor a candidate of ``reusable``: it trains (and
    keeps the new copy).

    ``checkpoint``: written when at least ``checkpoint_seconds`` have passed since the last one (0: after
    every epoch), never after the last epoch (the model file follows at once). Writing a checkpoint cost
    about 0.3 s for U-net (its weights and Adam's two moments; the weight average now adds a copy of the
    weights), as much as a sixth of a quick-study epoch: a killed run repeats at most that much
    training, and repeats it bit for bit."""
    if threads:
        torch.set_num_threads(threads)
    dev = select_device(device)
    make_deterministic(dev)
    train_split, val_split = ResidentSplit(train_data, dev), ResidentSplit(val_data, dev)
    if (train_split.interpolation, train_split.marks) != (val_split.interpolation, val_split.marks):
        raise SonosegError(
            f"{train_data} was resized {train_split.interpolation} with marks {train_split.marks}, {val_data} "
            f"{val_split.interpolation} with marks {val_split.marks}: rebuild both with the same preprocess settings"
        )
    if len(train_split) < FEWEST_IMAGES["train"] or len(val_split) < FEWEST_IMAGES["val"]:
        raise SonosegError(
            f"{train_data}: training needs at least {FEWEST_IMAGES['train']} training and {FEWEST_IMAGES['val']} "
            "validation images "
            f"(have {len(train_split)} and {len(val_split)})"
        )
    torch.manual_seed(seed)
    model = models.build(network)
    models.check_output(network, model, train_split.size, dev)
    if recipe.deep_supervision and not hasattr(model, "forward_with_side_outputs"):
        raise SonosegError(
            f"train: deep_supervision is on, but {network!r} has no side outputs to supervise "
            "(networks with side heads: egeunet); turn it off for this network"
        )
    if pretrained_backbone:
        models.load_pretrained_backbone(model, pretrained_backbone)
    # A network that starts from ImageNet weights sees its inputs as ImageNet's did.
    normalization = IMAGENET_NORMALIZATION if pretrained_backbone else None
    path = FastPath(model, dev, recipe.precision, normalization)
    fingerprint = run_fingerprint(
        network, seed, recipe, train_data, val_data, pretrained_backbone, path, code=code_digest(network, model)
    )
    # Told not to adopt, it trains: neither its finished copy nor a matching selection candidate is taken.
    offered = ((offer_finished_copy(finished_copy) if finished_copy else []) + list(reusable)) if adopt_finished else []
    adopted = adopt_identical_run(offered, fingerprint, model_out, history_out, train_split.dataset_fingerprint)
    if adopted:
        if finished_copy:
            keep_finished_copy(model_out, history_out, finished_copy)
        if checkpoint and Path(checkpoint).exists():
            Path(checkpoint).unlink()  # a killed earlier attempt's: this training is finished
        return adopted
    parameters = models.count_parameters(model)
    log.info("%s: %s parameters, input %d px", network, f"{parameters:,}", train_split.size)
    model = path.prepare_model(model)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe)
    loss_fn = make_loss(recipe)
    draws = TrainingDraws.seeded(seed)
    checkpoint = Path(checkpoint) if checkpoint else None
    rule = StopRule(StopSettings.from_recipe(recipe))
    steps_per_epoch = len(batch_slices(len(train_split), recipe.batch_size))  # as train_epoch batches
    average = (
        WeightAverage(model, recipe.weight_averaging_epochs, steps_per_epoch)
        if recipe.weight_averaging_epochs
        else None
    )
    evaluated = average.model if average else model  # what is validated, kept and saved
    if checkpoint:
        state = resume(checkpoint, fingerprint, model, optimizer, scheduler, draws, dev, rule, average)
    else:
        state = fresh_state(rule)

    log.info(
        "training %s seed %d on %s (%s): %d train / %d val images, recipe %s",
        network,
        seed,
        dev,
        path.describe(),
        len(train_split),
        len(val_split),
        recipe.to_json(),
    )
    # What these epochs run on (a resumed training's earlier epochs keep what they ran on).
    compute = dict(
        zip(
            COMPUTE_COLUMNS,
            (path.describe(), device_name(dev), processor_name(dev), commit_with(catalog.user_code_files(network))),
            strict=True,
        )
    )
    last_saved = time.monotonic()
    clean_logged = False
    while not rule.stop:  # max_epochs, or min_epochs run and early_stopping_patience epochs without progress
        started = time.perf_counter()
        ultrasound = ultrasound_on(recipe, state["epoch"] + 1)
        if recipe.ultrasound_augment and not ultrasound and not clean_logged:  # a resumed run says it too
            clean_logged = True
            first, last = state["epoch"] + 1, recipe.max_epochs
            log.info("epochs %d-%d: the ultrasound changes off (ultrasound_clean_epochs)", first, last)
        train_loss = train_epoch(model, train_split, recipe, loss_fn, optimizer, path, draws, average, ultrasound)
        trained = time.perf_counter()
        if average:
            average.copy_buffers_from(model)
        recalibrate(evaluated, train_split, recipe, path)  # the kept weights carry these statistics too
        recalibrated = time.perf_counter()
        val_loss, val_dice = evaluate_loss(evaluated, val_split, loss_fn, path)
        validated = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        state["epoch"] += 1
        if not math.isfinite(val_loss):
            raise SonosegError(f"{network} seed {seed}: validation loss became {val_loss} at epoch {state['epoch']}")
        decision = rule.update(val_loss, epoch=state["epoch"])
        if recipe.lr_plateau and recipe.lr_schedule != "plateau":
            scheduler.step()  # cosine or poly: by epoch, whatever the validation loss
        elif recipe.lr_plateau and decision.plateau_value is not None:
            scheduler.step(decision.plateau_value)  # the median, not one noisy epoch
        if decision.keep_weights:  # the lowest raw validation loss: a measurement of these very weights
            state.update(best_loss=val_loss, best_epoch=state["epoch"], best_state=fp32_weights(evaluated))
        state["stop_rule"] = rule.state_dict()
        previous_steps = state["history"][-1].get("steps") if state["history"] else 0
        row = {
            "epoch": state["epoch"],
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "val_loss_monitored": decision.monitored,
            "lr": lr,
            "seconds": round(time.perf_counter() - started, 3),
            # Where the epoch's time went: the optimizer's pass (batches drawn and warped on the device
            # included), BatchNorm re-estimation, validation.
            "train_seconds": round(trained - started, 3),
            "bn_seconds": round(recalibrated - trained, 3),
            "val_seconds": round(validated - recalibrated, 3),
            # None after resuming a checkpoint written before steps were counted: unknown, not guessed
            "steps": None if previous_steps is None else previous_steps + steps_per_epoch,
            "ended_by": rule.ended_by or None,
            **compute,
        }
        state["history"].append(row)
        if checkpoint and not rule.stop and time.monotonic() - last_saved >= checkpoint_seconds:
            save_checkpoint(checkpoint, fingerprint, model, optimizer, scheduler, draws, dev, state, average)
            last_saved = time.monotonic()
        log.info(
            "epoch %d  train_loss %.4f  val_loss %.4f  val_dice %.4f  monitored %s  stale %d  lr %.2e  %.1fs",
            row["epoch"],
            row["train_loss"],
            val_loss,
            val_dice,
            "-" if decision.monitored is None else f"{decision.monitored:.4f}",
            decision.stale_epochs,
            lr,
            row["seconds"],
        )

    save_model(
        model_out,
        network=network,
        state_dict=state["best_state"],
        seed=seed,
        recipe=recipe.to_json(),
        input_size=train_split.size,
        input_interpolation=train_split.interpolation,  # segment and export resize new images alike
        input_marks=train_split.marks,  # ... and treat their coloured marks alike
        lesion_areas=train_split.lesion_areas(),  # the lesion scale it learned (test-time scale selection)
        normalization=normalization,
        trained_with=path.describe(),
        best_epoch=state["best_epoch"],
        best_val_loss=state["best_loss"],
        parameters=parameters,
        fingerprint=fingerprint,
        provenance=stamp(train_split.dataset_fingerprint),  # what it was trained on, and by which sonoseg
        code=models.code_record(network, model),  # so that serving notices a network built otherwise since
    )
    write_history(state["history"], Path(history_out))
    if finished_copy:
        keep_finished_copy(model_out, history_out, finished_copy)
    if checkpoint:  # finished: a stale checkpoint must not meet a changed config later
        checkpoint.unlink(missing_ok=True)
        # nor its temporary file, left by a kill as save_atomic wrote it (a paper-scale U-net's: 276 MB)
        checkpoint.with_name(checkpoint.name + ".tmp").unlink(missing_ok=True)
    log.info("kept epoch %d (val_loss %.4f) of %d", state["best_epoch"], state["best_loss"], state["epoch"])
    return {"best_epoch": state["best_epoch"], "best_val_loss": state["best_loss"], "epochs": state["epoch"]}


def train_epoch(
    model,
    split: ResidentSplit,
    recipe: Recipe,
    loss_fn,
    optimizer,
    path: FastPath,
    draws: TrainingDraws,
    average=None,
    ultrasound: bool | None = None,
) -> float:
    """One pass over the training split in a fresh seeded order; the mean loss, read back once.
    ``average``: a WeightAverage updated after every step. ``ultrasound``: whether this epoch has the
    ultrasound changes (None: the recipe's ultrasound_augment; train turns them off for its clean epochs)."""
    model.train()
    dev = path.device
    # The epoch's order and augmentation are drawn up front and moved to the device once.
    ultrasound = recipe.ultrasound_augment if ultrasound is None else ultrasound
    order = torch.randperm(len(split), generator=draws.order)
    theta = draw_augmentation(len(order), draws.order).to(dev) if recipe.augment else None
    if ultrasound:
        changes = draw_ultrasound(len(order), draws.ultrasound).to(dev)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=draws.ultrasound))
        noise = torch.Generator(device=dev).manual_seed(noise_seed)
    order = order.to(dev)
    total = torch.zeros((), dtype=torch.float64, device=dev)
    seen = 0
    for batch in batch_slices(len(order), recipe.batch_size):
        x, y = split.batch(order[batch])
        if ultrasound:
            x = apply_ultrasound(x, changes[batch], noise, y)
        if theta is not None:
            x, y = warp(x, y, theta[batch])
        optimizer.zero_grad(set_to_none=True)
        if recipe.deep_supervision:
            logits, sides = path.forward_with_side_outputs(model, x)
            loss = loss_fn(logits, y) + sum(w * loss_fn(side, y) for w, side in zip(model.SIDE_WEIGHTS, sides))
        else:
            loss = loss_fn(path.forward(model, x), y)
        loss.backward()
        optimizer.step()
        if average:
            average.update(model)
        total += loss.detach() * len(x)
        seen += len(x)
    return float(total) / seen
