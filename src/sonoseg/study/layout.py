"""Where a study keeps each file: the one place that knows the path templates of a study's folder
(results/<study>/). The workflow declares its inputs and outputs with them and the analysis finds a
run's files with them, so a run's identity (its name in the run sheet, fold and seed) is never read
back out of a path. Torch-free: the workflow imports it when it parses the Snakefile.

    runs/<run>/fold<F>/recipe.json              what one fold's trainings read
    runs/<run>/fold<F>/seed<N>/model.pt          one training (history.csv, predictions/, metrics.csv beside it)
    data/cache/<marks>/fold<F>/<part>.npz       the resized images of one marks condition, fold and part
    selection/<network>/fold<F>.json            a network's recipe choice in one fold
    selection/<network>/augmentation.json       its augmentation, chosen on the development external set
    runs.tsv, data/manifest.csv, data/split.csv the run sheet, every file of the dataset, the split
    networks/<run>.csv                          one run's summary
    per_image.csv.gz, trainings.csv             every run's results as one long table each (sonoseg.analysis.results)
    external/<dataset>/manifest.csv, split.csv  an external dataset (every image a test image), and
    external/<dataset>/cache/<marks>/test.npz   its images resized as a run's models read them
    runs/<run>/fold<F>/postprocess.json         the post-processing chosen on the fold's validation part
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

RESULTS = "results"  # every study's folder is results/<study>, relative to the workflow's folder


def study_folder(study: str) -> str:
    """A study's folder, where every path below is relative to (config key ``study``)."""
    return f"{RESULTS}/{study}"


# Templates relative to the study folder, with Snakemake-style wildcards.
TRAINING_ID = "{run}/fold{fold}/seed{seed}"  # one training, as its log and benchmark files are named too
FOLD = "runs/{run}/fold{fold}"
TRAINING = "runs/" + TRAINING_ID
RECIPE = FOLD + "/recipe.json"
CACHE = "data/cache/{marks}/fold{fold}/{part}.npz"
SELECTION = "selection/{network}/fold{fold}.json"
AUGMENTATION = "selection/{network}/augmentation.json"  # a network's augmentation, chosen on the development set
SUMMARY = "networks/{run}.csv"
CHECKPOINT = "checkpoints/{run}/fold{fold}/seed{seed}.pt"
SHEET = "runs.tsv"
SHEET_CONFIG = "config/run_sheet_{digest}.json"  # the config a run sheet was built from, named by its digest
LAYOUTS_CHECKED = "config/layouts_checked.json"  # each dataset's files and options when its layout last passed
MANIFEST = "data/manifest.csv"
SPLIT = "data/split.csv"
PER_IMAGE = "per_image.csv.gz"
POSTPROCESS = FOLD + "/postprocess.json"
EXTERNAL = "external/{dataset}"
EXTERNAL_MANIFEST = EXTERNAL + "/manifest.csv"
EXTERNAL_SPLIT = EXTERNAL + "/split.csv"
EXTERNAL_OVERLAP = EXTERNAL + "/overlap.csv"  # its images also in another dataset of the study
EXTERNAL_CACHE = EXTERNAL + "/cache/{marks}/test.npz"
TRAININGS = "trainings.csv"

# The files of one training, inside TRAINING.
MODEL, HISTORY, PREDICTIONS, METRICS = "model.pt", "history.csv", "predictions", "metrics.csv"


def training_template(run: str) -> str:
    """TRAINING with the run's part given (a name, or a pattern with other wildcards), fold and seed
    left as wildcards."""
    return TRAINING.format(run=run, fold="{fold}", seed="{seed}")


def training_dir(out: str | Path, run: str, fold, seed) -> str:
    return f"{out}/{TRAINING.format(run=run, fold=fold, seed=seed)}"


def training_file(out: str | Path, run: str, fold, seed, name: str) -> str:
    """One file (MODEL, HISTORY, PREDICTIONS, METRICS) of one training of a run."""
    return f"{training_dir(out, run, fold, seed)}/{name}"


def recipe(out: str | Path, run: str, fold) -> str:
    return f"{out}/{RECIPE.format(run=run, fold=fold)}"


def cache(out: str | Path, marks: str, fold, part: str) -> str:
    return f"{out}/{CACHE.format(marks=marks, fold=fold, part=part)}"


def postprocess(out: str | Path, run: str, fold) -> str:
    return f"{out}/{POSTPROCESS.format(run=run, fold=fold)}"


def external_manifest(out: str | Path, dataset: str) -> str:
    return f"{out}/{EXTERNAL_MANIFEST.format(dataset=dataset)}"


def external_split(out: str | Path, dataset: str) -> str:
    return f"{out}/{EXTERNAL_SPLIT.format(dataset=dataset)}"


def external_overlap(out: str | Path, dataset: str) -> str:
    return f"{out}/{EXTERNAL_OVERLAP.format(dataset=dataset)}"


def external_cache(out: str | Path, dataset: str, marks: str) -> str:
    return f"{out}/{EXTERNAL_CACHE.format(dataset=dataset, marks=marks)}"


def augmentation(out: str | Path, network: str) -> str:
    return f"{out}/{AUGMENTATION.format(network=network)}"


def selection(out: str | Path, network: str, fold) -> str:
    return f"{out}/{SELECTION.format(network=network, fold=fold)}"


def summary(out: str | Path, run: str) -> str:
    return f"{out}/{SUMMARY.format(run=run)}"


def sheet_config(out: str | Path, digest: str) -> str:
    return f"{out}/{SHEET_CONFIG.format(digest=digest)}"


def study_dir(path: str | Path, template: str) -> str:
    """The study folder a file made from ``template`` lies in (a rule finds it from one of its files)."""
    return str(Path(path).parents[len(Path(template).parts) - 1])


# Where a study keeps outputs named by a run (a folder, or a file named <run>.<ext>), by a table or page
# (<name>.<ext>), and by an external dataset (its folder): what left_by_other_configs looks through.
RUN_PLACES = ("runs", "networks", "report/curves")
TABLE_PLACES = ("tables", "report/tables")
EXTERNAL_PLACE = "external"
FOLD_OR_SEED = re.compile(r"(fold|seed)\d+")  # a run's fold and training folders (not seed0.finished/ and such)
LEFT_LISTED = "logs/left_by_other_configs.txt"  # every one of them, after each run that succeeds


def left_by_other_configs(
    out: str | Path, runs: Mapping[str, object], outputs: Iterable[str | Path], externals: Iterable[str] = ()
) -> list[str]:
    """What lies in the study folder ``out`` that its config no longer makes, relative to ``out``: a run's
    folder, summary or curves after its network or option (predict.tta: its ``--tta`` twins) left the config; a
    fold or a seed's training of a run still there after split.folds or seeds lost it; an external set's folder
    after the set was renamed or removed; a table or page no run of it fills. ``runs``: the run sheet's runs by
    name (each with its ``folds`` and ``seeds``), ``outputs``: every final output, ``externals``: the external
    sets' names. An earlier config made them; nothing reads them now, and nothing deletes them (a network put
    back adopts its trainings). A table's other formats (.md, .tex) go with its name."""
    out, externals = Path(out), set(externals)
    tables = {(path.parent, path.stem) for path in map(Path, outputs)}
    found = []
    for place in RUN_PLACES + TABLE_PLACES + (EXTERNAL_PLACE,):
        folder = out / place
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):  # a file manager's .DS_Store, an editor's: no output of a config
                continue
            name = entry.name if place in ("runs", EXTERNAL_PLACE) else entry.stem
            if place == EXTERNAL_PLACE:
                kept = name in externals
            elif place in RUN_PLACES:
                kept = name in runs
            else:
                kept = (folder, name) in tables
            if not kept:
                found.append(f"{place}/{entry.name}" + "/" * entry.is_dir())
            elif place == "runs":
                found += _trainings_left(entry, runs[name])
    return found


def _trainings_left(folder: Path, run) -> list[str]:
    """A run's fold folders and seed folders that its folds and seeds no longer name (relative to the study)."""
    left = []
    for fold in sorted(p for p in folder.iterdir() if p.is_dir() and FOLD_OR_SEED.fullmatch(p.name)):
        if not fold.name.startswith("fold") or fold.name.removeprefix("fold") not in run.folds:
            left.append(f"runs/{folder.name}/{fold.name}/")
            continue
        for seed in sorted(p for p in fold.iterdir() if p.is_dir() and FOLD_OR_SEED.fullmatch(p.name)):
            if not seed.name.startswith("seed") or seed.name.removeprefix("seed") not in run.seeds:
                left.append(f"runs/{folder.name}/{fold.name}/{seed.name}/")
    return left
