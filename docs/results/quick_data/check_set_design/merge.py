"""Join make_check.py's variant folders into one set in the study's folder layout (SUMMARY.md):
images/, masks/, patients.csv (with a ``variant`` column, which ingest keeps as meta_variant) and each
variant's simulation record as simulation_<variant>.json.

    python docs/results/quick_data/check_set_design/merge.py VARIANTS_DIR OUT
"""
import shutil
import sys
from pathlib import Path

import pandas as pd

source, out = Path(sys.argv[1]), Path(sys.argv[2])
variants = sorted(p for p in source.iterdir() if (p / "patients.csv").is_file())
for sub in ("images", "masks"):
    (out / sub).mkdir(parents=True, exist_ok=True)
sheets = []
for folder in variants:
    sheet = pd.read_csv(folder / "patients.csv")
    for name in sheet["image"]:
        for sub in ("images", "masks"):
            shutil.copy2(folder / sub / name, out / sub / name)
    shutil.copy2(folder / "simulation.json", out / f"simulation_{folder.name}.json")
    sheets.append(sheet.assign(variant=folder.name))
merged = pd.concat(sheets, ignore_index=True)
if merged["image"].duplicated().any():
    raise SystemExit(f"duplicate image names across variants: {merged['image'][merged['image'].duplicated()].tolist()}")
merged.to_csv(out / "patients.csv", index=False)
print(f"{out}: {len(merged)} images from {len(variants)} variants", merged.groupby("variant").size().to_dict())
