"""Per-image input normalization design runs (SUMMARY.md). From the repository root, after an fp32 quick study:
   PYTHONPATH=docs/results/quick_data:docs/results/quick_data/input_normalization_design:src python \
       docs/results/quick_data/input_normalization_design/study.py OUT zscore,quantile 0 [NETWORKS] [RESULTS]
"""
import sys
from pathlib import Path
import design_runs as D  # docs/results/quick_data: the training and the development sets' scoring
R = Path(sys.argv[5]) if len(sys.argv) > 5 else D.RESULTS  # a quick study's results (fp32)
OUT = Path(sys.argv[1]); OUT.mkdir(exist_ok=True, parents=True)

def register():
    from sonoseg.networks import catalog
    for net in ("unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1"):
        for mode in ("zscore", "quantile"):
            name = f"{mode}__{net}"
            if name not in catalog.CATALOG:
                catalog.register(name, f"rankwrap:{name}")

def job(args):
    net, mode, seed = args
    register()
    name = net if mode == "none" else f"{mode}__{net}"
    D.train_and_score(net, seed, D.quick_recipe(net, R), f"{name}_seed{seed}", OUT, mode, catalog_name=name, results=R)


if __name__ == "__main__":
    modes = sys.argv[2].split(","); seeds = [int(s) for s in sys.argv[3].split(",")]
    nets = sys.argv[4].split(",") if len(sys.argv) > 4 else ["unet", "lighter_unet_c128", "light_unet", "lighter_unet_c1"]
    jobs = [(n, m, s) for s in seeds for n in nets for m in modes]
    jobs = [j for j in jobs if not (OUT/f"{(j[0] if j[1]=='none' else j[1]+'__'+j[0])}_seed{j[2]}.per_image.csv").exists()]
    D.run_all(job, jobs)
