"""Patient-level split: every sample of a split group (a patient, or patients sharing duplicate
images) lands in the same part, so no lesion is seen in training and tested again."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg.data.options import PARTS
from sonoseg.errors import SonosegError

# The fewest images each part of a fold may hold: a training needs two training images (BatchNorm's statistics
# over a batch) and one validation image, a test one test image (sonoseg.training.train checks it again).
FEWEST_IMAGES = {"train": 2, "val": 1, "test": 1}

log = logging.getLogger(__name__)


def group_counts(n_groups: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Groups per part: validation and test rounded, training takes the rest (348 -> 208/70/70)."""
    if abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise SonosegError(f"split.fractions {list(fractions)} must be three non-negative numbers summing to 1")
    n_val = int(round(n_groups * fractions[1]))
    n_test = int(round(n_groups * fractions[2]))
    n_train = n_groups - n_val - n_test
    if n_groups >= 3 and min(n_train, n_val, n_test) < 1:
        raise SonosegError(
            f"{n_groups} patient groups are too few to split by {list(fractions)}: a part would be empty"
        )
    return n_train, n_val, n_test


def split_samples(
    samples: pd.DataFrame,
    seed: int,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    stratify: str | None = None,
) -> pd.DataFrame:
    """Assign each sample (rows with sample_id, group) to train / val / test, seeded.

    With `stratify` (a manifest column, e.g. class or the phantom's meta_lesion_type) every value of
    that column is spread over the parts in proportion (less than two groups off its share): with
    few patients a plain random split can put most of one kind of lesion in the test part by chance."""
    counts = group_counts(samples["group"].astype(str).nunique(), fractions)
    # Groups in an order, and the part of each place along it.
    ordered = ordered_groups(samples, seed, stratify)
    if stratify:
        parts = interleaved_parts(counts)
    else:
        parts = [part for part, count in zip(PARTS, counts) for _ in range(count)]
    part_of = dict(zip(ordered, parts))
    result = samples[["sample_id", "patient", "group"]].copy()
    result["split"] = result["group"].astype(str).map(part_of)
    return result


def ordered_groups(samples: pd.DataFrame, seed: int, stratify: str | None) -> list[str]:
    """The patient groups in the seeded order that the split and the folds deal parts along: stratum by
    stratum (stratified_order) when ``stratify`` names a column, else a random permutation."""
    groups = sorted(samples["group"].astype(str).unique())
    rng = np.random.default_rng(seed)
    if stratify:
        return stratified_order(samples, stratify, rng)
    return [groups[i] for i in rng.permutation(len(groups))]


MISSING = "(missing)"


def group_stratum(values: pd.Series) -> str:
    """A group's stratum: its most frequent known value (ties: the first in sorted order); the missing
    value only when none is known."""
    known = values[values != MISSING]
    counts = (known if len(known) else values).value_counts()
    return sorted(counts[counts == counts.max()].index)[0]


def missing_stratum_column(column: str, columns: list[str]) -> str:
    """Why split.stratify cannot stratify by a column the manifest lacks (the split job's refusal, and the
    planning's, which knows the columns a dataset's layout gives before any ingest)."""
    return f"split.stratify: column {column!r} is not in the manifest; its columns are {columns}" + (
        " (config/quick.yaml, fair.yaml and cpu.yaml stratify by the built-in phantom's lesion type: over "
        "them, your own data wants split.stratify: '' or a column its manifest has, such as class)"
        if column.startswith("meta_")
        else ""
    )


def stratified_order(samples: pd.DataFrame, column: str, rng: np.random.Generator) -> list[str]:
    """Patient groups listed stratum by stratum (see group_stratum; a group with no known value is in
    a stratum of its own), in random order within each stratum."""
    if column not in samples.columns:
        raise SonosegError(missing_stratum_column(column, list(samples.columns)))
    values = samples[column].astype("string").fillna(MISSING)
    values_by_group = pd.DataFrame({"group": samples["group"].astype(str), "value": values}).groupby("group")["value"]
    stratum_of = values_by_group.agg(group_stratum)
    strata = stratum_of.nunique()
    # Strata of one or two groups leave nothing to shuffle: the split would no longer depend on the seed.
    if 2 * strata > len(stratum_of):
        raise SonosegError(
            f"split.stratify: column {column!r} has {strata} different values over {len(stratum_of)} patient groups; "
            "stratify by a column with a few values shared by many patients (a class or a lesion type)"
        )
    ordered = []
    for _, members in sorted(stratum_of.groupby(stratum_of).groups.items()):
        members = sorted(members)
        ordered += [members[i] for i in rng.permutation(len(members))]
    return ordered


def interleaved_parts(counts: tuple[int, ...], labels: tuple = PARTS) -> list:
    """The labels (by default the parts), as many of each as counts says, spread evenly along one
    sequence (each label's k-th place at (k + 1/2) / count): any run of consecutive places, such as one
    stratum, gets each label in proportion, off by less than two."""
    places = [
        ((k + 0.5) / count, index, label)
        for index, (label, count) in enumerate(zip(labels, counts))
        for k in range(count)
    ]
    return [label for _, _, label in sorted(places)]


def fold_split(
    samples: pd.DataFrame,
    seed: int,
    folds: int,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    stratify: str | None = None,
) -> pd.DataFrame:
    """Patient-level K-fold cross-validation, seeded: every patient group is tested in exactly one fold.

    The groups are ordered as in split_samples (stratum by stratum when ``stratify`` is set, shuffled
    within each) and dealt to the K folds evenly along that order, so each fold gets each stratum in
    proportion. Fold k tests its own groups; its validation part is carved from the other groups (the
    same order, ``fractions``' validation share of the training and validation shares), the rest train.
    One row per sample and fold: sample_id, patient, group, fold, split. K = 1 is split_samples: one
    split, no fold column (samples_of_part reads it as fold 0)."""
    if folds < 1:
        raise SonosegError(f"split.folds: {folds} must be at least 1")
    if folds == 1:
        return split_samples(samples, seed, fractions, stratify)
    groups = samples["group"].astype(str).nunique()
    if groups < 2 * folds:
        raise SonosegError(f"split.folds: {folds} folds need at least {2 * folds} patient groups, have {groups}")
    ordered = ordered_groups(samples, seed, stratify)
    sizes = [len(ordered) // folds + (k < len(ordered) % folds) for k in range(folds)]
    fold_of = dict(zip(ordered, interleaved_parts(tuple(sizes), tuple(range(folds)))))
    share = fractions[1] / (fractions[0] + fractions[1])
    frames = []
    for fold in range(folds):
        rest = [g for g in ordered if fold_of[g] != fold]
        n_val = max(1, int(round(len(rest) * share)))
        part_of = dict(zip(rest, interleaved_parts((len(rest) - n_val, n_val), ("train", "val"))))
        part_of.update({g: "test" for g in ordered if fold_of[g] == fold})
        frame = samples[["sample_id", "patient", "group"]].copy()
        frame["fold"] = fold
        frame["split"] = frame["group"].astype(str).map(part_of)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[SPLIT_COLUMNS]


SPLIT_COLUMNS = ["sample_id", "patient", "group", "fold", "split"]


def external_split(samples: pd.DataFrame) -> pd.DataFrame:
    """An external dataset's split: every included sample is a test image (one split, no fold column),
    tested by the models of every fold; nothing of it trains, validates or chooses."""
    frame = samples[["sample_id", "patient", "group"]].copy()
    frame["split"] = "test"
    return frame.reset_index(drop=True)


def user_split(samples: pd.DataFrame, split_file: str | Path) -> pd.DataFrame:
    """A split the user provides: CSV with sample_id (or image) and split in {train, val, test}. Refused:
    a sample the ingest included that it gives no part, one it names twice with two parts, a patient group
    across parts, and a part too small for a training or a test (check_parts). Its rows naming no included
    sample (a typo, or an image the ingest excluded) are warned of, counted and named."""
    path = Path(split_file)
    if not path.is_file():
        raise SonosegError(f"split.file: file not found: {path}")
    given = pd.read_csv(path, dtype=str, keep_default_na=False)
    key = "sample_id" if "sample_id" in given.columns else "image" if "image" in given.columns else None
    if key is None or "split" not in given.columns:
        raise SonosegError(f"{path}: needs columns 'sample_id' (or 'image') and 'split'; found {list(given.columns)}")
    bad = sorted(set(given["split"]) - set(PARTS))
    if bad:
        raise SonosegError(f"{path}: split values must be {PARTS}; found {bad}")
    names = samples[key] if key == "sample_id" else samples["image"].map(lambda p: Path(p).name)
    shared = sorted(set(names[names.duplicated()]))
    if shared:  # a file name (siteA/001.png, siteB/001.png) cannot say which image a row means
        raise SonosegError(
            f"{path}: {len(shared)} image name(s) shared by several included images, e.g. {shared[:5]}: key the "
            "split by sample_id (data/manifest.csv lists each image's)"
        )
    parts_given = given.groupby(key)["split"].nunique()
    twice = sorted(parts_given[parts_given > 1].index)
    if twice:
        raise SonosegError(f"{path}: {len(twice)} {key}(s) given more than one split, e.g. {twice[:5]}")
    lookup = dict(zip(given[key], given["split"]))
    result = samples[["sample_id", "patient", "group"]].copy()
    result["split"] = names.map(lookup)
    missing = result[result["split"].isna()]["sample_id"].tolist()
    unknown = sorted(set(lookup) - set(names))
    if missing and len(unknown) == len(lookup):  # not one row matched: its key, not its samples, is wrong
        form = (
            "the sample_id data/manifest.csv lists"
            if key == "sample_id"
            else "the image's file name alone (no folder), e.g. " + repr(names.iloc[0])
        )
        raise SonosegError(
            f"{path}: none of its {len(lookup)} row(s) names an included sample (e.g. {unknown[:3]}); its {key} "
            f"column is matched against {form}"
        )
    if missing:
        raise SonosegError(f"{path}: {len(missing)} included sample(s) have no split, e.g. {missing[:5]}")
    if unknown:
        log.warning(
            "%s: %d row(s) name no sample the ingest included (a typo, or an image it excluded: the manifest says "
            "which), e.g. %s: not used",
            path,
            len(unknown),
            unknown[:5],
        )
    check_no_leak(result, str(path))
    check_parts(result, samples, str(path), "move images between its parts")
    return result


def check_parts(split: pd.DataFrame, samples: pd.DataFrame, source: str, remedy: str) -> None:
    """Refuse an in-domain split that no study can run on, by the split job, before an image is preprocessed
    or a training fails (and is retried) for it: a fold with a part of fewer images than FEWEST_IMAGES (a
    few patients dealt to K folds: 4 patients of one image each in 2 folds leave one training image), each such
    part named with its images and patient groups; and a split whose test images all lack a lesion (every mask
    empty: flag empty_mask, BUSI's normal images), as the tables' Dice and HD95 are over images with a lesion.
    ``remedy``: what the user can change, said last."""
    folds = split.groupby("fold") if "fold" in split else [(0, split)]
    short = []
    for fold, parts in folds:
        for part, fewest in FEWEST_IMAGES.items():
            rows = parts[parts["split"] == part]
            if len(rows) < fewest:
                groups = rows["group"].nunique()
                whose = f"fold {fold}'s" if "fold" in split else "its"  # a split file gives one split, no folds
                short.append(f"{whose} {part} part has {len(rows)} image(s) of {groups} patient group(s)")
    if short:
        raise SonosegError(
            f"{source}: {'; '.join(short)}; a training needs at least {FEWEST_IMAGES['train']} training images and "
            f"{FEWEST_IMAGES['val']} validation image, a test {FEWEST_IMAGES['test']} test image: {remedy}"
        )
    tested = set(split.loc[split["split"] == "test", "sample_id"])
    flags = samples.set_index("sample_id")["flags"] if "flags" in samples else pd.Series(dtype=str)
    empty = flags.fillna("").astype(str).map(lambda cell: "empty_mask" in cell.split(";"))
    if tested and tested <= set(empty[empty].index):
        raise SonosegError(
            f"{source}: none of the {len(tested)} test image(s) has a lesion (every mask is empty: flag "
            "empty_mask), and the study's Dice and HD95 are over images with a lesion: test images with a lesion too"
        )


def check_dealt(split: pd.DataFrame, samples: pd.DataFrame, folds: int, fractions) -> None:
    """check_parts for a split sonoseg dealt by ``folds`` and ``fractions``, named by them, its remedy what
    they can change: fewer folds; other fractions where the patient groups can still fill the three parts;
    else more patients alone."""
    groups = samples["group"].astype(str).nunique()
    if folds > 1:
        remedy = "use fewer folds (split.folds) or more patients"
    elif groups > len(PARTS):  # fractions can still give each part its groups
        remedy = f"use other split.fractions than {list(fractions)} or more patients"
    else:
        remedy = f"use more patients: {groups} patient group(s) cannot fill the three parts"
    check_parts(split, samples, f"split.folds {folds} over {groups} patient groups of {len(samples)} images", remedy)


def check_no_leak(split: pd.DataFrame, source: str) -> None:
    keys = ["fold", "group"] if "fold" in split else ["group"]
    crossing = split.groupby(keys)["split"].nunique()
    crossing = crossing[crossing > 1]
    if len(crossing):
        raise SonosegError(
            f"{source}: patient group(s) {list(crossing.index[:5])} have samples in more than one split "
            "(a patient, or duplicate images, would leak between training and test)"
        )


def part_counts(split: pd.DataFrame) -> pd.DataFrame:
    """Samples and patient groups per part (and fold), for the log."""
    keys = ["fold", "split"] if "fold" in split else ["split"]
    return split.groupby(keys).agg(samples=("sample_id", "size"), groups=("group", "nunique"))


def fold_count(split_csv: str | Path) -> int:
    """How many cross-validation folds a split file deals (1 for a split without folds)."""
    parts = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    return parts["fold"].nunique() if "fold" in parts else 1


def samples_of_part(manifest: str | Path, split_csv: str | Path, part: str, fold: int = 0) -> pd.DataFrame:
    """The included samples of the manifest that the split puts in ``part`` (train, val or test) of
    ``fold`` (split files without folds have one, fold 0)."""
    from sonoseg import data

    if part not in PARTS:
        raise SonosegError(f"split part {part!r} is not one of {PARTS}")
    samples = data.included(data.read_manifest(manifest))
    parts = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    if "fold" in parts:
        if str(fold) not in set(parts["fold"]):
            raise SonosegError(f"{split_csv}: no fold {fold} (folds: {sorted(set(parts['fold']))})")
        parts = parts[parts["fold"] == str(fold)]
    elif fold != 0:
        raise SonosegError(f"{split_csv}: a split without folds has only fold 0, not {fold}")
    chosen = set(parts.loc[parts["split"] == part, "sample_id"])
    return samples[samples["sample_id"].isin(chosen)].reset_index(drop=True)
