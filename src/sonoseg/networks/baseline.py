"""Non-learned baselines: the floor a trained network must clear ("beyond the paper" rows).

``threshold_baseline`` segments one image with no training at all:

1. grey level of the RGB image; the field of view is the non-black scan area (closed, holes
   filled, eroded a little so that its dark edge is not taken for a lesion);
2. denoise: a median filter, then a Gaussian blur whose width follows the image width (speckle is
   a few pixels wide);
3. threshold: Otsu's threshold over the field of view's pixels; lesions are darker than the
   tissue around them in most ultrasound, so the **dark** class is kept;
4. a small morphological opening to break thin bridges, then the networks' post-processing:
   ``sonoseg.serving.infer.keep_one_lesion`` (one component by the same component rule, holes filled).

The predictions are written like a network's (0/255 PNG at the original size) and evaluated by the
same rules.

``caliper_reader`` (no training) reads the sonographer's coloured '+' calipers
(``sonoseg.data.marks.caliper_centres``) and draws the region they bound, by the number of marks ``n``:

* ``n`` <= 1: an empty mask (one mark bounds nothing);
* ``n`` = 2: the ellipse whose major axis joins the two marks (centre at their midpoint) and whose
  minor axis is ``MINOR_RATIO`` (0.75) times as long;
* ``n`` = 3: the two marks farthest apart are one diameter; the third mark is one end of the other,
  whose other end is its mirror image through the first diameter's line (the foot of the
  perpendicular, kept inside the diameter);
* ``n`` = 4: two diameters: of the three ways to pair the marks, the one with the largest total
  length (the pairing whose segments cross, for two diameters that cross);
* ``n`` >= 5: the ellipse ``cv2.fitEllipse`` fits to the mark centres; their convex hull when the
  fit fails or its longer axis is over twice the marks' largest distance apart.

Two diameters with endpoints A, B and D, E and centre C (where the lines cross when that is within
both segments, else the mean of their midpoints) give the closed curve of four elliptic arcs
``C + cos(t) (P - C) + sin(t) (Q - C)``, t in [0, pi/2], from each endpoint P to the next Q in the
order A, D, B, E: it passes through all four marks, and is the ellipse itself when the diameters are
perpendicular and bisect each other (the two-mark case). The region is filled, then post-processed
by ``keep_one_lesion`` like every other method. It must read the original images (the marks are
what it reads): never the mark-inpainted ones.

``position_prior`` (fitted on the training samples only): every training mask is resized to
``PRIOR_SIZE`` (128 x 128, area interpolation), their mean is the prior (the fraction of training
images in which a pixel is lesion, in coordinates relative to the image), and the prior is
thresholded by the rule "area" (default): at the prior value t whose region {prior >= t} has the
area closest to the training masks' mean lesion area (as a fraction of the image; a tie goes to the
higher t, and a pixel no training mask covered is never lesion), so that the predicted region has
the training set's mean lesion area; a number instead is a fixed threshold (prior >= it). For a
test image the prior is resized to its size (bilinear) and thresholded at the same level, then
``keep_one_lesion``. Every test image of a run gets the same relative region.

``dark_in_prior`` combines the two cues a network could learn without reading the lesion itself: the
threshold baseline's dark class (``dark_region``), kept only inside the *window* where the training
lesions sit — where the position prior (fitted on the training masks only, as above) reaches
``WINDOW_FRACTION`` (0.25) of its peak — then ``keep_one_lesion``. When no dark pixel lies in the
window, the position prior's own region is the answer (where a lesion usually is). It reads nothing of
the test image's annotation: a floor.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from sonoseg.data import marks
from sonoseg.data.imageio import read_image, read_mask
from sonoseg.errors import SonosegError

BASELINES = ("threshold_baseline", "caliper_reader", "position_prior", "dark_in_prior")
# Their labels and families (floor or reference) are in the network catalog (sonoseg.networks.catalog).
NEEDS_TRAINING = ("position_prior", "dark_in_prior")  # baselines that are fitted on the training samples
WINDOW_FRACTION = 0.25  # dark_in_prior: its window is where the prior reaches this fraction of its peak
PARAMETERS = 0  # no learned network parameters (the position prior's map is data, not weights)
MINOR_RATIO = 0.75  # caliper reader, two marks: minor axis / major axis
PRIOR_SIZE = (128, 128)  # position prior: (height, width) the training masks are averaged at


def field_of_view(gray: np.ndarray) -> np.ndarray:
    """The scan area: non-black pixels, closed and hole-filled, eroded by ~1 % of the width."""
    size = max(3, int(gray.shape[1] * 0.012) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    fov = cv2.morphologyEx((gray > 0).astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(fov, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(fov, contours, -1, 1, thickness=cv2.FILLED)
    return cv2.erode(fov, kernel) > 0


def threshold_segment(rgb: np.ndarray, rule: str = "area") -> np.ndarray:
    """The threshold baseline's mask (bool, the image's size) for one RGB uint8 image."""
    from sonoseg.serving.infer import keep_one_lesion  # the networks' post-processing, exactly

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SonosegError(f"threshold_baseline: expected an RGB uint8 image, got {rgb.dtype} {rgb.shape}")
    return keep_one_lesion(dark_region(rgb), rule)


def dark_region(rgb: np.ndarray) -> np.ndarray:
    """The threshold baseline's dark class (bool) before one lesion is kept: steps 1 to 3 of the
    module's docstring and the opening of step 4."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    fov = field_of_view(gray)
    if not fov.any():
        return np.zeros(gray.shape, dtype=bool)
    smooth = cv2.medianBlur(gray, 5)
    smooth = cv2.GaussianBlur(smooth, (0, 0), max(gray.shape[1] / 160, 1.0))
    threshold, _ = cv2.threshold(smooth[fov].reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = (smooth <= threshold) & fov
    size = max(3, int(gray.shape[1] * 0.008) | 1)
    dark = cv2.morphologyEx(
        dark.astype(np.uint8), cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    )
    return dark > 0


# ----------------------------------------------------------------------------- caliper reader


def _arcs(centre: np.ndarray, ends: list[np.ndarray], steps: int = 32) -> np.ndarray:
    """The closed curve of elliptic arcs C + cos(t) (P - C) + sin(t) (Q - C) through ``ends`` in order."""
    t = np.linspace(0, np.pi / 2, steps, endpoint=False)[:, None]
    points = [centre + np.cos(t) * (p - centre) + np.sin(t) * (q - centre) for p, q in zip(ends, ends[1:] + ends[:1])]
    return np.vstack(points)


def _two_diameters(a, b, d, e) -> np.ndarray:
    """The four-arc outline of two diameters AB and DE (see the module's docstring)."""
    a, b, d, e = (np.asarray(p, dtype=float) for p in (a, b, d, e))
    centre = (a + b + d + e) / 4
    r, s = b - a, e - d
    denominator = r[0] * s[1] - r[1] * s[0]
    if abs(denominator) > 1e-9:
        t = ((d - a)[0] * s[1] - (d - a)[1] * s[0]) / denominator
        u = ((d - a)[0] * r[1] - (d - a)[1] * r[0]) / denominator
        if 0 <= t <= 1 and 0 <= u <= 1:
            centre = a + t * r
    return _arcs(centre, [a, d, b, e])


def caliper_outline(centres: list[tuple[float, float]]) -> np.ndarray | None:
    """The outline (N x 2 float array of x, y) the caliper reader fills for these mark centres, or
    None when they bound nothing (fewer than two marks)."""
    points = np.asarray(centres, dtype=float).reshape(-1, 2)
    n = len(points)
    if n <= 1:
        return None
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    if n == 2:
        a, b = points
        half = (b - a) / 2
        minor = MINOR_RATIO * np.array([-half[1], half[0]])
        centre = (a + b) / 2
        return _two_diameters(a, b, centre + minor, centre - minor)
    if n == 3:
        i, j = np.unravel_index(np.argmax(distances), distances.shape)
        a, b, d = points[i], points[j], points[3 - i - j]
        axis = b - a
        t = np.clip(np.dot(d - a, axis) / max(np.dot(axis, axis), 1e-9), 0, 1)
        foot = a + t * axis
        if np.linalg.norm(d - foot) < 1:  # three marks in a line: as two marks
            return caliper_outline([tuple(a), tuple(b)])
        return _two_diameters(a, b, d, 2 * foot - d)
    if n == 4:
        pairings = [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
        (i, j), (k, m) = max(pairings, key=lambda pq: distances[pq[0]] + distances[pq[1]])
        if distances[i, j] < distances[k, m]:
            (i, j), (k, m) = (k, m), (i, j)
        return _two_diameters(points[i], points[j], points[k], points[m])
    (cx, cy), (width, height), angle = cv2.fitEllipse(points.astype(np.float32))
    if np.all(np.isfinite([cx, cy, width, height, angle])) and 0 < max(width, height) <= 2 * distances.max():
        outline = cv2.ellipse2Poly(
            (int(round(cx)), int(round(cy))),
            (max(int(round(width / 2)), 1), max(int(round(height / 2)), 1)),
            int(round(angle)),
            0,
            360,
            5,
        )
        return outline.astype(float)
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(float)


def caliper_segment(rgb: np.ndarray, rule: str = "area") -> np.ndarray:
    """The caliper reader's mask (bool, the image's size) for one RGB uint8 image (rules above)."""
    from sonoseg.serving.infer import keep_one_lesion  # the networks' post-processing, exactly

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SonosegError(f"caliper_reader: expected an RGB uint8 image, got {rgb.dtype} {rgb.shape}")
    region = np.zeros(rgb.shape[:2], dtype=np.uint8)
    outline = caliper_outline(marks.caliper_centres(rgb))
    if outline is not None:
        cv2.fillPoly(region, [np.round(outline).astype(np.int32)], 1)
    return keep_one_lesion(region > 0, rule)


# ----------------------------------------------------------------------------- position prior


class PositionPrior:
    """The mean training mask at ``PRIOR_SIZE`` and its threshold (see the module's docstring)."""

    def __init__(self, prior: np.ndarray, threshold: float):
        self.prior = prior.astype(np.float32)
        self.threshold = float(threshold)

    @classmethod
    def fit(cls, masks, threshold: float | str = "area", size: tuple[int, int] = PRIOR_SIZE) -> PositionPrior:
        """Fit on an iterable of bool/0-1/0-255 2-D masks (the training set's, any sizes)."""
        height, width = size
        total = np.zeros((height, width), dtype=np.float64)
        fractions = []
        for mask in masks:
            mask = np.asarray(mask)
            if mask.ndim != 2 or mask.size == 0:
                raise SonosegError(f"position_prior: a training mask must be a 2-D array, got shape {mask.shape}")
            lesion = (mask > 0).astype(np.float32)
            total += cv2.resize(lesion, (width, height), interpolation=cv2.INTER_AREA)
            fractions.append(float(lesion.mean()))
        if not fractions:
            raise SonosegError("position_prior: no training masks to fit the prior on")
        prior = (total / len(fractions)).astype(np.float32)
        if isinstance(threshold, str):
            if threshold != "area":
                raise SonosegError(f"position_prior: threshold {threshold!r} is neither 'area' nor a number")
            target = np.mean(fractions) * prior.size
            levels, counts = np.unique(prior[prior > 0], return_counts=True)
            if len(levels) == 0:
                raise SonosegError("position_prior: every training mask is empty (no lesion to place)")
            areas = np.cumsum(counts[::-1])[::-1]  # areas[i]: pixels with prior >= levels[i]
            # The closest area; on a tie the higher level (the smaller region).
            level = float(levels[len(levels) - 1 - int(np.argmin(np.abs(areas[::-1] - target)))])
        else:
            level = float(threshold)
            if not 0 < level <= 1:
                raise SonosegError(f"position_prior: a fixed threshold must be in (0, 1], got {level}")
        # A pixel no training mask covered is never lesion.
        return cls(prior, max(level, 1e-6))

    def segment(self, height: int, width: int, rule: str = "area") -> np.ndarray:
        """The prior's region (bool) at an image's size, post-processed by ``keep_one_lesion``."""
        from sonoseg.serving.infer import keep_one_lesion  # the networks' post-processing, exactly

        resized = cv2.resize(self.prior, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
        return keep_one_lesion(resized >= self.threshold, rule)

    def dark_in_window(self, dark: np.ndarray, rule: str = "area") -> np.ndarray:
        """``dark`` (an image's dark region, bool) kept inside the prior's window (prior >= WINDOW_FRACTION
        of its peak, at the image's size), then ``keep_one_lesion``; the prior's region when none is."""
        from sonoseg.serving.infer import keep_one_lesion

        height, width = dark.shape
        resized = cv2.resize(self.prior, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
        inside = dark & (resized >= WINDOW_FRACTION * float(self.prior.max()))
        return keep_one_lesion(inside, rule) if inside.any() else self.segment(height, width, rule)


def _training_masks(train_samples: pd.DataFrame):
    for row in train_samples.itertuples(index=False):
        yield read_mask(row.mask).pixels


def fit_position_prior(train_samples: pd.DataFrame | None, threshold: float | str = "area") -> PositionPrior:
    """The position prior fitted on the training samples (a table with a ``mask`` column)."""
    if train_samples is None:
        raise SonosegError(
            "baseline position_prior is fitted on the training samples: pass train_samples (the training "
            "split's rows, with a 'mask' column); none were given"
        )
    if "mask" not in train_samples.columns:
        raise SonosegError(
            "baseline position_prior: the training samples have no 'mask' column "
            f"(columns: {list(train_samples.columns)})"
        )
    if len(train_samples) == 0:
        raise SonosegError("baseline position_prior: the training samples are empty (no masks to fit the prior on)")
    return PositionPrior.fit(_training_masks(train_samples), threshold)


# ----------------------------------------------------------------------------- predict


def predict(
    name: str,
    samples: pd.DataFrame,
    outdir: str | Path,
    rule: str = "area",
    train_samples: pd.DataFrame | None = None,
    marks: str = "keep",
) -> int:
    """Write <outdir>/<sample_id>.png (0/255) for every sample, as a network's predict does.

    ``train_samples`` (the training split's rows, ``image``/``mask`` columns) is needed by the
    baselines in ``NEEDS_TRAINING`` (the position prior) and ignored by the others. ``marks``: the
    images as the study's networks see them (``inpaint``: coloured marks inpainted first) for the
    threshold baseline; the caliper reader always reads the image as it is (the marks are its input).
    """
    from sonoseg.data.preprocess import remove_marks

    if name not in BASELINES:
        raise SonosegError(f"baseline {name!r} is not one of {BASELINES}")
    prior = fit_position_prior(train_samples) if name in NEEDS_TRAINING else None
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for row in samples.itertuples(index=False):
        pixels = read_image(row.image).pixels
        if name == "threshold_baseline":
            mask = threshold_segment(remove_marks(pixels, marks)[0], rule)
        elif name == "caliper_reader":
            mask = caliper_segment(pixels, rule)
        elif name == "dark_in_prior":
            mask = prior.dark_in_window(dark_region(remove_marks(pixels, marks)[0]), rule)
        else:
            mask = prior.segment(pixels.shape[0], pixels.shape[1], rule)
        cv2.imwrite(str(outdir / f"{row.sample_id}.png"), mask.astype(np.uint8) * 255)
    return len(samples)
