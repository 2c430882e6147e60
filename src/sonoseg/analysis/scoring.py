"""The two rules that every summary, table and figure shares, kept in one place (no torch import,
so the plotting commands stay light): which epoch's weights training kept, and which test images
have a lesion (the tables' Dice and HD95 are means over those; images without one are reported apart).
"""

from __future__ import annotations

import pandas as pd


def kept_row(history: pd.DataFrame) -> pd.Series:
    """The history row of the epoch whose weights training kept: the lowest validation loss (the first
    one on ties), as ``sonoseg.training.train`` keeps them."""
    return history.loc[history["val_loss"].idxmin()]


def kept_epoch(history: pd.DataFrame) -> int:
    return int(kept_row(history)["epoch"])


def empty_side(metrics: pd.DataFrame, side: str) -> pd.Series:
    """Which rows of a per-image metrics table have an empty ``side`` ("truth" or "prediction") mask:
    the ``<side>_empty`` column, else read from the HD95 policy (both_empty, penalty_empty_<side>),
    else none."""
    if f"{side}_empty" in metrics:
        return metrics[f"{side}_empty"].astype(str).str.lower() == "true"
    if "hd95_policy" in metrics:
        return metrics["hd95_policy"].astype(str).isin(["both_empty", f"penalty_empty_{side}"])
    return pd.Series(False, index=metrics.index)
