"""The lesion threshold (SUMMARY.md): the U-net family's single trainings of the seed probe
(../seed_ensemble_design/, three seeds in fp32 and in bf16) thresholded at 0.5 and below, on the
development sets only: the phantom's validation and test images and pymust_far (pymust_heldout is not
among them). The probability is the study's (infer.predict's: the quick study's scales and size-aware
rule, whose own lesion test stays at 0.5); only the final mask's threshold moves, then keep_one.

    PYTHONPATH=src python docs/results/quick_data/inference_probes_design/threshold.py seedprobe30 seedprobe30bf16"""
import sys
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
THRESHOLDS = [0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2]
SCALES = (1.0, 0.875, 0.75, 0.625)


def sets(R: Path) -> dict:
    return {
        "phantom_val": (R / "data/manifest.csv", R / "data/split.csv", "val", R / "data/cache/inpaint/fold0/val.npz"),
        "phantom_test": (R / "data/manifest.csv", R / "data/split.csv", "test", Path("results/quick/data/cache/inpaint/fold0/test.npz")),
        "pymust_far": (R / "external/pymust_far/manifest.csv", R / "external/pymust_far/split.csv", "test",
                       R / "external/pymust_far/cache/inpaint/test.npz"),
    }


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
        images = images_to_tensor(arrays["images"]).numpy()
        probabilities = np.concatenate([b for _, b in infer.in_batches(run, images)])
        for sample_id, probability in zip((str(s) for s in arrays["sample_ids"]), probabilities):
            row = samples.loc[sample_id]
            truth = read_mask(row["mask"]).pixels
            resized = cv2.resize(probability.astype(np.float32), (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
            out = {"study": study, "network": net, "seed": seed, "set": name, "sample_id": sample_id, "patient": row["patient"]}
            for t in THRESHOLDS:
                out[f"dice_{t}"] = dice(infer.postprocessed(resized > t, "area", "keep_one"), truth)
            rows.append(out)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    studies = sys.argv[1:]
    with Pool(2) as pool:
        table = pd.concat(pool.map(job, [(s, n, seed) for s in studies for n in FAMILY for seed in (0, 1, 2)]))
    table.to_csv(Path(__file__).parent / "results/threshold.csv.gz", index=False)
    cols = [f"dice_{t}" for t in THRESHOLDS]
    print(table.groupby(["set", "study", "network"])[cols].mean().round(3).to_string())
    print(table.groupby(["set", "study"])[cols].mean().round(3).to_string())
