"""Per-image input normalization design runs (SUMMARY.md). From the repository root, after an fp32 quick study:
   PYTHONPATH=docs/results/quick_data/input_normalization_design:src python \
       docs/results/quick_data/input_normalization_design/study.py OUT zscore,quantile 0 [NETWORKS] [RESULTS]
"""
import json, sys, time, os
from pathlib import Path
from multiprocessing import Pool
R = Path(sys.argv[5] if len(sys.argv) > 5 else "results/quick")  # a quick study's results (fp32)
SETS = {"phantom_test": (R/"data/manifest.csv", R/"data/split.csv", R/"data/cache/inpaint/fold0/test.npz"),
        "pymust_far": (R/"external/pymust_far/manifest.csv", R/"external/pymust_far/split.csv", R/"external/pymust_far/cache/inpaint/test.npz")}
OUT = Path(sys.argv[1]); OUT.mkdir(exist_ok=True, parents=True)

def register():
    from sonoseg.networks import catalog
    for net in ("unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"):
        for mode in ("zscore", "quantile"):
            name = f"{mode}__{net}"
            if name not in catalog.CATALOG:
                catalog.register(name, f"rankwrap:{name}")

def score(model, set_name):
    import numpy as np
    from sonoseg.analysis.evaluate import dice
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.data.preprocess import load_cache
    from sonoseg.serving import infer
    from sonoseg.serving.modelio import images_to_tensor
    from sonoseg.serving.options import POSTPROCESSES
    manifest, split_csv, cache = SETS[set_name]
    samples = split.samples_of_part(manifest, split_csv, "test", 0).set_index("sample_id")
    arrays = load_cache(cache)
    predictor = infer.torch_predictor(model, "cpu")
    images = images_to_tensor(arrays["images"]).numpy()
    probs = np.concatenate([b for _, b in infer.in_batches(predictor.run, images)])
    rows = []
    for sid, p in zip((str(s) for s in arrays["sample_ids"]), probs):
        row = samples.loc[sid]; truth = read_mask(row["mask"]).pixels
        out = {"set": set_name, "sample_id": sid, "patient": row["patient"]}
        for o in POSTPROCESSES:
            out[f"dice_{o}"] = dice(infer.probability_to_mask(p, *truth.shape, "area", o), truth)
        rows.append(out)
    return rows

def job(args):
    net, mode, seed = args
    import torch, pandas as pd
    torch.set_num_threads(1)
    register()
    from sonoseg.training import train, postprocess
    from sonoseg.training.recipe import Recipe
    from sonoseg.data import split
    name = net if mode == "none" else f"{mode}__{net}"
    tag = f"{name}_seed{seed}"
    recipe = Recipe.from_json((R/f"runs/{net}/fold0/recipe.json").read_text())
    model = OUT/f"{tag}.pt"; hist = OUT/f"{tag}.history.csv"
    t = time.time()
    train.train(network=name, seed=seed, train_data=R/"data/cache/inpaint/fold0/train.npz", val_data=R/"data/cache/inpaint/fold0/val.npz",
                recipe=recipe, model_out=model, history_out=hist, checkpoint=None, device="cpu", threads=1)
    secs = time.time() - t
    val = split.samples_of_part(R/"data/manifest.csv", R/"data/split.csv", "val", 0)
    choice = postprocess.choose(postprocess.validation_dice([model], R/"data/cache/inpaint/fold0/val.npz", val, "area", "cpu"))
    rows = []
    for s in SETS: rows += score(model, s)
    df = pd.DataFrame(rows).assign(network=net, mode=mode, seed=seed, chosen=choice["chosen"])
    df["dice"] = df[f"dice_{choice['chosen']}"]
    df.to_csv(OUT/f"{tag}.per_image.csv", index=False)
    summary = df.groupby("set")["dice"].mean().to_dict()
    print(tag, f"{secs:.0f}s", choice["chosen"], {k: round(v, 3) for k, v in summary.items()}, flush=True)
    return tag

if __name__ == "__main__":
    modes = sys.argv[2].split(","); seeds = [int(s) for s in sys.argv[3].split(",")]
    nets = sys.argv[4].split(",") if len(sys.argv) > 4 else ["unet", "lighter_unet_c128", "light_unet", "lighter_unet_c1"]
    jobs = [(n, m, s) for s in seeds for n in nets for m in modes]
    jobs = [j for j in jobs if not (OUT/f"{(j[0] if j[1]=='none' else j[1]+'__'+j[0])}_seed{j[2]}.per_image.csv").exists()]
    with Pool(2, maxtasksperchild=1) as pool:
        for tag in pool.imap_unordered(job, jobs): pass
