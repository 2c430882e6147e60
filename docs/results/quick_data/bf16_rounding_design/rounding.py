"""Does bf16's rounding, not bf16 arithmetic, make Light U-net transfer better? (SUMMARY.md)

Trains a network in fp32 with every convolution's input, weight and output rounded to bf16's 8-bit
mantissa (a cast to bfloat16 and back: the values bf16 autocast gives a convolution, the arithmetic
still fp32; gradients pass through the casts and are rounded the same way), at the seed probe's
recipe and data (../seed_ensemble_design/seeds30.yaml, results/seedprobe30), seeds 0-2, into
results/seedprobe30round/runs/<network>/fold0/seed<N>/model.pt; then scores the singles and
ensembles by ../seed_ensemble_design/score.py's path (tag 30round). Run from the repository root with
src and ../seed_ensemble_design on PYTHONPATH:
    python docs/results/quick_data/bf16_rounding_design/rounding.py light_unet lighter_unet_c128
"""
import sys
from multiprocessing import Pool
from pathlib import Path

SOURCE = Path("results/seedprobe30")
OUT = Path("results/seedprobe30round")


def rounded(t):
    import torch

    return t.to(torch.bfloat16).to(t.dtype)


def train_one(args):
    import torch
    from torch import nn

    from sonoseg.training import train
    from sonoseg.training.recipe import Recipe

    network, seed = args
    original = nn.Conv2d._conv_forward

    def conv_forward(self, x, weight, bias):  # this worker process only (maxtasksperchild=1)
        return rounded(original(self, rounded(x), rounded(weight), bias))

    nn.Conv2d._conv_forward = conv_forward
    torch.set_num_threads(1)
    recipe = Recipe.from_json((SOURCE / f"runs/{network}/fold0/recipe.json").read_text())
    folder = OUT / f"runs/{network}/fold0/seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    data = SOURCE / "data/cache/inpaint/fold0"
    train.train(network=network, seed=seed, train_data=data / "train.npz", val_data=data / "val.npz",
                recipe=recipe, model_out=folder / "model.pt", history_out=folder / "history.csv",
                checkpoint=None, device="cpu", threads=1)
    print(network, seed, "trained", flush=True)


if __name__ == "__main__":
    import pandas as pd
    import score  # ../seed_ensemble_design/score.py

    networks = sys.argv[1:]
    for name in ("data", "external"):  # the probe's data, shared
        if not (OUT / name).exists():
            OUT.mkdir(parents=True, exist_ok=True)
            (OUT / name).symlink_to((SOURCE / name).resolve())
    with Pool(2, maxtasksperchild=1) as pool:
        pool.map(train_one, [(n, s) for n in networks for s in (0, 1, 2)])
        table = pd.concat(pool.map(score.job, [("30round", n, c) for n in networks for c in score.COMBOS]))
    table.to_csv(Path(__file__).parent / "results/scores_30round.csv.gz", index=False)
    t = table[table.lesion]
    print(t.groupby(["set", "combo", "network"])["dice"].mean().unstack("network").round(3).to_string())
