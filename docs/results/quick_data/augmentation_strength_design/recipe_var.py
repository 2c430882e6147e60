"""U-net, seed 1 (and 0), with recipe changes: the paper's augmentation instead of the ultrasound one, or lr 3e-4.
From the repository root, after an fp32 quick study: PYTHONPATH=docs/results/quick_data:src python <this file> OUT unet paperaug,lr3e-4 1"""
import sys
from pathlib import Path
import design_runs as D  # docs/results/quick_data: the training and the development sets' scoring
OUT = Path(sys.argv[1]); OUT.mkdir(exist_ok=True, parents=True)
CHANGES = {"paperaug": {"ultrasound_augment": False}, "lr3e-4": {"learning_rate": 0.0003}}

def job(a):
    net, var, seed = a
    import pandas as pd
    recipe = D.quick_recipe(net).with_changes(CHANGES[var])
    tag = f"{var}__{net}_seed{seed}"
    D.train_and_score(net, seed, recipe, tag, OUT, var)
    h = pd.read_csv(OUT/f"{tag}.history.csv")
    print(tag, "epochs", len(h), "ended by", h.ended_by.iloc[-1], flush=True)

if __name__ == "__main__":
    D.run_all(job, [(n, v, int(s)) for n in sys.argv[2].split(",") for v in sys.argv[3].split(",") for s in sys.argv[4].split(",")])
