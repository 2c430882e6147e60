"""ONNX export of a trained model.pt, with a JSON sidecar that describes the whole preprocessing and
post-processing, so that the ONNX file is usable without this package.

The exported graph takes float32 (N, 3, S, S) RGB in [0, 1] (dynamic batch N, S the training size)
and returns the lesion probability (sigmoid applied in the graph). The model's input normalization
(model.pt key "normalization", if any) is part of the graph too, so that a user only has to resize,
scale to [0, 1] and reorder to NCHW RGB.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sonoseg.data.preprocess import INTERPOLATION_MEANING
from sonoseg.errors import SonosegError
from sonoseg.serving.mask_files import hold_folder
from sonoseg.serving.modelio import (
    ensemble_members,
    lesion_areas_at,
    load_model,
    recorded_choice,
    warn_of_another_size,
)
from sonoseg.serving.options import SIZE_REFUSALS, first_line, shrinks, smaller_factors, smaller_sides
from sonoseg.serving.probability_model import ProbabilityModel

# What serving reads of an export (the sidecar, the session) lives in sonoseg.serving.sidecar, torch-free.
from sonoseg.serving.sidecar import (
    COMPONENT_RULE_MEANING,
    ENSEMBLE_RULE,
    GRAPH_RECORD,
    INPUT_NAME,
    OUTPUT_NAME,
    SCALE_SELECTION_RULE,
    SEGMENT_DOES,
    SIDECAR_FORMAT,
    graph_record,
    marks_meaning,
    note_unrecorded_choice,
    onnx_session,
    run_session,
    sidecar_path,
)

log = logging.getLogger(__name__)

# Opset 18: the default of torch's dynamo-based exporter in this torch version, supported by every
# ONNX Runtime since 1.14; Resize (bilinear, align_corners) and Pad are covered without workarounds.
OPSET = 18


class MeanProbability(nn.Module):
    """An ensemble as one graph: the mean of its members' probabilities (each a ProbabilityModel, so each
    applies its own input normalization)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


def export_network(network: nn.Module, normalization: dict | None, size: int, out: str | Path) -> Path:
    """Write the network (eval mode) as ONNX with a dynamic batch axis; returns the path."""
    return export_probability(ProbabilityModel(network.eval(), normalization).eval(), size, out)


def export_probability(
    wrapped: nn.Module,
    size: int,
    out: str | Path,
    any_size: bool = False,
    record: dict | None = None,
    named_as: str | Path | None = None,
) -> Path:
    """Write a module from [0, 1] RGB to probability (eval mode) as ONNX with a dynamic batch axis, and
    with ``any_size`` a dynamic square side too (traced at ``size``); ``record``: what the graph records of
    how it was exported (sidecar.GRAPH_RECORD, in its metadata). Messages name ``named_as`` (the path the user
    gave, where ``out`` is export's staging file), else ``out``."""
    out = Path(out)
    named_as = named_as or out
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    side = torch.export.Dim("side", min=1, max=8192)
    for name in ("onnx_ir", "onnxscript"):  # their optimisers log every pass at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    # A network that cannot be traced makes the exporter print its whole graph, more than once: kept
    # from the terminal, since the error below says why in a line.
    chatter = io.StringIO()
    with warnings.catch_warnings(), torch.no_grad(), redirect_stdout(chatter), redirect_stderr(chatter):
        warnings.simplefilter("ignore")  # the exporter's chatter about its own internals
        try:
            program = torch.onnx.export(
                wrapped,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch, **({2: side, 3: side} if any_size else {})}},
                verbose=False,
            )
        except Exception as exc:  # a user's network with a data-dependent branch, say: one line, not a page
            cause = f"{type(exc).__name__}: {_export_cause(exc)[:300]}"
            raise SonosegError(
                f"{named_as}: the network does not export to ONNX ({cause}). The cost table can time it in torch "
                "instead (cost: {backend: torch}); `sonoseg segment` serves its model file in torch "
                "(docs/extending.md)"
            ) from exc
    if record is not None:
        program.model.metadata_props[GRAPH_RECORD] = json.dumps(record)
    # One self-contained file: the weights inside the .onnx, no external-data side files.
    try:
        program.save(str(out), external_data=False)
    except OSError as exc:  # a full disk, above all: named, and the file cut short not left behind
        out.unlink(missing_ok=True)
        raise SonosegError(f"{named_as}: could not be written ({exc.strerror or exc})") from None
    return out


def _export_cause(exc: Exception) -> str:
    """The exporter's own words for why it failed: the line after its "Exception summary" heading (the
    first line is a banner, in colour), else its first line."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    for heading, cause in zip(lines, lines[1:]):
        if heading.lstrip("# ").lower().startswith("exception summary"):
            return cause
    return lines[0] if lines else type(exc).__name__


def build_sidecar(saved: dict, size: int, component_rule: str, postprocess: str = "keep_one") -> dict:
    """The sidecar of a graph of the model file ``saved`` at the input size alone; export fills in the graph's
    file, its sha256 and parity, and the sizes, ensemble and scale selection it serves."""

    def stated(key: str):  # what segment does, in the sidecar's words (sidecar.SEGMENT_DOES)
        return SEGMENT_DOES[key][0]

    return {
        "format": SIDECAR_FORMAT,
        "network": saved["network"],
        "onnx_file": None,
        "onnx_sha256": None,
        "opset": OPSET,
        "exported_with": {"torch": torch.__version__},
        # What the model was trained on and by which sonoseg (model files from before it: none).
        "provenance": saved.get("provenance"),
        "input": {
            "name": stated("input.name"),
            "dtype": stated("input.dtype"),
            "layout": stated("input.layout"),
            "shape": ["batch", 3, size, size],
            "channel_order": stated("input.channel_order"),
            "resize": {
                "height": size,
                "width": size,
                "interpolation": saved["input_interpolation"],  # load_model checked it (older files: bilinear)
                "interpolation_meaning": INTERPOLATION_MEANING[saved["input_interpolation"]],
                "keep_aspect_ratio": stated("input.resize.keep_aspect_ratio"),
            },
            # Before resizing: the coloured overlays (calipers, Doppler boxes, coloured text) as in training.
            "marks": {"treatment": saved["input_marks"], "meaning": marks_meaning(saved["input_marks"])},
            "scale": stated("input.scale"),
            "grayscale_or_rgba": stated("input.grayscale_or_rgba"),
            "orientation": stated("input.orientation"),
            "normalization": saved.get("normalization"),
            "normalization_in_graph": stated("input.normalization_in_graph"),  # the graph applies (x - mean) / std
        },
        "output": {
            "name": stated("output.name"),
            "shape": ["batch", 1, size, size],
            "meaning": stated("output.meaning"),
        },
        "postprocessing": {
            "resize_to_original": stated("postprocessing.resize_to_original"),
            "threshold": stated("postprocessing.threshold"),
            "threshold_rule": stated("postprocessing.threshold_rule"),
            "component_rule": component_rule,
            "component_rule_meaning": COMPONENT_RULE_MEANING[component_rule],
            "fill_holes": stated("postprocessing.fill_holes"),
            # keep_one: the component rule and hole filling apply; none: every pixel above the threshold.
            # A study's models carry the choice made on validation (their fold's postprocess.json).
            "postprocess": postprocess,
            "mask_values": stated("postprocessing.mask_values"),
            # The study's test-time scale selection (export fills it in); null: at the input size alone.
            "study_scale_selection": None,
        },
        "parity": None,
        # What it trained in ("bf16 + channels_last", "fp32"); the graph computes in fp32 whatever it was.
        "source_model": {
            "best_epoch": saved.get("best_epoch"),
            "seed": saved.get("seed"),
            "trained_with": saved.get("trained_with"),
        },
    }


def check_out(out: Path) -> None:
    """Before any export work: the graph and its sidecar can be written at ``out`` and beside it (no folder
    at either path, a folder for them that is or can be made, and may be written in)."""
    if out.suffix.lower() != ".onnx":
        raise SonosegError(
            f"{out}: name the exported model <name>.onnx (its sidecar is written beside it as <name>.onnx.json)"
        )
    for path in (out, sidecar_path(out)):
        if path.is_dir():
            raise SonosegError(
                f"{path}: a folder is at that path, so the export cannot be written there: give --out a file name "
                "(<name>.onnx, its sidecar <name>.onnx.json beside it), or move the folder"
            )
        if path.is_file() and not os.access(path, os.W_OK):
            raise SonosegError(f"{path}: exists and may not be written (read-only): give --out another file name")
    folder = out.absolute().parent
    while not folder.exists():  # the nearest folder there: export makes those under it
        folder = folder.parent
    if not folder.is_dir():
        raise SonosegError(f"{out}: its folder cannot be made: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY
        why = "is on a read-only file system" if read_only else "may not be written in (permissions)"
        raise SonosegError(f"{out}: cannot be written: the folder {folder} {why}")


def export(
    model_path: str | Path,
    out: str | Path,
    component_rule: str = "area",
    size: int | None = None,
    serve_scales: tuple[float, ...] = (),
    note_unrecorded: bool = True,
) -> dict:
    """model.pt -> model.onnx + model.onnx.json. A foreign or tampered model.pt is refused (load_model).

    A run folder (results/<study>/runs/<run>/: every fold<k>/seed<s>/model.pt under it) exports its
    ensemble as one graph, the mean of the members' probabilities (as `segment --model` serves it);
    the sidecar lists the members. Members prepared otherwise (input size, interpolation, marks) are
    refused by name. Checks parity on a random batch of two and refuses to write a sidecar when ONNX
    Runtime and torch disagree by more than 1e-4 in probability. Where the graph and its sidecar cannot be
    written (a folder at ``out``, say) is refused before any work (check_out).

    When the study predicted the models with test-time scale selection (their postprocess.json), or
    ``serve_scales`` shrink (a user's --scales), the graph takes other square input sizes: those the
    selection tries where torch takes them, each checked for parity and listed in the sidecar (a size
    ONNX Runtime cannot run, or runs otherwise, leaves the graph at the input size alone, with a
    warning); the sidecar records the study's selection, so that segment applies it as torch does. A
    model file with no such record beside it (a model.pt copied out of its run folder) is exported with
    keep_one at the input size alone, and, with ``note_unrecorded``, a warning says so, as segment's does;
    so does one for a ``size`` away from the size the models were trained at (segment, which exports for
    ONNX Runtime, passes False: it gives both notes itself).
    """
    out = Path(out)
    check_out(out)  # before the models load: a folder at --out is named now, not after the work
    out.parent.mkdir(parents=True, exist_ok=True)
    # The graph is made and checked in a file of this process's own beside --out, then renamed over it with
    # its sidecar: a failed export (a full disk) leaves an earlier one at --out as it was, and two exports
    # to one path at once each check their own graph, the later one's pair replacing the earlier's.
    # Named by this process's id and a random part mkstemp drew (no file had the name when it was drawn): two
    # containers sharing a volume may each be pid 1, and their exports to one --out must still stage apart.
    for stale in _stale_staging(out):  # a killed export's (a paper-scale ensemble's graph: hundreds of MB)
        _remove_with_sidecar(stale)
    handle, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}.", suffix=".partial")
    os.close(handle)
    os.unlink(name)  # the name is what was wanted: the graph is then made with the mode the umask gives a file
    staging = Path(name)
    try:
        return _export_staged(model_path, out, staging, component_rule, size, serve_scales, note_unrecorded)
    finally:
        _remove_with_sidecar(staging)


def _remove_with_sidecar(graph: Path) -> None:
    """A staging graph and its sidecar gone, either or both already absent."""
    graph.unlink(missing_ok=True)
    sidecar_path(graph).unlink(missing_ok=True)


STALE_HOURS = 6  # a staging file untouched this long is no running export's (an ensemble's export takes minutes)


def _stale_staging(out: Path) -> list[Path]:
    """The staging files of exports to ``out`` whose process has ended without removing them (a kill -9): named
    ``.<name>.<pid>.<unique>.partial`` beside it (``.<name>.<pid>.partial`` before the unique part), untouched
    for STALE_HOURS and their pid no process on this machine
    now. The age keeps a running export's on a folder other machines share (where a pid means nothing
    here); none are looked for on Windows, whose os.kill ends the process it names."""
    if os.name == "nt":
        return []
    stale, now = [], time.time()
    for path in out.parent.glob(f".{glob.escape(out.name)}.*.partial"):
        pid = path.name[len(out.name) + 2 : -len(".partial")].split(".")[0]
        try:
            old = now - path.stat().st_mtime > STALE_HOURS * 3600
        except OSError:  # gone meanwhile
            continue
        # pid 1 runs on every machine and container: an export that was a container's pid 1 is judged by age alone.
        if old and pid.isdigit() and (int(pid) == 1 or not _running(int(pid))):
            stale.append(path)
    return stale


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: whether the process is there
    except (ProcessLookupError, OverflowError):  # none, or a number no pid can be
        return False
    except PermissionError:  # another user's
        return True
    return True


def _export_staged(
    model_path: str | Path,
    out: Path,
    staging: Path,
    component_rule: str,
    size: int | None,
    serve_scales: tuple[float, ...],
    note_unrecorded: bool,
) -> dict:
    """export's work, the graph written to ``staging`` and checked there, then published at ``out``."""
    members = ensemble_members(model_path, command="export")
    loaded = [load_model(member, "cpu") for member in members]
    network, saved = loaded[0]
    if note_unrecorded:  # segment, exporting for ONNX Runtime, has said so itself
        warn_of_another_size(model_path, saved.get("input_size"), size, "export")
    size = int(size or saved.get("input_size") or 0)
    if not size:
        raise SonosegError(f"{model_path}: no input size stored; pass --size")
    prepared = (saved.get("input_size"), saved["input_interpolation"], saved["input_marks"])
    for member, (_, other) in zip(members[1:], loaded[1:]):
        theirs = (other.get("input_size"), other["input_interpolation"], other["input_marks"])
        if theirs != prepared:
            raise SonosegError(
                f"{member}: input (size, interpolation, marks) {theirs} differs from {members[0]}'s {prepared}: "
                "an ensemble's members must see the same input"
            )
    probability = MeanProbability(
        [ProbabilityModel(net.eval(), kept.get("normalization")).eval() for net, kept in loaded]
    ).eval()
    if len(loaded) == 1:
        probability = probability.members[0]
    recorded = recorded_choice(members)
    if note_unrecorded:
        note_unrecorded_choice(model_path, recorded, ["keep_one", "the input size alone"], "export")
    sidecar = build_sidecar(saved, size, component_rule, recorded.postprocess())
    if len(members) > 1:
        sidecar["ensemble"] = {
            "rule": ENSEMBLE_RULE,
            "members": [
                {
                    # Within the run folder: the graph travels, and the study machine's folders are not its to show.
                    "model": member.relative_to(model_path).as_posix(),
                    "network": kept["network"],
                    "seed": kept.get("seed"),
                    "trained_with": kept.get("trained_with"),
                    "normalization": kept.get("normalization"),
                }
                for member, (_, kept) in zip(members, loaded)
            ],
        }
        sidecar["source_model"] = {"members": len(members)}
    scales, shrink_above, shrink_found_above = recorded.scales()
    # The study's test-time scale selection predicts each image at smaller sizes too: the graph then takes
    # any square size, so that ONNX Runtime segments as the study did (one fixed size when that fails).
    # The input size; then the smaller sizes the selection tries (as segment tries them), where torch takes them.
    refusal = _size_refusal(probability, size)  # said as such, not as a graph that does not export
    if refusal:
        raise SonosegError(f"{model_path}: the network cannot take a {size}-px input ({refusal})")
    sides = [size, *smaller_sides(size, smaller_factors((*scales, *serve_scales)))]
    sides = [sides[0], *(side for side in sides[1:] if _torch_takes(probability, side))]
    torch_sides, max_abs_diff = list(sides), None
    if len(sides) > 1:
        try:
            max_abs_diff = _export_checked(probability, staging, sidecar, sides, out)
        except SonosegError as exc:
            log.warning("%s: exported at one input size only, without test-time scale selection (%s)", out, exc)
    if max_abs_diff is None:
        sides = sides[:1]
        max_abs_diff = _export_checked(probability, staging, sidecar, sides, out)
    sidecar |= {"onnx_file": out.name, "onnx_sha256": hashlib.sha256(staging.read_bytes()).hexdigest()}
    sidecar["parity"] = {"max_abs_probability_difference_vs_torch": max_abs_diff, "checked_batch": 2}
    if shrinks(scales):
        areas = [lesion_areas_at(kept, size) for _, kept in loaded]
        sidecar["postprocessing"]["study_scale_selection"] = {
            "scales": list(scales),
            "shrink_above": shrink_above,
            "shrink_found_above": shrink_found_above,
            # The graph serves every size torch takes (UNeXt takes 32 px alone): it selects as the study did.
            "in_this_graph": sides == torch_sides,
            # Every member's, at this input size: the size-aware rule's limit is their shrink_above quantile.
            "training_lesion_areas": None if any(a is None for a in areas) else sorted(a for m in areas for a in m),
            "rule": SCALE_SELECTION_RULE,
        }
    _publish(staging, out, sidecar)
    log.info(
        "exported %s (%s, opset %d, input %dx%d) to %s; max |ORT - torch| = %.1e",
        model_path,
        saved["network"],
        OPSET,
        size,
        size,
        out,
        max_abs_diff,
    )
    return sidecar


def _publish(staging: Path, out: Path, sidecar: dict) -> None:
    """The checked graph at ``staging`` and its sidecar renamed to ``out`` and beside it, the folder held
    meanwhile (mask_files.hold_folder, as segment holds its --outdir: no lock file left; on a file system
    without such locks, a warning), so that two exports' renames do not interleave and the pair at ``out`` is
    always one export's."""
    staged_sidecar = sidecar_path(staging)
    try:
        staged_sidecar.write_text(json.dumps(sidecar, indent=2))
        held = hold_folder(out.parent, "other exports to this name", wait=True)
        try:
            os.replace(staging, out)
            os.replace(staged_sidecar, sidecar_path(out))
        finally:
            if held is not None:
                os.close(held)  # and the lock with it
    except OSError as exc:
        kept = "; the export there before is kept" if out.exists() else ""
        raise SonosegError(f"{out}: could not be written ({exc.strerror or exc}){kept}") from None


def _export_checked(probability: nn.Module, out: Path, sidecar: dict, sides: list[int], named_as: Path) -> float:
    """Write the graph that serves ``sides`` (the first: the input size; with more, any square size) to ``out``,
    recording in it the values of ``sidecar`` it was exported with (sidecar.GRAPH_FACTS), and check it against
    torch at each (_parity); ``sidecar`` is made to state those sizes; messages name ``named_as``."""
    side = sides[0] if len(sides) == 1 else "side"
    sidecar["input"]["shape"] = ["batch", 3, side, side]
    sidecar["output"]["shape"] = ["batch", 1, side, side]
    sidecar["input"].pop("sides", None)
    if len(sides) > 1:
        sidecar["input"]["sides"] = sides  # the input sizes checked against torch: the only ones segment runs
    export_probability(
        probability, sides[0], out, any_size=len(sides) > 1, record=graph_record(sidecar), named_as=named_as
    )
    return _parity(probability, out, sides, named_as)


def _torch_takes(probability: nn.Module, side: int) -> bool:
    """Whether the network runs on a side x side input (its strides may need a multiple of 16 or 32)."""
    return _size_refusal(probability, side) is None


def _size_refusal(probability: nn.Module, side: int) -> str | None:
    """Why the network does not run on a side x side input (the first line of its error), or None."""
    try:
        with torch.no_grad():
            probability(torch.zeros(1, 3, side, side))
    except SIZE_REFUSALS as exc:
        if isinstance(exc, torch.OutOfMemoryError):  # memory, not the network's strides: never a size's refusal
            raise
        return first_line(exc, 160)
    return None


def _parity(probability: nn.Module, out: Path, sides: list[int], named_as: Path) -> float:
    """The largest |ONNX Runtime - torch| in probability over a random batch of two at each input side
    (the first: the input size). Refused beyond 1e-4, or where ONNX Runtime cannot run the graph (named
    as ``named_as``, the path the user gave)."""
    session, worst = onnx_session(out), 0.0
    for side in sides:
        seed = 0 if side == sides[0] else side  # the input size's probe as before the other sizes were checked
        probe = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = probability(probe).numpy()
        try:
            got = run_session(session, probe.numpy())
        except Exception as exc:  # ONNX Runtime's own error types
            raise SonosegError(f"{named_as}: ONNX Runtime cannot run the graph at {side} px ({exc})") from None
        worst = max(worst, float(np.abs(got - expected).max()))
        if worst > 1e-4:
            raise SonosegError(
                f"{named_as}: ONNX Runtime differs from torch by {worst:.2e} in probability at {side} px (limit 1e-4)"
            )
    return worst
