"""Tables of the input-size study from scratch_gpu/results (the GPU run's files). Run from the repo root
with the venv. Paired differences use the package's statistics (sonoseg.analysis.stats.hierarchical_comparison:
patients resampled, then trainings/seeds, paired by seed) and, beside it, a plain bootstrap by patient of the
seed-averaged per-image difference (seeds held fixed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg.analysis import stats

RES = Path("scratch_gpu/results")
NETS = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
SETS = ["phantom_test", "pymust_far", "pymust_dev"]
OUT = []


def emit(text=""):
    OUT.append(text)
    print(text)


def md(frame: pd.DataFrame, floatfmt=".3f") -> str:
    return frame.to_markdown(floatfmt=floatfmt)


def patient_bootstrap(diff_by_image: pd.Series, patient: pd.Series, resamples=10_000, seed=0):
    """Mean over images of the difference; CI: patients resampled with replacement (their images with them)."""
    frame = pd.DataFrame({"d": diff_by_image, "p": patient})
    sums = frame.groupby("p")["d"].agg(["sum", "size"])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), (resamples, len(sums)))
    reps = sums["sum"].to_numpy()[idx].sum(1) / sums["size"].to_numpy()[idx].sum(1)
    return float(frame["d"].mean()), *np.percentile(reps, [2.5, 97.5])


def main():
    runs = pd.read_csv(RES / "runs.csv").sort_values(["network", "size", "seed"])
    pi = pd.read_csv(RES / "per_image.csv")
    assert not pi["set"].str.contains("heldout").any()
    assert len(runs) == 36 and len(pi) == 36 * 56
    solo = pd.read_csv(RES / "solo.csv")

    emit("## Per run (Dice with the post-processing chosen on validation; mean over the set's images)\n")
    cols = ["network", "size", "seed", "epochs", "best_epoch", "postprocess", "train_seconds",
            "phantom_test_dice", "pymust_far_dice", "pymust_dev_dice"]
    emit(md(runs[cols].set_index(["network", "size", "seed"])))

    emit("\n## Mean over seeds (sd over the 3 seeds' means), chosen post-processing\n")
    g = runs.groupby(["network", "size"])
    table = pd.DataFrame({
        s: g[f"{s}_dice"].mean().map("{:.3f}".format) + " (" + g[f"{s}_dice"].std().map("{:.3f}".format) + ")"
        for s in SETS
    })
    fam = runs.groupby("size")
    for s in SETS:
        table.loc[("family", "32"), s] = None
    table = table.drop(("family", "32"))
    famrows = pd.DataFrame({
        s: fam[f"{s}_dice"].mean().map("{:.3f}".format) for s in SETS
    })
    famrows.index = pd.MultiIndex.from_tuples([("FAMILY", i) for i in famrows.index])
    emit(md(pd.concat([table, famrows])))

    emit("\n## Family mean Dice by post-processing (12 trainings per size)\n")
    rows = []
    for size, sub in pi.groupby("size"):
        for s in SETS:
            x = sub[sub["set"] == s]
            rows.append({"size": size, "set": s, "chosen": x["dice_chosen"].mean(), "keep_one": x["dice_keep_one"].mean(),
                         "none": x["dice_none"].mean()})
    emit(md(pd.DataFrame(rows).pivot(index="set", columns="size", values=["chosen", "keep_one", "none"])))
    emit("\nPost-processing chosen (keep_one / none) per size: " + "; ".join(
        f"{s}: {int((x == 'keep_one').sum())}/{int((x == 'none').sum())}" for s, x in runs.groupby("size")["postprocess"]))

    emit("\n## Paired differences vs 32 (Dice, chosen post-processing), mean over images [95% CI]\n")
    emit("hier = sonoseg.analysis.stats.hierarchical_comparison (patients, then seeds resampled; paired by seed); "
         "pat = patients resampled, seeds fixed (seed-averaged per image). 10,000 resamples.\n")
    rows = []
    for s in SETS:
        sub = pi[pi["set"] == s]
        long_net = sub.assign(method=sub["network"] + "@" + sub["size"].astype(str), run=sub["seed"].astype(str),
                              dice=sub["dice_chosen"])
        long_fam = sub.assign(method="family@" + sub["size"].astype(str),
                              run=sub["network"] + "/" + sub["seed"].astype(str), dice=sub["dice_chosen"])
        for who, long in [*((n, long_net[long_net["network"] == n]) for n in NETS), ("FAMILY", long_fam)]:
            prefix = "family" if who == "FAMILY" else who
            for size in (48, 64):
                h = stats.hierarchical_comparison(long, f"{prefix}@{size}", f"{prefix}@32")
                wide = long.groupby(["sample_id", "size"])["dice"].mean().unstack()
                patient = long.drop_duplicates("sample_id").set_index("sample_id")["patient"].loc[wide.index]
                m, lo, hi = patient_bootstrap(wide[size] - wide[32], patient)
                rows.append({"set": s, "network": who, "size": f"{size}-32", "mean_diff": h["mean_difference"],
                             "hier_CI": f"[{h['ci_low']:+.3f}, {h['ci_high']:+.3f}]", "p_signflip": h["p"],
                             "pat_CI": f"[{lo:+.3f}, {hi:+.3f}]", "patients": h["patients"], "images": h["images"]})
    diffs = pd.DataFrame(rows)
    emit(md(diffs.set_index(["set", "network", "size"]), floatfmt="+.3f"))
    diffs.to_csv(RES / "paired_differences.csv", index=False)

    emit("\n## pymust_far per lesion type: family mean Dice (12 trainings x images), chosen post-processing\n")
    far = pi[pi["set"] == "pymust_far"]
    lt = far.pivot_table(index="lesion_type", columns="size", values="dice_chosen", aggfunc="mean")
    lt["images"] = far[far["size"] == 32].groupby("lesion_type")["sample_id"].nunique() // 1
    lt["images"] = far.groupby("lesion_type")["sample_id"].nunique()
    lt["48-32"], lt["64-32"] = lt[48] - lt[32], lt[64] - lt[32]
    rows = []
    for t, sub in far.groupby("lesion_type"):
        long = sub.assign(method="family@" + sub["size"].astype(str), run=sub["network"] + "/" + sub["seed"].astype(str),
                          dice=sub["dice_chosen"])
        r = {"lesion_type": t}
        for size in (48, 64):
            h = stats.hierarchical_comparison(long, f"family@{size}", "family@32")
            r[f"{size}-32 CI"] = f"[{h['ci_low']:+.3f}, {h['ci_high']:+.3f}]"
        rows.append(r)
    lt = lt.join(pd.DataFrame(rows).set_index("lesion_type"))
    emit(md(lt))
    emit("\nper network x lesion type (pymust_far, mean over seeds):\n")
    emit(md(far.pivot_table(index=["lesion_type"], columns=["network", "size"], values="dice_chosen", aggfunc="mean")
            .T.unstack(0) if False else far.pivot_table(index=["network", "size"], columns="lesion_type",
                                                        values="dice_chosen", aggfunc="mean")))
    emit("\npymust_dev per lesion type (family mean):\n")
    dev = pi[pi["set"] == "pymust_dev"]
    emit(md(dev.pivot_table(index="lesion_type", columns="size", values="dice_chosen", aggfunc="mean")
            .join(dev.groupby("lesion_type")["sample_id"].nunique().rename("images"))))
    emit("\nphantom test per lesion type (family mean):\n")
    ph = pi[pi["set"] == "phantom_test"]
    emit(md(ph.pivot_table(index="lesion_type", columns="size", values="dice_chosen", aggfunc="mean")
            .join(ph.groupby("lesion_type")["sample_id"].nunique().rename("images"))))

    emit("\n## GPU seconds\n")
    emit("Study: 36 trainings in 12 concurrent processes on one H200 (97 s wall for all 36 incl. scoring); "
         "train_seconds = train() wall time per run under that concurrency:\n")
    emit(md(runs.pivot_table(index="network", columns="size", values="train_seconds", aggfunc="mean")))
    emit("\nepochs run (mean over seeds):\n")
    emit(md(runs.pivot_table(index="network", columns="size", values="epochs", aggfunc="mean"), floatfmt=".1f"))
    emit("\nAlone on the GPU (one process, seed 0, 10 fixed epochs; s per epoch after the first; "
         "unet@32 was the process's first training and its total includes warm-up):\n")
    emit(md(solo.pivot_table(index="network", columns="size", values="mean_epoch_seconds_after_first")))
    emit(md(solo.pivot_table(index="network", columns="size", values="train_seconds"), floatfmt=".2f"))
    (RES / "tables.md").write_text("\n".join(OUT) + "\n")




def sensitivity():
    """Family paired differences with the post-processing fixed (keep_one for all, none for all)."""
    pi = pd.read_csv(RES / "per_image.csv")
    rows = []
    for option in ("keep_one", "none"):
        for s in SETS:
            sub = pi[pi["set"] == s]
            long = sub.assign(method="family@" + sub["size"].astype(str),
                              run=sub["network"] + "/" + sub["seed"].astype(str), dice=sub[f"dice_{option}"])
            for size in (48, 64):
                h = stats.hierarchical_comparison(long, f"family@{size}", "family@32")
                rows.append({"postprocess": option, "set": s, "size": f"{size}-32", "mean_diff": h["mean_difference"],
                             "hier_CI": f"[{h['ci_low']:+.3f}, {h['ci_high']:+.3f}]", "p_signflip": h["p"]})
    text = "\n## Family paired differences with the post-processing fixed (sensitivity)\n\n" + pd.DataFrame(rows).set_index(
        ["postprocess", "set", "size"]).to_markdown(floatfmt="+.3f")
    print(text)
    with open(RES / "tables.md", "a") as handle:
        handle.write(text + "\n")


if __name__ == "__main__":
    main()
    sensitivity()
