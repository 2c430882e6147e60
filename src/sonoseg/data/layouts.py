"""Dataset layouts: find every file under a dataset root and pair images with masks, as the layout
names them (a folder of images and masks with an optional CSV, BUSI, BUS-BRA), before any pixel is
read. sonoseg.data.manifest checks the pairs and writes the manifest."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg.data.imageio import MASK_SEPARATOR
from sonoseg.data.options import NORMAL_LEFT_OUT
from sonoseg.data.provenance import (
    IMAGE_FOLDERS,
    IMAGE_SUFFIXES,
    PATIENTS_CSV,
    is_image_like,
    is_junk_name,
    is_layout_csv,
    junk_folder,
)
from sonoseg.errors import SonosegError

log = logging.getLogger(__name__)


LAYOUTS = ("folder", "busi", "busbra")
BUSI_MASK = re.compile(r"^(?P<name>.+)_mask(?:_(?P<part>\d+))?$", re.IGNORECASE)  # NAME_MASK.png too
BUSI_CLASSES = ("benign", "malignant", "normal")  # its folders; Benign/ (as some copies name them) is benign
BUSBRA_IMAGE = re.compile(r"^bus_(?P<patient>[^-]+)-(?P<view>.+)$")
# The flag of an image of images/ that patients.csv names in no row (it is its own patient).
NOT_IN_PATIENTS_CSV = "not_in_patients_csv"
NAMES_SHOWN = 5  # file names a log line names; the rest are counted


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
    flags: list[str] = field(default_factory=list)  # what the layout noticed (NOT_IN_PATIENTS_CSV), for the manifest


@dataclass
class Layout:
    candidates: list[Candidate]
    claimed: set[Path]  # files the layout itself uses (its CSVs)
    orphans: dict[Path, str]  # files that pair with nothing, and why
    # Problems that are files of their own, not samples: a file patients.csv names that does not exist (or
    # a row of it with an empty image cell), a file of an unsupported format among the images.
    problem_files: dict[Path, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- walking the root


def list_files(root: Path, listed: Iterable[Path] | None = None) -> tuple[list[Path], dict[Path, str]]:
    """All regular files under root (resolved), and the links refused because they leave it, lead to a
    folder or lead nowhere. ``listed``: the paths under the resolved root that a walk of it already found
    (sonoseg.data.provenance.dataset_files, at planning: every file the layout reads, and every link; the
    others, junk and notes, a layout lists as ignored only), sorted here as the walk's would be without
    walking the root again."""
    root = root.resolve()
    files, refused = [], {}
    for path in _walk(root) if listed is None else listed:
        if path.is_symlink():
            target = path.resolve()
            if not _inside(target, root):
                refused[path] = "symbolic link leaves the dataset root"
                continue
            if target.is_dir():
                refused[path] = "symbolic link to a folder (not followed)"
                continue
            if not target.exists():
                refused[path] = "broken symbolic link"
                continue
        if path.is_file():
            files.append(path)
    return sorted(files), refused


def _walk(root: Path) -> Iterator[Path]:
    """Every file and every link under root, a link to a folder not followed (but given)."""
    for directory, subdirs, names in os.walk(root, followlinks=False):
        here = Path(directory)
        yield from (here / name for name in sorted(subdirs) if (here / name).is_symlink())
        yield from (here / name for name in sorted(names))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def is_image_name(path: Path, root: Path | None = None) -> bool:
    """Whether a file's name makes it one of the images the layouts read: an image suffix, not hidden; and,
    given the dataset root, not in a hidden folder or __MACOSX either (see junk_reason)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
        return False
    return root is None or junk_reason(root, path) is None


def is_junk(path: Path) -> bool:
    """A file whose name operating systems and file managers give (sonoseg.data.provenance.is_junk_name)."""
    return is_junk_name(path.name)


def junk_reason(root: Path, path: Path) -> str | None:
    """Why a file under the root is junk the ingest ignores without reading it, or None: a hidden file
    (.DS_Store, AppleDouble ._NAME), Thumbs.db and the like, or any file in a hidden folder (.git,
    .ipynb_checkpoints) or in __MACOSX. The data fingerprint leaves the same files out
    (sonoseg.data.provenance.is_junk): adding or removing one must change nothing, here or there."""
    try:
        relative = path.relative_to(root)
    except ValueError:  # not under the root: the root's own folders do not count
        return None
    folder = junk_folder(relative)
    if folder is not None:
        if folder.name.startswith("."):
            return f"in the hidden folder {folder}/"
        return f"in {folder}/, the metadata a macOS archive carries"
    if path.name.startswith("."):
        return "a hidden file"
    if is_junk_name(path.name):
        return "a file operating systems leave in folders"
    return None


def _set_aside_junk(root: Path, files: list[Path]) -> tuple[list[Path], dict[Path, str]]:
    """The files a layout reads, and the junk among them with its reason, which the layout lists as ignored."""
    kept, junk = [], {}
    for path in files:
        reason = junk_reason(root, path)
        if reason:
            junk[path] = reason
        else:
            kept.append(path)
    return kept, junk


def _unsupported_formats(orphans: dict[Path, str], image_folders: set[Path]) -> dict[Path, str]:
    """The files in the layout's image and mask folders in an image format sonoseg does not read (a
    .webp, a DICOM file, with or without its extension), taken out of orphans: problems, since the user
    put them where the images are. Any other file (notes, an annotation tool's .json) and any file
    elsewhere (a README at the root) stays ignored, and listed."""
    supported = ", ".join(sorted(IMAGE_SUFFIXES))
    unsupported = {}
    for path in sorted(orphans):
        if path.parent in image_folders and is_image_like(path.name) and not is_junk(path):
            del orphans[path]
            unsupported[path] = f"unsupported image format {path.suffix or '(no extension)'} (supported: {supported})"
    return unsupported


def _resolve_listed(root: Path, value: str, column: str, csv_path: Path, base: Path | None = None) -> Path:
    """A path a CSV names, under the root. One that leaves the root is refused: the run stops."""
    path = ((base or root) / str(value)).resolve()
    if not _inside(path, root):
        raise SonosegError(f"{csv_path}: column {column!r} names {value!r}, which lies outside the dataset root {root}")
    return path


def _listed_file_problem(
    root: Path, path: Path, value: str, what: str, csv_path: Path, row_number: int, names: _FilesByName
) -> str | None:
    """Why a file named in a CSV row cannot be used (empty cell, missing, a folder, junk), or None."""
    where = f"{csv_path.name} row {row_number}"
    if not str(value).strip():
        return _empty_cell(csv_path, row_number, what)
    if not path.exists():
        hint = names.other_case_note(path.relative_to(root).as_posix(), "the dataset")
        return f"{what} listed in {where} does not exist: {path}{hint}"
    if not path.is_file():
        return f"{what} listed in {where} is not a file: {path}"
    junk = junk_reason(root, path)
    if junk:
        return (
            f"{what} listed in {where} is {junk}, which sonoseg ignores (and the data fingerprint leaves out): {path}"
        )
    return None


def _empty_cell(csv_path: Path, row_number: int, column: str) -> str:
    return f"{csv_path.name} row {row_number}: the {column} cell is empty"


def _trimmed(value) -> str:
    """A patient or view cell without the spaces around it: 'P1 ' and 'P1' are one patient."""
    return _text(value).strip()


def composed_name(name: str) -> str:
    """A file name in Unicode's composed form (NFC): macOS writes names decomposed (NFD: 'e' and a combining
    accent), Windows and most typed text composed ('é'); to the user, and to their file systems, one name."""
    return unicodedata.normalize("NFC", name)


class _FilesByName:
    """Files by the name a CSV cell or another file gives them. A name matches the file of exactly that name,
    else the one file of that name in the other Unicode normalization: macOS writes file names decomposed
    (NFD: 'e' and a combining accent), a CSV typed elsewhere or a file saved on Windows holds them composed
    (NFC: 'é'), and both are one name to the
    user. Letter case is not guessed (A.png and a.png may be two files): other_case_note names the file a
    problem can point to. Callers try a cell as written, then without the spaces around it."""

    def __init__(self, files: dict[str, Path]):
        self.exact = files
        self.composed: dict[str, list[Path]] = {}
        self.folded: dict[str, list[str]] = {}
        for name, path in files.items():
            self.composed.setdefault(composed_name(name), []).append(path)
            self.folded.setdefault(composed_name(name).casefold(), []).append(name)

    def find(self, *spellings: str) -> Path | None:
        for name in spellings:
            if name in self.exact:
                return self.exact[name]
        for name in spellings:
            same = self.composed.get(composed_name(name), [])
            if len(same) == 1:  # two files of one name in both forms: which one is meant is not said
                return same[0]
        return None

    def other_case(self, name: str) -> Path | None:
        """The one file whose name differs from ``name`` in letter case only, else None (none, or several)."""
        others = self.folded.get(composed_name(name).casefold(), [])
        return self.exact[others[0]] if len(others) == 1 else None

    def other_form_note(self, name: str, where: str) -> str:
        """' (WHERE has NAME: ...)' when ``name`` is a path ending in a file's name (``images/s1.png``), or a
        file's name without its extension (``s1``); else ''. A cell names a file by its name alone."""
        last = name.replace("\\", "/").rsplit("/", 1)[-1]
        if last != name and self.find(last):
            return f" ({where} has {last}: a cell names the file by its name alone, without its folder)"
        with_suffix = [file for file in self.exact if Path(file).stem == name and Path(file).suffix]
        if len(with_suffix) == 1:
            return f" ({where} has {with_suffix[0]}: a cell names the file with its extension)"
        return ""

    def other_case_note(self, name: str, where: str) -> str:
        """' (WHERE has NAME: ...)' when files' names differ from ``name`` in letter case only; else ''."""
        others = sorted(self.folded.get(composed_name(name).casefold(), []))
        if not others:
            return ""
        return (
            f" ({where} has {' and '.join(others)}: the names differ in letter case only, and sonoseg does not guess)"
        )


def _spellings(cell) -> tuple[str, ...]:
    """A CSV cell as written, then without the spaces around it ('P1.png ' is meant as 'P1.png'; a name with
    spaces inside, 'benign (1).png', is kept whole; a file whose name really ends with a space still matches)."""
    return tuple(dict.fromkeys((str(cell), str(cell).strip())))


# ----------------------------------------------------------------------------- layouts


def pair(
    root: Path, layout: str, files: list[Path], dataset_csv: str | None = None, include_normal: bool = False
) -> Layout:
    """The files under the (resolved) root paired as ``layout`` names them, before any pixel is read (the
    ingest's reading of a dataset, sonoseg.data.manifest, once its settings are checked)."""
    if layout == "folder":
        return folder_layout(root, files, dataset_csv)
    if layout == "busi":
        return busi_layout(root, files, include_normal)
    return busbra_layout(root, files)


def folder_layout(root: Path, files: list[Path], dataset_csv: str | None) -> Layout:
    """images/ + masks/ matched by name (or stem), patients.csv optional; or an explicit CSV."""
    if dataset_csv:
        return _explicit_csv_layout(root, files, dataset_csv)
    images_dir, masks_dir = (root / folder for folder in IMAGE_FOLDERS["folder"])
    if not images_dir.is_dir():
        raise SonosegError(f"root {root}: the folder layout needs an images/ folder (and masks/)")
    files, junk = _set_aside_junk(root, files)
    images = [f for f in files if f.parent == images_dir and is_image_name(f)]
    masks = [f for f in files if f.parent == masks_dir and is_image_name(f)]
    masks_by_name = _FilesByName({m.name: m for m in masks})  # by name, in either Unicode form (macOS: NFD)
    masks_by_stem, images_by_stem = _by_stem(masks), _by_stem(images)
    images_by_name = Counter(composed_name(image.name) for image in images)
    patients_csv = root / PATIENTS_CSV
    listed: dict[Path, tuple[int, dict]] = {}
    claimed, rows_naming_no_image, named_in_other_case = set(), {}, {}
    if patients_csv.is_file():
        claimed.add(patients_csv.resolve())
        listed, rows_naming_no_image, named_in_other_case = _read_patients_csv(root, patients_csv, images)
    candidates, orphans, used_masks, not_listed = [], {}, set(), []
    ambiguous: dict[Path, str] = {}  # masks that match more than one file, and why none is paired
    for image in images:
        mask = masks_by_name.exact.get(image.name)
        if mask is None and images_by_name[composed_name(image.name)] == 1:  # one image of the name in both forms
            mask = masks_by_name.find(image.name)
        # The stem pairs only one image with one mask: images s.png and s.jpg with masks/s.tif would
        # otherwise both be scored against that one mask.
        namesakes = images_by_stem[composed_name(image.stem)]
        stem_masks = masks_by_stem.get(composed_name(image.stem), [])
        if mask is None and len(namesakes) == 1 and len(stem_masks) == 1:
            mask = stem_masks[0]
        row_number, row = listed.get(image, (0, {}))
        candidate = Candidate(
            image,
            [mask] if mask else [],
            patient=row.get("patient", image.stem),
            view=row.get("view", ""),
            extra=_extra(row, ("image", "patient", "view")),
        )
        if image in named_in_other_case:
            candidate.problems.append(named_in_other_case[image])
        elif claimed and not row:  # its own patient, as without patients.csv: said, since it may be an oversight
            candidate.flags.append(NOT_IN_PATIENTS_CSV)
            not_listed.append(image)
        if row and not row["patient"]:
            candidate.problems.append(_empty_cell(patients_csv, row_number, "patient"))
        if mask is None and len(namesakes) > 1 and stem_masks:
            _ambiguous_images(candidate, namesakes, f"stem {image.stem}", stem_masks, ambiguous)
        elif mask is None and len(stem_masks) > 1:
            _ambiguous_masks(candidate, stem_masks, ambiguous)
        elif mask is None:
            candidate.problems.append("image without mask")
        else:
            used_masks.add(mask)
        candidates.append(candidate)
    _note_suffixed_masks(candidates, [m for m in masks if m not in used_masks and m not in ambiguous], orphans)
    if not_listed:
        log.warning(
            "%s names %d image(s) of images/ in no row; each is its own patient (flag %s): %s",
            patients_csv,
            len(not_listed),
            NOT_IN_PATIENTS_CSV,
            first_names(not_listed),
        )
    for m in masks:
        if m not in used_masks:
            orphans.setdefault(m, ambiguous.get(m, "mask without image"))
    known = set(images) | set(masks) | claimed
    for f in files:
        if f not in known:
            holder = next((folder for folder in (images_dir, masks_dir) if _inside(f, folder)), None)
            orphans[f] = (
                f"in a sub-folder of {holder.name}/: the folder layout reads the files of images/ and masks/ "
                "themselves (a dataset.csv can list files in sub-folders: docs/own_data.md)"
                if holder
                else "not part of the folder layout (images/, masks/, patients.csv)"
            )
    unsupported = _unsupported_formats(orphans, {images_dir, masks_dir})
    return Layout(candidates, claimed, {**orphans, **junk}, {**rows_naming_no_image, **unsupported})


# A mask named after its image with a word added (s1_mask.png, s1-label.png, s1 seg.png), as many datasets and tools
# name them; the folder layout pairs a mask by its image's own name.
SUFFIXED_MASK = re.compile(
    r"^(?P<stem>.+?)[_\- ]?(?:mask|label|labels|seg|segmentation|gt|roi)(?:[_\- ]?\d+)?$", re.IGNORECASE
)  # and BUSI's second masks, s1_mask_1.png


def _note_suffixed_masks(candidates: list[Candidate], unpaired: list[Path], orphans: dict[Path, str]) -> None:
    """Where masks left unpaired are named after images without a mask with a word added (SUFFIXED_MASK), each
    such image's problem and mask's reason say how the folder layout pairs them: one note for all, so the
    counts of problems stay one line each."""
    without_mask = {c.image.stem: c for c in candidates if c.problems[-1:] == ["image without mask"]}
    matched = {}
    for mask in unpaired:
        found = SUFFIXED_MASK.match(mask.stem)
        if found and found["stem"] in without_mask:
            matched[mask] = without_mask[found["stem"]]
    if not matched:
        return
    note = (
        " (masks/ names masks after their images with a word added, as in "
        f"{next(iter(matched)).name}: the folder layout pairs a mask by its image's own name; rename them, or "
        "list the pairs in a dataset.csv: docs/own_data.md)"
    )
    for mask, candidate in matched.items():
        candidate.problems[-1] += note
        orphans[mask] = "mask without image" + note


def _read_patients_csv(
    root: Path, patients_csv: Path, images: list[Path]
) -> tuple[dict[Path, tuple[int, dict]], dict[Path, str], dict[Path, str]]:
    """patients.csv's rows by the image of images/ each names (its row number and the row, its patient and
    view cells trimmed), the rows that name none, as problems of their own (keyed by the path they name), and
    the images a row names in another letter case alone, with that problem: the image's, so that excluding
    it (on_bad_sample: exclude) takes the image out rather than leaving it to be a patient of its own, who may
    be the row's patient with other images on the other side of the split. A cell names an image as
    _FilesByName matches it."""
    images_dir = root / IMAGE_FOLDERS["folder"][0]
    records = _read_csv(patients_csv, required=("image", "patient")).to_dict("records")
    names = _FilesByName({image.name: image for image in images})
    rows, rows_of, image_of = [], {}, {}
    for number, record in enumerate(records, start=2):  # row 1: header
        image = names.find(*_spellings(record["image"]))
        name = image.name if image else _trimmed(record["image"])
        rows.append({**record, "image": name, "patient": _trimmed(record["patient"])})
        if "view" in record:
            rows[-1]["view"] = _trimmed(record["view"])
        if name:  # rows with an empty image cell name no image, and no image twice
            rows_of.setdefault(name, []).append(number)
            image_of[name] = image
    _refuse_images_listed_twice(patients_csv, rows_of, rows)
    listed, naming_no_image, named_in_other_case = {}, {}, {}
    for name, numbers in rows_of.items():
        number, row = numbers[0], rows[numbers[0] - 2]
        if image_of[name]:
            listed[image_of[name]] = (number, row)
            continue
        other = names.other_case(name)
        if other is not None and row["patient"] and other.name not in rows_of:  # no exact row lists it
            named_in_other_case[other] = (
                f"patients.csv (row {number}) names it {name!r}, its name in another letter case: sonoseg does not "
                f"guess that the row (patient {row['patient']!r}) means it, nor makes it a patient of its own who may "
                "be that one; write its name as the file has it"
            )
            continue
        problems = [
            f"listed in patients.csv (row {number}), but images/ has no such image"
            + (names.other_case_note(name, "images/") or names.other_form_note(name, "images/"))
        ]
        if not row["patient"]:
            problems.append(_empty_cell(patients_csv, number, "patient"))
        path = _resolve_listed(root, name, "image", patients_csv, base=images_dir)
        naming_no_image[path] = "; ".join(problems)
    for number, row in enumerate(rows, start=2):
        if not row["image"]:  # a name for the manifest's row only, as the dataset CSV's
            naming_no_image[patients_csv.with_name(f"row{number}-of-{patients_csv.stem}")] = _empty_cell(
                patients_csv, number, "image"
            )
    return listed, naming_no_image, named_in_other_case


def _refuse_images_listed_twice(csv_path: Path, rows_of: dict[str, list[int]], records: list[dict]) -> set[int]:
    """Two rows for one image (``rows_of``: image -> row numbers; ``records``: the rows from row 2 on, as
    read: cells trimmed, paths as the files found) that disagree would give it two patients, views or
    masks, and one row would win unseen: refused, naming the columns that differ. Rows alike (one copied
    whole) say one thing: logged, and the first is used. Returns the numbers of the later alike rows."""
    twice, copies = {}, set()
    for name, rows in rows_of.items():
        if len(rows) < 2:
            continue
        if all(records[row - 2] == records[rows[0] - 2] for row in rows):
            log.warning(
                "%s: image %r is listed in rows %s, alike; one is used", csv_path, name, ", ".join(map(str, rows))
            )
            copies.update(rows[1:])
        else:
            twice[name] = rows
    if twice:
        listing = "\n".join(
            f"  image {name!r} is listed in rows {', '.join(map(str, rows[:-1]))} and {rows[-1]}, which differ in "
            + _differences([records[row - 2] for row in rows])
            for name, rows in twice.items()
        )
        raise SonosegError(f"{csv_path}: an image may be listed only once:\n{listing}")
    return copies


def _differences(rows: list[dict]) -> str:
    """Each column whose cells differ, with the cells: "patient ('A', 'C') and view ('1', '2')"."""
    columns = [column for column in rows[0] if len({str(row.get(column, "")) for row in rows}) > 1]
    described = [f"{column} ({', '.join(repr(str(row.get(column, ''))) for row in rows)})" for column in columns]
    return f"{', '.join(described[:-1])} and {described[-1]}" if len(described) > 1 else "".join(described)


def first_names(paths: list[Path] | list[str]) -> str:
    """The first NAMES_SHOWN file names (or names given as text), and how many more."""
    shown = ", ".join(p.name if isinstance(p, Path) else p for p in paths[:NAMES_SHOWN])
    return shown + (f", … ({len(paths) - NAMES_SHOWN} more)" if len(paths) > NAMES_SHOWN else "")


def _explicit_csv_layout(root: Path, files: list[Path], dataset_csv: str) -> Layout:
    csv_path = _resolve_listed(root, dataset_csv, "csv", root / dataset_csv)
    if not csv_path.is_file():
        raise SonosegError(f"csv: file not found: {csv_path}")
    junk_csv = junk_reason(root, csv_path)
    if junk_csv:
        raise SonosegError(
            f"csv: {csv_path} is {junk_csv}, which sonoseg ignores and leaves out of the data fingerprint (a change "
            "to it would go unnoticed): give it a name that is not hidden, outside hidden folders"
        )
    frame = _read_csv(csv_path, required=("image", "mask", "patient"))
    # A row may name a file under a hidden folder (a problem: junk is never read): the index holds the rest.
    names = _FilesByName({f.relative_to(root).as_posix(): f for f in files if not junk_reason(root, f)})

    def named(value, column: str) -> Path:
        """The file a path cell names, as _FilesByName matches it, else where it would lie (a problem)."""
        for written in _spellings(value):
            path = _resolve_listed(root, written, column, csv_path)
            found = names.find(path.relative_to(root).as_posix())
            if found:
                return found
        return path

    rows, read, rows_of = [], [], {}
    for number, row in enumerate(frame.to_dict("records"), start=2):  # row 1 is the header
        image = (
            named(row["image"], "image")
            if str(row["image"]).strip()
            else csv_path.with_name(f"row{number}-of-{csv_path.stem}")
        )  # a name for the manifest row only
        mask_values = str(row["mask"]).split(MASK_SEPARATOR)
        masks = [named(m, "mask") if m.strip() else _resolve_listed(root, m, "mask", csv_path) for m in mask_values]
        as_read = {
            **row,
            "image": image.relative_to(root).as_posix(),
            "mask": MASK_SEPARATOR.join(
                m.relative_to(root).as_posix() if v.strip() else "" for m, v in zip(masks, mask_values)
            ),
            "patient": _trimmed(row["patient"]),
        }
        if "view" in row:
            as_read["view"] = _trimmed(row["view"])
        rows.append((number, row, image, masks, mask_values))
        read.append(as_read)
        if str(row["image"]).strip():
            rows_of.setdefault(as_read["image"], []).append(number)
    copies = _refuse_images_listed_twice(csv_path, rows_of, read)
    candidates, used = [], set()
    for number, row, image, masks, mask_values in rows:
        if number in copies:
            continue
        candidate = Candidate(
            image,
            masks,
            patient=read[number - 2]["patient"],
            view=read[number - 2].get("view", ""),
            extra=_extra(row, ("image", "mask", "patient", "view")),
        )
        for path, value, what in [(image, row["image"], "image")] + [
            (m, v, "mask") for m, v in zip(masks, mask_values)
        ]:
            problem = _listed_file_problem(root, path, value, what, csv_path, number, names)
            if problem:
                candidate.problems.append(problem)
        if not candidate.patient:
            candidate.problems.append(_empty_cell(csv_path, number, "patient"))
        used.update(p for p in [image, *masks] if p.is_file())
        candidates.append(candidate)
    orphans = {
        f: junk_reason(root, f) or "not listed in " + csv_path.name for f in files if f not in used and f != csv_path
    }
    return Layout(candidates, {csv_path}, orphans)


def busi_mask_name(path: Path) -> re.Match | None:
    """The match of BUSI's mask naming (NAME_mask.png, NAME_mask_N.png, _MASK in any case: its name and
    part) in a file's name, or None. The layout pairs masks so; segment warns of masks given as images."""
    return BUSI_MASK.match(path.stem)


def busi_class(folder: str, unknown: set[str]) -> str:
    """The class of an image in ``folder``: BUSI's own (benign, malignant, normal) in any case, lower-case
    as BUSI names them; any other folder name as it is, added to ``unknown`` (warned of once)."""
    canonical = folder.casefold()
    if canonical in BUSI_CLASSES:
        return canonical
    unknown.add(folder)
    return folder


def _class_folder(root: Path, image: Path) -> str:
    """The folder naming a BUSI image's class: the nearest folder above it, up to the root, named as one of
    BUSI's classes (``malignant/patient 07/x.png`` is malignant; ``Dataset_BUSI_with_GT/benign/x.png`` benign),
    else the folder it lies in (a class of its own, warned of)."""
    for folder in image.relative_to(root).parents:
        if folder.name.casefold() in BUSI_CLASSES:
            return folder.name
    return image.parent.name


def busi_layout(root: Path, files: list[Path], include_normal: bool) -> Layout:
    """BUSI: benign/ malignant/ normal/ (any case); NAME.png with NAME_mask.png and NAME_mask_N.png."""
    files, junk = _set_aside_junk(root, files)
    candidates, orphans = [], {}
    images: dict[tuple[Path, str], list[Path]] = {}
    masks: dict[tuple[Path, str], list[Path]] = {}
    other_classes: set[str] = set()
    nested_images: list[Path] = []  # in a sub-folder of their class's folder
    for f in files:
        if not is_image_name(f):
            continue
        match = busi_mask_name(f)  # names in either Unicode form (macOS writes them decomposed)
        if match:
            masks.setdefault((f.parent, composed_name(match["name"])), []).append(f)
        else:
            images.setdefault((f.parent, composed_name(f.stem)), []).append(f)
    for key, namesakes in sorted(images.items()):
        mask_files = sorted(masks.pop(key, []), key=lambda p: p.name)
        ambiguous_masks, mask_files = (mask_files, []) if len(namesakes) > 1 else ([], mask_files)
        for image in sorted(namesakes):  # x.png and x.jpg: which one x_mask.png outlines is not said
            folder = _class_folder(root, image)
            label = busi_class(folder, other_classes)
            if image.parent.name != folder:
                nested_images.append(image)
            candidate = Candidate(image, mask_files, patient=_relative_id(root, image), label=label)
            if len(namesakes) > 1:
                _ambiguous_images(candidate, namesakes, f"name {key[1]}", ambiguous_masks, orphans)
            elif not mask_files:
                candidate.problems.append("image without mask")
            if label == "normal" and not include_normal:
                candidate.excluded_by_choice = NORMAL_LEFT_OUT
            candidates.append(candidate)
    if other_classes:
        folders = sorted(other_classes)
        log.warning(
            "BUSI's classes are %s; %s taken as %s",
            f"{', '.join(BUSI_CLASSES[:-1])} and {BUSI_CLASSES[-1]}",
            f"folder {folders[0]}" if len(folders) == 1 else f"folders {first_names(folders)}",
            "a class of its own" if len(folders) == 1 else "classes of their own",
        )
    if nested_images:
        log.warning(
            "%d image(s) lie in sub-folders of their class's folder (%s): each takes the class folder's class "
            "and, as every BUSI image, is its own patient; to group views of one patient, list the files in a "
            "dataset.csv with a patient column (docs/own_data.md)",
            len(nested_images),
            first_names(sorted({image.parent.relative_to(root).as_posix() for image in nested_images})),
        )
    for leftover in masks.values():
        for m in leftover:
            orphans[m] = "mask without image"
    known = {c.image for c in candidates} | {m for c in candidates for m in c.masks} | set(orphans)
    for f in files:
        if f not in known:
            orphans[f] = "not part of the BUSI layout"
    # BUSI's folders are its classes: every folder holding its images, but the root (notes lie there).
    image_folders = {f.parent for f in known if is_image_name(f)} - {root}
    unsupported = _unsupported_formats(orphans, image_folders)
    return Layout(candidates, set(), {**orphans, **junk}, unsupported)


def busbra_layout(root: Path, files: list[Path]) -> Layout:
    """BUS-BRA: Images/bus_XXXX-Y.png with Masks/mask_XXXX-Y.png; patient XXXX; a root CSV adds columns."""
    image_dir, mask_dir = (root / folder for folder in IMAGE_FOLDERS["busbra"])
    if not image_dir.is_dir():
        raise SonosegError(f"root {root}: the busbra layout needs Images/ and Masks/ folders")
    files, junk = _set_aside_junk(root, files)
    # By id (XXXX-Y): two files of one id in other formats (bus_0001-l.png and .jpg) are ambiguous.
    masks = _by_stem([f for f in files if f.parent == mask_dir and is_image_name(f) and f.stem.startswith("mask_")])
    masks = {stem[len("mask_") :]: found for stem, found in masks.items()}
    images = _by_stem([f for f in files if f.parent == image_dir and is_image_name(f)])
    csvs = [f for f in files if is_layout_csv(f.relative_to(root), "busbra")]
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
        if f.parent != image_dir or not is_image_name(f):
            continue
        match = BUSBRA_IMAGE.match(f.stem)
        if not match:
            orphans[f] = "image name is not bus_XXXX-Y"
            continue
        ident = composed_name(f.stem[len("bus_") :])
        namesakes = images[composed_name(f.stem)]
        found = masks.get(ident, [])
        mask = found[0] if len(found) == 1 and len(namesakes) == 1 else None
        candidate = Candidate(
            f, [mask] if mask else [], patient=match["patient"], view=match["view"], extra=info.get(f.stem, {})
        )
        if len(namesakes) > 1:
            _ambiguous_images(candidate, namesakes, f"id {ident}", found, orphans)
        elif len(found) > 1:
            _ambiguous_masks(candidate, found, orphans)
        elif mask is None:
            candidate.problems.append("image without mask")
        if mask:
            used.add(mask)
        candidates.append(candidate)
    known = {c.image for c in candidates} | used | set(csvs) | set(orphans)
    for f in files:
        if f not in known:
            orphans[f] = "mask without image" if f.parent == mask_dir else "not part of the BUS-BRA layout"
    unsupported = _unsupported_formats(orphans, {image_dir, mask_dir})
    return Layout(candidates, set(csvs), {**orphans, **junk}, unsupported)


def _ambiguous_images(
    candidate: Candidate, images: list[Path], shared: str, masks: list[Path], reasons: dict[Path, str]
) -> None:
    """Images that one mask's name matches alike (s.png and s.jpg, ``shared``: "stem s"): the candidate's
    problem, and each such mask's reason in ``reasons``, since none of them is paired."""
    candidate.problems.append(f"ambiguous: images {_names(images)} share the {shared}")
    reasons.update({m: f"ambiguous: the mask of images {_names(images)}" for m in masks})


def _ambiguous_masks(candidate: Candidate, masks: list[Path], reasons: dict[Path, str]) -> None:
    """Masks that the candidate's image's name matches alike (t.png and t.bmp for t.tif): its problem, and
    each mask's reason in ``reasons``."""
    candidate.problems.append(f"ambiguous: masks {_names(masks)} both match")
    reasons.update({m: f"ambiguous: one of the masks {_names(masks)} of {candidate.image.name}" for m in masks})


def _names(paths: list[Path]) -> str:
    """'a.png and b.jpg' (or 'a, b and c'; 'a' alone)."""
    names = sorted(p.name for p in paths)
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)


def _by_stem(files: list[Path]) -> dict[str, list[Path]]:
    """Files by stem, in its composed Unicode form (NFC): a mask saved on Windows and its image saved on
    macOS (NFD) have one name to the user; look up with ``composed_name(stem)``."""
    grouped: dict[str, list[Path]] = {}
    for f in files:
        grouped.setdefault(composed_name(f.stem), []).append(f)
    return grouped


# Separators a spreadsheet writes besides the comma: Excel's CSV in locales with a decimal comma uses ';', and a
# "text" export tabs. Used when the header line holds one of them and no comma.
OTHER_SEPARATORS = (";", "\t")


def _separator(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = handle.readline()
    return next((sep for sep in OTHER_SEPARATORS if sep in header and "," not in header), ",")


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=_separator(path))
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
    """A file-name-safe id from the image's path under the root (spaces, parentheses -> '_').

    A path without a Latin letter or digit (names in another script) would clean to nothing, or to
    dots, and its prediction would be written as a hidden file: it gets 'img_' and a short hash of
    the path under the root instead. Every other id is exactly the cleaned path, as it always was
    (a study's manifest must not change), the path taken in its composed Unicode form (NFC) first, so
    that a name copied from macOS (NFD) and from Windows gets one id: before sonoseg did so, an NFD
    accent kept its letter in the id (``images__cafe`` for café.png), which the NFC id drops (``images__caf``).
    """
    # Composed first (NFC): one name copied from macOS (NFD) and from Windows gets one id.
    relative = composed_name(_relative_id(root, image))
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", relative.replace("/", "__")).strip("_")
    if re.search(r"[A-Za-z0-9]", cleaned):
        return cleaned
    return (
        "img_" + hashlib.blake2b(composed_name(image.relative_to(root).as_posix()).encode(), digest_size=4).hexdigest()
    )
