"""Weight-decay selection (docs/method.md, "Weight decay"): each network whose weight decay is
``auto`` is trained once per value of ``train.weight_decay_grid`` (the run sheet's
weight-decay candidates) and the value with the lowest validation loss is chosen. The choice file
feeds the network's recipe (``sonoseg recipe``); the network's run with the candidates' seed adopts
the chosen candidate's model instead of training it again (``sonoseg.train.adopt_identical_run``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from sonoseg.errors import SonosegError
from sonoseg.scoring import kept_row

CRITERION = "lowest validation loss"


def select(histories: dict[float, str | Path]) -> tuple[float, pd.DataFrame]:
    """Pick the candidate with the lowest best validation loss (the loss early stopping keeps);
    ties go to the larger weight decay (the simpler model)."""
    rows = []
    for decay, path in histories.items():
        best = kept_row(pd.read_csv(path))
        rows.append(
            {
                "weight_decay": decay,
                "best_val_loss": float(best["val_loss"]),
                "val_dice_at_best": float(best["val_dice"]),
                "best_epoch": int(best["epoch"]),
            }
        )
    candidates = pd.DataFrame(rows).sort_values(["best_val_loss", "weight_decay"], ascending=[True, False])
    return float(candidates.iloc[0]["weight_decay"]), candidates


def write_selection(network: str, histories: dict[float, str | Path], out: str | Path) -> tuple[float, pd.DataFrame]:
    """The selection file: the chosen weight decay, the criterion and every candidate's numbers."""
    chosen, table = select(histories)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(
        json.dumps(
            {
                "network": network,
                "weight_decay": chosen,
                "criterion": CRITERION,
                "candidates": table.to_dict("records"),
            },
            indent=2,
        )
    )
    return chosen, table


def read_selection(path: str | Path) -> dict:
    try:
        selection = json.loads(Path(path).read_text())
        float(selection["weight_decay"])
        selection["candidates"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SonosegError(f"{path}: not a weight-decay selection ({type(exc).__name__}: {exc})") from None
    return selection


def choices_table(selection_files: list[str | Path]) -> pd.DataFrame:
    """Every network's candidates, one row each, the chosen one marked (tables/weight_decay.csv). Each
    cross-validation fold chooses on its own validation part: the fold comes from the workflow's file
    name, weight_decay/<network>/fold<k>.json ('' for another name)."""
    rows = []
    for path in selection_files:
        selection = read_selection(path)
        fold = re.fullmatch(r"fold(\d+)", Path(path).stem)
        for candidate in selection["candidates"]:
            rows.append(
                {
                    "network": selection["network"],
                    "fold": fold[1] if fold else "",
                    "chosen": candidate["weight_decay"] == selection["weight_decay"],
                    "criterion": selection["criterion"],
                    **candidate,
                }
            )
    return pd.DataFrame(rows)
