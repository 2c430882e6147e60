"""Coloured overlay marks (calipers, dotted lines, Doppler colour boxes, coloured text) as data.

B-mode ultrasound is grey: its three channels are equal. What a scanner draws on top in colour
(light-blue, yellow or green calipers; a red/blue Doppler box; coloured annotations) is not. The
rules, all in this module (docs/marks_and_floors.md has the measurements behind the numbers):

``chroma``
    max(R, G, B) - min(R, G, B) of a pixel (0 for grey).
``find_marks``
    1. *core*: chroma > ``threshold`` (default ``CHROMA_THRESHOLD`` = 40);
    2. *halo*: chroma > ``low_threshold`` (default ``LOW_CHROMA_THRESHOLD`` = 8) within
       ``HALO_REACH`` = 16 px of a core pixel: JPEG stores colour at half resolution in 8 x 8
       blocks (16 x 16 pixels), so a thin coloured mark leaves faint colour ringing around it;
    3. core and halo dilated by a disk of ``radius`` pixels (default ``mark_radius``: max(1,
       round(max(height, width) / 320)), 2 px at the phantom's 646 px width and BUSI's ~500-600 px)
       so that anti-aliased and JPEG-blurred edges, whose colour is mixed with the grey, go too.
    A grey image (JPEG-compressed or not) has chroma 0 everywhere, so nothing is found.
``inpaint_marks``
    the ``find_marks`` pixels filled by OpenCV's Telea inpainting (``cv2.INPAINT_TELEA``, radius
    ``mark_radius`` + 2): every other pixel is kept bit for bit, and an image without marks comes
    back unchanged (the same bytes) with count 0.
``caliper_centres``
    the centres of the '+' shaped components of the core, the marks a caliper reader needs.

Limitation: white or grey overlays (text, rulers, depth scales, some scanners' calipers) have chroma
0 and are not marks here: they stay in the image.
"""

from __future__ import annotations

import cv2
import numpy as np

from sonoseg.errors import SonosegError

CHROMA_THRESHOLD = 40  # max - min channel above which a pixel is a coloured mark (core)
LOW_CHROMA_THRESHOLD = 8  # a faint colour (anti-aliasing, JPEG ringing) next to a core pixel
HALO_REACH = 16  # px: the halo reaches this far from a core pixel (a JPEG chroma block covers 16 x 16 px)
INPAINT_METHOD = cv2.INPAINT_TELEA


def _check(rgb: np.ndarray, who: str) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        raise SonosegError(
            f"{who}: expected an RGB uint8 image (height, width, 3), got {getattr(rgb, 'dtype', type(rgb))} {shape}"
        )


def chroma(rgb: np.ndarray) -> np.ndarray:
    """max(R, G, B) - min(R, G, B) per pixel (uint8; 0 for a grey pixel)."""
    _check(rgb, "chroma")
    return rgb.max(axis=2) - rgb.min(axis=2)


def mark_radius(height: int, width: int) -> int:
    """The dilation radius in pixels: max(1, round(max(height, width) / 320))."""
    return max(1, int(round(max(height, width) / 320)))


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def find_marks(
    rgb: np.ndarray,
    threshold: int = CHROMA_THRESHOLD,
    low_threshold: int = LOW_CHROMA_THRESHOLD,
    radius: int | None = None,
    halo_reach: int = HALO_REACH,
) -> np.ndarray:
    """The coloured overlay pixels of an RGB uint8 image, as a bool mask of its size (rules above)."""
    _check(rgb, "find_marks")
    if halo_reach < 0:
        raise SonosegError(f"find_marks: halo_reach must be >= 0, got {halo_reach}")
    if not 0 <= low_threshold <= threshold < 255:
        raise SonosegError(f"find_marks: need 0 <= low_threshold <= threshold < 255, got {low_threshold}, {threshold}")
    height, width = rgb.shape[:2]
    radius = mark_radius(height, width) if radius is None else int(radius)
    if radius < 0:
        raise SonosegError(f"find_marks: radius must be >= 0, got {radius}")
    c = chroma(rgb)
    core = c > threshold
    if not core.any():
        return core
    near = cv2.dilate(core.astype(np.uint8), _disk(halo_reach)) > 0
    marks = core | ((c > low_threshold) & near)
    if radius:
        marks = cv2.dilate(marks.astype(np.uint8), _disk(radius)) > 0
    return marks


def inpaint_marks(rgb: np.ndarray, **find_options) -> tuple[np.ndarray, int]:
    """(the image with its coloured marks inpainted, the number of pixels whose value changed).

    Telea's fast-marching inpainting fills each marked pixel with a weighted average of the known
    pixels around it, marching in from the mark's edge. The marks are thin (1-3 px lines, small
    text) so every filled pixel is within a few pixels of known ones, where Telea and Navier-Stokes
    (``cv2.INPAINT_NS``) give the same quality; Telea is the faster and is deterministic. Neither
    can restore speckle under a large area (a Doppler box): the fill there is smooth.
    Pixels outside ``find_marks`` are copied unchanged; without marks the input comes back as is.
    """
    _check(rgb, "inpaint_marks")
    marks = find_marks(rgb, **find_options)
    if not marks.any():
        return rgb.copy(), 0
    radius = mark_radius(*rgb.shape[:2]) + 2
    filled = cv2.inpaint(np.ascontiguousarray(rgb), marks.astype(np.uint8), radius, INPAINT_METHOD)
    out = np.where(marks[:, :, None], filled, rgb)
    changed = int(np.any(out != rgb, axis=2).sum())
    return out, changed


def _is_cross(component: np.ndarray) -> tuple[float, float] | None:
    """The crossing point (x, y) of a '+' filling a component's bounding-box crop, or None.

    Arms: the component opened with a horizontal and with a vertical line of length ``L`` = 60 % of
    the box's shorter side. A '+' has a box of >= 5 px a side and an aspect ratio <= 1.6; a
    horizontal arm spanning >= 80 % of the width and a vertical one spanning >= 80 % of the height,
    each at most 40 % as thick as the box; the two arms cross within the box's middle third (a 'T'
    or an 'L' crosses at an end); and >= 85 % of the pixels lie on the arms (dilated by 1 px).
    """
    h, w = component.shape
    if min(h, w) < 5 or max(h, w) > 1.6 * min(h, w):
        return None
    length = max(3, int(round(0.6 * min(h, w))))
    comp = component.astype(np.uint8)
    horizontal = cv2.morphologyEx(comp, cv2.MORPH_OPEN, np.ones((1, length), np.uint8)) > 0
    vertical = cv2.morphologyEx(comp, cv2.MORPH_OPEN, np.ones((length, 1), np.uint8)) > 0
    if not (horizontal.any() and vertical.any()):
        return None
    h_cols, v_rows = np.nonzero(horizontal.any(axis=0))[0], np.nonzero(vertical.any(axis=1))[0]
    if h_cols[-1] - h_cols[0] + 1 < 0.8 * w or v_rows[-1] - v_rows[0] + 1 < 0.8 * h:
        return None
    if horizontal.any(axis=1).sum() > 0.4 * h or vertical.any(axis=0).sum() > 0.4 * w:
        return None  # a filled shape, not two thin arms
    ys, xs = np.nonzero(horizontal & vertical)
    if len(xs) == 0:
        return None
    x, y = float(xs.mean()), float(ys.mean())
    if not (w / 3 - 0.5 <= x <= 2 * w / 3 - 0.5 and h / 3 - 0.5 <= y <= 2 * h / 3 - 0.5):
        return None
    arms = cv2.dilate((horizontal | vertical).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if (component & arms).sum() < 0.85 * component.sum():
        return None
    return x, y


def _beside_text(stats: np.ndarray, label: int) -> bool:
    """Whether another component at least half as tall lies within one box width to the left or
    right of this one, overlapping its rows: a '+' typed in coloured text (a legend), not a caliper.
    The dots of a dotted line are smaller and do not count."""
    x, y, w, h = (int(v) for v in stats[label, :4])
    others = np.delete(np.arange(len(stats)), [0, label])
    for other in others:
        ox, oy, ow, oh = (int(v) for v in stats[other, :4])
        rows_overlap = oy < y + h and y < oy + oh
        gap = max(ox - (x + w), x - (ox + ow))
        if rows_overlap and oh >= 0.5 * h and gap <= w:
            return True
    return False


def caliper_centres(rgb: np.ndarray, threshold: int = CHROMA_THRESHOLD) -> list[tuple[float, float]]:
    """Centres (x, y) of the coloured '+' caliper marks, left to right then top to bottom.

    Components (8-connected) of the core (chroma > ``threshold``) after a 3 x 3 closing (a
    JPEG-broken arm is joined again) whose longest side is at most max(15, 5 % of the image's
    longer side), that pass the '+' test of ``_is_cross`` and that have no text beside them
    (``_beside_text``). Text, the dots of a dotted line and Doppler boxes do not pass; an
    'x'-shaped caliper is not read either.
    """
    _check(rgb, "caliper_centres")
    core = (chroma(rgb) > threshold).astype(np.uint8)
    if not core.any():
        return []
    core = cv2.morphologyEx(core, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    largest = max(15, 0.05 * max(rgb.shape[:2]))
    centres = []
    for label in range(1, count):
        x, y, w, h = (int(v) for v in stats[label, :4])
        if max(w, h) > largest:
            continue
        found = _is_cross(labels[y : y + h, x : x + w] == label)
        if found is not None and not _beside_text(stats, label):
            centres.append((x + found[0], y + found[1]))
    return sorted(centres)
