"""Dice on the development set (pymust_far) by lesion type, from design runs already committed: which
lesions the U-net family misses off the phantom, and whether any change tried so far moved those.

An analysis of committed scores; nothing is trained or predicted. Reads only pymust_far's rows (the
development set) and its committed manifest (data/external/pymust_far/: the lesion type of each scan);
pymust_heldout is read by none of it.

    python docs/results/quick_data/lesion_type_design/analyze.py > docs/results/quick_data/lesion_type_design/results/analysis.txt
"""
import glob
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
DESIGNS = HERE.parent
FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
HARD = ["echogenic_rim", "heterogeneous"]


def lesion_types() -> pd.Series:
    """sample_id (as the study names it: images__<file stem>) -> lesion type, from the committed set's metadata."""
    root = Path("data/external/pymust_far")
    table = pd.read_csv(next(root.glob("*.csv")))
    stem = table.iloc[:, 0].astype(str).map(lambda name: Path(name).stem)
    return pd.Series(table["lesion_type"].values, index="images__" + stem)


def quick_study(tag: str) -> pd.DataFrame:
    """The quick study's single trainings on pymust_far, from its committed long table."""
    table = pd.read_csv(DESIGNS / tag / "per_image.csv.gz")
    table = table[table["run"].isin([f"{n}--on-pymust_far" for n in FAMILY])]
    return table.assign(network=table["run"].str.replace("--on-pymust_far", ""), arm=tag)[["network", "arm", "sample_id", "dice"]]


def by_type(table: pd.DataFrame, types: pd.Series, group: list[str]) -> pd.DataFrame:
    table = table.assign(lesion_type=table["sample_id"].map(types))
    assert table["lesion_type"].notna().all(), "a scan without a lesion type"
    return table.groupby([*group, "lesion_type"])["dice"].mean().unstack().round(3)


def main() -> None:
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    types = lesion_types()
    print("pymust_far, scans per lesion type:", types.value_counts().sort_index().to_dict())

    print("\n1. make study's single trainings (the family, one each), mean Dice by lesion type")
    studies = pd.concat(quick_study(tag) for tag in ("119ac79_bf16", "a2bd2eb_bf16", "119ac79_fp32", "a2bd2eb_fp32"))
    print(by_type(studies, types, ["arm"]))

    print("\n2. the clean epochs (paired_draws_design, family.py: 14 trainings a precision and arm), mean Dice")
    frames = [pd.read_csv(f) for f in sorted(glob.glob(str(DESIGNS / "paired_draws_design/results/family_*.csv.gz")))]
    paired = pd.concat(frames).drop_duplicates(["precision", "network", "arm", "seed", "set", "sample_id"])
    paired = paired[(paired["set"] == "pymust_far") & paired["arm"].isin(["paper", "ultrasound", "ultrasound_clean0"])]
    print(by_type(paired, types, ["precision", "arm"]))

    print("\n3. the augmentation's strengths (augmentation_strength_design, fp32, seed 0; base = f545910_fp32's trainings)")
    rows = []
    for path in glob.glob(str(DESIGNS / "augmentation_strength_design/results/*.per_image.csv")):
        arm, rest = Path(path).name.removesuffix(".per_image.csv").split("__")
        network, seed = rest.rsplit("_seed", 1)
        if int(seed) == 0 and arm in ("contrast0", "p75", "rim_strong", "texture35"):
            scored = pd.read_csv(path)
            rows.append(scored[scored["set"] == "pymust_far"].assign(network=network, arm=arm)[["network", "arm", "sample_id", "dice"]])
    base = quick_study("f545910_fp32").assign(arm="base")
    print(by_type(pd.concat([base, *rows]), types, ["arm"]))


if __name__ == "__main__":
    main()
