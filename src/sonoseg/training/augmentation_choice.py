"""The augmentation chosen by what generalizes (docs/method.md, "Augmentation chosen on the
development set"): a network whose ``ultrasound_augment`` is ``auto`` is trained once with the paper's
augmentation and once with the ultrasound intensity augmentation added (the run sheet's candidates
``<network>--augment-paper`` and ``<network>--augment-ultrasound``, the recipe selection's seed, every
fold), each candidate segments the development external set, and the option with the higher mean Dice
there, by patient, is adopted for the network's runs. Only the development set is read: the study's
own test images and the held-out external sets choose nothing. The network's run with the candidates'
seed adopts the chosen candidate's model, as the recipe selection's does.

Torch-free: it reads per-image metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sonoseg.errors import SonosegError

OPTIONS = {"paper": False, "ultrasound": True}  # candidate name -> its ultrasound_augment
CRITERION = "higher mean Dice on the development external set (images with a lesion, by patient; every fold's model)"


def candidate_dice(metrics: list[str | Path], manifest_csv: str | Path) -> pd.Series:
    """One candidate's Dice per patient of the development set: the mean over its folds' models and
    the patient's images with a lesion."""
    from sonoseg.analysis.results import manifest_columns, read_metrics
    from sonoseg.analysis.scoring import empty_side

    patients = manifest_columns(manifest_csv)["patient"]
    frames = []
    for path in metrics:
        frame = read_metrics(path)
        unknown = sorted(set(frame["sample_id"]) - set(patients.index))
        if unknown:
            raise SonosegError(f"{path}: images {unknown[:5]} are not in the development set's manifest {manifest_csv}")
        frames.append(frame.assign(patient=frame["sample_id"].map(patients)))
    table = pd.concat(frames, ignore_index=True)
    table = table[~empty_side(table, "truth")]
    if table.empty:
        raise SonosegError(f"{manifest_csv}: the development set has no image with a lesion to choose by")
    return (
        table.groupby("sample_id")
        .agg(dice=("dice", "mean"), patient=("patient", "first"))
        .groupby("patient")["dice"]
        .mean()
    )


def choose(network: str, metrics: dict[str, list[str | Path]], manifest_csv: str | Path, dataset: str) -> dict:
    """The choice file's content: the option whose mean Dice by patient is higher (a tie keeps the
    paper's), with each option's Dice and the paired difference."""
    unknown = set(metrics) - set(OPTIONS)
    if unknown or not metrics:
        raise SonosegError(f"augmentation choice: candidates {sorted(metrics)}; expected {sorted(OPTIONS)}")
    per_patient = pd.DataFrame({name: candidate_dice(paths, manifest_csv) for name, paths in metrics.items()})
    means = {name: float(per_patient[name].mean()) for name in per_patient}
    best = max(means, key=lambda name: (means[name], name == "paper"))
    difference = (per_patient["ultrasound"] - per_patient["paper"]) if len(per_patient.columns) == 2 else None
    return {
        "network": network,
        "chosen": {"ultrasound_augment": OPTIONS[best]},
        "chosen_name": best,
        "criterion": CRITERION,
        "dataset": dataset,
        "patients": int(len(per_patient)),
        "dice": means,
        "paired_difference_ultrasound_minus_paper": None if difference is None else float(difference.mean()),
    }


def write_choice(choice: dict, out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(choice, indent=2, sort_keys=True) + "\n")


def read_record(path: str | Path, keys: tuple[str, ...] = ("chosen", "chosen_name", "dice", "dataset", "network")):
    """An augmentation choice file whole, as choose writes it (by default: the chosen settings and the option's
    name, each option's Dice on the development set, the network that chose), refused unless it has ``keys``."""
    try:
        record = json.loads(Path(path).read_text())
        missing = [key for key in keys if key not in record]
    except (OSError, ValueError, TypeError) as exc:
        raise SonosegError(f"{path}: not an augmentation choice ({exc!r})") from None
    if missing:
        raise SonosegError(f"{path}: not an augmentation choice (no {', '.join(missing)})")
    return record


def read_choice(path: str | Path) -> dict:
    """The chosen settings of an augmentation choice file."""
    return read_record(path, ("chosen",))["chosen"]
