"""What segment warns of about an image it segments all the same: what read_image noted that changes the
mask a user gets (12-bit data in a 16-bit file, the first of several frames, an EXIF turn), a shape no scan
has, and colour over much of the image. Each warning names the image, is logged, and is kept with the
image's entry in the folder's record (output_record), so that a mask written with one can be told later."""

from __future__ import annotations

import numpy as np

from sonoseg.data import marks
from sonoseg.data.imageio import TIFF_STARTS, Decoded

# What read_image notes about an image that changes the mask a user gets, and how segment says it.
NOTES_TO_WARN = {
    "low_range_16bit": "a 16-bit image whose brightest pixel is {} of 65535: read as the full 16-bit range, as "
    "sonoseg reads every 16-bit file, it is almost black, and the mask may be empty (12-bit data? save it as "
    "8-bit, scaled as it is viewed)",
    "first_page_of": "{1} of {0} {2}s: the first {2} is segmented",  # with frames_named's format and unit
    "exif_orientation": "turned as its EXIF orientation ({}) says a viewer shows it; the mask is written so",
    "jpeg_extra_bytes": "libjpeg found {} bytes it did not expect before one of the JPEG's markers: some encoders "
    "leave them there, the image intact, but damaged coded data ends so too; check the mask against the image",
    "mostly_transparent": "{} of its pixels are fully transparent (alpha 0): the alpha channel is dropped and "
    "they are segmented as the colours stored under them, which a viewer does not show; flatten it onto its "
    "background first",
}


# How a file that holds several images starts, and how a warning names it and them (frames_named).
MULTI_FRAME_FORMATS = (
    (TIFF_STARTS, "a TIFF", "page"),
    ((b"\x89PNG",), "an animated PNG", "frame"),
    ((b"GIF8",), "an animated GIF", "frame"),
    ((b"RIFF",), "an animated WebP", "frame"),  # RIFF....WEBP; OpenCV and Pillow read no other RIFF as an image
)


def frames_named(head: bytes) -> tuple[str, str]:
    """The format of a file and what it holds several of, as a warning says them ("a TIFF", "page"): told by
    its first bytes (``head``: read_image's Decoded.head, as read with the pixels), as read_image notes the
    count of a TIFF's pages and of an animated PNG's, GIF's or WebP's frames alike; an unknown start is named
    as "a file" of "frame"s."""
    return next(((name, unit) for starts, name, unit in MULTI_FRAME_FORMATS if head[:4] in starts), ("a file", "frame"))


# An image with a side under MIN_SIDE px, or one side over MAX_ASPECT times the other, is stretched out of all
# proportion on its way to the model's square input (ultrasound frames are about 4:3, extended-field-of-view
# panoramas under 4:1): more likely a thumbnail or a strip cut from a report than a scan. Segmented all the
# same (a failure would drop a mask the user may want), with a warning, as its mask may mean nothing.
MIN_SIDE, MAX_ASPECT = 8, 8

# B-mode is grey; a scanner's coloured marks (calipers, text) cover a small share of a frame: 0.07-0.15 % of
# the phantom's, whose calipers are drawn as a scanner's. Colour over more than this share is a tinted image (a
# sepia or colour-mapped export) or a colour Doppler box: inpainted as marks, or seen in colour by a model
# trained on grey, its pixels are not the image the model learned, and the mask may be wrong without a word.
COLOURED_SHARE = 0.02


# A frame whose pixels, all but the FLAT_OUTLIERS share at either end, lie within FLAT_LEVELS grey levels (of
# 255) holds no scan: a blank or test frame from a PACS export, or a black screen captured. B-mode speckle spans
# a hundred levels and more; a flat frame saved as JPEG varies by a few, at its edges by more (the outliers).
# Its mask is whatever the model makes of no image (a probe's model marked 48-91 % of flat grey frames as
# lesion), so it is warned of.
FLAT_LEVELS = 8
FLAT_OUTLIERS = 0.005


def flat(pixels: np.ndarray) -> str | None:
    """Why an image whose pixels (all but FLAT_OUTLIERS at either end) lie within FLAT_LEVELS grey levels gets
    a mask that means nothing, or None; ``pixels``: read_image's, 8-bit, every one counted (a histogram, in
    OpenCV: tens of milliseconds for a 12-Mpx frame, no copy of it)."""
    import cv2

    # OpenCV's histogram reads the 8-bit pixels as they are (np.bincount made an int64 copy, 8x the image).
    image = np.ascontiguousarray(pixels)
    channels = 1 if image.ndim == 2 else image.shape[2]
    counts = sum(cv2.calcHist([image], [channel], None, [256], [0, 256]).ravel() for channel in range(channels))
    share = np.cumsum(counts) / counts.sum()
    low, high = np.searchsorted(share, [FLAT_OUTLIERS, 1 - FLAT_OUTLIERS])
    spread = int(high) - int(low)
    if spread > FLAT_LEVELS:
        return None
    return (
        f"{1 - 2 * FLAT_OUTLIERS:.0%} of its pixels lie within {spread} grey level(s) of each other (a blank frame? "
        "B-mode speckle spans a hundred levels and more): there is no scan to segment, and its mask means nothing"
    )


def out_of_shape(height: int, width: int, size: int) -> str | None:
    """Why an image of this shape is one no scan has (MIN_SIDE, MAX_ASPECT), or None."""
    if min(height, width) < MIN_SIDE:
        why = f"a side under {MIN_SIDE} px: too few pixels"
    elif max(height, width) > MAX_ASPECT * min(height, width):
        why = f"one side over {MAX_ASPECT} times the other: stretched out of shape"
    else:
        return None
    return (
        f"{width}x{height} px, {why} for the model's square {size}-px input, and its mask may mean nothing; "
        f"segmented all the same (an image is warned of with a side under {MIN_SIDE} px, or one side over "
        f"{MAX_ASPECT} times the other)"
    )


def coloured(rgb: np.ndarray, treated: str) -> str | None:
    """Why an image with colour over more than COLOURED_SHARE of its pixels may get a wrong mask, or None;
    ``treated``: the model's marks option, what it does to coloured pixels (inpaint or keep)."""
    share = float(marks.find_marks(rgb).mean())
    if share <= COLOURED_SHARE:
        return None
    done = (
        "this model inpaints coloured pixels as marks, which fills them smooth"
        if treated != "keep"
        else "this model, trained on grey scans, sees them in colour"
    )
    return (
        f"{share:.0%} of its pixels are coloured (B-mode is grey; a scanner's calipers and text cover well under "
        f"{COLOURED_SHARE:.0%}): a tinted image or a colour Doppler box? {done}, and the mask may be wrong; convert a "
        "tinted image to grey first"
    )


def warnings_for(decoded: Decoded, size: int, treated: str) -> list[str]:
    """Every warning an image read by read_image (``decoded``) gets before a model of input ``size`` and marks
    option ``treated`` segments it."""
    found = []
    for kind, _, value in (note.partition(":") for note in decoded.notes):
        if kind in NOTES_TO_WARN:
            named = frames_named(decoded.head) if kind == "first_page_of" else ()
            found.append(NOTES_TO_WARN[kind].format(value, *named))
    height, width = decoded.pixels.shape[:2]
    grey_file = "converted_grayscale" in decoded.notes  # a one-channel file holds no colour: not looked for
    # 12-bit data in a 16-bit file reads almost black, and flat: its own warning says why, and what to do.
    low_range = any(note.startswith("low_range_16bit") for note in decoded.notes)
    found += [
        why
        for why in (
            out_of_shape(height, width, size),
            None if low_range else flat(decoded.pixels),
            None if grey_file else coloured(decoded.pixels, treated),
        )
        if why
    ]
    return found
