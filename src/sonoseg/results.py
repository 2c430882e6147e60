"""The per-image results of a study's runs, as the tables, figures and statistics read them: which
run, fold and seed a file belongs to, one training's label, every run's per-image metrics in long
form, and the patient table the statistics resample. Below the tables and the figures (both import
it; it imports neither)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from sonoseg.errors import SonosegError
from sonoseg.scoring import empty_side


def run_identity(path: str | Path) -> tuple[str, int, int]:
    """A run's file or folder -> (run, fold, seed): ``…/runs/<run>/fold<F>/seed<N>/<file or folder>`` (the
    workflow's layout), ``…/<run>/seed<N>/…`` or ``…/<run>/seed<N>[.csv]`` (fold 0)."""
    path = Path(path)
    for candidate in (path, path.parent):
        match = re.fullmatch(r"seed(\d+)", candidate.stem if candidate.suffix == ".csv" else candidate.name)
        if match:
            owner, fold = candidate.parent, 0
            folded = re.fullmatch(r"fold(\d+)", owner.name)
            if folded:
                owner, fold = owner.parent, int(folded[1])
            return owner.name, fold, int(match[1])
    raise SonosegError(f"{path}: expected a path of the form <run>/[fold<F>/]seed<N>/... (or <run>/seed<N>.csv)")


def method_and_seed(path: str | Path) -> tuple[str, int]:
    """A run's file or folder -> (run, seed) (run_identity without the fold)."""
    run, _, seed = run_identity(path)
    return run, seed


def training_label(fold, seed) -> str:
    """One training's label in the statistics' run column: its fold and seed. Seed s of fold 0 and seed s
    of fold 1 are two trainings, resampled apart (docs/statistics.md)."""
    return f"fold{fold}/seed{seed}"


def read_per_image(metrics_paths: list[str | Path]) -> pd.DataFrame:
    """Every per-image metrics file, with method, fold and seed columns, in the given method order."""
    frames = []
    for path in metrics_paths:
        method, fold, seed = run_identity(path)
        frame = pd.read_csv(path, dtype={"sample_id": str})
        if frame.empty:
            raise SonosegError(f"{path}: no evaluated test image")
        frames.append(frame.assign(method=method, fold=fold, seed=seed))
    if not frames:
        raise SonosegError("no per-image metrics given")
    return pd.concat(frames, ignore_index=True)


def lesion_images(per_image: pd.DataFrame) -> pd.DataFrame:
    """The rows of test images with a lesion: the tables' Dice and HD95 are means over these (images
    without one are summarised apart there), and so is every figure and statistic of Dice."""
    kept = per_image[~empty_side(per_image, "truth")]
    if kept.empty:
        raise SonosegError("no test image has a lesion: there is no Dice or HD95 to summarise")
    return kept


def patient_table(metrics_paths: list[str | Path], manifest_csv: str | Path) -> pd.DataFrame:
    """Every run's per-image metrics of the images with a lesion, in the long form the patient-level
    statistics read (sonoseg.stats): method (the run), run (the training: its fold and seed), sample_id, patient (the
    manifest's patient group: duplicates put patients in one group, which must move together) and
    the metrics."""
    from sonoseg import data

    per_image = lesion_images(read_per_image(metrics_paths))
    manifest = data.included(data.read_manifest(manifest_csv)).set_index("sample_id")
    missing = sorted(set(per_image["sample_id"]) - set(manifest.index))
    if missing:
        raise SonosegError(f"{manifest_csv}: evaluated images {missing[:5]} are not in the manifest")
    return per_image.assign(
        run=[training_label(f, s) for f, s in zip(per_image["fold"], per_image["seed"])],
        patient=per_image["sample_id"].map(manifest["group"]).astype(str),
    )
