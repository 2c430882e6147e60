"""The study's paired comparisons as tables: runs paired on the same test images by patient (the caliper
ablation, reliance on the marks, test-time augmentation, ensembles, the augmentation choice), the
equivalence claims the config declares, and the convergence check; each Holm-corrected over its own family
(sonoseg.analysis.stats, docs/statistics.md). Written as CSV (the pairs and the claims also as Markdown) by the study's
paired_table, equivalence and convergence jobs."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from sonoseg.analysis.results import markdown_header, markdown_row, patient_table, write_table
from sonoseg.data.provenance import write_text_atomic
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog

log = logging.getLogger(__name__)


# What each paired table compares; its family text adds how many pairs Holm corrected over (paired_family):
# a study's table has every network (and, for tta, ensemble and augmentation, every dataset), while
# `sonoseg paired --pairs` may give a few, and the text must not claim the study's family for them.
PAIRED_FAMILIES = {
    "ablation": "twin (other marks) vs main",
    # The same models (trained with marks kept) tested without them: the drop is the reliance.
    "reliance": "tested without the marks (inpainted, or the phantom rendered without them) vs with them (same models)",
    # The same models tested with horizontal-flip averaging: the gain of test-time augmentation.
    "tta": "tested with flip averaging vs without (same models)",
    # The mean of a network's seeds' probabilities in each fold (on an external dataset: of every
    # fold's and seed's), against its single trainings.
    "ensemble": "the ensemble (in-domain: each fold's seeds; external: every training) vs the single trainings",
    # A network trained with the ultrasound augmentation against the paper's (the augmentation choice's
    # candidates), on its own test images and on each external dataset.
    "augmentation": "trained with the ultrasound augmentation vs the paper's",
}


def paired_family(family: str, pairs: int) -> str:
    """A paired table's family text: what it compares, and the pairs Holm's correction was over."""
    return f"{PAIRED_FAMILIES[family]}, Holm over this table's {pairs} pair{'s' if pairs != 1 else ''}"


def paired_runs(
    per_image: pd.DataFrame,
    pairs: list[tuple[str, str]],
    seed: int = 0,
    family: str = "ablation",
) -> pd.DataFrame:
    """Pairs of runs on the same test images, by patient: per pair (main, twin), a row whose method is the
    twin and reference the main run (as in every comparison of sonoseg.analysis.stats), the Dice of
    each, and the paired difference (twin - main) with its patient-level hierarchical bootstrap CI and
    sign-flip p, Holm-corrected over the pairs. ``family`` "ablation": the caliper ablation (each method
    trained and tested with the marks the other way); "reliance": each network trained with marks kept,
    its very models tested with the marks inpainted (paired image by image and run by run)."""
    if family not in PAIRED_FAMILIES:
        raise SonosegError(f"paired table: family {family!r} is not one of {sorted(PAIRED_FAMILIES)}")
    from sonoseg.analysis import stats

    per_image = patient_table(per_image, [run for pair in pairs for run in pair])
    rows = []
    flips = stats.permutations_for(len(pairs))
    for main, twin in pairs:
        both = per_image[per_image["method"].isin([main, twin])]
        if both.empty:  # e.g. an external set of scans without lesions: nothing to compare, no test made
            log.warning("%s and %s: no test image with a lesion; left out of the %s table", main, twin, family)
            continue
        result = stats.hierarchical_comparison(both, twin, main, seed=seed, permutations=flips)
        means = both.groupby("method")["dice"].mean()
        # As every comparison of the statistics: method is the candidate (the twin), reference the main run; and
        # the images they were compared on, said rather than left to the runs' names (--on-<dataset>).
        where = {"dataset": ", ".join(sorted(both["dataset"].astype(str).unique()))} if "dataset" in both else {}
        rows.append({**result, **where, "dice_method": means[twin], "dice_reference": means[main]})
    table = pd.DataFrame(rows)
    if not table.empty:
        # Holm over the pairs, and significant as the statistics page decides it: Holm's p < 0.05 and, where a
        # side has several trainings, the CI excluding 0 (a p alone would read as a decision it is not).
        table = stats.as_family([table], paired_family(family, len(table)))
    return table


def adoption_sentence(choice: dict, takers: list[str]) -> str:
    """What an augmentation choice adopted (its selection/<network>/augmentation.json, as
    sonoseg.training.augmentation_choice writes it) and the networks that train with it, as the augmentation
    table's caption says it: the table pairs the two options, and a reader asked which one the study kept."""
    dice = choice.get("dice", {})
    scores = " against ".join(f"{dice[option]:.3f} {option}" for option in sorted(dice, key=lambda o: -dice[o]))
    chooser = catalog.label(choice["network"])
    patients = f"; {choice['patients']} patients" if "patients" in choice else ""
    taken = ", ".join(catalog.label(name) for name in takers) if takers else "none"
    return (
        f"Adopted: {chooser}'s choice, the {choice['chosen_name']} augmentation (mean Dice on {choice['dataset']}, "
        f"the development set: {scores}{patients}); the networks trained with it: {taken}."
    )


def paired_markdown(table: pd.DataFrame, family: str, source: str = "", adopted: list[str] = ()) -> str:
    """A paired table as a person reads it: a caption (what the pairs compare, the Holm family, what a choice
    among the pairs adopted (``adopted``: adoption_sentence's), then ``source``: results.source_line, where the
    numbers come from) and a row per pair, run names as the long table has them."""
    from sonoseg.analysis import stats

    what = table["family"].iloc[0] if not table.empty else PAIRED_FAMILIES[family]
    said = " ".join([*adopted, *([source] if source else [])])
    caption = (
        f"**Paired by patient: {what}. Difference = method - reference, Dice averaged over the test images with a "
        "lesion [95 % CI by patient, then training]; sign-flip p, Holm-corrected; significant: Holm's p < 0.05 "
        f"and, where a side has several trainings, the CI excluding 0.{' ' + said if said else ''}**"
    )
    if table.empty:
        return caption + "\n\nNo pair had a test image with a lesion: nothing was compared.\n"
    header = ["Method", "Reference", "Dice method", "Dice reference", "Difference [95 % CI]", "p (Holm)"]
    header += ["Significant", "Patients"]
    named = "dataset" in table.columns  # a table made from a long table without the column has none
    lines = markdown_header(header + (["Dataset"] if named else []))
    for row in table.itertuples(index=False):
        interval = stats.ci_text(row.ci_low, row.ci_high, signed=True)
        cells = [f"`{row.method}`", f"`{row.reference}`", f"{row.dice_method:.3f}", f"{row.dice_reference:.3f}"]
        cells += [f"{stats.value_text(row.mean_difference, signed=True)} {interval}", f"{row.p_holm:.3g}"]
        cells += ["yes" if row.significant else "no", str(row.patients)] + ([row.dataset] if named else [])
        lines.append(markdown_row(cells))
    return caption + "\n\n" + "\n".join(lines) + "\n"


def write_paired(
    table: pd.DataFrame, out_csv: str | Path, family: str, source: str = "", adopted: list[str] = ()
) -> None:
    """A paired table as CSV, and as Markdown beside it (paired_markdown), whose caption says where it comes from."""
    out_csv = Path(out_csv)
    write_table(table, out_csv)
    write_text_atomic(out_csv.with_suffix(".md"), paired_markdown(table, family, source, adopted))


def equivalence_table(
    per_image: pd.DataFrame,
    pairs: list[tuple[str, str]],
    margin: float,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """The study's equivalence claims (config claims.equivalence): for each (candidate, reference),
    "candidate is as good as reference within +-margin", answered by stats.equivalence (the bootstrap's
    90 % interval inside the margin, by patient then run, and the TOST), Holm over the claims' TOST
    p-values: a claim holds when its interval lies inside the margin and its Holm TOST p < alpha."""
    from sonoseg.analysis import stats

    per_image = patient_table(per_image, [run for pair in pairs for run in pair])
    rows = []
    for candidate, reference in pairs:
        both = per_image[per_image["method"].isin([candidate, reference])]
        result = stats.equivalence(both, candidate, reference, margin, alpha=alpha, seed=seed)
        inside = -margin < result["ci_low"] and result["ci_high"] < margin
        rows.append({**result, "interval_inside_margin": inside})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["tost_p_holm"] = stats.holm(table["tost_p"].fillna(1.0).to_numpy())  # no TOST (1 patient): p 1
    table["equivalent"] = table["interval_inside_margin"] & (table["tost_p_holm"] < alpha)
    table["family"] = f"equivalence within +-{margin:g} Dice, Holm over {len(table)} claim(s)"
    return table


def write_equivalence(table: pd.DataFrame, out_csv: str | Path, margin: float, source: str = "") -> None:
    """The claims table as CSV and as Markdown sentences a reader can quote, with the margin."""
    from sonoseg.analysis import stats

    out_csv = Path(out_csv)
    write_table(table, out_csv)
    lines = [
        f"**Equivalence claims (margin ±{margin:g} Dice; 90 % CI by patient, then run; TOST, Holm). {source}**",
        "",
    ]
    for row in table.itertuples(index=False):
        verdict = "holds" if row.equivalent else "is not shown"
        lines.append(
            f"- {catalog.label(row.method)} as good as {catalog.label(row.reference)} within ±{margin:g}: "
            f"{verdict} — difference {stats.value_text(row.mean_difference, signed=True)} "
            f"{stats.ci_text(row.ci_low, row.ci_high, signed=True)}, "
            f"TOST p {row.tost_p:.3g} (Holm {row.tost_p_holm:.3g}), {row.patients} patients, "
            f"{row.runs_candidate} and {row.runs_reference} runs"
        )
    write_text_atomic(out_csv.with_suffix(".md"), "\n".join(lines) + "\n")


def convergence_table(
    per_image: pd.DataFrame,
    trainings: pd.DataFrame,
    pairs: list[tuple[str, str]],
    margin: float,
    seed: int = 0,
) -> pd.DataFrame:
    """The convergence check: per (network run, the same with twice the epoch budget), how many of the
    network's checked trainings the cap ended (their histories), and the paired change of test Dice
    (longer - base) by patient, then run (same fold and seed). A network counts as converged when the
    stop rule ended every checked training, or when the change's 90 % CI lies within +-margin."""
    from sonoseg.analysis import stats

    ended = {
        run: [reason or "unknown" for reason in group["ended_by"].fillna("")]
        for run, group in trainings.groupby("run", sort=False)
    }
    per_image = patient_table(per_image, [run for pair in pairs for run in pair])
    rows = []
    for base, longer in pairs:
        both = per_image[per_image["method"].isin([base, longer])]
        # Only the 90 % interval is read: one sign flip spares the p no one uses.
        change = stats.hierarchical_comparison(both, longer, base, seed=seed, confidence=0.90, permutations=1)
        inside = -margin < change["ci_low"] and change["ci_high"] < margin
        reasons = ended.get(base, [])
        capped = sum(reason == "cap" for reason in reasons)
        by_rule = bool(reasons) and all(reason == "rule" for reason in reasons)  # unrecorded endings count as not
        rows.append(
            {
                "network": base,
                "checked_trainings": len(reasons),
                "capped_trainings": capped,
                "capped_at_twice_the_budget": sum(reason == "cap" for reason in ended.get(longer, [])),
                "change": change["mean_difference"],
                "change_ci90_low": change["ci_low"],
                "change_ci90_high": change["ci_high"],
                "margin": margin,
                "converged": by_rule or inside,
                "why": "the stop rule ended every checked training"
                if by_rule
                else ("twice the budget changes less than the margin" if inside else "not shown"),
            }
        )
    return pd.DataFrame(rows)
