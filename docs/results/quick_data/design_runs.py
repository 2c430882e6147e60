"""What the quick study's design runs (``*_design/``) share: train one network at the quick study's
recipe (or a variant of it) on the quick study's data, choose its post-processing on the validation
part as the study does, and score it on the development sets only: the phantom's own test images
and ``pymust_far``. ``pymust_heldout`` is not among the sets, so no design run can read it.

Run from the repository root with ``src`` and this folder on PYTHONPATH, after an fp32 quick study in
``results/quick`` (``train.precision: fp32``); each design folder's SUMMARY.md names its commit.
"""
import time
from multiprocessing import Pool
from pathlib import Path

RESULTS = Path("results/quick")
FAMILY = ["unet", "lighter_unet_c128", "light_unet", "lighter_unet_c1"]


def development_sets(results: Path = RESULTS) -> dict:
    """Set name -> (manifest, split, cache) of the sets a design run may score."""
    return {
        "phantom_test": (results / "data/manifest.csv", results / "data/split.csv", results / "data/cache/inpaint/fold0/test.npz"),
        "pymust_far": (
            results / "external/pymust_far/manifest.csv",
            results / "external/pymust_far/split.csv",
            results / "external/pymust_far/cache/inpaint/test.npz",
        ),
    }


def score(model, set_name: str, results: Path = RESULTS) -> list[dict]:
    """One row per image of the set: its Dice at the original size under each post-processing."""
    import numpy as np
    from sonoseg.analysis.evaluate import dice
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.data.preprocess import load_cache
    from sonoseg.serving import infer
    from sonoseg.serving.modelio import images_to_tensor
    from sonoseg.serving.options import POSTPROCESSES

    manifest, split_csv, cache = development_sets(results)[set_name]
    samples = split.samples_of_part(manifest, split_csv, "test", 0).set_index("sample_id")
    arrays = load_cache(cache)
    predictor = infer.torch_predictor(model, "cpu")
    images = images_to_tensor(arrays["images"]).numpy()
    probs = np.concatenate([b for _, b in infer.in_batches(predictor.run, images)])
    rows = []
    for sid, p in zip((str(s) for s in arrays["sample_ids"]), probs):
        row = samples.loc[sid]
        truth = read_mask(row["mask"]).pixels
        out = {"set": set_name, "sample_id": sid, "patient": row["patient"]}
        for option in POSTPROCESSES:
            out[f"dice_{option}"] = dice(infer.probability_to_mask(p, *truth.shape, "area", option), truth)
        rows.append(out)
    return rows


def train_and_score(network: str, seed: int, recipe, tag: str, out: Path, mode: str, catalog_name: str | None = None,
                    results: Path = RESULTS):
    """Train ``catalog_name`` (default ``network``) with ``recipe`` and ``seed`` on one thread, choose
    keep-one or none on validation, score the development sets; writes OUT/TAG.{pt,history.csv,
    per_image.csv} and returns the per-image table (``dice``: under the chosen post-processing)."""
    import pandas as pd
    import torch
    from sonoseg.data import split
    from sonoseg.training import postprocess, train

    torch.set_num_threads(1)
    data = results / "data/cache/inpaint/fold0"
    model, history = out / f"{tag}.pt", out / f"{tag}.history.csv"
    start = time.time()
    train.train(network=catalog_name or network, seed=seed, train_data=data / "train.npz", val_data=data / "val.npz",
                recipe=recipe, model_out=model, history_out=history, checkpoint=None, device="cpu", threads=1)
    seconds = time.time() - start
    val = split.samples_of_part(results / "data/manifest.csv", results / "data/split.csv", "val", 0)
    choice = postprocess.choose(postprocess.validation_dice([model], data / "val.npz", val, "area", "cpu"))
    rows = [row for name in development_sets(results) for row in score(model, name, results)]
    table = pd.DataFrame(rows).assign(network=network, mode=mode, seed=seed, chosen=choice["chosen"])
    table["dice"] = table[f"dice_{choice['chosen']}"]
    table.to_csv(out / f"{tag}.per_image.csv", index=False)
    print(tag, f"{seconds:.0f}s", choice["chosen"], table.groupby("set")["dice"].mean().round(3).to_dict(), flush=True)
    return table


def quick_recipe(network: str, results: Path = RESULTS):
    """The recipe the quick study trained ``network`` with."""
    from sonoseg.training.recipe import Recipe

    return Recipe.from_json((results / f"runs/{network}/fold0/recipe.json").read_text())


def run_all(job, jobs: list, processes: int = 2) -> None:
    """``job`` over ``jobs``, two trainings at a time, each in a fresh process (a variant that patches
    a module must not leak into the next job)."""
    with Pool(processes, maxtasksperchild=1) as pool:
        list(pool.imap_unordered(job, jobs))
