"""Each single training's Dice per test set (mean over images with a lesion), from a run's long table:
the per-seed numbers README.md quotes. python docs/results/quick_ensemble/per_seed.py"""
from pathlib import Path

import pandas as pd

for run in ("bf16", "fp32", "bf16_2ffca2a", "fp32_2ffca2a", "bf16_37dd7e7", "fp32_37dd7e7"):
    folder = Path(__file__).parent / run
    table = pd.read_csv(folder / "per_image.csv.gz")
    # A network's own trainings: its in-domain rows, and on an external set the rows of its own run's models
    # (model_from the network), not the augmentation choice's candidates (model_from <network>--augment-*),
    # which carry the same method and seed (this script mixed them into Lighter U-net @1's seed 0 before
    # the sixth session of 2026-12-06).
    own = (table["kind"] == "network") | ((table["kind"] == "external") & (table["model_from"] == table["method"]))
    singles = table[own & ~table["tta"] & table["members"].isna()]
    singles = singles[~singles["truth_empty"]].assign(test_set=lambda t: t["dataset"].fillna("in-domain"))
    dice = singles.groupby(["test_set", "method", "seed"])["dice"].mean().unstack("seed").round(3)
    dice.to_csv(folder / "per_seed.csv")
