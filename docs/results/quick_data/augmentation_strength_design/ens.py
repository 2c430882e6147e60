"""Two-seed ensembles (probabilities averaged) of the family against each seed alone, on the phantom's
test images and pymust_far (heldout not read). Post-processing keep_one for all (the paper's rule)."""
import sys
from pathlib import Path
import numpy as np, pandas as pd
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "input_normalization_design"))
from sonoseg.analysis.evaluate import dice
from sonoseg.data import split
from sonoseg.data.imageio import read_mask
from sonoseg.data.preprocess import load_cache
from sonoseg.serving import infer
from sonoseg.serving.modelio import images_to_tensor
R = Path("results/quick")  # the fp32 quick study (seed 0); run from the repository root
SETS = {"phantom_test": (R/"data/manifest.csv", R/"data/split.csv", R/"data/cache/inpaint/fold0/test.npz"),
        "pymust_far": (R/"external/pymust_far/manifest.csv", R/"external/pymust_far/split.csv", R/"external/pymust_far/cache/inpaint/test.npz")}
rows = []
for net in ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]:
    # seed 1: the models of `augstudy.py OUT base 1`, OUT given as the first argument
    models = {0: R/f"runs/{net}/fold0/seed0/model.pt", 1: Path(sys.argv[1]) / f"base__{net}_seed1.pt"}
    for s, (man, spl, cache) in SETS.items():
        samples = split.samples_of_part(man, spl, "test", 0).set_index("sample_id")
        arr = load_cache(cache); x = images_to_tensor(arr["images"]).numpy()
        probs = {k: np.concatenate([b for _, b in infer.in_batches(infer.torch_predictor(m, "cpu").run, x)]) for k, m in models.items()}
        probs["ensemble"] = (probs[0] + probs[1]) / 2
        for i, sid in enumerate(str(v) for v in arr["sample_ids"]):
            truth = read_mask(samples.loc[sid, "mask"]).pixels
            r = {"net": net, "set": s, "patient": samples.loc[sid, "patient"]}
            for k, p in probs.items():
                r[str(k)] = dice(infer.probability_to_mask(p[i], *truth.shape, "area", "keep_one"), truth)
            rows.append(r)
d = pd.DataFrame(rows)
print(d.groupby(["set", "net"])[["0", "1", "ensemble"]].mean().round(3).to_string())
for s in SETS:
    sub = d[d.set == s]
    gain = (sub["ensemble"] - (sub["0"] + sub["1"]) / 2).groupby(sub["patient"]).mean()
    rng = np.random.default_rng(0)
    b = [gain.sample(len(gain), replace=True, random_state=rng.integers(1 << 31)).mean() for _ in range(5000)]
    print(s, "family: ensemble - mean of the two seeds", f"{gain.mean():+.3f} [{np.percentile(b,2.5):+.3f}, {np.percentile(b,97.5):+.3f}]", "ensemble mean", round(sub["ensemble"].mean(), 3))
