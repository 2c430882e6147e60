"""Each in-domain training's own Dice (mean over its own test patients' images with a lesion), from the
study's long table: the per-training numbers README.md quotes beside Table 2's per-seed values, which pool
each seed's two folds. python docs/results/fair/per_training.py"""

from pathlib import Path

import pandas as pd

folder = Path(__file__).parent
table = pd.read_csv(folder / "per_image.csv.gz")
trained = table[(table["kind"] == "network") & (table["dataset"].fillna("in-domain") == "in-domain")]
trained = trained[~trained["truth_empty"] & ~trained["tta"]]
dice = trained.groupby(["run", "fold", "seed"])["dice"].mean().round(4).rename("dice").reset_index()
dice.to_csv(folder / "per_training.csv", index=False)
