"""Ingest: find every file of a dataset, pair images with masks, check them, write the manifest.

Every file found under the dataset root ends in the manifest: as the image or a mask of a sample
(included or excluded with a reason), or as a row of its own (excluded, or ignored when it is not
an image). Problems are collected over the whole dataset first, so ``on_bad_sample: fail`` can
list all of them at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
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


# ----------------------------------------------------------------------------- checking pixels


def perceptual_hash(rgb: np.ndarray) -> int:
    """64-bit DCT hash (pHash): near-identical images differ in few bits. Only finds candidates."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    low = cv2.dct(cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA))[:8, :8].flatten()
    bits = low[1:] > np.median(low[1:])
    return int(sum(1 << i for i, b in enumerate(bits) if b))


# Confirming a near duplicate. The perceptual hash sees coarse layout only, and images of one
# scanner share it (field of view, layers, text overlay, depth ruler): it proposes pairs, it does
# not decide. A pair is merged when the fine texture (speckle) agrees nearly everywhere both
# images have texture: grayscale resized to 96x96, minus its Gaussian blur (sigma 1 px), so that
# brightness, contrast and smooth structure drop out, cut into 8x8 blocks of 12x12; the
# similarity is the lower quartile, over the blocks textured in both images, of the blocks'
# normalised correlation: three quarters of the compared blocks must agree, so an identical
# overlay or field-of-view edge cannot carry a pair on its own. Measured (tests/test_data.py and
# the default phantom): a copy re-encoded as JPEG, resized to a third, brightened, or with
# calipers and text drawn on it scores >= 0.95; different patients, even with an identical
# overlay and field of view, score <= 0.35. Merged from 0.7 (dataset.near_duplicate_similarity).
SIGNATURE_SIDE = 96
SIGNATURE_BLOCK = 12
SIGNATURE_SIGMA = 1.0
SIMILARITY_QUANTILE = 25  # percent: the lower quartile of the block correlations
TEXTURED_BLOCK_STD = 1.0  # gray levels: flatter blocks (background) are not compared
MIN_COMMON_BLOCKS = 4
DEFAULT_DUPLICATE_SIMILARITY = 0.7


def texture_signature(rgb: np.ndarray) -> np.ndarray:
    """The fine texture of an image on a fixed grid: (blocks, block pixels) float16 residuals."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    side, block = SIGNATURE_SIDE, SIGNATURE_BLOCK
    small = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)
    residual = small - cv2.GaussianBlur(small, (0, 0), SIGNATURE_SIGMA)
    blocks = residual.reshape(side // block, block, side // block, block).transpose(0, 2, 1, 3)
    return blocks.reshape(-1, block * block).astype(np.float16)


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
    facts["phash"] = perceptual_hash(image.pixels)
    facts["texture"] = texture_signature(image.pixels)
    return facts


def _no_facts() -> dict:
    return {"height": "", "width": "", "flags": [], "pixel_hash": None, "phash": None, "texture": None}


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


def _near_duplicate_pairs(hashes: list[int], max_distance: int) -> list[tuple[int, int, int]]:
    """Pairs (i, j, bits) whose perceptual hashes differ in at most max_distance bits: candidates."""
    if max_distance < 0 or len(hashes) < 2:
        return []
    bits = np.unpackbits(np.array(hashes, dtype=np.uint64).view(np.uint8).reshape(-1, 8), axis=1)
    pairs = []
    for i in range(len(hashes) - 1):
        distance = (bits[i + 1 :] != bits[i]).sum(axis=1)
        pairs.extend((i, i + 1 + int(j), int(distance[j])) for j in np.nonzero(distance <= max_distance)[0])
    return pairs


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

    Near duplicates: pairs whose perceptual hashes differ in at most ``near_duplicate_distance``
    bits are candidates; a candidate pair is merged into one split group only when its
    ``duplicate_similarity`` reaches ``near_duplicate_similarity``.
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
    candidates = _near_duplicate_pairs([checked[i][1]["phash"] for i in usable], near_duplicate_distance)
    rejected = 0
    for a, b, bits in candidates:
        i, j = usable[a], usable[b]
        if checked[i][1]["pixel_hash"] == checked[j][1]["pixel_hash"]:
            continue
        similarity = duplicate_similarity(checked[i][1]["texture"], checked[j][1]["texture"])
        if similarity < near_duplicate_similarity:
            rejected += 1
            continue
        checked[j][1]["flags"].append(f"near_duplicate_of:{ids[i]}(similarity={similarity:.3f},phash_bits={bits})")
        groups.union(checked[i][0].patient, checked[j][0].patient)
    log.info(
        "near-duplicate candidates (perceptual hash within %d bits): %d; not confirmed (similarity < %g): %d",
        near_duplicate_distance,
        len(candidates),
        near_duplicate_similarity,
        rejected,
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
