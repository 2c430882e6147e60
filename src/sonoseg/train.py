"""Training (docs/method.md, "Training"): augmentation, soft-Dice loss, Adam, plateau LR, early
stopping, best-validation weights kept, seeded, resumable from a checkpoint written after every epoch.

The fast path (docs/performance.md): the split stays resident on the training device as uint8,
augmentation runs there batched, forward and backward run under bf16 autocast where the device has
fast bf16 units (``train.precision: auto``) and in channels_last where that was measured to pay, and
the loss is read back to the host once per epoch, not once per step."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sonoseg import models
from sonoseg.errors import SonosegError
from sonoseg.preprocess import (
    DEFAULT_INTERPOLATION,
    IMAGENET_NORMALIZATION,
    INTERPOLATIONS,
    cache_interpolation,
    load_cache,
    normalize_tensor,
)
from sonoseg.recipe import Recipe

log = logging.getLogger(__name__)

MODEL_FORMAT = "sonoseg-model-v1"
CHECKPOINT_FORMAT = "sonoseg-checkpoint-v1"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]
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


LOSSES = {"dice": soft_dice_loss, "bce": bce_loss}


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


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) to the networks' input: float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def to_tensors(arrays: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    masks = torch.from_numpy(arrays["masks"]).unsqueeze(1).float()
    return images_to_tensor(arrays["images"]), masks


class ResidentSplit:
    """A cached split kept on the training device as uint8 (N, 3, H, W) images and (N, 1, H, W)
    masks: a quarter of float32's memory (~100 MB for 416 images at 256x256), and every batch is a
    gather on the device instead of a host-to-device copy."""

    def __init__(self, path: str | Path, device: torch.device):
        arrays = load_cache(path)
        self.interpolation = cache_interpolation(arrays)
        self.images = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).contiguous().to(device)
        self.masks = torch.from_numpy(arrays["masks"]).unsqueeze(1).contiguous().to(device)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def batch(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float().div_(255), self.masks[index].float()


# ----------------------------------------------------------------------------- precision

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    """Matrix units for bf16 (AMX) or AVX512-BF16 instructions, detected from the CPU's flags.

    Without them PyTorch still runs bf16 on the CPU, but emulated and slower than fp32.
    """
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def cuda_has_fast_bf16(device: torch.device) -> bool:
    """bf16 tensor cores (compute capability 8.0, Ampere, and newer); older GPUs only emulate bf16."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 where the device runs it fast (a CUDA GPU with bf16 support, a CPU with AMX or
    AVX512-BF16), fp32 elsewhere. ``fp32`` and ``bf16`` are taken as asked."""
    if requested not in PRECISIONS:
        raise SonosegError(f"train.precision: {requested!r} is not one of {PRECISIONS}")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SonosegError("train.precision: bf16 asked for, but this CUDA device does not support bf16")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if cuda_has_fast_bf16(device) else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def has_grouped_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())


def use_channels_last(model: torch.nn.Module, device: torch.device, precision: str) -> bool:
    """channels_last where bench/bench_train.py measured it to pay (docs/performance.md).

    CPU, bf16: oneDNN's bf16 convolutions want NHWC (16x faster than NCHW for a 3x3 convolution even
    where bf16 is emulated). CPU, fp32: NCHW - channels_last gave U-net no gain on an AVX2 CPU. CUDA:
    tensor cores want NHWC for dense convolutions; grouped/depthwise ones are often slower there, so
    they stay NCHW (not yet measured on a GPU by this project).
    """
    if device.type == "cpu":
        return precision == "bf16"
    if device.type == "cuda":
        return not has_grouped_convolutions(model)
    return False


class FastPath:
    """How one run computes: the resolved precision and memory format, applied to a model and its inputs."""

    def __init__(
        self, model: torch.nn.Module, device: torch.device, precision: str = "auto", normalization: dict | None = None
    ):
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.channels_last = use_channels_last(model, device, self.precision)
        self.normalization = normalization

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize_tensor(x, self.normalization)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits in fp32; under bf16 autocast only the network runs in bf16 (the loss, the metrics
        and BatchNorm's running statistics stay fp32)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return model(self.prepare_input(x)).float()

    def describe(self) -> str:
        return f"{self.precision}{' + channels_last' if self.channels_last else ''}"


def select_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SonosegError(f"train.device: {requested!r} asked for, but no CUDA device is visible")
    return torch.device(requested)


def make_deterministic(device: torch.device) -> None:
    """CPU kernels are deterministic already; on CUDA ask for deterministic kernels where they exist.

    (Only on CUDA: use_deterministic_algorithms imports torch's compiler stack, seconds per job.)
    """
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS's first use
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=recipe.learning_rate, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe):
    """ReduceLROnPlateau on validation loss; stepped only when the recipe asks for it."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=recipe.plateau_factor, patience=recipe.plateau_patience
    )


def file_digest(*paths: str | Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches over a shuffled order. A lone last sample breaks BatchNorm statistics (and
    DeepLab's 1x1 pooled branch): it is skipped for that epoch."""
    slices = [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if batch_size > 1 and len(slices) > 1 and slices[-1].stop - slices[-1].start == 1:
        slices.pop()
    return slices


VALIDATION_BATCH = 32  # forward only, no gradients: larger batches than training's cost little memory


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
    with open(path, "w") as handle:
        handle.write(",".join(HISTORY_COLUMNS) + "\n")
        for row in rows:
            handle.write(
                ",".join(repr(row[c]) if isinstance(row[c], float) else str(row[c]) for c in HISTORY_COLUMNS) + "\n"
            )


# ----------------------------------------------------------------------------- checkpoints


def fp32_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A host copy of the weights in the standard (contiguous) layout; autocast never changes their fp32 dtype.

    One copy per tensor, whatever the device and memory format (``.to(copy=True).contiguous()`` copies a
    channels_last tensor twice)."""
    return {
        k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format) for k, v in model.state_dict().items()
    }


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


def save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checked(path: str | Path, expected_format: str) -> dict:
    """torch.load with weights_only=True, refusing anything that is not ours."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SonosegError(
            f"{path}: refused: not a {expected_format} file that loads safely "
            f"(weights only; a foreign or tampered file) - {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        raise SonosegError(f"{path}: refused: not a {expected_format} file (format tag missing or different)")
    return obj


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    saved = load_checked(path, MODEL_FORMAT)
    model = models.build(saved["network"])
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:
        raise SonosegError(
            f"{path}: refused: weights do not fit network {saved['network']!r} ({str(exc)[:200]})"
        ) from None
    # How the training images were resized; serving resizes new images alike. Older files: bilinear.
    interpolation = saved.setdefault("input_interpolation", DEFAULT_INTERPOLATION)
    if interpolation not in INTERPOLATIONS:
        raise SonosegError(
            f"{path}: refused: input_interpolation {interpolation!r} is not one of {sorted(INTERPOLATIONS)}"
        )
    return model.to(device).eval(), saved


# ----------------------------------------------------------------------------- training


def train(
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
) -> dict:
    """Train one network with one seed; writes model_out and history_out. Returns a summary."""
    if threads:
        torch.set_num_threads(threads)
    dev = select_device(device)
    make_deterministic(dev)
    train_split, val_split = ResidentSplit(train_data, dev), ResidentSplit(val_data, dev)
    if train_split.interpolation != val_split.interpolation:
        raise SonosegError(
            f"{train_data} was resized {train_split.interpolation}, {val_data} {val_split.interpolation}: "
            "rebuild both with the same preprocess.interpolation"
        )
    if len(train_split) < 2 or len(val_split) < 1:
        raise SonosegError(
            f"{train_data}: training needs at least 2 training and 1 validation images "
            f"(have {len(train_split)} and {len(val_split)})"
        )
    torch.manual_seed(seed)
    model = models.build(network)
    if pretrained_backbone:
        models.load_pretrained_backbone(model, pretrained_backbone)
    # A network that starts from ImageNet weights sees its inputs as ImageNet's did.
    normalization = IMAGENET_NORMALIZATION if pretrained_backbone else None
    path = FastPath(model, dev, recipe.precision, normalization)
    model = path.prepare_model(model)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe)
    loss_fn = LOSSES[recipe.loss]
    data_order = torch.Generator().manual_seed(seed)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "network": network,
                "seed": seed,
                "recipe": recipe.to_json(),
                "data": file_digest(train_data, val_data),
                "pretrained": file_digest(pretrained_backbone) if pretrained_backbone else None,
                "fast_path": path.describe(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()

    state = {"epoch": 0, "best_loss": math.inf, "best_epoch": 0, "stale_epochs": 0, "history": [], "best_state": None}
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and checkpoint.exists():
        saved = load_checked(checkpoint, CHECKPOINT_FORMAT)
        if saved["fingerprint"] != fingerprint:
            log.info("checkpoint %s belongs to other settings or data: starting afresh", checkpoint)
        else:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            data_order.set_state(saved["data_order"])
            torch.set_rng_state(saved["torch_rng"])
            if dev.type == "cuda" and saved.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(saved["cuda_rng"])
            state = resumed_state(saved["state"], model, checkpoint)
            log.info("resumed from %s after epoch %d", checkpoint, state["epoch"])

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
    while state["epoch"] < recipe.max_epochs:
        if state["epoch"] >= recipe.min_epochs and state["stale_epochs"] >= recipe.early_stopping_patience:
            break
        started = time.perf_counter()
        model.train()
        # The epoch's order and augmentation are drawn up front and moved to the device once.
        order = torch.randperm(len(train_split), generator=data_order)
        theta = draw_augmentation(len(order), data_order).to(dev) if recipe.augment else None
        order = order.to(dev)
        total = torch.zeros((), dtype=torch.float64, device=dev)  # read back once, after the epoch
        seen = 0
        for batch in batch_slices(len(order), recipe.batch_size):
            x, y = train_split.batch(order[batch])
            if theta is not None:
                x, y = warp(x, y, theta[batch])
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(path.forward(model, x), y)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(x)
            seen += len(x)
        train_loss = float(total) / seen
        val_loss, val_dice = evaluate_loss(model, val_split, loss_fn, path)
        lr = optimizer.param_groups[0]["lr"]
        if recipe.lr_plateau:
            scheduler.step(val_loss)
        state["epoch"] += 1
        if not math.isfinite(val_loss):
            raise SonosegError(f"{network} seed {seed}: validation loss became {val_loss} at epoch {state['epoch']}")
        if val_loss < state["best_loss"]:
            state.update(best_loss=val_loss, best_epoch=state["epoch"], stale_epochs=0, best_state=fp32_weights(model))
        else:
            state["stale_epochs"] += 1
        row = {
            "epoch": state["epoch"],
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "lr": lr,
            "seconds": round(time.perf_counter() - started, 3),
        }
        state["history"].append(row)
        if checkpoint:
            save_atomic(
                {
                    "format": CHECKPOINT_FORMAT,
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "data_order": data_order.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else None,
                    "state": checkpoint_state(state),
                },
                checkpoint,
            )
        # Logged after the checkpoint: an epoch in the log is an epoch a rerun will not repeat.
        log.info(
            "epoch %d  train_loss %.4f  val_loss %.4f  val_dice %.4f  lr %.2e  %.1fs",
            row["epoch"],
            row["train_loss"],
            val_loss,
            val_dice,
            lr,
            row["seconds"],
        )

    model_out, history_out = Path(model_out), Path(history_out)
    model_out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(
        {
            "format": MODEL_FORMAT,
            "network": network,
            "seed": seed,
            "recipe": recipe.to_json(),
            "input_size": train_split.size,
            "input_interpolation": train_split.interpolation,  # segment and export resize new images alike
            "normalization": normalization,
            "trained_with": path.describe(),
            "best_epoch": state["best_epoch"],
            "best_val_loss": state["best_loss"],
            "state_dict": state["best_state"],
        },
        model_out,
    )
    write_history(state["history"], history_out)
    if checkpoint and checkpoint.exists():
        checkpoint.unlink()  # finished: a stale checkpoint must not meet a changed config later
    log.info("kept epoch %d (val_loss %.4f) of %d", state["best_epoch"], state["best_loss"], state["epoch"])
    return {"best_epoch": state["best_epoch"], "best_val_loss": state["best_loss"], "epochs": state["epoch"]}


def adopt_weight_decay_candidate(
    selected: str | Path,
    candidates: dict[float, tuple[str | Path, str | Path]],
    model_out: str | Path,
    history_out: str | Path,
) -> float:
    """Copy the chosen weight-decay candidate (selected.json's weight_decay; candidates maps each decay
    to its model and history) to a final run's model and history. The candidate was trained with the
    same network, seed, recipe and data as that run, so this is the model the run would train."""
    chosen = float(json.loads(Path(selected).read_text())["weight_decay"])
    if chosen not in candidates:
        raise SonosegError(
            f"{selected}: chosen weight decay {chosen:g} is not one of the candidates {sorted(candidates)}"
        )
    model, history = candidates[chosen]
    recipe = Recipe.from_json(load_checked(model, MODEL_FORMAT)["recipe"])
    if recipe.weight_decay != chosen:
        raise SonosegError(f"{model}: trained with weight decay {recipe.weight_decay:g}, not the chosen {chosen:g}")
    for source, target in ((model, Path(model_out)), (history, Path(history_out))):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        partial.replace(target)
    log.info("adopted %s (weight decay %g) as %s", model, chosen, model_out)
    return chosen
