"""size_rule_scan.py's rules over several trainings per network: the seed probe's three seeds of each
U-net family network (../seed_ensemble_design/), in each study given, on the phantom's validation images
and the development external set (pymust_far) only (scan_images.py reads no test image of either kind
and no held-out image). Each rule minus the quick study's (the most confident size, tried only when
the lesion at the input size is larger than every training lesion), paired by image, family mean over
the trainings of a study, 95 % CI by patient; and the largest validation loss of one training.
From the repository root: PYTHONPATH=src python <this file> RESULTS_DIR..."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scan_images import scanned_images, training_lesion_areas

from sonoseg.analysis.evaluate import dice
from sonoseg.serving import infer

FACTORS = (1.0, 0.875, 0.75, 0.625)
ADOPTED = "most confident, if the input's larger than q1.00"
rng = np.random.default_rng(0)


def rules(image: dict, limits: dict) -> dict:
    conf, area = image["conf"], image["area"]
    confident = max(FACTORS, key=lambda f: (conf[f], f))
    choices = {"input size": 1.0, "most confident": confident}  # a dict keeps this order in the output
    for q, limit in limits.items():
        choices[f"most confident, if the input's larger than q{q:.2f}"] = confident if area[1.0] > limit else 1.0
        choices[f"most confident, if either larger than q{q:.2f}"] = (
            confident if max(area[1.0], area[confident]) > limit else 1.0
        )
    # The second trigger's variants, at q1.00 (its limit L): the input's lesion over L, or the most confident
    # size's over k x L; over L and more confident than the input size by a margin; over L and k x the input's.
    limit, input_over = limits[1.0], area[1.0] > limits[1.0]
    for k in (1.1, 1.2, 1.3, 1.5):
        choices[f"input's over L, or found over {k} L"] = confident if input_over or area[confident] > k * limit else 1.0
    for margin in (0.01, 0.02):
        found = area[confident] > limit and conf[confident] - conf[1.0] >= margin
        choices[f"input's over L, or found over L, {margin} more confident"] = confident if input_over or found else 1.0
    found = area[confident] > limit and area[confident] > 1.3 * area[1.0]
    choices["input's over L, or found over L and 1.3 x the input's"] = confident if input_over or found else 1.0
    return choices


rows = []
for results in map(Path, sys.argv[1:]):
    train_areas = training_lesion_areas(results)
    limits = {q: float(np.quantile(train_areas, q)) for q in (0.9, 1.0)}
    for seed in (0, 1, 2):
        for image in scanned_images(results, FACTORS, seed):
            row = {"study": results.name, **{k: image[k] for k in ("set", "network", "seed", "sample_id", "patient")}}
            for label, f in rules(image, limits).items():
                mask = infer.probability_to_mask(image["probs"][f], *image["truth"].shape, "area", "keep_one")
                row[label] = dice(mask, image["truth"])
            rows.append(row)
d = pd.DataFrame(rows)
out = Path(__file__).parent / "size_rule_seeds.csv.gz"
d.to_csv(out, index=False)
cols = [c for c in d.columns if c not in ("study", "set", "network", "seed", "sample_id", "patient")]
pd.set_option("display.width", 250)
print("Mean Dice over the trainings (keep_one)")
print(d.groupby(["study", "set"])[cols].mean().round(3).T.to_string())

print(f"\nMinus '{ADOPTED}', family mean [95 % CI by patient]; the largest validation loss of one training")
for (study, set_name), frame in d.groupby(["study", "set"]):
    print(f"  {study} {set_name}")
    for rule in (c for c in cols if c != ADOPTED):
        diff = frame.assign(g=frame[rule] - frame[ADOPTED]).groupby(["sample_id", "patient"])["g"].mean().reset_index()
        per = diff.groupby("patient")["g"].agg(["sum", "count"])
        draws = rng.integers(0, len(per), size=(2000, len(per)))
        low, high = np.percentile(per["sum"].to_numpy()[draws].sum(1) / per["count"].to_numpy()[draws].sum(1), [2.5, 97.5])
        per_training = frame.groupby(["network", "seed"])[[rule, ADOPTED]].mean()
        worst = (per_training[rule] - per_training[ADOPTED]).min()
        print(f"    {rule:56s} {diff['g'].mean():+.3f} [{low:+.3f}, {high:+.3f}]   worst training {worst:+.3f}")
