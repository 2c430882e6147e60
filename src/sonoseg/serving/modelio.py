"""The model file (``model.pt``) and the training checkpoint: their format, safe loading, atomic
saving, and the wrapper that turns a network's logits into the probability every consumer serves.

A model file is self-contained, as nnU-Net's model folders are: the network's name (and, for a
network of the user's own, its builder), the weights in fp32, the input size and interpolation, the
input normalisation and the recipe. Prediction, export, ``segment`` and the cost table read it
through this module and import no trainer."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sonoseg.data.preprocess import DEFAULT_INTERPOLATION, INTERPOLATIONS, MARKS, normalize_tensor
from sonoseg.errors import SonosegError
from sonoseg.networks import models
from sonoseg.serving.options import POSTPROCESS_CHOICE, POSTPROCESSES

MODEL_FORMAT = "sonoseg-model-v1"
CHECKPOINT_FORMAT = "sonoseg-checkpoint-v1"


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) to the networks' input: float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


class ProbabilityModel(nn.Module):
    """[0, 1] RGB -> normalization (if the model was trained with one) -> network -> sigmoid."""

    def __init__(self, network: nn.Module, normalization: dict | None):
        super().__init__()
        self.network = network
        self.normalization = normalization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(normalize_tensor(x, self.normalization)))


def fp32_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A host copy of the weights in the standard (contiguous) layout; autocast never changes their fp32 dtype.

    One copy per tensor, whatever the device and memory format (``.to(copy=True).contiguous()`` copies a
    channels_last tensor twice)."""
    return {
        k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format) for k, v in model.state_dict().items()
    }


def save_atomic(obj, path: str | Path) -> None:
    """torch.save that leaves either the whole new file or the old one, never a partial file.

    The object is serialised in memory first, then written to ``<path>.tmp`` and renamed over ``path``.
    A failed write (a full disk, a read-only or missing folder) removes the temporary file and raises
    one line naming the file and the cause; torch.save's own error for a full disk names neither
    (``[enforce fail at inline_container.cc] unexpected pos``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # e.g. no folder to hold it: then there is no .tmp either
            tmp.unlink(missing_ok=True)
        cause = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise SonosegError(f"{path}: could not be written: {cause} ({buffer.tell():,} bytes)") from None


def load_checked(path: str | Path, expected_format: str, metadata_only: bool = False) -> dict:
    """torch.load with weights_only=True, refusing anything that is not ours. ``metadata_only``: the
    caller reads the recorded facts, not the weights, so the tensors are memory-mapped rather than read
    (a summary of a paper-scale run reads 15 U-net files of 69 MB for one parameter count); a file that
    cannot be mapped (torch's legacy non-zip format, a file system without mmap) is read in full."""
    path = Path(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=metadata_only)
        except Exception:
            if not metadata_only:
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if path.suffix.lower() == ".onnx":
            raise SonosegError(
                f"{path}: an ONNX graph, not a {expected_format} file: serve it with --backend onnxruntime"
            ) from None
        raise SonosegError(
            f"{path}: refused: not a {expected_format} file that loads safely (weights only): {_load_failure(exc)}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        raise SonosegError(f"{path}: refused: not a {expected_format} file (format tag missing or different)")
    return obj


def _load_failure(exc: Exception) -> str:
    """Why torch.load refused a file, in a line. Not torch's own advice to load it with weights_only
    off: that runs whatever code a foreign file holds."""
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return "it holds Python objects beyond tensors and plain values (a foreign or tampered file)"
    first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first_line[:160]} (cut short, or not a torch file)"


def lesion_areas_at(saved: dict, size: int | None) -> tuple[float, ...] | None:
    """A model file's training lesion areas (``lesion_areas``, in input pixels) at another input size
    ``size`` (areas scale with the input's area); None for a file from before they were recorded."""
    areas = saved.get("lesion_areas")
    if areas is None:
        return None
    if size and saved.get("input_size"):
        areas = [a * (size / saved["input_size"]) ** 2 for a in areas]
    return tuple(float(a) for a in areas)


def save_model(path: str | Path, *, network: str, state_dict: dict, **facts) -> None:
    """Write a model file: the network's name (and builder, for a network of the user's own), its
    fp32 weights and the facts that serving needs (input_size, input_interpolation, normalization,
    recipe, ...)."""
    builder = models.builder_spec(network)
    save_atomic(
        {
            "format": MODEL_FORMAT,
            "network": network,
            **({"builder": builder} if builder else {}),
            **facts,
            "state_dict": state_dict,
        },
        path,
    )


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The network of a model file in eval mode, and the file's facts. A foreign or tampered file,
    weights that do not fit the network, or an unknown interpolation are refused, naming the file."""
    saved = load_checked(path, MODEL_FORMAT)
    try:
        model = models.build(saved["network"], saved.get("builder"))
    except SonosegError as exc:
        raise SonosegError(f"{path}: {exc}") from None
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
    saved.setdefault("input_marks", "keep")  # files from before preprocess.marks: trained on images as they were
    if saved["input_marks"] not in MARKS:
        raise SonosegError(f"{path}: refused: input_marks {saved['input_marks']!r} is not one of {MARKS}")
    return model.to(device).eval(), saved


# A run folder's layout: fold<k>/seed<s>/model.pt (results/<study>/runs/<run>/).
FOLD_FOLDER, SEED_FOLDER = re.compile(r"fold\d+"), re.compile(r"seed\d+")


def ensemble_members(model_path: str | Path) -> list[Path]:
    """The model files a --model names: the file itself, or every member of a run folder — each
    ``seed<s>`` folder under it must hold a model.pt (a member that is missing is an error naming its
    folder, never a smaller ensemble)."""
    path = Path(model_path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SonosegError(f"{path}: no such model file or run folder")
    folds = sorted(p for p in path.iterdir() if p.is_dir() and FOLD_FOLDER.fullmatch(p.name))
    if not folds:
        raise SonosegError(
            f"{path}: not a run folder (expected fold<k>/seed<s>/model.pt under it, as results/<study>/runs/<run>/ "
            "holds; a folder of several runs would mix networks)"
        )
    seeds = {
        fold: sorted(p.name for p in fold.iterdir() if p.is_dir() and SEED_FOLDER.fullmatch(p.name)) for fold in folds
    }
    first = folds[0]
    for fold in folds:
        if seeds[fold] != seeds[first]:
            raise SonosegError(
                f"{fold}: seeds {seeds[fold]} differ from {first.name}'s {seeds[first]}: a member is missing"
            )
    members = [fold / seed / "model.pt" for fold in folds for seed in seeds[fold]]
    for member in members:
        if not member.is_file():
            trained = any(member.parent.glob("checkpoint*")) or (member.parent / "history.csv").exists()
            floor = (member.parent / "predictions").is_dir() and not trained
            raise SonosegError(
                f"{member.parent}: this member of the run folder {path} has no model.pt ("
                + (
                    "it has predictions and no training history: a floor or reference such as the threshold baseline, "
                    "the position prior or the caliper reader predicts without a trained network, so there is "
                    "no model to serve)"
                    if floor
                    else "training not finished?)"
                )
            )
    if not members:
        raise SonosegError(f"{path}: no fold<k>/seed<s>/model.pt under this folder")
    return members


# ----------------------------------------------------------------------------- post-processing recorded with the models


def _read_choice(path: str | Path):
    """One fold's postprocess.json, parsed; a file that cannot be read or parsed is named."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SonosegError(f"{path}: not a post-processing choice ({exc!r})") from None


def _postprocess_of(choices: list[tuple[Path, object]]) -> str:
    """chosen_postprocess's rule on choices already read, each with its file (for the errors); a list,
    not a mapping, so that a file given twice counts twice, as it always did."""
    totals = dict.fromkeys(POSTPROCESSES, 0.0)
    for path, choice in choices:
        try:
            for option in POSTPROCESSES:
                totals[option] += float(choice["validation_dice"][option]) * int(choice["validation_images"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SonosegError(f"{path}: not a post-processing choice ({exc!r})") from None
    return "none" if totals["none"] > totals["keep_one"] else "keep_one"


def chosen_postprocess(choices: list[str | Path]) -> str:
    """The post-processing recorded by the validation choice of one or more folds (their
    postprocess.json, sonoseg.training.postprocess): one fold's choice, or for models of several folds
    the option with the higher validation Dice summed over every fold's validation images (a tie keeps
    the paper's rule, keep_one)."""
    return _postprocess_of([(Path(path), _read_choice(path)) for path in choices])


def in_run_folder(member: Path) -> bool:
    """Whether a model file lies where a study's run folder keeps it: fold<k>/seed<s>/model.pt."""
    return bool(SEED_FOLDER.fullmatch(member.parent.name) and FOLD_FOLDER.fullmatch(member.parent.parent.name))


def _choice_files(members: list[Path]) -> list[Path]:
    """Where a study records its folds' choices beside these models: fold<k>/postprocess.json, once a fold
    (none for a model file elsewhere: a postprocess.json two folders up is then no choice of its)."""
    return sorted({member.parent.parent / POSTPROCESS_CHOICE for member in members if in_run_folder(member)})


@dataclass(frozen=True)
class RecordedChoice:
    """The validation choice recorded beside models of a study's run folder (fold<k>/postprocess.json),
    each fold's file read once: a prediction that takes both its post-processing and its scale selection
    from it (segment_images) reads the files once, and each part is checked only when asked for, so a
    prediction told one of them is not stopped by a fault in the other's record. ``files``: every fold's
    file, found or not; ``choices``: the content of those found."""

    files: tuple[Path, ...]
    choices: dict[Path, object]

    def postprocess(self) -> str:
        """The recorded post-processing (chosen_postprocess over the folds); the paper's rule (keep_one)
        for model files without one. A fold without a file while others have one is named: its models'
        choice is unknown, and a choice made without them would pass for the ensemble's."""
        if self.choices and len(self.choices) < len(self.files):
            missing = sorted(set(self.files) - set(self.choices))
            raise SonosegError(f"{missing[0]}: missing, while other folds of these models record their post-processing")
        return _postprocess_of(list(self.choices.items())) if self.choices else "keep_one"

    def scales(self) -> tuple[tuple[float, ...], float | None, float | None]:
        """The test-time scale selection (predict.scales, predict.shrink_above and
        predict.shrink_found_above) the post-processing choice was made with: the selection the study
        predicted these models with. ((1.0,), None, None), the input size alone, for model files without
        one or a choice made before scales were recorded (a choice from before the second trigger was
        recorded: None, as it predicted); folds that disagree are named."""
        recorded = {}
        for path, choice in self.choices.items():
            try:
                scales = tuple(float(f) for f in choice.get("scales", [1.0]))
                shrink_above, found_above = (
                    None if choice.get(key) is None else float(choice[key])
                    for key in ("shrink_above", "shrink_found_above")
                )
            except (ValueError, TypeError, AttributeError) as exc:
                raise SonosegError(f"{path}: not a post-processing choice ({exc!r})") from None
            if found_above is not None and shrink_above is None:
                raise SonosegError(
                    f"{path}: records shrink_found_above {found_above} without the shrink_above it is a trigger of"
                )
            recorded[path] = (scales, shrink_above, found_above)
        if len(set(recorded.values())) > 1:
            first, *others = recorded
            other = next(path for path in others if recorded[path] != recorded[first])
            raise SonosegError(
                f"{other}: scales {list(recorded[other][0])} (shrink_above {recorded[other][1]}, shrink_found_above "
                f"{recorded[other][2]}) differ from {first}'s {list(recorded[first][0])} (shrink_above "
                f"{recorded[first][1]}, shrink_found_above {recorded[first][2]})"
            )
        return next(iter(recorded.values()), ((1.0,), None, None))


def recorded_choice(members: list[Path]) -> RecordedChoice:
    """For models of a study's run folder, the choice recorded beside them (fold<k>/postprocess.json),
    each fold's file read once; a file that cannot be read or parsed is named."""
    files = _choice_files(members)
    return RecordedChoice(tuple(files), {path: _read_choice(path) for path in files if path.is_file()})


def recorded_postprocess(members: list[Path]) -> str:
    """For models of a study's run folder, the post-processing recorded beside them
    (RecordedChoice.postprocess); the paper's rule (keep_one) for model files without one."""
    return recorded_choice(members).postprocess()
