"""Ingest: find every file of a dataset, pair images with masks, check them, write the manifest.

Every file found under the dataset root ends in the manifest: as the image or a mask of a sample
(included or excluded with a reason), or as a row of its own (excluded, or ignored when it is not
an image). Problems are collected over the whole dataset first, so ``on_bad_sample: fail`` can
list all of them at once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from sonoseg.errors import SonosegError
from sonoseg.imageio import IMAGE_SUFFIXES, MASK_SEPARATOR, problem_with_file, read_image, read_mask

log = logging.getLogger(__name__)

LAYOUTS = ("folder", "busi", "busbra")
MANIFEST_COLUMNS = [
    "sample_id",
    "patient",
    "group",
    "view",
    "class",
    "image",
    "mask",
    "height",
    "width",
    "status",
    "reason",
    "flags",
    "pixel_spacing",
]
BUSI_MASK = re.compile(r"^(?P<name>.+)_mask(?:_(?P<part>\d+))?$")
BUSBRA_IMAGE = re.compile(r"^bus_(?P<patient>[^-]+)-(?P<view>.+)$")


@dataclass
class Candidate:
    """An image with its mask files, as the layout paired them, before any pixel is read."""

    image: Path
    masks: list[Path]
    patient: str
    view: str = ""
    label: str = ""  # BUSI class
    extra: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    excluded_by_choice: str = ""  # an exclusion the user asked for, not a problem


@dataclass
class Layout:
    candidates: list[Candidate]
    claimed: set[Path]  # files the layout itself uses (its CSVs)
    orphans: dict[Path, str]  # files that pair with nothing, and why
    missing: dict[Path, str] = field(default_factory=dict)  # files a CSV names that do not exist: problems


# ----------------------------------------------------------------------------- walking the root


def list_files(root: Path) -> tuple[list[Path], dict[Path, str]]:
    """All regular files under root (resolved), and the links refused because they leave it."""
    root = root.resolve()
    files, refused = [], {}
    for directory, subdirs, names in os.walk(root, followlinks=False):
        here = Path(directory)
        for name in sorted(subdirs):
            link = here / name
            if link.is_symlink():
                refused[link] = (
                    "symbolic link leaves the dataset root"
                    if not _inside(link.resolve(), root)
                    else "symbolic link to a folder (not followed)"
                )
        for name in sorted(names):
            path = here / name
            if path.is_symlink():
                target = path.resolve()
                if not _inside(target, root):
                    refused[path] = "symbolic link leaves the dataset root"
                    continue
                if not target.exists():
                    refused[path] = "broken symbolic link"
                    continue
            if path.is_file():
                files.append(path)
    return sorted(files), refused


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _resolve_listed(root: Path, value: str, column: str, csv_path: Path, base: Path | None = None) -> Path:
    """A path a CSV names, under the root. One that leaves the root is refused: the run stops."""
    path = ((base or root) / str(value)).resolve()
    if not _inside(path, root):
        raise SonosegError(f"{csv_path}: column {column!r} names {value!r}, which lies outside the dataset root {root}")
    return path


def _listed_file_problem(path: Path, value: str, what: str, csv_path: Path, row_number: int) -> str | None:
    """Why a file named in a CSV row cannot be used (empty cell, missing, a folder), or None."""
    where = f"{csv_path.name} row {row_number}"
    if not str(value).strip():
        return f"{where}: the {what} cell is empty"
    if not path.exists():
        return f"{what} listed in {where} does not exist: {path}"
    if not path.is_file():
        return f"{what} listed in {where} is not a file: {path}"
    return None


# ----------------------------------------------------------------------------- layouts


def folder_layout(root: Path, files: list[Path], dataset_csv: str | None) -> Layout:
    """images/ + masks/ matched by name (or stem), patients.csv optional; or an explicit CSV."""
    if dataset_csv:
        return _explicit_csv_layout(root, files, dataset_csv)
    images_dir, masks_dir = root / "images", root / "masks"
    if not images_dir.is_dir():
        raise SonosegError(f"dataset.root {root}: the folder layout needs an images/ folder (and masks/)")
    images = [f for f in files if f.parent == images_dir and _is_image_name(f)]
    masks = [f for f in files if f.parent == masks_dir and _is_image_name(f)]
    masks_by_name = {m.name: m for m in masks}
    masks_by_stem: dict[str, list[Path]] = {}
    for m in masks:
        masks_by_stem.setdefault(m.stem, []).append(m)
    patients_csv = root / "patients.csv"
    table, row_of = {}, {}
    claimed = set()
    if patients_csv.is_file():
        claimed.add(patients_csv.resolve())
        records = _read_csv(patients_csv, required=("image", "patient")).to_dict("records")
        table = {str(r["image"]): r for r in records}
        row_of = {str(r["image"]): number for number, r in enumerate(records, start=2)}  # row 1: header
    candidates, orphans, used_masks = [], {}, set()
    for image in images:
        mask = masks_by_name.get(image.name)
        if mask is None and len(masks_by_stem.get(image.stem, [])) == 1:
            mask = masks_by_stem[image.stem][0]
        row = table.get(image.name, {})
        candidate = Candidate(
            image,
            [mask] if mask else [],
            patient=str(row.get("patient", image.stem)),
            view=_text(row.get("view", "")),
            extra=_extra(row, ("image", "patient", "view")),
        )
        if mask is None:
            candidate.problems.append("image without mask")
        else:
            used_masks.add(mask)
        candidates.append(candidate)
    for m in masks:
        if m not in used_masks:
            orphans[m] = "mask without image"
    # Rows naming images that are not in images/ are problems like the others (listed, or skipped).
    missing = {}
    image_names = {i.name for i in images}
    for name in table:
        if name not in image_names:
            path = _resolve_listed(root, name, "image", patients_csv, base=images_dir)
            missing[path] = f"listed in patients.csv (row {row_of[name]}), but images/ has no such image"
    known = set(images) | set(masks) | claimed
    for f in files:
        if f not in known:
            orphans[f] = "not part of the folder layout (images/, masks/, patients.csv)"
    return Layout(candidates, claimed, orphans, missing)


def _explicit_csv_layout(root: Path, files: list[Path], dataset_csv: str) -> Layout:
    csv_path = _resolve_listed(root, dataset_csv, "dataset.csv", root / dataset_csv)
    if not csv_path.is_file():
        raise SonosegError(f"dataset.csv: file not found: {csv_path}")
    frame = _read_csv(csv_path, required=("image", "mask", "patient"))
    candidates, used = [], set()
    for number, row in enumerate(frame.to_dict("records"), start=2):  # row 1 is the header
        image = (
            _resolve_listed(root, row["image"], "image", csv_path)
            if str(row["image"]).strip()
            else csv_path.with_name(f"row{number}-of-{csv_path.stem}")
        )  # a name for the manifest row only
        mask_values = str(row["mask"]).split(MASK_SEPARATOR)
        masks = [_resolve_listed(root, m, "mask", csv_path) for m in mask_values]
        candidate = Candidate(
            image,
            masks,
            patient=str(row["patient"]),
            view=_text(row.get("view", "")),
            extra=_extra(row, ("image", "mask", "patient", "view")),
        )
        for path, value, what in [(image, row["image"], "image")] + [
            (m, v, "mask") for m, v in zip(masks, mask_values)
        ]:
            problem = _listed_file_problem(path, value, what, csv_path, number)
            if problem:
                candidate.problems.append(problem)
        used.update(p for p in [image, *masks] if p.is_file())
        candidates.append(candidate)
    orphans = {f: "not listed in " + csv_path.name for f in files if f not in used and f != csv_path}
    return Layout(candidates, {csv_path}, orphans)


def busi_layout(root: Path, files: list[Path], include_normal: bool) -> Layout:
    """BUSI: benign/ malignant/ normal/; NAME.png with NAME_mask.png and NAME_mask_N.png."""
    candidates, orphans = [], {}
    images: dict[tuple[Path, str], Path] = {}
    masks: dict[tuple[Path, str], list[Path]] = {}
    for f in files:
        if not _is_image_name(f):
            continue
        match = BUSI_MASK.match(f.stem)
        if match:
            masks.setdefault((f.parent, match["name"]), []).append(f)
        else:
            images[(f.parent, f.stem)] = f
    for key, image in sorted(images.items()):
        label = image.parent.name
        mask_files = sorted(masks.pop(key, []), key=lambda p: p.name)
        candidate = Candidate(image, mask_files, patient=_relative_id(root, image), label=label)
        if not mask_files:
            candidate.problems.append("image without mask")
        if label == "normal" and not include_normal:
            candidate.excluded_by_choice = "normal image left out (dataset.include_normal: false)"
        candidates.append(candidate)
    for leftover in masks.values():
        for m in leftover:
            orphans[m] = "mask without image"
    known = {c.image for c in candidates} | {m for c in candidates for m in c.masks} | set(orphans)
    for f in files:
        if f not in known:
            orphans[f] = "not part of the BUSI layout"
    return Layout(candidates, set(), orphans)


def busbra_layout(root: Path, files: list[Path]) -> Layout:
    """BUS-BRA: Images/bus_XXXX-Y.png with Masks/mask_XXXX-Y.png; patient XXXX; a root CSV adds columns."""
    image_dir, mask_dir = root / "Images", root / "Masks"
    if not image_dir.is_dir():
        raise SonosegError(f"dataset.root {root}: the busbra layout needs Images/ and Masks/ folders")
    masks = {f.stem[len("mask_") :]: f for f in files if f.parent == mask_dir and f.stem.startswith("mask_")}
    csvs = [f for f in files if f.parent == root and f.suffix.lower() == ".csv"]
    info: dict[str, dict] = {}
    for csv_path in csvs:
        frame = _read_csv(csv_path, required=())
        key = next((c for c in frame.columns if frame[c].astype(str).str.match(r"^bus_[^-]+-").any()), None)
        if key is None:
            raise SonosegError(f"{csv_path}: no column holds the image ids (bus_XXXX-Y) of this BUS-BRA dataset")
        for row in frame.to_dict("records"):
            info[str(row[key]).removesuffix(".png")] = _extra(row, (key,))
    candidates, used, orphans = [], set(), {}
    for f in files:
        if f.parent != image_dir or not _is_image_name(f):
            continue
        match = BUSBRA_IMAGE.match(f.stem)
        if not match:
            orphans[f] = "image name is not bus_XXXX-Y"
            continue
        ident = f.stem[len("bus_") :]
        mask = masks.get(ident)
        candidate = Candidate(
            f, [mask] if mask else [], patient=match["patient"], view=match["view"], extra=info.get(f.stem, {})
        )
        if mask is None:
            candidate.problems.append("image without mask")
        else:
            used.add(mask)
        candidates.append(candidate)
    known = {c.image for c in candidates} | used | set(csvs) | set(orphans)
    for f in files:
        if f not in known:
            orphans[f] = "mask without image" if f.parent == mask_dir else "not part of the BUS-BRA layout"
    return Layout(candidates, set(csvs), orphans)


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise SonosegError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SonosegError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _extra(row: dict, skip: tuple[str, ...]) -> dict:
    return {k: v for k, v in row.items() if k not in skip}


def _relative_id(root: Path, path: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def sample_id_for(root: Path, image: Path) -> str:
    """A file-name-safe id from the image's path under the root (spaces, parentheses -> '_')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", _relative_id(root, image).replace("/", "__")).strip("_")


# ----------------------------------------------------------------------------- near duplicates
#
# Public sets hold copies of one frame that are not pixel-identical: re-encoded, rescaled, contrast
# changed, cropped by a few percent at the border (and resized back), with calipers or text drawn on
# them. Speckle is the fingerprint of a frame: no two frames share it, and every copy keeps it. The
# finder works in two steps (docs/near_duplicates.md gives the rule, the measurements and the tests):
#
# 1. Proposal, over all pairs at once (one matrix product). Each image is equalised (a rank transform:
#    gamma, contrast and brightness drop out), stretched to 256x256, and reduced to 12x12 thumbnails:
#    one of its centre (the middle 80 %), and 81 of the places where that centre lies in the image when
#    the other image is a crop of it: per axis, a window of 100, 92 or 84 % of the image, centred or
#    moved by 4 % either way (crops up to about 10 % per side). A pair's score is the best correlation
#    of either image's centre with the other's 81 thumbnails; it is a candidate when the angle between
#    the thumbnails, arccos(score), is at most near_duplicate_distance / 64 of a half turn, i.e. the
#    Hamming distance a 64-bit random-hyperplane hash of the thumbnails would show on average (12 bits:
#    correlation >= 0.83; 64: every pair; -1: no search). The thumbnails see layout, not speckle, so
#    images of one scanner and organ preset are candidates too: the proposal only saves time.
# 2. Confirmation of each candidate. The proposal's window is the first guess of where one image lies
#    in the other; the map (affine: scale and shift per axis) is refined by maximising the enhanced
#    correlation coefficient (cv2.findTransformECC) on 32, 64 and 128 px versions, and on 256 px when the
#    pair already looks alike (similarity >= REFINE_FROM). The region both show is resampled to 96x96 in
#    each image and compared by its speckle: the grayscale minus its Gaussian blur (sigma 1 px), cut into
#    8x8 blocks of 12x12, and the lower quartile, over the blocks textured in both, of the blocks'
#    normalised correlations. Three quarters of the blocks must agree, so an identical overlay or field
#    of view cannot carry a pair. Merged from near_duplicate_similarity (0.7). Measured on the phantom:
#    copies (crops of 3-10 % resized back, one-sided crops, rescaling 0.33-1.25x, gamma, contrast,
#    brightness, JPEG q 40-70, calipers, all at once) score >= 0.95; different frames score <= 0.08,
#    <= 0.34 with an identical overlay, <= 0.4 for the same anatomy scanned again with new speckle.
CANONICAL_SIDE = 256
THUMBNAIL_SIDE = 12
THUMBNAIL_MARGIN = 0.1  # the centre thumbnail leaves out 10 % at each border (what a crop may cut)
# (width, shift of the centre) of a window per axis, as fractions of the image: a copy cropped by
# (left, right) shows the window of width 1 - left - right whose centre is moved by (left - right) / 2.
CROP_WINDOWS = tuple((width, shift) for width in (1.0, 0.92, 0.84) for shift in (0.0, -0.04, 0.04))
HASH_BITS = 64  # the unit of near_duplicate_distance
ALIGNMENT_LEVELS = ((32, 30, 3), (64, 20, 3), (128, 15, 5))  # (side in px, ECC iterations, Gaussian filter)
FINE_LEVEL = (CANONICAL_SIDE, 30, 5)
REFINE_FROM = 0.3  # copies score >= 0.6 before the 256-px refinement, different frames <= 0.1
MAX_WARP_CHANGE = 0.15  # an ECC step moving the map further from the proposal's window is refused
MIN_SHARED = 0.5  # per axis: the two images must show at least half of each other's field
SIGNATURE_SIDE = 96
SIGNATURE_BLOCK = 12
SIGNATURE_SIGMA = 1.0
SIMILARITY_QUANTILE = 25  # percent: the lower quartile of the block correlations
TEXTURED_BLOCK_STD = 1.0  # gray levels: flatter blocks (background) are not compared
MIN_COMMON_BLOCKS = 4
DEFAULT_DUPLICATE_SIMILARITY = 0.7


@dataclass
class Fingerprint:
    """What the duplicate search keeps of an image (about 110 kB)."""

    canonical: np.ndarray  # uint8 CANONICAL_SIDE x CANONICAL_SIDE grayscale, the image stretched to a square
    thumbnails: np.ndarray  # float32 (windows, THUMBNAIL_SIDE**2), zero mean, unit norm; row 0: the centre
    height: int
    width: int


@dataclass(frozen=True)
class NearDuplicateMatch:
    """How a second image relates to a first one, as the confirmation found it."""

    similarity: float  # the speckle similarity over the region both show (1: same frame)
    bits: float  # the proposal's distance, in hash bits (see near_duplicate_distance)
    zoom: tuple[float, float]  # pixels of the second image per pixel of the first (x, y)
    field: tuple[float, float]  # share of the wider image's width and height that the other shows

    def flag_details(self) -> str:
        return (
            f"similarity={self.similarity:.3f},phash_bits={round(self.bits)},"
            f"zoom={self.zoom[0]:.2f}x{self.zoom[1]:.2f},field={self.field[0]:.2f}x{self.field[1]:.2f}"
        )


@functools.lru_cache(maxsize=1)
def _window_edges() -> np.ndarray:
    """(windows, THUMBNAIL_SIDE + 1): the thumbnail pixels' edges in each window's centre part (what
    the centre thumbnail of a copy cropped to that window sees), in canonical pixels."""
    edges = []
    for width, shift in CROP_WINDOWS:
        low = (0.5 + shift - width * (0.5 - THUMBNAIL_MARGIN)) * CANONICAL_SIDE
        high = (0.5 + shift + width * (0.5 - THUMBNAIL_MARGIN)) * CANONICAL_SIDE
        edges.append(np.linspace(low, high, THUMBNAIL_SIDE + 1))
    return np.array(edges)


def fingerprint(rgb: np.ndarray) -> Fingerprint:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    square = (CANONICAL_SIDE, CANONICAL_SIDE)
    canonical = cv2.resize(gray, square, interpolation=cv2.INTER_AREA)
    equalized = cv2.resize(cv2.equalizeHist(gray), square, interpolation=cv2.INTER_AREA)
    # Every thumbnail pixel is the mean over its box, fractional edges counted in part: the integral
    # image is bilinear inside each pixel, so interpolating it at the boxes' corners is exact.
    integral = cv2.integral(equalized, sdepth=cv2.CV_64F)
    edges = _window_edges()
    windows, bins = edges.shape[0], edges.shape[1] - 1
    at, whole = edges.ravel(), np.floor(edges.ravel()).astype(int)
    part, following = at - whole, np.minimum(whole + 1, CANONICAL_SIDE)
    rows = integral[whole] * (1 - part)[:, None] + integral[following] * part[:, None]
    corners = (rows[:, whole] * (1 - part) + rows[:, following] * part).reshape(windows, bins + 1, windows, bins + 1)
    sums = corners[:, 1:, :, 1:] - corners[:, :-1, :, 1:] - corners[:, 1:, :, :-1] + corners[:, :-1, :, :-1]
    # (vertical window, row, horizontal window, column) -> one thumbnail per (vertical, horizontal) window;
    # a window's boxes all have one area, which the normalisation removes.
    thumbnails = sums.transpose(0, 2, 1, 3).reshape(windows**2, bins**2)
    thumbnails -= thumbnails.mean(axis=1, keepdims=True)
    thumbnails /= np.maximum(np.linalg.norm(thumbnails, axis=1, keepdims=True), 1e-6)
    return Fingerprint(canonical, thumbnails.astype(np.float32), *gray.shape)


def bits_of(correlation: float) -> float:
    """The proposal distance in hash bits: 64 x angle / pi (a random-hyperplane hash's expected bits)."""
    return HASH_BITS * float(np.arccos(np.clip(correlation, -1.0, 1.0))) / np.pi


@dataclass(frozen=True)
class Proposal:
    """A candidate pair, with the proposal's guess of how one image lies in the other."""

    first: int  # positions in the fingerprint list, first < second
    second: int
    correlation: float
    crop: int  # first or second: the image whose centre was found in a window of the other
    window: int  # that window: vertical index x len(CROP_WINDOWS) + horizontal index


def propose(fingerprints: list[Fingerprint], max_bits: int) -> list[Proposal]:
    """Candidate pairs: thumbnail angle within max_bits (of 64) of a half turn. Quadratic, vectorised."""
    if max_bits < 0 or len(fingerprints) < 2:
        return []
    floor = np.cos(np.pi * min(max_bits, HASH_BITS) / HASH_BITS) - 1e-6
    centres = np.stack([f.thumbnails[0] for f in fingerprints])
    windows = np.stack([f.thumbnails for f in fingerprints])
    n, per_image, size = windows.shape
    flat = windows.reshape(n * per_image, size)
    best = np.empty((n, n), np.float32)  # best[a, b]: a's centre in b's windows (a is the crop)
    where = np.empty((n, n), np.int16)
    for start in range(0, n, 64):
        scores = (centres[start : start + 64] @ flat.T).reshape(-1, n, per_image)
        best[start : start + 64] = scores.max(axis=2)
        where[start : start + 64] = scores.argmax(axis=2)
    proposals = []
    for a, b in zip(*np.nonzero(np.triu(np.maximum(best, best.T) >= floor, 1))):
        crop, frame = (a, b) if best[a, b] >= best[b, a] else (b, a)
        proposals.append(Proposal(int(a), int(b), float(best[crop, frame]), int(crop), int(where[crop, frame])))
    return proposals


def _window_map(window: int) -> np.ndarray:
    """The proposal's guess: the crop's normalised coordinates (0..1) -> the frame's, 3x3."""
    (height, shift_y), (width, shift_x) = (
        CROP_WINDOWS[window // len(CROP_WINDOWS)],
        CROP_WINDOWS[window % len(CROP_WINDOWS)],
    )
    return np.array([[width, 0, 0.5 + shift_x - width / 2], [0, height, 0.5 + shift_y - height / 2], [0, 0, 1]])


def _to_pixels(side: int) -> np.ndarray:
    """Normalised coordinates -> pixel coordinates of a side x side image (pixel centres at +0.5)."""
    return np.array([[side, 0, -0.5], [0, side, -0.5], [0, 0, 1]])


def _ecc(frame: Fingerprint, crop: Fingerprint, mapping: np.ndarray, level: tuple[int, int, int]) -> np.ndarray:
    """Refine the crop -> frame map on side x side versions; the map unchanged when ECC fails or wanders."""
    side, iterations, filter_size = level

    def at_side(image):
        return (
            image if image.shape[0] == side else cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        ).astype(np.float32)

    pixels = _to_pixels(side)
    warp = (pixels @ mapping @ np.linalg.inv(pixels))[:2].astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-4)
    try:
        _, warp = cv2.findTransformECC(
            at_side(crop.canonical), at_side(frame.canonical), warp, cv2.MOTION_AFFINE, criteria, None, filter_size
        )
    except cv2.error:  # no convergence (flat images, unrelated pairs)
        return mapping
    refined = np.linalg.inv(pixels) @ np.vstack([warp, [0, 0, 1]]).astype(np.float64) @ pixels
    return refined if np.abs(refined - mapping).max() <= MAX_WARP_CHANGE else mapping


def _shared_region(frame: Fingerprint, crop: Fingerprint, mapping: np.ndarray):
    """The region both images show, resampled to SIGNATURE_SIDE x SIGNATURE_SIDE in each (float32), and
    its extent in the crop's normalised coordinates per axis; None when it is under MIN_SHARED."""
    corners = np.linalg.inv(mapping) @ np.array([[0, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1]], dtype=float)
    xs, ys = np.sort(corners[0]), np.sort(corners[1])
    x0, x1, y0, y1 = max(0.0, xs[1]), min(1.0, xs[2]), max(0.0, ys[1]), min(1.0, ys[2])
    if x1 - x0 < MIN_SHARED or y1 - y0 < MIN_SHARED:
        return None
    # Resampled at twice the signature's size, then area-reduced: both images alike, whatever their zoom.
    out = 2 * SIGNATURE_SIDE
    grid = np.array(
        [[(x1 - x0) / out, 0, x0 + 0.5 * (x1 - x0) / out], [0, (y1 - y0) / out, y0 + 0.5 * (y1 - y0) / out], [0, 0, 1]]
    )
    pixels = _to_pixels(CANONICAL_SIDE)
    views = []
    for image, to_image in ((frame, mapping), (crop, np.eye(3))):
        warp = (pixels @ to_image @ grid)[:2].astype(np.float32)
        big = cv2.warpAffine(
            image.canonical.astype(np.float32),
            warp,
            (out, out),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        views.append(cv2.resize(big, (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA))
    return views, (x1 - x0, y1 - y0)


def _match(frame: Fingerprint, crop: Fingerprint, window: int) -> tuple[float, np.ndarray, tuple[float, float]]:
    """Align the crop in the frame from the proposal's window; (similarity, map, shared extent)."""
    mapping = _window_map(window)
    for level in ALIGNMENT_LEVELS:
        mapping = _ecc(frame, crop, mapping, level)
    similarity, shared = _aligned_similarity(frame, crop, mapping)
    if similarity >= REFINE_FROM:
        finer = _ecc(frame, crop, mapping, FINE_LEVEL)
        better, extent = _aligned_similarity(frame, crop, finer)
        if better > similarity:
            similarity, mapping, shared = better, finer, extent
    return similarity, mapping, shared


def _aligned_similarity(
    frame: Fingerprint, crop: Fingerprint, mapping: np.ndarray
) -> tuple[float, tuple[float, float]]:
    region = _shared_region(frame, crop, mapping)
    if region is None:
        return 0.0, (0.0, 0.0)
    (in_frame, in_crop), shared = region
    return duplicate_similarity(_residual_blocks(in_frame), _residual_blocks(in_crop)), shared


def match_near_duplicate(
    first: Fingerprint, second: Fingerprint, proposal: Proposal | None = None
) -> NearDuplicateMatch:
    """Confirm one pair (the proposal from ``propose``, or found here): similarity, zoom and field."""
    if proposal is None:
        proposal = propose([first, second], HASH_BITS)[0]
    first_is_crop = proposal.crop == proposal.first
    crop, frame = (first, second) if first_is_crop else (second, first)
    similarity, mapping, shared = _match(frame, crop, proposal.window)
    scale = np.array([mapping[0, 0], mapping[1, 1]])  # share of the frame's width / height the crop shows
    # Pixels of the crop per pixel of the frame, per axis; then of the second per pixel of the first.
    zoom = np.array([crop.width, crop.height]) / (scale * np.array([frame.width, frame.height]))
    zoom = 1 / zoom if first_is_crop else zoom
    # The shared extent in the frame's units, over the wider of the two fields (the crop spans `scale`).
    field = scale * np.array(shared) / np.maximum(scale, 1.0)
    return NearDuplicateMatch(similarity, bits_of(proposal.correlation), tuple(zoom.tolist()), tuple(field.tolist()))


def _residual_blocks(gray: np.ndarray) -> np.ndarray:
    """The fine texture of a SIGNATURE_SIDE-square grayscale: (blocks, block pixels) residuals."""
    side, block = SIGNATURE_SIDE, SIGNATURE_BLOCK
    residual = gray - cv2.GaussianBlur(gray, (0, 0), SIGNATURE_SIGMA)
    blocks = residual.reshape(side // block, block, side // block, block).transpose(0, 2, 1, 3)
    return blocks.reshape(-1, block * block)


def texture_signature(rgb: np.ndarray) -> np.ndarray:
    """The fine texture of a whole image on a fixed grid: (blocks, block pixels) float16 residuals."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(gray, (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA)
    return _residual_blocks(small).astype(np.float16)


def duplicate_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Lower quartile of the normalised correlations of two texture signatures' blocks, over the
    blocks textured in both (1: the same pixels up to brightness and contrast; near 0: unrelated)."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    limit = TEXTURED_BLOCK_STD * np.sqrt(a.shape[1])
    common = (norm_a > limit) & (norm_b > limit)
    if common.sum() < MIN_COMMON_BLOCKS:
        # Almost no texture (a blank or flat image): compare the whole residual instead.
        flat_a, flat_b = a.ravel(), b.ravel()
        denominator = np.linalg.norm(flat_a) * np.linalg.norm(flat_b)
        return float(flat_a @ flat_b / denominator) if denominator > 0 else 0.0
    correlations = (a[common] * b[common]).sum(axis=1) / (norm_a[common] * norm_b[common])
    return float(np.percentile(correlations, SIMILARITY_QUANTILE))


# ----------------------------------------------------------------------------- checking pixels


def _check_candidate(candidate: Candidate) -> dict:
    """Read the pixels; returns facts for the manifest row (and appends problems)."""
    facts = _no_facts()
    if candidate.problems:
        return facts
    for path in [candidate.image, *candidate.masks]:
        problem = problem_with_file(path)
        if problem:
            candidate.problems.append(f"{path.name}: {problem}")
    if candidate.problems:
        return facts
    try:
        image = read_image(candidate.image)
        mask = read_mask(candidate.masks)
    except SonosegError as exc:
        candidate.problems.append(str(exc))
        return facts
    height, width = image.pixels.shape[:2]
    facts.update(height=height, width=width, flags=image.notes + mask.notes)
    if mask.pixels.shape != (height, width):
        candidate.problems.append(
            f"image is {width}x{height} but its mask is {mask.pixels.shape[1]}x{mask.pixels.shape[0]}"
        )
        return facts
    if not mask.pixels.any():
        facts["flags"].append("empty_mask")
    facts["pixel_hash"] = hashlib.blake2b(image.pixels.tobytes(), digest_size=16).hexdigest()
    facts["fingerprint"] = fingerprint(image.pixels)
    return facts


def _no_facts() -> dict:
    return {"height": "", "width": "", "flags": [], "pixel_hash": None, "fingerprint": None}


class _Groups:
    """Union-find over patients: duplicated images put their patients in one split group."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# ----------------------------------------------------------------------------- ingest


def ingest(
    root: str | Path,
    layout: str,
    on_bad_sample: str = "fail",
    dataset_csv: str | None = None,
    include_normal: bool = False,
    pixel_spacing: float | str | None = None,
    near_duplicate_distance: int = 12,
    near_duplicate_similarity: float = DEFAULT_DUPLICATE_SIMILARITY,
) -> pd.DataFrame:
    """Build the manifest of a dataset. Raises SonosegError listing every problem when policy is fail.

    Near duplicates (docs/near_duplicates.md): pairs whose thumbnails, compared over the windows a
    crop of up to about 8-10 % per side would show, lie within ``near_duplicate_distance`` hash bits
    (-1: no search, 64: every pair) are candidates; a candidate pair is merged into one split group
    only when, aligned, its speckle similarity reaches ``near_duplicate_similarity``.
    """
    root = Path(root)
    if not root.is_dir():
        raise SonosegError(f"dataset.root: folder not found: {root}")
    if layout not in LAYOUTS:
        raise SonosegError(f"dataset.layout: {layout!r} is not one of {LAYOUTS}")
    if on_bad_sample not in ("fail", "exclude"):
        raise SonosegError(f"dataset.on_bad_sample: {on_bad_sample!r} is not 'fail' or 'exclude'")
    root = root.resolve()
    files, refused_links = list_files(root)
    if layout == "folder":
        found = folder_layout(root, files, dataset_csv)
    elif layout == "busi":
        found = busi_layout(root, files, include_normal)
    else:
        found = busbra_layout(root, files)

    rows, problems = [], []
    groups = _Groups()
    checked = []
    for candidate in found.candidates:
        facts = _check_candidate(candidate) if not candidate.excluded_by_choice else _no_facts()
        checked.append((candidate, facts))
        groups.find(candidate.patient)
    ids = _unique_ids([sample_id_for(root, c.image) for c, _ in checked])

    # Duplicates: identical pixels, then perceptual near-duplicates, among usable samples.
    usable = [i for i, (c, f) in enumerate(checked) if f["pixel_hash"] is not None]
    first_with_hash: dict[str, int] = {}
    for i in usable:
        c, facts = checked[i]
        twin = first_with_hash.setdefault(facts["pixel_hash"], i)
        if twin != i:
            facts["flags"].append(f"duplicate_of:{ids[twin]}")
            groups.union(c.patient, checked[twin][0].patient)
    started = time.perf_counter()
    fingerprints = [checked[i][1]["fingerprint"] for i in usable]
    candidates = propose(fingerprints, near_duplicate_distance)
    rejected = 0
    for proposal in candidates:
        i, j = usable[proposal.first], usable[proposal.second]
        if checked[i][1]["pixel_hash"] == checked[j][1]["pixel_hash"]:
            continue
        match = match_near_duplicate(fingerprints[proposal.first], fingerprints[proposal.second], proposal)
        if match.similarity < near_duplicate_similarity:
            rejected += 1
            continue
        checked[j][1]["flags"].append(f"near_duplicate_of:{ids[i]}({match.flag_details()})")
        groups.union(checked[i][0].patient, checked[j][0].patient)
    log.info(
        "near-duplicate candidates (thumbnails within %d hash bits): %d; not confirmed (similarity < %g): %d; %.1f s",
        near_duplicate_distance,
        len(candidates),
        near_duplicate_similarity,
        rejected,
        time.perf_counter() - started,
    )

    spacing_column = pixel_spacing if isinstance(pixel_spacing, str) else None
    for sample_id, (candidate, facts) in zip(ids, checked):
        if candidate.problems:
            status, reason = "excluded", "; ".join(candidate.problems)
            problems.append((candidate.image, reason))
        elif candidate.excluded_by_choice:
            status, reason = "excluded", candidate.excluded_by_choice
        else:
            status, reason = "included", ""
        spacing = candidate.extra.get(spacing_column, "") if spacing_column else (pixel_spacing or "")
        if spacing_column and status == "included" and not _is_positive_number(spacing):
            raise SonosegError(
                f"dataset.pixel_spacing: column {spacing_column!r} has no valid value for {candidate.image}"
            )
        rows.append(
            {
                "sample_id": sample_id,
                "patient": candidate.patient,
                "group": groups.find(candidate.patient),
                "view": candidate.view,
                "class": candidate.label,
                "image": str(candidate.image),
                "mask": MASK_SEPARATOR.join(str(m) for m in candidate.masks),
                "height": facts["height"],
                "width": facts["width"],
                "status": status,
                "reason": reason,
                "flags": ";".join(facts["flags"]),
                "pixel_spacing": spacing,
                **{f"meta_{k}": v for k, v in candidate.extra.items()},
            }
        )
    for path in sorted(found.claimed):
        rows.append({"sample_id": "", "image": str(path), "status": "metadata", "reason": "read by the layout"})
    for path, reason in sorted(found.missing.items()):
        problems.append((path, reason))
        rows.append({"sample_id": "", "image": str(path), "status": "excluded", "reason": reason})
    for path, reason in sorted({**found.orphans, **refused_links}.items()):
        is_problem = _is_image_name(path) or path in refused_links
        if is_problem:
            problems.append((path, reason))
        rows.append(
            {
                "sample_id": "",
                "image": str(path),
                "status": "excluded" if is_problem else "ignored",
                "reason": reason if is_problem else f"not an image file ({reason})",
            }
        )

    manifest = pd.DataFrame(rows)
    for column in MANIFEST_COLUMNS:
        if column not in manifest.columns:
            manifest[column] = ""
    manifest = manifest[MANIFEST_COLUMNS + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]]
    _log_counts(manifest, len(files) + len(refused_links))
    if problems and on_bad_sample == "fail":
        listing = "\n".join(f"  {path}: {reason}" for path, reason in problems)
        raise SonosegError(
            f"dataset {root}: {len(problems)} problem(s) found (dataset.on_bad_sample: fail):\n{listing}\n"
            "Fix them, or set dataset.on_bad_sample: exclude to leave these files out (each is listed in the manifest)."
        )
    if not (manifest["status"] == "included").any():
        raise SonosegError(f"dataset {root}: no usable image-mask pair found for layout {layout!r}")
    return manifest


def _is_positive_number(value) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def _unique_ids(ids: list[str]) -> list[str]:
    seen: Counter = Counter()
    unique = []
    for sample_id in ids:
        seen[sample_id] += 1
        unique.append(sample_id if seen[sample_id] == 1 else f"{sample_id}_{seen[sample_id]}")
    return unique


def _log_counts(manifest: pd.DataFrame, files_found: int) -> None:
    log.info("files found under the root: %d", files_found)
    for status, count in manifest["status"].value_counts().sort_index().items():
        log.info("rows %s: %d", status, count)
    excluded = manifest[manifest["status"] != "included"]
    for reason, count in excluded["reason"].str.replace(r"^[^:]*\.\w+: ", "", regex=True).value_counts().items():
        log.info("  %s: %d", reason, count)
    flags = Counter(f.split(":")[0] for cell in manifest["flags"].fillna("") for f in str(cell).split(";") if f)
    for flag, count in sorted(flags.items()):
        log.info("flagged %s: %d", flag, count)


def included(manifest: pd.DataFrame) -> pd.DataFrame:
    """The usable samples, with their sizes as integers."""
    samples = manifest[manifest["status"] == "included"].reset_index(drop=True)
    return samples.astype({"height": float, "width": float}).astype({"height": int, "width": int})


def read_manifest(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"sample_id": str, "patient": str, "group": str, "view": str}, keep_default_na=False)
