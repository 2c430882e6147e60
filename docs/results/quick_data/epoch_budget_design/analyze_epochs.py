"""Tables of the epoch-budget study (max_epochs 60 vs 30, input 32, U-net family, seeds 0-2), adapted from
../analyze.py. Run from the repo root with PYTHONPATH=src: python scratch_gpu/epochs/analyze_epochs.py --res DIR.
Paired differences use the package's statistics (sonoseg.analysis.stats.hierarchical_comparison: patients
resampled, then trainings/seeds, paired by seed) and, beside it, a plain bootstrap by patient of the
seed-averaged per-image difference (seeds held fixed). Also checks the 30-epoch reruns against the previous
helper's size-32 runs (scratch_gpu/results) and the 60-epoch runs' first 30 epochs against the 30-epoch runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg.analysis import stats

NETS = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
SETS = ["phantom_test", "pymust_far", "pymust_dev"]
OUT = []


def emit(text=""):
    OUT.append(text)
    print(text, flush=True)


def md(frame: pd.DataFrame, floatfmt=".3f") -> str:
    try:
        return frame.to_markdown(floatfmt=floatfmt)
    except ImportError:
        return frame.to_string()


def patient_bootstrap(diff_by_image: pd.Series, patient: pd.Series, resamples=10_000, seed=0):
    """Mean over images of the difference; CI: patients resampled with replacement (their images with them)."""
    frame = pd.DataFrame({"d": diff_by_image, "p": patient})
    sums = frame.groupby("p")["d"].agg(["sum", "size"])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), (resamples, len(sums)))
    reps = sums["sum"].to_numpy()[idx].sum(1) / sums["size"].to_numpy()[idx].sum(1)
    return float(frame["d"].mean()), *np.percentile(reps, [2.5, 97.5])


def compare(sub: pd.DataFrame, who: str, value: str) -> dict:
    """e60 - e30 for one network (runs = seeds) or the family (runs = network/seed), on one set's rows."""
    if who == "FAMILY":
        long = sub.assign(method="family@e" + sub["budget"].astype(str),
                          run=sub["network"] + "/" + sub["seed"].astype(str), dice=sub[value])
        prefix = "family"
    else:
        long = sub[sub["network"] == who]
        long = long.assign(method=who + "@e" + long["budget"].astype(str), run=long["seed"].astype(str),
                           dice=long[value])
        prefix = who
    h = stats.hierarchical_comparison(long, f"{prefix}@e60", f"{prefix}@e30")
    wide = long.groupby(["sample_id", "budget"])["dice"].mean().unstack()
    patient = long.drop_duplicates("sample_id").set_index("sample_id")["patient"].loc[wide.index]
    m, lo, hi = patient_bootstrap(wide[60] - wide[30], patient)
    assert abs(m - h["mean_difference"]) < 1e-9
    return {"mean_diff": h["mean_difference"], "hier_CI": f"[{h['ci_low']:+.3f}, {h['ci_high']:+.3f}]",
            "hier_low": h["ci_low"], "hier_high": h["ci_high"], "p_signflip": h["p"],
            "pat_CI": f"[{lo:+.3f}, {hi:+.3f}]", "pat_low": lo, "pat_high": hi,
            "patients": h["patients"], "images": h["images"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--res", required=True)
    parser.add_argument("--prev", default="scratch_gpu/results")
    args = parser.parse_args()
    res, prev = Path(args.res), Path(args.prev)

    runs = pd.read_csv(res / "runs.csv").sort_values(["network", "budget", "seed"])
    pi = pd.read_csv(res / "per_image.csv")
    hist = pd.read_csv(res / "histories.csv")
    assert not pi["set"].str.contains("heldout").any()
    assert (runs["size"] == 32).all()
    emit(f"runs: {len(runs)} (expected 24); per-image rows: {len(pi)} (expected 24 x 56 = {24 * 56})\n")

    emit("## Per run (Dice with the post-processing chosen on validation; mean over the set's images)\n")
    cols = ["network", "budget", "seed", "epochs", "best_epoch", "ended_by", "postprocess", "train_seconds",
            "phantom_test_dice", "pymust_far_dice", "pymust_dev_dice"]
    emit(md(runs[cols].set_index(["network", "budget", "seed"])))

    emit("\n## Mean over seeds (sd over the 3 seeds' means), chosen post-processing\n")
    g = runs.groupby(["network", "budget"])
    table = pd.DataFrame({
        s: g[f"{s}_dice"].mean().map("{:.3f}".format) + " (" + g[f"{s}_dice"].std().map("{:.3f}".format) + ")"
        for s in SETS
    })
    fam = runs.groupby("budget")
    famrows = pd.DataFrame({s: fam[f"{s}_dice"].mean().map("{:.3f}".format) for s in SETS})
    famrows.index = pd.MultiIndex.from_tuples([("FAMILY", i) for i in famrows.index])
    emit(md(pd.concat([table, famrows])))

    emit("\n## Family mean Dice by post-processing (12 trainings per budget)\n")
    rows = []
    for budget, sub in pi.groupby("budget"):
        for s in SETS:
            x = sub[sub["set"] == s]
            rows.append({"budget": budget, "set": s, "chosen": x["dice_chosen"].mean(),
                         "keep_one": x["dice_keep_one"].mean(), "none": x["dice_none"].mean()})
    emit(md(pd.DataFrame(rows).pivot(index="set", columns="budget", values=["chosen", "keep_one", "none"])))
    emit("\nPost-processing chosen (keep_one / none) per budget: " + "; ".join(
        f"e{b}: {int((x == 'keep_one').sum())}/{int((x == 'none').sum())}" for b, x in runs.groupby("budget")["postprocess"]))
    same = runs.pivot_table(index=["network", "seed"], columns="budget", values="postprocess", aggfunc="first")
    emit(f"; same choice at 30 and 60 in {int((same[30] == same[60]).sum())} of {len(same)} pairs")

    emit("\n## Paired differences e60 - e30 (Dice), mean over images [95% CI]\n")
    emit("hier = sonoseg.analysis.stats.hierarchical_comparison (patients, then seeds resampled; paired by seed); "
         "pat = patients resampled, seeds fixed (seed-averaged per image). 10,000 resamples. "
         "pp: chosen = each run's validation choice; keep_one / none = held fixed for every run.\n")
    rows = []
    for value in ("dice_chosen", "dice_keep_one", "dice_none"):
        for s in SETS:
            sub = pi[pi["set"] == s]
            for who in [*NETS, "FAMILY"]:
                rows.append({"pp": value.replace("dice_", ""), "set": s, "network": who, **compare(sub, who, value)})
    diffs = pd.DataFrame(rows)
    diffs.to_csv(res / "paired_differences.csv", index=False)
    show = ["mean_diff", "hier_CI", "p_signflip", "pat_CI", "patients", "images"]
    emit(md(diffs[diffs["pp"] == "chosen"].set_index(["set", "network"])[show], floatfmt="+.3f"))
    emit("\nFixed post-processing (sensitivity):\n")
    emit(md(diffs[diffs["pp"] != "chosen"].set_index(["pp", "set", "network"])[show], floatfmt="+.3f"))

    emit("\n## pymust_far per lesion type: family mean Dice (12 trainings x images), chosen post-processing\n")
    far = pi[pi["set"] == "pymust_far"]
    lt = far.pivot_table(index="lesion_type", columns="budget", values="dice_chosen", aggfunc="mean")
    lt["images"] = far.groupby("lesion_type")["sample_id"].nunique()
    lt["60-30"] = lt[60] - lt[30]
    rows = []
    for t, sub in far.groupby("lesion_type"):
        r = {"lesion_type": t}
        for value in ("dice_chosen", "dice_keep_one"):
            c = compare(sub, "FAMILY", value)
            r[f"CI ({value.replace('dice_', '')})"] = c["hier_CI"]
            if value == "dice_keep_one":
                r["60-30 keep_one"] = c["mean_diff"]
        rows.append(r)
    lt = lt.join(pd.DataFrame(rows).set_index("lesion_type"))
    emit(md(lt))
    emit("\nper network x lesion type (pymust_far, mean over seeds, chosen):\n")
    emit(md(far.pivot_table(index=["network", "budget"], columns="lesion_type", values="dice_chosen", aggfunc="mean")))
    emit("\npymust_dev per lesion type (family mean):\n")
    dev = pi[pi["set"] == "pymust_dev"]
    emit(md(dev.pivot_table(index="lesion_type", columns="budget", values="dice_chosen", aggfunc="mean")
            .join(dev.groupby("lesion_type")["sample_id"].nunique().rename("images"))))
    emit("\nphantom test per lesion type (family mean):\n")
    ph = pi[pi["set"] == "phantom_test"]
    emit(md(ph.pivot_table(index="lesion_type", columns="budget", values="dice_chosen", aggfunc="mean")
            .join(ph.groupby("lesion_type")["sample_id"].nunique().rename("images"))))

    emit("\n## Epochs\n")
    emit(md(runs.pivot_table(index="network", columns="budget", values=["epochs", "best_epoch"], aggfunc="mean"),
            floatfmt=".1f"))
    emit("\nended_by counts (cap = max_epochs reached; rule = early stopping):\n")
    emit(md(runs.groupby(["budget", "ended_by"]).size().rename("runs").to_frame()))
    e60 = runs[runs["budget"] == 60]
    emit(f"\n60-epoch runs with best epoch > 30: {int((e60['best_epoch'] > 30).sum())} of {len(e60)}; "
         f"best epoch >= 55: {int((e60['best_epoch'] >= 55).sum())}")
    # validation trajectory: best val loss and val Dice at the kept epoch, per budget
    kept = hist.merge(runs[["network", "seed", "budget", "best_epoch"]], on=["network", "seed", "budget"])
    kept = kept[kept["epoch"] == kept["best_epoch"]]
    emit("\nvalidation (20 phantom images) at the kept epoch, mean over seeds:\n")
    emit(md(kept.pivot_table(index="network", columns="budget", values=["val_loss", "val_dice"], aggfunc="mean"),
            floatfmt=".4f"))
    # do the 60-epoch runs retrace the 30-epoch runs for the first 30 epochs?
    a = hist[hist["budget"] == 30].set_index(["network", "seed", "epoch"])["val_loss"]
    b = hist[hist["budget"] == 60].set_index(["network", "seed", "epoch"])["val_loss"]
    common = a.index.intersection(b.index)
    emit(f"\nmax |val_loss(e60) - val_loss(e30)| over the shared epochs: {float((a[common] - b[common]).abs().max()):.2e} "
         f"({len(common)} epoch rows)")

    emit("\n## Reproducibility: the 30-epoch reruns vs the previous helper's size-32 runs (same recipe, GPU)\n")
    try:
        old = pd.read_csv(prev / "runs.csv")
        old = old[old["size"] == 32].set_index(["network", "seed"])
        new = runs[runs["budget"] == 30].set_index(["network", "seed"])
        cmp = pd.DataFrame({"epochs_old": old["epochs"], "epochs_new": new["epochs"],
                            "best_old": old["best_epoch"], "best_new": new["best_epoch"],
                            "pp_old": old["postprocess"], "pp_new": new["postprocess"]})
        for s in SETS:
            cmp[f"{s}_diff"] = new[f"{s}_dice"] - old[f"{s}_dice"]
        emit(md(cmp, floatfmt="+.4f"))
        oldpi = pd.read_csv(prev / "per_image.csv")
        oldpi = oldpi[oldpi["size"] == 32].set_index(["network", "seed", "set", "sample_id"])["dice_keep_one"]
        newpi = pi[pi["budget"] == 30].set_index(["network", "seed", "set", "sample_id"])["dice_keep_one"]
        d = (newpi - oldpi.reindex(newpi.index)).abs()
        emit(f"\nper-image |Dice keep_one (rerun - previous)|: max {d.max():.2e}, mean {d.mean():.2e}, "
             f"images identical {int((d < 1e-12).sum())} of {len(d)}")
    except Exception as error:  # noqa: BLE001
        emit(f"(comparison failed: {error!r})")

    emit("\n## GPU seconds\n")
    emit("train_seconds = train() wall time per run with 12 concurrent processes on one H200:\n")
    emit(md(runs.pivot_table(index="network", columns="budget", values="train_seconds", aggfunc="mean"), floatfmt=".2f"))
    per_epoch = hist[hist["epoch"] > 1].groupby("budget")["seconds"].mean()
    emit("\nmean s per epoch (after the first, under that concurrency): " +
         ", ".join(f"e{b}: {v:.3f}" for b, v in per_epoch.items()))
    (res / "tables.md").write_text("\n".join(OUT) + "\n")


if __name__ == "__main__":
    main()
