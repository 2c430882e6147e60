"""ONNX export of a trained model.pt, with a JSON sidecar that describes the whole preprocessing and
post-processing, so that the ONNX file is usable without this package.

The exported graph takes float32 (N, 3, S, S) RGB in [0, 1] (dynamic batch N, S the training size)
and returns the lesion probability (sigmoid applied in the graph). The model's input normalization
(model.pt key "normalization", if any) is part of the graph too, so that a user only has to resize,
scale to [0, 1] and reorder to NCHW RGB.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sonoseg.data import marks
from sonoseg.data.options import INTERPOLATIONS, MARKS
from sonoseg.data.preprocess import INTERPOLATION_MEANING
from sonoseg.errors import SonosegError
from sonoseg.serving.modelio import (
    ProbabilityModel,
    ensemble_members,
    lesion_areas_at,
    load_model,
    recorded_choice,
)
from sonoseg.serving.options import COMPONENT_RULES, LESION_THRESHOLD, POSTPROCESSES, shrinks

log = logging.getLogger(__name__)

# Opset 18: the default of torch's dynamo-based exporter in this torch version, supported by every
# ONNX Runtime since 1.14; Resize (bilinear, align_corners) and Pad are covered without workarounds.
OPSET = 18
SIDECAR_FORMAT = "sonoseg-onnx-sidecar/1"
INPUT_NAME = "image"
OUTPUT_NAME = "probability"


def sidecar_path(onnx_path: str | Path) -> Path:
    """model.onnx -> model.onnx.json"""
    return Path(f"{onnx_path}.json")


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


def export_probability(wrapped: nn.Module, size: int, out: str | Path, any_size: bool = False) -> Path:
    """Write a module from [0, 1] RGB to probability (eval mode) as ONNX with a dynamic batch axis, and
    with ``any_size`` a dynamic square side too (traced at ``size``)."""
    out = Path(out)
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
                f"{out}: the network does not export to ONNX ({cause}). The cost table can time it in torch "
                "instead (cost: {backend: torch}); `sonoseg segment` serves its model file in torch "
                "(docs/extending.md)"
            ) from exc
    # One self-contained file: the weights inside the .onnx, no external-data side files.
    program.save(str(out), external_data=False)
    return out


def _export_cause(exc: Exception) -> str:
    """The exporter's own words for why it failed: the line after its "Exception summary" heading (the
    first line is a banner, in colour), else its first line."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    for heading, cause in zip(lines, lines[1:]):
        if heading.lstrip("# ").lower().startswith("exception summary"):
            return cause
    return lines[0] if lines else type(exc).__name__


def build_sidecar(
    saved: dict, onnx_path: Path, size: int, component_rule: str, max_abs_diff: float, postprocess: str = "keep_one"
) -> dict:
    normalization = saved.get("normalization")
    return {
        "format": SIDECAR_FORMAT,
        "network": saved["network"],
        "onnx_file": onnx_path.name,
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "opset": OPSET,
        "exported_with": {"torch": torch.__version__},
        # What the model was trained on and by which sonoseg (model files from before it: none).
        "provenance": saved.get("provenance"),
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "shape": ["batch", 3, size, size],
            "channel_order": "RGB",
            "resize": {
                "height": size,
                "width": size,
                "interpolation": saved["input_interpolation"],  # load_model checked it (older files: bilinear)
                "interpolation_meaning": INTERPOLATION_MEANING[saved["input_interpolation"]],
                "keep_aspect_ratio": False,
            },
            # Before resizing: the coloured overlays (calipers, Doppler boxes, coloured text) as in training.
            "marks": {
                "treatment": saved["input_marks"],
                "meaning": {
                    "keep": "feed the image as it is, marks included",
                    "inpaint": f"mark pixels: max - min over the RGB channels > {marks.CHROMA_THRESHOLD}, and "
                    f"> {marks.LOW_CHROMA_THRESHOLD} within {marks.HALO_REACH} px of those; dilated by "
                    "max(1, round(max(height, width) / 320)) px; inpainted with OpenCV's cv2.inpaint "
                    "(INPAINT_TELEA, radius: the dilation + 2), other pixels unchanged, before resizing "
                    "(sonoseg.data.marks.inpaint_marks; docs/marks_and_floors.md)",
                }[saved["input_marks"]],
            },
            "scale": "uint8 pixel / 255, giving [0, 1]",
            "grayscale_or_rgba": "convert to 3-channel RGB (gray repeated; alpha dropped); 16-bit: divide by 257 first",
            "orientation": "as viewers show the image: its EXIF orientation tag applied first (exif_transpose)",
            "normalization": normalization,
            "normalization_in_graph": True,  # feed [0, 1] RGB; the graph applies (x - mean) / std itself
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", 1, size, size],
            "meaning": "lesion probability (sigmoid applied in the graph)",
        },
        "postprocessing": {
            "resize_to_original": "bilinear (probability map to the original height x width)",
            "threshold": LESION_THRESHOLD,
            "threshold_rule": "lesion where probability > threshold",
            "component_rule": component_rule,
            "component_rule_meaning": {
                "area": "keep the 8-connected component with the largest area",
                "contour_points": "keep the 8-connected component whose external contour has the most boundary points",
            }[component_rule],
            "fill_holes": True,
            # keep_one: the component rule and hole filling apply; none: every pixel above the threshold.
            # A study's models carry the choice made on validation (their fold's postprocess.json).
            "postprocess": postprocess,
            "mask_values": "0 background, 255 lesion (PNG)",
        },
        "parity": {"max_abs_probability_difference_vs_torch": max_abs_diff, "checked_batch": 2},
        "source_model": {"best_epoch": saved.get("best_epoch"), "seed": saved.get("seed")},
    }


def onnx_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session; threads 0 lets ONNX Runtime decide."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session, batch: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]


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
    Runtime and torch disagree by more than 1e-4 in probability.

    When the study predicted the models with test-time scale selection (their postprocess.json), or
    ``serve_scales`` shrink (a user's --scales), the graph takes other square input sizes: those the
    selection tries where torch takes them, each checked for parity and listed in the sidecar (a size
    ONNX Runtime cannot run, or runs otherwise, leaves the graph at the input size alone, with a
    warning); the sidecar records the study's selection, so that segment applies it as torch does. A
    model file with no such record beside it (a model.pt copied out of its run folder) is exported with
    keep_one at the input size alone, and, with ``note_unrecorded``, a warning says so, as segment's does.
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise SonosegError(
            f"{out}: name the exported model <name>.onnx (its sidecar is written beside it as <name>.onnx.json)"
        )
    members = ensemble_members(model_path)
    loaded = [load_model(member, "cpu") for member in members]
    network, saved = loaded[0]
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
    scales, shrink_above, shrink_found_above = recorded.scales()
    # The study's test-time scale selection predicts each image at smaller sizes too: the graph then takes
    # any square size, so that ONNX Runtime segments as the study did (one fixed size when that fails).
    tried = sorted({f for f in (*scales, *serve_scales) if 0 < f < 1}, reverse=True)
    sides = [size]  # the input size; then the smaller sizes the selection tries, where torch takes them
    sides += [side for side in dict.fromkeys(max(1, round(size * f)) for f in tried) if side != size]
    sides = [sides[0], *(side for side in sides[1:] if _torch_takes(probability, side))]
    torch_sides, any_size = list(sides), False
    if len(sides) > 1:
        try:
            export_probability(probability, size, out, any_size=True)
            max_abs_diff = _parity(probability, out, sides)
            any_size = True
        except SonosegError as exc:
            log.warning("%s: exported at one input size only, without test-time scale selection (%s)", out, exc)
    if not any_size:
        sides = sides[:1]
        export_probability(probability, size, out)
        max_abs_diff = _parity(probability, out, sides)
    sidecar = build_sidecar(saved, out, size, component_rule, max_abs_diff, recorded.postprocess())
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
            "rule": "docs/method.md, 'Scale chosen per image' (sonoseg.serving.infer.scale_adaptive): each image is "
            "also predicted shrunk (area) to these factors of the input size and the prediction whose own lesion "
            "(probability > threshold) has the highest mean probability is kept, resized back (bilinear); with "
            "shrink_above, only images whose lesion at the input size is larger than that quantile of the training "
            "lesion areas are tried smaller, and with shrink_found_above also those whose lesion found smaller is "
            "over that factor x the quantile",
        }

    if any_size:
        sidecar["input"]["shape"] = ["batch", 3, "side", "side"]
        sidecar["input"]["sides"] = sides  # the input sizes checked against torch: the only ones segment runs
        sidecar["output"]["shape"] = ["batch", 1, "side", "side"]
    if len(members) > 1:
        sidecar["ensemble"] = {
            "rule": "the mean of the members' probabilities, computed in the graph; then the threshold",
            "members": [
                {
                    "model": str(member),
                    "network": kept["network"],
                    "seed": kept.get("seed"),
                    "normalization": kept.get("normalization"),
                }
                for member, (_, kept) in zip(members, loaded)
            ],
        }
        sidecar["source_model"] = {"members": len(members)}
    sidecar_path(out).write_text(json.dumps(sidecar, indent=2))
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


def note_unrecorded_choice(model_path, recorded, applied: list[str], command: str) -> None:
    """The warning, for segment and export alike, that a model file has no study choice beside it (a
    model.pt copied out of its run folder): ``applied``, what is used instead (keep_one, the input size
    alone); ``command``, the command that applies it. Nothing when the choice is there."""
    if recorded.choices or not applied:
        return
    log.warning(
        "%s: no postprocess.json recorded beside it (a study's run folder keeps one per fold, fold<k>/, with the "
        "post-processing and test-time scale selection the study predicted with): %s; to %s as the study did, "
        "give `sonoseg %s` its run folder, or a model.pt inside it",
        model_path,
        " and ".join(applied),
        command,
        command,
    )


def sidecar_component_rule(sidecar: dict, rule: str | None, onnx_path: Path, postprocess: str) -> str:
    """The component rule segment applies with an exported model: the one its sidecar records (the one it
    was exported with), unless ``rule`` is given; a given rule that differs is warned of where it applies
    (``postprocess`` keep_one)."""
    recorded = sidecar["postprocessing"]["component_rule"]
    if rule is not None and rule != recorded and postprocess == "keep_one":
        log.warning(
            "%s: its sidecar records component rule %s, but %s was asked for (--component-rule): %s applied, so "
            "the masks may differ from those the sidecar describes",
            onnx_path,
            recorded,
            rule,
            rule,
        )
    return rule or recorded


def served_sides(sidecar: dict) -> list[int]:
    """The square input sizes an exported graph serves: those checked against torch at export (a graph
    exported at one size, or before other sizes were exported: that size alone)."""
    return [int(side) for side in sidecar["input"].get("sides", [sidecar["input"]["resize"]["height"]])]


def study_selection(sidecar: dict) -> dict:
    """The test-time scale selection the study predicted an exported model's members with, as its sidecar
    records it (scales, shrink_above, shrink_found_above, in_this_graph, training_lesion_areas); {} when
    the study's models were predicted at the input size alone."""
    return sidecar.get("postprocessing", {}).get("study_scale_selection") or {}


def _torch_takes(probability: nn.Module, side: int) -> bool:
    """Whether the network runs on a side x side input (its strides may need a multiple of 16 or 32)."""
    try:
        with torch.no_grad():
            probability(torch.zeros(1, 3, side, side))
    except RuntimeError:
        return False
    return True


def _parity(probability: nn.Module, out: Path, sides: list[int]) -> float:
    """The largest |ONNX Runtime - torch| in probability over a random batch of two at each input side
    (the first: the input size). Refused beyond 1e-4, or where ONNX Runtime cannot run the graph."""
    session, worst = onnx_session(out), 0.0
    for side in sides:
        seed = 0 if side == sides[0] else side  # the input size's probe as before the other sizes were checked
        probe = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = probability(probe).numpy()
        try:
            got = run_session(session, probe.numpy())
        except Exception as exc:  # ONNX Runtime's own error types
            raise SonosegError(f"{out}: ONNX Runtime cannot run the graph at {side} px ({exc})") from None
        worst = max(worst, float(np.abs(got - expected).max()))
        if worst > 1e-4:
            raise SonosegError(
                f"{out}: ONNX Runtime differs from torch by {worst:.2e} in probability at {side} px (limit 1e-4)"
            )
    return worst


def read_sidecar(onnx_path: str | Path) -> dict:
    """The sidecar of an exported model, checked against the ONNX file it describes and for what segment
    reads in it (check_sidecar)."""
    onnx_path = Path(onnx_path)
    path = sidecar_path(onnx_path)
    if not path.is_file():
        raise SonosegError(f"{onnx_path}: sidecar {path.name} not found beside it (written by `sonoseg export`)")
    try:
        sidecar = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SonosegError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise SonosegError(f"{path}: not a sonoseg sidecar (format tag missing or different)")
    recorded = _sidecar_value(sidecar, path, "onnx_sha256", str)
    if hashlib.sha256(onnx_path.read_bytes()).hexdigest() != recorded:
        raise SonosegError(f"{onnx_path}: refused: the file does not match its sidecar's sha256 (changed or foreign)")
    check_sidecar(sidecar, path)
    return sidecar


def check_sidecar(sidecar: dict, path: Path) -> None:
    """Refuse, naming the sidecar file and the key, a sidecar (edited by hand, say) that lacks what segment
    reads, holds a value of another kind, contradicts the graph's exported size, or records a
    post-processing other than the one segment applies (threshold LESION_THRESHOLD, the kept lesion's
    holes filled): segment would otherwise write masks other than the sidecar describes."""
    resize = {key: _sidecar_value(sidecar, path, f"input.resize.{key}", int) for key in ("height", "width")}
    if resize["height"] != resize["width"]:
        raise SonosegError(
            f"{path}: input.resize is {resize['height']} x {resize['width']} px; an exported graph takes square "
            "inputs (export the model again for another size)"
        )
    size = resize["height"]
    shape = sidecar["input"].get("shape")  # ["batch", 3, size, size], or "side" for a graph of several sizes
    exported = [shape[2]] if isinstance(shape, list) and len(shape) == 4 and isinstance(shape[2], int) else []
    sides = _sidecar_value(sidecar, path, "input.sides", list) if "sides" in sidecar["input"] else None
    if sides is not None and (not sides or not all(isinstance(s, int) and s > 0 for s in sides)):
        raise SonosegError(f"{path}: input.sides is {sides!r}, not a list of input sizes in pixels")
    exported += sides[:1] if sides else []
    if size < 1 or any(side != size for side in exported):
        raise SonosegError(
            f"{path}: input.resize.height and width say {size} px, but the graph was exported and checked at "
            f"{exported[0] if exported else 'another size'} px (input.shape, input.sides): restore them, or export "
            "the model again at the size wanted (sonoseg export --size)"
        )
    _sidecar_value(sidecar, path, "input.resize.interpolation", str, INTERPOLATIONS)
    if "marks" in sidecar["input"]:  # (a sidecar from before the marks were recorded: kept)
        _sidecar_value(sidecar, path, "input.marks.treatment", str, MARKS)
    _sidecar_value(sidecar, path, "postprocessing.component_rule", str, COMPONENT_RULES)
    if "postprocess" in sidecar["postprocessing"]:  # (a sidecar from before the choice was recorded: keep_one)
        _sidecar_value(sidecar, path, "postprocessing.postprocess", str, POSTPROCESSES)
    threshold = _sidecar_value(sidecar, path, "postprocessing.threshold", (int, float))
    if threshold != LESION_THRESHOLD:
        raise SonosegError(
            f"{path}: postprocessing.threshold is {threshold}, but sonoseg segment thresholds the probability at "
            f"{LESION_THRESHOLD} (as the model was tested): restore {LESION_THRESHOLD}, or threshold the graph's "
            "probability yourself"
        )
    if _sidecar_value(sidecar, path, "postprocessing.fill_holes", bool) is not True:
        raise SonosegError(
            f"{path}: postprocessing.fill_holes is false, but sonoseg segment fills the kept lesion's holes (as the "
            "model was tested): restore true (--postprocess none keeps every pixel above the threshold, holes and all)"
        )
    selection = sidecar["postprocessing"].get("study_scale_selection")
    if selection is not None:
        _sidecar_value(sidecar, path, "postprocessing.study_scale_selection", dict)
        _sidecar_value(sidecar, path, "postprocessing.study_scale_selection.scales", list)


def _sidecar_value(sidecar: dict, path: Path, key: str, kinds, allowed: tuple | None = None):
    """The sidecar's value at the dotted ``key``; missing, of another kind than ``kinds`` or not one of
    ``allowed``: refused, naming the sidecar file and the key."""
    value = sidecar
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(value, dict) or part not in value:
            where = ".".join(parts[:depth])
            if depth and not isinstance(value, dict):
                raise SonosegError(f"{path}: {where} is {value!r}, not a section of keys (it should hold {part})")
            raise SonosegError(
                f"{path}: no {'.'.join(parts[: depth + 1])} (every sidecar `sonoseg export` writes has it; edited by "
                "hand?): restore it, or export the model again"
            )
        value = value[part]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(
            {
                int: "an integer",
                float: "a number",
                str: "a string",
                bool: "true or false",
                list: "a list",
                dict: "a section of keys",
            }[kind]
            for kind in kinds
        )
        raise SonosegError(f"{path}: {key} is {value!r}, not {names}")
    if allowed is not None and value not in allowed:
        raise SonosegError(f"{path}: {key} is {value!r}, not one of {list(allowed)}")
    return value
