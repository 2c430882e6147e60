"""Ingest: find every file of a dataset, pair images with masks, check them, write the manifest.

Every file found under the dataset root ends in the manifest: as the image or a mask of a sample
(included or excluded with a reason), or as a row of its own (excluded, or ignored when it is not
an image). Problems are collected over the whole dataset first, so ``on_bad_sample: fail`` can
list all of them at once.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from sonoseg.data.duplicates import (
    DEFAULT_DUPLICATE_DISTANCE,
    DEFAULT_DUPLICATE_SIMILARITY,
    fingerprint,
    in_threads,
    near_duplicates,
    pixel_hash,
)
from sonoseg.data.imageio import (
    MASK_SEPARATOR,
    lesion_count,
    orientation_note,
    problem_with_file,
    read_image,
    read_mask,
)
from sonoseg.data.layouts import (
    LAYOUTS,
    NOT_IN_PATIENTS_CSV,
    Candidate,
    Layout,
    first_names,
    is_image_name,
    list_files,
    pair,
    sample_id_for,
)
from sonoseg.errors import SonosegError

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------- checking pixels


def _check_candidate(candidate: Candidate) -> dict:
    """Read the pixels; returns facts for the manifest row (and appends problems)."""
    facts = _no_facts()
    if candidate.problems:
        return facts
    for path in [candidate.image, *candidate.masks]:
        problem = problem_with_file(path)
        if problem:
            candidate.problems.append(_naming_the_file(candidate, f"{path}: {problem}"))
    for path in candidate.masks:  # the manifest joins an image's masks with the separator
        if MASK_SEPARATOR in str(path):
            candidate.problems.append(
                f"{path}: path contains '{MASK_SEPARATOR}', which the manifest uses to separate mask files"
            )
    if candidate.problems:
        return facts
    try:
        image = read_image(candidate.image)
        mask = read_mask(candidate.masks)
    except SonosegError as exc:
        candidate.problems.append(_naming_the_file(candidate, str(exc)))
        return facts
    height, width = image.pixels.shape[:2]
    facts.update(height=height, width=width, flags=image.notes + mask.notes)
    turned = _orientation_problem(image.orientation, mask.orientation, mask.pixels.shape, (height, width))
    if turned:
        candidate.problems.append(turned)
        return facts
    if mask.pixels.shape != (height, width):
        candidate.problems.append(_size_problem((height, width), mask.pixels.shape, candidate.masks))
        return facts
    if not mask.pixels.any():
        facts["flags"].append("empty_mask")
    lesions = lesion_count(mask.pixels)
    if lesions > 1:
        facts["flags"].append(f"lesions:{lesions}")
    facts["pixel_hash"] = pixel_hash(image.pixels)
    facts["mask_hash"] = pixel_hash(mask.pixels)
    facts["fingerprint"] = fingerprint(image.pixels)
    return facts


def _size_problem(image_shape: tuple[int, int], mask_shape: tuple[int, int], masks: list[Path]) -> str:
    """An image and its mask of different sizes, the mask named; a mask the image's size scaled by one factor
    (saved at half resolution, say) is told how to fix it."""
    (height, width), (mask_height, mask_width) = image_shape, mask_shape
    problem = (
        f"image is {width}x{height} but its mask {', '.join(map(str, masks))} is {mask_width}x{mask_height} "
        "(width x height, pixels)"
    )
    factor = mask_width / width
    # One factor for both sides (a mask saved at half resolution), not a mask a pixel larger (padded or cropped,
    # which resizing would misalign).
    if abs(factor - 1) > 0.02 and (mask_width, mask_height) == (round(width * factor), round(height * factor)):
        problem += (
            f": the mask is the image scaled by {factor:.3g}; resize it to {width}x{height} with "
            "nearest-neighbour interpolation (which keeps it 0/255), or draw it on the image itself"
        )
    return problem


def _orientation_problem(image_turn: int, mask_turn: int, mask_shape, turned_shape) -> str | None:
    """Images and masks are read as viewers show them (EXIF orientation applied; 1: none). An image
    turned so whose mask has no such tag pairs up only when the mask fits the turned image and could not
    fit the stored one (a turn by 90 degrees of a non-square image): a mask drawn on the stored pixels
    would otherwise train on a turned lesion without a word. Any other difference (a tag on the mask
    alone, a flip or half turn, a square image) is a problem: the sizes cannot tell which was meant."""
    if image_turn == mask_turn:
        return None
    if mask_turn == 1:  # the image's quarter turns (5-8) swap its sides
        stored_shape = turned_shape[::-1] if image_turn in (5, 6, 7, 8) else turned_shape
        if tuple(mask_shape) == tuple(turned_shape) != tuple(stored_shape):
            return None  # drawn on the image as viewers show it (an annotation tool that applies the tag)

    def named(turn: int) -> str:
        return "none" if turn == 1 else orientation_note(turn)

    return (
        f"the image's EXIF orientation ({named(image_turn)}) differs from its mask's ({named(mask_turn)}), "
        "and which pixels the mask was drawn on cannot be told from their sizes: save both alike (the image "
        "without the tag, or the mask drawn on the image as viewers show it)"
    )


def _naming_the_file(candidate: Candidate, problem: str) -> str:
    """A problem "PATH: what" of one of the candidate's files, as its manifest reason. The reason is
    listed after the image's path, so the image's own path is dropped; a mask keeps its full path
    (in the folder layout image and mask share a name)."""
    return problem.removeprefix(f"{candidate.image}: ")


def _warn_of_several_lesions(ids: list[str], checked: list) -> None:
    """Masks of several lesions, against the paper's post-processing, which keeps one per image."""
    several = [
        sample_id
        for sample_id, (_, facts) in zip(ids, checked)
        if any(f.startswith("lesions:") for f in facts["flags"])
    ]
    if several:
        log.warning(
            "%d mask(s) hold several lesions (flag lesions:N): %s; keeping the largest component (the paper's "
            "post-processing, predict.postprocess keep_one, or where validation chooses it) scores a perfect "
            "prediction of two equal lesions at Dice 0.667",
            len(several),
            first_names(several),
        )


def _class_conflict(candidate: Candidate, twin: Candidate, twin_id: str) -> list[str]:
    """A duplicate filed under another class (BUSI's benign and malignant folders) than its twin: a flag."""
    if candidate.label and twin.label and candidate.label != twin.label:
        return [f"duplicate_class_differs:{twin_id}({twin.label}/{candidate.label})"]
    return []


DISAGREEING = ("duplicate_mask_differs:", "duplicate_class_differs:")


def _warn_of_disagreeing_duplicates(ids: list[str], checked: list) -> None:
    """Copies of one image whose masks or classes disagree: both stay (in one split group), but which label is
    right is the user's to say, so the log names them (their flags: DISAGREEING)."""
    found = [
        (sample_id, flag)
        for sample_id, (_, facts) in zip(ids, checked)
        for flag in facts["flags"]
        if flag.startswith(DISAGREEING)
    ]
    if found:
        log.warning(
            "%d duplicate image(s) disagree with their twin on the label (flags duplicate_mask_differs, "
            "duplicate_class_differs): %s; both are kept, in one split group, and both are scored: correct or "
            "remove the wrong one",
            len(found),
            first_names([f"{sample_id} ({flag})" for sample_id, flag in found]),
        )


def _no_facts() -> dict:
    return {"height": "", "width": "", "flags": [], "pixel_hash": None, "mask_hash": None, "fingerprint": None}


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


# Where a user sets ingest's options: one message serves both, as ingest cannot tell which dataset it reads.
SETTINGS_OF = "this dataset's config entry (the dataset: section, or its entry in external_datasets:)"


def ingest(
    root: str | Path,
    layout: str,
    on_bad_sample: str = "fail",
    dataset_csv: str | None = None,
    include_normal: bool = False,
    pixel_spacing: float | str | None = None,
    near_duplicate_distance: int = DEFAULT_DUPLICATE_DISTANCE,
    near_duplicate_similarity: float = DEFAULT_DUPLICATE_SIMILARITY,
    threads: int = 1,
) -> pd.DataFrame:
    """Build the manifest of a dataset. Raises SonosegError listing every problem when policy is fail.
    ``threads`` threads read the images and confirm near duplicates; the manifest is the same for any.

    Near duplicates (docs/near_duplicates.md): pairs whose thumbnails, compared over the windows a
    crop of up to about 8-10 % per side would show, lie within ``near_duplicate_distance`` hash bits
    (-1: no search, 64: every pair) are candidates; a candidate pair is merged into one split group
    only when, aligned, its speckle similarity reaches ``near_duplicate_similarity``.
    """
    reading = _read_layout(root, layout, on_bad_sample, dataset_csv, include_normal)
    given, root, files, refused_links, found = reading

    rows = []
    groups = _Groups()
    # Each candidate's check touches only its own files and its own problem list.
    facts_of = list(
        in_threads(
            lambda c: _check_candidate(c) if not c.excluded_by_choice else _no_facts(), found.candidates, threads
        )
    )
    checked = list(zip(found.candidates, facts_of))
    for candidate in found.candidates:
        groups.find(candidate.patient)
    ids = _unique_ids([sample_id_for(root, c.image) for c, _ in checked])
    _refuse_shared_ids(root, ids, [c.image for c, _ in checked])

    # Duplicates: identical pixels, then perceptual near-duplicates, among usable samples.
    usable = [i for i, (c, f) in enumerate(checked) if f["pixel_hash"] is not None]
    first_with_hash: dict[str, int] = {}
    for i in usable:
        c, facts = checked[i]
        twin = first_with_hash.setdefault(facts["pixel_hash"], i)
        if twin != i:
            facts["flags"].append(f"duplicate_of:{ids[twin]}")
            groups.union(c.patient, checked[twin][0].patient)
            if facts["mask_hash"] != checked[twin][1]["mask_hash"]:
                facts["flags"].append(f"duplicate_mask_differs:{ids[twin]}")
            facts["flags"] += _class_conflict(c, checked[twin][0], ids[twin])
    started = time.perf_counter()
    search = near_duplicates(
        [checked[i][1]["fingerprint"] for i in usable],
        [checked[i][1]["pixel_hash"] for i in usable],
        near_duplicate_distance,
        near_duplicate_similarity,
        threads,
    )
    for proposal, match in search.confirmed:
        i, j = usable[proposal.first], usable[proposal.second]
        checked[j][1]["flags"].append(f"near_duplicate_of:{ids[i]}({match.flag_details()})")
        checked[j][1]["flags"] += _class_conflict(checked[j][0], checked[i][0], ids[i])
        groups.union(checked[i][0].patient, checked[j][0].patient)
    log.info(
        "near-duplicate candidates (thumbnails within %d hash bits): %d; not confirmed (similarity < %g): %d; %.1f s",
        near_duplicate_distance,
        search.candidates,
        near_duplicate_similarity,
        search.unconfirmed,
        time.perf_counter() - started,
    )

    _warn_of_disagreeing_duplicates(ids, checked)
    _warn_of_several_lesions(ids, checked)
    _warn_of_look_alike_patients(sorted({candidate.patient for candidate, _ in checked}))

    spacing_column = pixel_spacing if isinstance(pixel_spacing, str) else None
    lacking_spacing = None  # the first included image without a spacing: refused after the problems are
    for sample_id, (candidate, facts) in zip(ids, checked):
        if candidate.problems:
            status, reason = "excluded", "; ".join(candidate.problems)
        elif candidate.excluded_by_choice:
            status, reason = "excluded", candidate.excluded_by_choice
        else:
            status, reason = "included", ""
        spacing = candidate.extra.get(spacing_column, "") if spacing_column else (pixel_spacing or "")
        if spacing_column and status == "included" and not _is_positive_number(spacing):
            lacking_spacing = lacking_spacing or candidate
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
                "flags": ";".join(candidate.flags + facts["flags"]),
                "pixel_spacing": spacing,
                **{f"meta_{k}": v for k, v in candidate.extra.items()},
            }
        )
    for path in sorted(found.claimed):
        rows.append({"sample_id": "", "image": str(path), "status": "metadata", "reason": "read by the layout"})
    for path, reason in sorted(found.problem_files.items()):
        rows.append({"sample_id": "", "image": str(path), "status": "excluded", "reason": reason})
    for path, reason in sorted({**found.orphans, **refused_links}.items()):
        is_problem = _is_problem_file(path, root, refused_links)
        rows.append(
            {
                "sample_id": "",
                "image": str(path),
                "status": "excluded" if is_problem else "ignored",
                "reason": reason if is_problem else f"not an image file ({reason})",
            }
        )

    manifest = pd.DataFrame(rows)
    _paths_as_written(manifest, root, given)
    for column in MANIFEST_COLUMNS:
        if column not in manifest.columns:
            manifest[column] = ""
    manifest = manifest[MANIFEST_COLUMNS + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]]
    _log_counts(manifest, len(files) + len(refused_links))
    problems = _problems(reading)  # the candidates' own, their pixels' among them, now checked
    if problems and on_bad_sample == "fail":
        raise _problems_found(root, problems)
    if lacking_spacing is not None:  # after the problems: a file the CSV names wrongly lacks the CSV's spacing too
        raise _no_spacing(spacing_column, lacking_spacing)
    if not (manifest["status"] == "included").any():
        raise _nothing_usable(root, layout)
    return manifest


class _Reading(NamedTuple):
    """A dataset's files as its layout pairs them, before any pixel is read."""

    given: Path  # the root as given
    root: Path  # resolved
    files: list[Path]
    refused_links: dict[Path, str]
    found: Layout


def _read_layout(
    root: str | Path,
    layout: str,
    on_bad_sample: str,
    dataset_csv: str | None,
    include_normal: bool,
    listed: Iterable[Path] | None = None,
) -> _Reading:
    """ingest's settings checked, the files under the root listed (``listed``: see check_layout) and
    paired by the layout: everything the ingest reads before the pixels."""
    root = Path(root)
    if not root.is_dir():
        raise SonosegError(f"root: folder not found: {root}")
    if layout not in LAYOUTS:
        raise SonosegError(f"layout: {layout!r} is not one of {LAYOUTS}")
    if on_bad_sample not in ("fail", "exclude"):
        raise SonosegError(f"on_bad_sample: {on_bad_sample!r} is not 'fail' or 'exclude'")
    if dataset_csv and layout != "folder":  # the other layouts name their files themselves
        raise SonosegError(f"csv: {dataset_csv!r} is read by the folder layout only, and layout is {layout!r}")
    given, root = root, root.resolve()
    files, refused_links = list_files(root, listed)
    return _Reading(given, root, files, refused_links, pair(root, layout, files, dataset_csv, include_normal))


def _problems(reading: _Reading) -> list[tuple[Path, str]]:
    """Every problem a reading holds, as (path, reason), in the order ingest lists them: each candidate's
    (those found so far: ingest checks the pixels first), the files the layout itself refused, then the
    files paired with nothing that are problems (not notes or junk)."""
    found = reading.found
    problems = [(c.image, "; ".join(c.problems)) for c in found.candidates if c.problems]
    problems += sorted(found.problem_files.items())
    problems += [
        (path, reason)
        for path, reason in sorted({**found.orphans, **reading.refused_links}.items())
        if _is_problem_file(path, reading.root, reading.refused_links)
    ]
    return problems


def _is_problem_file(path: Path, root: Path, refused_links: dict[Path, str]) -> bool:
    """Whether a file the layout pairs with nothing is a problem (an image: a scan left out unseen; a link
    the ingest refuses), not a file ignored (notes, junk)."""
    return is_image_name(path, root) or path in refused_links


def _no_spacing(column: str, candidate: Candidate) -> SonosegError:
    unlisted = (
        " (patients.csv names it in no row, so it has no cell there)" if NOT_IN_PATIENTS_CSV in candidate.flags else ""
    )
    return SonosegError(f"pixel_spacing: column {column!r} has no valid value for {candidate.image}{unlisted}")


def _problems_found(root: Path, problems: list[tuple[Path, str]]) -> SonosegError:
    listing = "\n".join(f"  {path}: {reason}" for path, reason in problems)
    return SonosegError(
        f"dataset {root}: {len(problems)} problem(s) found (on_bad_sample: fail):\n{listing}\n"
        f"Fix them, or set on_bad_sample: exclude in {SETTINGS_OF} to leave these files out (each is listed in "
        "the manifest)."
    )


def _nothing_usable(root: Path, layout: str) -> SonosegError:
    return SonosegError(f"dataset {root}: no usable image-mask pair found for layout {layout!r}")


# ingest's settings that the layout reads (the near_duplicate_* settings are about pixels only).
LAYOUT_SETTINGS = ("on_bad_sample", "dataset_csv", "include_normal", "pixel_spacing")


class LayoutFound(NamedTuple):
    """What a layout pairs before a pixel is read (check_layout): the images paired with their masks that
    the ingest may include, and their patients, at least as many as the patient groups the ingest can
    include (it merges the patients of duplicate images, and may exclude images for their pixels), and the
    columns its manifest will have (a CSV's columns as meta_<name>)."""

    images: int
    patients: frozenset[str]
    columns: tuple[str, ...] = ()


def check_layout(
    root: str | Path,
    layout: str,
    on_bad_sample: str = "fail",
    dataset_csv: str | None = None,
    include_normal: bool = False,
    pixel_spacing: float | str | None = None,
    listed: Iterable[Path] | None = None,
) -> LayoutFound:
    """What ``ingest`` with these settings finds before it reads a pixel, raised as ingest raises it: its
    settings, the layout's folders and CSVs (a missing folder or column, a row naming no file, an image
    listed twice), images without masks and masks without images, ambiguous names, links the ingest
    refuses, files in image formats sonoseg does not read, a ``pixel_spacing`` column without a value, a
    dataset where nothing pairs. The same code as ingest's, up to the pixels; what only the pixels tell (an
    unreadable file, a mask of another size, duplicates) is left to ingest. The workflow runs it at
    planning, on every dataset it ingests (sonoseg.study.config_check.check_datasets), and reads the
    patient count the split needs from what it returns.

    ``listed``: the paths under the resolved root that a walk already found (the fingerprint's,
    sonoseg.data.provenance.record_paths), so that the root is not walked twice; it leaves out the junk
    files, which a layout lists as ignored and never as a problem. Returns the images the layout pairs
    with their masks and their patients (ingest may still exclude some for their pixels)."""
    reading = _read_layout(root, layout, on_bad_sample, dataset_csv, include_normal, listed)
    paired = _paired(reading)
    problems = _problems(reading)  # first: a file named wrongly in the CSV also lacks the CSV's spacing
    if problems and on_bad_sample == "fail":
        raise _problems_found(reading.root, problems)
    spacing_column = pixel_spacing if isinstance(pixel_spacing, str) else None
    if spacing_column:
        # ingest refuses the first included image without a spacing; ``paired`` are those it may include.
        # With on_bad_sample: exclude one may yet be left out for its pixels, so only a column that no
        # paired image has a value in is sure to stop it.
        lacking = [c for c in paired if not _is_positive_number(c.extra.get(spacing_column, ""))]
        if lacking and (on_bad_sample == "fail" or len(lacking) == len(paired)):
            raise _no_spacing(spacing_column, lacking[0])
    if not paired:
        raise _nothing_usable(reading.root, layout)
    columns = [*MANIFEST_COLUMNS, *dict.fromkeys(f"meta_{key}" for c in paired for key in c.extra)]
    return LayoutFound(len(paired), frozenset(c.patient for c in paired), tuple(columns))


def _paired(reading: _Reading) -> list[Candidate]:
    """The candidates the layout paired without a problem, and not left out by choice (BUSI's normal images
    without include_normal): those the ingest may include."""
    return [c for c in reading.found.candidates if not c.problems and not c.excluded_by_choice]


def _paths_as_written(manifest: pd.DataFrame, resolved: Path, given: Path) -> None:
    """The image and mask paths under a root given relative (the built-in sets, a dataset beside the
    workflow) written relative to the same folder the root was, so that the manifest holds wherever the
    checkout and its results are moved together; under an absolute root they stay absolute."""
    if given.is_absolute():
        return

    def as_written(path: str) -> str:
        if not path or not Path(path).is_relative_to(resolved):
            return path
        return str(given / Path(path).relative_to(resolved))

    manifest["image"] = manifest["image"].map(as_written)
    manifest["mask"] = manifest["mask"].map(
        lambda paths: (
            MASK_SEPARATOR.join(as_written(p) for p in paths.split(MASK_SEPARATOR))
            if isinstance(paths, str) and paths
            else paths
        )
    )


def _is_positive_number(value) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def _look_alike(patient: str) -> str:
    """A patient id as a typo would leave it: letter case and zeros leading a number ignored (P1, p1, P01)."""
    return re.sub(r"(?<![0-9])0+(?=[0-9])", "", patient.casefold())


def _warn_of_look_alike_patients(patients: list[str]) -> None:
    """Patient ids that differ only in letter case or in zeros leading a number (P1 and p1, 007 and 7) are
    two patients, as given; one patient spelt two ways could have views in training and in test, so they
    are named in a warning (kept apart: sonoseg does not guess which spelling is right)."""
    alike: dict[str, list[str]] = {}
    for patient in patients:
        alike.setdefault(_look_alike(patient), []).append(patient)
    sets = [spellings for spellings in alike.values() if len(spellings) > 1]
    if sets:
        log.warning(
            "%d set(s) of patient ids differ only in letter case or leading zeros, e.g. %s: each is its own "
            "patient (if some are one patient, spell them alike, or its views may be split between training "
            "and test)",
            len(sets),
            "; ".join(" / ".join(spellings) for spellings in sets[:5]),
        )


def _unique_ids(ids: list[str]) -> list[str]:
    """The ids made unique, regardless of letter case: the first image of an id, and every id that collides
    with nothing, keep theirs (a study's manifest must not change); a later image of a taken id gets the first
    free id_2, id_3, ... that is no other image's id either. Case does not tell ids apart (Benign__benign_1
    and benign__benign_1): each names prediction files, which a case-insensitive file system (macOS's,
    Windows', where results are copied) would hold as one."""
    taken = {sample_id.casefold() for sample_id in ids}
    seen: set[str] = set()
    unique = []
    for sample_id in ids:
        if sample_id.casefold() in seen:
            number = 2
            while f"{sample_id}_{number}".casefold() in taken:
                number += 1
            unique.append(f"{sample_id}_{number}")
            taken.add(unique[-1].casefold())
        else:
            unique.append(sample_id)
        seen.add(sample_id.casefold())
    return unique


def _refuse_shared_ids(root: Path, ids: list[str], images: list[Path]) -> None:
    """A last guard, which _unique_ids leaves nothing to catch today: two images with one id would share
    one prediction file, and be scored with one; a later change to the ids must not make that possible."""
    images_of: dict[str, list[Path]] = {}
    spelt: dict[str, str] = {}  # each id as the first image's spells it, for the message
    for sample_id, image in zip(ids, images):
        images_of.setdefault(sample_id.casefold(), []).append(image)
        spelt.setdefault(sample_id.casefold(), sample_id)
    shared = {spelt[folded]: paths for folded, paths in images_of.items() if len(paths) > 1}
    if shared:
        listing = "\n".join(f"  sample id {i!r}: {', '.join(map(str, paths))}" for i, paths in shared.items())
        raise SonosegError(f"dataset {root}: one sample id was given to several images (rename them):\n{listing}")


def _log_counts(manifest: pd.DataFrame, files_found: int) -> None:
    log.info("files found under the root: %d", files_found)
    for status, count in manifest["status"].value_counts().sort_index().items():
        log.info("rows %s: %d", status, count)
    excluded = manifest[manifest["status"] != "included"]
    kinds = [_kind_of_reason(reason, masks) for reason, masks in zip(excluded["reason"], excluded["mask"].fillna(""))]
    for kind, count in Counter(kinds).most_common():
        log.info("  %s: %d", kind, count)
    flagged: dict[str, list[str]] = {}
    for sample_id, cell in zip(manifest["sample_id"], manifest["flags"].fillna("")):
        for flag in filter(None, str(cell).split(";")):
            kind, _, value = flag.partition(":")  # duplicate_of:<its twin>: the twin named too
            flagged.setdefault(kind, []).append(f"{sample_id} ({flag})" if value else str(sample_id))
    for flag, samples in sorted(flagged.items()):  # named, as a duplicate's twin is by its flag in the manifest
        log.info("flagged %s: %d (%s)", flag, len(samples), first_names(samples))


def _kind_of_reason(reason: str, masks: str) -> str:
    """A row's reason without its own mask paths ("mask: ..."), so that the log counts one kind of
    problem once whichever files have it. Only the row's own paths are replaced: the reason's other
    text (a setting's name, a colon in it) stays whole."""
    if reason.startswith("ambiguous:"):  # its file names would make a line per pair of files
        return "ambiguous: several files of one name"
    # The whole cell first: a lone mask whose path holds the separator (itself a problem) is one path.
    for mask in filter(None, [str(masks), *str(masks).split(MASK_SEPARATOR)]):
        reason = reason.replace(f"{mask}: ", "mask: ")
    return reason


def included(manifest: pd.DataFrame) -> pd.DataFrame:
    """The usable samples, with their sizes as integers."""
    samples = manifest[manifest["status"] == "included"].reset_index(drop=True)
    return samples.astype({"height": float, "width": float}).astype({"height": int, "width": int})


def read_manifest(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"sample_id": str, "patient": str, "group": str, "view": str}, keep_default_na=False)
