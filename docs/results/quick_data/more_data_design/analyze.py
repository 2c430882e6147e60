"""More data at the same steps (SUMMARY.md): mean Dice per study, set, combination and network, and the
paired difference 96 patients x 15 epochs minus 48 x 30 (the mean of three singles each, and the
ensembles), family mean, 95 % CI by patient (bootstrap, 2,000 resamples, seed 0).
    python docs/results/quick_data/more_data_design/analyze.py > .../results/analysis.txt"""
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
table = pd.concat(pd.read_csv(p) for p in sorted((HERE / "results").glob("scores_*.csv.gz")))
table["precision"] = np.where(table["study"].str.endswith("bf16"), "bf16", "fp32")
table["data"] = np.where(table["study"].str.startswith("moredata96"), "96x15", "48x30")
means = table.groupby(["set", "precision", "data", "combo", "network"])["dice"].mean().unstack("network")
means["family"] = means.mean(axis=1)
print("Mean Dice (s0-s2 one training each, e012 their ensemble)")
print(means.round(3).to_string())

wide = table.pivot_table(index=["set", "precision", "network", "sample_id", "patient"], columns=["data", "combo"], values="dice")
rng = np.random.default_rng(0)
print("\n96 x 15 minus 48 x 30, paired by image, family mean [95 % CI by patient]")
for (set_name, precision), frame in wide.groupby(level=["set", "precision"]):
    for label, pick in (("singles", ["s0", "s1", "s2"]), ("ensemble", ["e012"])):
        gain = (frame["96x15"][pick].mean(axis=1) - frame["48x30"][pick].mean(axis=1)).rename("gain").reset_index()
        family = gain.groupby(["sample_id", "patient"])["gain"].mean().reset_index()
        per_patient = family.groupby("patient")["gain"].agg(["sum", "count"])
        draws = rng.integers(0, len(per_patient), size=(2000, len(per_patient)))
        boot = per_patient["sum"].to_numpy()[draws].sum(1) / per_patient["count"].to_numpy()[draws].sum(1)
        low, high = np.percentile(boot, [2.5, 97.5])
        cells = ", ".join(f"{n}: {g['gain'].mean():+.3f}" for n, g in gain.groupby("network"))
        print(f"  {set_name:15s} {precision} {label:8s} {family['gain'].mean():+.3f} [{low:+.3f}, {high:+.3f}]   {cells}")

sd = table[table.combo.isin(["s0", "s1", "s2"])].groupby(["set", "precision", "data", "network", "combo"])["dice"].mean()
print("\nSpread of one training's mean Dice over the three seeds (sd), per network; family mean of the sds")
spread = sd.groupby(level=["set", "precision", "data", "network"]).std().unstack("network")
spread["family"] = spread.mean(axis=1)
print(spread.round(3).to_string())
