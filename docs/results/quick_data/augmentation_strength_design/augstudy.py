"""Ultrasound-augmentation variants for the U-net family (design runs; development sets only)."""
import sys, time
from pathlib import Path
from multiprocessing import Pool
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "input_normalization_design"))  # its study.py scores
R = Path("results/quick")  # the fp32 quick study's results; run from the repository root
OUT = Path(sys.argv[1]); OUT.mkdir(exist_ok=True, parents=True)
VARIANTS = {
    "p75": {"P_SAMPLE": 0.75},
    "contrast0": {"LESION_CONTRAST": (0.0, 1.0)},
    "rim_strong": {"RIM_LEVEL": (0.1, 0.5), "RIM_WIDTH": (0.15, 0.5)},
    "texture35": {"TEXTURE": 0.35},
    "base": {},
}

def job(args):
    net, variant, seed = args
    import torch, pandas as pd
    torch.set_num_threads(1)
    from sonoseg.training import ultrasound_augment as ua
    for k, v in VARIANTS[variant].items():
        assert hasattr(ua, k); setattr(ua, k, v)
    from sonoseg.training import train, postprocess
    from sonoseg.training.recipe import Recipe
    from sonoseg.data import split
    import study as S  # the normalization design's scoring (phantom test, pymust_far)
    S.R = R
    tag = f"{variant}__{net}_seed{seed}"
    recipe = Recipe.from_json((R/f"runs/{net}/fold0/recipe.json").read_text())
    assert recipe.ultrasound_augment
    model = OUT/f"{tag}.pt"; hist = OUT/f"{tag}.history.csv"
    t = time.time()
    train.train(network=net, seed=seed, train_data=R/"data/cache/inpaint/fold0/train.npz", val_data=R/"data/cache/inpaint/fold0/val.npz",
                recipe=recipe, model_out=model, history_out=hist, checkpoint=None, device="cpu", threads=1)
    secs = time.time() - t
    val = split.samples_of_part(R/"data/manifest.csv", R/"data/split.csv", "val", 0)
    choice = postprocess.choose(postprocess.validation_dice([model], R/"data/cache/inpaint/fold0/val.npz", val, "area", "cpu"))
    rows = []
    for s in S.SETS: rows += S.score(model, s)
    df = pd.DataFrame(rows).assign(network=net, mode=variant, seed=seed, chosen=choice["chosen"])
    df["dice"] = df[f"dice_{choice['chosen']}"]
    df.to_csv(OUT/f"{tag}.per_image.csv", index=False)
    print(tag, f"{secs:.0f}s", choice["chosen"], df.groupby("set")["dice"].mean().round(3).to_dict(), flush=True)

if __name__ == "__main__":
    variants = sys.argv[2].split(","); seeds = [int(s) for s in sys.argv[3].split(",")]
    nets = sys.argv[4].split(",") if len(sys.argv) > 4 else ["unet", "lighter_unet_c128", "light_unet", "lighter_unet_c1"]
    jobs = [(n, v, s) for s in seeds for v in variants for n in nets if not (OUT/f"{v}__{n}_seed{s}.per_image.csv").exists()]
    with Pool(2, maxtasksperchild=1) as pool:
        list(pool.imap_unordered(job, jobs))
