"""The record `sonoseg segment` keeps in its output folder (segment_runs.json): which sonoseg, model and
options wrote which mask, run after run; the masks there that no image of a run maps to, which are
named in a warning, never deleted; and the files where a run's masks would go that the record does not
list (a hand-drawn ground truth), which are refused, never overwritten. A run's entry is written before its
first mask, marked as not finished and naming the masks it may write, and replaced when the run ends: a run
killed where Python cannot record it (SIGKILL, the out-of-memory killer, a crash) leaves masks the next run
still knows as segment's."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sonoseg.data.layouts import first_names
from sonoseg.data.provenance import sonoseg_commit, sonoseg_version, write_json_atomic
from sonoseg.errors import SonosegError
from sonoseg.serving.mask_files import MASK_SUFFIX, RECORD_NAME, name_too_long

log = logging.getLogger(__name__)

# The record (mask_files.RECORD_NAME) lies beside the masks (<stem>_mask.png, which its name can never be).
# Each run is appended to the runs the file already holds, rather than the old file kept under a numbered
# name: one file answers "which run wrote this mask" (the last run that lists it), and an earlier run's
# entry is kept as it was written.
RECORD_FORMAT = "sonoseg segment runs 1"
STALE_SHOWN = 5  # the masks left from earlier runs a warning names; it counts them all
# The entry a run writes before its first mask says this until the run replaces it on leaving: one that still
# says it is a run that ended where Python could not write its record. Its masks_planned are the masks it may
# have written, which masks_recorded counts as segment's (an older sonoseg reads the entry, and ignores them).
UNFINISHED = (
    "did not finish, or its end could not be recorded (killed: SIGKILL, out of memory or a crash; or a full disk: "
    "its log says which)"
)
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def record_path(outdir: str | Path) -> Path:
    return Path(outdir) / RECORD_NAME


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def masks_left(outdir: Path, planned: list[tuple[Path, Path]]) -> list[str]:
    """The mask files (<name>_mask.png) in ``outdir`` that no image of ``planned`` maps to, by name
    (compared regardless of case, as mask_files compares them)."""
    mine = {out.name.casefold() for _, out in planned}
    try:
        names = [entry.name for entry in os.scandir(outdir) if entry.is_file()]
    except OSError:
        return []
    return sorted(n for n in names if n.casefold().endswith(MASK_SUFFIX) and n.casefold() not in mine)


def runs_held(path: Path) -> list[dict] | None:
    """The runs the record at ``path`` holds: none where there is no record, None where the file there is
    not a record (hand-edited, cut short)."""
    if not path.exists():
        return []
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(found, dict) and found.get("format") == RECORD_FORMAT and isinstance(found.get("runs"), list):
        return found["runs"]
    return None


def earlier_runs(path: Path) -> list[dict]:
    """The runs the record at ``path`` holds; none where there is no record. A file there that is not
    a record (hand-edited, cut short) is kept under a numbered name, with a warning, and never lost."""
    runs = runs_held(path)
    if runs is not None:
        return runs
    number = 1
    while (kept := path.with_name(f"{path.stem}.{number}{path.suffix}")).exists():
        number += 1
    try:
        os.replace(path, kept)
    except OSError as exc:
        raise SonosegError(
            f"{path}: not a record of segment runs, and cannot be moved aside ({exc.strerror})"
        ) from None
    log.warning(
        "%s: not a record of segment runs (hand-edited, or cut short?): kept as %s, a new record begun", path, kept
    )
    return []


def masks_recorded(runs: list[dict]) -> set[str]:
    """The mask files (names) that the runs of a record wrote, and those that a run that did not finish
    (killed before it could record what it wrote) planned to write: each may be there, written by segment."""
    names: set[str] = set()
    for run in runs:
        if not isinstance(run, dict):
            continue
        entries = run.get("images") or []
        names |= {entry["mask"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("mask"), str)}
        planned = run.get("masks_planned")
        if isinstance(planned, list):
            names |= {name for name in planned if isinstance(name, str)}
    return names


@contextlib.contextmanager
def signals_held():
    """Ctrl-C and SIGTERM held while the record is written, and delivered once it is on disk (a second Ctrl-C,
    or docker stop's SIGTERM after a Ctrl-C, lost the record it cut short). Held by Python's handlers, not by
    the main thread's signal mask: the OS gives a signal the main thread blocks to another thread of the
    process (torch's and ONNX Runtime's workers), whose C handler has Python raise it in the main thread all
    the same. A signal ignored, or handled outside Python, is left as it is; handlers can be set in the main
    thread only, so elsewhere nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {}
    for signum in HELD_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN or handler is None:
            continue
        previous[signum] = handler
        signal.signal(signum, lambda number, frame: arrived.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        # Each signal once, in the order it came: its own handler now raises it (KeyboardInterrupt, cli's
        # Stopped), or the default action ends the process, as it would have without the hold.
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)


def written_by_segment(out: Path, recorded: set[str]) -> bool:
    """Whether the file at ``out`` is a mask the folder's record lists (``recorded``: masks_recorded): under
    its name, or under a name in another case that is the same file (a file system that ignores case)."""
    if out.name in recorded:
        return True
    namesakes = (out.with_name(name) for name in recorded if name.casefold() == out.name.casefold())
    return any(namesake.exists() and os.path.samefile(out, namesake) for namesake in namesakes)


def refuse_unrecorded(outdir: Path, planned: list[tuple[Path, Path]]) -> None:
    """Refuse, before any model is loaded, a run that would overwrite a file no recorded segment run wrote: one
    at a mask's place (``planned``: mask_files') that the folder's record does not list (or in a folder without
    a record), such as a hand-drawn ground truth mask; named (the first few, and how many), with the ways on
    (WAYS_ON). A mask the record lists is replaced, and the record counts it (RunRecord). A mask name the file
    system cannot hold is left to segment_each, which fails that image."""
    runs = runs_held(record_path(outdir))
    recorded = masks_recorded(runs or [])
    foreign = [
        out for _, out in planned if not name_too_long(out) and out.exists() and not written_by_segment(out, recorded)
    ]
    if not foreign:
        return
    names = [f"{out.name} (a folder)" if out.is_dir() else out.name for out in foreign]
    raise SonosegError(
        f"{outdir}: {len(foreign)} file(s) under the names this run would write its masks to, "
        f"{unrecorded(outdir, runs)}: {first_names(names)}; not overwritten (a hand-drawn ground truth?): "
        f"{WAYS_ON.format(outdir=outdir)}"
    )


# What to do with files in the output folder that no segment run recorded, as the refusal and the warning say it.
WAYS_ON = "move them out of {outdir}, or give segment another --outdir"


def unrecorded(outdir: Path, runs: list[dict] | None) -> str:
    """How a message says that files in ``outdir`` are none a recorded segment run wrote (``runs``: runs_held
    of its record): what is known, that no record lists them, not a guess at where they came from (a hand-drawn
    mask, or segment's before the record was kept or deleted)."""
    if runs is None:
        why = f"its {RECORD_NAME} is not a record segment can read"
    elif not record_path(outdir).exists():
        why = f"it has no {RECORD_NAME}, the record of the masks segment writes there"
    else:
        why = f"its {RECORD_NAME} does not list them"
    return f"not written by a recorded segment run ({why})"


def shown(names: list[str]) -> str:
    """The first STALE_SHOWN of ``names``, and "..." where there are more."""
    return ", ".join(names[:STALE_SHOWN]) + (", ..." if len(names) > STALE_SHOWN else "")


@dataclass
class RunRecord:
    """One segment run into ``outdir``: made once the folder is, before the first mask; as a context
    manager it appends the run to the folder's record (RECORD_NAME) on entering, marked UNFINISHED with
    the masks it may write, and replaces that entry on leaving, also when the run stops on an error or a
    signal (then ``interrupted`` says why, and the images not reached are listed so).
    ``result`` (a SegmentResult) is read on leaving: its written masks and failed images."""

    outdir: Path
    planned: list[tuple[Path, Path]]
    result: object
    settings: dict
    started: str = field(default_factory=now)
    # Which entry of the record is this run's, to replace the one written at the start with the final one.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.begun = False  # this run's entry is on disk
        # Every file at a mask's place is a mask the record lists (refuse_unrecorded); a name too long to
        # hold is no file, and its image fails (segment_each).
        self.replaced = {out for _, out in self.planned if not name_too_long(out) and out.exists()}
        left = masks_left(self.outdir, self.planned)
        runs = runs_held(record_path(self.outdir))
        recorded = masks_recorded(runs or [])
        # An earlier run's masks (the record lists them) apart from other mask-named files (none lists them).
        self.left_listed = listed = [name for name in left if written_by_segment(self.outdir / name, recorded)]
        self._warn_of_other_models(runs or [])
        self.left_unlisted = unlisted = [name for name in left if name not in listed]
        if listed:
            log.warning(
                "%s: %d mask file(s) that no image of this run maps to, left from an earlier run: %s (kept; %s "
                "records which run wrote which)",
                self.outdir,
                len(listed),
                shown(listed),
                RECORD_NAME,
            )
        if unlisted:
            log.warning(
                "%s: %d file(s) named as masks that no image of this run maps to, %s: %s (kept; to keep them apart "
                "from this run's masks, %s)",
                self.outdir,
                len(unlisted),
                unrecorded(self.outdir, runs),
                shown(unlisted),
                WAYS_ON.format(outdir=self.outdir),
            )

    def _warn_of_other_models(self, runs: list[dict]) -> None:
        """Masks this run replaces that an earlier run wrote from other model files (its members' training
        fingerprints or graph's sha256, else its model path, differ) are warned of, once, naming the earlier
        model: the folder then mixes or changes models, which the INFO line per mask did not make plain."""
        mine = (self.settings.get("member_ids"), self.settings.get("model"))
        last_writer: dict[str, dict] = {}
        for run in runs:  # in the order they ran: the last run that wrote a mask is the one whose mask is there
            for entry in (run.get("images") or []) if isinstance(run, dict) else []:
                if isinstance(entry, dict) and isinstance(entry.get("mask"), str):
                    last_writer[entry["mask"]] = run
        others = {}
        for out in sorted(self.replaced):
            run = last_writer.get(out.name)
            if run is None:
                continue
            theirs = run.get("member_ids")
            by_ids = all(isinstance(ids, list) and ids and all(ids) for ids in (theirs, mine[0]))
            same = theirs == mine[0] if by_ids else run.get("model") == mine[1]  # files from before fingerprints
            if not same:
                others.setdefault(str(run.get("model")), []).append(out.name)
        for model, names in others.items():
            log.warning(
                "%s: %d mask(s) here were written from another model, %s, and this run (%s) replaces them: %s "
                "(%s records which run wrote which; another --outdir keeps both)",
                self.outdir,
                len(names),
                model,
                mine[1],
                shown(names),
                RECORD_NAME,
            )

    def __enter__(self) -> RunRecord:
        try:
            self.write(UNFINISHED)
        except BaseException as error:
            # A Ctrl-C or SIGTERM held while the first entry was written is raised once it is on disk: that
            # entry is replaced, as on leaving, by one that says the run was stopped, before any mask.
            if self.begun:
                self.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self.write(None if error is None else f"{kind.__name__}: {error}")
        except SonosegError as exc:
            if error is None:
                raise
            # The run's own error is the one raised; the record's is said with what it leaves (a full disk).
            log.error(
                "%s: so the record keeps this run's first entry, which says it did not finish and lists the masks "
                "it planned, not those it wrote",
                exc,
            )

    def entry(self, interrupted: str | None) -> dict:
        written = {Path(path) for path in self.result.written}
        failed = {Path(path): message for path, message in self.result.failed}
        warned = self.result.warnings
        unfinished = interrupted == UNFINISHED
        images = []
        for image, out in self.planned:
            if out in written:
                images.append({"image": str(image), "mask": out.name, "replaced": out in self.replaced})
                if out in self.replaced:
                    log.info("%s: replaced the mask an earlier run wrote", out)
            else:
                images.append({"image": str(image), "mask": None, "error": failed.get(image, "not reached")})
            if warned.get(image):  # segmented with a warning (image_warnings): why its mask may be wrong
                images[-1]["warnings"] = warned[image]
        return {
            "run_id": self.run_id,
            "sonoseg_version": sonoseg_version(),
            "commit": sonoseg_commit(),
            "started": self.started,
            "finished": None if unfinished else now(),
            **self.settings,
            **({"interrupted": interrupted} if interrupted else {}),
            # A name too long to hold is no file (its image fails), so it is never planned.
            **(
                {"masks_planned": [out.name for _, out in self.planned if not name_too_long(out)]} if unfinished else {}
            ),
            "written": len(written),
            "failed": len(failed),
            "replaced": len(written & self.replaced),
            "masks_left_from_earlier_runs": len(self.left_listed),
            "unrecorded_mask_files_left": len(self.left_unlisted),
            "images": images,
        }

    def write(self, interrupted: str | None = None) -> Path:
        """Write this run's entry (``interrupted``: UNFINISHED before the first mask, else why the run stopped,
        or None) in place of the one it wrote before: the record is read again, so that a run that wrote its
        entry meanwhile (another segment into the folder) keeps it."""
        path = record_path(self.outdir)
        with signals_held():
            entry = self.entry(interrupted)
            runs = earlier_runs(path)
            mine = [i for i, run in enumerate(runs) if isinstance(run, dict) and run.get("run_id") == self.run_id]
            if mine:
                runs[mine[0]] = entry
            else:
                runs.append(entry)
            write_json_atomic(path, {"format": RECORD_FORMAT, "runs": runs})
            self.begun = True
        return path
