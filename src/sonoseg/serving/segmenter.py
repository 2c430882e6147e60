"""`sonoseg segment` and its Python face: Segmenter loads a model file, a run folder's ensemble or an exported
graph once and segments arrays as segment does; segment_images serves image files and folders through one,
writing each mask beside a record of the run (output_record). The inference it serves (the predictors, the
flip averaging, the scale selection, the post-processing) is sonoseg.serving.infer's."""

from __future__ import annotations

import logging
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sonoseg.data.imageio import MAX_IMAGE_PIXELS, read_image
from sonoseg.errors import SonosegError
from sonoseg.serving import image_warnings, sidecar
from sonoseg.serving.infer import flip_averaged, onnxruntime_predictor, probability_to_mask, scale_selection, write_mask
from sonoseg.serving.mask_files import RECORD_NAME, FolderHeld, check_found, check_writable, mask_files, name_too_long
from sonoseg.serving.modelio import (
    MODEL_FORMAT,
    ensemble_members,
    load_checked,
    recorded_choice,
    training_fingerprint,
    warn_of_another_size,
)
from sonoseg.serving.options import (
    BACKENDS,
    COMPONENT_RULES,
    POSTPROCESSES,
    backend_for,
    check_device_name,
    first_line,
    shrinks,
)
from sonoseg.serving.predictor import (
    SIZE_ERROR,
    Predictor,
    ensemble,
    image_array,
    out_of_memory,
    require_torch,
    torch_predictor,
    torch_threads,
)

log = logging.getLogger(__name__)


@dataclass
class SegmentResult:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    # An image segmented all the same, and why its mask may be wrong (image_warnings).
    warnings: dict[Path, list[str]] = field(default_factory=dict)
    replaced: int = 0  # of the written masks, those that replaced one an earlier run wrote
    not_segmented: list[dict] = field(default_factory=list)  # the folders' other files, each with why (the record's)


# What segment's post-processing option takes: recorded, the choice recorded beside a study's models.
POSTPROCESS_OPTIONS = (*POSTPROCESSES, "recorded")


def check_segment_options(backend: str, rule: str | None, threads: int, device: str, postprocess: str, prefix: str):
    """Refuse an option segment (or Segmenter) does not take, before any file is read, naming it as the caller
    gave it: ``prefix`` "--" for the command line's options, "" for Python's keyword arguments."""
    if backend not in BACKENDS:
        raise SonosegError(f"unknown backend {backend!r}; one of {BACKENDS}")
    if rule is not None and rule not in COMPONENT_RULES:
        raise SonosegError(f"component rule {rule!r} is not one of {COMPONENT_RULES}")
    if postprocess not in POSTPROCESS_OPTIONS:
        raise SonosegError(f"{prefix}postprocess: {postprocess!r} is not one of {POSTPROCESS_OPTIONS}")
    # A NumPy integer is a count (a notebook's np.int64); True is not one, though Python calls bool an int.
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 0:
        raise SonosegError(
            f"{prefix}threads: {threads!r} is not a number of threads (1 or more; 0: the backend chooses)"
        )
    check_device_name(device, f"{prefix}device")


class Segmenter:
    """A trained model loaded once to segment images from Python, as `sonoseg segment` does them:
    ``Segmenter(model)(image)`` is the mask segment writes for ``image`` saved as a PNG (docs/deploy.md,
    "From Python"). segment_images serves each image through one.

    ``model_path``: a model.pt, a run folder (``results/<study>/runs/<network>/``: the ensemble of every
    fold<k>/seed<s>/model.pt under it) or an exported model.onnx. The options are segment_images' (its
    docstring says what each does): ``postprocess`` "recorded" (the default) applies the post-processing
    recorded beside a study's models (fold<k>/postprocess.json, an exported model's sidecar), else keep_one;
    ``scales`` None the scale selection recorded with them, else the input size alone.
    Raises SonosegError for an option it does not take, a model path that is not there, or a file that is no
    model; loading logs what is served, as segment does."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        tta: bool = False,
        postprocess: str = "recorded",
        rule: str | None = None,
        scales: tuple[float, ...] | None = None,
        shrink_above: float | None = None,
        shrink_found_above: float | None = None,
        size: int | None = None,
        backend: str | None = None,
        threads: int = 0,
        option_prefix: str = "",  # how messages name the options: "--" for segment's command line
    ):
        backend = backend_for(model_path, backend)
        check_segment_options(backend, rule, threads, device, postprocess, option_prefix)
        threads = int(threads)  # torch and ONNX Runtime take a Python int
        if backend == "torch" or Path(model_path).suffix.lower() != ".onnx":
            require_torch(model_path, backend)
        if backend == "torch":
            from sonoseg.serving.device import select_device

            device = str(select_device(device, f"{option_prefix}device"))
        self.label = str(model_path)  # how messages name the model
        self.threads = threads if backend == "torch" else 0  # ONNX Runtime's session took its own

        def one(member: Path) -> Predictor:
            if backend == "torch":
                return torch_predictor(member, device, size)
            if member.suffix.lower() == ".onnx" and size:
                raise SonosegError(
                    f"{member}: an exported model has its input size; {option_prefix}size does not apply"
                )
            return onnxruntime_predictor(member, threads, size, scales or ())

        members = ensemble_members(model_path)
        exported = members[0].suffix.lower() == ".onnx"  # its sidecar records its post-processing; it has one size
        if not exported:  # read first: a file that is no model is refused before any note about its choice or size
            trained = load_checked(members[0], MODEL_FORMAT, metadata_only=True).get("input_size")
            warn_of_another_size(model_path, trained, size, "segment")
        # The choice recorded beside a study's models, each fold's file read once for both settings it gives.
        recorded = recorded_choice(members) if not exported and (scales is None or postprocess == "recorded") else None
        if recorded is not None:
            sidecar.note_unrecorded_choice(
                model_path,
                recorded,
                [
                    *(["keep_one"] if postprocess == "recorded" else []),
                    *(["the input size alone"] if scales is None else []),
                ],
                "segment",
            )
        if exported:  # the selection the study predicted the models with, as the sidecar records it
            described = sidecar.read_sidecar(members[0])
            selection = sidecar.study_selection(described)
            if scales is not None and shrinks(scales) and len(sidecar.served_sides(described)) == 1:
                raise SonosegError(
                    f"{model_path}: this graph was exported at one input size; {option_prefix}scales needs one "
                    "exported from a run whose study selected scales, or the model.pt "
                    f"({option_prefix}backend onnxruntime exports it for the scales)"
                )
            if scales is None:
                scales = tuple(selection.get("scales", [1.0]))
                shrink_above, shrink_found_above = selection.get("shrink_above"), selection.get("shrink_found_above")
                if shrinks(scales) and not selection.get("in_this_graph"):
                    log.warning(
                        "%s: the study predicted these models with scales %s, but this graph was exported at one input "
                        "size (the network did not export at others, or an earlier sonoseg exported it): that size "
                        "alone is used",
                        model_path,
                        list(scales),
                    )
                    scales, shrink_above, shrink_found_above = (1.0,), None, None
        elif scales is None:
            scales, shrink_above, shrink_found_above = recorded.scales() if recorded else ((1.0,), None, None)
        predictor = ensemble([one(member) for member in members], members)
        if tta:
            predictor.run = flip_averaged(predictor.run)
        selected = scale_selection(predictor, scales, shrink_above, shrink_found_above, str(model_path))
        predictor.run = selected(predictor.run)
        limit = selected.area_limit
        option = postprocess  # the record names the option given and the post-processing it came to
        if postprocess == "recorded" and exported:  # an exported model: its sidecar's
            postprocess = described["postprocessing"].get("postprocess", "keep_one")
        elif postprocess == "recorded":
            postprocess = recorded.postprocess()
        rule = sidecar.sidecar_component_rule(described, rule, members[0], postprocess) if exported else rule or "area"
        # An exported ensemble is one graph that averages its members inside: count them, not the graph.
        in_graph = len(described.get("ensemble", {}).get("members", [])) if exported else 0
        log.info(
            "%s: %s%s, averaged probabilities%s%s; post-processing %s",
            model_path,
            f"an exported ensemble of {in_graph} models" if in_graph else f"{len(members)} model(s)",
            "" if len(members) == 1 else f" ({', '.join(str(m.relative_to(model_path)) for m in members)})",
            "; horizontal-flip test-time augmentation" if tta else "",
            f"; scale chosen per image among {sorted({f for f in scales if f < 1} | {1.0}, reverse=True)}"
            + ("" if limit is None else f", kept smaller only when its lesion is over {limit:.0f} input pixels")
            + (
                ""
                if limit is None or shrink_found_above is None
                else f" or found over {shrink_found_above * limit:.0f} at the smaller size"
            )
            if shrinks(scales)
            else "",
            postprocess + (f" (component rule {rule})" if postprocess == "keep_one" else ""),
        )
        if not predictor.size:
            raise SonosegError(f"{model_path}: no input size stored; pass {option_prefix}size")
        trained_on = predictor.provenance or {}
        at_training = trained_on.get("dataset_fingerprint_at_training")
        log.info(
            "%s: %s (sonoseg %s, commit %s)",
            model_path,
            f"made for data with fingerprint {trained_on.get('dataset_fingerprint')}, trained under {at_training} "
            "(the same training and validation images; its study's data changed elsewhere since)"
            if at_training
            else "trained on data with fingerprint "
            + trained_on.get("dataset_fingerprint", "unknown (a model file from before data fingerprints)"),
            trained_on.get("sonoseg_version", "unknown"),
            trained_on.get("commit", "unknown"),
        )
        # The paths as given, the folder they are relative to, and what names each member beyond its path.
        settings = {"model": str(model_path), "members": [str(m) for m in members]}
        # Read for segment's record alone (member_ids): a Python caller reads no member again, needs no working folder.
        self.member_ids = lambda: (
            [described.get("onnx_sha256")] if exported else list(map(training_fingerprint, members))
        )
        # Serving never autocasts: whatever a model trained in, its masks are computed in fp32 (said in the record).
        settings |= {"backend": backend, "precision": "fp32", "tta": tta}
        settings |= {"device": device if backend == "torch" else "cpu", "threads": threads}
        settings |= {"input_size": predictor.size}
        settings |= {"scales": list(scales), "shrink_above": shrink_above, "shrink_found_above": shrink_found_above}
        settings |= {"input_sizes": selected.input_sizes(predictor.size)}
        settings |= {"postprocess_option": option, "postprocess": postprocess, "component_rule": rule}
        self.predictor, self.selection, self.rule, self.postprocess = predictor, selected, rule, postprocess
        self.settings = settings  # what segment's record says of the model and the options (output_record)

    def probability(self, rgb: np.ndarray) -> np.ndarray:
        """The lesion probability of one RGB uint8 image (H, W, 3), float32 (S, S) at the model's input size S,
        with the test-time augmentation and scale selection applied. Raises SonosegError for another array
        (Predictor.prepare) and for an input size the network's strides cannot take."""
        try:
            return self.predictor.run(self.predictor.prepare(rgb))[0]
        except RuntimeError as exc:  # the network's strides and the input size (--size) may not fit
            said = first_line(exc, 160)
            if out_of_memory(exc) or not SIZE_ERROR.search(said):
                raise
            raise SonosegError(
                f"{self.label}: the network cannot take a {self.predictor.size}-px input ({said})"
            ) from exc

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The lesion mask of ``image``, bool (H, W) at its size: segment's mask file of it, True where 255.

        ``image``: an array as sonoseg.data.imageio.read_image gives a file's pixels (RGB uint8 (H, W, 3)), or as
        it converts them (image_array: grey (H, W), RGBA (H, W, 4), 16-bit). Raises SonosegError for any other
        array (float, bool, empty, another shape), naming its dtype and shape and what is taken."""
        rgb = image_array(image)
        with torch_threads(self.threads):
            return probability_to_mask(self.probability(rgb), *rgb.shape[:2], self.rule, self.postprocess)


def segment_images(
    model_path: str | Path,
    images: list[str | Path],
    outdir: str | Path,
    rule: str | None = None,
    device: str = "auto",
    size: int | None = None,
    backend: str | None = None,
    threads: int = 0,
    progress: bool = False,
    tta: bool = False,
    postprocess: str = "recorded",
    scales: tuple[float, ...] | None = None,
    shrink_above: float | None = None,
    shrink_found_above: float | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> SegmentResult:
    """Segment new images with a trained model: <outdir>/<image stem>_mask.png at each image's size.

    ``model_path`` is one model file, or a run folder (``results/<study>/runs/<network>/``: every
    fold<k>/seed<s>/model.pt under it) whose members' probabilities are averaged before thresholding
    and post-processing, as nnU-Net ensembles its folds. ``tta``: each model's probability is the mean
    of the image's and its horizontal mirror's (mirrored back); depth, the vertical axis, is physical
    in ultrasound and never flipped. ``postprocess``: keep_one, none, or ``recorded``: the choice made on
    validation data and recorded beside a study's models (fold<k>/postprocess.json), else keep_one.
    ``rule``: the component rule keep_one applies; None: an exported model's sidecar's (the one it was
    exported with), else area (a rule given that differs from the sidecar's is warned of).
    ``scales``: test-time scale selection (scale_adaptive), after the flip averaging, with
    ``shrink_above`` its size-aware rule (area_limit) and ``shrink_found_above`` the rule's second trigger
    (scale_adaptive's found_above); None: the scales and rule recorded with a study's
    models (the ones the study predicted them with), else the input size alone.

    backend "torch" reads a model.pt; "onnxruntime" reads a model.onnx with its sidecar (or exports a
    model.pt first); None: the one the model's name implies (options.backend_for). The input size is the
    one the model was trained at, unless ``size`` is given.
    An image that cannot be read is reported (in the result and the log) and the others go on; a folder
    stands for its image files (mask_files.images_in); one over ``max_pixels`` pixels is refused, and one
    whose mask's name the file system cannot hold fails. Each run is appended to <outdir>/segment_runs.json
    (output_record: the model, options, and each image's mask); a file where a mask would go that the record
    does not list is refused before any model is loaded (output_record.refuse_unrecorded).
    """
    backend = backend_for(model_path, backend)
    check_segment_options(backend, rule, threads, device, postprocess, "--")
    from sonoseg.serving.output_record import RunRecord, refuse_unrecorded

    not_taken: list[dict] = []  # the folders' files that are not images it segments, each with why: recorded
    planned = mask_files(images, Path(outdir), not_taken)  # before any model is loaded: a clash is the user's
    check_found([image for image, _ in planned])  # a mistyped path, said now rather than after the model loads
    refuse_unrecorded(Path(outdir), planned)  # a file segment did not write, such as a hand-drawn mask: never replaced
    check_writable(Path(outdir))
    selection = {"scales": scales, "shrink_above": shrink_above, "shrink_found_above": shrink_found_above}
    options = {"device": device, "tta": tta, "postprocess": postprocess, "rule": rule, "size": size, **selection}
    outdir = Path(outdir)  # made, and a file written there, before the model loaded (check_writable)
    result = SegmentResult()
    # The folder held first, before the model loads (no other run writes masks there until this one's record is
    # done; a second run into it is refused at once, not once a large ensemble has loaded), then the record.
    with FolderHeld(outdir):
        segmenter = Segmenter(model_path, backend=backend, threads=threads, option_prefix="--", **options)
        settings = {**segmenter.settings, "cwd": os.getcwd(), "member_ids": segmenter.member_ids()}
        settings |= {"max_pixels": max_pixels, "not_segmented": not_taken}
        with RunRecord(outdir, planned, result, settings) as record, torch_threads(segmenter.threads):
            segment_each(planned, segmenter, result, max_pixels, progress, record.replaced)
            record.settings["input_sizes"] = segmenter.selection.input_sizes(segmenter.predictor.size)  # less refused
    result.replaced = len({Path(path) for path in result.written} & record.replaced)
    result.not_segmented = not_taken
    return result


def segment_each(planned, segmenter: Segmenter, result: SegmentResult, max_pixels, progress, listed) -> None:
    """segment_images' loop: each (image, mask file) of ``planned`` read, segmented by ``segmenter`` and
    written; an image that cannot be read is added to ``result.failed`` and the others go on, its message
    naming the mask at its place that is kept, an earlier run's (``listed``: the masks there when the run
    began, which the folder's record lists: refuse_unrecorded lets no other file stay at a mask's place)."""
    from tqdm import tqdm

    predictor = segmenter.predictor
    for path, out in tqdm(planned, desc="segment", unit="image", disable=not progress):
        unwritable = name_too_long(out)
        try:
            if unwritable:  # failed as an unreadable image is, before it is read: the others go on
                raise SonosegError(f"{path}: {unwritable}")
            decoded = read_image(path, max_pixels)
        except SonosegError as exc:
            kept = f" ({out} is kept as it was: an earlier run's mask, which {RECORD_NAME} lists)"
            stale = kept if out in listed else ""
            log.error("%s%s", exc, stale)
            result.failed.append((path, f"{exc}{stale}"))
            continue
        warnings = image_warnings.warnings_for(decoded, predictor.size, predictor.marks)
        for warning in warnings:
            log.warning("%s: %s", path, warning)
        if warnings:  # kept with the image's entry in the record
            result.warnings[path] = warnings
        rgb = decoded.pixels
        probability = segmenter.probability(rgb)  # the path Segmenter's call takes, to the same mask
        height, width = rgb.shape[:2]
        try:
            result.written.append(write_mask(probability, height, width, segmenter.rule, out, segmenter.postprocess))
        except SonosegError as exc:  # a mask that cannot be written stops the run; the record names why for its image
            result.failed.append((path, str(exc)))
            raise
