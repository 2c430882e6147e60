"""The mask files `sonoseg segment` writes: which file each image's mask goes to (<outdir>/<stem>_mask.png),
whether the file system can hold that name, and writing a mask there under any name the OS allows."""

from __future__ import annotations

import base64
import functools
import logging
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from sonoseg.data import imageio
from sonoseg.data.imageio import DICOM_ADVICE
from sonoseg.data.layouts import busi_mask_name, composed_name, first_names, is_junk
from sonoseg.data.provenance import IMAGE_SUFFIXES, write_bytes_atomic
from sonoseg.errors import SonosegError

log = logging.getLogger(__name__)

MASK_SUFFIX = "_mask.png"
# The record segment keeps in its output folder (sonoseg.serving.output_record): a folder holding one is an
# earlier run's masks, not images to segment.
RECORD_NAME = "segment_runs.json"
# A 1 x 1 GIF: OpenCV decodes GIF (since 4.11) where it was built with its GIF codec, as PyPI's wheels are.
TINY_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _decodes_gif() -> bool:
    return cv2.imdecode(np.frombuffer(TINY_GIF, np.uint8), cv2.IMREAD_COLOR) is not None


# The image files a folder given to segment stands for: the formats a dataset is read in, and WebP and GIF, which
# segment reads when named (their first frame), so that a folder stands for what its names do; GIF only where
# this OpenCV decodes it (elsewhere a GIF in a folder is counted among the files not read, not failed).
SEGMENT_SUFFIXES = IMAGE_SUFFIXES | {".webp"} | ({".gif"} if _decodes_gif() else set())
READ_FORMATS = ", ".join(sorted(SEGMENT_SUFFIXES))
CLASHES_SHOWN = 20  # mask-name clashes named in the error (a folder of thousands may hold many); all counted
# The longest file name most file systems take (ext4, XFS, APFS, NTFS): assumed where the OS cannot say.
COMMON_NAME_MAX = 255


@functools.lru_cache(maxsize=64)
def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that the file system of ``folder`` takes: asked of its nearest
    folder that exists (an --outdir is made after the masks are planned); COMMON_NAME_MAX where the OS
    cannot say (Windows has no pathconf, and a file system may give no limit). Asked once per folder: every
    mask of a run lies in one, and each is checked where a run plans, records and writes it."""
    folder = Path(os.path.abspath(folder))
    existing = next((f for f in (folder, *folder.parents) if f.is_dir()), None)
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX") if existing is not None else -1
    except (AttributeError, OSError, ValueError):
        limit = -1
    return limit if limit > 0 else COMMON_NAME_MAX


def name_too_long(out: Path) -> str | None:
    """Why the file system cannot hold the mask file ``out`` (its name is over the folder's limit, as
    <stem>_mask.png makes an image's name of up to the limit longer), or None. The name is counted in
    the bytes the OS stores, as the limit is."""
    size, limit = len(os.fsencode(out.name)), name_max(out.parent)
    if size <= limit:
        return None
    return (
        f"its mask's name, {out.name[:24]}…{MASK_SUFFIX}, would be {size} bytes, over the {limit}-byte limit of a file "
        f"name in {out.parent}: no mask can be written for it; give the image a shorter name"
    )


def write_png(mask: np.ndarray, path: Path) -> Path:
    """Save ``mask`` (uint8) as a PNG at ``path``: encoded in memory and written by Python, not by
    cv2.imwrite, which takes the name as UTF-8 and crashes the process (SIGSEGV) on one that is not (a
    Latin-1 café.png, which Python holds with surrogate escapes). Written to a temporary file in the folder
    and renamed over ``path``: a write cut short (a full disk, the process stopped) leaves no part of a
    mask under the mask's name, which the next run into the folder would refuse as a file it did not write
    (output_record.refuse_unrecorded); the temporary name is unique to the write, and removed whatever stops
    it (provenance.write_bytes_atomic). A file that cannot be written stops the run naming it."""
    encoded, png = cv2.imencode(".png", mask)
    if not encoded:
        raise SonosegError(f"{path}: the mask could not be encoded as a PNG ({mask.shape} {mask.dtype})")
    try:
        write_bytes_atomic(path, png.tobytes())
    except OSError as exc:
        why = (
            "a folder is at that path: move it, or choose another --outdir"
            if isinstance(exc, IsADirectoryError)
            else exc.strerror or str(exc)
        )
        raise SonosegError(f"{path}: the mask could not be written ({why})") from None
    return path


def _is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder; a name the OS cannot look up (too long) is not one, and is named when
    read (read_image: 'cannot be read')."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _exists(path: Path) -> bool:
    """Whether anything is at ``path`` (a dangling link is something: reading it fails by name)."""
    try:
        return path.is_symlink() or path.exists()
    except OSError:  # a name the OS cannot look up (too long): read_image names it
        return True


def check_writable(outdir: Path) -> None:
    """The folder for the masks made, and a file written there and removed, before any model is loaded: a
    folder that cannot take files (read-only, immutable) is refused then, not after a large ensemble has
    loaded (a disk with room for an empty file but not for the masks is found when one is written)."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # A file at the path (or above it) says "File exists" or "Not a directory": said as what it is.
        blocking = next((path for path in (outdir, *outdir.parents) if path.exists() and not path.is_dir()), None)
        why = f"{blocking} is a file, not a folder" if blocking else exc.strerror or exc
        raise SonosegError(f"{outdir}: cannot be made the folder for the masks ({why})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=outdir, prefix=".sonoseg-write-check-"):
            pass
    except OSError as exc:
        raise SonosegError(f"{outdir}: masks cannot be written in this folder ({exc.strerror or exc})") from None


def hold_folder(folder: Path, against: str, wait: bool) -> int | None:
    """The folder locked (flock on its descriptor: no lock file in it, and the OS releases it when the process
    ends, a crash or SIGKILL included): its descriptor, to close when done; None where no such lock can be
    had (Windows; a file system without it: NFS on a read-only descriptor, Lustre, SMB), with a warning that
    ``against`` (who else might write there) must not meanwhile. ``wait``: until another holder lets go, else
    BlockingIOError at once."""
    try:
        import fcntl  # POSIX; on Windows no folder is held
    except ImportError:
        return None
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(descriptor)
        raise
    except OSError as exc:
        os.close(descriptor)
        log.warning(
            "%s: the folder cannot be held against %s (%s): none may write there meanwhile",
            folder,
            against,
            exc.strerror or exc,
        )
        return None
    return descriptor


class FolderHeld:
    """An --outdir held by one segment run, from before its record's first entry to its last: a second run into
    the folder meanwhile is refused. Two runs at once wrote over each other's masks, each record claiming them
    all. The folder itself is locked (flock on its descriptor: no lock file among the masks, and the OS releases
    it when the process ends, a crash or SIGKILL included). Closed on leaving its ``with``."""

    def __init__(self, outdir: Path):
        try:
            self.descriptor = hold_folder(outdir, "other segment runs", wait=False)
        except BlockingIOError:
            raise SonosegError(
                f"{outdir}: another segment run is writing its masks there now: wait for it to end, or give "
                "another --outdir"
            ) from None

    def close(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> FolderHeld:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_found(images: list[Path]) -> None:
    """Names given that nothing is at (a mistyped path), said before any model is loaded (segment_images asks,
    once the masks are planned: a clash of names is said first): every one of them, refused; some, warned of,
    counted among the failed at the end while the others are segmented (as any image that cannot be read)."""
    missing = [image for image in images if not _exists(image)]
    if not missing:
        return
    # A pattern in quotes reaches segment unexpanded: the shell expands it, segment takes no patterns.
    pattern = next((str(m) for m in missing if any(c in str(m) for c in "*?[")), None)
    unexpanded = f" (if {pattern} is a pattern, the shell did not expand it: give it without quotes)" if pattern else ""
    if len(missing) == len(images):
        raise SonosegError(
            f"no such file or folder: {first_names([str(m) for m in missing])}{unexpanded}; nothing to segment"
        )
    log.warning(
        "%d of the %d images given do not exist: %s; they are counted as failed, the others are segmented",
        len(missing),
        len(images),
        first_names([str(m) for m in missing]),
    )


def _resolved(path: Path) -> Path:
    """``path`` with its links followed; a loop of links is left as named (reading it fails by name, as any
    image that cannot be read does, and the other images are segmented)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # RuntimeError: a symlink loop (Python before 3.13)
        return Path(os.path.abspath(path))


# Why a folder given, or a subfolder of one, holds no images to segment (segment's record, not_segmented).
EARLIER_RUN = f"an earlier segment run's masks (holds {RECORD_NAME})"


def images_in(folder: Path, not_taken: list[dict] | None = None) -> list[Path]:
    """The image files directly in ``folder`` (sonoseg's formats, any case of suffix; not hidden, not the
    junk of operating systems), by name: a folder given to segment, as nnU-Net's predictor takes one, so
    that an archive too large for a shell glob (the kernel's limit on a command line) is segmented in one
    run. Its subfolders are not entered, and named in a warning (but an earlier run's masks); its hidden
    images are named in a warning, its other files counted in a log line. A folder holding
    segment's record (RECORD_NAME) is an earlier run's masks (a shell glob folder/* catches it) and gives
    none, with a warning; so does a folder without an image file. A folder that cannot be read is refused
    by name. Every file and subfolder of the folder not taken is appended to ``not_taken`` (when given) with
    the reason, for segment's record: a DICOM left out is then in the record, not in a log line alone."""
    taken_not = not_taken if not_taken is not None else []
    try:
        if os.path.isfile(folder / RECORD_NAME):
            log.warning(
                "%s: an earlier segment run's masks (it holds %s), not images: skipped (name its images by a glob "
                "to segment them)",
                folder,
                RECORD_NAME,
            )
            taken_not.append({"file": str(folder), "reason": EARLIER_RUN})
            return []
        entries = sorted(folder.iterdir(), key=lambda path: path.name)
    except OSError as exc:
        raise SonosegError(f"{folder}: the folder cannot be read ({exc.strerror or exc})") from None
    images, others, hidden, subfolders, junk, earlier_runs, hidden_folders = [], [], [], [], [], [], []
    for path in entries:
        if _is_folder(path):
            if path.name.startswith("."):
                hidden_folders.append(path)
            elif os.path.isfile(path / RECORD_NAME):  # an earlier run's masks: skipped
                earlier_runs.append(path)
            else:
                subfolders.append(path)
        elif path.suffix.lower() not in SEGMENT_SUFFIXES:
            (junk if is_junk(path) else others).append(path)
        elif is_junk(path):  # a hidden image (.scan.png) is a user's; an AppleDouble ._scan.png is not an image
            (junk if path.name.startswith("._") else hidden).append(path)
        else:
            images.append(path)
    if junk:  # counted, as every file of the folder is (.DS_Store, Thumbs.db, macOS's ._x.png beside x.png)
        log.info(
            "%s: %d file(s) that operating systems and file managers write, not segmented (%s)",
            folder,
            len(junk),
            first_names(junk),
        )
    dicom = [path for path in others if imageio.is_dicom(path)]  # a department's export: warned of, with advice
    others = [path for path in others if path not in dicom]
    if dicom:
        log.warning("%s: %d DICOM file(s) not segmented (%s): %s", folder, len(dicom), first_names(dicom), DICOM_ADVICE)
    if others:
        log.info(
            "%s: %d file(s) not in an image format sonoseg reads (%s), not segmented (%s)",
            folder,
            len(others),
            READ_FORMATS,
            first_names(others),
        )
    if hidden:
        log.warning(
            "%s: %d hidden image file(s) not segmented (%s): name them to segment them",
            folder,
            len(hidden),
            first_names(hidden),
        )
    entered = f"its {len(subfolders)} subfolder(s) are not entered ({first_names(subfolders)})" if subfolders else ""
    if not images:
        log.warning(
            "%s: a folder with no image file of its own (%s%s): skipped",
            folder,
            READ_FORMATS,
            entered and f"; {entered}",
        )
    elif subfolders:  # an archive of patient folders with one stray file would otherwise lose every patient unsaid
        log.warning("%s: %s: name them (or their images) to segment their images", folder, entered)
    for paths, reason in (
        (dicom, "DICOM, which sonoseg does not read: export its frames as PNG first"),
        (others, f"not in an image format sonoseg reads ({READ_FORMATS})"),
        (hidden, "a hidden image: name it to segment it"),
        (subfolders, "a subfolder: not entered (name it to segment its images)"),
        (junk, "a file operating systems or file managers write"),
        (earlier_runs, EARLIER_RUN),
        (hidden_folders, "a hidden folder: not entered"),
    ):
        taken_not.extend({"file": str(path), "reason": reason} for path in paths)
    return images


def mask_files(images: list[str | Path], outdir: Path, not_taken: list[dict] | None = None) -> list[tuple[Path, Path]]:
    """(image, its mask file <outdir>/<stem>_mask.png) for each image given, once each: one mask per name
    given (a link under another name gets its own); the same name given twice (spelt otherwise, as
    a/../a/x.png, or through a linked folder: the same file under the same name) is segmented once.
    A folder given stands for the image files directly in it (images_in; an earlier run's masks, or a
    folder without images, skipped with a warning); nothing to segment at all: refused. Refused by name:
    two images whose masks
    would share one file (names compared regardless of case and Unicode form, as macOS and Windows file
    systems do), and
    an --outdir that is a folder of the images (BUSI keeps its ground truth there as NAME_mask.png, the
    very name segment writes; a user's masks may lie there too), whether the images are named through a
    link or not. Images named as BUSI names its masks are warned of, and segmented (warn_of_masks_given)."""
    images = [
        found
        for given in (Path(image) for image in images)
        for found in (images_in(given, not_taken) if _is_folder(given) else [given])
    ]
    if not images:
        raise SonosegError(
            f"no image to segment: the folders given hold no image file of their own ({READ_FORMATS}; their "
            "subfolders are not entered), or only an earlier run's masks"
        )
    planned: dict[Path, Path] = {}
    given: set = set()
    for image in images:
        out = outdir / f"{image.stem}{MASK_SUFFIX}"
        # The name as given, normalised but not resolved: a link under another name is another image.
        names = (Path(os.path.abspath(image)), (_resolved(image), out.name.casefold()))
        if any(name in given for name in names):
            log.warning("%s: given more than once; segmented once", image)
            continue
        given.update(names)
        planned[image] = out
    warn_of_masks_given(list(planned))
    writers: dict[str, list[Path]] = {}
    for image, out in planned.items():
        # One name to macOS and Windows file systems: regardless of case and of Unicode form (NFD from macOS).
        writers.setdefault(composed_name(out.name).casefold(), []).append(image)
    clashes = [(planned[names[0]], names) for names in writers.values() if len(names) > 1]
    if clashes:  # every clash at once (the first CLASHES_SHOWN named): a user renames them all before the next try
        more = f"; and {len(clashes) - CLASHES_SHOWN} more such names" if len(clashes) > CLASHES_SHOWN else ""
        raise SonosegError(
            "; ".join(
                f"{' and '.join(map(str, names))} would {'both' if len(names) == 2 else 'all'} be written to {out}"
                for out, names in clashes[:CLASHES_SHOWN]
            )
            + more
            + ": segment them into different --outdir, or rename them"
        )
    # Every folder an image was named in or lies in (an image given twice, once through a link, counts both).
    image_folders = {folder for image in images for folder in (image.parent.resolve(), _resolved(image).parent)}
    among = outdir.resolve() in image_folders or (
        outdir.is_dir() and any(os.path.samefile(outdir, folder) for folder in image_folders if folder.is_dir())
    )  # samefile: a folder named in another case on a file system that ignores case
    if among:
        raise SonosegError(
            f"{outdir}: a folder of the images; their masks would be written among them as <name>_mask.png, the "
            "name BUSI gives its ground truth: choose an --outdir apart from the images"
        )
    return list(planned.items())


def warn_of_masks_given(images: list[Path]) -> None:
    """One warning naming the images whose names are BUSI's mask naming (NAME_mask.png, NAME_mask_1.png,
    any case; a shell glob busi/benign/* catches them): segmented all the same, as an image may be so named."""
    masks = [image for image in images if busi_mask_name(image)]
    if len(masks) == 1:
        log.warning(
            "%s: looks like a mask (NAME_mask.png, BUSI's naming): segmented as an image anyway; leave it out of "
            "the images given",
            masks[0],
        )
    elif masks:
        log.warning(
            "%d images look like masks (NAME_mask.png, BUSI's naming): %s: segmented as images anyway; leave them "
            "out of the images given",
            len(masks),
            first_names(masks),
        )
