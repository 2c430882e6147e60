"""What the four inference probes (SUMMARY.md) share: each U-net family single training of the seed
probe (../seed_ensemble_design/, seeds 0-2, in each study given), its probability made as
infer.predict makes it (the quick study's scales and size-aware rule), brought to each image's
original size, on the development sets only: the phantom's validation images, the quick study's
phantom test images and pymust_far (pymust_heldout is not among them). A probe gives the score of
one image's maps; ``main`` runs it over every training and writes results/<probe>.csv.gz."""
import sys
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
SCALES = (1.0, 0.875, 0.75, 0.625)


def sets(R: Path) -> dict:
    return {
        "phantom_val": (R / "data/manifest.csv", R / "data/split.csv", "val", R / "data/cache/inpaint/fold0/val.npz"),
        "phantom_test": (R / "data/manifest.csv", R / "data/split.csv", "test", Path("results/quick/data/cache/inpaint/fold0/test.npz")),
        "pymust_far": (R / "external/pymust_far/manifest.csv", R / "external/pymust_far/split.csv", "test",
                       R / "external/pymust_far/cache/inpaint/test.npz"),
    }


def job(args, score, runs=None, found_above=None):
    """One training's rows: ``score(maps, truth)`` per image, ``maps`` the probability at the original
    size of each run ``runs(model)`` gives (name -> the network's batch function, before the scale
    selection; default: the model's own, named ""). ``found_above``: the size-aware rule's second trigger
    (None: the rule alone, as the four probes of SUMMARY.md ran)."""
    import torch

    torch.set_num_threads(1)
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.data.preprocess import load_cache
    from sonoseg.serving import infer
    from sonoseg.serving.modelio import images_to_tensor

    study, net, seed = args
    R = Path(f"results/{study}")
    model = R / f"runs/{net}/fold0/seed{seed}/model.pt"
    predictor = infer.model_predictor([model], "cpu")
    limit = infer.area_limit(predictor, SCALES, 1.0, str(model))
    network_runs = runs(model) if runs else {"": predictor.run}
    rows = []
    for name, (manifest, split_csv, part, cache) in sets(R).items():
        samples = split.samples_of_part(manifest, split_csv, part, 0).set_index("sample_id")
        arrays = load_cache(cache)
        images = images_to_tensor(arrays["images"]).numpy()
        probabilities = {
            key: np.concatenate([b for _, b in infer.in_batches(infer.scale_adaptive(run, SCALES, str(model), limit, found_above), images)])
            for key, run in network_runs.items()
        }
        for i, sample_id in enumerate(str(s) for s in arrays["sample_ids"]):
            row = samples.loc[sample_id]
            truth = read_mask(row["mask"]).pixels
            maps = {
                key: cv2.resize(p[i].astype(np.float32), (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
                for key, p in probabilities.items()
            }
            rows.append({"study": study, "network": net, "seed": seed, "set": name, "sample_id": sample_id,
                         "patient": row["patient"], **score(maps, truth)})
    return pd.DataFrame(rows)


def main(probe: str, score, columns: list[str], runs=None, found_above=None) -> pd.DataFrame:
    """Every training of the studies named on the command line, two at a time; the table written to
    results/<probe>.csv.gz and its means printed."""
    studies = sys.argv[1:]
    with Pool(2) as pool:
        jobs = [(s, n, seed) for s in studies for n in FAMILY for seed in (0, 1, 2)]
        table = pd.concat(pool.map(partial(job, score=score, runs=runs, found_above=found_above), jobs))
    table.to_csv(Path(__file__).parent / f"results/{probe}.csv.gz", index=False)
    print(table.groupby(["set", "study"])[columns].mean().round(3).to_string())
    print(table.groupby(["set", "study", "network"])[columns].mean().round(3).to_string())
    return table
