"""What serving reads of an exported model (sonoseg.serving.export writes it): the sidecar beside
model.onnx, checked against the graph and for what `segment` reads in it, and the ONNX Runtime session
that runs the graph. Torch-free: a deploy machine serves an exported model with ONNX Runtime, NumPy,
OpenCV and SciPy, without PyTorch (docs/deploy.md)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from sonoseg.data.options import INTERPOLATIONS, MARKS
from sonoseg.errors import SonosegError
from sonoseg.serving.options import COMPONENT_RULES, LESION_THRESHOLD, POSTPROCESSES

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "sonoseg-onnx-sidecar/1"
INPUT_NAME = "image"
OUTPUT_NAME = "probability"


def sidecar_path(onnx_path: str | Path) -> Path:
    """model.onnx -> model.onnx.json"""
    return Path(f"{onnx_path}.json")


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
