"""Where a study's results come from: the fingerprint of every file the study reads from outside
``results/`` (the dataset, a split file, pretrained backbone weights), and the sonoseg version and
commit that made them (docs/method.md, "Data fingerprint").

The workflow computes the fingerprint once when it starts (common.smk), as nnU-Net keeps a dataset
fingerprint: each *source* (the dataset, the split file, one weights file per backbone kind) gets a
record, ``results/<study>/data/sources/<source>.json``, listing every file with its size and SHA-256
(of a dataset, every file its layout reads: read_by_layout). A record is rewritten, atomically, only
when its content changes, so the rules that read a source (ingest reads the dataset's record) rerun
exactly when the data changed, whatever the files' modification times say; a dry run puts the records
it rewrote back at its end (Check.undo). Reading thousands of images again at every start would be slow: content
hashes are cached by path, size, modification time and status-change time
(``results/<study>/data/sources/hash_cache.json``), so an unchanged dataset costs one ``stat`` per
file, and a file rewritten in place, even with its old modification time put back, is read again.

The commit is provenance only: it never enters a fingerprint or a rule's parameters, so a new commit
retrains nothing by itself. Standard library only: the Snakefile imports this at every start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePath, PurePosixPath

from sonoseg.errors import SonosegError

SOURCES_DIR = "data/sources"  # under results/<study>/
HASH_CACHE = "hash_cache.json"
SHORT = 12  # hex digits a person reads; records keep the whole digest
CHUNK = 1 << 20
LISTED = 5  # changed files named per kind of change in a message; the rest are counted


# ----------------------------------------------------------------------------- writing


def write_json_atomic(path: str | Path, payload: dict) -> bool:
    """Write ``payload`` as JSON through a temporary file renamed over ``path`` (write_bytes_atomic: a
    reader never sees a half-written file; two writers leave one whole file). False, and nothing written,
    when the file already holds exactly this content: its modification time is what tells Snakemake it
    changed."""
    path = Path(path)
    text = json.dumps(payload, indent=1, sort_keys=True) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, text.encode())
    except OSError as exc:
        raise SonosegError(f"{path}: could not be written: {exc.strerror or exc}") from None
    return True


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file in ``path``'s folder and rename it over ``path``: a write cut
    short (a full disk, the process stopped) leaves no part of a file under its name. The temporary name
    is mkstemp's, made with O_EXCL: unique whoever else writes into the folder, where a process id is not
    (two containers on one bind mount, two NFS hosts, each with its own pid 1). It is hidden, and ends in
    .tmp, never in a name a reader of the folder takes for its own (<stem>_mask.png, *.json); its start
    is the target's name cut short, so that a name at the file system's limit still leaves room. The file
    is removed on any exception, Ctrl-C and SIGTERM (raised as an exception) included. An OSError is
    raised to the caller, which names the file."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        # mkstemp makes it owner-only; a results folder may be shared: the mode the file had (a g+w given it),
        # else what the umask gives a new file
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """``text`` (UTF-8) written as write_bytes_atomic writes, its folder made: a page, a caption's Markdown, a
    run sheet is whole under its name or not there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, text.encode())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path: str | Path) -> dict | None:
    """A JSON file's content; None when it is missing or not valid JSON (a record is then made anew)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- hashing


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    """Content hashes by absolute path, reused while the file's size, modification time and
    status-change time are unchanged (``os.utime`` can put an old modification time back, but not an
    old status-change time). ``rehash``: read every file again."""

    def __init__(self, path: str | Path, rehash: bool = False):
        self.path = Path(path)
        stored = None if rehash else read_json(self.path)
        self.entries: dict[str, list] = stored.get("entries", {}) if isinstance(stored, dict) else {}
        self.used: dict[str, list] = {}
        self.hashed = 0  # files read this time

    def digest(self, path: Path, stat: os.stat_result) -> str:
        key = str(path)
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
        entry = self.entries.get(key)
        if entry and entry[:3] == stamp:
            self.used[key] = entry
            return entry[3]
        digest = sha256_of(path)
        self.hashed += 1
        self.used[key] = [*stamp, digest]
        return digest

    def save(self) -> None:
        """Keep the entries of this run's files (a file that left the dataset leaves the cache)."""
        write_json_atomic(self.path, {"entries": self.used})


# ----------------------------------------------------------------------------- sources


@dataclass
class Record:
    """One source's fingerprint: every file (relative to the source's root) with its size and hash, or,
    for data made from settings (the built-in phantom), the settings themselves."""

    name: str
    root: str = ""
    files: dict[str, list] = field(default_factory=dict)  # relative path -> [size, sha256]
    settings: dict | None = None

    @property
    def fingerprint(self) -> str:
        content = {"settings": self.settings} if self.settings is not None else {"files": self.files}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict:
        payload = {"source": self.name, "fingerprint": self.fingerprint, "root": self.root}
        return {**payload, "settings": self.settings} if self.settings is not None else {**payload, "files": self.files}

    @classmethod
    def from_json(cls, payload: dict | None) -> Record | None:
        if not isinstance(payload, dict) or "source" not in payload:
            return None
        return cls(payload["source"], payload.get("root", ""), payload.get("files", {}), payload.get("settings"))


# Which files a layout reads. This module holds the rule, and sonoseg.data.layouts reads the files by it, because
# the workflow imports this module at every start: standard library only (sonoseg.data.imageio, which imports
# OpenCV, reads its IMAGE_SUFFIXES from here).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}  # the image formats sonoseg reads
# Image formats sonoseg does not read: among a layout's images they are problems (a scan left out unseen).
OTHER_IMAGE_SUFFIXES = {
    ".webp", ".gif", ".jp2", ".j2k", ".jpx", ".jxl", ".heic", ".heif", ".avif", ".dcm", ".dicom", ".ima",
    ".pgm", ".ppm", ".pbm", ".pnm", ".pfm", ".tga", ".exr", ".hdr", ".nrrd", ".nii", ".mha", ".mhd",
}  # fmt: skip
PATIENTS_CSV = "patients.csv"  # the folder layout's optional patient list, at the root
# The folders a layout takes its images and masks from, under the root: there a file of an image format
# sonoseg does not read, or one without extension (DICOM often has none), is a problem. BUSI's are its class
# folders, whatever their names: every folder under the root that holds images (None: any but the root).
IMAGE_FOLDERS: dict[str, tuple[str, ...] | None] = {
    "folder": ("images", "masks"),
    "busi": None,
    "busbra": ("Images", "Masks"),
}


def is_image_like(name: str) -> bool:
    """A file name in an image format sonoseg does not read, or without extension."""
    suffix = PurePath(name).suffix.lower()
    return suffix in OTHER_IMAGE_SUFFIXES or not suffix


def read_by_layout(relative: str | PurePath, layout: str, csv: str = "") -> bool:
    """Whether the ingest of a dataset in ``layout`` reads the file at ``relative`` (its path under the root), or
    may report it as a problem: a file in an image format sonoseg reads, anywhere (an image, a mask, or an image
    that pairs with nothing: a problem); one in another image format or without extension in the layout's image
    folders (IMAGE_FOLDERS); the layout's CSV (patients.csv at a folder dataset's root, every .csv at a BUS-BRA
    root); with ``csv`` (a folder dataset listed by a CSV of its own, which may name a file of any name), every
    file. Any other file (notes, a README, an annotation tool's .json, a .csv BUSI has no use for) the ingest
    lists as ignored, unread: it is left out of the fingerprint, so that adding one redoes nothing. The junk
    (is_junk) is decided before, for every layout."""
    path = PurePosixPath(PurePath(relative).as_posix())
    if path.suffix.lower() in IMAGE_SUFFIXES or (layout == "folder" and csv) or is_layout_csv(path, layout):
        return True
    folders = IMAGE_FOLDERS.get(layout, ())
    in_image_folder = len(path.parts) > 1 if folders is None else path.parent.as_posix() in folders
    return in_image_folder and is_image_like(path.name)


def is_layout_csv(relative: str | PurePath, layout: str) -> bool:
    """Whether the file at ``relative`` (its path under the root) is a CSV the layout reads by itself:
    patients.csv at a folder dataset's root, every .csv at a BUS-BRA root."""
    path = PurePosixPath(PurePath(relative).as_posix())
    if layout == "folder":  # in any letter case: a file system that ignores case opens Patients.csv so
        return path.as_posix().lower() == PATIENTS_CSV
    return layout == "busbra" and len(path.parts) == 1 and path.suffix.lower() == ".csv"


# What operating systems, file managers and tools leave in any folder, never data: the ingest lists these files
# as ignored without reading them (sonoseg.data.layouts), and the fingerprint leaves them out, so a .DS_Store
# that Finder adds, or a notebook's checkpoint, redoes nothing. The rule lives here, not in the layouts,
# because the workflow imports this module at every start: standard library only.
JUNK_NAMES = {"thumbs.db", "desktop.ini", "icon\r"}  # besides hidden files (.DS_Store, AppleDouble ._NAME)
JUNK_FOLDERS = {"__macosx"}  # besides hidden folders (.git, .ipynb_checkpoints): a macOS zip's resource forks


def is_junk_name(name: str) -> bool:
    """A hidden file (.DS_Store, ._NAME) or one of the files operating systems leave in folders (Thumbs.db)."""
    return name.startswith(".") or name.lower() in JUNK_NAMES


def junk_folder(relative: str | PurePath) -> PurePosixPath | None:
    """The first folder on a file's path under the dataset root (``relative``) that holds junk only, a hidden
    folder or __MACOSX, or None. Only folders under the root count: a dataset may lie in ~/.cache."""
    folders = PurePath(relative).parts[:-1]
    for depth, name in enumerate(folders):
        if name.startswith(".") or name.lower() in JUNK_FOLDERS:
            return PurePosixPath(*folders[: depth + 1])
    return None


def is_junk(relative: str | PurePath) -> bool:
    """Whether a file, by its path under the dataset root, is junk the ingest ignores: a junk name, or in a
    junk folder."""
    return is_junk_name(PurePath(relative).name) or junk_folder(relative) is not None


def dataset_files(root: Path, layout: str | None = None, csv: str = "") -> list[Path]:
    """Every file under the dataset root that the ingest of ``layout`` reads or may report as a problem
    (read_by_layout; every file when ``layout`` is None), but not the junk of operating systems and tools
    (is_junk), which the ingest never reads. Links are recorded wherever they lie, as found, whatever their
    names, since the ingest checks every link (one leaving the root is a problem); a broken one, or one that
    cannot be read, is recorded as such and the ingest reports it."""
    files = []

    def refuse_unreadable(exc: OSError) -> None:
        # A folder that cannot be listed hides files from the fingerprint, unless it is junk (a USB stick's
        # .Trashes or .Spotlight-V100, which only the system may read).
        if junk_folder(Path(exc.filename).relative_to(root) / "a file in it") is None:
            _raise_walk_error(exc)

    def recorded(path: Path) -> bool:
        if path.is_symlink():
            return True
        relative = path.relative_to(root)
        return not is_junk(relative) and (layout is None or read_by_layout(relative, layout, csv))

    for directory, folders, names in os.walk(root, followlinks=False, onerror=refuse_unreadable):
        here = Path(directory)
        # A link to a folder is not followed (as the ingest does), but it is recorded: adding, removing
        # or retargeting one changes what the ingest reports.
        found = [here / name for name in names] + [here / name for name in folders if (here / name).is_symlink()]
        files.extend(path for path in found if recorded(path))
    return sorted(files)


def _raise_walk_error(exc: OSError) -> None:
    raise SonosegError(f"{exc.filename}: cannot be read ({exc.strerror})")


def file_entry(path: Path, hashes: HashCache) -> list:
    if path.is_symlink() and path.is_dir():
        return [-1, f"link to folder {os.readlink(path)}"]
    try:
        stat = path.stat()  # follows a link: its target's content is what the ingest reads
        if not path.is_file():
            return [-1, "not a regular file"]
        return [stat.st_size, hashes.digest(path, stat)]
    except FileNotFoundError:
        return [-1, f"broken link to {os.readlink(path)}" if path.is_symlink() else "missing"]
    except OSError as exc:
        return [-1, f"unreadable: {exc.strerror or exc}"]


def folder_record(
    name: str,
    root: str | Path,
    hashes: HashCache,
    setting: str = "dataset.root",
    layout: str | None = None,
    csv: str = "",
) -> Record:
    """Every file under a folder that the ingest of ``layout`` reads (dataset_files; every file when None), by
    content."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise SonosegError(f"{name}: {root} {what} ({setting})")
    # The root as the config wrote it: a relative one (the built-in sets) is the same folder wherever the
    # checkout lies, so moving the checkout with its results changes no record (and redoes nothing).
    record = Record(name, str(root))
    resolved = root.resolve()
    for path in dataset_files(resolved, layout, csv):
        record.files[path.relative_to(resolved).as_posix()] = file_entry(path, hashes)
    return record


def record_paths(record: Record) -> list[Path]:
    """The paths a folder's record lists (every file its layout reads, every link), under its root resolved: a
    listing that a reader of the same folder at the same start need not walk again (the workflow's check of
    each dataset's layout at planning, sonoseg.data.manifest.check_layout, which lists the other files as
    ignored only, never as problems)."""
    root = Path(record.root).resolve()
    return [root / name for name in record.files]


def file_record(name: str, path: str | Path, hashes: HashCache, what: str) -> Record:
    path = Path(path)
    if not path.is_file():
        raise SonosegError(f"{what}: {path} {'is not a file' if path.exists() else 'not found'}")
    resolved = path.resolve()
    return Record(name, str(resolved.parent), {resolved.name: file_entry(resolved, hashes)})


def pretrained_sources(paths) -> dict[str, str]:
    """A source name per pretrained weights file (``pretrained_<file stem>``, numbered when two stems agree)."""
    names: dict[str, str] = {}
    for path in sorted(set(p for p in paths if p)):
        base = "pretrained_" + re.sub(r"[^A-Za-z0-9]+", "_", Path(path).stem).strip("_")
        name, n = base, 1
        while name in names.values():
            n += 1
            name = f"{base}_{n}"
        names[path] = name
    return names


def dataset_layouts(config: dict) -> dict[str, tuple[str, str]]:
    """Each folder source of a study (the dataset, unless it is the phantom, and ``external_<name>``) -> the
    layout and CSV its ingest reads it with, which decide the files its record lists (read_by_layout)."""
    dataset = config["dataset"]
    layouts = {} if dataset["layout"] == "synthetic" else {"dataset": (dataset["layout"], dataset.get("csv") or "")}
    for external in config.get("external_datasets", []):
        layouts[f"external_{external['name']}"] = (external.get("layout", "folder"), external.get("csv") or "")
    return layouts


def study_records(config: dict, hashes: HashCache, pretrained: dict[str, str] | None = None) -> dict[str, Record]:
    """Every source a study reads from outside results/, from its validated config: the dataset (the
    phantom's settings, or the files under dataset.root that its layout reads), the split file, each
    pretrained weights file its runs start from (``pretrained``: path -> source name), and the files of each
    external dataset that its layout reads (``external_<name>``)."""
    records = {}
    layouts = dataset_layouts(config)
    dataset = config["dataset"]
    if dataset["layout"] == "synthetic":
        # A copy: the record must not follow later changes of the config it came from.
        records["dataset"] = Record("dataset", settings=json.loads(json.dumps({"synthetic": config["synthetic"]})))
    else:  # the layout's CSVs lie under the root (the ingest refuses one outside it)
        records["dataset"] = folder_record("dataset", dataset["root"], hashes, "dataset.root", *layouts["dataset"])
    split_file = config.get("split", {}).get("file")
    if split_file:
        records["split_file"] = file_record("split_file", split_file, hashes, "split.file")
    for path, name in (pretrained or {}).items():
        records[name] = file_record(name, path, hashes, "pretrained backbone weights")
    for external in config.get("external_datasets", []):
        name = f"external_{external['name']}"
        setting = f"external_datasets {external['name']!r} root"
        records[name] = folder_record(name, external["root"], hashes, setting, *layouts[name])
    return records


def record_path(out: str | Path, name: str) -> Path:
    return Path(out) / SOURCES_DIR / f"{name}.json"


# ----------------------------------------------------------------------------- changes


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def describe(self) -> str:
        parts = []
        for word, names in (("added", self.added), ("removed", self.removed), ("modified", self.modified)):
            if names:
                shown = ", ".join(names[:LISTED]) + (f", … ({len(names) - LISTED} more)" if len(names) > LISTED else "")
                parts.append(f"{len(names)} {word}: {shown}")
        return "; ".join(parts)


def changes(before: Record, after: Record) -> Changes:
    if before.settings is not None or after.settings is not None:
        changed = before.settings != after.settings
        return Changes(modified=["settings"] if changed else [])
    old, new = before.files, after.files
    return Changes(
        added=sorted(set(new) - set(old)),
        removed=sorted(set(old) - set(new)),
        modified=sorted(name for name in set(old) & set(new) if old[name] != new[name]),
    )


@dataclass
class Rewrite:
    """A record a check rewrote, and what its file held before (None: there was none), to put it back."""

    path: Path  # absolute: by the time a Snakemake run with --directory exits, it is back in its first folder
    before: bytes | None
    times: tuple[int, int] | None  # the file's access and modification times before, in ns
    after: bytes = b""

    @classmethod
    def of(cls, path: Path) -> Rewrite:
        path = path.absolute()
        try:
            stat = path.stat()
            return cls(path, path.read_bytes(), (stat.st_atime_ns, stat.st_mtime_ns))
        except OSError:
            return cls(path, None, None)

    def undo(self) -> None:
        """The file as it was, content and times; left as it is when another process has rewritten it since
        (a run beside this one), and when it cannot be put back (said by the next check, which compares)."""
        with contextlib.suppress(OSError):
            if self.path.read_bytes() != self.after:
                return
            if self.before is None:
                self.path.unlink()
                return
            write_bytes_atomic(self.path, self.before)
            os.utime(self.path, ns=self.times)


@dataclass
class Check:
    """What the start of a workflow run found: each source's record, and a message per changed one."""

    records: dict[str, Record]
    messages: list[str]
    hashed: int
    rewritten: list[Rewrite] = field(default_factory=list)

    @property
    def dataset_fingerprint(self) -> str:
        return self.records["dataset"].fingerprint

    def undo(self) -> None:
        """Put back every record this check rewrote, as it was. Snakemake must see a changed record at planning
        to plan what the change redoes, so a dry run (-n) rewrites it too; undone when the dry run ends, the
        next run compares the data with the records of the last run that ran jobs, not with the dry run's."""
        for rewrite in reversed(self.rewritten):
            rewrite.undo()


def source_label(name: str) -> str:
    """A source as a message names it: 'the dataset', "external dataset 'udiat'", 'the split file
    (split.file)'; a pretrained weights file by its source name (the message lists its file)."""
    if name.startswith("external_"):
        return f"external dataset {name.removeprefix('external_')!r}"
    return {"dataset": "the dataset", "split_file": "the split file (split.file)"}.get(name, f"the {name}")


def check_study(config: dict, out: str | Path, rehash: bool = False, pretrained: dict[str, str] | None = None) -> Check:
    """Fingerprint every source of a study, compare each with its record under ``out`` and rewrite the
    records that changed (the rules reading them then rerun; Check.undo puts them back). The messages say
    what changed, by file name, and what the study will redo."""
    out = Path(out)
    hashes = HashCache(out / SOURCES_DIR / HASH_CACHE, rehash)
    records = study_records(config, hashes, pretrained)
    layouts = dataset_layouts(config)
    messages, rewritten = [], []
    made_from = read_json(out / "data" / "manifest.json") or {}
    for name, record in records.items():
        path = record_path(out, name)
        before = Record.from_json(read_json(path))
        moved = before is not None and _moved(name, before, record)
        # A dataset's record by an earlier sonoseg listed every file: what the layout reads is what is compared.
        read_folder = before is not None and name in layouts
        as_read = _as_read(before, *layouts[name]) if read_folder else before
        if read_folder and not moved and before.fingerprint != record.fingerprint and as_read.files == record.files:
            # Kept while the files the layout reads are the same, so that a study made then redoes nothing for its
            # notes (its manifest names the record's fingerprint); the first change of a file the layout reads
            # writes the record anew.
            records[name] = record = before
        undone = name == "dataset" and made_from.get("dataset_fingerprint") == record.fingerprint
        redoes = REDOES.get(name.split("_")[0], "what reads it")
        label = source_label(name)
        # An earlier sonoseg's record of a dataset now read from another folder: the same files as read are a move.
        same_as_read = moved and read_folder and as_read.files == record.files
        if before is not None and before.fingerprint != record.fingerprint and not same_as_read:
            consequence = (
                "it is again the data the manifest was made from: nothing to redo"
                if undone and not moved
                else f"the study redoes {redoes}"
            )
            messages.append(
                f"sonoseg: {label} changed since the last run ({changes(as_read, record).describe()}): "
                f"fingerprint {before.fingerprint[:SHORT]} -> {record.fingerprint[:SHORT]}; {consequence}"
            )
        elif moved:
            messages.append(
                f"sonoseg: {label} is now read from {record.root} (its record says {before.root}), with the same "
                f"files (fingerprint {record.fingerprint[:SHORT]}): the study redoes "
                f"{redoes}, to read them there"
            )
        if before is not None and before.fingerprint == record.fingerprint and not moved:
            continue  # the same files in the same folder: the record stays as it is, and so does its date
        rewrite = Rewrite.of(path)
        if write_json_atomic(path, record.to_json()):
            rewrite.after = path.read_bytes()
            rewritten.append(rewrite)
            if undone and not moved:
                _date_before_manifest(path, out)
    current = records["dataset"].fingerprint
    used = made_from.get("dataset_fingerprint")
    if used not in (None, current) and not messages:
        messages.append(
            f"sonoseg: {out}/data/manifest.csv was made from dataset {used[:SHORT]}; the dataset is now "
            f"{current[:SHORT]}: the study redoes {REDOES['dataset']}"
        )
    hashes.save()
    return Check(records, messages, hashes.hashed, rewritten)


def _as_read(record: Record, layout: str, csv: str) -> Record:
    """A folder's record less the files the layout does not read (read_by_layout), which an earlier sonoseg's
    record listed too; a link is kept whatever its name, as dataset_files records every link."""
    root = Path(record.root)
    read = {
        name: entry
        for name, entry in record.files.items()
        if read_by_layout(name, layout, csv) or (root / name).is_symlink()
    }
    return Record(record.name, record.root, read, record.settings)


def _moved(name: str, before: Record, after: Record) -> bool:
    """Whether a dataset (the main one or an external one, whose manifest names its files by path) is read
    from another folder than its record's: the roots as written differ and do not lead to one folder now
    (a record made with an absolute root, the config now relative to the same folder, has not moved). A
    single file's record (split file, weights) names its folder for the reader only: its rules take the
    path as a parameter, and its content is what counts."""
    if not (name == "dataset" or name.startswith("external_")) or before.root == after.root:
        return False
    try:
        return Path(before.root).resolve() != Path(after.root).resolve()
    except OSError:
        return True


def _date_before_manifest(record: Path, out: Path) -> None:
    """A dataset record written again with the very data the manifest was made from (a change undone,
    or shown by a dry run and then undone) takes a time before the manifest's, so that Snakemake redoes
    nothing: only data the manifest was not made from is newer than it."""
    with contextlib.suppress(OSError):
        made = min((out / "data" / name).stat().st_mtime_ns for name in ("manifest.csv", "manifest.json"))
        os.utime(record, ns=(made - 1_000_000_000, made - 1_000_000_000))


REDOES = {
    "dataset": (
        "the ingest and every job that depends on the manifest (split, caches, trainings, tables; a training whose "
        "training and validation images are the same adopts its finished copy)"
    ),
    "split": "the split and every job that depends on it",
    "pretrained": "the trainings of the networks with that backbone and what depends on them",
    "external": (
        "that external dataset's ingest, split and cache, every prediction on it, and the collect stage with "
        "every table and report page read from per_image.csv.gz (docs/extending.md, 'Adding an external dataset')"
    ),
}


# ----------------------------------------------------------------------------- provenance


# The file a built wheel carries in the package (setup.py writes it): the commit it was built from.
BUILT_FROM = "BUILT_FROM"


@cache
def sonoseg_commit() -> str:
    """The commit of the sonoseg source that runs (``+dirty`` with uncommitted changes anywhere in the package,
    not in this module's folder alone); for an installed wheel, the commit it was built from (its BUILT_FROM);
    else ``unknown`` (a wheel built from an sdist)."""
    package = Path(__file__).resolve().parents[1]  # src/sonoseg, or site-packages/sonoseg
    commit = commit_of(package)
    if commit == "unknown":
        with contextlib.suppress(OSError, UnicodeDecodeError):
            commit = (package / BUILT_FROM).read_text().strip() or "unknown"
    return commit


def commit_of(package: Path) -> str:
    """The commit of the checkout ``package`` (a ``src/<name>`` folder) is part of, or ``unknown``: git answers
    for any repository around a folder, and a package installed into a venv inside someone's own repository (a
    hospital's deploy repository) would otherwise be stamped with that repository's commit. So the checkout's
    top must be two levels above the package, and the package's ``__init__.py`` tracked there."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != package.resolve().parents[1]:
            return "unknown"
        if git("ls-files", "--error-unmatch", "--", "__init__.py").returncode != 0:
            return "unknown"
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def commit_with(files: list[Path]) -> str:
    """sonoseg_commit, with "+dirty" also where one of ``files`` (a user's network code, beside the Snakefile
    in the same checkout or in a repository of its own) differs from its repository's HEAD or is not tracked
    there: a training of uncommitted network code was stamped with a clean commit, as its earlier training of
    other code was. Files outside any git repository are not judged."""
    commit = sonoseg_commit()
    if not files or commit.endswith("+dirty"):
        return commit
    by_folder: dict[Path, list[str]] = {}  # one git call per folder: a network's files mostly share one
    for file in files:
        resolved = Path(file).resolve()
        by_folder.setdefault(resolved.parent, []).append(str(resolved))
    for folder, names in by_folder.items():
        try:
            changed = subprocess.run(
                ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=all", "--", *names],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if changed.returncode == 0 and changed.stdout.strip():
            return commit + "+dirty"
    return commit


def sonoseg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sonoseg")
    except PackageNotFoundError:
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what the platform says: what a result records
    of the machine that made it (a training's history, the cost table, a simulated set's record)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def stamp(dataset_fingerprint: str) -> dict:
    """What a result records of its origin: the dataset fingerprint, the sonoseg version and commit."""
    return {
        "dataset_fingerprint": dataset_fingerprint,
        "sonoseg_version": sonoseg_version(),
        "commit": sonoseg_commit(),
    }


def manifest_provenance_path(manifest_csv: str | Path) -> Path:
    """The manifest's provenance file, beside it (``manifest.json``), written by the ingest."""
    return Path(manifest_csv).with_suffix(".json")


def write_manifest_provenance(manifest_csv: str | Path, dataset_record: str | Path) -> dict:
    record = Record.from_json(read_json(dataset_record))
    if record is None:
        raise SonosegError(f"{dataset_record}: not a dataset fingerprint record (the workflow writes it at start)")
    payload = {**stamp(record.fingerprint), "files": len(record.files) if record.settings is None else 0}
    write_json_atomic(manifest_provenance_path(manifest_csv), payload)
    return payload


def read_manifest_provenance(manifest_csv: str | Path) -> dict:
    """The manifest's provenance; a manifest from before the fingerprint has none (fields ``unknown``)."""
    found = read_json(manifest_provenance_path(manifest_csv)) or {}
    return {key: found.get(key, "unknown") for key in ("dataset_fingerprint", "sonoseg_version", "commit")}


def caption_line(dataset_fingerprint: str, trained_at: str = "", trained_in: str = "", predicted_at: str = "") -> str:
    """One line naming where a table's numbers come from: the data, the sonoseg that wrote the table and, where
    known (sonoseg.analysis.results.trained_at, trained_in and predicted_at), the commit(s) that trained its models
    and the precision(s) they trained in, and the commit(s) that made its predictions where they are not the
    writer's (a table remade by later code, or a study rerun after an upgrade, whose unchanged predictions were
    kept); and a bf16 study's table and an fp32 one's, whose numbers differ, are told apart by their captions."""
    short = dataset_fingerprint[:SHORT] if dataset_fingerprint != "unknown" else "unknown"
    writer = sonoseg_commit()
    line = f"Data fingerprint {short}; sonoseg {sonoseg_version()} at commit {writer}"
    if trained_at or trained_in:
        line += "; models trained" + (f" at commit {trained_at}" if trained_at else "")
        line += f" in {trained_in}" if trained_in else ""
    # "from commit", not "at commit": the report reads each "at commit" as a maker of the tables (report_labels)
    return line + (f"; predictions from commit {predicted_at}" if predicted_at and predicted_at != writer else "") + "."
