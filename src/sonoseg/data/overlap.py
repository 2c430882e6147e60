"""Images an external dataset shares with the data its results are read against.

An external dataset measures how networks do on images they never saw. A copy of a training image in
it (a user pointing the study and the external set at overlapping folders, or a public set that
re-publishes another's scans) would score as an unseen image and inflate the generalization table.
A held-out external set that shares images with the development set would likewise have guided a
choice. So before an external set is tested, its images are compared with the main dataset's, and a
held-out set's also with the development set's: identical pixels, then the near duplicates that
ingest finds within one dataset (docs/near_duplicates.md: re-encoded, resized or cropped copies).
What is found fails the study, or, when the user asks (``on_overlap: exclude``), leaves the whole
patient group out of the external tests, counted in the log and listed in ``overlap.csv``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pandas as pd

from sonoseg.data.duplicates import Fingerprint, fingerprint, in_threads, near_duplicates, pixel_hash
from sonoseg.data.imageio import read_image
from sonoseg.errors import SonosegError

log = logging.getLogger(__name__)

POLICIES = ("fail", "exclude")
OVERLAP_COLUMNS = [
    "sample_id",
    "patient",
    "group",
    "image",
    "kind",
    "dataset",
    "other_sample_id",
    "other_image",
    "details",
]


@dataclass(frozen=True)
class ImageIdentity:
    """What two datasets' images are compared by: the exact pixels and the near-duplicate fingerprint."""

    sample_id: str
    image: str
    pixel_hash: str
    fingerprint: Fingerprint


def identities(samples: pd.DataFrame, threads: int = 1) -> list[ImageIdentity]:
    """The identities of a manifest's included samples (their images read once more)."""

    def identity(row: tuple[str, str]) -> ImageIdentity:
        pixels = read_image(row[1]).pixels
        return ImageIdentity(row[0], row[1], pixel_hash(pixels), fingerprint(pixels))

    return list(in_threads(identity, zip(samples["sample_id"], samples["image"]), threads))


def find_overlap(
    external: pd.DataFrame,
    others: dict[str, pd.DataFrame],
    near_duplicate_distance: int,
    near_duplicate_similarity: float,
    threads: int = 1,
) -> pd.DataFrame:
    """Every external sample whose image is also in one of ``others`` (a dataset's name -> its
    included samples): one row per pair (OVERLAP_COLUMNS), identical pixels before near duplicates,
    which are proposed and confirmed by ingest's rule and settings (on ``threads`` threads)."""
    mine = identities(external, threads)
    rows = []
    for dataset, samples in others.items():
        theirs = identities(samples, threads)
        by_hash = {}
        for other in theirs:
            by_hash.setdefault(other.pixel_hash, other)
        for position, image in enumerate(mine):
            if image.pixel_hash in by_hash:
                rows.append(_row(external, position, "identical", dataset, by_hash[image.pixel_hash], ""))
        # Near duplicates: ingest's rule over both lists, only the pairs across them (both images in one
        # dataset are ingest's business), those of identical pixels found above.
        started = time.perf_counter()
        both = mine + theirs
        search = near_duplicates(
            [i.fingerprint for i in both],
            [i.pixel_hash for i in both],
            near_duplicate_distance,
            near_duplicate_similarity,
            threads,
            considered=lambda proposal: proposal.first < len(mine) <= proposal.second,
        )
        for proposal, match in search.confirmed:
            other = both[proposal.second]
            rows.append(_row(external, proposal.first, "near_duplicate", dataset, other, match.flag_details()))
        log.info(
            "compared %d image(s) with %d of %s: %d pair(s) found; near-duplicate candidates not confirmed: %d "
            "(%.1f s; each costs a few ms, and images of one scanner and preset can all be candidates: "
            "dataset.near_duplicate_distance: -1, which this check uses too, compares identical pixels only)",
            len(mine),
            len(theirs),
            dataset,
            sum(row["dataset"] == dataset for row in rows),
            search.unconfirmed,
            time.perf_counter() - started,
        )
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)


def _row(external: pd.DataFrame, position: int, kind: str, dataset: str, other: ImageIdentity, details: str) -> dict:
    sample = external.iloc[position]
    return {
        "sample_id": sample["sample_id"],
        "patient": sample["patient"],
        "group": sample["group"],
        "image": sample["image"],
        "kind": kind,
        "dataset": dataset,
        "other_sample_id": other.sample_id,
        "other_image": other.image,
        "details": details,
    }


def apply_policy(split: pd.DataFrame, overlap: pd.DataFrame, policy: str, dataset: str) -> pd.DataFrame:
    """The external split with the overlap handled: unchanged when there is none; otherwise an error
    listing every pair (``fail``), or the split without the overlapping samples' patient groups
    (``exclude``): a patient seen elsewhere is not an unseen patient, whichever of its images it was."""
    if policy not in POLICIES:
        raise SonosegError(f"external_datasets {dataset!r}: on_overlap {policy!r} is not one of {POLICIES}")
    if overlap.empty:
        return split
    if policy == "fail":
        relation = {"identical": "identical to", "near_duplicate": "a near duplicate of"}
        listing = "\n".join(
            f"  {row.image}: {relation[row.kind]} {row.dataset}'s {row.other_image}"
            + (f" ({row.details})" if row.details else "")
            for row in overlap.itertuples()
        )
        raise SonosegError(
            f"external dataset {dataset!r}: {overlap['sample_id'].nunique()} image(s) are also in another dataset "
            f"of the study, so they would not test unseen images:\n{listing}\n"
            f"Remove them from the external dataset, or set on_overlap: exclude in its external_datasets entry to "
            "leave their patients out of its tests (each listed in its overlap.csv)."
        )
    groups = set(overlap["group"])
    kept = split[~split["group"].isin(groups)].reset_index(drop=True)
    if kept.empty:
        raise SonosegError(
            f"external dataset {dataset!r}: every image shares a patient group with an image found in another "
            "dataset of the study (on_overlap: exclude); nothing is left to test"
        )
    log.warning(
        "external dataset %s: %d of %d image(s) (%d patient group(s)) left out of its tests (on_overlap: exclude): "
        "%d found in another dataset of the study, the rest their patients' other images",
        dataset,
        len(split) - len(kept),
        len(split),
        len(groups),
        overlap["sample_id"].nunique(),
    )
    return kept


def read_record(path) -> pd.DataFrame:
    """An ``overlap.csv`` as ``find_overlap`` found it (written by ``sonoseg split --overlap-out``)."""
    try:
        record = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SonosegError(f"{path}: cannot read the overlap record ({exc})") from None
    missing = set(OVERLAP_COLUMNS) - set(record.columns)
    if missing:
        raise SonosegError(f"{path}: not an overlap record (no column {', '.join(sorted(missing))})")
    return record


def describe(record: pd.DataFrame, dataset: str) -> str:
    """One sentence for a table's caption: what an external set's tests left out, or '' for nothing."""
    if record.empty:
        return ""
    return (
        f"{dataset}: {record['sample_id'].nunique()} image(s) also in {', '.join(sorted(set(record['dataset'])))} "
        f"(external/{dataset}/overlap.csv); their {record['group'].nunique()} patient group(s) are left out of "
        "its tests (on_overlap: exclude)."
    )
