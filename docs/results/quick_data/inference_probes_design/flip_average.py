"""Horizontal-flip averaging at inference (SUMMARY.md), for the seed probe's single trainings
(../seed_ensemble_design/, three seeds in fp32 and in bf16), against the study's one pass, on the
development sets only: the phantom's validation and test images and pymust_far (pymust_heldout is not
among them). Through the quick study's scales, size-aware rule and its second trigger (1.3), keep_one:
as `make study`'s flip-averaged twin predicts.

    PYTHONPATH=src python docs/results/quick_data/inference_probes_design/flip_average.py seedprobe30 seedprobe30bf16"""
from probe import main

from sonoseg.analysis.evaluate import dice
from sonoseg.serving import infer

VARIANTS = {"plain": lambda run: run, "flip": infer.flip_averaged}


def flip_runs(model):
    predictor = infer.model_predictor([model], "cpu")
    return {name: make(predictor.run) for name, make in VARIANTS.items()}


def score(maps, truth):
    return {f"dice_{name}": dice(infer.postprocessed(maps[name] > 0.5, "area", "keep_one"), truth) for name in VARIANTS}


if __name__ == "__main__":
    main("flip_average", score, [f"dice_{name}" for name in VARIANTS], runs=flip_runs, found_above=1.3)
