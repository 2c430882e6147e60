"""Prediction with post-processing (docs/method.md, "Post-processing"): probability at the training
size, resized bilinearly to the original size, thresholded at 0.5, one lesion kept, holes filled.
torch is imported by the torch backend alone: an exported graph is served with ONNX Runtime without it."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from sonoseg.data.preprocess import cache_interpolation, cache_marks, load_cache
from sonoseg.errors import SonosegError
from sonoseg.serving import interpolate, sidecar
from sonoseg.serving.mask_files import write_png
from sonoseg.serving.modelio import (
    MODEL_FORMAT,
    images_to_tensor,
    lesion_areas_at,
    load_checked,
)
from sonoseg.serving.options import (
    COMPONENT_RULES,
    LESION_THRESHOLD,
    POSTPROCESSES,
    SIZE_REFUSALS,
    first_line,
    shrinks,
    smaller_factors,
    smaller_sides,
)
from sonoseg.serving.predictor import (
    Predictor,
    RunBatch,
    ensemble,
    one_channel,
    out_of_memory,
    torch_predictor,
)

log = logging.getLogger(__name__)


def keep_one_lesion(mask: np.ndarray, rule: str = "area") -> np.ndarray:
    """Keep one connected component (8-connectivity) and fill its holes.

    rule "area" keeps the largest area (our default); "contour_points" keeps the component whose
    external contour has the most boundary points, as the authors' code did.
    """
    if rule not in COMPONENT_RULES:
        raise SonosegError(f"predict.component_rule: {rule!r} is not one of {COMPONENT_RULES}")
    mask = mask.astype(bool)
    if not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count > 1:
        if rule == "area":
            keep = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        else:
            points = []
            for label in range(1, count + 1):
                contours, _ = cv2.findContours(
                    (labels == label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
                )
                points.append(max(len(c) for c in contours))
            keep = 1 + int(np.argmax(points))
        mask = labels == keep
    return ndimage.binary_fill_holes(mask)


def probability_to_mask(
    probability: np.ndarray, height: int, width: int, rule: str = "area", postprocess: str = "keep_one"
) -> np.ndarray:
    """The mask at the original size: the probability resized (bilinear), thresholded at 0.5 and post-processed.

    ``probability``: one image's lesion probability (S, S) at the model's input size (a Predictor's run's);
    ``height``, ``width``: the image's size; ``rule``: the component rule keep_one applies (COMPONENT_RULES);
    ``postprocess``: keep_one or none (POSTPROCESSES; a study's recorded choice is resolved by Segmenter, not
    here). Returns a bool array (height, width), True for lesion. Raises SonosegError for another rule or
    post-processing."""
    resized = cv2.resize(probability.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return postprocessed(resized > LESION_THRESHOLD, rule, postprocess)


def postprocessed(mask: np.ndarray, rule: str, postprocess: str) -> np.ndarray:
    if postprocess not in POSTPROCESSES:
        raise SonosegError(f"postprocess: {postprocess!r} is not one of {POSTPROCESSES}")
    return keep_one_lesion(mask, rule) if postprocess == "keep_one" else mask.astype(bool)


def write_mask(
    probability: np.ndarray, height: int, width: int, rule: str, path: Path, postprocess: str = "keep_one"
) -> Path:
    """Post-process a probability map to the original size and save it as a 0/255 PNG (mask_files.write_png)."""
    mask = probability_to_mask(probability, height, width, rule, postprocess)
    return write_png(mask.astype(np.uint8) * 255, path)


def check_cache(arrays: dict, data_path, predictor: Predictor, model_name, reliance: bool = False) -> None:
    """Refuse a cache prepared otherwise than the model's training data (interpolation, coloured marks),
    but for the one named exception ``reliance``: a model trained with the marks kept, tested on the
    same images without them (docs/marks_and_floors.md)."""
    resized = cache_interpolation(arrays)
    if resized != predictor.interpolation:
        raise SonosegError(
            f"{data_path} was resized {resized}, but {model_name} was trained on images "
            f"resized {predictor.interpolation}: rebuild the cache with the model's preprocess.interpolation"
        )
    if reliance and (predictor.marks, cache_marks(arrays)) not in (("keep", "inpaint"), ("keep", "unmarked")):
        raise SonosegError(
            f"reliance: tests a model trained with marks kept on images without them (inpainted, or the phantom "
            f"rendered without its calipers); {model_name} was "
            f"trained with marks {predictor.marks} and {data_path} has them {cache_marks(arrays)}"
        )
    if cache_marks(arrays) != predictor.marks and not reliance:
        raise SonosegError(
            f"{data_path} has its coloured marks {cache_marks(arrays)}, but {model_name} was trained on images "
            f"with marks {predictor.marks}: rebuild the cache with the model's preprocess.marks"
        )


def in_batches(run: RunBatch, images: np.ndarray, batch_size: int = 8):
    """(start, probabilities) of ``images`` (N, 3, S, S) a batch at a time."""
    for start in range(0, len(images), batch_size):
        yield start, run(images[start : start + batch_size])


def model_files(model_path: str | Path | list[str | Path]) -> list[Path]:
    return [Path(m) for m in model_path] if isinstance(model_path, (list, tuple)) else [Path(model_path)]


def model_predictor(model_path: str | Path | list[str | Path], device: str = "auto", option="device") -> Predictor:
    """A model file, or several (their ensemble: the mean of their probabilities), loaded with the model
    wrapper `segment` and export use, on ``device`` (auto, cpu, cuda, cuda:<index>). Returns a Predictor whose
    run gives the probability alone: no post-processing, test-time augmentation or scale selection (the masks
    segment writes, for a model file, a run folder or an exported graph: Segmenter). Raises SonosegError for
    a path that is no model file, a file that is no sonoseg model, members that see different inputs, and a
    device sonoseg does not compute on or cannot see (torch_predictor, which names it as ``option``)."""
    members = model_files(model_path)
    return ensemble([torch_predictor(member, device, option=option) for member in members], members)


def model_label(model_path: str | Path | list[str | Path]) -> str:
    """How messages name a model file or an ensemble of them."""
    members = model_files(model_path)
    return str(members[0]) if len(members) == 1 else f"{members[0]} (and the ensemble's other members)"


def predict(
    model_path: str | Path | list[str | Path],
    data_path: str | Path,
    samples: pd.DataFrame,
    outdir: str | Path,
    rule: str = "area",
    device: str = "auto",
    batch_size: int = 8,
    reliance: bool = False,
    tta: bool = False,
    postprocess: str = "keep_one",
    tta_outdir: str | Path | None = None,
    predictor: Predictor | None = None,
    scales: tuple[float, ...] = (1.0,),
    shrink_above: float | None = None,
    shrink_found_above: float | None = None,
) -> int:
    """Write <outdir>/<sample_id>.png (0/255) at each sample's original size.

    The cache must be prepared as the model's training data was: a cache whose coloured marks were
    treated otherwise is refused, except for the one named exception ``reliance``: a model trained
    with the marks kept, tested on the same images with them inpainted, to measure how much it relied
    on them (docs/marks_and_floors.md). ``tta``: each probability is the mean over the image and its
    horizontal mirror (flip_averaged). Several model files (a run's seeds in one fold): their ensemble,
    the mean of their probabilities before thresholding (ensemble). ``tta_outdir``: the flip-averaged
    masks written there as well, in the same pass (the plain probability is half of the average, so
    the pair costs two forward passes and one process, not three and two; with ``scales`` each variant
    chooses its own size, and a size both try costs them two passes: passes_made_once). ``predictor``: the models
    already loaded (model_predictor's), when one process predicts several test sets with them.
    ``scales``: test-time scale selection (scale_adaptive), applied to the plain and the flip-averaged
    probability alike; ``shrink_above``: its size-aware rule (area_limit), ``shrink_found_above`` the
    rule's second trigger (scale_adaptive's found_above)."""
    predictor = predictor or model_predictor(model_path, device, "train.device")  # the study's setting
    model_path = model_label(model_path)
    arrays = load_cache(data_path)
    check_cache(arrays, data_path, predictor, model_path, reliance)
    if tta and tta_outdir:
        raise SonosegError("predict: tta_outdir writes the flip-averaged masks beside the plain ones; drop tta")
    images = images_to_tensor(arrays["images"]).numpy()
    sizes = samples.set_index("sample_id")[["height", "width"]]
    outdirs = [Path(outdir)] + ([Path(tta_outdir)] if tta_outdir else [])
    for folder in outdirs:
        folder.mkdir(parents=True, exist_ok=True)
    ids = [str(s) for s in arrays["sample_ids"]]
    missing = [s for s in ids if s not in sizes.index]
    if missing:
        raise SonosegError(f"{data_path}: samples {missing[:5]} are not in the manifest")

    selected = scale_selection(predictor, scales, shrink_above, shrink_found_above, model_path)
    # With the flip-averaged twin each variant chooses its own scale, and both ask for the plain pass of
    # the images they try at a size (half of the average): made once per batch, not twice.
    run = passes_made_once(predictor.run) if tta_outdir else predictor.run
    plain_run = selected(run)
    averaged_run = selected(flip_averaged(run))

    def plain_and_averaged(batch: np.ndarray) -> list[np.ndarray]:
        """The probabilities each output folder gets: plain (or averaged, with tta), then averaged."""
        if tta:
            return [averaged_run(batch)]
        if not tta_outdir:
            return [plain_run(batch)]
        run.forget()
        return [plain_run(batch), averaged_run(batch)]

    for start, probabilities in in_batches(plain_and_averaged, images, batch_size):
        for folder, probability in zip(outdirs, probabilities):
            for sample_id, prob in zip(ids[start : start + batch_size], probability):
                height, width = (int(v) for v in sizes.loc[sample_id])
                write_mask(prob, height, width, rule, folder / f"{sample_id}.png", postprocess)
    return len(ids)


# ----------------------------------------------------------------------------- serving new images
# (A model ready to serve, Predictor, the torch backend and ensembles: sonoseg.serving.predictor.)


def onnxruntime_predictor(
    model_path: str | Path, threads: int = 0, size: int | None = None, scales: tuple[float, ...] = ()
) -> Predictor:
    """An exported model.onnx (with its sidecar), or a model.pt exported now to a temporary file (a
    graph that also takes the sizes its study's scale selection, or ``scales``, tries). The graph runs
    only at the sizes checked against torch at export: another is refused as a size the network cannot
    take, which scale selection leaves out. An exported model.onnx is served without torch."""
    model_path = Path(model_path)
    if model_path.suffix.lower() == ".onnx":
        described = sidecar.read_sidecar(model_path)
        session = sidecar.onnx_session(model_path, threads)
        graph_side = session.get_inputs()[0].shape[2]  # an int for a graph of one size, a name for any size
        if isinstance(graph_side, int) and graph_side != described["input"]["resize"]["height"]:
            raise SonosegError(
                f"{sidecar.sidecar_path(model_path)}: input.resize.height says "
                f"{described['input']['resize']['height']} px, but the graph takes {graph_side} px: restore it, or "
                "export the model again at the size wanted"
            )
        # The training lesion areas the size-aware rule reads, recorded with the study's selection.
        areas = sidecar.study_selection(described).get("training_lesion_areas")
    else:
        from sonoseg.serving import export  # a model.pt: exported now, with torch

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            # (segment has said already when the model's study choice is not beside it)
            described = export.export(model_path, onnx_path, size=size, serve_scales=scales, note_unrecorded=False)
            session = sidecar.onnx_session(onnx_path, threads)
        areas = lesion_areas_at(load_checked(model_path, MODEL_FORMAT, metadata_only=True), size)
    resize = described["input"]["resize"]
    marks = described["input"].get("marks", {}).get("treatment", "keep")
    sides = sidecar.served_sides(described)

    def run(batch: np.ndarray) -> np.ndarray:
        if batch.shape[-1] not in sides:
            raise RuntimeError(f"the graph was checked against torch at {sides} px only")
        try:
            return one_channel(sidecar.run_session(session, batch), model_path)
        except SonosegError:
            raise
        except Exception as exc:  # ONNX Runtime's own error types
            raise RuntimeError(first_line(exc)) from exc

    return Predictor(
        run,
        int(resize["height"]),
        resize["interpolation"],
        marks,
        described.get("provenance"),
        None if areas is None else tuple(areas),
        described.get("network"),
    )


def flip_mean(run: RunBatch, batch: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """The mean of ``plain`` (the batch's probability) and of the batch's mirror image's, mirrored back
    (along the width, the last axis)."""
    mirrored = run(np.ascontiguousarray(batch[..., ::-1]))[..., ::-1]
    return (plain + mirrored) / 2


def passes_made_once(run: RunBatch) -> RunBatch:
    """``run``, remembering each output until its ``forget()``: an input it has seen (the same shape and
    bytes) is answered from memory, not run again. The plain and the flip-averaged variant of a batch ask
    for the same plain passes."""
    made: dict[tuple, np.ndarray] = {}

    def once(batch: np.ndarray) -> np.ndarray:
        key = (batch.shape, batch.dtype.str, hashlib.blake2b(np.ascontiguousarray(batch).tobytes()).digest())
        if key not in made:
            made[key] = run(batch)
        return made[key]

    once.forget = made.clear
    return once


def flip_averaged(run: RunBatch) -> RunBatch:
    """Horizontal-flip test-time augmentation: the mean of the probability of the batch and of its
    mirror image, mirrored back."""
    return lambda batch: flip_mean(run, batch, run(batch))


def predicted_lesion_pixels(probabilities: np.ndarray) -> np.ndarray:
    """Per image of a (N, S, S) batch: how many pixels it calls lesion (> 0.5)."""
    return (probabilities > LESION_THRESHOLD).sum(axis=(1, 2))


def lesion_confidence(probabilities: np.ndarray) -> np.ndarray:
    """Per image of a (N, S, S) batch: the mean probability over the pixels it calls lesion (> 0.5);
    0 for an image with none."""
    lesion = probabilities > LESION_THRESHOLD
    counts = lesion.sum(axis=(1, 2))
    totals = (probabilities.astype(np.float64) * lesion).sum(axis=(1, 2))  # exact for equal maps of any size
    return np.where(counts > 0, totals / np.maximum(counts, 1), 0.0)


# Input sizes each model could not take, by its label, for the life of the process: a network is tried
# at a size once, and warned about once, however many test sets and twins one job predicts.
_REFUSED_SIZES: dict[str, set[int]] = {}


def scale_adaptive(
    run: RunBatch,
    factors: tuple[float, ...],
    label: str = "the model",
    area_limit: float | None = None,
    found_above: float | None = None,
) -> RunBatch:
    """Test-time scale selection (docs/method.md, "Scale chosen per image"): each image is also
    predicted shrunk to ``factor`` x its input size (area resizing), for every factor below 1, and the
    prediction kept is the one whose own lesion has the highest mean probability (lesion_confidence),
    resized back to the input size (bilinear). A tie keeps the larger size; an image with no lesion at
    any size keeps the input size's. No label is read: the rule serves a scanner whose lesions look
    larger than the training set's.

    ``area_limit`` (input pixels; area_limit() makes it from the training lesions a model file records):
    the size-aware rule. Without ``found_above``, only an image whose lesion predicted at the input size
    (its pixels above 0.5) is larger than the limit is tried smaller (and keeps the most confident of all
    its sizes, the input size included); every other image keeps the input size, as a lesion of the
    scale the network learned needs no shrinking.

    ``found_above`` (a factor, at least 1; with ``area_limit`` only): the rule's second trigger. Every
    image is then tried smaller, and one whose lesion at the input size is not over the limit still
    keeps its most confident size when the lesion found there, measured at the input size, is larger
    than ``found_above`` x the limit: a network that finds only part of a lesion larger than any it
    learned finds it whole once shrunk, while a lesion of the training scale, a little over the limit at
    a smaller size, is left at the input size.

    A size the network cannot take (its downsampling needs a multiple of 16 or 32) is left out for that
    network, with one warning; factors of 1 or more, and factors that round to a size already tried,
    add nothing."""
    if any(not f > 0 for f in factors):
        raise SonosegError(f"predict.scales: factors must be > 0, got {list(factors)}")
    if found_above is not None and not found_above >= 1:
        raise SonosegError(
            f"{label}: shrink_found_above (--shrink-found-above) must be a factor of at least 1, got {found_above}"
        )
    found_limit = None if area_limit is None or found_above is None else area_limit * found_above
    smaller = smaller_factors(factors)
    refused = _REFUSED_SIZES.setdefault(label, set())

    def scaled(batch: np.ndarray) -> np.ndarray:
        size = batch.shape[-1]
        at_input = run(batch)
        over_limit = None if area_limit is None else predicted_lesion_pixels(at_input) > area_limit
        if over_limit is None or found_limit is not None:
            shrunk = np.arange(len(batch))
        else:  # only the images whose lesion is larger than the limit are tried smaller
            shrunk = np.flatnonzero(over_limit)
            if not len(shrunk):
                return at_input
        best = at_input[shrunk]
        best_confidence = lesion_confidence(best)
        images = batch[shrunk]
        for side in smaller_sides(size, smaller):
            if side in refused:
                continue
            small = interpolate.area(images, side)
            try:
                probability = run(small)
            except SIZE_REFUSALS as exc:  # the network's strides do not divide this size, or its own check
                if out_of_memory(exc):
                    raise  # memory, not the network's strides: never a reason to drop a size
                refused.add(side)
                said = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError) else str(exc)
                log.warning("%s cannot take a %d-px input (%s): that size left out", label, side, said[:80])
                continue
            confidence = lesion_confidence(probability)
            back = interpolate.bilinear(probability, size)
            better = confidence > best_confidence
            best = np.where(better[:, None, None], back, best)
            best_confidence = np.where(better, confidence, best_confidence)
        if found_limit is not None:  # the second trigger: the lesion found at the kept size is far over the limit
            found_large = predicted_lesion_pixels(best) > found_limit
            best = np.where((over_limit[shrunk] | found_large)[:, None, None], best, at_input[shrunk])
        chosen = at_input.copy()
        chosen[shrunk] = best
        return chosen

    return scaled if smaller else run


def area_limit(predictor: Predictor, scales: tuple[float, ...], shrink_above: float | None, label: str) -> float | None:
    """The size-aware scale selection's limit (scale_adaptive): the ``shrink_above`` quantile of the
    lesion areas of the model's training images (of all members' for an ensemble), in input pixels;
    None when the rule is off or the scales shrink nothing (then there is nothing to decide). A model
    file from before the areas were recorded is refused by name."""
    if shrink_above is None or not shrinks(scales):
        return None
    if not 0 < shrink_above <= 1:
        raise SonosegError(f"{label}: shrink_above must be a quantile in (0, 1], got {shrink_above}")
    if predictor.lesion_areas is None:
        raise SonosegError(
            f"{label}: the model file records no training lesion areas (trained before they were recorded, or "
            "an exported graph): the size-aware scale selection (predict.shrink_above, --shrink-above) needs "
            "them; retrain it, or leave shrink_above unset (where the study recorded it with the models, segment "
            "with --scales 1 for the input size alone)"
        )
    if not predictor.lesion_areas:
        raise SonosegError(f"{label}: no training image had a lesion; the size-aware scale selection has no scale")
    return float(np.quantile(predictor.lesion_areas, shrink_above))


@dataclass(frozen=True)
class ScaleSelection:
    """A model's test-time scale selection with its size-aware limit worked out (scale_selection):
    called on a run, that run with the selection (scale_adaptive). One limit serves every run of the
    model, the plain and the flip-averaged alike, as it depends on the model's training lesions only."""

    factors: tuple[float, ...]
    label: str
    area_limit: float | None
    found_above: float | None

    def __call__(self, run: RunBatch) -> RunBatch:
        return scale_adaptive(run, self.factors, self.label, self.area_limit, self.found_above)

    def input_sizes(self, size: int) -> list[int]:
        """The input size and the smaller sizes the selection tries with a ``size``-px model, less those the
        network could not take so far (a size refused once is left out for the model: scale_adaptive)."""
        refused = _REFUSED_SIZES.get(self.label, set())
        return [size] + [side for side in smaller_sides(size, smaller_factors(self.factors)) if side not in refused]


def scale_selection(
    predictor: Predictor,
    scales: tuple[float, ...],
    shrink_above: float | None,
    shrink_found_above: float | None,
    label: str,
) -> ScaleSelection:
    """The scale selection every prediction with ``predictor`` applies (``scales``: scale_adaptive's
    factors, ``shrink_above``: its size-aware rule, area_limit, ``shrink_found_above``: the rule's second
    trigger), so that predict, segment and the validation choice of the post-processing make their
    probabilities alike."""
    return ScaleSelection(tuple(scales), label, area_limit(predictor, scales, shrink_above, label), shrink_found_above)
