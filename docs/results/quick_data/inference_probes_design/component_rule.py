"""Which connected component to keep (SUMMARY.md): the seed probe's U-net family single trainings
(../seed_ensemble_design/, three seeds in fp32 and in bf16), their probability as infer.predict makes
it (the quick study's scales and size-aware rule), thresholded at 0.5 at the original size, and each
rule of keeping one component scored, with the best component (an oracle reading the truth, for
scale only) beside them. Development sets only: the phantom's validation and test images and
pymust_far (pymust_heldout is not among them).

    PYTHONPATH=src python docs/results/quick_data/inference_probes_design/component_rule.py seedprobe30 seedprobe30bf16"""
import sys
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
SCALES = (1.0, 0.875, 0.75, 0.625)


def sets(R: Path) -> dict:
    return {
        "phantom_val": (R / "data/manifest.csv", R / "data/split.csv", "val", R / "data/cache/inpaint/fold0/val.npz"),
        "phantom_test": (R / "data/manifest.csv", R / "data/split.csv", "test", Path("results/quick/data/cache/inpaint/fold0/test.npz")),
        "pymust_far": (R / "external/pymust_far/manifest.csv", R / "external/pymust_far/split.csv", "test",
                       R / "external/pymust_far/cache/inpaint/test.npz"),
    }


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


def job(args):
    import torch

    torch.set_num_threads(1)
    from sonoseg.analysis.evaluate import dice
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.data.preprocess import load_cache
    from sonoseg.serving import infer
    from sonoseg.serving.modelio import images_to_tensor

    study, net, seed = args
    R = Path(f"results/{study}")
    model = R / f"runs/{net}/fold0/seed{seed}/model.pt"
    predictor = infer.model_predictor([model], "cpu")
    run = infer.scale_adaptive(predictor.run, SCALES, str(model), infer.area_limit(predictor, SCALES, 1.0, str(model)))
    rows = []
    for name, (manifest, split_csv, part, cache) in sets(R).items():
        samples = split.samples_of_part(manifest, split_csv, part, 0).set_index("sample_id")
        arrays = load_cache(cache)
        probabilities = np.concatenate([b for _, b in infer.in_batches(run, images_to_tensor(arrays["images"]).numpy())])
        for sample_id, probability in zip((str(s) for s in arrays["sample_ids"]), probabilities):
            row = samples.loc[sample_id]
            truth = read_mask(row["mask"]).pixels
            resized = cv2.resize(probability.astype(np.float32), (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
            rows.append({"study": study, "network": net, "seed": seed, "set": name, "sample_id": sample_id,
                         "patient": row["patient"], **components(resized, truth, dice)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    studies = sys.argv[1:]
    with Pool(2) as pool:
        table = pd.concat(pool.map(job, [(s, n, seed) for s in studies for n in FAMILY for seed in (0, 1, 2)]))
    table.to_csv(Path(__file__).parent / "results/component_rule.csv.gz", index=False)
    cols = ["area", "mass", "peak", "mean", "all", "oracle"]
    print(table.groupby(["set", "study"])[cols].mean().round(3).to_string())
    print(table.groupby(["set", "study", "network"])[cols].mean().round(3).to_string())
    print(table.assign(multi=table.components > 1).groupby(["set", "study"]).multi.mean().round(3).to_string())
