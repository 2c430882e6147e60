"""SUMMARY.md's rule applied to results/scores.csv.gz: gamma-selected minus plain, per network on the
phantom sets, and the family on the three external development sets together (mean over the models of
a network, then the networks; 95 % CI resampling patients within each set, paired by image)."""
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
table = pd.read_csv(HERE / "results/scores.csv.gz")
table["gain"] = table["gamma"] - table["plain"]
rng = np.random.default_rng(0)


def family_gain(rows: pd.DataFrame, resamples: int = 2000) -> tuple[float, float, float]:
    per_image = rows.groupby(["network", "set", "patient", "sample_id"])["gain"].mean().reset_index()
    by_patient = per_image.groupby(["set", "patient", "network"])["gain"].agg(["sum", "count"]).reset_index()

    def estimate(frame):
        totals = frame.groupby("network")[["sum", "count"]].sum()
        return float((totals["sum"] / totals["count"]).mean())

    draws = []
    groups = {s: g for s, g in by_patient.groupby("set")}
    for _ in range(resamples):
        picked = []
        for frame in groups.values():
            patients = frame["patient"].unique()
            chosen = rng.choice(patients, len(patients))
            picked.append(pd.concat([frame[frame["patient"] == p] for p in chosen]))
        draws.append(estimate(pd.concat(picked)))
    return estimate(by_patient), *np.percentile(draws, [2.5, 97.5])


for precision, rows in table.groupby("precision"):
    phantom = rows[rows["set"].isin(["fresh", "phantom_val"])]
    print(f"{precision}: phantom, gamma - plain by network (rule 1: none below -0.015)")
    print(phantom.groupby("network")["gain"].mean().round(3).to_string())
    external = rows[rows["set"].isin(["pymust_far", "pymust_dev", "pymust_check"])]
    mean, low, high = family_gain(external, resamples=300)
    print(f"{precision}: external development sets, family gain {mean:+.3f} [{low:+.3f}, {high:+.3f}] (rule 2: >= +0.03, CI above 0)\n")
