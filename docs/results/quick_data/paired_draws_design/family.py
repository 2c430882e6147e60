"""The adopted form (the package since this design: the ultrasound changes from their own stream, off in
the last 6 of the 30 epochs) against the paper's augmentation, for the U-net family and in either
precision (SUMMARY.md). The package's own training, no patches; scored as design.py scores.

    PYTHONPATH=src:docs/results/quick_data/paired_draws_design python .../family.py PRECISION NETWORKS SEEDS...

PRECISION: fp32 or bf16 (this machine's auto); NETWORKS: comma-separated; ARMS (environment, comma-separated;
default paper,ultrasound): paper, ultrasound (the package's default clean epochs), ultrasound_clean<N>."""
import os
import sys
from multiprocessing import Pool

import pandas as pd
from design import HERE, SOURCE, score_model

ARMS = os.environ.get("ARMS", "paper,ultrasound").split(",")


def arm_changes(arm: str) -> dict:
    """The recipe settings an arm sets: ultrasound_clean<N> is the ultrasound augmentation with N clean epochs."""
    from sonoseg.training.recipe import Recipe

    if arm == "paper":
        return {"ultrasound_augment": False}
    clean = Recipe().ultrasound_clean_epochs if arm == "ultrasound" else int(arm.removeprefix("ultrasound_clean"))
    return {"ultrasound_augment": True, "ultrasound_clean_epochs": clean}


def job(args):
    precision, network, arm, seed = args
    import torch

    torch.set_num_threads(1)
    from sonoseg.training import train
    from sonoseg.training.recipe import Recipe

    # The quick study's recipe of the network (the seed probe's fp32 study), its augmentation and precision
    # set here, the clean epochs at the package's default.
    saved = Recipe.read(SOURCE / f"runs/{network}/fold0/recipe.json")
    recipe = Recipe().with_changes({**saved.as_dict(), "precision": precision, **arm_changes(arm)})
    out = HERE / f"results/models_{precision}"
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{network}_{arm}_seed{seed}"
    model = out / f"{tag}.pt"
    data = SOURCE / "data/cache/inpaint/fold0"
    if not model.exists():
        train.train(network=network, seed=seed, train_data=data / "train.npz", val_data=data / "val.npz",
                    recipe=recipe, model_out=model, history_out=out / f"{tag}.history.csv",
                    checkpoint=None, device="cpu", threads=1)
    table = score_model(model).assign(network=network, arm=arm, seed=seed, precision=precision)
    print(tag, precision, table.groupby("set")["dice"].mean().round(3).to_dict(), flush=True)
    return table


if __name__ == "__main__":
    precision, networks, seeds = sys.argv[1], sys.argv[2].split(","), [int(s) for s in sys.argv[3:]]
    jobs = [(precision, n, arm, seed) for n in networks for seed in seeds for arm in ARMS]
    with Pool(2, maxtasksperchild=1) as pool:
        table = pd.concat(pool.map(job, jobs, chunksize=1))
    name = "_".join(networks) if len(networks) < 4 else "family"
    arms = "" if ARMS == ["paper", "ultrasound"] else "_" + "_".join(a for a in ARMS if a != "paper")
    table.to_csv(HERE / f"results/family_{precision}_{name}{arms}_{min(seeds)}-{max(seeds)}.csv.gz", index=False)
