"""Rounded fp32 against plain fp32 and bf16 (SUMMARY.md): per network, the mean of three singles each,
paired by image, 95 % CI by patient (bootstrap, 2,000 resamples, seed 0); and the ensembles of three.
    python docs/results/quick_data/bf16_rounding_design/analyze.py > .../results/analysis.txt"""
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
PROBE = HERE.parent / "seed_ensemble_design/results"
table = pd.concat(
    [pd.read_csv(PROBE / "scores_30.csv.gz").assign(arm="fp32"),
     pd.read_csv(PROBE / "scores_30bf16.csv.gz").assign(arm="bf16"),
     pd.read_csv(HERE / "results/scores_30round.csv.gz").assign(arm="fp32_rounded")]
)
table = table[table["lesion"] & table["network"].isin(["light_unet", "lighter_unet_c128"])]
rng = np.random.default_rng(0)

print("Mean Dice over images with a lesion: singles' mean (s0-s2) and ensemble of three (e012)")
singles = table[table["combo"].isin(["s0", "s1", "s2"])]
wide = singles.groupby(["set", "network", "arm", "sample_id", "patient"])["dice"].mean().unstack("arm").reset_index()
means = wide.groupby(["set", "network"])[["fp32", "fp32_rounded", "bf16"]].mean()
ens = table[table["combo"] == "e012"].groupby(["set", "network", "arm"])["dice"].mean().unstack("arm")
print(means.round(3).join(ens.round(3).add_suffix("_ensemble")).to_string())

print("\nfp32 rounded minus plain fp32, and minus bf16 (singles' mean), paired by image [95 % CI by patient]")
for (set_name, network), frame in wide.groupby(["set", "network"]):
    cells = []
    for other in ("fp32", "bf16"):
        diff = frame.assign(d=frame["fp32_rounded"] - frame[other]).groupby("patient")["d"].agg(["sum", "count"])
        draws = rng.integers(0, len(diff), size=(2000, len(diff)))
        boot = diff["sum"].to_numpy()[draws].sum(1) / diff["count"].to_numpy()[draws].sum(1)
        mean = diff["sum"].sum() / diff["count"].sum()
        low, high = np.percentile(boot, [2.5, 97.5])
        cells.append(f"- {other}: {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    print(f"  {set_name:13s} {network:18s} " + "   ".join(cells))
