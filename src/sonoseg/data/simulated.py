"""Small external sets of B-mode images simulated by physics with pymust (the MUST toolbox in Python).

The study trains on the built-in phantom (sonoseg.data.synth), whose speckle is drawn: scatterers
blurred by a made-up point-spread function. These sets are made another way, so that a network's
score on them says something the phantom cannot: random point scatterers in a 2-D medium, the RF
echoes a real linear array would receive from them computed by ``pymust.simus`` (a frequency-domain
model of the array's transmit and receive fields, attenuation included), I/Q demodulated
(``pymust.rf2iq``), delay-and-sum beamformed on the image's pixel grid (``pymust.dasmtx``, coherent
compounding of a few plane waves), envelope detected and log-compressed. Speckle, its size changing
with depth and frequency, and the blurred lesion edges come from the physics, not from a filter.

Each image holds one lesion: an ellipse whose outline is perturbed by a few low harmonics
(lobulated), of one of five types (hypoechoic, anechoic, isoechoic with a dark halo, hypoechoic
with an echogenic rim, heterogeneous), in a layered background like soft tissue (subcutaneous fat,
a bright fascia line, striated deeper tissue). The mask is the lesion region itself, evaluated at
the output pixels' centres with the same test that decides which scatterers belong to the lesion.

Four sets (``SETS``): ``pymust_far``, the default development set (the one external set allowed to
guide a choice, the augmentation), ``pymust_heldout``, made with a different probe, centre
frequency, depth, scatterer density, compounding and lesion mix, so that a choice tuned on a
development set meets conditions it has not seen, ``pymust_fresh``, a new draw of the held-out
settings that no look has shaped a choice by, and ``pymust_dev``, the first development set,
too close to the phantom to guide a choice (data/external/README.md). All are committed under
data/external/ (data/external/make_sets.py made them); nothing simulates them at run time.
Everything is drawn from ``numpy.random.default_rng(seed)`` and one child generator per image: same
seed, same bytes (pymust itself draws nothing here).

pymust is imported inside the functions that simulate, so the package imports without it.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from sonoseg.data.provenance import cpu_model
from sonoseg.errors import SonosegError

log = logging.getLogger(__name__)

LESION_TYPES = ("hypoechoic", "anechoic", "isoechoic_halo", "echogenic_rim", "heterogeneous")
METADATA_COLUMNS = (
    "lesion_type",
    "contrast_db",
    "rim_db",
    "image_contrast_db",
    "lesion_area_px",
    "lesion_area_fraction",
    "lesion_center_x_mm",
    "lesion_center_z_mm",
    "lesion_width_mm",
    "lesion_height_mm",
    "fascia_depth_mm",
    "scatterers",
)
SOUND_SPEED = 1540.0  # m/s, pymust's default, stated so that the wavelength below uses the same value
MM = 1e-3


@dataclass(frozen=True)
class SimulationSettings:
    """Everything that makes one external set what it is; ``SETS`` holds the committed ones.

    Lengths are in mm, angles in degrees, levels in dB. The image spans the probe's aperture
    laterally and [depth_start_mm, depth_end_mm] in depth, on ``rows`` x ``cols`` pixels.
    """

    name: str
    probe: str  # a pymust.getparam name: 'L11-5v', 'L12-3v', ...
    centre_frequency_mhz: float | None  # None: the probe's own
    depth_start_mm: float
    depth_end_mm: float
    rows: int
    cols: int
    scatterers_per_mm2: float  # of the 2-D medium; a few per resolution cell make developed speckle
    plane_wave_angles_deg: tuple[float, ...]  # coherently compounded; (0.0,): a single plane wave
    attenuation_db_cm_mhz: float  # the medium's, which the display's depth gain then compensates
    dynamic_range_db: float  # of the log-compressed display
    median_below_top_db: float  # where the tissue's median echo sits below white, as a sonographer sets the gain
    lesion_type_weights: tuple[float, ...]  # over LESION_TYPES
    hypoechoic_contrast_db: tuple[float, float]  # |lesion - tissue| of solid hypoechoic lesions (uniform draw)
    lesion_area_fraction: tuple[float, float]  # of the image (uniform draw of the target)
    lesion_aspect: tuple[float, float]  # lateral / axial semi-axis
    lobulation: tuple[float, float]  # amplitude range of each of the outline's 2-4 harmonics
    fat_depth_mm: tuple[float, float]  # the fascia line under the subcutaneous fat
    fat_db: float  # subcutaneous fat's echo relative to the deeper tissue
    fascia_db: float  # the fascia line's peak echo relative to the deeper tissue
    texture_db: float  # sd of the tissue's smooth echo variation
    seed: int
    patients: int
    scatterer_chunk: int = 3000  # scatterers per simus call: its per-frequency arrays then stay in cache
    id_prefix: str = "P"

    def __post_init__(self):
        if len(self.lesion_type_weights) != len(LESION_TYPES) or sum(self.lesion_type_weights) <= 0:
            raise SonosegError(f"{self.name}: lesion_type_weights needs one weight >= 0 per type of {LESION_TYPES}")
        if not 0 < self.depth_start_mm < self.depth_end_mm:
            raise SonosegError(f"{self.name}: the depth range must be 0 < start < end")
        if not 0 < self.lesion_area_fraction[0] <= self.lesion_area_fraction[1] < 0.5:
            raise SonosegError(f"{self.name}: lesion_area_fraction must lie in (0, 0.5)")
        if self.fat_depth_mm[1] - self.fat_depth_mm[0] < 2:
            # The fascia's mean depth is drawn 1 mm inside the range, leaving room for its undulation.
            raise SonosegError(f"{self.name}: fat_depth_mm must span at least 2 mm, got {self.fat_depth_mm}")


SETS = {
    # Development set: the 7.6 MHz L11-5v (128 elements) over 3-27 mm, one plane wave.
    "pymust_dev": SimulationSettings(
        name="pymust_dev",
        probe="L11-5v",
        centre_frequency_mhz=None,
        depth_start_mm=3.0,
        depth_end_mm=27.0,
        rows=160,
        cols=256,
        scatterers_per_mm2=14.0,
        plane_wave_angles_deg=(0.0,),
        attenuation_db_cm_mhz=0.5,
        dynamic_range_db=50.0,
        median_below_top_db=24.0,
        lesion_type_weights=(0.35, 0.2, 0.15, 0.1, 0.2),
        hypoechoic_contrast_db=(10.0, 20.0),
        lesion_area_fraction=(0.05, 0.18),
        lesion_aspect=(1.0, 1.8),
        lobulation=(0.02, 0.08),
        fat_depth_mm=(5.0, 8.0),
        fat_db=-8.0,
        fascia_db=10.0,
        texture_db=2.0,
        seed=20240,
        patients=12,
        id_prefix="PMD",
    ),
    # A second development set, made as far from the phantom as the held-out set (fainter lesions,
    # coarse speckle) but with a third probe and its own settings: the first development set is
    # segmented about as well as the phantom, so it could not tell augmentations apart.
    "pymust_far": SimulationSettings(
        name="pymust_far",
        probe="L9-4/38",
        centre_frequency_mhz=None,
        depth_start_mm=5.0,
        depth_end_mm=35.0,
        rows=176,
        cols=224,
        scatterers_per_mm2=7.0,
        plane_wave_angles_deg=(0.0,),
        attenuation_db_cm_mhz=0.6,
        dynamic_range_db=55.0,
        median_below_top_db=26.0,
        lesion_type_weights=(0.25, 0.15, 0.2, 0.2, 0.2),
        hypoechoic_contrast_db=(5.0, 14.0),
        lesion_area_fraction=(0.04, 0.2),
        lesion_aspect=(0.9, 2.0),
        lobulation=(0.03, 0.1),
        fat_depth_mm=(4.0, 9.0),
        fat_db=-7.0,
        fascia_db=11.0,
        texture_db=2.5,
        seed=20242,
        patients=24,
        id_prefix="PMF",
    ),
    # Held-out set: another probe (L12-3v, 192 elements) driven at 5 MHz, deeper (4-32 mm), three
    # compounded plane waves, sparser scatterers, fainter and more varied lesions, thicker fat.
    "pymust_heldout": SimulationSettings(
        name="pymust_heldout",
        probe="L12-3v",
        centre_frequency_mhz=5.0,
        depth_start_mm=4.0,
        depth_end_mm=32.0,
        rows=176,
        cols=240,
        scatterers_per_mm2=6.0,
        plane_wave_angles_deg=(-6.0, 0.0, 6.0),
        attenuation_db_cm_mhz=0.7,
        dynamic_range_db=60.0,
        median_below_top_db=28.0,
        lesion_type_weights=(0.2, 0.15, 0.2, 0.2, 0.25),
        hypoechoic_contrast_db=(6.0, 16.0),
        lesion_area_fraction=(0.03, 0.22),
        lesion_aspect=(0.8, 2.2),
        lobulation=(0.04, 0.12),
        fat_depth_mm=(6.0, 11.0),
        fat_db=-6.0,
        fascia_db=12.0,
        texture_db=3.0,
        seed=20241,
        patients=16,
        id_prefix="PMH",
    ),
}
# A fresh draw of the held-out set's settings (its own seed, twice the images): pymust_heldout was scored
# after about a dozen recipe changes across sessions and its results shaped what was tried next, so its
# numbers are no longer an unbiased estimate; this set, made after the last of them, was not looked at
# before it joined the study (data/external/README.md).
SETS["pymust_fresh"] = replace(SETS["pymust_heldout"], name="pymust_fresh", seed=20243, patients=32, id_prefix="PMN")


# ----------------------------------------------------------------------------- the medium


@dataclass(frozen=True)
class Lesion:
    """A lobulated ellipse in the image plane (mm); ``harmonics`` rows are (k, amplitude, phase)."""

    lesion_type: str
    center_x: float
    center_z: float
    semi_lateral: float
    semi_axial: float
    tilt: float  # radians
    harmonics: np.ndarray = field(repr=False)
    contrast_db: float = 0.0  # the interior's echo relative to the surrounding tissue
    rim_db: float = 0.0  # the halo's or rim's echo; 0 for the types without one
    rim_width: float = 0.0  # fraction of the radius, inward from the edge
    posterior_db: float = 0.0  # echo change under the lesion (> 0: enhancement behind a cyst)
    texture_seed: int = 0  # the heterogeneous type's internal pattern

    def normalised(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, z) in mm in the lesion's frame, scaled by its semi-axes: the unperturbed ellipse is the unit disc."""
        dx, dz = x - self.center_x, z - self.center_z
        c, s = np.cos(self.tilt), np.sin(self.tilt)
        return (c * dx + s * dz) / self.semi_lateral, (-s * dx + c * dz) / self.semi_axial

    def radius_and_outline(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised radius and the outline's radius in the same direction: inside where radius <= outline."""
        u, w = self.normalised(x, z)
        angle = np.arctan2(w, u)
        outline = np.ones_like(angle)
        for k, amplitude, phase in self.harmonics:
            outline += amplitude * np.cos(k * angle + phase)
        return np.hypot(u, w), outline

    def inside(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        radius, outline = self.radius_and_outline(x, z)
        return radius <= outline

    def half_extent(self) -> tuple[float, float]:
        """Lateral and axial half extents (mm) that the lobulated outline cannot exceed."""
        reach = 1 + float(np.abs(self.harmonics[:, 1]).sum())
        c, s = np.cos(self.tilt), np.sin(self.tilt)
        a, b = self.semi_lateral, self.semi_axial
        return reach * float(np.hypot(a * c, b * s)), reach * float(np.hypot(a * s, b * c))

    def level(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The echo level (dB, relative to the tissue around) at points inside the lesion."""
        radius, outline = self.radius_and_outline(x, z)
        level = np.full(np.shape(x), self.contrast_db)
        if self.rim_width > 0:
            depth_inside = 1 - radius / outline  # 0 at the edge, 1 at the centre
            level = np.where(depth_inside < self.rim_width, self.rim_db, level)
        if self.lesion_type == "heterogeneous":
            # Patches about a fifth of the lesion across, brighter and darker than its mean.
            pattern = _smooth_field(np.random.default_rng(self.texture_seed), (64, 64), (9, 9))
            u, w = self.normalised(x, z)
            coords = np.stack([(w + 1.5) * 21, (u + 1.5) * 21])  # [-1.5, 1.5] onto the 64 samples
            level = level + HETEROGENEITY_DB * ndimage.map_coordinates(pattern, coords, order=1, mode="nearest")
        return level


HETEROGENEITY_DB = 5.0  # sd of the heterogeneous lesion's internal echo pattern


@dataclass(frozen=True)
class Geometry:
    """The image's pixel grid and the region where scatterers are drawn (mm, x = 0 at the array's centre)."""

    width: float
    depth_start: float
    depth_end: float
    rows: int
    cols: int
    margin: float = 1.0  # scatterers just outside the image still echo into its edges

    def pixel_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """x and z (mm) of the pixels' centres, each rows x cols."""
        dx, dz = self.width / self.cols, (self.depth_end - self.depth_start) / self.rows
        xs = -self.width / 2 + dx * (np.arange(self.cols) + 0.5)
        zs = self.depth_start + dz * (np.arange(self.rows) + 0.5)
        return np.meshgrid(xs, zs)

    @property
    def medium(self) -> tuple[float, float, float, float]:
        """x0, x1, z0, z1 (mm) of the scatterers' region."""
        return (
            -self.width / 2 - self.margin,
            self.width / 2 + self.margin,
            max(self.depth_start - self.margin, 0.5),
            self.depth_end + self.margin,
        )

    @property
    def area(self) -> float:
        return self.width * (self.depth_end - self.depth_start)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[float, float]) -> np.ndarray:
    """A smooth random field of unit sd on ``shape``, with features about ``cells`` (rows, cols) samples wide."""
    coarse = rng.standard_normal((int(shape[0] / cells[0]) + 3, int(shape[1] / cells[1]) + 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return smooth / (smooth.std() + 1e-6)


@dataclass
class Medium:
    """The background's echo level (dB) on a fine grid over the scatterers' region, and where the fascia runs."""

    x0: float
    z0: float
    step: float
    level: np.ndarray  # rows: depth
    fascia_depth: np.ndarray  # per grid column

    def sample(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        coords = np.stack([(z - self.z0) / self.step, (x - self.x0) / self.step])
        return ndimage.map_coordinates(self.level, coords, order=1, mode="nearest")

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = self.level.shape
        return np.meshgrid(self.x0 + self.step * np.arange(cols), self.z0 + self.step * np.arange(rows))


def _tissue(rng: np.random.Generator, settings: SimulationSettings, geometry: Geometry, step: float = 0.1) -> Medium:
    """Soft tissue under the skin: subcutaneous fat (darker) down to a gently undulating fascia (a thin
    bright line), then tissue whose echo varies smoothly, more along than across depth (muscle and gland
    are striated)."""
    x0, x1, z0, z1 = geometry.medium
    cols, rows = int(np.ceil((x1 - x0) / step)) + 1, int(np.ceil((z1 - z0) / step)) + 1
    xs = x0 + step * np.arange(cols)
    zz = (z0 + step * np.arange(rows))[:, None]
    low, high = settings.fat_depth_mm
    period, phase = rng.uniform(15, 40), rng.uniform(0, 2 * np.pi)
    undulation = rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * xs / period + phase)
    wobble = 0.3 * _smooth_field(rng, (1, cols), (1, 60))[0]
    fascia = np.clip(rng.uniform(low + 1.0, high - 1.0) + undulation + wobble, low, high)
    striations = _smooth_field(rng, (rows, cols), (8, 40))  # 0.8 mm across depth, 4 mm along it
    blotches = _smooth_field(rng, (rows, cols), (30, 30))
    level = settings.texture_db * (0.6 * striations + 0.8 * blotches)
    level = np.where(zz < fascia, settings.fat_db + 0.5 * settings.texture_db * blotches, level)
    line = np.exp(-0.5 * ((zz - fascia) / rng.uniform(0.12, 0.25)) ** 2)  # the fascia's profile, sd in mm
    level = (1 - line) * level + line * settings.fascia_db
    return Medium(x0, z0, step, level.astype(np.float32), fascia)


def lesion_types(settings: SimulationSettings, count: int, seed: int) -> list[str]:
    """The lesion types of a set's ``count`` images: each type's share of the weights, rounded by the
    largest remainders, in an order shuffled by the seed. A dozen independent draws could leave a
    type out of a small set, or nearly fill it with one; quotas keep the mix the settings name."""
    weights = np.asarray(settings.lesion_type_weights, dtype=float)
    share = count * weights / weights.sum()
    quota = np.floor(share).astype(int)
    by_remainder = np.argsort(-(share - quota), kind="stable")
    quota[by_remainder[: count - quota.sum()]] += 1
    types = [t for t, n in zip(LESION_TYPES, quota) for _ in range(n)]
    return [types[i] for i in np.random.default_rng(seed).permutation(count)]


def _draw_lesion(
    rng: np.random.Generator,
    settings: SimulationSettings,
    geometry: Geometry,
    fascia_max: float,
    lesion_type: str | None = None,
) -> Lesion:
    """A lesion of the given type (None: drawn by the set's weights) and the set's size range, fully
    inside the image (1 mm clear of its edges) and, when it fits, below the fascia: a mass in the
    tissue rather than in the fat."""
    if lesion_type is None:
        weights = np.asarray(settings.lesion_type_weights, dtype=float)
        lesion_type = LESION_TYPES[int(rng.choice(len(LESION_TYPES), p=weights / weights.sum()))]
    elif lesion_type not in LESION_TYPES:
        raise SonosegError(f"unknown lesion type {lesion_type!r}; known: {LESION_TYPES}")
    target_area = rng.uniform(*settings.lesion_area_fraction) * geometry.area
    aspect = rng.uniform(*settings.lesion_aspect)
    count = int(rng.integers(2, 5))
    harmonics = np.stack(
        [
            rng.choice(np.arange(2, 7), size=count, replace=False).astype(float),
            rng.uniform(*settings.lobulation, size=count),
            rng.uniform(0, 2 * np.pi, size=count),
        ],
        axis=1,
    )
    # The area inside r(t) = 1 + sum a_k cos(k t + p) on the unit disc is pi (1 + sum a_k^2 / 2).
    semi_axial = float(np.sqrt(target_area / (np.pi * aspect * (1 + 0.5 * np.sum(harmonics[:, 1] ** 2)))))
    magnitude = rng.uniform(*settings.hypoechoic_contrast_db)
    contrast_db, rim_db, rim_width = {
        "hypoechoic": (-magnitude, 0.0, 0.0),
        "anechoic": (-45.0, 0.0, 0.0),  # scatterers all but silent: a fluid-filled cyst
        "isoechoic_halo": (rng.uniform(-2.0, 2.0), -rng.uniform(10.0, 18.0), rng.uniform(0.25, 0.4)),
        "echogenic_rim": (-rng.uniform(4.0, 9.0), rng.uniform(6.0, 10.0), rng.uniform(0.15, 0.25)),
        "heterogeneous": (-0.75 * magnitude, 0.0, 0.0),  # mixed, but darker than the tissue on the whole
    }[lesion_type]
    if rim_width:
        # At least about 1.2 mm wide: a thinner halo or rim vanishes in the speckle (a few speckle
        # grains across) and at the study's 32 x 32 input, leaving a lesion nobody can find.
        rim_width = max(rim_width, min(1.2 / semi_axial, 0.5))
    # pymust's attenuation is the same everywhere, so the enhancement behind a cyst (which attenuates
    # less than tissue) and the shadow behind some solid masses are put in the echoes under the lesion.
    posterior_db = {
        "anechoic": rng.uniform(3.0, 6.0),
        "hypoechoic": -rng.uniform(2.0, 5.0) if rng.random() < 0.3 else 0.0,
    }.get(lesion_type, 0.0)
    tilt = rng.uniform(-0.4, 0.4)
    texture_seed = int(rng.integers(2**31))
    margin = 1.0
    for _ in range(30):  # shrink until it fits; the first try nearly always does
        lesion = Lesion(
            lesion_type, 0.0, 0.0, aspect * semi_axial, semi_axial, tilt, harmonics,
            contrast_db, rim_db, rim_width, posterior_db, texture_seed,
        )  # fmt: skip
        half_x, half_z = lesion.half_extent()
        x_room = geometry.width / 2 - half_x - margin
        z_low, z_high = geometry.depth_start + half_z + margin, geometry.depth_end - half_z - margin
        if x_room > 0 and z_high > z_low:
            below_fascia = max(z_low, fascia_max + half_z + 0.5)
            center_z = rng.uniform(below_fascia, z_high) if below_fascia < z_high else rng.uniform(z_low, z_high)
            return replace(lesion, center_x=float(rng.uniform(-x_room, x_room)), center_z=float(center_z))
        semi_axial *= 0.9
    raise SonosegError(f"{settings.name}: no lesion of the drawn size fits the image")  # pragma: no cover


def _add_posterior(medium: Medium, lesion: Lesion) -> None:
    """Enhancement (or shadow) in the columns under the lesion, fading over about 10 mm below it."""
    if lesion.posterior_db == 0:
        return
    x, z = medium.grid()
    inside = lesion.inside(x, z)
    beneath = np.maximum.accumulate(inside, axis=0) & ~inside  # under some part of the lesion
    # Distance below the lesion's lower edge, per column.
    bottom = np.where(inside.any(axis=0), inside.shape[0] - 1 - np.argmax(inside[::-1], axis=0), 0)
    below = np.clip((np.arange(inside.shape[0])[:, None] - bottom[None, :]) * medium.step, 0, None)
    weight = beneath * np.exp(-below / 10.0)
    weight = cv2.GaussianBlur(weight.astype(np.float32), (0, 0), sigmaX=5.0, sigmaY=1.0)  # soft column edges
    medium.level += np.float32(lesion.posterior_db) * weight


def _scatterers(rng: np.random.Generator, settings: SimulationSettings, geometry: Geometry, medium: Medium, lesion):
    """Scatterer positions (mm) and reflection coefficients: uniform positions, Rayleigh-distributed
    amplitudes (as pymust.genscat draws them) scaled by the local echo level.

    Drawn here rather than by genscat, which uses numpy's global generator: the image's own generator
    keeps a set reproducible by its seed.
    """
    x0, x1, z0, z1 = geometry.medium
    count = int(round(settings.scatterers_per_mm2 * (x1 - x0) * (z1 - z0)))
    x = rng.uniform(x0, x1, count)
    z = rng.uniform(z0, z1, count)
    level = medium.sample(x, z)
    inside = lesion.inside(x, z)
    level[inside] = lesion.level(x[inside], z[inside])
    amplitude = 10 ** (level / 20) * rng.rayleigh(1.0, count) / np.sqrt(np.pi / 2)
    return x, z, amplitude


# ----------------------------------------------------------------------------- the acquisition


def probe_parameters(settings: SimulationSettings):
    """pymust's PARAM for the set's probe at its centre frequency, in a medium with the set's attenuation."""
    import pymust

    param = pymust.getparam(settings.probe)
    if settings.centre_frequency_mhz is not None:
        param.fc = settings.centre_frequency_mhz * 1e6
    param.fs = 4 * param.fc  # simus's minimum; enough for I/Q demodulation
    param.c = SOUND_SPEED
    param.attenuation = settings.attenuation_db_cm_mhz
    param.fnumber = None  # dasmtx then picks the receive f-number from the elements' directivity
    return param


def geometry_of(settings: SimulationSettings, param) -> Geometry:
    """The image spans the array's aperture (as a linear probe's image does) and the set's depths."""
    aperture = float(param.Nelements * param.pitch / MM)
    return Geometry(aperture, settings.depth_start_mm, settings.depth_end_mm, settings.rows, settings.cols)


def _radio_frequency(x: np.ndarray, z: np.ndarray, amplitude: np.ndarray, delays, param, chunk: int) -> np.ndarray:
    """The RF signals (time x elements) of one transmit, by simus over chunks of scatterers.

    Echoes add linearly, so the chunks' RF signals sum to the whole medium's. simus sizes its time
    window from the farthest scatterer: every chunk carries two silent scatterers (RC = 0) at the
    medium's deepest corners, so that all chunks return signals of the same length and sampling.
    """
    import pymust

    options = pymust.utils.Options()
    options.WaitBar = False
    options.ParPool = False  # one core: the budget is counted on one
    corner_x = np.array([x.min(), x.max()])
    corner_z = np.full(2, z.max())
    total = None
    for start in range(0, x.size, chunk):
        part, _ = pymust.simus(
            np.concatenate([x[start : start + chunk], corner_x]),
            np.concatenate([z[start : start + chunk], corner_z]),
            np.concatenate([amplitude[start : start + chunk], np.zeros(2)]),
            delays,
            param,
            options,
        )
        total = part if total is None else total + part
    return total


def _beamformed(
    x: np.ndarray, z: np.ndarray, amplitude: np.ndarray, settings: SimulationSettings, param, geometry: Geometry
) -> np.ndarray:
    """Complex I/Q image on the pixel grid: per plane wave, simus, rf2iq and a delay-and-sum matrix
    (dasmtx, apodized); the plane waves' beamformed I/Q summed coherently (compounding)."""
    import pymust

    grid_x, grid_z = geometry.pixel_grid()
    compound = np.zeros(grid_x.shape, dtype=np.complex128)
    for angle in settings.plane_wave_angles_deg:
        delays = pymust.txdelay(param, float(np.deg2rad(angle)))
        rf = _radio_frequency(x * MM, z * MM, amplitude, delays, param, settings.scatterer_chunk)
        iq = pymust.rf2iq(rf, param)  # param carries fc: rf2iq draws nothing to estimate it
        das = pymust.dasmtx(1j * np.array(iq.shape), grid_x * MM, grid_z * MM, delays, param)
        das = _apodized(das, grid_x * MM, grid_z * MM, param, samples=iq.shape[0])
        compound += (das @ iq.flatten(order="F")).reshape(grid_x.shape, order="F")
    return compound


def _apodized(das, grid_x: np.ndarray, grid_z: np.ndarray, param, samples: int):
    """The delay-and-sum matrix with a Hann receive apodization over each pixel's aperture.

    dasmtx sums the elements inside the aperture (set by the f-number) with equal weights. With one
    unfocused plane wave, the receive aperture alone shapes the beam, and a flat aperture's side lobes
    (-13 dB) fill an anechoic cyst with clutter about 10 dB below the tissue. Scanners taper the
    aperture; so does this: each nonzero of the matrix (a pixel, an element's sample) is weighted by a
    Hann window of the element's lateral distance to the pixel over the aperture's half width.
    """
    das = das.tocoo()
    pixel = das.row  # pixels in column-major order, as dasmtx flattens the grid
    element = das.col // samples  # columns: time samples of element 0, then of element 1, ...
    element_x = (np.arange(param.Nelements) - (param.Nelements - 1) / 2) * param.pitch
    half_width = grid_z.ravel(order="F")[pixel] / (2 * param.fnumber)  # dasmtx's own aperture
    offset = (element_x[element] - grid_x.ravel(order="F")[pixel]) / half_width
    weight = np.cos(0.5 * np.pi * np.clip(offset, -1, 1)) ** 2
    return type(das)((das.data * weight, (das.row, das.col)), shape=das.shape).tocsr()


def _display(envelope: np.ndarray, lesion_mask: np.ndarray, settings: SimulationSettings):
    """Log-compressed 8-bit image, as a scanner shows it: depth gain, then a fixed dynamic range placed
    so that the tissue's median echo sits ``median_below_top_db`` below white.

    The depth gain is a straight line in dB fitted to the rows' median echo outside the lesion (the
    scanner's automatic time-gain compensation), so that attenuation and diffraction leave no ramp. The
    reference is the tissue's median, not the brightest pixel (pymust.bmode's choice), so that a bright
    fascia or one speckle peak does not set each image's brightness. Returns the image and the
    compensated echo in dB relative to the tissue's median.
    """
    db = 20 * np.log10(envelope + 1e-12 * envelope.max())
    tissue = ~lesion_mask
    rows = np.arange(db.shape[0])
    row_medians = np.nanmedian(np.where(tissue, db, np.nan), axis=1)  # the lesion never spans a whole row
    # Rows in the fat and fascia are left out of the fit: they are darker or brighter by anatomy.
    deep = np.isfinite(row_medians) & (rows >= 0.3 * db.shape[0])
    slope, _ = np.polyfit(rows[deep], row_medians[deep], 1)
    db -= slope * rows[:, None]
    reference = np.median(db[tissue]) if tissue.any() else np.median(db)
    top = reference + settings.median_below_top_db
    gray = np.clip((db - top + settings.dynamic_range_db) * (255 / settings.dynamic_range_db), 0, 255)
    return np.round(gray).astype(np.uint8), db - reference


def _image_contrast_db(db: np.ndarray, mask: np.ndarray, pixel_mm: float) -> float:
    """Mean log-echo inside the lesion minus that of a 1-3 mm ring around it (dB): the contrast one sees."""
    inside = mask.astype(bool)
    near = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(3 / pixel_mm) + 1,) * 2)) > 0
    close = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(1 / pixel_mm) + 1,) * 2)) > 0
    ring = near & ~close
    return float(db[inside].mean() - db[ring].mean()) if inside.any() and ring.any() else float("nan")


def simulate_image(
    settings: SimulationSettings, rng: np.random.Generator, lesion_type: str | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One B-mode image of a medium with one lesion: (image uint8 rows x cols, mask uint8 {0, 255}, metadata).
    ``lesion_type`` None: drawn by the set's weights (write_set gives each image its type by quota).

    The mask is the lesion's inside test at the pixels' centres, the same test that put the lesion's
    echo level on the scatterers.
    """
    param = probe_parameters(settings)
    geometry = geometry_of(settings, param)
    medium = _tissue(rng, settings, geometry)
    lesion = _draw_lesion(rng, settings, geometry, float(medium.fascia_depth.max()), lesion_type)
    _add_posterior(medium, lesion)
    x, z, amplitude = _scatterers(rng, settings, geometry, medium, lesion)
    iq = _beamformed(x, z, amplitude, settings, param, geometry)
    grid_x, grid_z = geometry.pixel_grid()
    inside = lesion.inside(grid_x, grid_z)
    mask = inside.astype(np.uint8) * 255
    image, relative_db = _display(np.abs(iq), inside, settings)
    ys, xs = np.nonzero(inside)
    pixel_x, pixel_z = geometry.width / geometry.cols, (geometry.depth_end - geometry.depth_start) / geometry.rows
    meta = {
        "lesion_type": lesion.lesion_type,
        "contrast_db": round(lesion.contrast_db, 2),
        "rim_db": round(lesion.rim_db, 2),
        "image_contrast_db": round(_image_contrast_db(relative_db, mask, min(pixel_x, pixel_z)), 2),
        "lesion_area_px": int(inside.sum()),
        "lesion_area_fraction": round(float(inside.mean()), 4),
        "lesion_center_x_mm": round(lesion.center_x, 2),
        "lesion_center_z_mm": round(lesion.center_z, 2),
        "lesion_width_mm": round(float((xs.max() - xs.min() + 1) * pixel_x), 2) if xs.size else 0.0,
        "lesion_height_mm": round(float((ys.max() - ys.min() + 1) * pixel_z), 2) if ys.size else 0.0,
        "fascia_depth_mm": round(float(np.median(medium.fascia_depth)), 2),
        "scatterers": int(x.size),
    }
    return image, mask, meta


# ----------------------------------------------------------------------------- a set on disk


def settings_of(name_or_settings: str | SimulationSettings) -> SimulationSettings:
    if isinstance(name_or_settings, SimulationSettings):
        return name_or_settings
    if name_or_settings not in SETS:
        raise SonosegError(f"unknown simulated set {name_or_settings!r}; known: {sorted(SETS)}")
    return SETS[name_or_settings]


def image_generators(seed: int, count: int) -> list[np.random.Generator]:
    """One generator per image, children of ``default_rng(seed)``: image i is the same whatever the count."""
    return np.random.default_rng(seed).spawn(count)


def write_set(
    out_dir: str | Path,
    name_or_settings: str | SimulationSettings,
    patients: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Simulate a set into ``out_dir`` (the set's own folder) in the ``folder`` layout the study reads:
    images/<id>.png, masks/<id>.png (same name), patients.csv (image, patient, view, then the metadata
    columns, which ingest keeps as meta_*), and simulation.json (versions, settings, seed, counts and
    the seconds each image took). One patient, one image. ``patients`` and ``seed`` default to the set's.
    """
    settings = settings_of(name_or_settings)
    patients = settings.patients if patients is None else int(patients)
    seed = settings.seed if seed is None else int(seed)
    if patients < 1:
        raise SonosegError(f"{settings.name}: patients must be >= 1, got {patients}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise SonosegError(f"{out_dir} is not empty: pass overwrite=True to replace the set")
        # A smaller set written over a larger one must not keep the larger one's images.
        for old in [*out_dir.glob("images/*.png"), *out_dir.glob("masks/*.png")]:
            old.unlink()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rows, seconds = [], []
    types = lesion_types(settings, patients, seed)
    for index, rng in enumerate(image_generators(seed, patients)):
        started = time.perf_counter()
        image, mask, meta = simulate_image(settings, rng, types[index])
        seconds.append(round(time.perf_counter() - started, 2))
        patient = f"{settings.id_prefix}{index + 1:03d}"
        name = f"{patient}.png"
        cv2.imwrite(str(out_dir / "images" / name), image)
        cv2.imwrite(str(out_dir / "masks" / name), mask)
        rows.append({"image": name, "patient": patient, "view": 1, **meta})
        log.info("%s %s: %s, %.1f %% of the image, %.1f s", settings.name, name, meta["lesion_type"],
                 100 * meta["lesion_area_fraction"], seconds[-1])  # fmt: skip
    with open(out_dir / "patients.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "patient", "view", *METADATA_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    record = {
        "set": settings.name,
        "seed": seed,
        "patients": patients,
        "images": len(rows),
        "settings": {**asdict(settings), "seed": seed, "patients": patients},
        "versions": {
            "pymust": metadata.version("pymust"),
            "numpy": np.__version__,
            "scipy": metadata.version("scipy"),
            "opencv": cv2.__version__,
            "python": platform.python_version(),
        },
        "seconds_per_image": seconds,
        "mean_seconds_per_image": round(float(np.mean(seconds)), 2),
        "total_seconds": round(float(np.sum(seconds)), 1),
        "cpu": cpu_model(),
    }
    (out_dir / "simulation.json").write_text(json.dumps(record, indent=2) + "\n")
    return out_dir
