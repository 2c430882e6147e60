"""The four inference probes (SUMMARY.md): mean Dice per set and precision (the family's twelve single
trainings per precision: four networks x three seeds), and each variant minus the study's rule, paired
by image, family mean, 95 % CI by patient (bootstrap, 2,000 resamples, seed 0).
    python docs/results/quick_data/inference_probes_design/analyze.py > .../results/analysis.txt"""
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
PROBES = {  # file -> (the study's column, the variants)
    "threshold": ("dice_0.5", ["dice_0.45", "dice_0.4", "dice_0.35", "dice_0.3", "dice_0.25", "dice_0.2"]),
    "component_rule": ("area", ["mass", "peak", "mean", "all", "oracle"]),
    "fragment_merge": ("keep_one", ["close1", "close2", "close3", "near1", "near2", "near3", "hull"]),
    "mc_dropout": ("dice_0", ["dice_4", "dice_16"]),
}
rng = np.random.default_rng(0)


def family_ci(frame: pd.DataFrame, column: str) -> tuple[float, float, float]:
    family = frame.groupby(["sample_id", "patient"])[column].mean().reset_index()
    per_patient = family.groupby("patient")[column].agg(["sum", "count"])
    draws = rng.integers(0, len(per_patient), size=(2000, len(per_patient)))
    boot = per_patient["sum"].to_numpy()[draws].sum(1) / per_patient["count"].to_numpy()[draws].sum(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return family[column].mean(), low, high


for probe, (study_rule, variants) in PROBES.items():
    table = pd.read_csv(HERE / f"results/{probe}.csv.gz")
    table["precision"] = np.where(table["study"].str.endswith("bf16"), "bf16", "fp32")
    print(f"== {probe}: mean Dice (the study's rule: {study_rule})")
    print(table.groupby(["set", "precision"])[[study_rule, *variants]].mean().round(3).to_string())
    print(f"   minus {study_rule}, family [95 % CI by patient]")
    for (set_name, precision), frame in table.groupby(["set", "precision"]):
        cells = []
        for variant in variants:
            mean, low, high = family_ci(frame.assign(d=frame[variant] - frame[study_rule]), "d")
            cells.append(f"{variant} {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
        print(f"   {set_name:12s} {precision}: " + "; ".join(cells))
    print()
