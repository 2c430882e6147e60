"""The arms' paired differences against the paper arm (SUMMARY.md): per seed, the mean Dice of each
set; over seeds, the mean difference, its sd and a 95 % CI (bootstrap over seeds, then patients).
family.py's tables (a network and a precision column): per precision and network, and the networks'
mean ("family": per seed and patient, the mean over the networks of the difference).

    python docs/results/quick_data/paired_draws_design/analyze.py results/scores_*.csv.gz
    python docs/results/quick_data/paired_draws_design/analyze.py results/family_*.csv.gz

REFERENCE (environment; default paper): the arm the others are paired against."""
import os
import sys

import numpy as np
import pandas as pd

table = pd.concat(pd.read_csv(f) for f in sys.argv[1:])
groups = [c for c in ("precision", "network") if c in table.columns]
if groups:
    family = table.assign(network="family").groupby(
        ["precision", "network", "arm", "seed", "set", "patient", "sample_id"], as_index=False)["dice"].mean()
    if table["network"].nunique() > 1:
        table = pd.concat([table, family])
    means = table.groupby([*groups, "set", "arm", "seed"])["dice"].mean().unstack("arm")
else:
    means = table.groupby(["set", "arm", "seed"])["dice"].mean().unstack("arm")
print("mean Dice per seed\n", means.round(3).to_string(), "\n")
REFERENCE = os.environ.get("REFERENCE", "paper")
rng = np.random.default_rng(0)
rows = []
for keys, per_set in table.groupby([*groups, "set"]):
    wide = per_set.pivot_table(index=["seed", "patient", "sample_id"], columns="arm", values="dice")
    seeds = wide.index.get_level_values("seed").unique().to_numpy()
    for arm in [a for a in wide.columns if a != REFERENCE]:
        diff = (wide[arm] - wide[REFERENCE]).groupby(level=["seed", "patient"]).mean()
        per_seed = diff.groupby(level="seed").mean()
        boot = []
        for _ in range(2000):
            drawn = rng.choice(seeds, len(seeds))
            values = []
            for s in drawn:
                patients = diff.loc[s]
                values.append(patients.iloc[rng.integers(0, len(patients), len(patients))].mean())
            boot.append(np.mean(values))
        rows.append({**dict(zip([*groups, "set"], keys if isinstance(keys, tuple) else (keys,))), "arm": arm,
                     "seeds": len(seeds), "mean_difference": per_seed.mean(),
                     "sd_over_seeds": per_seed.std(ddof=1) if len(seeds) > 1 else np.nan,
                     "ci_low": np.quantile(boot, 0.025), "ci_high": np.quantile(boot, 0.975), "worst_seed": per_seed.min()})
print(f"arm minus {REFERENCE}, paired by image\n", pd.DataFrame(rows).round(3).to_string(index=False))
