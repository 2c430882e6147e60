"""What makes two trainings the same, and reusing a finished one (docs/workflow.md, "A rerun that is the
same training adopts it"): a training's fingerprint (network, seed, recipe, data, device, fast path,
code); the chosen recipe-selection candidate adopted by the network's run; the last few finished trainings
kept beside the checkpoint, one of which a rerun that is the same training adopts instead of training
again."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

import torch

from sonoseg.data.preprocess import cache_content_digest
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog, models
from sonoseg.serving.device import FastPath
from sonoseg.serving.modelio import MODEL_FORMAT, load_checked, save_atomic
from sonoseg.training.recipe import Recipe

log = logging.getLogger(__name__)

FINISHED_MODEL, FINISHED_HISTORY = "model.pt", "history.csv"  # a finished copy's files (keep_finished_copy)
# The trainings of one run, fold and seed kept for adoption: the last one and the two before it, so that a setting
# tried and put back (or tried twice) adopts its training. Each older copy costs its model file's size on disk.
KEPT_FINISHED_COPIES = 3
FINGERPRINT_NAME = 16  # hex digits of a training's fingerprint naming its copy's folder
UNKNOWN_COPY = "unknown"  # the folder of a copy whose model file records no fingerprint
COPY_NAME = re.compile(rf"[0-9a-f]{{{FINGERPRINT_NAME}}}|{UNKNOWN_COPY}")
# The code a training runs (code_digest reads it): the modules the `train` command imports to train, every
# network's module (builders are imported by name: catalog), and the package's top-level modules and data, serving
# and training modules these import, lazily or not. An edit anywhere else (the analysis, the report, segment, the
# external sets' simulator) leaves checkpoints and finished copies valid: a finished training is adopted.
TRAINING_ENTRIES = ("sonoseg.training.train", "sonoseg.training.reuse", "sonoseg.training.recipe")
TRAINING_FOLDERS = ("", "data", "networks", "serving", "training")  # where the imports are followed


@contextlib.contextmanager
def training_held(checkpoint: str | Path | None):
    """One process at a time trains a run's fold and seed: a lock beside its checkpoint (``<checkpoint>.lock``,
    holding the holder's pid). A ``kill -9`` of Snakemake leaves its trainings running; the rerun's training
    resumed from the checkpoint they were still writing, and the two wrote over each other. The second now
    waits for the first to end, then goes on as any rerun does (adopting what the first finished, or resuming
    from its checkpoint). Where the file system gives no locks (some network file systems), it goes on alone."""
    if not checkpoint:
        yield
        return
    import fcntl

    path = Path(checkpoint).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                log.warning(
                    "another process (pid %s) is training this run, fold and seed (one left running when Snakemake "
                    "was killed?): waiting for it to end, then going on from what it leaves (kill it to stop waiting)",
                    holder,
                )
                fcntl.flock(handle, fcntl.LOCK_EX)
                log.info("the other process ended: going on")
        except OSError as exc:  # no locks here (ENOLCK): the workflow's own scheduling keeps one job per training
            log.warning("%s: cannot lock (%s): going on without", path, exc.strerror)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


@contextlib.contextmanager
def attempts_log(checkpoint: str | Path | None):
    """Every attempt at a training logged beside its checkpoint (``<checkpoint>.log``, outside the job's outputs,
    as the checkpoint is): Snakemake empties a job's log before each attempt, so a training stopped and resumed
    (a SLURM scancel, a retry, a machine turned off) kept only its last attempt's lines. An attempt that finds
    earlier ones writes their lines into its own log first, then its own; the file goes when the training
    finishes (an attempt that fails keeps it, with its error)."""
    if not checkpoint:
        yield
        return
    path, earlier = Path(checkpoint).with_suffix(".log"), ""
    with contextlib.suppress(OSError):
        earlier = path.read_text(encoding="utf-8", errors="replace")
    if earlier:
        sys.stderr.write(f"--- earlier attempts at this training (stopped; from {path}) ---\n{earlier}")
        sys.stderr.write("--- this attempt ---\n")
        sys.stderr.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    root = logging.getLogger()
    formats = [h.formatter for h in root.handlers if h.formatter is not None]
    handler.setFormatter(
        formats[0] if formats else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    try:
        yield
    except Exception as exc:  # the attempt's last line: why it stopped (the command line prints it, not logs it)
        log.error("this attempt failed: %s: %s", type(exc).__name__, exc)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
    path.unlink(missing_ok=True)


def file_digest(*paths: str | Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def code_digest(network: str, model: torch.nn.Module) -> str:
    """The code a training runs: the source files of the sonoseg modules training uses (training_sources:
    not the analysis, tables and report, segment, the export, nor the workflow's commands); for the network, its builder
    (``module:function``), the builder's file, the files of the user's modules it draws on
    (catalog.builder_files) and the files defining its layers outside torch (a user's network,
    docs/extending.md), and the architecture as built (its repr: layers, channels, kernels);
    torch's and torchvision's versions. A finished run is adopted, and a checkpoint resumed, only under
    the same code: after an edit to a network or to the training, a forced rerun trains again;
    ``SONOSEG_ADOPT_FINISHED=0`` trains again regardless."""
    package = Path(__file__).resolve().parents[1]
    builder, builder_file = models.builder_source(network)
    spec = models.builder_spec(network)  # a user's network: the files of its own modules, as the workflow watches
    users = tuple(catalog.builder_files(spec)) if spec else ()
    files = {package / name: name for name in training_sources(users)}  # with the sonoseg modules a user's imports
    sources = [builder_file, *users] + [
        _source_file(type(layer))
        for layer in model.modules()
        if type(layer).__module__.split(".")[0] not in ("torch", "torchvision")
    ]
    for source in filter(None, sources):
        files.setdefault(Path(source).resolve(), Path(source).name)
    versions = f"{torch.__version__}\0{importlib.metadata.version('torchvision')}"  # its layers: three backbones
    digest = hashlib.sha256(f"{versions}\0{builder}\0{model!r}".encode())
    for path in sorted(files, key=files.get):
        digest.update(f"\0{files[path]}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def training_sources(network_files: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The package's source files a training runs, relative to the package, sorted: TRAINING_ENTRIES, the built-in
    networks' modules and the modules of TRAINING_FOLDERS they import, however deep, read from their import
    statements (catalog.imported_files: relative imports, and lazy ones in a function's body, counted; not those a
    module-level __getattr__ makes on request); ``network_files``: a user's network's files, whose sonoseg imports
    (``from sonoseg.data import synth``) count too."""
    package = Path(__file__).resolve().parents[1]
    followed = {(), *((folder,) for folder in TRAINING_FOLDERS if folder)}

    def of_the_training(path: Path) -> bool:
        return path.is_relative_to(package) and path.relative_to(package).parts[:-1][:1] in followed

    def package_of(path: Path) -> str:  # where a file's relative imports start from
        return ".".join(path.relative_to(package.parent).parts[:-1])

    starts = [package / "__init__.py", *(package / "networks" / "models").glob("**/*.py")]
    starts += [package.parent.joinpath(*name.split(".")).with_suffix(".py") for name in TRAINING_ENTRIES]
    files = {path: package_of(path) for path in starts}
    files |= {Path(file).resolve(): "" for file in network_files}  # a user's own relative imports: builder_files'
    found = catalog.imported_files(files, package.parent, of_the_training, attribute_imports=False)
    return tuple(sorted(path.relative_to(package).as_posix() for path in found if path.is_relative_to(package)))


def _source_file(cls: type) -> str | None:
    try:
        return inspect.getsourcefile(cls)
    except (TypeError, OSError):  # compiled into an extension, or defined where no file is (a notebook)
        return None


def run_fingerprint(
    network: str,
    seed: int,
    recipe: Recipe,
    train_data,
    val_data,
    pretrained_backbone: str | None,
    path: FastPath,
    code: str,
) -> str:
    """What makes two trainings the same: a checkpoint resumes, and a finished run is adopted, only
    when this matches (network, seed, recipe, what the training and validation caches hold, the backbone
    weights, the fast path and the code: ``code_digest``)."""
    return hashlib.sha256(
        json.dumps(
            {
                "network": network,
                "code": code,
                # Two devices can describe one fast path alike (fp32 on CPU and on a GPU), not train alike.
                "device": path.device.type,
                "seed": seed,
                "recipe": recipe.to_json(),
                # What the caches hold, not their bytes: not the dataset's fingerprint, which every cache of a
                # study records, so that a test image's corrected mask does not make every training another.
                "data": cache_content_digest(train_data, val_data),
                "pretrained": file_digest(pretrained_backbone) if pretrained_backbone else None,
                "fast_path": path.describe(),
                # Adam's fused kernel rounds otherwise than the loop before it: older runs are other runs
                **({"optimizer_kernel": "fused"} if recipe.optimizer in ("adam", "adamw") else {}),
                # The ultrasound changes draw from a stream of their own (TrainingDraws) since 2026-12:
                # earlier runs with them drew from the batch order's
                **({"ultrasound_draws": "own_stream"} if recipe.ultrasound_augment else {}),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()


def keep_finished_copy(model: str | Path, history: str | Path, folder: str | Path) -> None:
    """Keep a finished training's model and history in ``folder``, in a subfolder named by the first
    FINGERPRINT_NAME hex digits of the training's fingerprint (``link_or_copy``, each file replaced whole): a
    rerun is offered them (``offer_finished_copy``). The last KEPT_FINISHED_COPIES trainings kept there stay
    (a copy adopted again counts as kept now), so that a setting tried and then put back adopts its earlier
    training; older ones are deleted, and so is a copy an earlier sonoseg kept in ``folder`` itself (its
    fingerprint came from other code: it can match no training). Only subfolders named as this names them
    are counted or deleted. A copy that cannot be kept (a full disk, a read-only folder) is a warning: the
    training itself is done."""
    folder = Path(folder)
    try:
        fingerprint = load_checked(model, MODEL_FORMAT, metadata_only=True).get("fingerprint") or UNKNOWN_COPY
        kept = folder / fingerprint[:FINGERPRINT_NAME]
        kept.mkdir(parents=True, exist_ok=True)
        for source, name in ((model, FINISHED_MODEL), (history, FINISHED_HISTORY)):
            link_or_copy(source, kept / name)
        os.utime(kept)  # the order of keeping: the oldest copies are the ones deleted
        # The copy just kept is never among them, whatever the clocks say (a node's clock ahead on a shared disk).
        others = [path for path in _kept_copies(folder) if path != kept]
        for old in others[KEPT_FINISHED_COPIES - 1 :]:
            shutil.rmtree(old, ignore_errors=True)
        for loose in (folder / FINISHED_MODEL, folder / FINISHED_HISTORY):
            loose.unlink(missing_ok=True)
    except (OSError, SonosegError) as exc:
        log.warning("the finished copy in %s was not kept (%s): a rerun of this training trains again", folder, exc)


def _kept_copies(folder: Path) -> list[Path]:
    """The finished copies' subfolders in ``folder`` (named as keep_finished_copy names them: any other
    folder there is not one), the last kept first."""
    found = [
        path
        for path in folder.iterdir()
        if COPY_NAME.fullmatch(path.name) and path.is_dir() and (path / FINISHED_MODEL).is_file()
    ]
    return sorted(found, key=lambda path: path.stat().st_mtime_ns, reverse=True)


def link_or_copy(source: str | Path, target: Path, link: bool = True) -> None:
    """``target`` made the same file as ``source``: a hard link (with ``link``, where the file system has
    them) or a copy, through a temporary name of this process's own, so that the old target is replaced
    whole and two processes never write one file. A link is safe because sonoseg writes every model and
    history file whole under another name and renames it over the old one: a linked file is never
    changed in place. Snakemake does touch a job's outputs when it ends, so two outputs are never linked
    to each other: touching one would make the other look newer than what was made from it."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        if not (link and _hard_link(source, partial)):
            shutil.copyfile(source, partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _hard_link(source: str | Path, target: Path) -> bool:
    try:
        target.hardlink_to(source)
        return True
    except OSError:  # another file system, or one without hard links
        return False


def finished_copy_beside(checkpoint: str | Path) -> Path:
    """Where a training keeps its finished copy: beside its checkpoint (``seed0.pt`` -> ``seed0.finished/``),
    which the workflow already keeps outside the rule's outputs."""
    return Path(checkpoint).with_suffix(".finished")


def offer_finished_copy(folder: str | Path) -> list[tuple[Path, Path]]:
    """The finished copies in ``folder`` (``keep_finished_copy``), the last kept first, as runs to offer for
    adoption. One that cannot be read is not offered, nor are any when the folder cannot be read (a
    warning names it, and the run trains: a copy is a saving, never a source of error)."""
    folder = Path(folder)
    try:
        copies = _kept_copies(folder) if folder.is_dir() else []
    except OSError as exc:
        log.warning("the finished copies in %s are not offered: %s", folder, exc)
        return []
    offered = []
    for where in copies:
        model, history = where / FINISHED_MODEL, where / FINISHED_HISTORY
        try:
            load_checked(model, MODEL_FORMAT, metadata_only=True)
        except SonosegError as exc:
            log.warning("the finished copy %s is not offered: %s", model, exc)
            continue
        if history.is_file():
            offered.append((model, history))
    return offered


def adopt_identical_run(
    reusable: list[tuple[str | Path, str | Path]],
    fingerprint: str,
    model_out: str | Path,
    history_out: str | Path,
    dataset_fingerprint: str | None = None,
) -> dict | None:
    """Copy the finished run among ``reusable`` whose fingerprint is this training's (same network,
    seed, recipe, data and fast path: on a CPU training it again gives the same bytes, as the
    determinism tests show). None, and nothing written, when none matches.

    ``dataset_fingerprint``: the dataset this training's caches now come from. A run finished when the
    dataset was another (a file changed that neither its training nor its validation images read) is
    the same training; its model file then names the dataset now, and keeps the one it was trained
    under as ``provenance.dataset_fingerprint_at_training``."""
    for model, history in reusable:
        saved = load_checked(model, MODEL_FORMAT, metadata_only=True)
        if saved.get("fingerprint") != fingerprint:
            continue
        Path(model_out).parent.mkdir(parents=True, exist_ok=True)
        trained_on = dict(saved.get("provenance") or {})
        restamp = dataset_fingerprint not in (None, "unknown") and trained_on
        if restamp and trained_on.get("dataset_fingerprint") != dataset_fingerprint:
            try:
                whole = load_checked(model, MODEL_FORMAT)
            except SonosegError as exc:  # its facts read, its weights not: not adopted, the run trains
                log.warning("the finished run %s is not adopted: %s", model, exc)
                continue
            save_atomic({**whole, "provenance": restamped(trained_on, dataset_fingerprint)}, model_out)
        else:
            link_or_copy(model, Path(model_out), link=False)  # a candidate's files are outputs too (link_or_copy)
        Path(history_out).parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(history, Path(history_out), link=False)
        log.info("adopted %s: the same training (network, seed, recipe, data) finished there", model)
        return {"best_epoch": saved["best_epoch"], "best_val_loss": saved["best_val_loss"], "adopted": str(model)}
    if reusable:
        log.info(
            "none of the %d finished runs offered is this training: training it (a finished run is adopted only "
            "where network, seed, recipe, training and validation data, device, fast path, torch and the code a "
            "training runs all match: docs/workflow.md, 'A rerun that is the same training adopts it')",
            len(reusable),
        )
    return None


def restamped(trained_on: dict, dataset_fingerprint: str) -> dict:
    """A model file's provenance when its training is adopted under the dataset ``dataset_fingerprint``: the
    dataset now, and the one it was trained under as ``dataset_fingerprint_at_training`` (left out when the
    two are one again)."""
    at_training = trained_on.get("dataset_fingerprint_at_training", trained_on.get("dataset_fingerprint"))
    stamped = {key: value for key, value in trained_on.items() if key != "dataset_fingerprint_at_training"}
    stamped["dataset_fingerprint"] = dataset_fingerprint
    if at_training != dataset_fingerprint:
        stamped["dataset_fingerprint_at_training"] = at_training
    return stamped
