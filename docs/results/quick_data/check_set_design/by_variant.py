"""The U-net family's mean Dice on the check set per scanner setting (variant), for the committed
three-seed studies' models (SUMMARY.md): single trainings, their flip-averaged twins and ensembles.
Reads the studies' per-image rows on the check set (results/quick_ensemble_{bf16,fp32}_check_rows.csv.gz,
the collect stage's long form) and the set's patients.csv; writes results/quick_ensemble_family_by_variant.csv.

    python docs/results/quick_data/check_set_design/by_variant.py
"""
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
FAMILY = ("unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1")
variant_of = pd.read_csv(HERE / "pymust_check/patients.csv").set_index("patient")["variant"]
tables = []
for precision in ("bf16", "fp32"):
    rows = pd.read_csv(HERE / f"results/quick_ensemble_{precision}_check_rows.csv.gz")
    rows["variant"] = rows["patient"].map(variant_of)
    rows["kind2"] = rows["run"].str.extract(r"--(ensemble|tta)--")[0].fillna("single")
    rows["network"] = rows["run"].str.split("--").str[0]
    family = rows[rows["network"].isin(FAMILY) & ~rows["run"].str.contains("augment-")]
    table = family.groupby(["network", "kind2", "variant"])["dice"].mean().unstack("variant")
    table["all"] = family.groupby(["network", "kind2"])["dice"].mean()
    table.insert(0, "precision", precision)
    tables.append(table.round(3))
pd.concat(tables).to_csv(HERE / "results/quick_ensemble_family_by_variant.csv")
