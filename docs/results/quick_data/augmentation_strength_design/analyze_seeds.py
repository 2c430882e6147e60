"""Augmentation-strength variants against the quick study's augmentation, per seed (the same seed's
base training), family mean over networks and seeds, bootstrap over patients. pymust_heldout not read."""
import sys
from pathlib import Path
import numpy as np, pandas as pd
study = pd.read_csv(sys.argv[1])
study = study[study["run"].str.fullmatch(r"(unet|light_unet|lighter_unet_c128|lighter_unet_c1)(--on-pymust_far)?")]
assert not study["run"].str.contains("heldout").any()
study = study.assign(network=study["method"], mode="base", seed=0,
                     set=np.where(study["run"].str.contains("pymust_far"), "pymust_far", "phantom_test"))
cols = ["network", "set", "mode", "seed", "sample_id", "patient", "dice"]
frames = [study[cols]] + [pd.read_csv(f)[cols] for folder in sys.argv[2:] for f in sorted(Path(folder).glob("*.per_image.csv"))]
d = pd.concat(frames).drop_duplicates(["network", "set", "mode", "seed", "sample_id"])
print(d.pivot_table(index=["set", "network"], columns=["mode", "seed"], values="dice").round(3).to_string())
rng = np.random.default_rng(0)
for mode in sorted(set(d["mode"]) - {"base"}):
    for s in ("phantom_test", "pymust_far"):
        sub = d[d["set"] == s]
        w = sub.pivot_table(index=["patient", "sample_id"], columns=["mode", "seed", "network"], values="dice")
        pairs = [(seed, net) for (m, seed, net) in w.columns if m == mode and ("base", seed, net) in w.columns]
        diff = pd.concat([w[(mode, seed, net)] - w[("base", seed, net)] for seed, net in pairs], axis=1).mean(axis=1)
        diff = diff.groupby(level="patient").mean()
        boots = [diff.sample(len(diff), replace=True, random_state=rng.integers(1 << 31)).mean() for _ in range(5000)]
        seeds = sorted({seed for seed, _ in pairs})
        print(f"{mode:10s} {s:13s} {len(pairs)} trainings (seeds {seeds}) {diff.mean():+.3f} [{np.percentile(boots, 2.5):+.3f}, {np.percentile(boots, 97.5):+.3f}] over {len(diff)} patients")
