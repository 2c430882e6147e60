"""Gamma selection at inference (SUMMARY.md): every design model of the adopted recipe, each image of
the development sets predicted plainly and with the input's grey levels chosen per image, both through
the quick study's scale rule; one row per model and image, written to results/scores.csv.gz.

    PYTHONPATH=src .venv/bin/python docs/results/quick_data/intensity_selection_design/design.py
"""
import re
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
MODELS = HERE.parent / "paired_draws_design/results"
PROBE, FRESH, CHECK = Path("results/seedprobe30"), Path("results/phantom_seed1"), Path("results/quick_ensemble")
SCALES, SHRINK_ABOVE, FOUND_ABOVE = (1.0, 0.875, 0.75, 0.625), 1.0, 1.3  # config/quick.yaml's predict
GAMMAS = (1.0, 0.7, 1.4)  # the plain input first: it keeps ties


def sets() -> dict:
    """Name -> (manifest, split, part, cache); development data only."""
    return {
        **{
            f"fresh_{part}": (FRESH / "data/manifest.csv", FRESH / "data/split.csv", part,
                              FRESH / f"data/cache/inpaint/fold0/{part}.npz")
            for part in ("train", "val", "test")
        },
        "phantom_val": (PROBE / "data/manifest.csv", PROBE / "data/split.csv", "val",
                        PROBE / "data/cache/inpaint/fold0/val.npz"),
        **{
            name: (root / f"external/{name}/manifest.csv", root / f"external/{name}/split.csv", "test",
                   root / f"external/{name}/cache/inpaint/test.npz")
            for name, root in (("pymust_far", PROBE), ("pymust_dev", FRESH), ("pymust_check", CHECK))
        },
    }


def gamma_selected(run):
    """The run on the input at each gamma, per image the prediction with the most confident lesion."""
    from sonoseg.serving import infer

    def selected(batch: np.ndarray) -> np.ndarray:
        best = run(batch)
        best_confidence = infer.lesion_confidence(best)
        for gamma in GAMMAS[1:]:
            probability = run(np.power(batch, gamma, dtype=np.float32))
            confidence = infer.lesion_confidence(probability)
            better = confidence > best_confidence
            best = np.where(better[:, None, None], probability, best)
            best_confidence = np.where(better, confidence, best_confidence)
        return best

    return selected


def job(model: Path) -> pd.DataFrame:
    import cv2
    import torch

    torch.set_num_threads(1)
    from sonoseg.analysis.evaluate import dice
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.data.preprocess import load_cache
    from sonoseg.serving import infer
    from sonoseg.serving.modelio import images_to_tensor

    network, seed = re.fullmatch(r"(.+)_ultrasound_seed(\d+)\.pt", model.name).groups()
    predictor = infer.model_predictor([model], "cpu")
    limit = infer.area_limit(predictor, SCALES, SHRINK_ABOVE, str(model))
    plain = infer.scale_adaptive(predictor.run, SCALES, str(model), limit, FOUND_ABOVE)
    variants = {"plain": plain, "gamma": gamma_selected(plain)}
    rows = []
    for name, (manifest, split_csv, part, cache) in sets().items():
        samples = split.samples_of_part(manifest, split_csv, part, 0).set_index("sample_id")
        arrays = load_cache(cache)
        images = images_to_tensor(arrays["images"]).numpy()
        maps = {k: np.concatenate([b for _, b in infer.in_batches(run, images)]) for k, run in variants.items()}
        for i, sample_id in enumerate(str(s) for s in arrays["sample_ids"]):
            row = samples.loc[sample_id]
            truth = read_mask(row["mask"]).pixels
            scores = {}
            for key, p in maps.items():
                full = cv2.resize(p[i].astype(np.float32), (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
                scores[key] = dice(infer.postprocessed(full > 0.5, "area", "keep_one"), truth)
            rows.append({"precision": model.parent.name.removeprefix("models_"), "network": network, "seed": int(seed),
                         "set": "fresh" if name.startswith("fresh") else name, "sample_id": sample_id,
                         "patient": row["patient"], **scores})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    models = sorted(p for folder in ("models_fp32", "models_bf16") for p in (MODELS / folder).glob("*_ultrasound_seed*.pt"))
    with Pool(2) as pool:
        table = pd.concat(pool.map(job, models, chunksize=1))
    (HERE / "results").mkdir(exist_ok=True)
    table.to_csv(HERE / "results/scores.csv.gz", index=False)
    print(len(models), "models;", table.groupby(["precision", "set"])[["plain", "gamma"]].mean().round(3).to_string())
