"""What the report says of the study as a whole, read from its tables: the labels its entries are listed by
(Snakemake's viewer sorts a section's entries by their text, so each leads with its place) and the sonoseg
commit that made the results, as the tables' captions name it, and what the trainings computed on (the front
page's lines)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

# The sonoseg version and commit in the provenance sentence every table's caption ends with
# (sonoseg.data.provenance.caption_line: "Data fingerprint F; sonoseg V at commit C[; models trained at commit T].").
WRITTEN_SOURCE = re.compile(r"Data fingerprint \S+; (sonoseg \S+ at commit [^\s.;,]+)[.;]")
MADE_AT = re.compile(r"at commit ([^\s.;,()]+)")  # each commit in results_source's answer


def results_source(tables_dir: str | Path) -> str:
    """The sonoseg version and commit the study's tables name as what made their numbers (the captions of
    their Markdown twins), as the report's front page names it: "sonoseg V at commit C", or each with its
    tables where they differ; '' while no table names one."""
    made_by: dict[str, list[str]] = {}
    for markdown in sorted(Path(tables_dir).glob("*.md")):
        found = WRITTEN_SOURCE.search(markdown.read_text())
        if found:
            made_by.setdefault(found[1], []).append(markdown.stem)
    if len(made_by) < 2:
        return next(iter(made_by), "")
    return "; ".join(f"{source} ({', '.join(names)})" for source, names in made_by.items())


def made_by_other_code(made_by: str, building: str) -> str:
    """The front page's warning when tables and pages were made by other code than the sonoseg building the
    report (``made_by``: results_source's answer; ``building``: this sonoseg's commit), '' when every table
    names this commit. `make report` bundles the outputs as they are: pages made by older code say what that
    code said, which a user upgrading a finished study would read as this code's."""
    commits = set(MADE_AT.findall(made_by))
    if commits == {building}:
        return ""
    which = (
        "Some tables and pages (those named with another commit above)"
        if building in commits
        else "The tables and pages"
    )
    return (
        f"{which} were made by other code than this (commit {building}): run the study again first (`snakemake "
        "all`, or `make study`: it remakes what the code change touches, without training where only the analysis "
        "changed) for pages as this code makes them."
    )


def computed_on(trainings_csv: str | Path) -> str:
    """What the study's trainings computed on, from its trainings table (sonoseg.analysis.results: each
    training's precision, device and processor; an adopted training, another row's, not counted again): a
    front-page sentence such as "The 12 trainings ran at commit abc in bf16 + channels_last on cpu (Intel
    Xeon)", each distinct value with its count where they differ (the commit where the table records it: the
    tables may have been remade by a later commit from these trainings' predictions); '' without the table or
    its columns (a study made before them)."""
    try:
        trainings = pd.read_csv(trainings_csv, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.EmptyDataError):
        return ""
    if "same_training_as" in trainings:
        trainings = trainings[trainings["same_training_as"] == ""]
    columns = [c for c in ("precision", "device", "processor") if c in trainings]
    if len(columns) < 3 or trainings.empty or (trainings[columns] == "").all(axis=None):
        return ""

    def values(column: str) -> str:
        counts = trainings[column].replace("", "not recorded").value_counts(sort=False)
        return " / ".join(counts.index) if len(counts) == 1 else ", ".join(f"{v} ({n})" for v, n in counts.items())

    at = f" at commit {values('commit')}" if "commit" in trainings and (trainings["commit"] != "").any() else ""
    return (
        f"The {len(trainings)} training{'s' if len(trainings) != 1 else ''} ran{at} in {values('precision')} on "
        f"{values('device')} ({values('processor')})."
    )


# Each table's entry in the report's "2 Tables" (workflow/rules/report.smk; its page's title is in
# pages.TABLE_TITLES): short, as the report's viewer does not wrap the entry it shows.
REPORT_ENTRIES = {
    "table1": "Table 1: architectures",
    "table2": "Table 2: U-net and its lightweight variants",
    "beyond": "Beyond the paper",
    "ladder": "Tuning ladder (section 4.2)",
    "selection": "Learning rate and weight decay chosen",
    "generalization": "Generalization",
    "marks_ablation": "Caliper ablation (paired)",
    "marks_reliance": "Reliance on the marks (paired)",
    "tta": "Flip averaging (paired)",
    "ensemble": "Ensemble vs single (paired)",
    "augmentation": "Augmentation choice (paired)",
    "subgroups": "Dice by subgroup",
}


def report_entry(name: str, names: list[str], shown: str = "") -> str:
    """An entry of a section of the report: its place among the section's ``names``, in the order they are to
    be read, then ``shown`` (``name`` itself by default). The report's viewer lists a section's entries by
    their text: the place leads, zero-padded where the section has ten or more (else 10 comes before 2)."""
    return f"{names.index(name) + 1:0{len(str(len(names)))}d} {shown or name}"
