"""More phantom data at the same number of optimizer steps (SUMMARY.md): the U-net family trained on
96 phantom patients for 15 epochs against 48 patients for 30 epochs, on the development sets only
(the phantom's images that neither study trained or validated on, and pymust_far; pymust_heldout is
not among them). Each prediction takes the study's path: infer.predict with the quick study's scales
and size-aware rule, keep_one (every fold's choice on validation in these runs), then evaluate (medpy).

The two studies split different patients, so the in-domain set is the 96-patient study's test
patients that the 48-patient study neither trained nor validated on (the phantom draws a patient from
[seed, patient] whatever the count: patient i is the same images in both studies).

Run from the repository root with src on PYTHONPATH, after the trainings (SUMMARY.md):
    python docs/results/quick_data/more_data_design/score.py seedprobe30 moredata96 [seedprobe30bf16 moredata96bf16]"""
import sys
from multiprocessing import Pool
from pathlib import Path

import pandas as pd

FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
COMBOS = {"s0": [0], "s1": [1], "s2": [2], "e012": [0, 1, 2]}
NEW = Path("results/moredata96")  # whose caches (same preprocessing) every study's models predict


def common_phantom_samples(old: Path) -> pd.DataFrame:
    """The 96-patient study's test samples whose patients the 48-patient study did not train or validate on."""
    from sonoseg.data import split

    new_test = split.samples_of_part(NEW / "data/manifest.csv", NEW / "data/split.csv", "test", 0)
    old_split = pd.read_csv(old / "data/split.csv")
    seen = set(old_split.loc[old_split["split"].isin(["train", "val"]), "patient"].astype(str))
    keep = ~new_test["patient"].astype(str).isin(seen)
    return new_test[keep.to_numpy()]


def job(args):
    import torch

    torch.set_num_threads(1)
    from sonoseg.analysis import evaluate
    from sonoseg.data import split
    from sonoseg.serving import infer

    study, net, combo = args
    R = Path(f"results/{study}")
    old = Path("results/seedprobe30")
    models = [R / f"runs/{net}/fold0/seed{s}/model.pt" for s in COMBOS[combo]]
    predictor = infer.model_predictor(models, "cpu")
    sets = {
        "phantom_common": (
            split.samples_of_part(NEW / "data/manifest.csv", NEW / "data/split.csv", "test", 0),
            common_phantom_samples(old),
            NEW / "data/cache/inpaint/fold0/test.npz",
        ),
        "pymust_far": (
            split.samples_of_part(NEW / "external/pymust_far/manifest.csv", NEW / "external/pymust_far/split.csv", "test", 0),
            None,
            NEW / "external/pymust_far/cache/inpaint/test.npz",
        ),
    }
    rows = []
    for name, (samples, scored, cache) in sets.items():
        scored = samples if scored is None else scored
        out = R / f"probe_predictions/{net}/{combo}/{name}"
        infer.predict(models, cache, samples, out, "area", "cpu", postprocess="keep_one", predictor=predictor,
                      scales=(1.0, 0.875, 0.75, 0.625), shrink_above=1.0)
        metrics = evaluate.evaluate(out, scored)
        rows.append(metrics.assign(patient=scored["patient"].astype(str).values, set=name, study=study,
                                   network=net, combo=combo))
    return pd.concat(rows)


if __name__ == "__main__":
    studies = sys.argv[1:]
    jobs = [(study, n, c) for study in studies for n in FAMILY for c in COMBOS]
    with Pool(2) as pool:
        table = pd.concat(pool.map(job, jobs))
    for study in studies:
        table[table.study == study].to_csv(Path(__file__).parent / f"results/scores_{study}.csv.gz", index=False)
    print(table.groupby(["set", "study", "combo", "network"])["dice"].mean().unstack("network").round(3)
          .assign(family=lambda d: d.mean(axis=1).round(3)).to_string())
