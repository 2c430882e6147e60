"""The fair study with and without the size-aware scale selection, image by image: the committed fair
study (docs/results/fair/, no scale selection) against the same study run again with
config/fair_scales.yaml merged over it. Its trainings are the same (the script checks their epochs and
kept epochs); so each image's Dice is paired by run, fold, seed and image, and the difference is
averaged per patient, its 95 % CI a bootstrap over patients (5,000 resamples, seed 0). In-domain and
on pymust_heldout, the external set both runs tested; images with a lesion only.
From the repository root: python <this file> BEFORE_DIR AFTER_DIR (folders with per_image.csv.gz and
trainings.csv)"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

before_dir, after_dir = Path(sys.argv[1]), Path(sys.argv[2])
KEY = ["run", "fold", "seed", "sample_id"]
FACTS = ["run", "fold", "seed", "epochs", "kept_epoch", "ended_by", "learning_rate"]
trained = [pd.read_csv(folder / "trainings.csv")[FACTS].sort_values(FACTS[:3]).reset_index(drop=True)
           for folder in (before_dir, after_dir)]
if not trained[0].equals(trained[1]):
    sys.exit("the two studies' trainings differ (epochs, kept epochs, learning rates): not the same models")
tables = [pd.read_csv(folder / "per_image.csv.gz", low_memory=False) for folder in (before_dir, after_dir)]
rows = []
for table in tables:
    kept = table[(table["truth_empty"] == False) & (table["marks"] == "inpaint")  # noqa: E712
                 & table["kind"].isin(["network", "tta", "ensemble", "external"])
                 & table["dataset"].isin(["in-domain", "pymust_heldout"])]
    rows.append(kept.set_index(KEY)[["method", "kind", "tta", "dataset", "patient", "dice"]])
paired = rows[0].join(rows[1][["dice"]].rename(columns={"dice": "dice_after"}), how="inner")
if len(paired) != len(rows[0]) or len(paired) != len(rows[1]):
    sys.exit(f"the studies' images do not pair: {len(rows[0])} and {len(rows[1])} rows, {len(paired)} paired")
paired["difference"] = paired["dice_after"] - paired["dice"]
paired["variant"] = np.where(paired.index.get_level_values("run").str.contains("--ensemble"), "ensemble",
                             np.where(paired["tta"], "tta", "single"))
rng = np.random.default_rng(0)
out = []
for (method, variant, dataset), part in paired.groupby(["method", "variant", "dataset"]):
    by_patient = part.groupby("patient")["difference"].mean().to_numpy()
    boots = rng.choice(by_patient, (5000, len(by_patient))).mean(axis=1)
    out.append({"network": method, "variant": variant, "set": dataset, "images x runs": len(part),
                "patients": len(by_patient), "Dice without": round(part["dice"].mean(), 3),
                "Dice with": round(part["dice_after"].mean(), 3),
                "difference": f"{by_patient.mean():+.3f} [{np.percentile(boots, 2.5):+.3f}, {np.percentile(boots, 97.5):+.3f}]",
                "images changed": int((part["difference"] != 0).sum())})
print(pd.DataFrame(out).to_markdown(index=False))
