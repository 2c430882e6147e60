"""Monte Carlo dropout at inference (SUMMARY.md): the U-net family's bottleneck dropout (p 0.5) left on
at test time and N passes averaged, an ensemble that costs no training, for the seed probe's single
trainings (../seed_ensemble_design/, three seeds in fp32 and in bf16), against the study's one pass
(dropout off), on the development sets only: the phantom's validation and test images and pymust_far
(pymust_heldout is not among them). Through the quick study's scales and size-aware rule, keep_one.

    PYTHONPATH=src python docs/results/quick_data/inference_probes_design/mc_dropout.py seedprobe30 seedprobe30bf16"""
import torch
from probe import main

from sonoseg.analysis.evaluate import dice
from sonoseg.serving import infer
from sonoseg.serving.modelio import load_model
from sonoseg.serving.probability_model import ProbabilityModel

PASSES = [0, 4, 16]  # 0: dropout off (the study's)


def mc_runs(model):
    """Passes -> the network's batch function: the mean of that many passes with dropout on (seed 0)."""
    loaded, saved = load_model(model, torch.device("cpu"))
    wrapped = ProbabilityModel(loaded, saved.get("normalization")).eval()

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

        return run

    return {n: mc_run(n) for n in PASSES}


def score(maps, truth):
    return {f"dice_{n}": dice(infer.postprocessed(maps[n] > 0.5, "area", "keep_one"), truth) for n in PASSES}


if __name__ == "__main__":
    main("mc_dropout", score, [f"dice_{n}" for n in PASSES], runs=mc_runs)
