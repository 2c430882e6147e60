"""The seed probe's numbers (SUMMARY.md): mean Dice over images with a lesion per set, precision, epoch
budget, variant and network; and the paired differences (ensemble of three minus the mean of its three
singles; 15 against 30 epochs; bf16 against fp32), 95 % CI by patient (bootstrap, 2,000 resamples,
seed 0).
    python docs/results/quick_data/seed_ensemble_design/analyze.py > .../results/analysis.txt"""
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
table = pd.concat(pd.read_csv(p) for p in sorted((HERE / "results").glob("scores_*.csv.gz")))
table["precision"] = table["precision"].fillna("fp32") if "precision" in table else "fp32"
table = table[table["lesion"]]
SINGLES = ["s0", "s1", "s2"]


def by_patient_ci(frame: pd.DataFrame, column: str, rng) -> tuple[float, float, float]:
    """Mean of ``column`` over images, and its 95 % CI resampling patients."""
    per_patient = frame.groupby("patient")[column].agg(["sum", "count"])
    draws = rng.integers(0, len(per_patient), size=(2000, len(per_patient)))
    sums, counts = per_patient["sum"].to_numpy()[draws].sum(1), per_patient["count"].to_numpy()[draws].sum(1)
    low, high = np.percentile(sums / counts, [2.5, 97.5])
    return frame[column].mean(), low, high


means = table.groupby(["set", "precision", "epochs", "combo", "network"])["dice"].mean().unstack("network")
means["family"] = means.mean(axis=1)
print("Mean Dice over images with a lesion (s = one training, e01 / e012 = the ensemble of seeds 0-1 / 0-2)")
print(means.round(3).to_string())

wide = table.pivot_table(
    index=["set", "precision", "epochs", "network", "sample_id", "patient"], columns="combo", values="dice"
)
wide = wide.reset_index()
wide["singles"] = wide[SINGLES].mean(axis=1)
wide["ensemble_gain"] = wide["e012"] - wide["singles"]
rng = np.random.default_rng(0)
print("\nEnsemble of three minus the mean of its singles, paired by image [95 % CI by patient]")
for (set_name, precision, epochs), frame in wide.groupby(["set", "precision", "epochs"]):
    family = frame.groupby(["sample_id", "patient"], as_index=False)["ensemble_gain"].mean()
    cells = [f"{n}: {by_patient_ci(f, 'ensemble_gain', rng)[0]:+.3f}" for n, f in frame.groupby("network")]
    mean, low, high = by_patient_ci(family, "ensemble_gain", rng)
    print(f"  {set_name:13s} {precision} {epochs} epochs  family {mean:+.3f} [{low:+.3f}, {high:+.3f}]   " + ", ".join(cells))

print("\n15 against 30 epochs, fp32 (the mean of three singles each), paired by image [95 % CI by patient]")
fp32 = wide[wide["precision"] == "fp32"]
budget = fp32.pivot_table(index=["set", "network", "sample_id", "patient"], columns="epochs", values="singles").reset_index()
budget["gain"] = budget[15] - budget[30]
for set_name, frame in budget.groupby("set"):
    family = frame.groupby(["sample_id", "patient"], as_index=False)["gain"].mean()
    mean, low, high = by_patient_ci(family, "gain", rng)
    print(f"  {set_name:13s} family {mean:+.3f} [{low:+.3f}, {high:+.3f}]")

if (wide["precision"] == "bf16").any():
    print("\nbf16 against fp32 at 30 epochs (the mean of three singles each), paired by image [95 % CI by patient]")
    at30 = wide[wide["epochs"] == 30]
    both = at30.pivot_table(index=["set", "network", "sample_id", "patient"], columns="precision", values="singles")
    both = both.reset_index()
    both["gain"] = both["bf16"] - both["fp32"]
    for set_name, frame in both.groupby("set"):
        family = frame.groupby(["sample_id", "patient"], as_index=False)["gain"].mean()
        mean, low, high = by_patient_ci(family, "gain", rng)
        cells = [f"{n}: {f['gain'].mean():+.3f}" for n, f in frame.groupby("network")]
        print(f"  {set_name:13s} family {mean:+.3f} [{low:+.3f}, {high:+.3f}]   " + ", ".join(cells))
