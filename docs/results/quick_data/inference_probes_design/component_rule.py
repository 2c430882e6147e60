"""Which connected component to keep (SUMMARY.md): the seed probe's U-net family single trainings
(../seed_ensemble_design/, three seeds in fp32 and in bf16), their probability as infer.predict makes
it (the quick study's scales and size-aware rule), thresholded at 0.5 at the original size, and each
rule of keeping one component scored, with the best component (an oracle reading the truth, for
scale only) beside them. Development sets only: the phantom's validation and test images and
pymust_far (pymust_heldout is not among them).

    PYTHONPATH=src python docs/results/quick_data/inference_probes_design/component_rule.py seedprobe30 seedprobe30bf16"""
import numpy as np
from probe import main
from scipy import ndimage

from sonoseg.analysis.evaluate import dice


def components(probability: np.ndarray, truth: np.ndarray, dice) -> dict:
    """Dice of the mask kept by each rule: the largest area (the study's), the largest probability mass,
    the highest peak, the highest mean probability; all components; the best one (oracle)."""
    mask = probability > 0.5
    labels, count = ndimage.label(mask)
    out = {"components": count, "all": dice(ndimage.binary_fill_holes(mask), truth)}
    if count <= 1:
        for rule in ("area", "mass", "peak", "mean", "oracle"):
            out[rule] = out["all"]
        return out
    index = np.arange(1, count + 1)
    scores = {
        "area": ndimage.sum(mask, labels, index),
        "mass": ndimage.sum(probability, labels, index),
        "peak": ndimage.maximum(probability, labels, index),
        "mean": ndimage.mean(probability, labels, index),
    }
    each = [dice(ndimage.binary_fill_holes(labels == k), truth) for k in index]
    for rule, values in scores.items():
        out[rule] = each[int(np.argmax(values))]
    out["oracle"] = max(each)
    return out


def score(maps, truth):
    return components(maps[""], truth, dice)


if __name__ == "__main__":
    table = main("component_rule", score,
                 ["area", "mass", "peak", "mean", "all", "oracle"])
    print(table.assign(multi=table.components > 1).groupby(["set", "study"]).multi.mean().round(3).to_string())
