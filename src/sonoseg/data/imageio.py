"""Reading images and lesion masks the same way in every stage (ingest, preprocess, evaluate)."""

from __future__ import annotations

import re
import struct
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
PNG_END_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole IEND chunk: length 0, type, CRC
JPEG_END_MARKER, JPEG_START_OF_SCAN = b"\xff\xd9", b"\xff\xda"
END_MARKER_SEARCH_BYTES = 4096  # how far from a file's end its end marker may lie
EXIF_ORIENTATION_TAG = 0x0112
# A 16-bit image is read as the full 16-bit range (divided by 257). One whose brightest pixel is under
# this (12-bit data and less, as some scanners and converters store it) comes out almost black: noted.
LOW_RANGE_16BIT = 4096
# The most pixels an image may have; one over it is refused by its header, before it is decoded. Ultrasound
# frames are under ~4 Mpx (a full-HD screen capture is 2 Mpx), the phantom and the committed external sets
# under 1.3 Mpx; a 200 kB PNG of one colour can hold 180 Mpx and decode to gigabytes (a decompression bomb).
# OpenCV's own limit is 1 Gpx, and Pillow's guard does not apply (it reads headers only, read_image decodes
# with OpenCV). read_image's ``max_pixels`` raises it.
MAX_IMAGE_PIXELS = 100_000_000
# How Pillow's DecompressionBombError names an image's pixel count (the header it refused to finish reading).
PILLOW_BOMB_PIXELS = re.compile(r"Image size \((\d+) pixels\)")


@dataclass
class Decoded:
    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)
    orientation: int = 1  # the EXIF orientation applied to the stored pixels (1: none)


def orientation_note(orientation: int) -> str:
    """How notes, flags and messages name an EXIF orientation."""
    return f"exif_orientation:{orientation}"


def problem_with_file(path: Path) -> str | None:
    """A reason this file can't be an image, or None. Cheap checks before decoding."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if size == 0:
        return "empty file (0 bytes)"
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            handle.seek(max(size - END_MARKER_SEARCH_BYTES, 0))
            tail = handle.read()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    # OpenCV decodes a file cut short without complaint (the missing rows come out gray), so the end
    # marker is looked for; some scanners and tools append bytes after it, which OpenCV ignores.
    if head.startswith(b"\x89PNG") and PNG_END_CHUNK not in tail:
        return "truncated PNG (no IEND chunk at the end)"
    # An embedded thumbnail ends with its own end marker: the image's must follow the last start of scan.
    if head.startswith(b"\xff\xd8") and tail.rfind(JPEG_END_MARKER) <= tail.rfind(JPEG_START_OF_SCAN):
        return "truncated JPEG (no end-of-image marker after its last scan)"
    return None


@dataclass(frozen=True)
class Layout:
    """What an image file's header says: its EXIF orientation (1 when none), its pages (1 unless a
    multi-page TIFF), and its pixel count and (width, height), None where the header could not say."""

    orientation: int = 1
    pages: int = 1
    pixels: int | None = None
    size: tuple[int, int] | None = None


def _header(path: Path) -> Layout:
    """The file's Layout, read from its header by Pillow (OpenCV decodes the first page only and,
    unchanged, ignores the orientation). Never a full decode: a PNG's tag is read from the chunks before
    its pixels. A file Pillow cannot read is read by OpenCV as it is."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a header is read, not pixels
            with Image.open(path) as image:
                # Pillow's PNG reader decodes the whole image to look for a tag after the pixels; the generic
                # reader takes the tag from the chunks before them (eXIf, or EXIF/XMP in text chunks).
                exif = Image.Image.getexif(image) if image.format == "PNG" else image.getexif()
                orientation = exif.get(EXIF_ORIENTATION_TAG, 1)
                width, height = image.size
                return Layout(
                    orientation if orientation in range(1, 9) else 1,
                    getattr(image, "n_frames", 1),
                    width * height,
                    (width, height),
                )
    except Image.DecompressionBombError as exc:  # Pillow's own limit, twice its MAX_IMAGE_PIXELS: the count only
        found = PILLOW_BOMB_PIXELS.search(str(exc))
        with open(path, "rb") as handle:
            head = handle.read(24)  # a PNG's width and height follow its signature and IHDR's length and type
        size = struct.unpack(">II", head[16:24]) if head.startswith(b"\x89PNG") and head[12:16] == b"IHDR" else None
        return Layout(pixels=int(found.group(1)) if found else None, size=size)
    except Exception:  # noqa: BLE001 - any format or header Pillow refuses: OpenCV's reading stands
        return Layout()


def check_pixel_count(path: Path, pixels: int, size: tuple[int, int] | None, max_pixels: int) -> None:
    """Refuse an image of more than ``max_pixels`` pixels (MAX_IMAGE_PIXELS), naming its size and the limit."""
    if pixels > max_pixels:
        dimensions = f"{size[0]}x{size[1]} = " if size else ""
        raise SonosegError(
            f"{path}: {dimensions}{pixels:,} pixels ({pixels / 1e6:.1f} Mpx), over the limit of {max_pixels:,} "
            f"pixels an image may have ({max_pixels / 1e6:g} Mpx; ultrasound frames are under ~4 Mpx): not decoded, "
            "as an image this large takes gigabytes of memory (a decompression bomb?); downscale it"
        )


def as_viewers_show(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels turned as the EXIF orientation tag (1-8) says a viewer shows them (Pillow's
    ImageOps.exif_transpose); rows and columns only, so any depth and channel count."""
    turned = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }[orientation](pixels)
    return np.ascontiguousarray(turned)


def _decode(path: Path, binary_float: bool = False, max_pixels: int = MAX_IMAGE_PIXELS) -> Decoded:
    """The file's pixels, 8- or 16-bit, turned as a viewer shows them (EXIF orientation), with notes of
    what was done that a user may need to know. ``binary_float`` (masks): a float file whose values are
    only 0 and 1, or 0 and 255, is read as 8-bit; those values say what is lesion without guessing.
    An image of more than ``max_pixels`` pixels is refused, by its header before it is decoded where
    Pillow reads the header, else once decoded."""
    problem = problem_with_file(path)
    if problem:
        raise SonosegError(f"{path}: {problem}")
    layout = _header(path)
    if layout.pixels is not None:
        check_pixel_count(path, layout.pixels, layout.size, max_pixels)
    pixels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise SonosegError(f"{path}: not a readable image")
    check_pixel_count(path, pixels.shape[0] * pixels.shape[1], pixels.shape[1::-1], max_pixels)
    orientation, pages = layout.orientation, layout.pages
    notes = [orientation_note(orientation)] * (orientation != 1) + [f"first_page_of:{pages}"] * (pages > 1)
    if orientation != 1:
        pixels = as_viewers_show(pixels, orientation)
    # Float (and signed) files have no agreed range: neither brightness nor the lesion value can be
    # read from them without guessing, so images and masks alike must be 8- or 16-bit.
    if binary_float and pixels.dtype.kind in "fi" and set(np.unique(pixels).tolist()) in ({0, 1}, {0, 255}, {0}):
        return Decoded(pixels.astype(np.uint8), notes, orientation)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise SonosegError(
            f"{path}: unsupported pixel type {pixels.dtype} (8- or 16-bit files only"
            + ("; a float mask may hold 0 and 1, or 0 and 255)" if binary_float else ")")
        )
    return Decoded(pixels, notes, orientation)


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Decoded:
    """An RGB uint8 image. 16-bit, grayscale and RGBA images are converted, and the note says so.
    One of more than ``max_pixels`` pixels is refused (MAX_IMAGE_PIXELS).

    Channel order: RGB (the authors' OpenCV code fed BGR; the networks learn either, we use RGB).
    """
    decoded = _decode(Path(path), max_pixels=max_pixels)
    pixels, notes = decoded.pixels, decoded.notes
    if pixels.dtype == np.uint16:
        if pixels.max() < LOW_RANGE_16BIT:
            notes.append(f"low_range_16bit:{pixels.max()}")
        pixels = (pixels // 257).astype(np.uint8)  # full 16-bit range onto 8 bits
        notes.append("converted_16bit")
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
        notes.append("converted_grayscale")
    elif pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
        notes.append("converted_rgba")
    else:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return Decoded(pixels, notes, decoded.orientation)


def read_mask(paths: str | Path | list[Path]) -> Decoded:
    """A boolean lesion mask; several files are merged by union.

    Threshold rule: a mask whose largest value is 1 is read as {0, 1}; otherwise a pixel is lesion
    when it is at least half of the type's maximum (>= 128 for 8-bit, >= 32768 for 16-bit). Values
    other than 0 and the maximum (JPEG-compressed or anti-aliased masks) are noted as thresholded.
    A mask with nonzero pixels of which none reaches the threshold (0/100, or 0/255 saved as 16-bit)
    is an error, not an empty mask. Colour masks count a pixel by its brightest colour channel; an
    RGBA mask whose colour channels are all 0 is read from its alpha channel when that varies.
    """
    if isinstance(paths, (str, Path)):
        paths = [Path(p) for p in str(paths).split(MASK_SEPARATOR)]
    merged = None
    notes: list[str] = []
    turns = set()
    for path in paths:
        decoded = _decode(Path(path), binary_float=True)
        pixels, from_alpha = _mask_channel(decoded.pixels, Path(path))
        turns.add(decoded.orientation)
        if len(turns) > 1:
            raise SonosegError(
                f"{path}: its EXIF orientation differs from that of the other masks of this image "
                f"({', '.join(map(orientation_note, sorted(turns)))}): save them alike"
            )
        notes.extend(note for note in decoded.notes if note not in notes)
        if from_alpha and "mask_from_alpha" not in notes:
            notes.append("mask_from_alpha")
        top = 1 if pixels.max() <= 1 else np.iinfo(pixels.dtype).max
        threshold = 1 if top == 1 else (top + 1) // 2
        if 0 < pixels.max() < threshold:  # an all-zero mask is a valid empty mask (flagged at ingest)
            raise SonosegError(
                f"{path}: mask values {pixels.min()}..{pixels.max()}, none reaches the lesion threshold "
                f"{threshold} (half of the {pixels.dtype.itemsize * 8}-bit maximum {top}); save the lesion "
                "as the maximum value, or as 1 on 0"
            )
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
    return Decoded(merged, notes, turns.pop())  # one orientation: several were refused above


def _mask_channel(pixels: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """One channel of lesion values: gray as is, colour by its brightest channel; and whether it is the
    alpha channel, which is read for an RGBA mask whose colour is all black and which is transparent over
    more than half of the image (some editors save the lesion as opacity over black). An opaque black
    mask stays empty; one transparent over the smaller part (a hole cut in an overlay, which would read
    inverted, or a lesion over half the image) is an error: which is meant cannot be told."""
    if pixels.ndim == 2:
        return pixels, False
    colour = pixels[:, :, :3].max(axis=2)
    if pixels.shape[2] == 4 and not colour.any():
        alpha = pixels[:, :, 3]
        if alpha.min() != alpha.max():
            if (alpha == 0).mean() > 0.5:
                return alpha, True
            raise SonosegError(
                f"{path}: an RGBA mask, black in colour, opaque over most of the image and transparent elsewhere: an "
                "overlay with a hole, or a lesion larger than the image's half? Save the lesion white on black"
            )
    return colour, False
