"""Ultrasound-augmentation variants for the U-net family (design runs; development sets only).
From the repository root, after an fp32 quick study in results/quick:
   PYTHONPATH=docs/results/quick_data:src python docs/results/quick_data/augmentation_strength_design/augstudy.py \
       OUT p75,contrast0 0,1 [NETWORKS]
"""
import sys
from pathlib import Path
import design_runs as D  # docs/results/quick_data: the training and the development sets' scoring
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
    from sonoseg.training import ultrasound_augment as ua
    for k, v in VARIANTS[variant].items():  # the module's constants, set in this worker before training
        assert hasattr(ua, k); setattr(ua, k, v)
    recipe = D.quick_recipe(net)
    assert recipe.ultrasound_augment
    D.train_and_score(net, seed, recipe, f"{variant}__{net}_seed{seed}", OUT, variant)

if __name__ == "__main__":
    variants = sys.argv[2].split(","); seeds = [int(s) for s in sys.argv[3].split(",")]
    nets = sys.argv[4].split(",") if len(sys.argv) > 4 else D.FAMILY
    D.run_all(job, [(n, v, s) for s in seeds for v in variants for n in nets if not (OUT/f"{v}__{n}_seed{s}.per_image.csv").exists()])
