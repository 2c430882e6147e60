"""Would training several seeds and keeping the one the development set likes best carry a network
further off the phantom? Reads the committed per-image scores of the design trainings (no training,
no new prediction): ../paired_draws_design/results/family_*.csv.gz (the fresh phantom, the phantom's
validation images, pymust_far, pymust_dev) and ../check_set_design/results/scores_check.csv.gz (the
check set). pymust_heldout is in neither file.

For each group of trainings that differ only by seed (precision, network, arm), each training's mean
Dice per set; then, over every k-subset of the group's seeds, the training that scores best on the
selecting set, and its Dice on each other set minus the subset's mean (what picking it gains over
taking a seed blindly). Also the within-group correlation of the sets' per-training Dice.

Run from this folder: python analyze.py > results/analysis.txt
"""

import glob
import itertools

import numpy as np
import pandas as pd

KEYS = ["precision", "network", "arm"]


def per_training() -> pd.DataFrame:
    tables = [pd.read_csv(path) for path in sorted(glob.glob("../paired_draws_design/results/family_*_0-*.csv.gz"))]
    rows = pd.concat(tables).drop_duplicates(["set", "sample_id", *KEYS, "seed"])
    check = pd.read_csv("../check_set_design/results/scores_check.csv.gz")
    check = check[~check.arm.str.startswith("design_")]  # design.py's patched arms: not in the family tables
    rows = pd.concat([rows, check[rows.columns]])
    assert "pymust_heldout" not in set(rows["set"]), "the held-out set must not be read"
    return rows.groupby([*KEYS, "seed", "set"]).dice.mean().unstack()


def selection_gain(table: pd.DataFrame, select: str, target: str, k: int) -> tuple[float, float, int]:
    """Mean over groups and k-subsets of (target Dice of the best-on-select training - subset mean);
    also the best possible (an oracle picking on target itself), and how many subsets."""
    gains, oracle = [], []
    for _, group in table.groupby(level=KEYS):
        group = group[[select, target]].dropna()
        for subset in itertools.combinations(range(len(group)), k):
            picked = group.iloc[list(subset)]
            gains.append(picked[target].iloc[picked[select].values.argmax()] - picked[target].mean())
            oracle.append(picked[target].max() - picked[target].mean())
    return float(np.mean(gains)), float(np.mean(oracle)), len(gains)


def main() -> None:
    table = per_training()
    sets = ["fresh", "phantom_val", "pymust_far", "pymust_dev", "pymust_check"]
    print(f"trainings: {len(table)} in {table.groupby(level=KEYS).ngroups} groups of seeds\n")
    centred = table[sets].groupby(level=KEYS).transform(lambda column: column - column.mean())
    print("correlation of per-training Dice across trainings of one group (seed effect only):")
    print(centred.corr().round(2).to_string(), "\n")
    for k in (2, 3):
        print(f"best of {k} seeds, picked on a set, minus a seed taken blindly (target set's Dice); [oracle]:")
        for select in ("pymust_far", "phantom_val"):
            for target in sets:
                if target == select:
                    continue
                gain, oracle, count = selection_gain(table, select, target, k)
                print(f"  pick on {select:<12} -> {target:<13} {gain:+.4f}  [oracle {oracle:+.4f}]  subsets {count}")
        print()


if __name__ == "__main__":
    main()
