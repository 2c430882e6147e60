"""Does drawing the ultrasound augmentation from its own random stream make the augmentation choice's
paired comparison steadier? (SUMMARY.md)

The quick study compares Lighter U-net @1 trained with the paper's augmentation and with the ultrasound
augmentation added, one training each (the augmentation choice, and issue 28's in-domain cost). In the
training at 0712272 the ultrasound draws come from the same generator as the batch order and the
geometric augmentation, so every epoch after the first shuffles the two arms differently: the pair
differs in everything random, not only in the augmentation. Arm ``own_stream`` draws the ultrasound
augmentation from a generator of its own, so its batch order and geometric augmentation are the paper
arm's draw for draw.

Arms, each seed: ``paper`` (ultrasound off), ``shared`` (the training as it is), ``own_stream``. The
@1 recipe of the seed probe's fp32 study (results/seedprobe30, = the quick study's), its data. Scored
through the quick study's inference (scales, size-aware rule and its 1.3 trigger, keep-one) on sets no
choice of the quick study reads as test images: a fresh phantom (the same generator, seed 1, 48
patients, all 96 images: results/phantom_seed1), the phantom's validation images, pymust_far and (added
later) pymust_dev.
pymust_heldout and the quick study's phantom test images are not read.

    PYTHONPATH=src:docs/results/quick_data python docs/results/quick_data/paired_draws_design/design.py SEEDS...
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
SOURCE = Path("results/seedprobe30")
FRESH = Path("results/phantom_seed1")
SCALES, SHRINK_ABOVE, FOUND_ABOVE = (1.0, 0.875, 0.75, 0.625), 1.0, 1.3
ARMS = ("paper", "shared", "own_stream")
# Milder variants, each from its own stream (run by name: design.py ARM,ARM SEEDS...):
#   quarter: a quarter of the samples changed, not half (ultrasound_augment.P_SAMPLE);
#   clean_end: the ultrasound changes off in the last CLEAN_EPOCHS epochs of the 30 (the weight average's
#   3 among them), so the kept model last learns from the images as they are;
#   lesion_mild: the lesion's contrast scaled by a factor in [0.5, 1], not [0.2, 1].
CLEAN_EPOCHS = 6
OWN_STREAM_OFFSET = 0x5EED  # the ultrasound stream's seed: the training seed + this


def sets() -> dict:
    """Name -> (manifest, split, part, cache)."""
    fresh = [(f"fresh_{part}", (FRESH / "data/manifest.csv", FRESH / "data/split.csv", part,
                                 FRESH / f"data/cache/inpaint/fold0/{part}.npz")) for part in ("train", "val", "test")]
    return {
        **dict(fresh),
        "phantom_val": (SOURCE / "data/manifest.csv", SOURCE / "data/split.csv", "val", SOURCE / "data/cache/inpaint/fold0/val.npz"),
        "pymust_far": (SOURCE / "external/pymust_far/manifest.csv", SOURCE / "external/pymust_far/split.csv", "test",
                       SOURCE / "external/pymust_far/cache/inpaint/test.npz"),
        # Added after the first tables (those have no rows of it): the first development set, which no choice
        # of the quick study reads (data/external/README.md), as a second external check.
        "pymust_dev": (FRESH / "external/pymust_dev/manifest.csv", FRESH / "external/pymust_dev/split.csv", "test",
                       FRESH / "external/pymust_dev/cache/inpaint/test.npz"),
    }


def patch_own_stream(seed: int, clean_from_epoch: int | None = None) -> None:
    """train.train_epoch with the ultrasound draws (and the noise seed) from a generator of their own;
    from epoch ``clean_from_epoch`` on (1-based), without the ultrasound changes."""
    import torch
    from sonoseg.training import train

    own = torch.Generator().manual_seed(seed + OWN_STREAM_OFFSET)
    original = train.train_epoch

    epochs = [0]

    def train_epoch(model, split, recipe, loss_fn, optimizer, path, data_order, average=None):
        epochs[0] += 1
        if clean_from_epoch and epochs[0] >= clean_from_epoch:
            recipe = recipe.with_changes({"ultrasound_augment": False})
        real_draw, real_randint = train.draw_ultrasound, torch.randint
        train.draw_ultrasound = lambda n, generator: real_draw(n, own)
        torch.randint = lambda *a, generator=None, **k: real_randint(*a, generator=own, **k)
        try:
            return original(model, split, recipe, loss_fn, optimizer, path, data_order, average)
        finally:
            train.draw_ultrasound, torch.randint = real_draw, real_randint

    train.train_epoch = train_epoch


def job(args):
    arm, seed = args
    import torch

    torch.set_num_threads(1)
    from sonoseg.training import train, ultrasound_augment
    from sonoseg.training.recipe import Recipe

    recipe = Recipe.from_json((SOURCE / "runs/lighter_unet_c1/fold0/recipe.json").read_text())
    recipe = recipe.with_changes({"ultrasound_augment": arm != "paper"})
    if arm not in ("paper", "shared"):
        patch_own_stream(seed, recipe.max_epochs - CLEAN_EPOCHS + 1 if arm == "clean_end" else None)
    if arm == "quarter":
        ultrasound_augment.P_SAMPLE = 0.25
    if arm == "lesion_mild":
        ultrasound_augment.LESION_CONTRAST = (0.5, 1.0)
    out = HERE / "results/models"
    out.mkdir(parents=True, exist_ok=True)
    model = out / f"{arm}_seed{seed}.pt"
    data = SOURCE / "data/cache/inpaint/fold0"
    if not model.exists():
        train.train(network="lighter_unet_c1", seed=seed, train_data=data / "train.npz", val_data=data / "val.npz",
                    recipe=recipe, model_out=model, history_out=out / f"{arm}_seed{seed}.history.csv",
                    checkpoint=None, device="cpu", threads=1)
    table = score_model(model).assign(arm=arm, seed=seed)
    table.to_csv(out / f"{arm}_seed{seed}.per_image.csv", index=False)
    print(arm, seed, table.groupby("set")["dice"].mean().round(3).to_dict(), flush=True)
    return table


def score_model(model: Path) -> pd.DataFrame:
    """One row per image of sets(): the model's Dice through the quick study's inference."""
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
        images = images_to_tensor(arrays["images"]).numpy()
        probabilities = np.concatenate([b for _, b in infer.in_batches(run, images)])
        for sample_id, p in zip((str(s) for s in arrays["sample_ids"]), probabilities):
            row = samples.loc[sample_id]
            truth = read_mask(row["mask"]).pixels
            full = cv2.resize(p.astype(np.float32), (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
            rows.append({"set": name.split("_")[0] if name.startswith("fresh") else name,
                         "sample_id": sample_id, "patient": row["patient"],
                         "dice": dice(infer.postprocessed(full > 0.5, "area", "keep_one"), truth)})
    return pd.DataFrame(rows)

if __name__ == "__main__":
    from multiprocessing import Pool

    arms = ARMS if sys.argv[1][0].isdigit() else tuple(sys.argv.pop(1).split(","))
    seeds = [int(s) for s in sys.argv[1:]]
    with Pool(2, maxtasksperchild=1) as pool:
        # chunksize 1: each training in a process of its own (an arm patches the package)
        tables = pool.map(job, [(arm, seed) for seed in seeds for arm in arms], chunksize=1)
    table = pd.concat(tables)
    name = "" if arms == ARMS else "_" + "_".join(arms)
    table.to_csv(HERE / f"results/scores{name}_{min(seeds)}-{max(seeds)}.csv.gz", index=False)
