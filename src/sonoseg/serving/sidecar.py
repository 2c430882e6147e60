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

from sonoseg.data import marks
from sonoseg.data.options import INTERPOLATIONS, MARKS
from sonoseg.data.preprocess import INTERPOLATION_MEANING
from sonoseg.errors import SonosegError
from sonoseg.serving.options import COMPONENT_RULES, LESION_THRESHOLD, POSTPROCESSES, first_line

log = logging.getLogger(__name__)

# A format-2 sidecar has every key export writes (postprocessing.study_scale_selection null where the study
# predicted at the input size alone), and its graph holds GRAPH_RECORD: a key missing is a damaged sidecar. A
# format-1 sidecar (an earlier sonoseg's) is read as that sonoseg wrote it: the keys LATER_IN_FORMAT_1 may be
# missing, its meanings are worded as that sonoseg worded them (not compared), and its graph holds no record.
SIDECAR_FORMAT = "sonoseg-onnx-sidecar/2"
OLDER_FORMATS = ("sonoseg-onnx-sidecar/1",)
LATER_IN_FORMAT_1 = (
    "input.orientation",
    "input.resize.interpolation_meaning",
    "input.marks",
    "postprocessing.postprocess",
    "postprocessing.study_scale_selection",
)
INPUT_NAME = "image"
OUTPUT_NAME = "probability"

# What `sonoseg segment` does, in the words its sidecar states it: key -> (the value export writes, what segment
# does). Segment does so whatever the sidecar says, so a sidecar that states another value (edited by hand)
# describes masks other than those segment writes: refused, naming the key. Worded so since the first format.
SEGMENT_DOES = {
    "input.name": (INPUT_NAME, f"feeds the graph's input named {INPUT_NAME!r}"),
    "input.dtype": ("float32", "feeds the graph float32 pixels"),
    "input.layout": ("NCHW", "feeds the graph batch x channel x height x width arrays"),
    "input.channel_order": ("RGB", "feeds the channels in RGB order, as the model was trained"),
    "input.resize.keep_aspect_ratio": (
        False,
        "resizes each image to the square input size without keeping its aspect ratio, as the model was trained",
    ),
    "input.scale": ("uint8 pixel / 255, giving [0, 1]", "divides each 8-bit pixel by 255"),
    "input.grayscale_or_rgba": (
        "convert to 3-channel RGB (gray repeated; alpha dropped); 16-bit: integer-divide by 257 first "
        "(floor, value // 257)",
        "reads a gray image as RGB (gray repeated), drops an alpha channel and divides 16-bit pixels by 257 "
        "(floor: value // 257)",
    ),
    "input.orientation": (
        "as viewers show the image: its EXIF orientation tag applied first (exif_transpose)",
        "turns each image by its EXIF orientation tag before anything else",
    ),
    "input.normalization_in_graph": (True, "feeds [0, 1] RGB and leaves the input normalization to the graph"),
    "output.name": (OUTPUT_NAME, f"reads the graph's output named {OUTPUT_NAME!r}"),
    "output.meaning": (
        "lesion probability (sigmoid applied in the graph)",
        "reads the graph's output as the lesion probability, the sigmoid applied",
    ),
    "postprocessing.resize_to_original": (
        "bilinear (probability map to the original height x width)",
        "resizes the probability map bilinearly (OpenCV INTER_LINEAR) to the image's height x width",
    ),
    "postprocessing.threshold": (
        LESION_THRESHOLD,
        f"thresholds the probability at {LESION_THRESHOLD} (as the model was tested; to threshold otherwise, "
        "threshold the graph's probability yourself)",
    ),
    "postprocessing.threshold_rule": (
        "lesion where probability > threshold",
        "marks lesion where the probability is over the threshold (>: a probability of exactly the threshold is "
        "background)",
    ),
    "postprocessing.fill_holes": (
        True,
        "fills the kept lesion's holes (as the model was tested; --postprocess none keeps every pixel above the "
        "threshold, holes and all)",
    ),
    "postprocessing.mask_values": ("0 background, 255 lesion (PNG)", "writes each mask as a PNG of 0 and 255"),
}

# The values the export fixes, from the model (its training images' interpolation and marks, its normalization,
# an ensemble's members) or the sizes it exported and checked, and records in the graph too (ONNX metadata_props
# under GRAPH_RECORD, covered by the sidecar's onnx_sha256): nothing else could tell a sidecar edited to another
# (a normalization the graph does not apply). Segment applies the interpolation and marks the sidecar states, but
# one other than the model's would serve the graph otherwise than the model was trained and tested (torch's
# segment reads the model's own): refused as the threshold is. Key -> what segment does with it.
GRAPH_RECORD = "sonoseg.exported_with"
GRAPH_FACTS = {
    "input.shape": "sonoseg segment feeds the graph batches of that shape",
    "output.shape": "sonoseg segment reads a probability map of that shape",
    "input.resize.interpolation": "sonoseg segment resizes each image as the model's training images were",
    "input.marks.treatment": "sonoseg segment treats the coloured marks as the model's training images had them",
    "input.normalization": "the graph applies that one itself (sonoseg segment feeds it [0, 1] RGB)",
    "input.sides": "sonoseg segment runs the graph at the sizes checked against torch at export alone",
    "ensemble.members": "the graph averages those members",
    "network": "sonoseg segment names the network in its log and in each mask's record (output_record)",
}
# Facts graphs record since a later sonoseg than their format's first: a graph exported before holds none, and
# its sidecar's value is taken as it stands.
RECORDED_SINCE_LATER = {"network"}

# The kinds of the study's scale selection's settings, as segment reads them (scales: a list, always there).
SELECTION_KINDS = {
    "shrink_above": (int, float, type(None)),
    "shrink_found_above": (int, float, type(None)),
    "in_this_graph": bool,
    "training_lesion_areas": (list, type(None)),
}
_MISSING = object()  # what _at gives for a key the sidecar does not have

# The words the sidecar spells out the component rules, an ensemble and the study's scale selection in.
COMPONENT_RULE_MEANING = {
    "area": "keep the 8-connected component with the largest area",
    "contour_points": "keep the 8-connected component whose external contour has the most boundary points",
}
ENSEMBLE_RULE = "the mean of the members' probabilities, computed in the graph; then the threshold"
SCALE_SELECTION_RULE = (
    "docs/method.md, 'Scale chosen per image' (sonoseg.serving.infer.scale_adaptive): each image is "
    "also predicted shrunk (area) to these factors of the input size and the prediction whose own lesion "
    "(probability > threshold) has the highest mean probability is kept, resized back (bilinear); with "
    "shrink_above, only images whose lesion at the input size is larger than that quantile of the training "
    "lesion areas are tried smaller, and with shrink_found_above also those whose lesion found smaller is "
    "over that factor x the quantile"
)


def marks_meaning(treatment: str) -> str:
    """input.marks.meaning: what a user's own preprocessing does to the coloured marks for ``treatment``."""
    return {
        "keep": "feed the image as it is, marks included",
        "inpaint": f"mark pixels: max - min over the RGB channels > {marks.CHROMA_THRESHOLD}, and "
        f"> {marks.LOW_CHROMA_THRESHOLD} within {marks.HALO_REACH} px of those; dilated by "
        "max(1, round(max(height, width) / 320)) px; inpainted with OpenCV's cv2.inpaint "
        "(INPAINT_TELEA, radius: the dilation + 2), other pixels unchanged, before resizing "
        "(sonoseg.data.marks.inpaint_marks; docs/marks_and_floors.md)",
    }[treatment]


def graph_record(sidecar: dict) -> dict:
    """The GRAPH_FACTS a sidecar states, as the export records them in its graph (those it states)."""
    stated = {key: _at(sidecar, key) for key in GRAPH_FACTS}
    return {key: value for key, value in stated.items() if value is not _MISSING}


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
    if Path(model_path).is_dir():  # the run folder was given: the advice below would be to give it
        log.warning(
            "%s: no postprocess.json in its folds (a study's run folder keeps one per fold, fold<k>/, with the "
            "post-processing and test-time scale selection the study predicted with; this one was copied without "
            "them, or made before studies recorded them): %s",
            model_path,
            " and ".join(applied),
        )
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
    tag = sidecar.get("format") if isinstance(sidecar, dict) else None
    if tag not in (SIDECAR_FORMAT, *OLDER_FORMATS):
        raise SonosegError(
            f"{path}: not a sonoseg sidecar (format tag {tag!r}, not one of {[SIDECAR_FORMAT, *OLDER_FORMATS]}): "
            "export the model again with this sonoseg"
        )
    recorded = _sidecar_value(sidecar, path, "onnx_sha256", str)
    graph = onnx_path.read_bytes()
    if hashlib.sha256(graph).hexdigest() != recorded:
        raise SonosegError(f"{onnx_path}: refused: the file does not match its sidecar's sha256 (changed or foreign)")
    check_sidecar(sidecar, path, _exported_with(graph, onnx_path) if sidecar["format"] == SIDECAR_FORMAT else None)
    return sidecar


def check_sidecar(sidecar: dict, path: Path, exported_with: dict | None = None) -> None:
    """Refuse, naming the sidecar file and the key, a sidecar (edited by hand, say) that lacks what segment
    reads, holds a value of another kind, contradicts the graph's exported size or, with ``exported_with`` (the
    graph's own record, GRAPH_RECORD), what the graph was exported with, or states processing other than what
    segment does (SEGMENT_DOES; the meanings of the interpolation, marks and component rule it applies):
    segment would otherwise write masks other than the sidecar describes. A format-1 sidecar is checked as far
    as its sonoseg wrote it (LATER_IN_FORMAT_1)."""
    strict = sidecar.get("format") == SIDECAR_FORMAT

    def required(key: str) -> bool:
        return strict or not any(key == later or key.startswith(f"{later}.") for later in LATER_IN_FORMAT_1)

    resize = {key: _sidecar_value(sidecar, path, f"input.resize.{key}", int) for key in ("height", "width")}
    if resize["height"] != resize["width"]:
        raise SonosegError(
            f"{path}: input.resize is {resize['height']} x {resize['width']} px; an exported graph takes square "
            "inputs (export the model again for another size)"
        )
    size = resize["height"]
    # The input shape, ["batch", 3, size, size] or "side" for a graph of several sizes: the sidecar's, and the one
    # the graph records (for a format-2 sidecar).
    shapes = [sidecar["input"].get("shape"), (exported_with or {}).get("input.shape")]
    exported = [
        shape[2] for shape in shapes if isinstance(shape, list) and len(shape) == 4 and isinstance(shape[2], int)
    ]
    sides = _sidecar_value(sidecar, path, "input.sides", list) if "sides" in sidecar["input"] else None
    if sides is not None and (not sides or not all(isinstance(s, int) and s > 0 for s in sides)):
        raise SonosegError(f"{path}: input.sides is {sides!r}, not a list of input sizes in pixels")
    exported += sides[:1] if sides else []
    if size < 1 or any(side != size for side in exported):
        raise SonosegError(
            f"{path}: input.resize.height and width say {size} px, but the graph was exported and checked at "
            f"{next((side for side in exported if side != size), 'another size')} px (input.shape, input.sides): "
            "restore them, or export the model again at the size wanted (sonoseg export --size)"
        )
    interpolation = _sidecar_value(sidecar, path, "input.resize.interpolation", str, INTERPOLATIONS)
    treatment = None
    if required("input.marks") or "marks" in sidecar["input"]:
        treatment = _sidecar_value(sidecar, path, "input.marks.treatment", str, MARKS)
    rule = _sidecar_value(sidecar, path, "postprocessing.component_rule", str, COMPONENT_RULES)
    if required("postprocessing.postprocess") or "postprocess" in sidecar["postprocessing"]:
        _sidecar_value(sidecar, path, "postprocessing.postprocess", str, POSTPROCESSES)
    for key, (value, does) in SEGMENT_DOES.items():
        _refuse_unless(sidecar, path, key, value, f"sonoseg segment {does}", required(key))
    if exported_with is not None:
        for key, does in GRAPH_FACTS.items():
            stated, recorded = _at(sidecar, key), exported_with.get(key, _MISSING)
            if recorded is _MISSING and key in RECORDED_SINCE_LATER:
                continue
            if stated != recorded:
                was = "none" if recorded is _MISSING else json.dumps(recorded, ensure_ascii=False)
                raise SonosegError(
                    f"{path}: {_shown(key, stated)}, but its graph was exported with {was} (the graph's own record, "
                    f"{GRAPH_RECORD}): {does}; "
                    + ("remove it" if recorded is _MISSING else f"restore {was}")
                    + ", or export the model again"
                )
    selection = _at(sidecar, "postprocessing.study_scale_selection")
    if selection is not _MISSING or required("postprocessing.study_scale_selection"):
        selection = _sidecar_value(sidecar, path, "postprocessing.study_scale_selection", (dict, type(None)))
    if isinstance(selection, dict):  # applied as stated: each of its settings of the kind segment reads
        _sidecar_value(sidecar, path, "postprocessing.study_scale_selection.scales", list)
        for key, kinds in SELECTION_KINDS.items():
            if key in selection:
                _sidecar_value(sidecar, path, f"postprocessing.study_scale_selection.{key}", kinds)
    if not strict:  # a format-1 sidecar's meanings are worded as its sonoseg worded them
        return
    # What the sidecar states in words of settings segment applies: the words of those settings.
    meant = {
        "input.resize.interpolation_meaning": (
            INTERPOLATION_MEANING[interpolation],
            f"sonoseg segment resizes by input.resize.interpolation, {json.dumps(interpolation)}",
        ),
        "input.marks.meaning": (
            marks_meaning(treatment),
            f"sonoseg segment treats the marks by input.marks.treatment, {json.dumps(treatment)}",
        ),
        "postprocessing.component_rule_meaning": (
            COMPONENT_RULE_MEANING[rule],
            f"sonoseg segment keeps a component by postprocessing.component_rule, {json.dumps(rule)} (unless "
            "--component-rule says otherwise)",
        ),
    }
    if "ensemble" in sidecar:
        meant["ensemble.rule"] = (ENSEMBLE_RULE, "sonoseg segment thresholds the mean the graph computes")
    if isinstance(selection, dict) and "rule" in selection:
        meant["postprocessing.study_scale_selection.rule"] = (
            SCALE_SELECTION_RULE,
            "sonoseg segment selects the scale per image by sonoseg.serving.infer.scale_adaptive",
        )
    for key, (value, does) in meant.items():
        _refuse_unless(sidecar, path, key, value, does, required=True)


def _at(sidecar: dict, key: str):
    """The sidecar's value at the dotted ``key``; _MISSING where it has none."""
    value = sidecar
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _shown(key: str, value) -> str:
    """'<key> is <value as JSON>', or '<key> is missing'."""
    return f"{key} is missing" if value is _MISSING else f"{key} is {json.dumps(value, ensure_ascii=False)}"


def _refuse_unless(sidecar: dict, path: Path, key: str, expected, does: str, required: bool) -> None:
    """Refuse a sidecar whose value at ``key`` is not ``expected`` (of its very kind: true is not 1), naming the
    key, the value and what segment does instead (``does``, after "but"); a missing key is refused where
    ``required``."""
    value = _at(sidecar, key)
    if value is _MISSING:
        if required:
            _present(sidecar, path, key)
        return
    if type(value) is not type(expected) or value != expected:
        raise SonosegError(
            f"{path}: {_shown(key, value)}, but {does}: restore {json.dumps(expected, ensure_ascii=False)}"
        )


def _exported_with(graph: bytes, onnx_path: Path) -> dict:
    """The graph's own record of what it was exported with (GRAPH_RECORD in its ONNX metadata_props)."""
    try:
        record = json.loads(_onnx_metadata(graph)[GRAPH_RECORD])
    except KeyError:
        record = None
    except ValueError:  # a protobuf cut short or foreign, or a record that is no JSON (JSONDecodeError)
        raise SonosegError(f"{onnx_path}: not an ONNX file sonoseg exported (its contents cannot be read)") from None
    if not isinstance(record, dict):
        raise SonosegError(
            f"{onnx_path}: holds no record of what it was exported with ({GRAPH_RECORD}), which every graph of a "
            f"{SIDECAR_FORMAT} sidecar holds: export the model again"
        )
    return record


def _onnx_metadata(graph: bytes) -> dict[str, str]:
    """An ONNX file's metadata_props, as ONNX Runtime reads them (what serving has: the onnx package is not
    among what a machine without PyTorch installs to serve, docs/deploy.md); the graph is loaded unoptimized,
    only to be read. A file that is no ONNX model raises ValueError."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's own error types (InvalidProtobuf, Fail, ...)
        raise ValueError(first_line(exc)) from None
    return dict(session.get_modelmeta().custom_metadata_map)


def _sidecar_value(sidecar: dict, path: Path, key: str, kinds, allowed: tuple | None = None):
    """The sidecar's value at the dotted ``key``; missing, of another kind than ``kinds`` or not one of
    ``allowed``: refused, naming the sidecar file and the key."""
    value = _present(sidecar, path, key)
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
                type(None): "null",
            }[kind]
            for kind in kinds
        )
        raise SonosegError(f"{path}: {key} is {value!r}, not {names}")
    if allowed is not None and value not in allowed:
        raise SonosegError(f"{path}: {key} is {value!r}, not one of {list(allowed)}")
    return value


def _present(sidecar: dict, path: Path, key: str):
    """The sidecar's value at the dotted ``key``; missing (or a section on the way that is none): refused, naming
    the sidecar file and the key."""
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
    return value
