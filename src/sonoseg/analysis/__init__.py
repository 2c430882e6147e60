"""The analysis stage: metrics per image, the collect stage's long tables, statistics by patient,
the study's tables and the report's figures and pages, and the paper's published numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# The modules outside this package whose code decides what a table or a report page says: the recipe
# selection's table of choices (`sonoseg selection-table`).
OTHER_MODULES = ("sonoseg.training.selection",)


def code_files(relative_to: str | Path | None = None) -> list[str]:
    """The source files of the code that makes the study's tables and report pages: every module of this
    package, and OTHER_MODULES; sorted, as the installed (or edited) package has them, found without
    importing them (a module installed without its source has none to list). The workflow's summaries,
    long tables, tables and report pages take them as input (workflow/rules/common.smk, ANALYSIS_CODE), so
    that an upgrade of sonoseg, or an edit of its analysis code, redoes them; the trainings and the
    predictions do not take them, so the per-image metrics the predictions score (evaluate.py) and the
    choices made on validation (scoring.py) stay as they were made (`--forcerun predict` redoes those).

    ``relative_to``: a folder (the workflow's working directory) under which the files are given relative
    to it, so that a checkout moved with its results and its package (a venv made again in the checkout) has
    the same inputs and redoes nothing; files elsewhere (a package installed outside it) stay absolute."""
    paths = list(Path(__file__).resolve().parent.glob("*.py"))
    for module in OTHER_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.has_location:
            paths.append(Path(spec.origin).resolve())
    base = Path(relative_to).resolve() if relative_to is not None else None

    def as_given(path: Path) -> str:
        return path.relative_to(base).as_posix() if base is not None and path.is_relative_to(base) else str(path)

    return sorted({as_given(path) for path in paths if path.is_file()})
