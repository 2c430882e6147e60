"""What test-time scale selection costs (or gives) on the study's own test images: each family network's
models of a finished study (every fold and seed; the quick study has one of each), the phantom's test
images (each fold's test part) predicted at the input size alone and with
the study's predict.scales, post-processed as the study chose on validation, Dice at the original size,
paired by image; mean difference with a 95 % bootstrap CI over patients. Reads only the in-domain test
part. With --shrink-above Q, the size-aware rule (predict.shrink_above; the models' recorded training
lesion areas). From the repository root:
PYTHONPATH=src python <this file> RESULTS_DIR [--shrink-above Q] [SCALES...]"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sonoseg.analysis.evaluate import dice
from sonoseg.data import split
from sonoseg.data.imageio import read_mask
from sonoseg.data.preprocess import load_cache
from sonoseg.serving import infer
from sonoseg.serving.modelio import images_to_tensor

torch.set_num_threads(2)
R = Path(sys.argv[1])
ARGS = sys.argv[2:]
SHRINK_ABOVE = float(ARGS[ARGS.index("--shrink-above") + 1]) if "--shrink-above" in ARGS else None
if SHRINK_ABOVE is not None:
    del ARGS[ARGS.index("--shrink-above") : ARGS.index("--shrink-above") + 2]
SCALES = tuple(float(f) for f in ARGS) or (1.0, 0.875, 0.75, 0.625)
rows = []
for net in ["unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"]:
    for model in sorted((R / "runs" / net).glob("fold*/seed*/model.pt")):  # every fold and seed the study has
        fold_dir, seed = model.parent.parent, model.parent.name
        fold = int(fold_dir.name.removeprefix("fold"))
        arrays = load_cache(R / f"data/cache/inpaint/{fold_dir.name}/test.npz")
        samples = split.samples_of_part(R / "data/manifest.csv", R / "data/split.csv", "test", fold).set_index("sample_id")
        images = images_to_tensor(arrays["images"]).numpy()
        choice = fold_dir / "postprocess.json"  # a study that declared the paper's rule has none
        postprocess = json.loads(choice.read_text())["chosen"] if choice.exists() else "keep_one"
        predictor = infer.torch_predictor(model, "cpu")
        limit = infer.area_limit(predictor, SCALES, SHRINK_ABOVE, net)
        for label, fn in (("input_size", predictor.run), ("scales", infer.scale_adaptive(predictor.run, SCALES, net, limit))):
            probabilities = np.concatenate([b for _, b in infer.in_batches(fn, images)])
            for sid, p in zip((str(s) for s in arrays["sample_ids"]), probabilities):
                truth = read_mask(samples.loc[sid, "mask"]).pixels
                if truth.any():
                    mask = infer.probability_to_mask(p, *truth.shape, "area", postprocess)
                    rows.append({"network": net, "variant": label, "fold": fold, "seed": seed, "sample_id": sid,
                                 "patient": samples.loc[sid, "patient"], "dice": dice(mask, truth)})
d = pd.DataFrame(rows)
wide = d.pivot_table(index=["network", "patient", "fold", "seed", "sample_id"], columns="variant", values="dice")
rng = np.random.default_rng(0)
print(f"{R}: scales {SCALES}" + ("" if SHRINK_ABOVE is None else f", shrink_above {SHRINK_ABOVE}") + "; in-domain test images with a lesion")
for net, part in list(wide.groupby(level="network")) + [("family", wide)]:
    diff = (part["scales"] - part["input_size"]).groupby(level="patient").mean()
    boots = [diff.sample(len(diff), replace=True, random_state=rng.integers(1 << 31)).mean() for _ in range(5000)]
    print(f"{net:18s} input size {part['input_size'].mean():.3f}  scales {part['scales'].mean():.3f}  "
          f"difference {diff.mean():+.3f} [{np.percentile(boots, 2.5):+.3f}, {np.percentile(boots, 97.5):+.3f}] over {len(diff)} patients")
