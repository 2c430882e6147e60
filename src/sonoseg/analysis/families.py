"""The statistics families the report draws (docs/statistics.md): the reference every method is
compared with, and the accuracy-cost front's neighbours, each family paired by patient, then run,
with Holm's correction over the family."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sonoseg.analysis import stats
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog


def reference_method(methods: list[str], preferred: str = "unet") -> tuple[str, str]:
    """The method others are compared with: U-net as in the paper, else the first one; and a note saying which."""
    if preferred in methods:
        return preferred, f"Reference: {preferred} (the paper's baseline)."
    if not methods:
        raise SonosegError("no methods to compare")
    return methods[0], f"Reference: {methods[0]} — the study has no {preferred}, so the first network listed is used."


def pareto_front(summary: pd.DataFrame, column: str) -> pd.DataFrame:
    """The networks no other beats at a lower or equal cost in ``column``: cheapest first, each with a
    higher mean Dice than every cheaper one."""
    costed = summary[summary[column].notna()].sort_values([column, "dice_mean"], ascending=[True, False])
    best, rows = -np.inf, []
    for index, row in costed.iterrows():
        if row["dice_mean"] > best:
            best = row["dice_mean"]
            rows.append(index)
    return costed.loc[rows]


def front_neighbours(summary: pd.DataFrame, column: str) -> list[tuple[str, str, bool]]:
    """(network, the front network it is compared with, whether it is on the front) for every network
    with a cost in ``column``. A network on the front is compared with the front's next cheaper point:
    does its extra cost buy accuracy? A network off the front is compared with the cheapest front
    network that costs no more and scores at least as well: is it beaten at a lower cost? The
    cheapest front network has nothing cheaper to be compared with."""
    front = pareto_front(summary, column)
    on_front = list(front["method"])
    pairs = []
    for row in summary[summary[column].notna()].itertuples():
        cost = getattr(row, column)
        if row.method in on_front:
            position = on_front.index(row.method)
            if position:
                pairs.append((row.method, on_front[position - 1], True))
        else:
            beating = front[(front[column] <= cost) & (front["dice_mean"] >= row.dice_mean)]
            pairs.append((row.method, beating["method"].iloc[0], False))
    return pairs


def front_statistics(
    per_image: pd.DataFrame, summary: pd.DataFrame, column: str, seed: int = 0, resamples: int = 10_000
) -> pd.DataFrame:
    """The accuracy-cost front under the statistics of the tables: each pair of front_neighbours
    compared by stats.hierarchical_comparison (patients, then runs), Holm's correction over all of
    them (one family). per_image carries the patient groups (tables.patient_table)."""
    pairs = front_neighbours(summary, column)
    if not pairs:
        columns = list(stats.COMPARISON_COLUMNS)
        return pd.DataFrame(columns=columns[:2] + ["on_front", column, f"reference_{column}"] + columns[2:])
    costs = summary.set_index("method")[column]
    flips = stats.permutations_for(len(pairs))  # the whole family's size, not one call's
    rows = stats.as_family(
        [
            stats.compare_methods(
                per_image, reference, "", methods=[method], seed=seed, resamples=resamples, permutations=flips
            )
            for method, reference, _ in pairs
        ],
        f"every network vs its neighbour on the {column} front",
    )
    rows.insert(2, "on_front", [on for _, _, on in pairs])
    rows.insert(3, column, [costs[method] for method, _, _ in pairs])
    rows.insert(4, f"reference_{column}", [costs[reference] for _, reference, _ in pairs])
    return rows


@dataclass(frozen=True)
class PairedFamilies:
    """The report's three families of paired comparisons (docs/statistics.md), each Holm-corrected."""

    reference: str  # every method is compared with it (U-net, else the first method)
    reference_note: str
    comparison: pd.DataFrame  # every method vs the reference
    beyond: pd.DataFrame  # every network vs every floor
    versus_references: pd.DataFrame  # every network vs each reference (never counted as a floor)


def paired_families(per_image: pd.DataFrame, seed: int = 0, resamples: int = 10_000) -> PairedFamilies:
    """Every method against the reference; every network against every floor (a network segments beyond
    the image's cues only when every one of its CIs against the floors lies above 0); every network
    against each reference (which reads something derived from the test annotation, e.g. the caliper
    reader). ``per_image``: the compared runs' images with a lesion (sonoseg.analysis.results.patient_table)."""
    methods = list(dict.fromkeys(per_image["method"]))
    reference, reference_note = reference_method(methods)
    family = f"every method vs {reference}"
    comparison = stats.compare_methods(per_image, reference, family, seed=seed, resamples=resamples)
    floors = [m for m in methods if m in catalog.floors()]
    references = [m for m in methods if m in catalog.references()]
    networks = [m for m in methods if m not in floors + references]

    def against_each(untrained: list[str], family_name: str) -> pd.DataFrame:
        """Every network against each of ``untrained``, one family (one call per method compared with:
        a result does not depend on the others)."""
        flips = stats.permutations_for(len(untrained) * len(networks))  # the whole family's size
        calls = [
            stats.compare_methods(
                per_image, method, "", methods=networks, seed=seed, resamples=resamples, permutations=flips
            )
            for method in untrained
            if networks
        ]
        return stats.as_family(calls, family_name) if calls else pd.DataFrame()

    beyond = against_each(floors, "every network vs every floor")
    versus_references = against_each(references, "every network vs each reference")
    return PairedFamilies(reference, reference_note, comparison, beyond, versus_references)
