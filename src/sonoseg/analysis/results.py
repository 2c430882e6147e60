"""A study's results as data: one long table of every run's per-image metrics, and one of every
training, which every table, figure and statistic of the study reads (the collect stage writes them:
``per_image.csv.gz`` and ``trainings.csv``).

``per_image`` has one row per run x training (fold, seed) x test image: the run sheet's columns (run,
kind, method, marks, model_from), the training's fold, seed and label (``training``: fold<F>/seed<N>)
and the learning rate and weight decay it trained with, the image (sample_id, its patient group as
``patient``, its ``view``, the manifest's metadata as ``meta_*`` columns) and every metric of
sonoseg.analysis.evaluate.
Each per-image row also says what the trainings behind its models computed on (``training_precision``,
``training_device``, ``training_processor``) and the sonoseg commit that trained them (``training_commit``:
the tables' captions name it beside the commit that wrote them): as trainings' columns below, joined over an
ensemble's members; empty for a floor. ``prediction_commit`` is the sonoseg commit that made and scored the row's
mask (the predict job's: a rerun after an upgrade keeps the predictions whose inputs did not change, so one table can
hold two commits' predictions, and its caption then says so); empty for predictions from before the column.
``trainings`` has one row per training: epochs, the kept epoch, optimizer steps, what ended it (the
stop rule or the cap) and where its time went; what it computed on: ``precision`` (the fast path, e.g.
``bf16 + channels_last`` or ``fp32``), ``device`` (``cpu``, ``cuda:0``) and ``processor`` (the CPU's model
name, or the GPU's) and ``commit`` (the sonoseg commit that trained it), each from its history's epochs (the
distinct values joined with `` / `` in the order they first appear, where a training resumed on another
machine, or at another commit, ran on two; empty for a history written before the columns); and
``same_training_as``: for a training that is another row's training, adopted
rather than trained (the network's run with the candidates' seed adopts the chosen recipe-selection or
augmentation-choice candidate, sonoseg.training.reuse), the run that trained it; empty otherwise. Count
trainings, or sum their seconds, over the rows where it is empty.

A run's files are found from the run sheet through sonoseg.study.layout: nothing here reads an identity
out of a path or relies on the order of a list of files. A new swept dimension is a run-sheet
column, and a column here. Below the tables and the figures (both import it; it imports neither);
torch-free.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from sonoseg.analysis.scoring import empty_side, kept_row
from sonoseg.errors import SonosegError
from sonoseg.study import layout

# The run sheet's columns every row of per_image carries (sonoseg.study.runsheet.Run).
SHEET_COLUMNS = ["run", "kind", "method", "marks", "model_from", "tta", "members", "dataset"]
IN_DOMAIN = "in-domain"  # the dataset column of the study's own test images (external runs name theirs)
TRAINING_SHEET_COLUMNS = SHEET_COLUMNS[:4]  # a training's row in trainings.csv: its own run's
# The recipe values a training used (chosen per fold when they are auto), from its recipe.json.
RECIPE_COLUMNS = ["learning_rate", "weight_decay"]
# The history's wall-time columns summed over a training's epochs (sonoseg.training.train.TIMING_COLUMNS).
TIME_COLUMNS = ["seconds", "train_seconds", "bn_seconds", "val_seconds"]
# What each epoch ran on, in its history's columns of these names (sonoseg.training.train writes them), and the
# sonoseg commit that ran it: per training, the distinct values joined.
COMPUTE_COLUMNS = ["precision", "device", "processor", "commit"]
COMPUTE_SEPARATOR = " / "
SAME_TRAINING = "same_training_as"  # trainings.csv: the run whose training this row's is ('' for its own)


def training_label(fold, seed) -> str:
    """One training's label in the statistics' run column: its fold and seed. Seed s of fold 0 and seed s
    of fold 1 are two trainings, resampled apart (docs/statistics.md)."""
    return f"fold{fold}/seed{seed}"


def read_table(
    path: str | Path, what: str, required: Iterable[str], non_empty: Iterable[str] = (), **read_csv
) -> pd.DataFrame:
    """A table the study wrote (``what``: "run sheet", "subgroup table"), read with ``read_csv``'s options.
    Named so: an unreadable file (a compressed one cut short, an empty one), one without a ``required``
    column, and one cut short mid-row (pandas fills what a last line leaves out with nothing, and the
    statistics went on without a word): a last line not ended (a value cut short reads as another), or a
    row without a value in a ``non_empty`` column."""
    damaged = f"{path}: the {what} is cut short or damaged; remake it (delete it and rerun)"
    try:
        text = _decompressed(path)  # read once: parsed from memory, and its last line checked there
        table = pd.read_csv(path if text is None else io.BytesIO(text), **read_csv)
        last_line = _unended_line(text)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SonosegError(f"{damaged} (reading it: {exc})") from None
    missing = set(required) - set(table.columns)
    if missing:
        raise SonosegError(f"{path}: not a {what} (no column {', '.join(sorted(missing))})")
    if last_line is not None:  # a value cut short reads as another value (7272 as 7): the line's end is the check
        raise SonosegError(
            f"{damaged} (its last line is not ended: {last_line[-40:]!r}; every table sonoseg writes ends its last "
            "line, and one written by hand may end it too)"
        )
    blank = table[list(non_empty)].isna().any(axis=1)
    if blank.any():
        lines = ", ".join(str(int(row) + 2) for row in table.index[blank][:5])  # the file's lines: the header is 1
        raise SonosegError(f"{damaged} (line(s) {lines} lack a value of {', '.join(non_empty)})")
    return table


# The compressions a results table's name may ask for, as pandas reads and writes them (the name's end).
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
COMPRESSIONS = {".gz": {"method": "gzip", "mtime": 0}, ".bz2": "bz2", ".xz": "xz", ".zip": "zip", ".zst": "zstd"}


def _decompressed(path: str | Path) -> bytes | None:
    """A table file's text as bytes, decompressed as its name says (OPENERS); None for a compression pandas
    alone reads (zip, zstd, tar), which is then read from the path."""
    suffix = Path(path).suffix.lower()
    if suffix in (".zip", ".zst", ".tar"):
        return None
    with OPENERS.get(suffix, open)(path, "rb") as handle:
        return handle.read()


def _unended_line(text: bytes | None) -> str | None:
    """A table's last line, when it does not end with a line break (a file cut short mid-line, or written
    without one at its end); None when it does, or when the text is not at hand."""
    if not text or text.endswith(b"\n"):
        return None
    return text.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace").rstrip("\r")


def read_sheet(path: str | Path) -> list[dict]:
    """The run sheet as the workflow writes it (runs.tsv; ``sonoseg runs``): one dict per run."""
    required = ("name", "kind", "method", "seeds", "folds")
    return read_table(path, "run sheet", required, sep="\t", dtype=str, keep_default_na=False).to_dict("records")


def sheet_rows(sheet: list[dict], names: Iterable[str]) -> list[dict]:
    """The rows of the named runs, in the order named."""
    by_name = {row["name"]: row for row in sheet}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise SonosegError(f"runs {unknown[:5]} are not in the run sheet; it has {', '.join(by_name)}")
    return [by_name[name] for name in names]


def trainings_of(row: dict) -> list[tuple[str, str]]:
    """A run's trainings as (fold, seed), fold by fold."""
    return [(fold, seed) for fold in str(row["folds"]).split() for seed in str(row["seeds"]).split()]


def recipe_values(out: str | Path, row: dict, fold: str) -> dict:
    """The learning rate and weight decay a run's models trained with in one fold (a reliance run's:
    those of the run whose models it tests); empty for a run without training."""
    owner = row.get("model_from") or (row["name"] if row.get("recipe") else "")
    if not owner:
        return dict.fromkeys(RECIPE_COLUMNS)
    path = Path(layout.recipe(out, owner, fold))
    try:
        recipe = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SonosegError(f"{path}: cannot read the recipe of run {owner!r} fold {fold} ({exc})") from None
    return {column: recipe.get(column) for column in RECIPE_COLUMNS}


def read_metrics(path: str | Path) -> pd.DataFrame:
    """One training's per-image metrics (sonoseg.analysis.evaluate's metrics.csv)."""
    path = Path(path)
    if not path.is_file():
        raise SonosegError(f"{path}: per-image metrics missing (run the study, or this run's evaluate job)")
    # Refused by name when cut short mid-row (a kill, a full disk, a copy stopped), as the long table is.
    frame = read_table(
        path,
        "per-image metrics",
        ("sample_id", "dice"),
        non_empty=("sample_id", "dice"),
        dtype={"sample_id": str, "prediction_commit": str},
        keep_default_na=False,
        na_values=[""],
    )
    if frame.empty:
        raise SonosegError(f"{path}: no evaluated test image")
    return frame


def manifest_columns(manifest_csv: str | Path) -> pd.DataFrame:
    """Per sample_id: its patient group (``patient``: duplicates put patients in one group, which must
    move together), its view and its class (BUSI's benign, malignant or normal folder; so that Dice
    breaks down by view or class without the manifest), its image file (``image``, under the folder all its
    dataset's images lie in: a row leads back to its file, which the sample id, cleaned of spaces and
    scripts, may not) and the manifest's metadata columns."""
    from sonoseg import data

    manifest = data.included(data.read_manifest(manifest_csv))
    metadata = [c for c in manifest.columns if c.startswith("meta_")]
    # reindex: a manifest without a view or class column (an external set's, written by hand) gives its
    # images none.
    kept = manifest.reindex(columns=["sample_id", "group", "view", "class", "image", *metadata])
    kept["image"] = _under_shared_folder(kept["image"])
    return kept.rename(columns={"group": "patient"}).set_index("sample_id")


def _under_shared_folder(images: pd.Series) -> pd.Series:
    """Image paths under the folder they all lie in (``benign/benign (1).png`` for a BUSI root): they lead back
    to each file, and a shared table names no machine's folders (the manifest's paths are absolute for a
    user's own data). As they are where a path is missing or they share no folder."""
    given = images.dropna().astype(str)
    if given.empty:
        return images
    try:
        shared = os.path.commonpath([os.path.dirname(path) for path in given])
    except ValueError:  # absolute and relative paths mixed, or none shared on Windows' drives
        return images
    return images.map(lambda path: Path(os.path.relpath(path, shared)).as_posix() if isinstance(path, str) else path)


def training_identity(out: str | Path, row: dict, fold: str, seed: str, columns=SHEET_COLUMNS) -> dict:
    """Who one training is, as the long tables give it: the run sheet's ``columns`` of its run, its fold,
    seed and label, and the recipe values it trained with."""
    sheet = {
        "run": row["name"],
        "kind": row["kind"],
        "method": row["method"],
        "marks": row.get("marks", ""),
        "model_from": row.get("model_from", ""),
        "tta": str(row.get("tta", "")).lower() == "true",
        "members": str(row.get("members", "")),  # an ensemble's seeds (its one seed: the first)
        "dataset": row.get("dataset") or IN_DOMAIN,
    }
    return {
        **{column: sheet[column] for column in columns},
        "fold": int(fold),
        "seed": int(seed),
        "training": training_label(fold, seed),
        **recipe_values(out, row, fold),
    }


def collect_per_image(
    out: str | Path, rows: list[dict], manifest_csv: str | Path, external: dict[str, str | Path] | None = None
) -> pd.DataFrame:
    """The long per-image table of the given runs (run sheet rows), in their order; each image joined
    with its own dataset's manifest (``external``: an external dataset's name -> its manifest)."""
    manifests = {IN_DOMAIN: manifest_csv, **(external or {})}
    read: dict[str, pd.DataFrame] = {}
    histories: dict[Path, pd.DataFrame | None] = {}  # each history read once, for the compute columns
    frames = []
    for row in rows:
        dataset = row.get("dataset") or IN_DOMAIN
        if dataset not in manifests:
            raise SonosegError(f"collect: run {row['name']!r} tests on {dataset!r}, whose manifest was not given")
        if dataset not in read:
            read[dataset] = manifest_columns(manifests[dataset])
        manifest = read[dataset]
        for fold, seed in trainings_of(row):
            path = Path(layout.training_file(out, row["name"], fold, seed, layout.METRICS))
            metrics = read_metrics(path)
            missing = sorted(set(metrics["sample_id"]) - set(manifest.index))
            if missing:
                raise SonosegError(f"{path}: evaluated images {missing[:5]} are not in {manifests[dataset]}")
            metrics = metrics.join(manifest, on="sample_id")
            compute = models_compute(out, models_behind(row, fold, seed), histories)
            frames.append(metrics.assign(**training_identity(out, row, fold, seed), **compute))
    if not frames:
        raise SonosegError("collect: no run with per-image metrics was named")
    per_image = pd.concat(frames, ignore_index=True)
    first = [*SHEET_COLUMNS, "fold", "seed", "training", *RECIPE_COLUMNS, "sample_id", "patient", "view", "class"]
    return per_image[first + [c for c in per_image.columns if c not in first]]


def models_behind(row: dict, fold: str, seed: str) -> list[tuple[str, str, str]]:
    """The trainings (run, fold, seed) whose models made a run's predictions under one training label: its
    own; for a run testing another's models (flip-averaged, ensemble, external, reliance: ``model_from``)
    that run's training of the same fold and seed, or each member's (an ensemble's seeds, and on an
    external set every fold's); none for a floor."""
    if row.get("recipe"):
        return [(row["name"], fold, seed)]
    source = row.get("model_from") or ""
    if not source:
        return []
    seeds = str(row.get("members") or "").split() or [seed]
    folds = str(row.get("member_folds") or "").split() or [fold]
    return [(source, f, s) for f in folds for s in seeds]


def models_compute(out: str | Path, trainings: list[tuple[str, str, str]], histories: dict) -> dict:
    """``training_precision``, ``training_device``, ``training_processor``, ``training_commit`` of a per-image
    row: what the trainings behind its models computed on, and at which commit (compute_values over their
    histories, joined where they differ); empty for a floor, for histories written before the columns, and
    for a history that is not there (collect_trainings, which the collect stage runs too, refuses a trained
    run's missing history).
    ``histories``: a cache."""
    values: dict[str, list[str]] = {column: [] for column in COMPUTE_COLUMNS}
    for run, fold, seed in trainings:
        path = Path(layout.training_file(out, run, fold, seed, layout.HISTORY))
        if path not in histories:
            histories[path] = (
                pd.read_csv(path, usecols=lambda c: c in COMPUTE_COLUMNS, dtype=str) if path.is_file() else None
            )
        if histories[path] is not None:
            for column in COMPUTE_COLUMNS:
                values[column] += compute_values(histories[path], column).split(COMPUTE_SEPARATOR)
    return {
        f"training_{column}": COMPUTE_SEPARATOR.join(dict.fromkeys(v for v in found if v))
        for column, found in values.items()
    }


def collect_trainings(out: str | Path, rows: list[dict]) -> pd.DataFrame:
    """One row per training of the given runs (those with training): how long it ran, what ended it,
    what it computed on, and (``same_training_as``) whether it is another row's training, adopted."""
    histories: dict[tuple[str, str, str], bytes] = {}  # (run, fold, seed) -> its history file's bytes
    keys, records = [], []
    for row in rows:
        if not row.get("recipe"):
            continue
        for fold, seed in trainings_of(row):
            path = Path(layout.training_file(out, row["name"], fold, seed, layout.HISTORY))
            if not path.is_file():
                raise SonosegError(f"{path}: training history missing (run the study, or this run's train job)")
            keys.append((row["name"], fold, seed))
            histories[keys[-1]] = text = path.read_bytes()
            history = pd.read_csv(io.BytesIO(text), dtype=dict.fromkeys(COMPUTE_COLUMNS, str))
            if history.empty:
                raise SonosegError(f"{path}: a training history without an epoch")
            last = history.iloc[-1]
            records.append(
                {
                    **training_identity(out, row, fold, seed, TRAINING_SHEET_COLUMNS),
                    "epochs": len(history),
                    "kept_epoch": int(kept_row(history)["epoch"]),
                    "steps": last.get("steps", pd.NA),
                    "ended_by": "" if pd.isna(last.get("ended_by")) else last["ended_by"],
                    **{column: round(float(history[column].sum()), 3) for column in TIME_COLUMNS if column in history},
                    **{column: compute_values(history, column) for column in COMPUTE_COLUMNS},
                }
            )
    adopted = adopted_trainings(rows, histories)
    for key, record in zip(keys, records, strict=True):
        record[SAME_TRAINING] = adopted.get(key, "")
    return pd.DataFrame(records)


def trained_at(per_image: pd.DataFrame | None) -> str:
    """The sonoseg commits that trained the models behind a long table's rows (``training_commit``), as
    ``trained_by`` names them; '' where none is recorded (floors alone, a study from before the column)."""
    return trained_by(per_image, "commit", ", ")


UNRECORDED = "unrecorded (made before sonoseg recorded it)"  # a prediction's commit, from before prediction_commit


def predicted_at(per_image: pd.DataFrame | None) -> str:
    """The sonoseg commits that made a long table's predictions and scored them (``prediction_commit``), as
    ``trained_by`` names a column's values by run; '' where none is recorded (a study from before the column).
    A rerun after an upgrade redoes only the predictions whose inputs changed (an external set added: its own),
    so one table's rows can come from two commits' prediction code; the caption then says so."""
    if per_image is None or "prediction_commit" not in per_image:
        return ""
    made = per_image["prediction_commit"].fillna("").astype(str)
    if not made.ne("").any():  # a study from before the column: nothing to say
        return ""
    # Rows kept from before the column beside recorded ones (the upgrade that brought it): said, not skipped.
    marked = per_image.assign(prediction_commit=made.where(made != "", UNRECORDED))
    return trained_by(marked, "commit", ", ", prefix="prediction", by_model=False)


def trained_in(per_image: pd.DataFrame | None) -> str:
    """The precision(s) the trainings behind a long table's rows computed in (``training_precision``: "bf16 +
    channels_last", "fp32"; a training resumed in another one has both), as ``trained_by`` names them, a run's
    several joined by " / "; '' where none is recorded (floors alone, a study from before the column)."""
    return trained_by(per_image, "precision", COMPUTE_SEPARATOR)


def trained_by(
    per_image: pd.DataFrame | None, column: str, joiner: str, prefix: str = "training", by_model: bool = True
) -> str:
    """A long table's ``training_<column>`` said by the runs that trained (a flip-averaged or external run
    names its trainings' run in ``model_from``, and counts as that run; a ladder step, an augmentation
    candidate or a marks-kept twin trains its own): each such run's distinct values (its cells split, in the
    order they first appear, joined by ``joiner``); where they differ, the value most share first and the
    others with their runs, "bf16 + channels_last (malunet: fp32)", so a caption over a study whose MALUNet
    trained in fp32, or whose one retrained network trained at a newer commit, says which is which. Runs
    without a value (floors) are left out; '' where none has one. ``prefix``: the column read is
    ``<prefix>_<column>``; ``by_model`` False: each run named for itself (a prediction is its own run's job)."""
    if per_image is None or f"{prefix}_{column}" not in per_image:
        return ""
    trained = per_image["run"].astype(str)
    if by_model and "model_from" in per_image:
        source = per_image["model_from"].fillna("").astype(str)
        trained = source.where(source != "", trained)
    runs_by_value: dict[str, list[str]] = {}
    for run, cells in per_image[f"{prefix}_{column}"].groupby(trained.to_numpy(), sort=False):
        values = _split_values(cells)
        if values:
            runs_by_value.setdefault(joiner.join(values), []).append(str(run))
    if len(runs_by_value) < 2:
        return next(iter(runs_by_value), "")
    ordered = sorted(runs_by_value.items(), key=lambda item: -len(item[1]))  # stable: ties keep first seen
    (common, _), others = ordered[0], ordered[1:]
    exceptions = "; ".join(", ".join(runs) + f": {value}" for value, runs in others)
    return f"{common} ({exceptions})"


def _split_values(cells: pd.Series) -> list[str]:
    """The distinct values of compute_values-joined cells, split, in the order they first appear."""
    found = cells.dropna().astype(str)
    return list(dict.fromkeys(value for cell in found for value in cell.split(COMPUTE_SEPARATOR) if value))


def source_line(manifest_csv: str | Path | None, per_image: pd.DataFrame | None = None) -> str:
    """The caption's provenance the study's tables end with (Tables 1 and 2, the ladder, generalization,
    subgroups): the main dataset's fingerprint from its manifest, the sonoseg version and commit, and the
    commit(s) that trained the long table's models and the precision(s) they trained in; '' without a manifest."""
    if not manifest_csv:
        return ""
    from sonoseg.data import provenance

    return caption_from(provenance.read_manifest_provenance(manifest_csv)["dataset_fingerprint"], per_image)


def caption_from(dataset_fingerprint: str, per_image: pd.DataFrame | None = None) -> str:
    """source_line for a dataset's fingerprint: the data, the sonoseg writing the table, the commits and precisions
    that trained the long table's models and, where other code than the writer's made its predictions, that code."""
    from sonoseg.data import provenance

    return provenance.caption_line(
        dataset_fingerprint, trained_at(per_image), trained_in(per_image), predicted_at(per_image)
    )


def compute_values(history: pd.DataFrame, column: str) -> str:
    """A compute column of a training's history (precision, device, processor) as one cell: its distinct
    values in the order they first appear, joined (a training resumed on another machine ran on two);
    '' for a history written before the column (or epochs of a resumed run from before it: left out)."""
    if column not in history:
        return ""
    return COMPUTE_SEPARATOR.join(dict.fromkeys(value for value in history[column].dropna() if value))


def offered_candidates(run, runs: list) -> list:
    """The runs among ``runs`` whose finished trainings ``run``'s training (of the candidates' seed) is
    offered to adopt (sonoseg.training.reuse): its recipe selection's candidates (kind ``candidate`` of the
    network it is ``selected_from``), then, for a network choosing its own augmentation
    (``augmentation_from`` its own method, not a probe network's), the augmentation choice's candidates
    (kind ``augmentation``). Runs (sonoseg.study.runsheet.Run) or the run sheet's rows (dicts, as runs.tsv
    gives them) alike: the workflow offers them (common.smk, get_training_inputs) and the collect stage finds
    who trained what (adopted_trainings). Here, not in the run sheet's module, which the training imports:
    this module must not import it back."""

    def get(item, key: str) -> str:
        return (item.get(key) if isinstance(item, dict) else getattr(item, key)) or ""

    selected_from, augmentation_from = get(run, "selected_from"), get(run, "augmentation_from")
    chosen = [r for r in runs if get(r, "kind") == "candidate" and selected_from and get(r, "method") == selected_from]
    if augmentation_from and augmentation_from == get(run, "method"):  # its own candidates, not a probe's
        chosen += [r for r in runs if get(r, "kind") == "augmentation" and get(r, "method") == augmentation_from]
    return [r for r in chosen if get(r, "name") != get(run, "name")]


def adopted_trainings(rows: list[dict], histories: dict[tuple[str, str, str], bytes]) -> dict[tuple, str]:
    """(run, fold, seed) -> the run that trained it, for each training of ``rows`` that adopted an offered
    candidate's finished training instead of training (sonoseg.training.reuse.adopt_identical_run: the
    same fingerprint). The fingerprint is in model.pt, which this torch-free module does not read; the
    adoption copies the candidate's history byte for byte, while a training that ran writes its own wall
    times: a history identical to an offered candidate's is that candidate's training. Followed to the
    training that ran, should a candidate itself have adopted one offered to it (an augmentation
    candidate is offered its network's recipe-selection candidates)."""
    direct = {}
    for row in rows:
        candidates = [c for c in offered_candidates(row, rows) if c.get("recipe")] if row.get("recipe") else []
        for fold, seed in trainings_of(row) if candidates else []:
            mine = histories[row["name"], fold, seed]
            for candidate in candidates:
                if histories.get((candidate["name"], fold, seed)) == mine:
                    direct[row["name"], fold, seed] = candidate["name"]
                    break
    adopted = {}
    for (run, fold, seed), source in direct.items():
        seen = {run}
        while (source, fold, seed) in direct and source not in seen:
            seen.add(source)
            source = direct[source, fold, seed]
        adopted[run, fold, seed] = source
    return adopted


def markdown_row(cells: Iterable) -> str:
    """One row of a Markdown table, each cell's "|" escaped (a network's label may hold one: "Mini | v3" split
    its row into an extra column) and its line breaks made spaces."""
    shown = (str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells)
    return "| " + " | ".join(shown) + " |"


def markdown_header(header: list[str]) -> list[str]:
    """A Markdown table's header row and the rule under it."""
    return [markdown_row(header), "|" + "---|" * len(header)]


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """A results table as CSV, compressed as its name ends (.gz: gzip with its header without a time, so that
    the same rows give the same bytes, and a checksum says whether a rerun changed anything; .xz, .bz2).
    Made in memory and written beside its place, then renamed over it (provenance.write_bytes_atomic): a full
    disk or a kill never leaves a table cut short where a later step reads it."""
    from sonoseg.data.provenance import write_bytes_atomic

    path = Path(path)
    buffer = io.BytesIO()
    table.to_csv(buffer, index=False, compression=COMPRESSIONS.get(path.suffix.lower()))
    data = buffer.getvalue()
    if path.suffix.lower() == ".gz":
        data = _named_gzip(data, path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path.resolve(), data)  # through a link to the file it names
    except OSError as exc:
        raise SonosegError(f"{path}: could not be written ({exc.strerror or exc})") from None


def _named_gzip(packed: bytes, name: str) -> bytes:
    """A gzip stream pandas wrote to memory, with the file name in its header as Python's gzip writes it to a
    file of that name (latin-1, without .gz; none where it is not latin-1): the bytes pandas wrote to the file
    itself before tables were made in memory, so that a checksum compares across versions."""
    try:
        stem = name.encode("latin-1")
    except UnicodeEncodeError:
        return packed
    stem = stem[:-3] if stem.endswith(b".gz") else stem
    if not stem or packed[3] & 0x08:  # FLG.FNAME already set
        return packed
    return packed[:3] + bytes([packed[3] | 0x08]) + packed[4:10] + stem + b"\0" + packed[10:]


def written_caption(table_csv: str | Path) -> str:
    """The caption the table stage wrote at the head of the table's Markdown twin (its first paragraph,
    bold or not; every table's ends with its provenance: sonoseg.data.provenance.caption_line); '' when
    the table has no Markdown twin."""
    markdown = Path(table_csv).with_suffix(".md")
    first = markdown.read_text().split("\n\n", 1)[0].strip() if markdown.is_file() else ""
    return first.replace("**", "").strip()  # Markdown's bold, wherever a caption puts it (the page escapes text)


def written_source(table_csv: str | Path) -> str:
    """The provenance a table's Markdown twin ends its caption with (the data, the code, the trainings:
    provenance.caption_line), '' where it has none (no twin, or one from before captions named it)."""
    caption = written_caption(table_csv)
    start = caption.find("Data fingerprint ")
    return caption[start:].strip() if start >= 0 else ""


def read_per_image(path: str | Path, runs: Iterable[str] | None = None) -> pd.DataFrame:
    """The collected per-image table (per_image.csv.gz), or the rows of the named runs in that order.
    ``view`` and ``class`` are read as text, as the manifest gives them (view 1, not 1.0 where some image
    has none), and so are the training columns (a commit of digits alone, 123456789012, is not a number); a
    table collected before it carried them has none and is read as it is."""
    text = {
        "sample_id": str,
        "patient": str,
        "view": str,
        "class": str,
        "run": str,
        "model_from": str,
        "image": str,
        **{f"training_{column}": str for column in COMPUTE_COLUMNS},
        "prediction_commit": str,
    }
    required = ("run", "fold", "seed", "training", "sample_id", "patient", "dice")
    # Only an empty cell is missing: a sample id of "NA" or "None" (an image NA.png) is an id (na_values).
    per_image = read_table(
        path,
        "per-image results table",
        required,
        non_empty=("run", "sample_id", "dice"),
        dtype=text,
        keep_default_na=False,
        na_values=[""],
    )
    # A table of one's own rows may lack it (a KeyError before): no row then runs another run's models.
    per_image["model_from"] = per_image["model_from"].fillna("") if "model_from" in per_image else ""
    return per_image if runs is None else select_runs(per_image, runs, source=path)


def select_runs(per_image: pd.DataFrame, runs: Iterable[str], source: str | Path = "per_image") -> pd.DataFrame:
    """The rows of the named runs, run by run in the order named."""
    runs = list(dict.fromkeys(runs))
    absent = [run for run in runs if run not in set(per_image["run"])]
    if absent:
        raise SonosegError(f"{source}: no results for runs {absent[:5]}")
    order = {run: index for index, run in enumerate(runs)}
    kept = per_image[per_image["run"].isin(order)]
    return kept.iloc[kept["run"].map(order).argsort(kind="stable")].reset_index(drop=True)


def as_compared(per_image: pd.DataFrame) -> pd.DataFrame:
    """The long table as the statistics compare it (sonoseg.analysis.stats): ``method`` is the compared run (the
    sheet's run name), ``run`` one of its trainings (``training``), ``patient`` the resampled unit."""
    return per_image.drop(columns=["method", "run"]).assign(method=per_image["run"], run=per_image["training"])


def lesion_images(per_image: pd.DataFrame) -> pd.DataFrame:
    """The rows of test images with a lesion: the tables' Dice and HD95 are means over these (images
    without one are summarised apart there), and so is every figure and statistic of Dice."""
    kept = per_image[~empty_side(per_image, "truth")]
    if kept.empty:
        raise SonosegError("no test image has a lesion: there is no Dice or HD95 to summarise")
    return kept


def patient_table(per_image: pd.DataFrame, runs: Iterable[str] | None = None) -> pd.DataFrame:
    """The images with a lesion of the named runs (all when None), compared (as_compared): the long
    form the patient-level statistics resample."""
    chosen = per_image if runs is None else select_runs(per_image, runs)
    return as_compared(lesion_images(chosen))
