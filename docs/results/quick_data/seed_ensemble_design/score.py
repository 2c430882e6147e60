"""Seed probe (SUMMARY.md): the U-net family's single trainings against their ensembles, on the
development sets only (the phantom's validation and test images, pymust_far; pymust_heldout is not
among them). Each prediction takes the study's path: infer.predict with the quick study's scales and
size-aware rule, keep_one, then evaluate (medpy).

Run from the repository root with src on PYTHONPATH, after the trainings of seeds30.yaml and/or
seeds15.yaml or seeds30bf16.yaml (SUMMARY.md); the phantom's test cache is the quick study's
(results/quick, same data):
    python docs/results/quick_data/seed_ensemble_design/score.py 30 15 30bf16"""
import re
import sys
from multiprocessing import Pool
from pathlib import Path
import pandas as pd

FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
COMBOS = {"s0": [0], "s1": [1], "s2": [2], "e01": [0, 1], "e012": [0, 1, 2]}

def sets(R):
    return {"phantom_val": (R/"data/manifest.csv", R/"data/split.csv", "val", R/"data/cache/inpaint/fold0/val.npz"),
            "phantom_test": (R/"data/manifest.csv", R/"data/split.csv", "test", Path("results/quick/data/cache/inpaint/fold0/test.npz")),
            "pymust_far": (R/"external/pymust_far/manifest.csv", R/"external/pymust_far/split.csv", "test", R/"external/pymust_far/cache/inpaint/test.npz")}

def parse(tag: str) -> tuple[int, str]:
    """'30' -> (30, 'fp32'); '30bf16' -> (30, 'bf16'): the probe's epoch budget and precision."""
    epochs, precision = re.fullmatch(r"(\d+)(\w*)", tag).groups()
    return int(epochs), precision or "fp32"


def job(args):
    import torch; torch.set_num_threads(1)
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.serving import infer
    from sonoseg.analysis import evaluate
    tag, net, combo = args
    E, precision = parse(tag)
    R = Path(f"results/seedprobe{tag}")
    models = [R/f"runs/{net}/fold0/seed{s}/model.pt" for s in COMBOS[combo]]
    pred = infer.model_predictor(models, "cpu")
    rows = []
    for name, (man, spl, part, cache) in sets(R).items():
        samples = split.samples_of_part(man, spl, part, 0)
        out = R / f"probe_predictions/{net}/{combo}/{name}"
        infer.predict(models, cache, samples, out, "area", "cpu", postprocess="keep_one", predictor=pred,
                      scales=(1.0, 0.875, 0.75, 0.625), shrink_above=1.0)
        m = evaluate.evaluate(out, samples)
        lesion = [read_mask(p).pixels.any() for p in samples["mask"]]
        m = m.assign(patient=samples["patient"].values, lesion=lesion, set=name, epochs=E, precision=precision, network=net, combo=combo)
        rows.append(m)
    return pd.concat(rows)

if __name__ == "__main__":
    tags = sys.argv[1:]  # e.g. 30 15 30bf16: results/seedprobe<tag>
    jobs = [(tag, n, c) for tag in tags for n in FAMILY for c in COMBOS]
    with Pool(2) as pool:
        table = pd.concat(pool.map(job, jobs))
    for tag in tags:
        E, precision = parse(tag)
        part = table[(table.epochs == E) & (table.precision == precision)]
        part.to_csv(Path(__file__).parent / f"results/scores_{tag}.csv.gz", index=False)
    t = table[table.lesion]
    print(t.groupby(["precision", "epochs", "set", "combo", "network"])["dice"].mean().unstack("network").round(3).assign(family=lambda d: d.mean(axis=1).round(3)).to_string())
