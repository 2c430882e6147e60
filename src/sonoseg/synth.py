"""A built-in synthetic B-mode breast-ultrasound phantom that stands in for the paper's private data.

Each patient has one lesion, a lobulated 3-D blob, imaged in two orthogonal planes (two views).
An image is made the way a scanner makes one: random scatterers whose echogenicity follows the
tissue map (layers, lesion, posterior shadow or enhancement), blurred by an anisotropic point-spread
function, envelope-detected (Rayleigh speckle), attenuated with depth and imperfectly compensated,
log-compressed to about 50 dB, and cut to a linear or sector field of view. Light-blue caliper
marks are drawn at the lesion's extent, as in the paper's images. Everything is drawn from a
generator seeded by (seed, patient), so the same seed gives the same bytes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ORIGINAL_SIZES = ((380, 646), (432, 646))
CALIPER_RGB = (120, 200, 255)  # light blue, as the scanners' electronic calipers
DYNAMIC_RANGE_DB = 50.0
MEDIAN_BELOW_TOP_DB = 22.0


@dataclass(frozen=True)
class Lesion:
    """A lobulated blob: semi-axes in pixels (lateral x, lateral y, depth) and margin harmonics."""

    center_x: float
    center_depth: float
    semi_axes: tuple[float, float, float]
    tilt: float  # radians, rotation of the blob in the image plane
    harmonics: np.ndarray  # (k, amplitude, phase) rows: lobulation of the margin
    contrast: float  # echogenicity inside relative to surrounding tissue (< 1: hypoechoic)
    posterior: float  # > 1: enhancement, < 1: shadowing


def _draw_lesion(rng: np.random.Generator, height: int, width: int) -> Lesion:
    depth_axis = rng.uniform(0.08, 0.2) * height
    lateral = rng.uniform(0.06, 0.16, size=2) * width
    n_lobes = rng.integers(2, 6)
    harmonics = np.stack([
        rng.choice(np.arange(2, 9), size=n_lobes, replace=False).astype(float),
        rng.uniform(0.03, 0.14, size=n_lobes),
        rng.uniform(0, 2 * np.pi, size=n_lobes),
    ], axis=1)
    faint = rng.random() < 0.15
    return Lesion(
        center_x=rng.uniform(0.3, 0.7) * width,
        center_depth=rng.uniform(0.35, 0.6) * height,
        semi_axes=(float(lateral[0]), float(lateral[1]), float(depth_axis)),
        tilt=float(rng.uniform(-0.5, 0.5)),
        harmonics=harmonics,
        contrast=float(rng.uniform(0.3, 0.55) if faint else rng.uniform(0.02, 0.1)),
        posterior=float(rng.choice([rng.uniform(0.35, 0.7), rng.uniform(1.3, 1.8)])),
    )


def _lesion_mask(lesion: Lesion, view: int, height: int, width: int) -> np.ndarray:
    """Cross-section of the blob in view 1 (x-depth plane) or view 2 (y-depth plane)."""
    lateral = lesion.semi_axes[0] if view == 1 else lesion.semi_axes[1]
    # Only the box that can hold the lesion is evaluated: the rest of the image is outside it.
    reach = max(lateral, lesion.semi_axes[2]) * (1 + lesion.harmonics[:, 1].sum())
    y0, y1 = int(max(lesion.center_depth - reach, 0)), int(min(lesion.center_depth + reach + 1, height))
    x0, x1 = int(max(lesion.center_x - reach, 0)), int(min(lesion.center_x + reach + 1, width))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dz = xx - lesion.center_x, yy - lesion.center_depth
    c, s = np.cos(lesion.tilt), np.sin(lesion.tilt)
    u, w = c * dx + s * dz, -s * dx + c * dz
    angle = np.arctan2(w / lesion.semi_axes[2], u / lateral)
    radius = np.hypot(u / lateral, w / lesion.semi_axes[2])
    # The second view sees the same lobes, shifted by a quarter turn of the blob.
    shift = 0.0 if view == 1 else np.pi / 2
    margin = np.ones_like(angle)
    for k, amplitude, phase in lesion.harmonics:
        margin += amplitude * np.cos(k * angle + phase + k * shift)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = radius <= margin
    return mask


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


def _echogenicity(rng: np.random.Generator, lesion: Lesion, mask: np.ndarray) -> np.ndarray:
    height, width = mask.shape
    depth = np.arange(height, dtype=np.float32)[:, None]
    # Skin, subcutaneous fat (dark) and glandular tissue (bright), with wavy boundaries.
    x = np.arange(width, dtype=np.float32)[None, :]
    fat_top = height * rng.uniform(0.08, 0.14) + 6 * np.sin(x / rng.uniform(40, 90) + rng.uniform(0, 6))
    gland_top = height * rng.uniform(0.22, 0.32) + 10 * np.sin(x / rng.uniform(60, 120) + rng.uniform(0, 6))
    tissue = np.where(depth < fat_top, 1.6, np.where(depth < gland_top, 0.25, 1.0)).astype(np.float32)
    # Slow random texture so that the background is not uniform.
    coarse = rng.standard_normal((height // 16 + 2, width // 16 + 2)).astype(np.float32)
    coarse = cv2.GaussianBlur(coarse, (0, 0), 1.2)
    # The gain is smooth, so it is computed at the coarse grid and only then interpolated.
    gain = np.exp(0.35 * coarse / (coarse.std() + 1e-6))
    tissue *= cv2.resize(gain, (width, height), interpolation=cv2.INTER_CUBIC)
    tissue[mask] *= lesion.contrast
    # Posterior acoustic feature: the columns under the lesion, fading with distance below it.
    columns = mask.any(axis=0)
    if columns.any():
        bottom = np.where(columns, height - 1 - np.argmax(mask[::-1], axis=0), height)
        below = depth > bottom[None, :]
        fade = np.exp(-(depth - bottom[None, :]).clip(0) / (0.5 * height))
        soft = cv2.blur(below.astype(np.float32) * columns[None, :], (15, 15))
        tissue *= 1 + (lesion.posterior - 1) * soft * fade
    return tissue


def render(seed: int, patient: int, view: int, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One view of one patient: an RGB uint8 image and its uint8 {0, 255} lesion mask."""
    patient_rng = np.random.default_rng([seed, patient])
    height, width = size or ORIGINAL_SIZES[int(patient_rng.integers(len(ORIGINAL_SIZES)))]
    lesion = _draw_lesion(patient_rng, height, width)
    rng = np.random.default_rng([seed, patient, view])
    mask = _lesion_mask(lesion, view, height, width)
    fov = _field_of_view(rng, height, width)
    mask &= fov
    echo = _echogenicity(rng, lesion, mask)
    # Complex scatterers, amplitude from echogenicity; a PSF longer laterally than axially.
    scatter = rng.standard_normal((2, height, width), dtype=np.float32) * np.sqrt(echo)[None]
    sigma_axial, sigma_lateral = rng.uniform(0.8, 1.4), rng.uniform(2.0, 3.5)
    real = cv2.GaussianBlur(scatter[0], (0, 0), sigmaX=sigma_lateral, sigmaY=sigma_axial)
    imag = cv2.GaussianBlur(scatter[1], (0, 0), sigmaX=sigma_lateral, sigmaY=sigma_axial)
    # Envelope in dB straight from the power (|I + jQ|^2): 10 log10 is 20 log10 of the amplitude.
    db = 10 * np.log10(real * real + imag * imag + np.float32(1e-12))
    depth = np.arange(height, dtype=np.float32) / height
    attenuation_db = -8.686 * rng.uniform(1.5, 2.5) * depth
    gain_db = 8.686 * (rng.uniform(1.0, 2.0) * depth + 0.15 * np.sin(rng.uniform(3, 8) * depth + rng.uniform(0, 6)))
    db += (attenuation_db + gain_db).astype(np.float32)[:, None]
    # Display gain: the median echo sits a little above mid-grey, as a sonographer sets it.
    db -= np.median(db[fov][::7]) + MEDIAN_BELOW_TOP_DB
    gray = np.clip((db + DYNAMIC_RANGE_DB) * (255 / DYNAMIC_RANGE_DB), 0, 255).astype(np.uint8)
    gray[~fov] = 0
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    _draw_calipers(image, mask)
    return image, (mask.astype(np.uint8) * 255)


def _draw_calipers(image: np.ndarray, mask: np.ndarray) -> None:
    """Two '+' marks at the lesion's widest lateral extent, as a sonographer places them."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return
    row = int(np.median(ys))
    cols = np.nonzero(mask[row])[0]
    for x in (int(cols.min()) - 4, int(cols.max()) + 4):
        cv2.drawMarker(image, (x, row), CALIPER_RGB, markerType=cv2.MARKER_CROSS, markerSize=9, thickness=1)


def write_dataset(outdir: str | Path, patients: int, seed: int = 0, size: tuple[int, int] | None = None) -> Path:
    """Write ``patients`` x 2 views as a ``folder`` dataset: images/, masks/, patients.csv."""
    outdir = Path(outdir)
    (outdir / "images").mkdir(parents=True, exist_ok=True)
    (outdir / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(patients):
        for view in (1, 2):
            image, mask = render(seed, p, view, size)
            name = f"P{p:04d}_v{view}.png"
            # OpenCV writes BGR: flip so that the file holds the RGB image.
            cv2.imwrite(str(outdir / "images" / name), image[:, :, ::-1])
            cv2.imwrite(str(outdir / "masks" / name), mask)
            rows.append({"image": name, "patient": f"P{p:04d}", "view": view})
    with open(outdir / "patients.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "patient", "view"])
        writer.writeheader()
        writer.writerows(rows)
    return outdir
