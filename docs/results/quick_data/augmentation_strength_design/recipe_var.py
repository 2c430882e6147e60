"""U-net, seed 1 (and 0), with recipe changes: the paper's augmentation instead of the ultrasound one, or lr 3e-4."""
import sys, time, json
from pathlib import Path
from multiprocessing import Pool
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "input_normalization_design"))  # its study.py scores
R = Path("results/quick"); OUT = Path(sys.argv[1]); OUT.mkdir(exist_ok=True, parents=True)
CHANGES = {"paperaug": {"ultrasound_augment": False}, "lr3e-4": {"learning_rate": 0.0003}}
def job(a):
    net, var, seed = a
    import torch, pandas as pd
    torch.set_num_threads(1)
    from sonoseg.training import train, postprocess
    from sonoseg.training.recipe import Recipe
    from sonoseg.data import split
    import study as S
    recipe = Recipe.from_json((R/f"runs/{net}/fold0/recipe.json").read_text()).with_changes(CHANGES[var])
    tag = f"{var}__{net}_seed{seed}"; model = OUT/f"{tag}.pt"; hist = OUT/f"{tag}.history.csv"
    train.train(network=net, seed=seed, train_data=R/"data/cache/inpaint/fold0/train.npz", val_data=R/"data/cache/inpaint/fold0/val.npz",
                recipe=recipe, model_out=model, history_out=hist, checkpoint=None, device="cpu", threads=1)
    val = split.samples_of_part(R/"data/manifest.csv", R/"data/split.csv", "val", 0)
    choice = postprocess.choose(postprocess.validation_dice([model], R/"data/cache/inpaint/fold0/val.npz", val, "area", "cpu"))
    rows = []
    for s in S.SETS: rows += S.score(model, s)
    df = pd.DataFrame(rows).assign(network=net, mode=var, seed=seed, chosen=choice["chosen"]); df["dice"] = df[f"dice_{choice['chosen']}"]
    df.to_csv(OUT/f"{tag}.per_image.csv", index=False)
    h = pd.read_csv(hist)
    print(tag, len(h), h.ended_by.iloc[-1], df.groupby("set")["dice"].mean().round(3).to_dict(), flush=True)
if __name__ == "__main__":
    jobs = [(n, v, int(s)) for n in sys.argv[2].split(",") for v in sys.argv[3].split(",") for s in sys.argv[4].split(",")]
    with Pool(2, maxtasksperchild=1) as p: list(p.imap_unordered(job, jobs))
