"""Epoch budget 30 vs 60 (max_epochs; everything else the quick study's recipe from scratch_gpu/data/recipes.json,
written by ../prep.py from the run sheet) x seeds x U-net family, input size 32 only. Adapted from
../size_study.py (same training, post-processing choice, prediction and scoring; the solo timing is dropped).
Run from the repo root with PYTHONPATH=src.

Per training, with the package's own functions:
  - sonoseg.training.train.train  (device cuda; the recipe as the run sheet gives it, ultrasound_augment on)
  - sonoseg.training.postprocess.validation_dice + choose  (keep one component or not, on the validation part)
  - sonoseg.serving.infer.torch_predictor / check_cache / in_batches / probability_to_mask (what
    `sonoseg predict` writes), scored with sonoseg.analysis.evaluate.dice at each image's original size,
    on the phantom's test split, pymust_far and pymust_dev. pymust_heldout is never touched.
Results are appended as each training ends (runs.csv, per_image.csv, histories.csv) under --out."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

DATA = Path("scratch_gpu/data")
SETS = {
    "phantom_test": (DATA / "manifest.csv", DATA / "split.csv", "cache/s{size}/test.npz"),
    "pymust_far": (DATA / "external/pymust_far/manifest.csv", DATA / "external/pymust_far/split.csv",
                   "external/pymust_far/cache/s{size}.npz"),
    "pymust_dev": (DATA / "external/pymust_dev/manifest.csv", DATA / "external/pymust_dev/split.csv",
                   "external/pymust_dev/cache/s{size}.npz"),
}
for _name, (_m, _s, _c) in SETS.items():
    assert "heldout" not in f"{_name}{_m}{_s}{_c}"


def ensure_medpy():
    try:
        import medpy.metric.binary  # noqa: F401
    except ImportError:
        sys.path.append(str(Path("scratch_gpu/stubs").resolve()))  # numpy dc only (see the stub)


def init_worker(device: str):
    ensure_medpy()
    import torch

    torch.set_num_threads(1)
    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        x = torch.zeros(8, 3, 32, 32, device="cuda", requires_grad=True)  # CUDA context and cuDNN up front
        torch.nn.functional.conv2d(x, torch.ones(4, 3, 3, 3, device="cuda")).sum().backward()
        torch.cuda.synchronize()


def score(model_path, device, set_name, size):
    import numpy as np

    from sonoseg.analysis.evaluate import dice
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.data.preprocess import load_cache
    from sonoseg.serving import infer
    from sonoseg.serving.modelio import images_to_tensor
    from sonoseg.serving.options import POSTPROCESSES

    manifest, split_csv, cache = SETS[set_name]
    cache = DATA / cache.format(size=size)
    samples = split.samples_of_part(manifest, split_csv, "test", 0).set_index("sample_id")
    arrays = load_cache(cache)
    predictor = infer.torch_predictor(model_path, device)
    infer.check_cache(arrays, cache, predictor, model_path)
    images = images_to_tensor(arrays["images"]).numpy()
    probabilities = np.concatenate([batch for _, batch in infer.in_batches(predictor.run, images)])
    rows = []
    for sample_id, probability in zip((str(s) for s in arrays["sample_ids"]), probabilities):
        row = samples.loc[sample_id]
        truth = read_mask(row["mask"]).pixels
        assert truth.shape == (int(row["height"]), int(row["width"]))
        out = {"set": set_name, "sample_id": sample_id, "patient": row["patient"],
               "lesion_type": row.get("meta_lesion_type", "")}
        for option in POSTPROCESSES:
            out[f"dice_{option}"] = dice(infer.probability_to_mask(probability, *truth.shape, "area", option), truth)
        rows.append(out)
    return rows


def run_job(job):
    import pandas as pd
    import torch

    from sonoseg.data import split
    from sonoseg.training import postprocess, train
    from sonoseg.training.recipe import Recipe

    network, size, seed, recipe_json, device, work, overrides, solo = job
    budget = int(overrides.get("max_epochs", json.loads(recipe_json)["max_epochs"]))
    tag = f"{network}_s{size}_seed{seed}_e{budget}" + ("_solo" if solo else "")
    try:
        recipe = Recipe.from_json(recipe_json).with_changes(overrides)
        model = Path(work) / f"{tag}.pt"
        history = Path(work) / f"{tag}.history.csv"
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        summary = train.train(
            network=network, seed=seed, train_data=DATA / f"cache/s{size}/train.npz",
            val_data=DATA / f"cache/s{size}/val.npz", recipe=recipe, model_out=model, history_out=history,
            checkpoint=None, device=device, threads=1,
        )
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        if solo:  # timing alone on the GPU: no scoring
            hist = pd.read_csv(history)
            later = hist[hist["epoch"] > 1]
            return {"network": network, "size": size, "seed": seed, "train_seconds": round(seconds, 2),
                    "epochs": summary.get("epochs"), "first_epoch_seconds": float(hist["seconds"].iloc[0]),
                    "mean_epoch_seconds_after_first": float(later["seconds"].mean()),
                    "mean_train_pass_seconds": float(later["train_seconds"].mean()),
                    "mean_bn_seconds": float(later["bn_seconds"].mean()),
                    "mean_val_seconds": float(later["val_seconds"].mean())}, None, None, None
        val = split.samples_of_part(DATA / "manifest.csv", DATA / "split.csv", "val", 0)
        table = postprocess.validation_dice([model], DATA / f"cache/s{size}/val.npz", val, "area", device)
        choice = postprocess.choose(table)
        scored = time.perf_counter()
        rows = []
        for set_name in SETS:
            rows += score(model, device, set_name, size)
        score_seconds = time.perf_counter() - scored
        per_image = pd.DataFrame(rows).assign(network=network, size=size, seed=seed, budget=budget,
                                              chosen=choice["chosen"])
        per_image["dice_chosen"] = per_image[f"dice_{choice['chosen']}"]
        hist = pd.read_csv(history).assign(network=network, size=size, seed=seed, budget=budget)
        run = {
            "network": network, "size": size, "seed": seed, "budget": budget, "max_epochs": recipe.max_epochs,
            "min_epochs": recipe.min_epochs, "early_stopping_patience": recipe.early_stopping_patience,
            "ended_by": str(hist["ended_by"].iloc[-1]), "recipe": recipe.to_json(),
            "train_seconds": round(seconds, 2),
            "epochs": summary.get("epochs"), "best_epoch": summary.get("best_epoch"),
            "best_val_loss": summary.get("best_val_loss"), "epoch_seconds_sum": round(float(hist["seconds"].sum()), 2),
            "postprocess": choice["chosen"], "val_dice_keep_one": choice["validation_dice"]["keep_one"],
            "val_dice_none": choice["validation_dice"]["none"], "score_seconds": round(score_seconds, 2),
            "pid": os.getpid(), "finished": time.time(),
        }
        for set_name in SETS:
            sub = per_image[per_image["set"] == set_name]
            run[f"{set_name}_dice"] = float(sub["dice_chosen"].mean())
        return run, per_image, hist, None
    except Exception:  # noqa: BLE001 - one failed training must not lose the others
        return {"network": network, "size": size, "seed": seed, "job": repr(job)}, None, None, traceback.format_exc()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/epoch_study_models")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--networks", nargs="+", default=["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32])
    parser.add_argument("--budgets", nargs="+", type=int, default=[60, 30], help="max_epochs values (longest first)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--overrides", default="{}", help="recipe changes (tests only)")
    parser.add_argument("--solo-if-before", type=float, default=0.0,
                        help="after the study, if fewer seconds than this have passed, time each network x size "
                             "alone on the GPU (seed 0, --solo-epochs epochs, one process)")
    parser.add_argument("--solo-epochs", type=int, default=10)
    args = parser.parse_args()
    ensure_medpy()
    import multiprocessing as mp

    import pandas as pd

    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    recipes = json.loads((DATA / "recipes.json").read_text())
    overrides = json.loads(args.overrides)
    # Longest (60-epoch) trainings first so the pool's tail is short; max_epochs is the only change.
    assert all(recipes[n]["max_epochs"] == 30 and recipes[n]["min_epochs"] == 10 for n in args.networks)
    jobs = [
        (network, size, seed, json.dumps(recipes[network]), args.device, str(work),
         {**overrides, **({} if budget == recipes[network]["max_epochs"] else {"max_epochs": budget})}, False)
        for budget in args.budgets for seed in args.seeds for network in args.networks for size in args.sizes
    ]
    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "workers": args.workers, "jobs": len(jobs), "overrides": overrides, "python": sys.version}
    (out / "env.json").write_text(json.dumps(env, indent=2))
    print(json.dumps(env), flush=True)
    started = time.perf_counter()
    first = {"runs": True, "per_image": True, "histories": True}
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers, initializer=init_worker, initargs=(args.device,)) as pool:
        for run, per_image, hist, error in pool.imap_unordered(run_job, jobs):
            if error:
                print(f"FAILED {run}: {error}", flush=True)
                with open(out / "errors.txt", "a") as handle:
                    handle.write(f"{run}\n{error}\n")
                continue
            for name, frame in (("runs", pd.DataFrame([run])), ("per_image", per_image), ("histories", hist)):
                frame.to_csv(out / f"{name}.csv", mode="w" if first[name] else "a", header=first[name], index=False)
                first[name] = False
            print(f"{time.perf_counter() - started:7.1f}s done {run['network']} s{run['size']} seed{run['seed']} "
                  f"e{run['budget']}: {run['train_seconds']}s {run['epochs']} ep (best {run['best_epoch']}, "
                  f"{run['ended_by']}), pp {run['postprocess']}, test "
                  f"{run['phantom_test_dice']:.3f} far {run['pymust_far_dice']:.3f} dev {run['pymust_dev_dice']:.3f}",
                  flush=True)
    print(f"all done in {time.perf_counter() - started:.1f}s", flush=True)
    if time.perf_counter() - started < args.solo_if_before:
        fixed = {**overrides, "min_epochs": args.solo_epochs, "max_epochs": args.solo_epochs}
        solo_jobs = [
            (network, size, 0, json.dumps(recipes[network]), args.device, str(work), fixed, True)
            for network in args.networks for size in args.sizes
        ]
        rows = []
        with ctx.Pool(1, initializer=init_worker, initargs=(args.device,)) as pool:
            for run, _, _, error in pool.imap(run_job, solo_jobs):
                if error:
                    print(f"SOLO FAILED {run}: {error}", flush=True)
                    continue
                rows.append(run)
                pd.DataFrame(rows).to_csv(out / "solo.csv", index=False)
                print(f"{time.perf_counter() - started:7.1f}s solo {run}", flush=True)
        print(f"solo timing done at {time.perf_counter() - started:.1f}s", flush=True)


if __name__ == "__main__":
    main()
