"""Score the paired-draws design's models on the check set (SUMMARY.md) as that design scores its sets
(design.score_model: the quick study's scales, size-aware rule and 1.3 trigger, keep-one, Dice at the
original size). One row per model and image, with the arm, seed, network and precision the model's file
name and folder give; written to results/scores_check.csv.gz.

    PYTHONPATH=src:docs/results/quick_data/paired_draws_design \\
        .venv/bin/python docs/results/quick_data/check_set_design/score_check.py CACHE_STUDY
CACHE_STUDY: the study folder whose external/pymust_check/ holds the set's manifest, split and cache.
"""
import re
import sys
from multiprocessing import Pool
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
DESIGN = HERE.parent / "paired_draws_design/results"
STUDY = Path(sys.argv[1]) / "external/pymust_check"


def describe(model: Path) -> dict:
    """arm, seed, network, precision of a design model from its folder and file name."""
    if model.parent.name == "models":  # design.py: <arm>_seed<s>.pt, Lighter U-net @1, fp32
        arm, seed = re.fullmatch(r"(.+)_seed(\d+)\.pt", model.name).groups()
        return {"precision": "fp32", "network": "lighter_unet_c1", "arm": f"design_{arm}", "seed": int(seed)}
    precision = model.parent.name.removeprefix("models_")
    networks = "unet|light_unet|lighter_unet_c128|lighter_unet_c1"
    pattern = rf"({networks})_(paper|ultrasound(?:_clean\d+)?)_seed(\d+)\.pt"
    network, arm, seed = re.fullmatch(pattern, model.name).groups()
    return {"precision": precision, "network": network, "arm": arm, "seed": int(seed)}


def job(model: Path) -> pd.DataFrame:
    import torch

    torch.set_num_threads(1)
    import design

    design.sets = lambda: {"pymust_check": (STUDY / "manifest.csv", STUDY / "split.csv", "test",
                                            STUDY / "cache/inpaint/test.npz")}
    return design.score_model(model).assign(**describe(model))


if __name__ == "__main__":
    models = sorted(p for folder in ("models", "models_fp32", "models_bf16") for p in (DESIGN / folder).glob("*.pt"))
    with Pool(2) as pool:
        table = pd.concat(pool.map(job, models, chunksize=4))
    manifest = pd.read_csv(STUDY / "manifest.csv")
    included = manifest[manifest["status"] == "included"]  # the manifest also lists the files it did not read
    table["variant"] = table["sample_id"].map(included.set_index("sample_id")["meta_variant"])
    (HERE / "results").mkdir(exist_ok=True)
    table.to_csv(HERE / "results/scores_check.csv.gz", index=False)
    print(len(models), "models,", table["sample_id"].nunique(), "images")
