"""A built-in synthetic B-mode phantom (v2) that stands in for the paper's private, multi-organ data.

Each patient has one lesion, a 3-D blob imaged in two orthogonal planes (two views), inside one of
four organ presets (breast, liver, lymph node, soft tissue) whose background holds structures that
are *not* the lesion: hypoechoic fat layers, vessels, simple cysts, normal lymph nodes with an
echogenic hilum, rib and bowel-gas shadows, fascia lines. Keeping "the" lesion is therefore a real
decision, not "the largest dark blob".

Lesion types follow their acoustic behaviour: hypoechoic solid (often posterior shadowing),
anechoic cyst (posterior enhancement), isoechoic with a dark halo, heterogeneous, hyperechoic,
hypoechoic with microcalcifications (bright specks). Margins are smooth, lobulated, microlobulated,
spiculated or indistinct. Contrast is drawn per lesion, down to barely visible.

An image is made the way a scanner makes one: random scatterers whose echogenicity follows the
tissue map, blurred by a point-spread function that widens with depth (out of focus), envelope
detected (Rayleigh speckle), attenuated with depth and imperfectly compensated, log-compressed to
about 50 dB and cut to a linear or sector field of view. The ground-truth mask is an annotator's
outline: the lesion body smoothed, slightly jittered, sometimes a little over or under the edge.
Light-blue calipers (optional, with placement noise) are drawn near the lesion's extent, never on
the mask. Everything is drawn from generators seeded by (seed, patient[, view]): same seed, same
bytes. ``synthetic.difficulty`` (easy | paper | hard) scales contrast, clutter and margin ambiguity.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sonoseg.errors import SonosegError

ORIGINAL_SIZES = ((380, 646), (432, 646))
CALIPER_RGB = (120, 200, 255)  # light blue, as the scanners' electronic calipers
DYNAMIC_RANGE_DB = 50.0
MEDIAN_BELOW_TOP_DB = 22.0

ORGANS = ("breast", "liver", "lymph_node", "soft_tissue")
DEFAULT_ORGAN_WEIGHTS = {"breast": 0.4, "liver": 0.25, "lymph_node": 0.2, "soft_tissue": 0.15}
LESION_TYPES = ("hypoechoic", "anechoic_cyst", "isoechoic_halo", "heterogeneous", "hyperechoic", "microcalcifications")
MARGINS = ("smooth", "lobulated", "microlobulated", "spiculated", "indistinct")
METADATA_COLUMNS = ("organ", "lesion_type", "margin", "contrast_db", "lesion_area_px", "calipers")


@dataclass(frozen=True)
class Difficulty:
    """How hard the phantom is: lesion contrast, clutter, margin ambiguity and annotation noise."""

    contrast_db: tuple[float, float]  # |lesion - background| in dB for solid lesions (uniform draw)
    clutter: float  # expected number of non-lesion structures per image, before the organ's own
    margin_weights: tuple[float, ...]  # over MARGINS
    type_weights: tuple[float, ...]  # over LESION_TYPES
    annotation_noise: float  # amplitude of the annotator's jitter and over/under bias


DIFFICULTIES = {
    "easy": Difficulty((12.0, 22.0), 0.8, (0.35, 0.35, 0.1, 0.1, 0.1), (0.45, 0.2, 0.05, 0.1, 0.1, 0.1), 0.5),
    "paper": Difficulty((6.0, 20.0), 3.0, (0.25, 0.3, 0.15, 0.15, 0.15), (0.28, 0.14, 0.18, 0.1, 0.18, 0.12), 0.75),
    "hard": Difficulty((3.5, 18.0), 2.5, (0.2, 0.25, 0.2, 0.15, 0.2), (0.3, 0.12, 0.14, 0.16, 0.12, 0.16), 1.0),
}


@dataclass(frozen=True)
class PhantomOptions:
    """The config's ``synthetic`` section, minus patient count, seed and size."""

    difficulty: str = "paper"
    calipers: bool = True
    caliper_noise: float = 3.0  # px at the paper's width: sd of the caliper's placement error
    organs: dict = field(default_factory=lambda: dict(DEFAULT_ORGAN_WEIGHTS))

    def __post_init__(self):
        if self.difficulty not in DIFFICULTIES:
            raise SonosegError(f"synthetic.difficulty: {self.difficulty!r} is not one of {tuple(DIFFICULTIES)}")
        unknown = set(self.organs) - set(ORGANS)
        if unknown or not self.organs or any(w < 0 for w in self.organs.values()) or sum(self.organs.values()) <= 0:
            raise SonosegError(
                f"synthetic.organs: weights over {ORGANS} must be >= 0 with a positive sum, got {self.organs}"
            )
        if self.caliper_noise < 0:
            raise SonosegError(f"synthetic.caliper_noise: must be >= 0, got {self.caliper_noise}")


@dataclass(frozen=True)
class Lesion:
    """A blob: semi-axes in pixels (lateral x, lateral y, depth), margin harmonics and spicules."""

    center_x: float
    center_depth: float
    semi_axes: tuple[float, float, float]
    tilt: float  # radians, rotation of the blob in the image plane
    harmonics: np.ndarray  # (k, amplitude, phase) rows: lobulation of the margin
    spikes: np.ndarray  # (angle, length, half-width) rows: spicules (empty unless spiculated)
    softness: float  # width of the echo transition at the edge, relative to the radius
    lesion_type: str
    margin: str
    contrast_db: float  # mean echo inside relative to the background, dB (< 0: darker)
    posterior: float  # > 1: enhancement, < 1: shadowing


def _choose(rng: np.random.Generator, names: tuple[str, ...], weights) -> str:
    weights = np.asarray(weights, dtype=float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _draw_lesion(rng: np.random.Generator, height: int, width: int, difficulty: Difficulty) -> Lesion:
    lesion_type = _choose(rng, LESION_TYPES, difficulty.type_weights)
    margin = _choose(rng, MARGINS, difficulty.margin_weights)
    if lesion_type == "anechoic_cyst" and margin not in ("smooth", "lobulated"):
        margin = "smooth"  # a simple or septated cyst has a sharp wall
    depth_axis = rng.uniform(0.08, 0.19) * height
    lateral = rng.uniform(0.07, 0.16, size=2) * width
    lobes = {
        "smooth": (1, 0.0, 0.03),
        "lobulated": (rng.integers(2, 5), 0.06, 0.15),
        "microlobulated": (rng.integers(2, 4), 0.02, 0.06),
        "spiculated": (rng.integers(2, 4), 0.02, 0.08),
        "indistinct": (rng.integers(2, 4), 0.03, 0.1),
    }[margin]
    n_lobes, low, high = lobes
    harmonics = np.stack(
        [
            rng.choice(np.arange(2, 7), size=n_lobes, replace=False).astype(float),
            rng.uniform(low, high, size=n_lobes),
            rng.uniform(0, 2 * np.pi, size=n_lobes),
        ],
        axis=1,
    )
    if margin == "microlobulated":  # many small bumps on the outline
        k = rng.choice(np.arange(10, 19), size=3, replace=False).astype(float)
        harmonics = np.vstack(
            [harmonics, np.stack([k, rng.uniform(0.025, 0.05, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)]
        )
    spikes = np.zeros((0, 3))
    if margin == "spiculated":
        count = int(rng.integers(7, 15))
        spikes = np.stack(
            [rng.uniform(0, 2 * np.pi, count), rng.uniform(0.25, 0.6, count), rng.uniform(0.04, 0.09, count)], axis=1
        )
    softness = rng.uniform(0.25, 0.45) if margin == "indistinct" else rng.uniform(0.02, 0.05)
    low_db, high_db = difficulty.contrast_db
    magnitude = rng.uniform(low_db, high_db)
    contrast_db, posterior = {
        # posterior: echo gain in the columns below (cysts enhance, solid masses often shadow)
        "hypoechoic": (-magnitude, rng.choice([rng.uniform(0.12, 0.45), 1.0, rng.uniform(1.3, 1.8)])),
        "anechoic_cyst": (-rng.uniform(22, 30), rng.uniform(2.0, 3.5)),
        "isoechoic_halo": (rng.uniform(-1.5, 1.5), 1.0),
        "heterogeneous": (-0.5 * magnitude, rng.choice([rng.uniform(0.2, 0.6), rng.uniform(1.3, 2.0)])),
        "hyperechoic": (0.6 * magnitude + 1.0, rng.uniform(0.35, 0.9)),
        "microcalcifications": (-magnitude, rng.uniform(0.15, 0.6)),
    }[lesion_type]
    return Lesion(
        center_x=rng.uniform(0.3, 0.7) * width,
        center_depth=rng.uniform(0.35, 0.62) * height,
        semi_axes=(float(lateral[0]), float(lateral[1]), float(depth_axis)),
        tilt=float(rng.uniform(-0.5, 0.5)),
        harmonics=harmonics,
        spikes=spikes,
        softness=float(softness),
        lesion_type=lesion_type,
        margin=margin,
        contrast_db=float(contrast_db),
        posterior=float(posterior),
    )


@dataclass
class LesionGeometry:
    """The lesion in one view, evaluated in its bounding box ``box`` = (y0, y1, x0, x1)."""

    box: tuple[int, int, int, int]
    weight: np.ndarray  # float32 in [0, 1]: how much of the pixel is lesion tissue (soft for indistinct)
    body: np.ndarray  # bool: the outline an annotator follows (spicule tips left out)
    rim: np.ndarray  # float32: normalised distance inside the edge, 0 at the edge, 1 at the centre


def _lesion_geometry(lesion: Lesion, view: int, height: int, width: int) -> LesionGeometry:
    """Cross-section of the blob in view 1 (x-depth plane) or view 2 (y-depth plane)."""
    lateral = lesion.semi_axes[0] if view == 1 else lesion.semi_axes[1]
    extra = lesion.harmonics[:, 1].sum() + (lesion.spikes[:, 1].max() if len(lesion.spikes) else 0) + lesion.softness
    reach = max(lateral, lesion.semi_axes[2]) * (1 + extra)
    y0, y1 = int(max(lesion.center_depth - reach, 0)), int(min(lesion.center_depth + reach + 1, height))
    x0, x1 = int(max(lesion.center_x - reach, 0)), int(min(lesion.center_x + reach + 1, width))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dz = xx - lesion.center_x, yy - lesion.center_depth
    c, s = np.cos(lesion.tilt), np.sin(lesion.tilt)
    u, w = c * dx + s * dz, -s * dx + c * dz
    angle = np.arctan2(w / lesion.semi_axes[2], u / lateral)
    radius = np.hypot(u / lateral, w / lesion.semi_axes[2])
    # The second view sees the same lobes and spicules, shifted by a quarter turn of the blob.
    shift = 0.0 if view == 1 else np.pi / 2
    outline = np.ones_like(angle)
    for k, amplitude, phase in lesion.harmonics:
        outline += np.float32(amplitude) * np.cos(np.float32(k) * angle + np.float32(phase + k * shift))
    spicules = np.zeros_like(angle)
    for spike_angle, length, half_width in lesion.spikes:
        offset = np.abs((angle - np.float32(spike_angle + shift) + np.pi) % (2 * np.pi) - np.pi)
        spicules = np.maximum(spicules, np.float32(length) * np.clip(1 - offset / np.float32(half_width), 0, 1) ** 2)
    weight = np.clip((outline + spicules - radius) / np.float32(lesion.softness) + 0.5, 0, 1)
    # Annotators trace the mass and the bases of its spicules, not their tips.
    body = radius <= outline + 0.25 * spicules
    rim = np.clip(1 - radius / outline, 0, 1)
    return LesionGeometry((y0, y1, x0, x1), weight.astype(np.float32), body, rim.astype(np.float32))


def _field_of_view(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :] - width / 2
    top = int(height * rng.uniform(0.045, 0.09))  # 18-40 px at the paper's sizes
    bottom = height - height // 50
    if rng.random() < 0.5:  # linear probe: a rectangle
        half = rng.uniform(0.38, 0.47) * width
        return (np.abs(xx) <= half) & (yy >= top) & (yy < bottom)
    apex_depth = -rng.uniform(0.3, 0.8) * height  # sector / curvilinear: a fan from a virtual apex
    half_angle = np.deg2rad(rng.uniform(28, 38))
    r = np.hypot(xx, yy - apex_depth)
    # Inside the fan when the angle from the axis is below half_angle: |x| <= tan(half) * depth.
    return (np.abs(xx) <= np.tan(half_angle) * (yy - apex_depth)) & (r >= top - apex_depth) & (r <= bottom - apex_depth)


# ----------------------------------------------------------------------------- organ backgrounds


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """A smooth random field with unit standard deviation and features about ``cell`` pixels wide."""
    cell = max(cell, 2.0)
    coarse = rng.standard_normal((int(height / cell) + 3, int(width / cell) + 3)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return field / (field.std() + 1e-6)


class Scene:
    """The echogenicity map of one image being built, with the lesion's keep-out zone."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, lesion: Lesion, lesion_box):
        self.rng, self.height, self.width = rng, height, width
        self.scale = width / 646  # pixel sizes below are given at the paper's width
        self.depth = np.arange(height, dtype=np.float32)[:, None]
        self.x = np.arange(width, dtype=np.float32)[None, :]
        self.echo = np.ones((height, width), dtype=np.float32)
        y0, y1, x0, x1 = lesion_box
        pad = 10 * self.scale
        self.keep_out = (y0 - pad, y1 + pad, x0 - pad, x1 + pad)  # no distractor drawn over the lesion

    def px(self, value: float) -> float:
        return max(value * self.scale, 1.0)

    def boundary(self, fraction: float, amplitude: float) -> np.ndarray:
        """A wavy layer boundary (depth per column) at ``fraction`` of the height."""
        rng = self.rng
        wave = np.sin(self.x / (rng.uniform(40, 120) * self.scale) + rng.uniform(0, 6))
        return fraction * self.height + self.px(amplitude) * wave

    def layers(self, tops: list[np.ndarray], values: list[float], fascia: float = 2.2) -> None:
        """Tissue layers below each boundary in ``tops``, with a bright fascia line on each boundary."""
        index = np.zeros((self.height, self.width), dtype=np.uint8)
        for top in tops:
            index += self.depth >= top
        self.echo *= np.asarray(values, dtype=np.float32)[index]
        lines = np.zeros((self.height, self.width), dtype=np.uint8)
        columns = np.arange(self.width)
        for top in tops:
            points = np.stack([columns, np.asarray(top).ravel()], axis=1).round().astype(np.int32)
            cv2.polylines(lines, [points], False, 1, thickness=max(int(round(self.px(3.0))), 1))
        self.echo[lines > 0] *= np.float32(fascia)

    def texture(self, strength: float, cell: float) -> None:
        self.echo *= np.exp(strength * _smooth_noise(self.rng, self.height, self.width, cell * self.scale))

    def septa(self, top: np.ndarray, bottom: np.ndarray, brightness: float) -> None:
        """Thin bright curved lines (Cooper's ligaments, fat septa) between two boundaries."""
        noise = _smooth_noise(self.rng, self.height, self.width, 45 * self.scale)
        lines = (np.abs(noise) < 0.07) & (self.depth > top) & (self.depth < bottom)
        self.echo *= 1 + (brightness - 1) * lines

    def striations(self, top: np.ndarray, bottom: np.ndarray) -> None:
        """Muscle: roughly horizontal fibre stripes (computed only on the rows the muscle spans)."""
        rng = self.rng
        r0 = int(max(np.min(top), 0))
        r1 = int(min(np.max(bottom) + 1, self.height))
        if r1 <= r0:
            return
        depth = self.depth[r0:r1]
        bend = 8 * self.scale * _smooth_noise(rng, r1 - r0, self.width, 120 * self.scale)
        stripes = 1 + 0.45 * np.sin(np.float32(2 * np.pi / (rng.uniform(7, 12) * self.scale)) * (depth + bend))
        inside = (depth > top) & (depth < bottom)
        self.echo[r0:r1] = np.where(inside, self.echo[r0:r1] * stripes, self.echo[r0:r1])

    def _clear(self, y0: float, y1: float, x0: float, x1: float) -> bool:
        k0, k1, k2, k3 = self.keep_out
        return y1 < k0 or y0 > k1 or x1 < k2 or x0 > k3

    def _place(self, ry: float, rx: float, top: float = 0.15, bottom: float = 0.92):
        """A centre for an ellipse with semi-axes (ry, rx) clear of the lesion, or None."""
        for _ in range(8):
            cy = self.rng.uniform(top, bottom) * self.height
            cx = self.rng.uniform(0.1, 0.9) * self.width
            if self._clear(cy - ry, cy + ry, cx - rx, cx + rx):
                return cy, cx
        return None

    def _ellipse(self, cy, cx, ry, rx, angle=0.0):
        y0, y1 = int(max(cy - max(ry, rx) - 2, 0)), int(min(cy + max(ry, rx) + 3, self.height))
        x0, x1 = int(max(cx - max(ry, rx) - 2, 0)), int(min(cx + max(ry, rx) + 3, self.width))
        if y1 <= y0 or x1 <= x0:
            return None, None
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        c, s = np.cos(angle), np.sin(angle)
        u, w = c * (xx - cx) + s * (yy - cy), -s * (xx - cx) + c * (yy - cy)
        return (slice(y0, y1), slice(x0, x1)), np.hypot(u / rx, w / ry)

    # -- structures that are not the lesion

    def cyst(self) -> None:
        """A small simple cyst: anechoic with a slight posterior enhancement."""
        ry = self.px(self.rng.uniform(5, 14))
        rx = ry * self.rng.uniform(1.0, 1.8)
        where = self._place(ry, rx)
        if where is None:
            return
        box, r = self._ellipse(*where, ry, rx, self.rng.uniform(-0.4, 0.4))
        if box is not None:
            self.echo[box] = np.where(r <= 1, np.float32(0.004), self.echo[box])

    def node(self) -> None:
        """A normal lymph node: hypoechoic cortex around an echogenic fatty hilum."""
        ry = self.px(self.rng.uniform(14, 26))
        rx = ry * self.rng.uniform(1.6, 2.6)
        where = self._place(ry, rx, 0.2, 0.85)
        if where is None:
            return
        box, r = self._ellipse(*where, ry, rx, self.rng.uniform(-0.3, 0.3))
        if box is None:
            return
        cortex = np.float32(10 ** (-self.rng.uniform(8, 14) / 10))
        self.echo[box] = np.where(
            r <= 1, np.where(r <= self.rng.uniform(0.35, 0.6), np.float32(1.8), cortex), self.echo[box]
        )

    def vessel(self, wall: bool) -> None:
        """A vessel along the image plane: an anechoic tube, with a bright wall for portal veins/arteries."""
        rng = self.rng
        radius = self.px(rng.uniform(4, 13))
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, size=2) * self.width)
        if x1 - x0 < 0.25 * self.width:
            x1 = x0 + 0.25 * self.width
        slope, amplitude = rng.uniform(-0.12, 0.12), self.px(rng.uniform(0, 15))
        period = rng.uniform(60, 200) * self.scale
        for _ in range(8):
            y0 = rng.uniform(0.15, 0.92) * self.height
            center = y0 + slope * (self.x - self.width / 2) + amplitude * np.sin(self.x / period)
            k0, k1, k2, k3 = self.keep_out
            span = (self.x >= max(x0, k2)) & (self.x <= min(x1, k3))
            if not span.any() or np.all((center[span] + radius < k0) | (center[span] - radius > k1)):
                break
        else:
            return
        distance = np.abs(self.depth - center)
        along = (self.x >= x0) & (self.x <= x1)
        if wall:
            self.echo = np.where(along & (distance < radius + self.px(2.0)), np.float32(3.0), self.echo)
        self.echo = np.where(along & (distance < radius), np.float32(0.006), self.echo)

    def column_clear_of_lesion(self, half: float) -> float | None:
        """A horizontal centre whose +-half band misses the lesion's columns (8 tries), so a shadow
        cast straight down never crosses the lesion; None when no such place was drawn."""
        _, _, left, right = self.keep_out
        for _ in range(8):
            cx = self.rng.uniform(0.05, 0.95) * self.width
            if cx + half < left or cx - half > right:
                return cx
        return None

    def rib_shadow(self, top_fraction: tuple[float, float]) -> None:
        """A rib (or bone): a bright curved surface and a dark acoustic shadow below it, clear of the lesion."""
        rng = self.rng
        half = self.px(rng.uniform(25, 55))
        cx = self.column_clear_of_lesion(half)
        if cx is None:
            return
        top = rng.uniform(*top_fraction) * self.height
        surface = top + (self.x - cx) ** 2 / (4 * half)
        columns = np.clip(1 - np.abs(self.x - cx) / half, 0, 1) ** 0.3
        below = np.clip((self.depth - surface) / self.px(3.0), 0, 1) * columns
        self.echo *= 1 + 3.0 * ((np.abs(self.depth - surface) < self.px(3.0)) * columns)
        self.echo *= 1 - (1 - np.float32(rng.uniform(0.01, 0.06))) * below

    def bowel(self) -> None:
        """Bowel gas: a bright irregular line with a dirty shadow (reverberation bands) below it."""
        rng = self.rng
        half = self.px(rng.uniform(35, 80))
        cx = self.column_clear_of_lesion(half)
        if cx is None:
            return
        top = rng.uniform(0.3, 0.75) * self.height
        surface = top + self.px(6) * np.sin(self.x / (rng.uniform(8, 20) * self.scale))
        columns = (np.abs(self.x - cx) < half).astype(np.float32)
        gap = rng.uniform(10, 18) * self.scale
        below = (self.depth > surface) * columns
        bands = 0.25 + 0.5 * (np.cos(2 * np.pi * (self.depth - surface) / gap) > 0.85)
        self.echo *= 1 + 4.0 * ((np.abs(self.depth - surface) < self.px(2.5)) * columns)
        self.echo = np.where(below > 0, self.echo * bands.astype(np.float32), self.echo)


def _breast(scene: Scene) -> None:
    rng = scene.rng
    skin, fat = scene.boundary(rng.uniform(0.07, 0.11), 4), scene.boundary(rng.uniform(0.13, 0.2), 6)
    gland = scene.boundary(rng.uniform(0.28, 0.4), 14)
    retro = scene.boundary(rng.uniform(0.72, 0.82), 8)
    muscle = retro + scene.px(rng.uniform(8, 18))
    scene.layers([skin, fat, gland, retro, muscle], [0.2, 1.8, 0.28, 1.1, 0.3, 0.65])
    scene.septa(fat, gland, 5.0)
    scene.striations(muscle, np.full_like(muscle, scene.height))
    scene.texture(0.35, 18)
    if rng.random() < 0.35:
        scene.rib_shadow((0.82, 0.9))


def _liver(scene: Scene) -> None:
    rng = scene.rng
    skin, fat = scene.boundary(rng.uniform(0.06, 0.09), 3), scene.boundary(rng.uniform(0.1, 0.14), 4)
    muscle = scene.boundary(rng.uniform(0.15, 0.2), 5)
    capsule = muscle + scene.px(rng.uniform(12, 25))
    scene.layers([skin, fat, muscle, capsule], [0.2, 1.8, 0.35, 0.7, 0.9], fascia=3.0)
    scene.striations(muscle, capsule)
    scene.texture(0.2, 10)
    for _ in range(int(rng.integers(1, 4))):
        scene.vessel(wall=bool(rng.random() < 0.6))
    if rng.random() < 0.5:
        scene.rib_shadow((0.12, 0.25))


def _lymph_node(scene: Scene) -> None:
    rng = scene.rng
    skin, fat = scene.boundary(rng.uniform(0.06, 0.1), 3), scene.boundary(rng.uniform(0.11, 0.16), 5)
    muscle_top = scene.boundary(rng.uniform(0.2, 0.28), 8)
    muscle_bottom = muscle_top + scene.px(rng.uniform(25, 50))
    scene.layers([skin, fat, muscle_top, muscle_bottom], [0.2, 1.8, 0.4, 0.6, 1.0])
    scene.striations(muscle_top, muscle_bottom)
    scene.texture(0.3, 14)
    for _ in range(int(rng.integers(1, 4))):
        scene.node()
    if rng.random() < 0.6:
        scene.vessel(wall=False)


def _soft_tissue(scene: Scene) -> None:
    rng = scene.rng
    skin, fat = scene.boundary(rng.uniform(0.06, 0.1), 3), scene.boundary(rng.uniform(0.12, 0.18), 6)
    muscle = scene.boundary(rng.uniform(0.3, 0.42), 12)
    deep = muscle + scene.px(rng.uniform(40, 80))
    scene.layers([skin, fat, muscle, deep], [0.2, 1.8, 0.3, 0.6, 0.9], fascia=3.0)
    scene.septa(fat, muscle, 4.0)
    scene.striations(muscle, deep)
    scene.texture(0.3, 16)
    if rng.random() < 0.5:
        scene.bowel()
    elif rng.random() < 0.5:
        scene.rib_shadow((0.55, 0.8))


ORGAN_BACKGROUNDS = {"breast": _breast, "liver": _liver, "lymph_node": _lymph_node, "soft_tissue": _soft_tissue}


def _clutter(scene: Scene, difficulty: Difficulty) -> None:
    """Extra non-lesion structures, as many as the difficulty asks (Poisson)."""
    rng = scene.rng
    for _ in range(int(rng.poisson(difficulty.clutter))):
        kind = rng.choice(4, p=[0.35, 0.35, 0.15, 0.15])
        if kind == 0:
            scene.cyst()
        elif kind == 1:
            scene.vessel(wall=bool(rng.random() < 0.5))
        elif kind == 2:
            scene.node()
        else:
            scene.rib_shadow((0.15, 0.85))


# ----------------------------------------------------------------------------- the lesion


def _add_lesion(scene: Scene, lesion: Lesion, geometry: LesionGeometry) -> None:
    """Replace the background by the lesion's echo (by its soft weight), then its posterior feature."""
    rng, (y0, y1, x0, x1) = scene.rng, geometry.box
    shape = geometry.weight.shape
    # Relative to the local background level, so that a lesion in dark fat is still a lesion.
    local = np.float32(np.median(scene.echo[y0:y1, x0:x1]))
    gain = np.full(shape, 10 ** (lesion.contrast_db / 10), dtype=np.float32)
    if lesion.lesion_type == "heterogeneous":
        patches = cv2.resize(
            rng.standard_normal((max(shape[0] // 10, 2), max(shape[1] // 10, 2))).astype(np.float32),
            (shape[1], shape[0]),
            interpolation=cv2.INTER_CUBIC,
        )
        gain *= 10 ** (np.float32(rng.uniform(5, 9)) * patches / 10)
    elif lesion.lesion_type == "isoechoic_halo":
        halo_db = -rng.uniform(8, 16)
        # A thick rim (a quarter to 40 % of the radius), as the halo or "target" sign of metastases and
        # breast carcinomas: a thin one vanishes in the speckle and at the study's input sizes, leaving
        # an invisible lesion no method can find.
        halo = (geometry.rim < rng.uniform(0.25, 0.4)) & (geometry.weight > 0.5)
        gain = np.where(halo, np.float32(10 ** (halo_db / 10)), gain)
    elif lesion.lesion_type == "anechoic_cyst":
        pass
    else:
        gain *= np.exp(0.15 * rng.standard_normal(1)).astype(np.float32)
    if lesion.lesion_type == "microcalcifications":
        inside = np.argwhere(geometry.body)
        if len(inside):
            specks = inside[rng.choice(len(inside), size=min(int(rng.integers(6, 25)), len(inside)), replace=False)]
            gain[specks[:, 0], specks[:, 1]] = np.float32(rng.uniform(300, 800)) / max(local, 1e-3)
    region = scene.echo[y0:y1, x0:x1]
    scene.echo[y0:y1, x0:x1] = region * (1 - geometry.weight) + geometry.weight * local * gain
    if lesion.posterior == 1.0:
        return
    # Posterior acoustic feature: the columns under the lesion, fading with distance below it.
    inside = geometry.weight > 0.5
    columns = inside.any(axis=0)
    if not columns.any():
        return
    bottom = np.full(scene.width, scene.height, dtype=np.float32)
    bottom[x0:x1] = np.where(columns, y0 + shape[0] - 1 - np.argmax(inside[::-1], axis=0), scene.height)
    strip = np.zeros(scene.width, dtype=np.float32)
    strip[x0:x1] = columns
    strip = cv2.blur(strip[None, :], (int(scene.px(15)) | 1, 1))[0]
    # Only the rows and columns that can be under the lesion are touched.
    c0, c1 = x0, x1
    r0 = int(bottom[c0:c1].min())
    distance = scene.depth[r0:] - bottom[None, c0:c1]
    weight = (
        np.clip(distance / scene.px(6), 0, 1) * np.exp(-distance.clip(0) / (0.8 * scene.height)) * strip[None, c0:c1]
    )
    # Geometric (in dB) between no change and the full posterior gain.
    scene.echo[r0:, c0:c1] *= np.exp(np.float32(np.log(lesion.posterior)) * weight)


def _annotate(
    rng: np.random.Generator, geometry: LesionGeometry, difficulty: Difficulty, height: int, width: int
) -> np.ndarray:
    """The annotator's outline: the body smoothed, jittered, and biased a little over or under."""
    y0, y1, x0, x1 = geometry.box
    body = geometry.body.astype(np.float32)
    size = max(np.sqrt(body.sum()), 4.0)
    soft = cv2.GaussianBlur(body, (0, 0), max(0.04 * size, 0.8))
    shape = body.shape
    jitter = cv2.resize(
        rng.standard_normal((max(shape[0] // 12, 2), max(shape[1] // 12, 2))).astype(np.float32),
        (shape[1], shape[0]),
        interpolation=cv2.INTER_CUBIC,
    )
    noise = difficulty.annotation_noise
    level = 0.5 + noise * rng.uniform(-0.12, 0.12)
    drawn = (soft + noise * 0.08 * jitter) > level
    count, labels, stats, _ = cv2.connectedComponentsWithStats(drawn.astype(np.uint8), connectivity=8)
    if count > 1:
        drawn = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = drawn
    # One closed outline: no holes inside it.
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(mask, contours, -1, 1, thickness=cv2.FILLED)
    return mask.astype(bool)


# ----------------------------------------------------------------------------- rendering


def _scan(rng: np.random.Generator, echo: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Scatterers -> depth-dependent PSF -> envelope in dB -> attenuation and gain -> 8-bit grey."""
    height, width = echo.shape
    # Uniform scatterer amplitudes (I and Q): the PSF sums many of them, so the field is Gaussian
    # all the same, and uniform numbers are several times cheaper to draw than normal ones.
    scatter = rng.random((height, width, 2), dtype=np.float32)
    scatter -= np.float32(0.5)
    scatter *= np.sqrt(np.float32(12) * echo)[:, :, None]
    psf_scale = max(width / 646, 0.35)
    axial, lateral = rng.uniform(0.8, 1.3) * psf_scale, rng.uniform(1.6, 2.6) * psf_scale
    focus, spread = rng.uniform(0.25, 0.5), rng.uniform(1.6, 2.2)
    # Out of the focal zone the beam widens: blend a sharp and a wide PSF by distance from the focus
    # (I and Q blurred together as the two channels of one image).
    blend = np.clip(np.abs(np.arange(height, dtype=np.float32) / height - focus) / 0.5, 0, 1)[:, None, None]
    sharp = cv2.GaussianBlur(scatter, (0, 0), sigmaX=lateral, sigmaY=axial)
    wide = cv2.GaussianBlur(scatter, (0, 0), sigmaX=lateral * spread, sigmaY=axial * 1.3)
    # The wide PSF averages more scatterers: rescale so that the mean power stays the same.
    wide *= np.float32(np.sqrt(spread * 1.3))
    wide -= sharp
    wide *= blend
    sharp += wide
    sharp *= sharp
    envelope = sharp[:, :, 0] + sharp[:, :, 1]
    # Envelope in dB straight from the power (|I + jQ|^2): 10 log10 is 20 log10 of the amplitude.
    db = cv2.log(envelope + np.float32(1e-12))
    db *= np.float32(10 / np.log(10))
    depth = np.arange(height, dtype=np.float32) / height
    attenuation_db = -8.686 * rng.uniform(1.5, 2.5) * depth
    gain_db = 8.686 * (rng.uniform(1.0, 2.0) * depth + 0.15 * np.sin(rng.uniform(3, 8) * depth + rng.uniform(0, 6)))
    db += (attenuation_db + gain_db).astype(np.float32)[:, None]
    # Display gain: the median echo sits a little above mid-grey, as a sonographer sets it.
    db -= np.median(db[::4, ::4][fov[::4, ::4]]) + MEDIAN_BELOW_TOP_DB
    gray = np.clip((db + DYNAMIC_RANGE_DB) * (255 / DYNAMIC_RANGE_DB), 0, 255).astype(np.uint8)
    gray[~fov] = 0
    return gray


def render_sample(
    seed: int, patient: int, view: int, size: tuple[int, int] | None = None, options: PhantomOptions | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One view of one patient: RGB uint8 image, uint8 {0, 255} mask, and its metadata."""
    options = options or PhantomOptions()
    difficulty = DIFFICULTIES[options.difficulty]
    patient_rng = np.random.default_rng([seed, patient])
    height, width = size or ORIGINAL_SIZES[int(patient_rng.integers(len(ORIGINAL_SIZES)))]
    # In ORGANS' order, not the option's key order: the same weights give the same phantom.
    organs = tuple(o for o in ORGANS if o in options.organs)
    organ = _choose(patient_rng, organs, [options.organs[o] for o in organs])
    lesion = _draw_lesion(patient_rng, height, width, difficulty)
    rng = np.random.default_rng([seed, patient, view])
    geometry = _lesion_geometry(lesion, view, height, width)
    fov = _field_of_view(rng, height, width)
    scene = Scene(rng, height, width, lesion, geometry.box)
    ORGAN_BACKGROUNDS[organ](scene)
    _clutter(scene, difficulty)
    _add_lesion(scene, lesion, geometry)
    gray = _scan(rng, scene.echo, fov)
    mask = _annotate(rng, geometry, difficulty, height, width) & fov
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    drawn = options.calipers and _draw_calipers(rng, image, mask, fov, options.caliper_noise * width / 646)
    info = {
        "organ": organ,
        "lesion_type": lesion.lesion_type,
        "margin": lesion.margin,
        "contrast_db": round(lesion.contrast_db, 2),
        "lesion_area_px": int(mask.sum()),
        "calipers": bool(drawn),
    }
    return image, mask.astype(np.uint8) * 255, info


def render(
    seed: int, patient: int, view: int, size: tuple[int, int] | None = None, options: PhantomOptions | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One view of one patient: an RGB uint8 image and its uint8 {0, 255} lesion mask."""
    image, mask, _ = render_sample(seed, patient, view, size, options)
    return image, mask


CALIPER_SIZE = 9  # px: the marker is a '+' of this size


def _draw_calipers(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, fov: np.ndarray, noise: float
) -> bool:
    """'+' marks at the lesion's widest lateral extent (and sometimes its depth extent), as a
    sonographer places them: a few pixels off, but never on the outlined lesion."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return False
    row = int(np.median(ys))
    cols = np.nonzero(mask[row])[0]
    pairs = [((int(cols.min()), row), (-1, 0)), ((int(cols.max()), row), (1, 0))]
    if rng.random() < 0.5:
        col = int(np.median(xs))
        rows = np.nonzero(mask[:, col])[0]
        pairs += [((col, int(rows.min())), (0, -1)), ((col, int(rows.max())), (0, 1))]
    height, width = mask.shape
    half = CALIPER_SIZE // 2
    # The marker may not touch the mask: a pixel margin of half the marker plus one.
    blocked = cv2.dilate(mask.astype(np.uint8), np.ones((2 * half + 3, 2 * half + 3), np.uint8)) > 0
    drawn = False
    for (x, y), (dx, dy) in pairs:
        gap = 4 + abs(rng.normal(0, noise))
        x = int(round(x + dx * gap + rng.normal(0, noise) * (dx == 0)))
        y = int(round(y + dy * gap + rng.normal(0, noise) * (dy == 0)))
        for _ in range(40):  # slide outwards until the marker is clear of the lesion
            if not (0 <= y < height and 0 <= x < width) or not blocked[y, x]:
                break
            x, y = x + dx, y + dy
        if 0 <= y < height and 0 <= x < width and fov[y, x] and not blocked[y, x]:
            cv2.drawMarker(
                image, (x, y), CALIPER_RGB, markerType=cv2.MARKER_CROSS, markerSize=CALIPER_SIZE, thickness=1
            )
            drawn = True
    return drawn


def write_dataset(
    outdir: str | Path,
    patients: int,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    options: PhantomOptions | None = None,
) -> Path:
    """Write ``patients`` x 2 views as a ``folder`` dataset: images/, masks/, patients.csv.

    patients.csv carries the per-image metadata (organ, lesion type, margin, contrast in dB, lesion
    area, calipers); the folder layout's ingest keeps these columns in the manifest as meta_*.
    """
    outdir = Path(outdir)
    (outdir / "images").mkdir(parents=True, exist_ok=True)
    (outdir / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(patients):
        for view in (1, 2):
            image, mask, info = render_sample(seed, p, view, size, options)
            name = f"P{p:04d}_v{view}.png"
            # OpenCV writes BGR: flip so that the file holds the RGB image.
            cv2.imwrite(str(outdir / "images" / name), image[:, :, ::-1])
            cv2.imwrite(str(outdir / "masks" / name), mask)
            rows.append({"image": name, "patient": f"P{p:04d}", "view": view, **info})
    with open(outdir / "patients.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "patient", "view", *METADATA_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    return outdir


def contact_sheet(
    patients: list[int], seed: int = 0, options: PhantomOptions | None = None, tile_width: int = 323
) -> np.ndarray:
    """One row per patient: view 1 bare, view 1 with its mask outlined, then the same for view 2
    (RGB uint8). The README picture: ``cv2.imwrite("docs/synthetic_samples.jpg", sheet[:, :, ::-1])``."""
    rows = []
    for patient in patients:
        tiles = []
        for view in (1, 2):
            image, mask, info = render_sample(seed, patient, view, options=options)
            height = round(image.shape[0] * tile_width / image.shape[1])
            image = cv2.resize(image, (tile_width, height), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (tile_width, height), interpolation=cv2.INTER_NEAREST)
            outlined = image.copy()
            contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(outlined, contours, -1, (255, 200, 0), 1)
            label = f"{info['organ']}, {info['lesion_type']}, {info['margin']}, {info['contrast_db']:+.0f} dB"
            cv2.putText(outlined, label, (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 0), 1, cv2.LINE_AA)
            tiles += [image, outlined]
        height = max(t.shape[0] for t in tiles)
        rows.append(np.hstack([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles]))
    return np.vstack(rows)
