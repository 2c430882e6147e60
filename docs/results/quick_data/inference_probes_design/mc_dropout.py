"""Monte Carlo dropout at inference (SUMMARY.md): the U-net family's bottleneck dropout (p 0.5) left on
at test time and N passes averaged, an ensemble that costs no training, for the seed probe's single
trainings (../seed_ensemble_design/, three seeds in fp32 and in bf16), against the study's one pass
(dropout off), on the development sets only: the phantom's validation and test images and pymust_far
(pymust_heldout is not among them). Through the quick study's scales and size-aware rule, keep_one.

    PYTHONPATH=src python docs/results/quick_data/inference_probes_design/mc_dropout.py seedprobe30 seedprobe30bf16"""
import sys
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

FAMILY = ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]
PASSES = [0, 4, 16]  # 0: dropout off (the study's)
SCALES = (1.0, 0.875, 0.75, 0.625)


def sets(R: Path) -> dict:
    return {
        "phantom_val": (R / "data/manifest.csv", R / "data/split.csv", "val", R / "data/cache/inpaint/fold0/val.npz"),
        "phantom_test": (R / "data/manifest.csv", R / "data/split.csv", "test", Path("results/quick/data/cache/inpaint/fold0/test.npz")),
        "pymust_far": (R / "external/pymust_far/manifest.csv", R / "external/pymust_far/split.csv", "test",
                       R / "external/pymust_far/cache/inpaint/test.npz"),
    }


def job(args):
    import torch

    torch.set_num_threads(1)
    from sonoseg.analysis.evaluate import dice
    from sonoseg.data import split
    from sonoseg.data.imageio import read_mask
    from sonoseg.data.preprocess import load_cache
    from sonoseg.serving import infer
    from sonoseg.serving.modelio import ProbabilityModel, images_to_tensor, load_model

    study, net, seed = args
    R = Path(f"results/{study}")
    model = R / f"runs/{net}/fold0/seed{seed}/model.pt"
    predictor = infer.model_predictor([model], "cpu")
    loaded, _ = load_model(model, torch.device("cpu"))
    wrapped = ProbabilityModel(loaded, _.get("normalization")).eval()

    def mc_run(passes: int):
        def run(batch):
            with torch.no_grad():
                x = torch.from_numpy(batch)
                if not passes:
                    return wrapped(x).numpy()[:, 0]
                for m in wrapped.modules():
                    if isinstance(m, torch.nn.Dropout):
                        m.train()
                torch.manual_seed(0)
                mean = sum(wrapped(x) for _ in range(passes)) / passes
                for m in wrapped.modules():
                    if isinstance(m, torch.nn.Dropout):
                        m.eval()
                return mean.numpy()[:, 0]
        return infer.scale_adaptive(run, SCALES, str(model), infer.area_limit(predictor, SCALES, 1.0, str(model)))

    rows = []
    for name, (manifest, split_csv, part, cache) in sets(R).items():
        samples = split.samples_of_part(manifest, split_csv, part, 0).set_index("sample_id")
        arrays = load_cache(cache)
        images = images_to_tensor(arrays["images"]).numpy()
        by_passes = {n: np.concatenate([b for _, b in infer.in_batches(mc_run(n), images)]) for n in PASSES}
        for i, sample_id in enumerate(str(s) for s in arrays["sample_ids"]):
            row = samples.loc[sample_id]
            truth = read_mask(row["mask"]).pixels
            out = {"study": study, "network": net, "seed": seed, "set": name, "sample_id": sample_id, "patient": row["patient"]}
            for n in PASSES:
                out[f"dice_{n}"] = dice(infer.probability_to_mask(by_passes[n][i], *truth.shape, "area", "keep_one"), truth)
            rows.append(out)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    studies = sys.argv[1:]
    with Pool(2) as pool:
        table = pd.concat(pool.map(job, [(s, n, seed) for s in studies for n in FAMILY for seed in (0, 1, 2)]))
    table.to_csv(Path(__file__).parent / "results/mc_dropout.csv.gz", index=False)
    cols = [f"dice_{n}" for n in PASSES]
    print(table.groupby(["set", "study", "network"])[cols].mean().round(3).to_string())
    print(table.groupby(["set", "study"])[cols].mean().round(3).to_string())
