"""Reading images and lesion masks the same way in every stage (ingest, preprocess, evaluate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sonoseg.errors import SonosegError

try:  # OpenCV prints its own warnings for unreadable files; we report them ourselves.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # pragma: no cover - older OpenCV builds
    pass

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MASK_SEPARATOR = "|"  # several mask files of one image (BUSI's NAME_mask_1.png) are merged


@dataclass
class Decoded:
    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)


def problem_with_file(path: Path) -> str | None:
    """A reason this file can't be an image, or None. Cheap checks before decoding."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if size == 0:
        return "empty file (0 bytes)"
    with open(path, "rb") as handle:
        head = handle.read(8)
        handle.seek(max(size - 12, 0))
        tail = handle.read()
    if head.startswith(b"\x89PNG") and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk at the end)"
    if head.startswith(b"\xff\xd8") and not tail.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker)"
    return None


def _decode(path: Path) -> np.ndarray:
    problem = problem_with_file(path)
    if problem:
        raise SonosegError(f"{path}: {problem}")
    pixels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise SonosegError(f"{path}: not a readable image")
    return pixels


def read_image(path: str | Path) -> Decoded:
    """An RGB uint8 image. 16-bit, grayscale and RGBA images are converted, and the note says so.

    Channel order: RGB (the authors' OpenCV code fed BGR; the networks learn either, we use RGB).
    """
    path = Path(path)
    pixels = _decode(path)
    notes = []
    if pixels.dtype == np.uint16:
        pixels = (pixels // 257).astype(np.uint8)  # full 16-bit range onto 8 bits
        notes.append("converted_16bit")
    elif pixels.dtype != np.uint8:
        raise SonosegError(f"{path}: unsupported pixel type {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
        notes.append("converted_grayscale")
    elif pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
        notes.append("converted_rgba")
    else:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return Decoded(pixels, notes)


def read_mask(paths: str | Path | list[Path]) -> Decoded:
    """A boolean lesion mask; several files are merged by union.

    Threshold rule: a mask whose largest value is 1 is read as {0, 1}; otherwise a pixel is lesion
    when it is at least half of the type's maximum (>= 128 for 8-bit, >= 32768 for 16-bit). Values
    other than 0 and the maximum (JPEG-compressed or anti-aliased masks) are noted as thresholded.
    """
    if isinstance(paths, (str, Path)):
        paths = [Path(p) for p in str(paths).split(MASK_SEPARATOR)]
    merged = None
    notes: list[str] = []
    for path in paths:
        pixels = _decode(Path(path))
        if pixels.ndim == 3:
            pixels = pixels[:, :, :3].max(axis=2)
        top = 1 if pixels.max() <= 1 else (255 if pixels.dtype == np.uint8 else 65535)
        threshold = 1 if top == 1 else (top + 1) // 2
        if np.any((pixels != 0) & (pixels != top) & (pixels != pixels.max())):
            if "mask_thresholded" not in notes:
                notes.append("mask_thresholded")
        lesion = pixels >= threshold
        if merged is not None and merged.shape != lesion.shape:
            raise SonosegError(
                f"{path}: size {lesion.shape[1]}x{lesion.shape[0]} differs from the other masks of this image"
            )
        merged = lesion if merged is None else (merged | lesion)
    if len(paths) > 1:
        notes.append(f"merged_masks:{len(paths)}")
    return Decoded(merged, notes)
