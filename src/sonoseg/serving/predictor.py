"""A model ready to serve (Predictor: how to run a batch, how to prepare a new image for it), the image
arrays it takes, the torch backend that makes one of a model.pt (with torch's threads, its absence and its
out-of-memory error) and the ensemble of several. torch is imported when a model.pt is loaded, not with
this module: sonoseg.serving.infer serves an exported graph with ONNX Runtime (onnxruntime_predictor)
without it."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sonoseg.data.preprocess import remove_marks, resize_image
from sonoseg.errors import SonosegError
from sonoseg.serving.modelio import images_to_array, images_to_tensor, lesion_areas_at, load_model

log = logging.getLogger(__name__)

RunBatch = Callable[[np.ndarray], np.ndarray]  # float32 (N, 3, S, S) RGB in [0, 1] -> probability (N, S, S)


@dataclass
class Predictor:
    """A model ready to serve: how to run a batch, and how to resize a new image for it (the input
    size and interpolation it was trained with, unless the user asked for another size).

    ``run`` takes a batch as ``prepare`` makes it, float32 (N, 3, size, size) RGB in [0, 1], and returns the
    lesion probability per pixel, float32 (N, size, size); it raises RuntimeError for an input size the network
    cannot take. No post-processing: probability_to_mask makes the mask, Segmenter the one segment writes."""

    run: RunBatch
    size: int | None
    interpolation: str
    marks: str = "keep"
    provenance: dict | None = None  # the data it was trained on, the sonoseg that trained it
    # Its training images' lesion areas in input pixels (the model file's lesion_areas, scaled to another
    # input size); None for a file from before they were recorded, or an exported graph.
    lesion_areas: tuple[float, ...] | None = None
    network: str | None = None  # the catalog name (several, joined by "+", for an ensemble that mixes them)
    # uint8 RGB images (N, H, W, 3) -> the run's input; the torch backend's through torch (torch_predictor).
    to_input: Callable[[np.ndarray], np.ndarray] = images_to_array

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb``: one image, RGB uint8 (height, width, 3) as sonoseg.data.imageio.read_image gives it. Returns
        the run's input, a batch of one: float32 (1, 3, size, size) in [0, 1], its coloured marks treated and
        resized as the model's training data was. Raises SonosegError for any other array (image_array
        converts grey, RGBA and 16-bit ones as read_image does)."""
        check_rgb(rgb, "Predictor.prepare")
        rgb, _ = remove_marks(rgb, self.marks)
        return self.to_input(resize_image(rgb, self.size, self.interpolation)[None])


# What the image arrays served from Python may be, as sonoseg.data.imageio.read_image reads files: 8- or 16-bit,
# grey, RGB or RGBA; what a message says is taken.
IMAGE_ARRAYS = (
    "uint8 or uint16 arrays (16-bit divided by 257, as segment reads a 16-bit file) shaped (height, width) grey, "
    "(height, width, 3) RGB or (height, width, 4) RGBA, at least 1x1"
)


def described_array(image: object) -> str:
    """How a message names an array given as an image: its dtype and shape (or its type, for no array)."""
    if not isinstance(image, np.ndarray):
        return f"a {type(image).__name__}, not a numpy array"
    return f"an array of dtype {image.dtype} and shape {image.shape}"


def check_rgb(rgb: object, taker: str) -> None:
    """Refuse anything but one RGB uint8 image (height, width, 3) of at least one pixel, naming ``taker`` (what
    was given it) and the array's dtype and shape, before torch or OpenCV fail on it with an axis of their own."""
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise SonosegError(
            f"{taker} takes one RGB uint8 image shaped (height, width, 3); it was given {described_array(rgb)} "
            f"(sonoseg.serving.Segmenter takes {IMAGE_ARRAYS})"
        )
    if not rgb.size:
        raise SonosegError(f"{taker}: an empty image, shaped {rgb.shape}: an image has at least one pixel")


def image_array(image: object) -> np.ndarray:
    """``image`` as read_image would give it from a file that held these pixels: RGB uint8 (height, width, 3).

    Taken are the arrays read_image converts a file's pixels from, converted by its rules (16-bit divided by
    257, floor; grey repeated into three channels; RGBA's alpha dropped, the colours kept as they are): see
    IMAGE_ARRAYS. Raises SonosegError naming the dtype and shape given for anything else: a float or bool
    array (no agreed range: scale it to uint8 first), another integer type, another number of dimensions or
    channels, or an image without pixels."""
    if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16):
        why = " (a float image has no agreed range: scale it to uint8 first)" if _is_float(image) else ""
        raise SonosegError(f"image: {described_array(image)}{why}; sonoseg takes {IMAGE_ARRAYS}")
    if image.ndim not in (2, 3) or image.ndim == 3 and image.shape[2] not in (3, 4):
        raise SonosegError(f"image: {described_array(image)}: not one image's pixels; sonoseg takes {IMAGE_ARRAYS}")
    if not image.size:
        raise SonosegError(f"image: {described_array(image)}: an empty image; sonoseg takes {IMAGE_ARRAYS}")
    from sonoseg.data.imageio import as_rgb8

    return as_rgb8(image, "rgb")[0]  # read_image's own conversion, for pixels given in RGB order


def _is_float(image: object) -> bool:
    return isinstance(image, np.ndarray) and image.dtype.kind in "fc"


def one_channel(probabilities: np.ndarray, model_path: str | Path) -> np.ndarray:
    """The lesion probability per pixel, (batch, height, width), from a network's (batch, 1, height,
    width). Any other shape (a network of the user's own with two channels, say) is refused, not read
    by its first channel: training refuses such networks, but a model file may come from elsewhere."""
    if probabilities.ndim != 4 or probabilities.shape[1] != 1:
        raise SonosegError(
            f"{model_path}: the network's output is shaped {probabilities.shape}, not (batch, 1, height, width)"
        )
    return probabilities[:, 0]


def torch_predictor(
    model_path: str | Path, device: str = "auto", size: int | None = None, option: str = "device"
) -> Predictor:
    """The Predictor of one model file, run by torch.

    ``model_path``: a model.pt (sonoseg-model-v1); ``device``: where it computes (auto, cpu, cuda,
    cuda:<index>), named in messages as ``option`` (the argument, or the study's train.device that set it);
    ``size``: an input size other than the one it was trained at (None: that one).
    Its ``run`` takes float32 (N, 3, size, size) in [0, 1] and returns the lesion probability,
    float32 (N, size, size). Raises SonosegError for a path that is no file (a run folder's ensemble:
    sonoseg.serving.Segmenter), a file that is no sonoseg model or does not load safely, and a device
    sonoseg does not compute on or cannot see."""
    import torch

    from sonoseg.serving.device import select_device
    from sonoseg.serving.probability_model import ProbabilityModel

    if Path(model_path).is_dir():
        raise SonosegError(
            f"{model_path}: a folder, not a model file (a run folder's ensemble, as segment serves it: "
            "sonoseg.serving.Segmenter)"
        )
    if not Path(model_path).exists():
        raise SonosegError(f"{model_path}: no such model file")
    dev = select_device(device, option)
    model, saved = load_model(model_path, dev)
    wrapped = ProbabilityModel(model, saved.get("normalization")).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return one_channel(wrapped(torch.from_numpy(batch).to(dev)).cpu().numpy(), model_path)

    def to_input(images: np.ndarray) -> np.ndarray:
        """In the memory layout torch chooses its kernels by, as the backend always prepared images."""
        return images_to_tensor(images).numpy()

    return Predictor(
        run,
        size or saved.get("input_size"),
        saved["input_interpolation"],
        saved["input_marks"],
        saved.get("provenance"),
        lesion_areas_at(saved, size),
        saved.get("network"),
        to_input,
    )


def ensemble(predictors: list[Predictor], members: list[Path]) -> Predictor:
    """One predictor whose probability is the mean of the members'. The members must prepare images
    alike (input size, interpolation, marks): one that differs is named."""
    first = predictors[0]
    for predictor, member in zip(predictors[1:], members[1:]):
        mine = (predictor.size, predictor.interpolation, predictor.marks)
        theirs = (first.size, first.interpolation, first.marks)
        if mine != theirs:
            raise SonosegError(
                f"{member}: input (size, interpolation, marks) {mine} differs from {members[0]}'s {theirs}: "
                "an ensemble's members must see the same input"
            )
    if len(predictors) == 1:
        return first
    runs = [predictor.run for predictor in predictors]
    trained_on: dict[str | None, list[Path]] = {}
    for predictor, member in zip(predictors, members):
        trained_on.setdefault((predictor.provenance or {}).get("dataset_fingerprint"), []).append(member)
    if len(trained_on) > 1:  # each dataset with the members trained on it: the odd one out is named
        log.warning(
            "the ensemble's members were trained on data with %d different fingerprints: %s",
            len(trained_on),
            "; ".join(
                f"{(fingerprint or 'unknown')[:12]}: {', '.join(map(str, files))}"
                for fingerprint, files in trained_on.items()
            ),
        )
    areas = [p.lesion_areas for p in predictors]
    networks = list(dict.fromkeys(p.network for p in predictors if p.network))
    if len(networks) > 1:  # a run folder holds one run; these were put together by hand
        log.warning("the ensemble's members are of %d networks (%s)", len(networks), ", ".join(networks))
    # Members adopted after a change to files they do not read name the data they were trained under.
    at_training = sorted({(p.provenance or {}).get("dataset_fingerprint_at_training") for p in predictors} - {None})
    provenance = first.provenance
    if at_training:
        provenance = {**(first.provenance or {}), "dataset_fingerprint_at_training": ", ".join(at_training)}
    return Predictor(
        lambda batch: np.mean([run(batch) for run in runs], axis=0),
        first.size,
        first.interpolation,
        first.marks,
        provenance,
        None if any(a is None for a in areas) else tuple(sorted(a for member in areas for a in member)),
        "+".join(networks) or None,
        first.to_input,
    )


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch's thread count for the process set to ``threads`` while the block runs, and put back after it
    (0: left as it is): a notebook that segmented with one thread is not left slowed. ONNX Runtime takes its
    threads per session (sidecar.onnx_session)."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def require_torch(model_path, backend: str) -> None:
    """A line saying what to do where torch is needed and cannot be imported: the torch backend, and ONNX
    Runtime given a model.pt or a run folder (read, and exported, with torch); a model.onnx needs none.
    A model path that is not there is named as such first: the torch it would have needed is not the news."""
    if not Path(model_path).exists():
        raise SonosegError(f"{model_path}: no such model file or run folder")
    try:
        import torch  # noqa: F401
    except ImportError:
        needs = "--backend torch" if backend == "torch" else f"{model_path}: a model.pt or run folder (exported first)"
        raise SonosegError(
            f"{needs} needs PyTorch, which this Python cannot import: install it, or export the model where it is "
            "(sonoseg export --model MODEL --out model.onnx) and serve model.onnx with --backend onnxruntime"
        ) from None


# How torch and ONNX Runtime say that a network's strides do not fit an input size (not a device's error).
SIZE_ERROR = re.compile(r"size|dimension|shape", re.IGNORECASE)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (a RuntimeError); none can be without torch loaded."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)
