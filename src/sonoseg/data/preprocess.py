"""Preprocess once per study: decode, resize to the training size, cache one array file per split,
so that training never decodes an image per step."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from sonoseg.data.imageio import read_image, read_mask
from sonoseg.data.layouts import first_names
from sonoseg.data.options import CACHE_MARKS, DEFAULT_INTERPOLATION, INTERPOLATIONS, MARKS, UNMARKED
from sonoseg.errors import SonosegError

log = logging.getLogger(__name__)

# How an image is shrunk (or grown) to the network's input: config preprocess.interpolation.
# "bilinear" is OpenCV's default (cv2.INTER_LINEAR), the authors' resize: each output pixel blends the
# 2 x 2 input pixels nearest to it, so shrinking by much more than 2x skips most pixels (at 32 x 32 from
# a 646-pixel-wide image, about 4 of every 270) and keeps the speckle at full strength. "area"
# (cv2.INTER_AREA) averages every input pixel under the output pixel instead.
INTERPOLATION_FLAGS = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}  # each of options.INTERPOLATIONS
INTERPOLATION_MEANING = {  # for an exported model's sidecar: what a user's own resize must do
    "bilinear": "OpenCV cv2.INTER_LINEAR (cv2.resize's default): from the 2 x 2 nearest pixels, no anti-aliasing",
    "area": "OpenCV cv2.INTER_AREA: each output pixel the mean of the input pixels it covers (when shrinking)",
}


def interpolation_flag(interpolation: str) -> int:
    if interpolation not in INTERPOLATIONS:
        raise SonosegError(f"preprocess.interpolation: {interpolation!r} is not one of {INTERPOLATIONS}")
    return INTERPOLATION_FLAGS[interpolation]


def resize_image(image: np.ndarray, size: int, interpolation: str = DEFAULT_INTERPOLATION) -> np.ndarray:
    """To size x size, aspect not preserved (as the paper). Training and serving both use it."""
    return cv2.resize(image, (size, size), interpolation=interpolation_flag(interpolation))


def resize_sample(
    image: np.ndarray, mask: np.ndarray, size: int, interpolation: str = DEFAULT_INTERPOLATION
) -> tuple[np.ndarray, np.ndarray]:
    """The image as resize_image; the mask resized the same way as a 0/1 float map, then > 0.5."""
    mask = cv2.resize(mask.astype(np.float32), (size, size), interpolation=interpolation_flag(interpolation)) > 0.5
    return resize_image(image, size, interpolation), mask.astype(np.uint8)


def check_marks(marks: str) -> str:
    if marks not in MARKS:
        raise SonosegError(f"preprocess.marks: {marks!r} is not one of {MARKS}")
    return marks


def remove_marks(rgb: np.ndarray, marks: str) -> tuple[np.ndarray, int]:
    """The image as the network sees it before resizing: with ``inpaint``, its coloured marks inpainted
    (sonoseg.data.marks, docs/marks_and_floors.md); the number of pixels that changed."""
    if check_marks(marks) == "keep":
        return rgb, 0
    from sonoseg.data.marks import inpaint_marks

    return inpaint_marks(rgb)


def build_cache(
    samples: pd.DataFrame,
    size: int,
    out_path: str | Path,
    interpolation: str = DEFAULT_INTERPOLATION,
    marks: str = "keep",
    dataset_fingerprint: str = "unknown",
    unmarked: tuple[str | Path, str | Path] | None = None,
) -> int:
    """Write images (N, size, size, 3) uint8 RGB, masks (N, size, size) uint8 {0,1}, sample ids, the
    interpolation they were resized with and how their coloured marks were treated (training stores
    both in the model file, so serving prepares new images alike), and each image's count of
    inpainted mark pixels; and the fingerprint of the dataset they came from (training stores it in the
    model file: sonoseg.data.provenance).

    ``marks`` "unmarked" (the phantom's reliance test): each image is read from ``unmarked`` = (the
    dataset root, a folder of the same images rendered without calipers) at its path under the root,
    and kept as it is; the masks are the manifest's."""
    interpolation_flag(interpolation)  # refuse unknown settings before decoding any image
    if marks == UNMARKED:
        if unmarked is None:
            raise SonosegError(
                "preprocess: marks 'unmarked' reads the phantom rendered without calipers; give its folder"
            )
        root, rendered = Path(unmarked[0]).resolve(), Path(unmarked[1])
    elif marks not in CACHE_MARKS or unmarked is not None:
        check_marks(marks)
        raise SonosegError(f"preprocess: a folder of unmarked images goes with marks {UNMARKED!r}, not {marks!r}")
    images = np.zeros((len(samples), size, size, 3), dtype=np.uint8)
    masks = np.zeros((len(samples), size, size), dtype=np.uint8)
    mark_pixels = np.zeros(len(samples), dtype=np.int64)
    vanished: list[str] = []
    for i, row in enumerate(samples.itertuples()):
        if marks == UNMARKED:
            image = Path(row.image).resolve()
            if not image.is_relative_to(root):
                raise SonosegError(f"{row.image}: not under the dataset root {root} its unmarked twin mirrors")
            rgb = read_image(rendered / image.relative_to(root)).pixels
        else:
            rgb, mark_pixels[i] = remove_marks(read_image(row.image).pixels, marks)
        truth = read_mask(row.mask).pixels
        images[i], masks[i] = resize_sample(rgb, truth, size, interpolation)
        if truth.any() and not masks[i].any():
            vanished.append(str(row.sample_id))
    if vanished:
        # Such an image trains and validates as one without a lesion (its test score, at its own size, is right).
        log.warning(
            "%d of %d images: the lesion vanishes at %dx%d (it covers under half of every input pixel), so the "
            "network learns them as images without a lesion: %s; a larger preprocess.size keeps them",
            len(vanished),
            len(samples),
            size,
            size,
            first_names(vanished),
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "wb") as handle:  # a file handle keeps numpy from appending .npz
        np.savez(
            handle,
            images=images,
            masks=masks,
            sample_ids=samples["sample_id"].to_numpy(dtype=str),
            interpolation=np.array(interpolation),
            marks=np.array(marks),
            mark_pixels=mark_pixels,
            dataset_fingerprint=np.array(dataset_fingerprint),
        )
    return len(samples)


def load_cache(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        return {k: arrays[k] for k in arrays.files}


def cache_interpolation(arrays: dict[str, np.ndarray]) -> str:
    """The interpolation a cache was resized with (caches from before the option: bilinear)."""
    return str(arrays["interpolation"]) if "interpolation" in arrays else DEFAULT_INTERPOLATION


def cache_marks(arrays: dict[str, np.ndarray]) -> str:
    """How a cache's images had their coloured marks treated (caches from before the option: kept)."""
    return str(arrays["marks"]) if "marks" in arrays else "keep"


def cache_dataset_fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """The fingerprint of the dataset a cache was made from (caches from before it: unknown)."""
    return str(arrays["dataset_fingerprint"]) if "dataset_fingerprint" in arrays else "unknown"


# A cache's arrays that no training reads (cache_content_digest): where the images came from, not what they are.
CONTENT_NOT_TRAINED = ("dataset_fingerprint", "sample_ids", "mark_pixels")


def cache_content_digest(*paths: str | Path) -> str:
    """What the caches hold that a training reads, in order: their arrays' names, types, shapes and bytes,
    less CONTENT_NOT_TRAINED (the dataset's fingerprint, the images' ids and their counts of inpainted
    pixels, which no training reads). A training's fingerprint reads this
    (sonoseg.training.reuse.run_fingerprint), so that a file changed elsewhere in the dataset (a test
    image's mask corrected) or an image renamed leaves the trainings whose training and validation images
    and masks came out the same as they were: they adopt their finished copies."""
    digest = hashlib.sha256()
    for path in paths:
        with np.load(path, allow_pickle=False) as arrays:  # one array in memory at a time
            for name in sorted(set(arrays.files) - set(CONTENT_NOT_TRAINED)):
                array = np.ascontiguousarray(arrays[name])
                digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
                digest.update(memoryview(array).cast("B"))  # its bytes, not a copy of them
        digest.update(b"\0cache\0")
    return digest.hexdigest()


# ImageNet statistics (RGB, on [0, 1] inputs): used when a network starts from ImageNet weights.
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def normalize_tensor(x, normalization: dict | None):
    """(x - mean) / std per RGB channel on an (N, 3, H, W) tensor in [0, 1]; identity for None.

    The normalization a model was trained with is stored in its model.pt ("normalization") and
    applied by training, prediction, `segment` and export alike.
    """
    if not normalization:
        return x
    mean = x.new_tensor(normalization["mean"]).view(1, -1, 1, 1)
    std = x.new_tensor(normalization["std"]).view(1, -1, 1, 1)
    return (x - mean) / std
