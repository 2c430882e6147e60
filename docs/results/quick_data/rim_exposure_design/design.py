"""Does the U-net family's miss on echogenic-rim lesions yield to heavy rim exposure? (SUMMARY.md)

A mechanism probe on Lighter U-net @1 (the family's cheapest; the augmentation choice's network) at the
quick study's recipe and data (results/quick at this folder's commit: `make study`), the package's own
training with the ultrasound draws patched:
- ``base``: the package as it is (the ultrasound changes in half the samples, each change in half of those:
  a rim in a quarter of the samples, echogenic in an eighth; off in the last 6 of the 30 epochs);
- ``rim_echogenic``: every changed sample gets a rim, always echogenic (an eighth -> a half of the samples),
  its width and strength drawn as before. Only the rim's on/off draw and its sign are changed, row by row,
  so every other draw and the batch order are base's, draw for draw;
- ``rim_always`` (added after rim_echogenic was scored, SUMMARY.md): every changed sample gets a rim, its
  sign as drawn (a dark halo or an echogenic rim, a quarter of the samples each).
Scored through the quick study's inference (scales, size-aware rule and its 1.3 trigger, keep-one) on the
phantom's validation images and on pymust_far (the development set), by lesion type. pymust_heldout and the
quick study's phantom test images are not read.

    PYTHONPATH=src:docs/results/quick_data/rim_exposure_design python docs/results/quick_data/rim_exposure_design/design.py SEEDS...
"""
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
SOURCE = Path("results/quick")
NETWORK = "lighter_unet_c1"
SCALES, SHRINK_ABOVE, FOUND_ABOVE = (1.0, 0.875, 0.75, 0.625), 1.0, 1.3
ARMS = ("base", "rim_echogenic", "rim_always")
RIM_ON, RIM_SIGN = 18, 20  # sonoseg.training.ultrasound_augment.apply_ultrasound's columns of the draws


def sets() -> dict:
    """Name -> (manifest, split, part, cache): the development sets a probe may read."""
    far = SOURCE / "external/pymust_far"
    return {
        "phantom_val": (SOURCE / "data/manifest.csv", SOURCE / "data/split.csv", "val", SOURCE / "data/cache/inpaint/fold0/val.npz"),
        "pymust_far": (far / "manifest.csv", far / "split.csv", "test", far / "cache/inpaint/test.npz"),
    }


def patch_rim(echogenic: bool) -> None:
    """Every row's rim on (d[18] -> 0 < P_APPLY); with ``echogenic``, its sign too, its size kept
    (d[20] -> 0.5 + |d[20] - 0.5|)."""
    from sonoseg.training import train

    real = train.draw_ultrasound

    def draw(n, generator):
        d = real(n, generator)
        d[:, RIM_ON] = 0.0
        if echogenic:
            d[:, RIM_SIGN] = 0.5 + (d[:, RIM_SIGN] - 0.5).abs()
        return d

    train.draw_ultrasound = draw


def score_model(model: Path) -> pd.DataFrame:
    import cv2
    from sonoseg.analysis.evaluate import dice
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.data.preprocess import load_cache
    from sonoseg.serving import infer
    from sonoseg.serving.modelio import images_to_tensor

    predictor = infer.model_predictor([model], "cpu")
    limit = infer.area_limit(predictor, SCALES, SHRINK_ABOVE, str(model))
    run = infer.scale_adaptive(predictor.run, SCALES, str(model), limit, FOUND_ABOVE)
    rows = []
    for name, (manifest, split_csv, part, cache) in sets().items():
        samples = split.samples_of_part(manifest, split_csv, part, 0).set_index("sample_id")
        arrays = load_cache(cache)
        probabilities = np.concatenate([b for _, b in infer.in_batches(run, images_to_tensor(arrays["images"]).numpy())])
        for sample_id, p in zip((str(s) for s in arrays["sample_ids"]), probabilities):
            row = samples.loc[sample_id]
            truth = read_mask(row["mask"]).pixels
            full = cv2.resize(p.astype(np.float32), (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
            rows.append({"set": name, "sample_id": sample_id, "patient": row["patient"],
                         "lesion_type": row.get("meta_lesion_type", ""),
                         "dice": dice(infer.postprocessed(full > 0.5, "area", "keep_one"), truth)})
    return pd.DataFrame(rows)


def job(args):
    arm, seed = args
    import torch

    torch.set_num_threads(1)
    from sonoseg.training import train
    from sonoseg.training.recipe import Recipe

    if arm != "base":
        patch_rim(echogenic=arm == "rim_echogenic")
    recipe = Recipe.read(SOURCE / f"runs/{NETWORK}/fold0/recipe.json")
    out = HERE / "results/models"
    out.mkdir(parents=True, exist_ok=True)
    model = out / f"{arm}_seed{seed}.pt"
    data = SOURCE / "data/cache/inpaint/fold0"
    if not model.exists():
        train.train(network=NETWORK, seed=seed, train_data=data / "train.npz", val_data=data / "val.npz",
                    recipe=recipe, model_out=model, history_out=out / f"{arm}_seed{seed}.history.csv",
                    checkpoint=None, device="cpu", threads=1)
    table = score_model(model).assign(arm=arm, seed=seed)
    print(arm, seed, table.groupby("set")["dice"].mean().round(3).to_dict(), flush=True)
    return table


if __name__ == "__main__":
    # design.py [ARM,ARM] SEEDS...: the arms named (default: base and rim_echogenic, the first run's)
    arms = tuple(sys.argv.pop(1).split(",")) if not sys.argv[1][0].isdigit() else ARMS[:2]
    seeds = [int(s) for s in sys.argv[1:]]
    with Pool(2, maxtasksperchild=1) as pool:  # one process a training: an arm patches the package
        table = pd.concat(pool.map(job, [(arm, seed) for seed in seeds for arm in arms], chunksize=1))
    name = "" if arms == ARMS[:2] else "_" + "_".join(arms)
    table.to_csv(HERE / f"results/scores{name}_{min(seeds)}-{max(seeds)}.csv.gz", index=False)
