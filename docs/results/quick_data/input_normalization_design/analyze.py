"""Family means and paired differences (by patient, bootstrap 95 % CI) of the per-image normalization
design runs against the quick study's own runs (same seed, recipe and data: c8500a7, fp32), on the
phantom's test images and pymust_far. pymust_heldout is not read (the baseline's rows are filtered)."""
import sys
from pathlib import Path
import numpy as np, pandas as pd
base = pd.read_csv(sys.argv[1])
base = base[base["run"].str.fullmatch(r"(unet|light_unet|lighter_unet_c128|lighter_unet_c1)(--on-pymust_far)?")]
base = base.assign(network=base["method"], set=np.where(base["run"].str.contains("pymust_far"), "pymust_far", "phantom_test"), mode="none")
assert not base["run"].str.contains("heldout").any()
rows = [base[["network", "set", "mode", "sample_id", "patient", "dice"]]]
for f in sorted(Path(sys.argv[2]).glob("*.per_image.csv")):
    rows.append(pd.read_csv(f)[["network", "set", "mode", "sample_id", "patient", "dice"]])
d = pd.concat(rows)
print("mean Dice (one seed each)\n", d.pivot_table(index=["set", "network"], columns="mode", values="dice").round(3).to_string())
rng = np.random.default_rng(0)
for mode in sorted(set(d["mode"]) - {"none"}):
    for s in ("phantom_test", "pymust_far"):
        w = d[d["set"] == s].pivot_table(index=["patient", "sample_id"], columns=["mode", "network"], values="dice")
        nets = [n for n in w[mode].columns if n in w["none"].columns]
        diff = (w[mode][nets] - w["none"][nets]).mean(axis=1).groupby(level="patient").mean()
        boots = [diff.sample(len(diff), replace=True, random_state=rng.integers(1 << 31)).mean() for _ in range(5000)]
        print(f"{mode:9s} {s:13s} family ({len(nets)} networks) {diff.mean():+.3f} [{np.percentile(boots, 2.5):+.3f}, {np.percentile(boots, 97.5):+.3f}] over {len(diff)} patients")
