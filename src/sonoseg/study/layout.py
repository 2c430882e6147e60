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

from collections.abc import Iterable
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


# Where a study keeps outputs named by a run (a folder, or a file named <run>.<ext>) and by a table or page
# (<name>.<ext>): what left_by_other_configs looks through.
RUN_PLACES = ("runs", "networks", "report/curves")
TABLE_PLACES = ("tables", "report/tables")


def left_by_other_configs(out: str | Path, runs: Iterable[str], outputs: Iterable[str | Path]) -> list[str]:
    """What lies in the study folder ``out`` that its config no longer makes (``runs``: the run sheet's runs,
    ``outputs``: every final output), relative to ``out``: a run's folder, summary or curves after its network,
    seed or option (predict.tta: its ``--tta`` twins) left the config, a table or page no run of it fills. An
    earlier config made them; nothing reads them now, and nothing deletes them (a network put back adopts its
    trainings). A table's other formats (.md, .tex) go with its name."""
    out, runs = Path(out), set(runs)
    tables = {(path.parent, path.stem) for path in map(Path, outputs)}
    found = []
    for place in RUN_PLACES + TABLE_PLACES:
        folder = out / place
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            name = entry.name if place == "runs" else entry.stem
            kept = name in runs if place in RUN_PLACES else (folder, name) in tables
            if not kept:
                found.append(f"{place}/{entry.name}" + "/" * entry.is_dir())
    return found
