"""The reading SUMMARY.md set before scoring: each arm (rim_echogenic, then rim_always) minus base, paired by seed and image, on
pymust_far's echogenic-rim scans, its other scans and the phantom's validation images; per seed too.

    python docs/results/quick_data/rim_exposure_design/analyze.py > docs/results/quick_data/rim_exposure_design/results/analysis.txt
"""
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent


def main() -> None:
    pd.set_option("display.width", 200)
    for arm, names in (
        ("rim_echogenic", ["scores_0-5"]),
        ("rim_always", ["scores_base_rim_always_0-5"]),
        ("rim_always", ["scores_base_rim_always_0-5", "scores_base_rim_always_6-11"]),  # seeds 0-11
    ):
        scores = pd.concat(pd.read_csv(HERE / f"results/{name}.csv.gz") for name in names)
        print(f"==================== {arm} minus base, seeds {scores['seed'].min()}-{scores['seed'].max()}\n")
        read(scores, arm)
        print()


def read(scores: pd.DataFrame, arm: str) -> None:
    assert set(scores["set"]) == {"phantom_val", "pymust_far"} and set(scores["arm"]) == {"base", arm}
    scores["group"] = scores["set"].where(
        scores["set"] != "pymust_far",
        "pymust_far, " + scores["lesion_type"].eq("echogenic_rim").map({True: "echogenic rim", False: "other scans"}),
    )
    paired = scores.pivot_table(index=["group", "seed", "sample_id"], columns="arm", values="dice")
    paired["difference"] = paired[arm] - paired["base"]
    per_seed = paired.groupby(["group", "seed"])[["base", arm, "difference"]].mean()
    print(f"Mean Dice per seed and the paired difference ({arm} - base):\n")
    print(per_seed.round(3).to_string())
    overall = per_seed.groupby("group").agg(
        base=("base", "mean"), **{arm: (arm, "mean")}, difference=("difference", "mean"),
        seeds_up=("difference", lambda d: int((d > 0).sum())), seeds=("base", "size"),
    )
    print(f"\nMean over the {scores['seed'].nunique()} seeds:\n")
    print(overall.round(3).to_string())
    whole = scores[scores["set"] == "pymust_far"].groupby("arm")["dice"].mean()
    print(f"\npymust_far, every scan: base {whole['base']:.3f}, {arm} {whole[arm]:.3f}, difference {whole[arm] - whole['base']:+.3f}")
    print("\nBy lesion type on pymust_far (mean over seeds):\n")
    far = scores[scores["set"] == "pymust_far"]
    print(far.groupby(["lesion_type", "arm"])["dice"].mean().unstack().round(3).to_string())


if __name__ == "__main__":
    main()
