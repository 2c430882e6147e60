"""Exploratory, not part of the rule (SUMMARY.md): bf16 minus fp32 for the same network, augmentation arm
and seed, paired by image, on every set the paired-draws design models were scored on (the fresh phantom,
the phantom's validation images, pymust_far, pymust_dev) and on the check set. Per set: the mean over
the trainings of each patient's difference, a 95 % CI by bootstrap over patients only (the trainings
held fixed, so it understates the spread between seeds), and the share of the 42 training pairs in
which bf16 scored lower.

    python docs/results/quick_data/check_set_design/precision_gap.py > .../results/precision_gap.txt
"""
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
ARMS = ["paper", "ultrasound", "ultrasound_clean0"]
design = [f for f in (HERE.parent / "paired_draws_design/results").glob("family_*.csv.gz") if "clean10" not in f.name]
tables = [pd.read_csv(f) for f in design] + [pd.read_csv(HERE / "results/scores_check.csv.gz")]
table = pd.concat(tables)
table = table[table["arm"].isin(ARMS)].drop_duplicates(["precision", "network", "arm", "seed", "set", "sample_id"])
wide = table.pivot_table(
    index=["network", "arm", "seed", "set", "patient", "sample_id"], columns="precision", values="dice"
).dropna()
wide["difference"] = wide["bf16"] - wide["fp32"]
rng = np.random.default_rng(0)
for name, rows in wide.groupby(level="set"):
    per_training = rows.groupby(level=["network", "arm", "seed", "patient"])["difference"].mean()
    per_patient = per_training.groupby(level="patient").mean()
    boot = [per_patient.iloc[rng.integers(0, len(per_patient), len(per_patient))].mean() for _ in range(2000)]
    trainings = per_training.groupby(level=["network", "arm", "seed"]).mean()
    print(
        f"{name:12s} bf16 - fp32 {per_patient.mean():+.3f} [{np.quantile(boot, 0.025):+.3f}, "
        f"{np.quantile(boot, 0.975):+.3f}]  training pairs {len(trainings)}, bf16 lower in {(trainings < 0).mean():.2f}"
    )
