"""The model file (``model.pt``) and the training checkpoint: their format, safe loading, atomic
saving; a study's run folder and the choices recorded beside its models.

A model file is self-contained, as nnU-Net's model folders are: the network's name (and, for a
network of the user's own, its builder), the weights in fp32, the input size and interpolation, the
input normalisation and the recipe. Prediction, export, ``segment`` and the cost table read it
through this module and import no trainer. torch is imported by the functions that read or write
a torch file, not with the module: serving an exported graph (the ONNX Runtime backend) reads the
rest without it. The wrapper that turns a network's logits into the probability every consumer
serves is sonoseg.serving.probability_model's ProbabilityModel."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sonoseg.data.preprocess import DEFAULT_INTERPOLATION, INTERPOLATIONS, MARKS
from sonoseg.errors import SonosegError
from sonoseg.serving.options import POSTPROCESS_CHOICE, POSTPROCESSES

if TYPE_CHECKING:
    import torch
    from torch import nn

MODEL_FORMAT = "sonoseg-model-v1"
CHECKPOINT_FORMAT = "sonoseg-checkpoint-v1"
ZIP_START = b"PK\x03\x04"  # a zip archive's first bytes: torch.save's format
FINGERPRINT_SHOWN = 12  # hex digits of a training fingerprint a message shows

log = logging.getLogger(__name__)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) to the networks' input: float (N, 3, H, W) in [0, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def images_to_array(images: np.ndarray) -> np.ndarray:
    """images_to_tensor's values in NumPy, for a network that runs without torch (ONNX Runtime). (Not its
    memory layout, by which torch chooses its kernels: the torch backend keeps images_to_tensor.)"""
    return images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)


def fp32_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A host copy of the weights in the standard (contiguous) layout; autocast never changes their fp32 dtype.

    One copy per tensor, whatever the device and memory format (``.to(copy=True).contiguous()`` copies a
    channels_last tensor twice)."""
    import torch

    return {
        k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format) for k, v in model.state_dict().items()
    }


def save_atomic(obj, path: str | Path) -> None:
    """torch.save that leaves either the whole new file or the old one, never a partial file.

    The object is serialised in memory first, then written to ``<path>.tmp`` and renamed over ``path``.
    A failed write (a full disk, a read-only or missing folder) removes the temporary file and raises
    one line naming the file and the cause; torch.save's own error for a full disk names neither
    (``[enforce fail at inline_container.cc] unexpected pos``)."""
    import torch

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
    import torch

    path = Path(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=metadata_only)
        except Exception:
            if not metadata_only:
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # Permissions, a folder or no file at that path: not the file's fault (an EINVAL from mapping a file cut
        # short is, below).
        if isinstance(exc, (PermissionError, IsADirectoryError, FileNotFoundError, NotADirectoryError)):
            raise SonosegError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        if path.suffix.lower() == ".onnx":
            raise SonosegError(
                f"{path}: an ONNX graph, not a {expected_format} file: serve it with ONNX Runtime (--backend "
                "onnxruntime, or no --backend)"
            ) from None
        why = _load_failure(exc, path)
        raise SonosegError(
            f"{path}: refused: not a {expected_format} file that loads safely (weights only): {why}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        raise SonosegError(f"{path}: refused: not a {expected_format} file (format tag missing or different)")
    return obj


def _load_failure(exc: Exception, path: Path) -> str:
    """Why torch.load refused a file, in a line. Not torch's own advice to load it with weights_only
    off: that runs whatever code a foreign file holds. A file that is neither a zip archive (torch.save's
    format) nor a pickle (the legacy one: its first byte the protocol's mark) is no torch file at all."""
    if not _looks_like_torch(path):
        return "not a torch file (another kind of file under a model's name?)"
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return "it holds Python objects beyond tensors and plain values (a foreign or tampered file)"
    if _first_bytes(path) == ZIP_START and not zipfile.is_zipfile(path):  # torch.save's archive without its end
        return "cut short: its zip archive ends before its directory (a copy or download that did not finish?)"
    first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    # Torch's first sentence, whole (a message cut at a count of characters ends mid-word).
    sentence = first_line.split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {sentence} (cut short, or not a torch file)"


def _first_bytes(path: Path) -> bytes | None:
    """A file's first four bytes (what tells torch.save's formats); None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4)
    except OSError:
        return None


def _looks_like_torch(path: Path) -> bool:
    """Whether a file starts as one of torch.save's formats does: a zip archive (whole or cut short), or a
    pickle of protocol 2 or later."""
    head = _first_bytes(path)
    if head is None:
        return True  # unreadable: torch's own reason says more
    return head[:1] == b"\x80" or head == ZIP_START


def lesion_areas_at(saved: dict, size: int | None) -> tuple[float, ...] | None:
    """A model file's training lesion areas (``lesion_areas``, in input pixels) at another input size
    ``size`` (areas scale with the input's area); None for a file from before they were recorded."""
    areas = saved.get("lesion_areas")
    if areas is None:
        return None
    if size and saved.get("input_size"):
        areas = [a * (size / saved["input_size"]) ** 2 for a in areas]
    return tuple(float(a) for a in areas)


def warn_of_another_size(model_path: str | Path, trained: int | None, size: int | None, command: str) -> None:
    """A --size away from the input size a model was trained at is served as asked, with a warning: the
    network then sees its lesions at another scale than it learned, and its masks are not its study's."""
    if size and trained and int(size) != int(trained):
        log.warning(
            "%s: %s at --size %d px, not the %d px it was trained at: the network sees its lesions at another "
            "scale than it learned, and its masks are not the ones its study scored",
            model_path,
            "exported" if command == "export" else "served",
            size,
            trained,
        )


def save_model(path: str | Path, *, network: str, state_dict: dict, **facts) -> None:
    """Write a model file: the network's name (and builder, for a network of the user's own), its
    fp32 weights and the facts that serving needs (input_size, input_interpolation, normalization,
    recipe, ...)."""
    from sonoseg.networks import models

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
    from sonoseg.networks import models

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
    changes = models.code_changes(saved["network"], model, saved.get("code"), saved.get("builder"))
    if changes:  # the weights fit, but a changed activation or forward would give other masks without a word
        log.warning(
            "%s: the code that builds network %s is not the code it was trained with (%s): it is served as the "
            "code is now, and its masks may differ from those its study scored; retrain it (the workflow does, "
            "at its next run) or put the code back",
            path,
            saved["network"],
            "; ".join(changes),
        )
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
# The study's run sheet beside its runs/ folder (sonoseg.study.layout.SHEET) and what separates a run's
# name from its variant (sonoseg.study.runsheet.SEPARATOR): the serving stage imports no study code.
RUN_SHEET, NAME_SEPARATOR = "runs.tsv", "--"


def _number(folder: Path | str) -> int:
    """k of fold<k>, s of seed<s>."""
    return int(re.search(r"\d+$", Path(folder).name).group())


def ensemble_members(model_path: str | Path, command: str = "segment") -> list[Path]:
    """The model files a --model names: the file itself, or every member of a run folder. A run folder is
    served whole, never as a smaller ensemble: every ``seed<s>`` folder must hold a model.pt, every fold
    the same seeds, and what the folder records of its run must be there — folds numbered from fold0
    with none skipped, and where the folder lies in its study (results/<study>/runs/), exactly the folds
    and seeds the study's run sheet lists for the run (one it no longer lists, left from an earlier study, is
    left out with a warning), elsewhere as many folds as the folds' postprocess.json
    record (a missing last fold is not seen in the numbers alone); each model trained with its folder's
    seed, all of one network, none a copy of another, and every model a fold's postprocess.json was chosen
    with. Anything
    missing or foreign is an error naming it. The checks read the models' recorded facts only (the weights
    memory-mapped, not read). A run that tests another run's models (``<run>--tta``, ``--ensemble``, ``--on-<dataset>``,
    ``--tested-<marks>``) has none of its own: the error names the run to serve, or with ``command`` "export"
    the run to export. A run sheet beside runs/ that cannot be read is named in a warning, and the folder is
    then checked as one away from its study."""
    path = Path(model_path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SonosegError(f"{path}: no such model file or run folder")
    folds = sorted((p for p in path.iterdir() if p.is_dir() and FOLD_FOLDER.fullmatch(p.name)), key=_number)
    if not folds:
        raise SonosegError(
            f"{path}: not a run folder (expected fold<k>/seed<s>/model.pt under it, as results/<study>/runs/<run>/ "
            "holds; a folder of several runs would mix networks)"
        )
    seeds = {
        fold: sorted((p.name for p in fold.iterdir() if p.is_dir() and SEED_FOLDER.fullmatch(p.name)), key=_number)
        for fold in folds
    }
    _note_other_folders(path, folds)
    planned = _sheet_row(path)
    # A trained run of the study whose sheet lists its folds and seeds (a row without them, hand-edited or of an
    # older sheet, gives nothing to compare: the folder is then checked as one away from its study).
    in_study = planned is not None and bool(planned.get("recipe"))
    in_study = in_study and all((planned.get(key) or "").split() for key in ("folds", "seeds"))
    if in_study:  # what its sheet no longer lists is left out; what it lists must be there
        folds, seeds = _leave_out_unplanned(path, planned, folds, seeds)
        _check_planned(path, planned, folds, seeds[folds[0]] if folds else [])
    members = [fold / seed / "model.pt" for fold in folds for seed in seeds[fold]]
    if members and not any(member.is_file() for member in members):
        _refuse_a_test_of_other_models(path, planned, command)
    first = folds[0]
    for fold in folds:
        if seeds[fold] != seeds[first]:
            raise SonosegError(
                f"{fold}: seeds {seeds[fold]} differ from {first.name}'s {seeds[first]}: a member is missing"
            )
    _check_fold_numbers(path, [_number(fold) for fold in folds])
    if not in_study:  # away from its study: its folds' choices record how many folds the run has
        _check_recorded_fold_count(path, folds)
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
    method = planned.get("method") if in_study else None
    fingerprints = _check_recorded_facts(path, members, method)
    for fold in folds:
        _check_choice_members(fold, seeds[fold], fingerprints)
    return members


def _note_other_folders(path: Path, folds: list[Path]) -> None:
    """Folders in a run folder or its folds that are no fold<k> or seed<s> (a ``seed1 (copy)``, a ``backup``) are
    never members: said once, so that a copy kept beside the run is not believed served. Hidden ones (an editor's,
    a notebook's) are passed over."""
    others = [
        entry.relative_to(path).as_posix()
        for folder, pattern in ((path, FOLD_FOLDER), *((fold, SEED_FOLDER) for fold in folds))
        for entry in sorted(folder.iterdir())
        if entry.is_dir() and not entry.name.startswith(".") and not pattern.fullmatch(entry.name)
    ]
    if others:
        log.warning("%s: %s not read (a run folder's members are fold<k>/seed<s>/model.pt)", path, ", ".join(others))


def _sheet_row(path: Path) -> dict | None:
    """The run's row of its study's run sheet (results/<study>/runs.tsv, as the workflow writes it) when the
    folder lies in its study's runs/; None elsewhere, or when the sheet lacks the run. A sheet there that cannot
    be read (empty, not a tab-separated sheet with a name column, a folder), or that does not list the run (a
    folder copied in, or a run the study's config no longer has), is named in a warning: the folder is then
    checked as one away from its study (by its folds' postprocess.json), not against the sheet."""
    where = path.resolve()
    sheet = where.parent.parent / RUN_SHEET
    if where.parent.name != "runs" or not (sheet.exists() or sheet.is_symlink()):
        return None
    try:
        with open(sheet, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            if reader.fieldnames is None:
                why = "it is empty"
            elif "name" not in reader.fieldnames:
                why = f"its first line names no name column ({', '.join(reader.fieldnames)[:120]})"
            else:
                row = next((row for row in reader if row.get("name") == where.name), None)
                if row is not None:
                    return row
                why = f"it lists no run {where.name} (a folder copied in, or a run its config no longer has?)"
    except IsADirectoryError:
        why = "a folder is at that path"
    except OSError as exc:
        why = exc.strerror or str(exc)
    except UnicodeDecodeError:
        why = "not UTF-8 text"
    except csv.Error as exc:
        why = f"not a tab-separated sheet: {exc}"
    log.warning(
        "%s: the study's run sheet gives nothing for this run (%s): the run folder %s is checked as one away from "
        "its study, by its folds' postprocess.json, not against the folds, seeds and network a sheet lists",
        sheet,
        why,
        path,
    )
    return None


# How to use the models of the run a test run tests, by the command given the test run: the run folder to give
# it, and how to flip-average them as a --tta run tested them (an exported graph holds no flip averaging: export
# has no --tta, and `segment --tta` flip-averages a graph as it does a model file).
USE_THE_TESTED_RUN = {
    "segment": (
        "to segment with those models, serve the run folder",
        " with --tta (flip averaging, as this run tested them)",
    ),
    "export": (
        "to export those models, export the run folder",
        ", and serve the graph with `sonoseg segment --tta` (flip averaging, as this run tested them; the graph "
        "holds none)",
    ),
}


def _refuse_a_test_of_other_models(path: Path, planned: dict | None, command: str = "segment") -> None:
    """A run folder without a single model.pt that is a run testing another run's models (a tta, ensemble,
    external or reliance run: its row of the study's run sheet says so in model_from, or else its name's
    variant does) is refused naming the run whose models it tests, and how to serve (``command`` segment) or
    export them (USE_THE_TESTED_RUN); anything else goes on to be named member by member."""
    parts = path.resolve().name.split(NAME_SEPARATOR)
    variants = []
    if len(parts) > 1 and parts[-1].startswith("on-"):  # a dataset's name holds no separator
        variants.append(parts.pop())
    if len(parts) > 1 and (parts[-1] in ("tta", "ensemble") or parts[-1].startswith("tested-")):
        variants.insert(0, parts.pop())
    if planned is not None:  # the sheet knows: a run without model_from tests no other run's models
        if not planned.get("model_from"):
            return
        source, tta = planned["model_from"], planned.get("tta") == "True"
    elif variants:
        source, tta = NAME_SEPARATOR.join(parts), variants[0] == "tta"
    else:
        return
    where = Path(os.path.abspath(path))  # "." or ".." name no sibling; links kept as the user gave them
    how = [_variant_meaning(variant) for variant in variants]
    use, flip = USE_THE_TESTED_RUN[command]
    raise SonosegError(
        f"{path}: this run tests the models of run {source}"
        + (f" ({', '.join(how)})" if how else "")
        + f": it holds their predictions, no model of its own; {use} {where.parent / source}"
        + (flip if tta else "")
    )


def _variant_meaning(variant: str) -> str:
    """How a run named <run>--<variant> tests <run>'s models (sonoseg.study.runsheet's kinds)."""
    if variant == "tta":
        return "flip-averaged"
    if variant == "ensemble":
        return "averaged as an ensemble"
    if variant.startswith("tested-"):
        return f"on images with marks {variant.removeprefix('tested-')}"
    return f"on dataset {variant.removeprefix('on-')}"


def _check_fold_numbers(path: Path, numbers: list[int]) -> None:
    """A run's folds are fold0, fold1, ... up to the last one there, none skipped."""
    missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
    if missing:
        raise SonosegError(
            f"{path}: {', '.join(f'fold{k}' for k in missing)} missing (it has "
            f"{', '.join(f'fold{k}' for k in numbers)}): a run's folds are fold0, fold1, ... with none skipped, "
            "and a run folder is served whole, never as a smaller ensemble"
        )


def _check_recorded_fold_count(path: Path, folds: list[Path]) -> None:
    """The run's number of folds as its folds' postprocess.json record it (``folds``, written by sonoseg
    choose-postprocess from the study's split) against the fold folders there: a last fold left behind when
    a run folder was copied is not seen in the numbers alone. Read leniently: a choice that cannot be read
    or records no count (one from before it was recorded) is no record here."""
    recorded = {}
    for fold in folds:
        try:
            count = json.loads((fold / POSTPROCESS_CHOICE).read_text()).get("folds")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(count, int) and not isinstance(count, bool):
            recorded[fold] = count
    if not recorded:
        return
    (fold, count), have = next(iter(recorded.items())), len(folds)
    other = next((other for other, its in recorded.items() if its != count), None)
    if other is not None:
        raise SonosegError(
            f"{other / POSTPROCESS_CHOICE}: records a run of {recorded[other]} folds, {fold / POSTPROCESS_CHOICE} "
            f"one of {count}: folds of two runs in one run folder"
        )
    if count > have:
        missing = ", ".join(f"fold{k}" for k in range(have, count))
        raise SonosegError(
            f"{path}: {missing} missing: {fold / POSTPROCESS_CHOICE} records a run of {count} folds and the "
            f"folder has {have}; a run folder is served whole, never as a smaller ensemble"
        )
    if count < have:
        extra = ", ".join(fold.name for fold in folds[count:])
        raise SonosegError(
            f"{path}: {extra} beyond the {count} folds {fold / POSTPROCESS_CHOICE} records for this run: left "
            "from an earlier study? Move it out of the run folder"
        )


def _leave_out_unplanned(
    path: Path, planned: dict, folds: list[Path], seeds: dict[Path, list[str]]
) -> tuple[list[Path], dict[Path, list[str]]]:
    """The folds and seeds of the run folder that its study's run sheet lists for the run. One the sheet no
    longer lists (left from a study with more folds or seeds: `seeds: [0, 1]` made `[0]`) is not a member of
    the run its tables describe: it is left out, named in a warning, and left where it is (a user's models)."""
    sheet = path.resolve().parent.parent / RUN_SHEET
    listed_folds, listed_seeds = (set((planned.get(key) or "").split()) for key in ("folds", "seeds"))
    kept_folds = [fold for fold in folds if str(_number(fold)) in listed_folds]
    extra = [fold.name for fold in folds if fold not in kept_folds]
    extra += [  # each with its fold: fold1/seed2
        f"{fold.name}/{seed}" for fold in kept_folds for seed in seeds[fold] if str(_number(seed)) not in listed_seeds
    ]
    if extra:
        log.warning(
            "%s: %s not served: the study's run sheet (%s) lists folds %s and seeds %s for run %s (left from an "
            "earlier study with more; move it out of the run folder to keep it apart)",
            path,
            ", ".join(extra),
            sheet,
            planned.get("folds") or "none",
            planned.get("seeds") or "none",
            planned["name"],
        )
    kept_seeds = {fold: [seed for seed in seeds[fold] if str(_number(seed)) in listed_seeds] for fold in kept_folds}
    return kept_folds, kept_seeds


def _check_planned(path: Path, planned: dict, folds: list[Path], seeds: list[str]) -> None:
    """The folds and seeds the study's run sheet plans for this run are there (a whole fold or seed missing
    from the end is not seen in the numbers alone); those it does not list were left out before."""
    sheet = path.resolve().parent.parent / RUN_SHEET
    have_folds, have_seeds = {str(_number(fold)) for fold in folds}, {str(_number(seed)) for seed in seeds}
    for what, listed, have in (
        ("fold", planned.get("folds") or "", have_folds),
        ("seed", planned.get("seeds") or "", have_seeds),
    ):
        missing = [value for value in listed.split() if value not in have]
        if missing:
            raise SonosegError(
                f"{path}: {', '.join(f'{what}{value}' for value in missing)} missing: the study's run sheet ({sheet}) "
                f"lists {what}s {listed} for run {planned['name']}, and a run folder is served whole, never as a "
                "smaller ensemble"
            )


def _check_recorded_facts(path: Path, members: list[Path], method: str | None) -> dict[Path, str | None]:
    """What each member's file records agrees with where it lies: its seed with its folder's name, its
    network with the
    run's (``method``: the network the study's run sheet says the run trains; else the members' own,
    which must be one), and its training fingerprint with no other member's (a copy is not another
    member). A file that lacks a fact (an older model file) is not refused for it. The members' training
    fingerprints, returned."""
    facts = {}
    for member in members:
        saved = load_checked(member, MODEL_FORMAT, metadata_only=True)
        facts[member] = {key: saved.get(key) for key in ("network", "seed", "fingerprint")}
        del saved  # the weights (memory-mapped) are not kept
    for member, fact in facts.items():
        if fact["seed"] is not None and str(fact["seed"]) != str(_number(member.parent)):
            raise SonosegError(
                f"{member}: records seed {fact['seed']}, not its folder's {member.parent.name}: a model of another "
                "seed (a copy?), and a run folder's seed<n> holds the model trained with seed n"
            )
    networks = [fact["network"] for fact in facts.values()]
    if method and set(networks) != {method}:
        foreign = next(member for member, fact in facts.items() if fact["network"] != method)
        raise SonosegError(
            f"{foreign}: a model of network {facts[foreign]['network']!r} in a run folder of {method!r} (the network "
            f"the study's run sheet, {path.resolve().parent.parent / RUN_SHEET}, says run {path.resolve().name} "
            "trains): a run folder holds one run, of one network"
        )
    if len(set(networks)) > 1:
        # The run's network: the most members'; between as many, the one the run is named after, else the first's.
        named = path.resolve().name.split(NAME_SEPARATOR)[0]
        ours = max(dict.fromkeys(networks), key=lambda n: (networks.count(n), n == named))
        mine = next(member for member, fact in facts.items() if fact["network"] == ours)
        foreign = next(member for member, fact in facts.items() if fact["network"] != ours)
        raise SonosegError(
            f"{foreign}: a model of network {facts[foreign]['network']!r} in a run folder of {ours!r} (as {mine} "
            "is): a run folder holds one run, of one network; serve each run's folder on its own"
        )
    seen = {}
    for member, fact in facts.items():
        if fact["fingerprint"] is not None:
            if fact["fingerprint"] in seen:
                raise SonosegError(
                    f"{member}: the same training as {seen[fact['fingerprint']]} (their fingerprints match): a copy, "
                    "not another member of the run"
                )
            seen[fact["fingerprint"]] = member
    return {member: fact["fingerprint"] for member, fact in facts.items()}


def _check_choice_members(fold: Path, seeds: list[str], fingerprints: dict[Path, str | None]) -> None:
    """The models a fold's postprocess.json was chosen with (its ``models``: every seed of the fold,
    sonoseg.training.postprocess.choose) are in the fold, and are those trainings (its ``fingerprints``, where
    it records them: a model of another study or training put in a member's place is not the member).
    Read leniently: a file that cannot be read or records no models is named when its settings are read
    (RecordedChoice), and not at all when none is."""
    choice_file = fold / POSTPROCESS_CHOICE
    try:
        described = json.loads(choice_file.read_text())
        # As written on any system (a choice made on Windows names its models with backslashes).
        recorded = [Path(str(model).replace("\\", "/")) for model in described.get("models")]
        chosen_with = {
            Path(str(model).replace("\\", "/")).parent.name: str(fp)
            for model, fp in (described.get("fingerprints") or {}).items()
        }
    except (OSError, ValueError, AttributeError, TypeError):
        return
    folds = sorted({model.parent.parent.name for model in recorded if FOLD_FOLDER.fullmatch(model.parent.parent.name)})
    if folds and folds != [fold.name]:
        raise SonosegError(
            f"{choice_file}: records the models of {', '.join(folds)}, not of {fold.name}: a choice of another fold"
        )
    missing = sorted(
        {model.parent.name for model in recorded if SEED_FOLDER.fullmatch(model.parent.name)} - set(seeds), key=_number
    )
    if missing:
        raise SonosegError(
            f"{choice_file}: its choice was made with the models of {', '.join(missing)}, which {fold.name} lacks "
            f"(it has {', '.join(seeds)}): a member is missing, and a run folder is served whole, never as a "
            "smaller ensemble"
        )
    for seed in seeds:
        member = fold / seed / "model.pt"
        now = fingerprints.get(member)
        if now and chosen_with.get(seed) and now != chosen_with[seed]:
            raise SonosegError(
                f"{member}: not the training {choice_file} was chosen with (its training fingerprint "
                f"{now[:FINGERPRINT_SHOWN]}, the choice's {chosen_with[seed][:FINGERPRINT_SHOWN]}): a model of another "
                "study or training put in this member's place; serve it as a model file on its own, or run the "
                "study again to make the run's models and choice together"
            )


# ----------------------------------------------------------------------------- post-processing recorded with the models


def _read_choice(path: str | Path):
    """One fold's postprocess.json, parsed; a file that cannot be read or parsed is named."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:  # there, maybe whole, but not readable here (permissions): not a damaged choice
        raise SonosegError(f"{path}: the post-processing choice cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise SonosegError(f"{path}: not a post-processing choice ({exc!r})") from None


# What every postprocess.json records (sonoseg.training.postprocess.choose; the choice is recomputed from
# them), and the scale selection sonoseg choose-postprocess records with it, all three together.
CHOICE_KEYS = ("validation_dice", "validation_images")
SCALE_KEYS = ("scales", "shrink_above", "shrink_found_above")


def _check_choice_keys(path: Path, choice) -> None:
    """A choice read as a mapping that lacks what every choice records (a hand-made or damaged file) is
    named with the keys it lacks; one that is no mapping at all is named by the reader that trips on it."""
    if not isinstance(choice, dict):
        return
    missing = [key for key in CHOICE_KEYS if key not in choice]
    if isinstance(choice.get("validation_dice"), dict):
        missing += [f"validation_dice.{option}" for option in POSTPROCESSES if option not in choice["validation_dice"]]
    if missing:
        raise SonosegError(
            f"{path}: not a post-processing choice: it lacks {', '.join(missing)} (it records "
            f"{', '.join(sorted(map(str, choice))) or 'nothing'}; sonoseg choose-postprocess writes them all)"
        )


def _postprocess_of(choices: list[tuple[Path, object]]) -> str:
    """chosen_postprocess's rule on choices already read, each with its file (for the errors); a list,
    not a mapping, so that a file given twice counts twice, as it always did."""
    totals = dict.fromkeys(POSTPROCESSES, 0.0)
    for path, choice in choices:
        _check_choice_keys(path, choice)
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
    (none for a model file elsewhere: a postprocess.json two folders up is then no choice of its). A link to a
    model of a run folder (``current.pt -> runs/unet/fold0/seed0/model.pt``) is followed there: served
    otherwise than its run folder, it lost the study's post-processing and scale selection."""
    placed = [member if in_run_folder(member) else member.resolve() for member in members]
    return sorted({member.parent.parent / POSTPROCESS_CHOICE for member in placed if in_run_folder(member)})


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
        one or a choice made before scales were recorded (with a warning naming it; a choice from before
        the second trigger was recorded: None, as it predicted); folds that disagree are named, and a file
        that lacks what every choice records is named with the keys it lacks, before any comparison."""
        recorded, unscaled = {}, []
        for path, choice in self.choices.items():
            _check_choice_keys(path, choice)
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
            if "scales" not in choice:
                if any(key in choice for key in SCALE_KEYS):
                    recorded_keys = ", ".join(key for key in SCALE_KEYS if key in choice)
                    raise SonosegError(
                        f"{path}: records {recorded_keys} but no scales: sonoseg choose-postprocess records "
                        f"{', '.join(SCALE_KEYS)} together"
                    )
                unscaled.append(path)
            recorded[path] = (scales, shrink_above, found_above)
        if len(set(recorded.values())) > 1:
            first, *others = recorded
            other = next(path for path in others if recorded[path] != recorded[first])
            if first in unscaled and other not in unscaled:  # name the file that records none
                first, other = other, first
            raise SonosegError(
                f"{other}: scales {list(recorded[other][0])} (shrink_above {recorded[other][1]}, shrink_found_above "
                f"{recorded[other][2]}) differ from {first}'s {list(recorded[first][0])} (shrink_above "
                f"{recorded[first][1]}, shrink_found_above {recorded[first][2]})"
                + (
                    f"; {other} records no scales (a choice from before sonoseg recorded them, read as [1.0])"
                    if other in unscaled
                    else ""
                )
            )
        for path in unscaled:
            log.warning(
                "%s: records no scales (a choice from before sonoseg recorded them): the input size alone, as the "
                "study then predicted",
                path,
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


def training_fingerprint(member: Path) -> str | None:
    """What names a model file beyond its path, for the record (an exported graph is named by its sha256):
    its training's fingerprint, None for a file from before fingerprints (its weights memory-mapped, not read)."""
    return load_checked(member, MODEL_FORMAT, metadata_only=True).get("fingerprint")
