"""Reading images and lesion masks the same way in every stage (ingest, preprocess, evaluate)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
import simplejpeg

from sonoseg.data import provenance
from sonoseg.errors import SonosegError

try:  # OpenCV prints its own warnings for unreadable files; we report them ourselves.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # pragma: no cover - older OpenCV builds
    pass

IMAGE_SUFFIXES = provenance.IMAGE_SUFFIXES  # the image formats sonoseg reads (one list, the fingerprint's too)
MASK_SEPARATOR = "|"  # several mask files of one image (BUSI's NAME_mask_1.png) are merged
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8"  # its start-of-image marker
JPEG_END_OF_IMAGE, JPEG_START_OF_SCAN, JPEG_APP1 = 0xD9, 0xDA, 0xE1
# Markers that stand alone, without a length: TEM, the restart markers RST0-7, start and end of image.
JPEG_MARKERS_WITHOUT_LENGTH = {0x01, *range(0xD0, 0xDA)}
# In entropy-coded data a 0xFF byte is followed by 0x00 (a stuffed byte), a restart marker or a fill 0xFF;
# the first 0xFF followed by anything else is the marker that ends the scan (libjpeg reads it so too).
JPEG_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
SCAN_READ_BYTES = 1 << 20  # a scan is searched in blocks of this size: a 100 MB file is never read whole
EXIF_ORIENTATION_TAG = 0x0112
TIFF_STARTS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # a TIFF's first bytes: byte order, magic (BigTIFF: +)
EXIF_HEADER = b"Exif\x00\x00"  # before the TIFF structure of the EXIF in a JPEG's APP1 (and in some others)
# By a TIFF structure's magic number (classic, BigTIFF): where the first IFD's offset lies, the formats of an
# offset and of an IFD's entry count, the bytes of an entry, and where in an entry its value lies.
TIFF_LAYOUTS = {42: (4, "I", "H", 12, 8), 43: (8, "Q", "Q", 20, 12)}
# The struct format of a TIFF tag's value by its type: BYTE, SHORT, LONG, SSHORT, SLONG (the integer types
# an orientation is found stored as).
TIFF_INTEGER_FORMATS = {1: "B", 3: "H", 4: "I", 8: "h", 9: "i"}
TIFF_PHOTOMETRIC = 262  # PhotometricInterpretation: 0 WhiteIsZero (grey stored inverted), 1 BlackIsZero, 2 RGB...
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
# A file's first bytes and the format they name, for a file that starts as one and does not decode.
DECODED_FORMATS = (
    (PNG_SIGNATURE, "PNG"),
    (JPEG_SIGNATURE, "JPEG"),
    *((start, "TIFF") for start in TIFF_STARTS),
    (b"BM", "BMP"),
    (b"GIF8", "GIF"),
)


@dataclass
class Decoded:
    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)
    orientation: int = 1  # the EXIF orientation applied to the stored pixels (1: none)
    head: bytes = b""  # the file's first bytes, read with its pixels: its format (infer.frames_named) without a reopen
    palette: bool = False  # stored as palette indices (the pixels are the palette's colours), as its header says


# DICOM, what a scanner or a PACS exports: by extension, or by the "DICM" after its 128-byte preamble (a DICOM
# file often has no extension). sonoseg reads image files; a DICOM's frames are exported first.
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
DICOM_ADVICE = (
    "DICOM, which sonoseg does not read: export the frames as PNG first (dcmtk's dcmj2pnm, or pydicom with "
    "Pillow), as they are viewed"
)


def is_dicom(path: Path, head: bytes | None = None) -> bool:
    """Whether ``path`` is a DICOM file, by its extension or its first 132 bytes (``head``; read if None)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if head is None:
        try:
            with open(path, "rb") as handle:
                head = handle.read(132)
        except OSError:
            return False
    return head[128:132] == b"DICM"


def orientation_note(orientation: int) -> str:
    """How notes, flags and messages name an EXIF orientation."""
    return f"exif_orientation:{orientation}"


class FileProblem(Exception):
    """A reason a file can't be an image, found by the cheap checks before decoding (problem_with_file)."""


def problem_with_file(path: Path) -> str | None:
    """A reason this file can't be an image, or None. Cheap checks before decoding."""
    try:
        opened_checked(path).close()
    except FileProblem as problem:
        return str(problem)
    return None


def opened_checked(path: Path) -> BinaryIO:
    """``path`` opened for reading once problem_with_file's checks pass on it, else FileProblem: _decode reads
    the file's header and pixels through this handle, the file opened once."""
    try:
        status = path.stat()  # before opening: a named pipe is never opened, which would block
        size, mode = status.st_size, status.st_mode
    except OSError as exc:
        if exc.errno == errno.ENOENT and path.is_symlink():  # as the ingest says it: the link's target is gone
            raise FileProblem(f"broken symbolic link (to {os.readlink(path)})") from None
        raise FileProblem(f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):  # a named pipe or a device (a link to /dev/zero) has no size to tell it by
        raise FileProblem(f"not a regular file (a {_file_kind(mode)})")
    if size == 0:
        raise FileProblem("empty file (0 bytes)")
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise FileProblem(f"cannot be read ({exc.strerror})") from None
    try:
        problem = _structure_problem(_reader(handle), size)
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror})"
    except BaseException:
        handle.close()
        raise
    if problem:
        handle.close()
        raise FileProblem(problem)
    return handle


def _file_kind(mode: int) -> str:
    """What a file that is not a regular file is, by its mode, as a message names it."""
    kinds = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))
    return next((name for test, name in kinds if test(mode)), "socket" if stat.S_ISSOCK(mode) else "special file")


def _structure_problem(read: Reader, size: int) -> str | None:
    """A PNG or JPEG cut short, by its structure (``read``: its bytes, ``size``: its length), or None."""
    head = read(0, 8)
    # OpenCV decodes a file cut short without complaint (the missing rows come out gray), so the end marker
    # is looked for. It is found by the file's structure, not by searching its end: phones, scanners and
    # tools append data after it (a Motion Photo's video: megabytes), which OpenCV ignores, and a JPEG's
    # EXIF thumbnail carries an end marker of its own, before the image is complete.
    if head.startswith(PNG_SIGNATURE) and not any(kind == b"IEND" for kind, _, _ in _png_chunks(read, size)):
        return "truncated PNG (its chunks run past the file's end before an IEND chunk)"
    if head.startswith(JPEG_SIGNATURE) and not _jpeg_is_complete(read, size):
        return "truncated JPEG (no end-of-image marker after its last scan)"
    return None


Reader = Callable[[int, int], bytes]  # (offset, count) -> at most ``count`` bytes of a file from ``offset``


def _reader(handle: BinaryIO) -> Reader:
    def read(offset: int, count: int) -> bytes:
        handle.seek(offset)
        return handle.read(count)

    return read


def _png_chunks(read: Reader, size: int) -> Iterator[tuple[bytes, int, int]]:
    """Each whole chunk of a PNG: (type, offset of its data, length of its data), by the lengths in the
    chunk headers (no data is read), up to the IEND chunk; a chunk that runs past the file's end, and those
    after it, are not yielded (a file cut short never yields IEND)."""
    offset = len(PNG_SIGNATURE)
    while offset + 12 <= size:  # a chunk's length, type and CRC
        length, kind = struct.unpack(">I4s", read(offset, 8))
        if offset + 12 + length > size:
            return
        yield kind, offset + 8, length
        if kind == b"IEND":
            return
        offset += 12 + length


def _jpeg_segments(read: Reader, size: int) -> Iterator[tuple[int, int, int]]:
    """Each marker of a JPEG from its start: (marker, offset of its segment's data, length of that data; 0
    for a marker without a length), skipping each scan's entropy-coded data to the marker after it, up to
    the end-of-image marker. A segment that runs past the file's end, and what follows, is not yielded."""
    offset, in_scan = 2, False  # after the start-of-image marker
    while offset < size:
        head = read(offset, 2)
        if not in_scan and len(head) == 2 and head[0] == 0xFF and head[1] not in (0x00, 0xFF):
            at = offset
        else:  # a scan's data, fill bytes, or stray bytes between segments (libjpeg skips them too)
            at = _next_jpeg_marker(read, size, offset)
            if at is None:
                return
        marker = read(at + 1, 1)[0]
        if marker in JPEG_MARKERS_WITHOUT_LENGTH:
            yield marker, at + 2, 0
            if marker == JPEG_END_OF_IMAGE:
                return
            offset = at + 2
            continue
        length_bytes = read(at + 2, 2)
        if len(length_bytes) < 2 or int.from_bytes(length_bytes, "big") < 2:
            return
        end = at + 2 + int.from_bytes(length_bytes, "big")
        if end > size:
            return
        yield marker, at + 4, end - at - 4
        offset, in_scan = end, marker == JPEG_START_OF_SCAN


def _next_jpeg_marker(read: Reader, size: int, offset: int) -> int | None:
    """Where the first marker at or after ``offset`` that may follow entropy-coded data starts (its 0xFF),
    or None. Read in blocks overlapping by one byte, so a marker across two blocks is found."""
    while offset < size:
        block = read(offset, SCAN_READ_BYTES + 1)
        found = JPEG_MARKER_AFTER_SCAN.search(block)
        if found:
            return offset + found.start()
        offset += SCAN_READ_BYTES
    return None


def _jpeg_is_complete(read: Reader, size: int) -> bool:
    """Whether the JPEG's end-of-image marker follows a scan (a start of scan, and the data it announces)."""
    scanned = False
    for marker, _, _ in _jpeg_segments(read, size):
        if marker == JPEG_END_OF_IMAGE:
            return scanned
        scanned |= marker == JPEG_START_OF_SCAN
    return False


@dataclass(frozen=True)
class Layout:
    """What an image file's header says: its EXIF orientation (1 when none), its pages (1 unless a
    multi-page TIFF), and its pixel count and (width, height), None where the header could not say."""

    orientation: int = 1
    pages: int = 1
    pixels: int | None = None
    size: tuple[int, int] | None = None
    palette: bool = False


def _header(source: BinaryIO) -> Layout:
    """The file's Layout, read from its header by Pillow (OpenCV decodes the first page only), from
    ``source``: the file open for reading (_decode's; read from its start, left open). Never a full
    decode: a PNG's tag is read from the chunks before its pixels. A file Pillow cannot read is read by
    OpenCV as it is."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a header is read, not pixels
            with Image.open(source) as image:
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
                    image.mode == "P",
                )
    except Image.DecompressionBombError as exc:  # Pillow's own limit, twice its MAX_IMAGE_PIXELS: the count only
        found = PILLOW_BOMB_PIXELS.search(str(exc))
        source.seek(0)
        head = source.read(24)  # a PNG's width and height follow its signature and IHDR's length and type
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


def neutralise_orientation(data: np.ndarray) -> int | None:
    """Set the EXIF orientation tag in a file's bytes (``data``, uint8, changed in place) to 1, so that no
    decoder can turn the pixels, and return the tag's value before, None where the file has none.

    OpenCV's decoders turn by the tag or not by format and flags, and not as documented: 5.1 turns a TIFF
    even with IMREAD_UNCHANGED and IMREAD_IGNORE_ORIENTATION, a JPEG, PNG or WebP only without them. Whatever
    a version does, one that finds orientation 1 turns nothing, and _decode turns the pixels once itself.
    The tag is looked for where decoders read it: the first IFD of a TIFF file, of the EXIF in a JPEG's APP1
    segments, a PNG's eXIf chunks (wherever they lie; their CRCs are recomputed) or a WebP's EXIF chunk."""

    def read(offset: int, count: int) -> bytes:
        return data[offset : offset + count].tobytes()

    head, size, found = read(0, 16), data.size, []
    if head[:4] in TIFF_STARTS:
        found.append(_neutralise_tiff_orientation(data))
    elif head.startswith(JPEG_SIGNATURE):
        for marker, offset, length in _jpeg_segments(read, size):
            if marker == JPEG_START_OF_SCAN:  # the EXIF precedes the pixels; their data is never searched
                break
            if marker == JPEG_APP1 and read(offset, 6) == EXIF_HEADER:
                found.append(_neutralise_tiff_orientation(data[offset + 6 : offset + length]))
    elif head.startswith(PNG_SIGNATURE):
        for kind, offset, length in _png_chunks(read, size):
            if kind == b"eXIf":
                value = _neutralise_tiff_orientation(_without_exif_header(data[offset : offset + length]))
                if value not in (None, 1):  # the chunk changed: its CRC (over type and data) with it
                    crc = zlib.crc32(data[offset - 4 : offset + length].tobytes())
                    data[offset + length : offset + length + 4] = np.frombuffer(struct.pack(">I", crc), np.uint8)
                found.append(value)
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        offset = 12
        while offset + 8 <= size:  # chunks: type, little-endian length, data padded to an even length
            kind, length = struct.unpack("<4sI", read(offset, 8))
            if kind == b"EXIF":
                found.append(_neutralise_tiff_orientation(_without_exif_header(data[offset + 8 : offset + 8 + length])))
            offset += 8 + length + length % 2
    return next((value for value in found if value is not None), None)


def _without_exif_header(exif: np.ndarray) -> np.ndarray:
    """The TIFF structure of an EXIF block, after the "Exif\\0\\0" some writers put before it."""
    return exif[len(EXIF_HEADER) :] if exif[: len(EXIF_HEADER)].tobytes() == EXIF_HEADER else exif


def _neutralise_tiff_orientation(tiff: np.ndarray) -> int | None:
    """Set the orientation tag of the first IFD of a TIFF structure (classic or BigTIFF; ``tiff``, a view of
    the file's bytes, changed in place) to 1 and return its value before; None where it has none.

    The standard says SHORT, but writers also store it as BYTE, LONG or a signed type, and libtiff turns by
    any of them: each is read and written at its own width in the file's byte order. Every entry is looked
    at, as writers do not all sort them by tag and libtiff finds the tag wherever it lies."""
    found = None
    buffer = memoryview(tiff)
    try:
        for value_format, place in _tiff_integer_entries(tiff, EXIF_ORIENTATION_TAG):
            value = struct.unpack_from(value_format, buffer, place)[0]
            struct.pack_into(value_format, buffer, place, 1)
            found = value if found is None else found  # a repeated tag is neutralised too; the first one says
    except struct.error:  # offsets past the end: a broken structure, left to the decoder
        return found
    return found


def tiff_tag(tiff: np.ndarray, tag: int) -> int | None:
    """The first integer value of ``tag`` in the first IFD of a TIFF structure (``tiff``: the file's bytes),
    read in either byte order, classic or BigTIFF; None where it has none or the structure is broken. Pillow
    reads no big-endian 16-bit grey TIFF, so a tag sonoseg must know is read here."""
    try:
        for value_format, place in _tiff_integer_entries(tiff, tag):
            return struct.unpack_from(value_format, memoryview(tiff), place)[0]
    except struct.error:
        return None
    return None


def _tiff_integer_entries(tiff: np.ndarray, tag: int) -> Iterator[tuple[str, int]]:
    """(struct format, byte offset) of each single integer value of ``tag`` in the first IFD of a TIFF
    structure, in the file's byte order; nothing where it is no TIFF. struct.error where offsets run past
    its end."""
    buffer = memoryview(tiff)
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2].tobytes())
    magic = struct.unpack_from(f"{order}H", buffer, 2)[0] if order else None
    if magic not in TIFF_LAYOUTS:
        return
    ifd_at, offset_format, count_format, entry_size, value_at = TIFF_LAYOUTS[magic]
    ifd = struct.unpack_from(order + offset_format, buffer, ifd_at)[0]
    entries = ifd + struct.calcsize(count_format)
    for index in range(struct.unpack_from(order + count_format, buffer, ifd)[0]):
        entry = entries + index * entry_size
        found, kind = struct.unpack_from(f"{order}HH", buffer, entry)
        # A value's count has an offset's width; one value of these types is held in the entry itself.
        count = struct.unpack_from(order + offset_format, buffer, entry + 4)[0]
        if found == tag and count == 1 and kind in TIFF_INTEGER_FORMATS:
            yield order + TIFF_INTEGER_FORMATS[kind], entry + value_at


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
    Pillow reads the header, else once decoded. The file is opened once: its checks, its header and then,
    once the header passes, all its bytes are read through one handle, and the orientation and the format
    are taken from what was read."""
    try:
        handle = opened_checked(path)
    except FileProblem as problem:
        raise SonosegError(f"{path}: {problem}") from None
    with handle:
        layout = _header(handle)
        if layout.pixels is not None:
            check_pixel_count(path, layout.pixels, layout.size, max_pixels)
        handle.seek(0)
        data = np.fromfile(handle, dtype=np.uint8)
    head = data[:16].tobytes()  # as the file holds them, before neutralise_orientation changes any byte
    tagged = neutralise_orientation(data)  # the decoder is left nothing to turn by: the pixels come as stored
    # The tag neutralised is the one decoders read; Pillow's reading stands where none was found (an
    # orientation in XMP, which Pillow reads too).
    orientation = tagged if tagged in range(1, 9) else layout.orientation
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise SonosegError(f"{path}: {_unreadable(path, data)}")
    damage, damage_note = _jpeg_damage(data) if head.startswith(JPEG_SIGNATURE) else (None, None)
    if damage:
        raise SonosegError(f"{path}: damaged JPEG ({damage}); the pixels after the damage are not the scan's")
    check_pixel_count(path, pixels.shape[0] * pixels.shape[1], pixels.shape[1::-1], max_pixels)
    pages = layout.pages
    notes = [orientation_note(orientation)] * (orientation != 1) + [f"first_page_of:{pages}"] * (pages > 1)
    notes += [damage_note] * bool(damage_note)
    white_is_zero = head[:4] in TIFF_STARTS and tiff_tag(data, TIFF_PHOTOMETRIC) == 0
    if white_is_zero and pixels.ndim == 2 and pixels.dtype in (np.uint8, np.uint16):
        pixels = _white_is_zero_as_viewed(path, data, pixels)
    if orientation != 1:
        pixels = as_viewers_show(pixels, orientation)
    # Float (and signed) files have no agreed range: neither brightness nor the lesion value can be
    # read from them without guessing, so images and masks alike must be 8- or 16-bit.
    if binary_float and pixels.dtype.kind in "fi" and set(np.unique(pixels).tolist()) in ({0, 1}, {0, 255}, {0}):
        return Decoded(pixels.astype(np.uint8), notes, orientation, head, layout.palette)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise SonosegError(
            f"{path}: unsupported pixel type {pixels.dtype} (8- or 16-bit files only"
            + ("; a float mask may hold 0 and 1, or 0 and 255)" if binary_float else ")")
        )
    return Decoded(pixels, notes, orientation, head, layout.palette)


def _unreadable(path: Path, data: np.ndarray) -> str:
    """Why a file OpenCV does not decode is not read: a DICOM (with advice), a damaged file of a format its
    first bytes name, or no image."""
    if is_dicom(path, data[:132].tobytes()):
        return DICOM_ADVICE
    head = data[:16].tobytes()
    named = next((name for starts, name in DECODED_FORMATS if head.startswith(starts)), None)
    return f"damaged {named} (it starts as one, but its pixels do not decode)" if named else "not a readable image"


def _white_is_zero_as_viewed(path: Path, data: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """A WhiteIsZero grey TIFF's pixels as a viewer shows them (black where the stored value is highest).
    OpenCV 5.1 inverts an 8-bit one but reads a 16-bit one as stored, and that is libtiff's path through its
    decoder, not a documented promise; Pillow's reading is the reference (it inverts 1- and 8-bit ones, "1;I"
    and "L;I", and reads 16-bit ones as stored, "I;16"), so whatever OpenCV does the result is the viewer's,
    and a file the two read some third way is refused rather than guessed."""
    import io

    from PIL import Image

    top = np.iinfo(pixels.dtype).max
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            inverted_by_pillow = image.mode in ("1", "L")
            read = np.asarray(image)
    except Exception:  # noqa: BLE001 - whatever Pillow cannot decode cannot be checked
        read = None
    if read is not None and read.dtype == bool:
        read = read.astype(np.uint8) * 255
    if read is None or read.shape != pixels.shape:
        raise SonosegError(
            f"{path}: a WhiteIsZero TIFF (grey stored inverted) that cannot be checked: save it as BlackIsZero"
        )
    viewed = read.astype(pixels.dtype) if inverted_by_pillow else top - read.astype(pixels.dtype)
    if np.array_equal(pixels, viewed) or np.array_equal(pixels, top - viewed):
        return viewed
    raise SonosegError(
        f"{path}: a WhiteIsZero TIFF (grey stored inverted) that OpenCV and Pillow read differently: "
        "save it as BlackIsZero"
    )


# libjpeg's warnings that its coded data is damaged: what it decodes from there on is grey or smeared.
JPEG_DAMAGE = re.compile(r"^(Corrupt JPEG data|Premature end of JPEG file)")
# Bytes left over before a marker (the end marker, or a table between a progressive JPEG's scans): some encoders
# leave padding there, the pixels intact, and damaged coded data can end so too. Noted (a warning, a manifest
# flag), not refused.
JPEG_EXTRA_BYTES = re.compile(r"^Corrupt JPEG data: (\d+) extraneous bytes before marker 0x[0-9a-f]{2}$")
# Encoders pad with a few bytes; a damaged scan read to its end leaves tens (31 for 64 bytes overwritten in a
# progressive scan): more than this many is damage.
JPEG_PADDING_MOST = 8
JPEG_HARMLESS = re.compile(r"^Corrupt JPEG data: bad ICC marker")  # a damaged colour profile; pixels intact


def _jpeg_damage(data: np.ndarray) -> tuple[str | None, str | None]:
    """(libjpeg's word that a JPEG's coded data is damaged, a note), each None where there is none. OpenCV
    decodes a JPEG whose scans lost or had overwritten bytes without an error (libjpeg only warns, on
    stderr), the rows after the damage grey or smeared; a file cut short is caught before decoding
    (_structure_problem). Decoded again by libjpeg-turbo with its warnings raised, at an eighth of the size:
    every coded coefficient is still read, the inverse transforms mostly skipped. Another error (a colour
    space it does not convert) is OpenCV's to judge, and OpenCV read the file."""
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, min_factor=8)
    except ValueError as exc:
        message = str(exc)
        if (extra := JPEG_EXTRA_BYTES.match(message)) and int(extra[1]) <= JPEG_PADDING_MOST:
            return None, f"jpeg_extra_bytes:{extra[1]}"
        if JPEG_DAMAGE.match(message) and not JPEG_HARMLESS.match(message):
            return message, None
    return None, None


# An RGBA image transparent (alpha 0) over more than this share of its pixels is noted: its alpha is dropped,
# and the colours under the transparency (often black, or whatever the exporter left) are what a model sees.
MOSTLY_TRANSPARENT = 0.5


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Decoded:
    """An RGB uint8 image. 16-bit, grayscale and RGBA images are converted, and the note says so.
    One of more than ``max_pixels`` pixels is refused (MAX_IMAGE_PIXELS).

    Channel order: RGB (the authors' OpenCV code fed BGR; the networks learn either, we use RGB).
    """
    decoded = _decode(Path(path), max_pixels=max_pixels)
    pixels, notes = as_rgb8(decoded.pixels, "bgr")
    return Decoded(pixels, decoded.notes + notes, decoded.orientation, decoded.head)


def as_rgb8(pixels: np.ndarray, order: str) -> tuple[np.ndarray, list[str]]:
    """Pixels as the networks take them, RGB uint8 (height, width, 3), and notes of what was converted: 16-bit
    onto 8 bits (divided by 257, floor; a range under LOW_RANGE_16BIT noted), grey repeated into three channels,
    an alpha channel dropped (mostly transparent noted). ``pixels``: uint8 or uint16, (height, width) or with 3
    or 4 channels, in the channel ``order`` "bgr" (OpenCV's decoding of a file) or "rgb" (an array given in
    Python, sonoseg.serving.predictor.image_array): one rule for a file's pixels and an array's."""
    notes = []
    if pixels.dtype == np.uint16:
        if pixels.max() < LOW_RANGE_16BIT:
            notes.append(f"low_range_16bit:{pixels.max()}")
        pixels = (pixels // 257).astype(np.uint8)  # full 16-bit range onto 8 bits
        notes.append("converted_16bit")
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
        notes.append("converted_grayscale")
    elif pixels.shape[2] == 4:
        transparent = float((pixels[:, :, 3] == 0).mean())
        if transparent > MOSTLY_TRANSPARENT:  # a viewer shows a background there; the model sees what lies under
            notes.append(f"mostly_transparent:{transparent:.0%}")
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB if order == "bgr" else cv2.COLOR_RGBA2RGB)
        notes.append("converted_rgba")
    elif order == "bgr":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(pixels), notes


def read_mask(paths: str | Path | list[Path], drawn: bool = True) -> Decoded:
    """A boolean lesion mask; several files are merged by union. ``drawn``: a mask a person made (a dataset's
    truth), checked for the forms that would be misread (below); False for a network's prediction, which may
    cover the whole image and is scored as it is.

    Threshold rule: a mask whose largest value is 1 is read as {0, 1}; otherwise a pixel is lesion
    when it is at least half of the type's maximum (>= 128 for 8-bit, >= 32768 for 16-bit). Values
    other than 0 and the maximum (JPEG-compressed or anti-aliased masks) are noted as thresholded.
    A mask with nonzero pixels of which none reaches the threshold (0/100, or 0/255 saved as 16-bit)
    is an error, not an empty mask. Colour masks count a pixel by its brightest colour channel; an
    RGBA mask whose colour channels are all 0 is read from its alpha channel when that varies. Errors too:
    a drawn mask that is a label map of 0, 1 and the maximum (the 1s the lesion; in a palette PNG, its
    indices), and a drawn lesion over more than half the mask and nearly all of its edge (inverted, or a
    colour lesion on white).
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
            # JPEG's compression smears a 0/1 mask into 0..2: "1 on 0" holds only in a lossless format.
            jpeg = decoded.head.startswith(JPEG_SIGNATURE)
            lossless = " in a PNG (JPEG's compression changes a 0/1 mask's values)" if jpeg else ""
            raise SonosegError(
                f"{path}: mask values {pixels.min()}..{pixels.max()}, none reaches the lesion threshold "
                f"{threshold} (half of the {pixels.dtype.itemsize * 8}-bit maximum {top}); save the lesion "
                f"as the maximum value, or as 1 on 0{lossless}"
            )
        if np.any((pixels != 0) & (pixels != top) & (pixels != pixels.max())):
            if "mask_thresholded" not in notes:
                notes.append("mask_thresholded")
        lesion = pixels >= threshold
        if drawn:
            _refuse_a_label_map(pixels, top, Path(path))
            if decoded.palette:
                _refuse_a_palette_label_map(Path(path))
            _refuse_an_inverted_mask(lesion, Path(path))
        if merged is not None and merged.shape != lesion.shape:
            raise SonosegError(
                f"{path}: size {lesion.shape[1]}x{lesion.shape[0]} differs from the other masks of this image"
            )
        merged = lesion if merged is None else (merged | lesion)
    if len(paths) > 1:
        notes.append(f"merged_masks:{len(paths)}")
    return Decoded(merged, notes, turns.pop())  # one orientation: several were refused above


def lesion_count(mask: np.ndarray) -> int:
    """A mask's lesions: its connected regions (8-connected, as the post-processing counts components)."""
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def _refuse_a_label_map(pixels: np.ndarray, top: int, path: Path, what: str = "values") -> None:
    """A mask of 0, 1 and the type's maximum, many of its pixels 1: a label map (PASCAL VOC's 1 = lesion with
    255 = "ignore" along its edge, or a 0/1 mask with a burned-in label at 255), which the threshold would
    read as the 255 pixels alone. JPEG's or anti-aliasing's values in between never make it one."""
    if top <= 1:
        return
    ones = np.count_nonzero(pixels == 1)
    zeros = np.count_nonzero(pixels == 0)
    if not ones or not zeros:  # a background of 1 under a lesion at the maximum is a plain two-value mask
        return
    maxima = np.count_nonzero(pixels == top)
    if maxima and ones + maxima + zeros == pixels.size and ones >= 0.1 * (ones + maxima):
        raise SonosegError(
            f"{path}: mask {what} 0, 1 and {top} ({ones} pixels of 1, {maxima} of {top}): a label map whose 1 is "
            f"the lesion and {top} something else (an 'ignore' border, burned-in text)? The threshold would read "
            f"the {top} pixels as the lesion: save the lesion as {top} on 0, or as 1 on 0"
        )


def _refuse_a_palette_label_map(path: Path) -> None:
    """A palette image (PASCAL VOC's PNG masks are) is decoded into its colours, which hide its indices: VOC's 1
    (the lesion, dark red) and 255 (the "ignore" ring, light grey) both reach the threshold. Its indices (read
    again, for such a mask alone) are checked as a grey mask's values are."""
    from PIL import Image

    with contextlib.suppress(OSError, ValueError), Image.open(path) as image:
        _refuse_a_label_map(np.asarray(image), 255, path, "indices")


# An inverted mask (lesion black on white), or a lesion drawn in colour on a white page (a colour mask counts
# its brightest channel): "lesion" over most of the image and all around its edge, which no lesion is.
INVERTED_AREA = 0.5
INVERTED_EDGE = 0.9


def _refuse_an_inverted_mask(lesion: np.ndarray, path: Path) -> None:
    edge = np.concatenate([lesion[0], lesion[-1], lesion[1:-1, 0], lesion[1:-1, -1]])
    if lesion.size and lesion.mean() > INVERTED_AREA and edge.mean() > INVERTED_EDGE:
        raise SonosegError(
            f"{path}: the lesion covers {lesion.mean():.0%} of the mask and {edge.mean():.0%} of its edge: an "
            "inverted mask (lesion black on white), or a coloured lesion on a white background (a colour mask "
            "counts its brightest channel, and white is lesion)? Save the lesion white (or 1) on black"
        )


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
