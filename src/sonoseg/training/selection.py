"""Recipe selection (docs/method.md, "Learning rate and weight decay chosen on validation"): each
network whose learning rate or weight decay is ``auto`` is trained once per point of the grid of
its auto settings (``train.learning_rate_grid`` x ``train.weight_decay_grid``: the run sheet's
candidates, ``<network>--lr<rate>-wd<decay>``, or ``<network>--wd<decay>`` when only the weight decay
is chosen), in each cross-validation fold, and the point with the lowest validation loss is chosen.
The test split is never read. The choice file feeds the network's recipe (``sonoseg recipe``); the
network's run with the candidates' seed adopts the chosen candidate's model instead of training it
again (``sonoseg.training.reuse.adopt_identical_run``), so a candidate is never trained twice."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from sonoseg.analysis.scoring import kept_row
from sonoseg.errors import SonosegError

CRITERION = "lowest validation loss"
# The recipe settings that `auto` chooses per network and fold on the validation set, each with its
# grid's config key.
SELECTABLE = ("learning_rate", "weight_decay")
GRIDS = {"learning_rate": "learning_rate_grid", "weight_decay": "weight_decay_grid"}


def select(candidates: list[tuple[dict, str | Path]]) -> tuple[dict, pd.DataFrame]:
    """Pick, among (settings, history file) pairs, the candidate with the lowest best validation loss
    (the loss early stopping keeps). Ties go to the larger weight decay (the simpler model), then to the
    smaller learning rate (the gentler training). Returns the chosen settings and every candidate's row."""
    if not candidates:
        raise SonosegError("recipe selection: no candidate to choose from")
    rows = []
    for settings, path in candidates:
        unknown = set(settings) - set(SELECTABLE)
        if unknown:
            raise SonosegError(f"recipe selection: {sorted(unknown)} cannot be chosen; choosable: {SELECTABLE}")
        best = kept_row(pd.read_csv(path))
        rows.append(
            {
                **{k: float(v) for k, v in settings.items()},
                "best_val_loss": float(best["val_loss"]),
                "val_dice_at_best": float(best["val_dice"]),
                "best_epoch": int(best["epoch"]),
            }
        )
    table = pd.DataFrame(rows)
    chosen_keys = [k for k in SELECTABLE if k in table]
    order = ["best_val_loss"] + [k for k in ("weight_decay", "learning_rate") if k in table]
    ascending = [True] + [k == "learning_rate" for k in order[1:]]
    table = table.sort_values(order, ascending=ascending, kind="stable")
    return {k: float(table.iloc[0][k]) for k in chosen_keys}, table


def write_selection(
    network: str, candidates: list[tuple[dict, str | Path]], out: str | Path
) -> tuple[dict, pd.DataFrame]:
    """The selection file: the chosen settings, the criterion and every candidate's numbers."""
    chosen, table = select(candidates)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(
        json.dumps(
            {"network": network, "chosen": chosen, "criterion": CRITERION, "candidates": table.to_dict("records")},
            indent=2,
        )
    )
    return chosen, table


def read_selection(path: str | Path) -> dict:
    """A selection file, checked; ``chosen`` holds the chosen settings (a file written before the learning
    rate could be chosen holds a top-level weight_decay: read as chosen {"weight_decay": ...})."""
    try:
        selection = json.loads(Path(path).read_text())
        if "chosen" not in selection:
            selection["chosen"] = {"weight_decay": selection["weight_decay"]}
        selection["chosen"] = {k: float(v) for k, v in selection["chosen"].items()}
        selection["candidates"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SonosegError(f"{path}: not a recipe selection ({type(exc).__name__}: {exc})") from None
    unknown = set(selection["chosen"]) - set(SELECTABLE)
    if unknown or not selection["chosen"]:
        raise SonosegError(f"{path}: not a recipe selection (chosen settings {sorted(selection['chosen'])})")
    return selection


def choices_markdown(table: pd.DataFrame, source: str) -> str:
    """choices_table as a person reads it (tables/selection.md): its caption, ending with ``source`` (where the
    numbers come from: provenance.caption_line), then a row per candidate, the chosen ones marked."""
    criterion = "; ".join(dict.fromkeys(table["criterion"])) if len(table) else "none"
    caption = (
        "**The recipe selection: the learning rate and weight decay chosen per network and fold on the fold's "
        f"validation part** (criterion: {criterion}; the chosen candidate marked). {source}"
    )
    shown = table.drop(columns=["criterion"]).assign(chosen=table["chosen"].map({True: "chosen", False: ""}))
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |", "|" + "---|" * len(shown.columns)]
    lines += [
        "| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in shown.itertuples(index=False)
    ]
    return f"{caption}\n\n" + "\n".join(lines) + "\n"


def choices_table(selection_files: list[str | Path]) -> pd.DataFrame:
    """Every network's candidates, one row each, the chosen one marked (tables/selection.csv). Each
    cross-validation fold chooses on its own validation part: the fold comes from the workflow's file
    name, selection/<network>/fold<k>.json ('' for another name)."""
    rows = []
    for path in selection_files:
        selection = read_selection(path)
        fold = re.fullmatch(r"fold(\d+)", Path(path).stem)
        chosen = selection["chosen"]
        for candidate in selection["candidates"]:
            rows.append(
                {
                    "network": selection["network"],
                    "fold": fold[1] if fold else "",
                    "chosen": all(candidate.get(k) == v for k, v in chosen.items()),
                    "criterion": selection["criterion"],
                    **candidate,
                }
            )
    return pd.DataFrame(rows)
