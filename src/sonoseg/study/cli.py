"""The sonoseg command-line tool: one declaration per command (its arguments, with choices read from
the stages' options), each handled in sonoseg.study.commands. Every Snakemake rule is one of these
commands. Parsing imports neither torch nor OpenCV."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading

from sonoseg.data.options import CACHE_MARKS, INTERPOLATIONS, MARKS, PARTS
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog
from sonoseg.serving.options import (
    BACKENDS,
    COMPONENT_RULES,
    POSTPROCESSES,
    SCALES_HELP,
    SHRINK_ABOVE_HELP,
    SHRINK_FOUND_ABOVE_HELP,
)
from sonoseg.study import commands


def scale_factor(value: str) -> float:
    """One --scales factor, in (0, 1] as predict.scales (1: the input size; a factor above it would be
    dropped unseen); a value that is not a number is most often an image the greedy list took."""
    try:
        factor = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a scale factor: --scales takes numbers up to the next option, so put the images "
            "before --scales, or end the factors with --"
        ) from None
    if not 0 < factor <= 1:
        raise argparse.ArgumentTypeError(
            f"{value} is not a scale factor in (0, 1]: --scales shrinks images to these factors of the input size "
            "(1: the input size itself)"
        )
    return factor


def whole_number(least: int, expected: str, most: int | None = None):
    """An argparse type: a whole number of at least ``least`` (and at most ``most``), else the error
    '<value> is not <expected>'."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = least - 1
        if number < least or (most is not None and number > most):
            raise argparse.ArgumentTypeError(f"{value!r} is not {expected}")
        return number

    return parse


# segment's --max-pixels, --size (export's too) and --threads.
pixel_count = whole_number(1, "a number of pixels: 1 or more")
# The largest input size taken: the study trains at 32-256 px, and a network's memory grows with the square of
# the side, so a larger --size is a typing slip, not a setting. Measured on a CPU (Lighter U-net @1, one image):
# 2048 px took 11 GB and two minutes; 3072 px grew past 23 GB, and at 4096 PyTorch's convolution crashed the
# process (a segmentation fault, no message).
LARGEST_INPUT_SIZE = 2048
input_size = whole_number(
    0, f"an input size: pixels, 1 to {LARGEST_INPUT_SIZE} (0: the model's own)", most=LARGEST_INPUT_SIZE
)
# More threads than a few per CPU only slow a run (5000 on 2 CPUs: 71 s for one 32-px image, 0.5 s with the
# default), and a count in the tens of thousands broke PyTorch's thread pool, as a model file that would not load.
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
MOST_THREADS = 4 * CPUS
thread_count = whole_number(
    0,
    f"a number of threads: 1 to {MOST_THREADS}, 4 per CPU this process may use (0: the backend chooses)",
    most=MOST_THREADS,
)


def path_given(value: str) -> str:
    """A path argument of segment and export, refused when empty: the OS reads "" as the working folder, so
    a script's unset variable (--outdir "$OUT") would otherwise write masks, or look for images, there."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset variable in a script?)")
    return value


class GivenOnce(argparse.Action):
    """An option that takes one value and is refused when given twice: argparse keeps the last, so
    ``--model A --model B`` would serve B alone without a word (a user combining two networks)."""

    def __call__(self, parser, namespace, value, option_string=None):
        if getattr(namespace, self.dest, None) not in (None, self.default):
            parser.error(
                f"{option_string} given twice ({getattr(namespace, self.dest)} and {value}): give it once"
                + (" (a run folder serves the ensemble of one network's models)" if self.dest == "model" else "")
            )
        setattr(namespace, self.dest, value)


def add_scale_selection(p: argparse.ArgumentParser, recorded: bool = False) -> None:
    """--scales and its size-aware rule (--shrink-above, --shrink-found-above), as predict,
    choose-postprocess and segment take them. ``recorded`` (segment): left out, the rule recorded with a
    study's models applies."""
    p.add_argument(
        "--scales",
        nargs="+",
        type=scale_factor,
        default=None if recorded else [1.0],
        help=SCALES_HELP
        + (
            "; default: the scales recorded with a study's models (the study's predict.scales), else off"
            if recorded
            else " (predict.scales)"
        ),
    )
    for flag, help_text in (("--shrink-above", SHRINK_ABOVE_HELP), ("--shrink-found-above", SHRINK_FOUND_ABOVE_HELP)):
        key = flag[2:].replace("-", "_")
        suffix = (
            "; with --scales only (without, the study's recorded rule applies)" if recorded else f" (predict.{key})"
        )
        p.add_argument(flag, type=float, default=None, help=help_text + suffix)


def add_threads(p: argparse.ArgumentParser, what: str) -> None:
    """--threads, by default the job's threads: Snakemake sets $OMP_NUM_THREADS to them for every job,
    so `snakemake --set-threads ingest=8` gives the job more with no change to its command (a changed
    command would make Snakemake redo the study after it)."""
    default = os.environ.get("OMP_NUM_THREADS", "1")
    p.add_argument(
        "--threads",
        type=int,
        default=int(default) if default.isdigit() and int(default) > 0 else 1,
        help=f"{what} (default: $OMP_NUM_THREADS, which Snakemake sets to the job's threads, else 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sonoseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write the synthetic phantom dataset as a folder dataset")
    p.add_argument("outdir")
    p.add_argument("--patients", type=int, default=348)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--difficulty", default="paper", help="easy | paper | hard (contrast, clutter, margin ambiguity)")
    p.add_argument("--calipers", choices=["true", "false"], default="true", help="draw light-blue calipers")
    p.add_argument("--caliper-noise", type=float, default=3.0, help="caliper placement noise, px at width 646")
    p.add_argument("--organs", default="", help='organ weights as JSON, e.g. {"breast": 1, "liver": 1}')
    p.set_defaults(func=commands.cmd_synth)

    p = sub.add_parser("ingest", help="check a dataset and write its manifest")
    p.add_argument("--options", required=True, help="the config's dataset section as JSON")
    p.add_argument("--fingerprint", default="", help="the dataset's fingerprint record, for the manifest's provenance")
    p.add_argument("--out", required=True)
    add_threads(p, "threads reading the images and confirming near duplicates")
    p.set_defaults(func=commands.cmd_ingest)

    p = sub.add_parser(
        "fingerprint",
        help="fingerprint a study's data (as the workflow does at start) and say what changed since the last run",
    )
    p.add_argument("--configfile", nargs="*", default=[], help="config files merged over config/config.yaml")
    p.add_argument("--rehash", action="store_true", help="read every file again, trusting no cached hash")
    p.set_defaults(func=commands.cmd_fingerprint)

    custom = argparse.ArgumentParser(add_help=False)
    custom.add_argument("--custom-networks", default="", help="the config's custom_networks as JSON")

    p = sub.add_parser("runs", help="print the run sheet of a config: one row per run (kind, method, seeds, recipe)")
    p.add_argument("--configfile", nargs="*", default=[], help="config files merged over config/config.yaml")
    p.add_argument("--config-json", default="", help="the whole config as JSON")
    p.add_argument("--config-json-file", default="", help="a file holding it (as the workflow passes it)")
    p.add_argument("--out", default="", help="write the TSV here instead of standard output")
    p.set_defaults(func=commands.cmd_runs)

    p = sub.add_parser("recipe", help="write a run's recipe.json (the recipe selection's choice applied)")
    p.add_argument("--recipe", required=True, help="the run sheet's recipe as JSON")
    p.add_argument("--selection", default="", help="the recipe selection whose chosen settings the run takes")
    p.add_argument("--augmentation", default="", help="the augmentation choice (development set) the run takes")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_recipe)

    p = sub.add_parser(
        "choose-augmentation", help="choose a network's augmentation by Dice on the development external set"
    )
    p.add_argument("--network", required=True)
    p.add_argument(
        "--metrics", nargs="+", required=True, help="OPTION=metrics.csv (paper, ultrasound) of each candidate and fold"
    )
    p.add_argument("--manifest", required=True, help="the development set's manifest (patients)")
    p.add_argument("--dataset", required=True, help="the development set's name")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_choose_augmentation)

    p = sub.add_parser("split", help="patient-level train/val/test split")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fractions", type=float, nargs=3, default=[0.6, 0.2, 0.2])
    p.add_argument("--split-file", default="")
    p.add_argument("--stratify", default="", help="a manifest column whose values every part gets in proportion")
    p.add_argument("--folds", type=int, default=1, help="patient-level cross-validation folds (1: one split)")
    p.add_argument("--external", action="store_true", help="an external dataset: every image a test image")
    p.add_argument(
        "--against",
        nargs="*",
        action="extend",
        default=[],
        help="with --external: NAME=manifest.csv of each dataset whose images the external one must not hold",
    )
    p.add_argument(
        "--on-overlap", choices=["fail", "exclude"], help="with --against: what a shared image does (default: fail)"
    )
    p.add_argument("--near-duplicate-distance", type=int, help="with --against: as ingest's (default: its default)")
    p.add_argument("--near-duplicate-similarity", type=float, help="with --against: as ingest's (default: its default)")
    p.add_argument("--overlap-out", default="", help="with --against: the shared images found (CSV)")
    p.add_argument("--dataset", default="external", help="the external dataset's name, for messages")
    add_threads(p, "with --against: threads reading the images and confirming near duplicates")
    p.set_defaults(func=commands.cmd_split)

    p = sub.add_parser("preprocess", help="resize one split and cache it as an array file")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--part", required=True, choices=PARTS)
    p.add_argument("--size", type=int, required=True)
    p.add_argument(
        "--interpolation",
        default=INTERPOLATIONS[0],
        choices=INTERPOLATIONS,
        help="how images and masks are resized to --size (config preprocess.interpolation)",
    )
    p.add_argument(
        "--marks",
        default="keep",
        choices=CACHE_MARKS,
        help="coloured overlays kept or inpainted first; unmarked: the phantom rendered without calipers",
    )
    p.add_argument("--unmarked-images", default="", help="with --marks unmarked: the phantom rendered without calipers")
    p.add_argument(
        "--dataset-root", default="", help="with --unmarked-images: the dataset root the manifest's paths lie in"
    )

    p.add_argument("--fold", type=int, default=0, help="the cross-validation fold whose part to cache")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_preprocess)

    p = sub.add_parser("train", help="train one network with one seed", parents=[custom])
    p.add_argument("--network", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--recipe", required=True, help="the run's recipe.json")
    p.add_argument("--model", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--checkpoint", default="")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--pretrained-backbone", default="")
    p.add_argument(
        "--reuse-models", nargs="*", default=[], help="finished runs' model.pt; one that is this training is adopted"
    )
    p.add_argument("--reuse-histories", nargs="*", default=[], help="their history.csv, in the same order")
    p.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=60.0,
        help="write the checkpoint at most this often (train.checkpoint_seconds; 0: every epoch)",
    )
    p.add_argument("--runs-per-gpu", type=int, default=1, help="jobs sharing one GPU (train.runs_per_gpu)")
    p.add_argument(
        "--finished-copy",
        default="",
        help="a folder that keeps the last finished trainings' models and histories, each in a subfolder named by "
        "its fingerprint, which sonoseg prunes; a rerun that is one of those trainings adopts it (default: beside "
        "--checkpoint, NAME.finished/)",
    )
    p.add_argument(
        "--adopt-finished",
        choices=("0", "1"),
        default=os.environ.get(commands.ADOPT_FINISHED_VARIABLE, "1"),
        help="0: train, adopting no finished copy or candidate (to time it, say); "
        f"default: ${commands.ADOPT_FINISHED_VARIABLE} or 1",
    )
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser(
        "select-recipe", help="choose a network's auto settings (learning rate, weight decay) by validation loss"
    )
    p.add_argument("--network", required=True)
    p.add_argument("--points", nargs="+", required=True, help="each candidate's settings: name=value[,name=value]")
    p.add_argument("--histories", nargs="+", required=True, help="each candidate's history.csv, in the same order")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_select_recipe)

    p = sub.add_parser(
        "predict",
        help="segment the test images (a trained network, or a floor), at original size; several test sets "
        "(one value each of --data, --manifest, --split, --fold, --outdir and the scoring options, in order) "
        "with the models loaded once",
    )
    p.add_argument(
        "--model", nargs="*", default=[], help="a trained network's model.pt (with --data); several: their ensemble"
    )
    p.add_argument("--data", nargs="*", default=[], help="the resized test images (data/cache/test.npz)")
    p.add_argument("--baseline", default="", help="a floor without training (e.g. threshold_baseline)")
    p.add_argument("--marks", default="keep", choices=MARKS, help="a floor's images: marks kept or inpainted")
    p.add_argument(
        "--reliance",
        action="store_true",
        help="the one exception to matching marks: a model trained with marks kept, tested with them inpainted",
    )
    p.add_argument("--tta", action="store_true", help="horizontal-flip test-time augmentation (predict.tta)")
    add_scale_selection(p)
    p.add_argument(
        "--fold", nargs="*", type=int, default=[], help="the cross-validation fold whose test part to segment (0)"
    )
    p.add_argument("--manifest", nargs="+", required=True)
    p.add_argument("--split", nargs="+", required=True)
    p.add_argument("--outdir", nargs="+", required=True)
    p.add_argument(
        "--metrics", nargs="*", default=[], help="also score the predictions (Dice, HD95 per image) into this CSV"
    )
    p.add_argument(
        "--tta-outdir",
        nargs="*",
        default=[],
        help="also write the flip-averaged predictions here, in the same pass (not with --tta)",
    )
    p.add_argument("--tta-metrics", nargs="*", default=[], help="and score them into this CSV")
    p.add_argument("--component-rule", default="area", choices=COMPONENT_RULES)
    p.add_argument("--postprocess", default="keep_one", choices=POSTPROCESSES, help="what follows the threshold")
    p.add_argument(
        "--postprocess-choice",
        nargs="*",
        default=[],
        help="the folds' postprocess.json (chosen on validation), instead of --postprocess",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--runs-per-gpu", type=int, default=1, help="jobs sharing one GPU (train.runs_per_gpu)")
    p.set_defaults(func=commands.cmd_predict)

    p = sub.add_parser(
        "choose-postprocess", help="choose the post-processing of a run's fold on its validation part (Dice)"
    )
    p.add_argument("--model", nargs="+", required=True, help="the fold's model.pt, one per seed")
    p.add_argument("--data", required=True, help="the fold's resized validation images (data/cache/.../val.npz)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--component-rule", default="area", choices=COMPONENT_RULES)
    p.add_argument("--device", default="auto")
    add_scale_selection(p)
    p.add_argument("--out", required=True, help="postprocess.json")
    p.set_defaults(func=commands.cmd_choose_postprocess)

    p = sub.add_parser("segment", help="segment new images with a trained model (e.g. Lighter U-net @128)")
    p.add_argument(
        "images",
        nargs="+",
        type=path_given,
        help="image files (PNG, JPEG, BMP, TIFF, WebP, GIF; RGB, grayscale, RGBA or 16-bit; not float, not DICOM: "
        "export a DICOM's frames as PNG first), or folders: each stands for the image files directly in it",
    )
    p.add_argument(
        "--model",
        required=True,
        type=path_given,
        action=GivenOnce,
        help="a model.pt written by the workflow, a model.onnx from `sonoseg export` (served by ONNX Runtime), or a "
        "run folder (results/<study>/runs/<network>/): its folds' and seeds' models are averaged as an ensemble",
    )
    p.add_argument("--tta", action="store_true", help="average each model over the image and its horizontal mirror")
    add_scale_selection(p, recorded=True)
    p.add_argument(
        "--outdir",
        required=True,
        type=path_given,
        action=GivenOnce,
        help="where <image name>_mask.png go (not a folder of the images: BUSI keeps its ground truth there under "
        "that very name)",
    )
    p.add_argument(
        "--component-rule",
        default=None,
        choices=COMPONENT_RULES,
        help="which connected component keep_one keeps (default: the one an exported model's sidecar records, "
        "else area)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:<index>")
    p.add_argument("--size", type=input_size, default=0, help="input size (default: the size the model was trained at)")
    p.add_argument(
        "--backend",
        default=None,
        choices=BACKENDS,
        help="onnxruntime takes a model.onnx from `sonoseg export` (or exports the model.pt first); default: "
        "onnxruntime for a .onnx model, else torch",
    )
    p.add_argument(
        "--threads",
        type=thread_count,
        default=0,
        help="CPU threads, torch's or ONNX Runtime's (0: the backend's default)",
    )
    p.add_argument(
        "--max-pixels",
        type=pixel_count,
        default=None,
        help="refuse an image of more pixels than this (a decompression-bomb guard; default: "
        "sonoseg.data.imageio.MAX_IMAGE_PIXELS, 100 million, far above any ultrasound frame)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal)")
    p.add_argument(
        "--postprocess",
        default="recorded",
        choices=("recorded", *POSTPROCESSES),
        help="recorded: the choice made on validation beside a study's models (else keep_one)",
    )
    p.set_defaults(func=commands.cmd_segment)

    p = sub.add_parser("export", help="export a trained model.pt to ONNX (+ a JSON sidecar: pre/post-processing)")
    p.add_argument(
        "--model",
        required=True,
        type=path_given,
        action=GivenOnce,
        help="a model.pt written by the workflow, or a run folder: its ensemble as one graph",
    )
    p.add_argument(
        "--out",
        required=True,
        type=path_given,
        action=GivenOnce,
        help="model.onnx; the sidecar is written beside it as model.onnx.json",
    )
    p.add_argument("--component-rule", default="area", choices=COMPONENT_RULES)
    p.add_argument("--size", type=input_size, default=0, help="input size (default: the size the model was trained at)")
    p.set_defaults(func=commands.cmd_export)

    p = sub.add_parser(
        "cost", help="parameters, forward GFLOPs and CPU latency (batch 1) per network", parents=[custom]
    )
    p.add_argument("--networks", nargs="+", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per network (the median is reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--prepared", help="cost-prepare's folder: only time here (else prepare first, in this process)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_cost)

    p = sub.add_parser(
        "cost-prepare",
        help="what cost times, made beforehand (no quiet machine needed): counts and exported graphs",
        parents=[custom],
    )
    p.add_argument("--networks", nargs="+", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=commands.cmd_cost_prepare)

    p = sub.add_parser("evaluate", help="Dice and HD95 per test image")
    p.add_argument("--predictions", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--fold", type=int, default=0, help="the cross-validation fold whose test part was segmented")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_evaluate)

    p = sub.add_parser("summarize", help="per-seed summary of one run (a network, a floor or a ladder step)")
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>)")
    p.add_argument("--run-json", required=True, help="the run's row of the run sheet, as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_summarize)

    p = sub.add_parser("collect", help="every run's per-image metrics and trainings as two long tables")
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>)")
    p.add_argument("--sheet", required=True, help="the run sheet (runs.tsv)")
    p.add_argument("--runs", nargs="+", required=True, help="the runs to collect, in the tables' order")
    p.add_argument("--manifest", required=True, help="the manifest (patient groups, metadata)")
    p.add_argument("--per-image", required=True, help="the long per-image table (CSV; .gz compresses)")
    p.add_argument("--trainings", required=True, help="one row per training (CSV)")
    p.add_argument(
        "--external-manifest", nargs="*", default=[], help="NAME=manifest.csv of each external dataset's runs"
    )
    p.set_defaults(func=commands.cmd_collect)

    p = sub.add_parser(
        "generalization", help="in-domain vs external-dataset Dice per network (patient CIs)", parents=[custom]
    )
    p.add_argument("--per-image", required=True, help="the collected per_image.csv.gz")
    p.add_argument("--networks", nargs="+", required=True, help="the study's network runs, in the table's order")
    p.add_argument("--datasets", nargs="+", required=True, help="NAME=ROLE (development, held_out) per external set")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument(
        "--overlap", nargs="*", default=[], help="NAME=overlap.csv per external set: what its tests left out"
    )
    p.add_argument(
        "--manifests", nargs="*", default=[], help="NAME=manifest.csv per external set: what its ingest left out"
    )
    p.add_argument("--manifest", help="the main dataset's manifest.csv: its data fingerprint ends the caption")
    p.add_argument("--out", required=True, help="the CSV; .md beside it")
    p.set_defaults(func=commands.cmd_generalization)

    p = sub.add_parser(
        "subgroups",
        help="Dice per value of manifest columns (lesion type, class), per network and dataset",
        parents=[custom],
    )
    p.add_argument("--per-image", required=True, help="the collected per_image.csv.gz")
    p.add_argument("--networks", nargs="+", required=True, help="the study's network runs, in the table's order")
    p.add_argument(
        "--columns", nargs="*", default=[], help="manifest columns (class, view, lesion_type or meta_lesion_type, ...)"
    )
    p.add_argument("--datasets", nargs="*", default=[], help="NAME=ROLE (development, held_out) per external set")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--manifest", help="the main dataset's manifest.csv: its data fingerprint ends the caption")
    p.add_argument("--out", required=True, help="the CSV; .md beside it")
    p.set_defaults(func=commands.cmd_subgroups)

    p = sub.add_parser("table", help="Table 1, Table 2 or the ladder from summaries", parents=[custom])
    p.add_argument("kind", choices=catalog.STUDY_TABLES)
    p.add_argument("--summaries", nargs="+", required=True)
    p.add_argument("--out", required=True, help="the CSV; .md and .tex are written beside it")
    p.add_argument("--input-size", type=int, default=0, help="the networks' input size, for the caption")
    p.add_argument(
        "--input-interpolation", default=INTERPOLATIONS[0], choices=INTERPOLATIONS, help="how it was resized, likewise"
    )
    p.add_argument("--ladder-network", default="unet", help="the network the ladder trained, for the caption")
    p.add_argument("--cost", default="", help="tables/cost.csv: adds GFLOPs and CPU latency columns")
    p.add_argument("--per-image", default="", help="the collected per-image table: adds the Dice CI by patient")
    p.add_argument("--manifest", default="", help="the manifest: the caption names the data's fingerprint")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.set_defaults(func=commands.cmd_table)

    p = sub.add_parser(
        "paired",
        aliases=["marks-ablation"],
        help="pairs of runs on the same test images, by patient: the caliper ablation, reliance on the marks, TTA, "
        "ensembles, the augmentation",
    )
    p.add_argument("--pairs", nargs="+", required=True, help="MAIN:TWIN run names")
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument(
        "--family",
        required=True,
        help="what the pairs compare, which sets the caption and the Holm family: ablation (trained and tested with "
        "the marks the other way), reliance (the same models tested with marks inpainted), tta (the same models "
        "flip-averaged), ensemble (the seeds' ensemble against the single trainings) or augmentation (the "
        "ultrasound augmentation against the paper's): sonoseg.analysis.comparisons.PAIRED_FAMILIES",
    )
    p.add_argument("--manifest", help="the main dataset's manifest.csv: its data fingerprint ends the caption")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument(
        "--choice",
        nargs="+",
        action="append",
        default=[],
        metavar=("FILE", "NETWORK"),
        help="an augmentation choice (selection/<network>/augmentation.json) and the networks that train with what "
        "it adopted: the caption says which option the study kept (repeat for each choosing network)",
    )
    p.add_argument("--out", required=True, help="the table's CSV; its Markdown, with the caption, is written beside it")
    p.set_defaults(func=commands.cmd_paired)

    p = sub.add_parser(
        "equivalence", help="the study's equivalence claims (config claims), TOST with a margin", parents=[custom]
    )
    p.add_argument("--manifest", required=True)
    p.add_argument("--pairs", nargs="+", required=True, help="CANDIDATE:REFERENCE run names")
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument("--margin", type=float, required=True, help="the equivalence margin in Dice")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--out", required=True, help="the CSV; a Markdown page of the claims is written beside it")
    p.set_defaults(func=commands.cmd_equivalence)

    p = sub.add_parser("convergence", help="the convergence check: each network against itself with twice the budget")
    p.add_argument("--manifest", required=True)
    p.add_argument("--pairs", nargs="+", required=True, help="BASE:LONGER run names")
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>)")
    p.add_argument("--sheet", required=True, help="the run sheet (runs.tsv)")
    p.add_argument("--check-seed", required=True, help="the seed both sides of each pair trained with")
    p.add_argument("--margin", type=float, required=True, help="the change in Dice that counts as none")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_convergence)

    p = sub.add_parser("selection-table", help="collect every network's recipe selection (learning rate, weight decay)")
    p.add_argument("--choices", nargs="+", required=True)
    p.add_argument("--manifest", default=None, help="the study's manifest: the data named in the table's caption")
    p.add_argument("--out", required=True, help="selection.csv; its Markdown twin, with the caption, beside it")
    p.set_defaults(func=commands.cmd_selection_table)

    p = sub.add_parser("report-data", help="report: manifest and split counts (HTML), sample images (PNG)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overview", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--marks", help="the images with the most coloured marks, before and after inpainting (PNG)")
    p.set_defaults(func=commands.cmd_report_data)
    p = sub.add_parser("report-table", help="report: one study table as HTML, ours beside the paper's")
    p.add_argument("kind", choices=catalog.REPORT_TABLES)
    p.add_argument("--table", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_report_table)
    p = sub.add_parser("report-curves", help="report: one network's training curves (every seed)")
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>)")
    p.add_argument("--run-json", required=True, help="the run's row of the run sheet, as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_report_curves)
    p = sub.add_parser("report-generalization", help="report: in-domain and external Dice per network, with CIs")
    p.add_argument("--table", required=True, help="tables/generalization.csv")
    p.add_argument(
        "--overlap", nargs="*", default=[], help="NAME=overlap.csv per external set: what its tests left out"
    )
    p.add_argument(
        "--manifests", nargs="*", default=[], help="NAME=manifest.csv per external set: what its ingest left out"
    )
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_report_generalization)

    p = sub.add_parser("report-figure2", help="report: the paper's Figure 2 rebuilt", parents=[custom])
    p.add_argument("--manifest", required=True)
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>): the predictions")
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument("--runs", nargs="+", required=True, help="the compared runs, in order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="U-net, the best of each family and the floors, large")
    p.add_argument("--all-methods", default="", help="also write the full grid of every method here")
    p.set_defaults(func=commands.cmd_report_figure2)
    p = sub.add_parser(
        "report-cost", help="report: Dice against parameters (GFLOPs, latency with --cost)", parents=[custom]
    )
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument("--runs", nargs="+", required=True, help="the compared runs, in order")
    p.add_argument("--cost", help="the cost table (tables/cost.csv, sonoseg cost: its columns)")
    p.add_argument("--summaries", nargs="*", default=[], help="the methods' networks/<run>.csv (parameter counts)")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--front-csv", help="write the parameter front's paired statistics here (by patient)")
    p.add_argument("--front-table", help="the same as an HTML page")
    p.add_argument("--manifest", required=True, help="the study's manifest: the data the figure and page name")
    p.add_argument("--out", required=True)
    p.set_defaults(func=commands.cmd_report_cost)
    p = sub.add_parser("report-statistics", help="report: per-image distributions and paired tests", parents=[custom])
    p.add_argument("--manifest", required=True)
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument("--runs", nargs="+", required=True, help="the compared runs, in order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distributions", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--forest", required=True)
    p.add_argument("--csv", required=True)
    p.set_defaults(func=commands.cmd_report_statistics)
    p = sub.add_parser("models", help="list every registered network with its parameter count", parents=[custom])
    p.set_defaults(func=commands.cmd_models)
    return parser


class Stopped(BaseException):
    """SIGTERM (docker stop, systemd, timeout, SLURM's scancel) raised where segment is, as Ctrl-C is, so that
    it leaves as from Ctrl-C: its output folder's record written, naming the images not reached."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _stop(signum, frame) -> None:
    raise Stopped(signum)


TORCH_MODULES = {"torch", "torchvision"}  # what a torch-free install (ONNX Runtime serving) lacks


DEBUG_HINT = "(rerun with SONOSEG_DEBUG=1 for the traceback)"


def _hint_at_dashed_names(argv: list[str]) -> None:
    """After a usage error, a line for image files whose names start with '-' (-x.png): argparse reads them as
    options ("unrecognized arguments", or "the following arguments are required: images")."""
    from sonoseg.data.provenance import IMAGE_SUFFIXES

    dashed = [
        arg
        for arg in argv
        if arg.startswith("-") and "=" not in arg and os.path.splitext(arg)[1].lower() in IMAGE_SUFFIXES
    ]  # --outdir=o.png is an option with its value
    if dashed:
        print(
            f"sonoseg: {', '.join(dashed[:3])}{' …' if len(dashed) > 3 else ''}: a file name starting with '-' is "
            f"read as an option; give files after '--' (sonoseg segment --model M --outdir O -- {dashed[0]}) or "
            f"as ./{dashed[0]}",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never fetch weights from a hub
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 2:  # a usage error, said by argparse: a file name it took for an option gets a hint
            _hint_at_dashed_names(sys.argv[1:] if argv is None else argv)
        raise
    try:  # before any library loads: PyTorch's MKL stops the process at import in a deleted folder, unsaid
        os.getcwd()
    except FileNotFoundError:
        print(
            f"sonoseg {args.command}: error: the working folder no longer exists (removed after the shell entered "
            "it): cd to a folder that exists and run the command again",
            file=sys.stderr,
        )
        return 2
    # Only segment's: the workflow's jobs keep the default (killed where they are), whose outputs Snakemake
    # removes; segment's masks stay, and its record must say which.
    # The handler it replaces is put back on return: a caller in the same process (a test, a notebook, a
    # service calling main) keeps its own.
    previous = None
    if args.command == "segment" and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop)
    try:
        # The config's networks of the user's own, for any command that names networks (parents=[custom]).
        commands.register_custom_networks(getattr(args, "custom_networks", ""))
        args.func(args)
    except BrokenPipeError:
        # A reader that stopped early (`sonoseg models | head -n 1`): end quietly, as command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (KeyboardInterrupt, Stopped) as exc:  # one line, not a traceback: the user (or a service) stopped it
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        print(f"sonoseg {args.command}: {str(exc) or 'stopped by SIGINT'}", file=sys.stderr)
        return 128 + signum  # the shell's status for a process ended by that signal
    except SonosegError as exc:
        if os.environ.get("SONOSEG_DEBUG") and exc.__cause__:  # where a user's builder or network failed
            raise
        print(f"sonoseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one clear line, not a traceback; SONOSEG_DEBUG=1 shows where it came from
        if os.environ.get("SONOSEG_DEBUG"):
            raise
        # Not installed at all (a version without a name: "cannot import name", is told as it is).
        missing = (exc.name or "").partition(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
        if missing in TORCH_MODULES:  # an install without PyTorch (docs/deploy.md: ONNX Runtime serving)
            print(
                f"sonoseg {args.command}: error: this command needs PyTorch ({missing}), which this Python cannot "
                "import: install it (pip install sonoseg with its dependencies); without it, `sonoseg segment` "
                "serves an exported model.onnx with --backend onnxruntime",
                file=sys.stderr,
            )
            return 2
        if isinstance(exc, OSError) and exc.filename:  # a full disk while a figure or a page is written, say
            print(f"sonoseg {args.command}: error: {exc.filename}: {exc.strerror or exc} {DEBUG_HINT}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # written through a library that drops the name
            print(f"sonoseg {args.command}: error: no space left on the device ({exc}) {DEBUG_HINT}", file=sys.stderr)
            return 2
        print(
            f"sonoseg {args.command}: error: {type(exc).__name__}: {exc} {DEBUG_HINT}",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
