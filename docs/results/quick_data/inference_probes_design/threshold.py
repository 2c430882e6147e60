"""The lesion threshold (SUMMARY.md): the U-net family's single trainings of the seed probe
(../seed_ensemble_design/, three seeds in fp32 and in bf16) thresholded at 0.5 and below, on the
development sets only: the phantom's validation and test images and pymust_far (pymust_heldout is not
among them). The probability is the study's (infer.predict's: the quick study's scales and size-aware
rule, whose own lesion test stays at 0.5); only the final mask's threshold moves, then keep_one.

    PYTHONPATH=src python docs/results/quick_data/inference_probes_design/threshold.py seedprobe30 seedprobe30bf16"""
from probe import main

from sonoseg.analysis.evaluate import dice
from sonoseg.serving import infer

THRESHOLDS = [0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2]


def score(maps, truth):
    return {f"dice_{t}": dice(infer.postprocessed(maps[""] > t, "area", "keep_one"), truth) for t in THRESHOLDS}


if __name__ == "__main__":
    main("threshold", score, [f"dice_{t}" for t in THRESHOLDS])
