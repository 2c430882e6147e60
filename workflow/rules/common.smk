# The study as data: the config, validated, becomes the run sheet (sonoseg.study.runsheet); every rule
# below serves every kind of run through the input functions here.
import atexit
import json
import re
import shlex
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.utils import validate

from sonoseg import analysis
from sonoseg.analysis.results import offered_candidates
from sonoseg.networks import catalog, weights_file
from sonoseg.study import config_check, layout, runsheet
from sonoseg.data import provenance
from sonoseg.data.options import CACHE_MARKS, PARTS, UNMARKED
from sonoseg.errors import SonosegError


def stop_planning(message):
    """A problem found while planning, said as it is and nothing more: an exception raised here, Snakemake reports
    as "ValueError in file .../common.smk, line N" with a traceback line, which reads as the workflow crashing."""
    print(message, file=sys.stderr)
    sys.exit(1)


if "pretrained_backbone" in config.get("train", {}):
    stop_planning(
        "config train.pretrained_backbone: replaced by train.pretrained_backbones, one weights file per "
        "backbone kind (docs/method.md)"
    )
if "weight_decay_seed" in config.get("train", {}):
    stop_planning(
        "config train.weight_decay_seed: replaced by train.selection_seed (the seed of the recipe selection's "
        "candidates, which may choose the learning rate as well as the weight decay)"
    )
if "resources" in config:
    stop_planning(
        "config resources: runtime and memory per job now live in the profile (default-resources, and "
        "set-resources for train: workflow/profiles/slurm/config.yaml); remove the resources section"
    )
# Every problem at once, one line each naming the key (Snakemake's validate stops at the first, and
# quotes the whole schema with it); a network's overrides and the ladder's changes checked too. A null
# there clears overrides that an earlier config file set (config_check.clear_nulls).
# Values given as text on the command line (--config 'train={"threads": 2}': Snakemake keeps a nested value's
# scalars as text) are read as a config file reads them (config_check.retype_command_line_text).
config_check.clear_nulls(config)
_CONFIG_SCHEMA = config_check.load_schema(os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
config_check.retype_command_line_text(config, _CONFIG_SCHEMA)
_CONFIG_PROBLEMS = config_check.problems(config, _CONFIG_SCHEMA)
if _CONFIG_PROBLEMS:
    stop_planning(config_check.message(_CONFIG_PROBLEMS))
validate(config, schema="../schemas/config.schema.yaml")

OUT = layout.study_folder(config["study"])
LOGS = f"{OUT}/logs"
BENCH = f"{OUT}/benchmarks"
TRAIN = config["train"]
DATASET = config["dataset"]
COST = config["cost"]
CONDA_ENV = "../../envs/sonoseg.yaml"

if DATASET["layout"] != "synthetic" and not DATASET["root"]:
    stop_planning(f"config dataset.root: required for dataset.layout {DATASET['layout']!r}")

try:
    RUNS = {run.name: run for run in runsheet.build(config)}  # the run sheet: one row per run
except SonosegError as exc:  # a run name that would be ambiguous, a custom network's bad entry
    stop_planning(str(exc))

# A network of the user's own is imported by the jobs as by this planning process, which has the workflow's
# folder on its import path: its module beside the Snakefile needs no PYTHONPATH=. (docs/extending.md).
if config["custom_networks"] and workflow.basedir not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p))


def undo_records_unless_run():
    """At exit, the fingerprint records this planning rewrote put back as they were, unless jobs were run (or
    touched): a dry run (-n), --summary or --dag must leave nothing that the next run would compare its data
    with. The records are rewritten at planning all the same, since a changed record is what makes Snakemake
    plan the jobs the change redoes; and only at exit does Snakemake tell this file whether the run was dry
    (workflow.dryrun is False until it executes)."""
    if workflow.executor_plugin is None or workflow.dryrun:
        DATA_CHECK.undo()


# The data's fingerprint (sonoseg.data.provenance): every file the study reads from outside results/, one
# record per source under data/sources/, rewritten only when the data changed; the rules that read a
# source take its record as input, so they rerun exactly then. Computed once, by the process that
# plans the run (a cluster job re-reads this file but must not hash the dataset again).
PRETRAINED_SOURCES = provenance.pretrained_sources(run.pretrained_backbone for run in RUNS.values())
# Snakemake parses this file for every command and does not tell it which: --unlock and --cleanup-metadata
# read no data, so neither the fingerprint nor the layout check below runs for them (a dataset gone or broken
# must not keep a killed run's lock on the study).
CHECKS_DATA = workflow.is_main_process and not config_check.reads_no_data(sys.argv[1:])
DATA_CHECK = None
if CHECKS_DATA:
    try:
        DATA_CHECK = provenance.check_study(
            config, OUT, rehash=os.environ.get("SONOSEG_REHASH", "") not in ("", "0"), pretrained=PRETRAINED_SOURCES
        )
    except SonosegError as exc:
        stop_planning(str(exc))
    # A weights file of another backbone kind, found now rather than when its training starts (no torch here).
    _weights_problems = weights_file.pretrained_problems(
        (run.method, run.pretrained_backbone) for run in RUNS.values() if run.pretrained_backbone
    )
    if _weights_problems:
        stop_planning("\n".join(dict.fromkeys(_weights_problems)))
    # --report runs nothing: what a change redoes is the next run's (the report says its results are older)
    _report_only = (
        "; this --report runs nothing: the next run redoes it" if config_check.only_reports(sys.argv[1:]) else ""
    )
    for message in DATA_CHECK.messages:
        print(message + _report_only, file=sys.stderr)
    atexit.register(undo_records_unless_run)
    _builder_warnings, _builder_errors = catalog.builder_problems(config["custom_networks"])
    for message in _builder_warnings:
        print(f"Warning: {message}", file=sys.stderr)
    if _builder_errors:
        stop_planning("\n".join(_builder_errors))
    if runsheet.unused_overrides_note(config):
        print(f"Note: {runsheet.unused_overrides_note(config)}", file=sys.stderr)


def report_provenance():
    """The report's front page line: the data its results were made from, whether that is today's, and the
    sonoseg commit that made the results (as the tables' captions name it), beside the manifest's."""
    from sonoseg.analysis import report_labels

    made = provenance.read_manifest_provenance(MANIFEST)
    if DATA_CHECK is None or made["dataset_fingerprint"] == "unknown":
        return "The results name no dataset fingerprint yet (no manifest made by this version)."
    today, used = DATA_CHECK.dataset_fingerprint, made["dataset_fingerprint"]
    made_by = report_labels.results_source(f"{OUT}/tables") or "a sonoseg commit no table names yet"
    line = (
        f"Results made from the dataset with fingerprint ``{used[:provenance.SHORT]}``, their tables and pages "
        f"by {made_by} (the "
        f"manifest by sonoseg {made['sonoseg_version']} at commit ``{made['commit']}``)."
    )
    line += f" {report_labels.computed_on(TRAININGS)}".rstrip()  # the precision and CPU behind the numbers
    building = provenance.sonoseg_commit()
    line += f" This report was built by sonoseg {provenance.sonoseg_version()} at commit {building}."
    stale = report_labels.made_by_other_code(made_by, building)
    if stale:
        line += f" **Warning:** {stale}"
        if config_check.only_reports(sys.argv[1:]):  # said where `make report` is run, not on the page alone
            print(f"Warning: {stale}", file=sys.stderr)
    if used != today:
        line += (
            f" **Warning: the dataset has changed since** (its fingerprint is now ``{today[:provenance.SHORT]}``): "
            "these results describe the old data; run the study again to redo what depends on it."
        )
    return line


def source_record(name):
    """The fingerprint record of one source (the dataset, the split file, a pretrained weights file)."""
    return str(provenance.record_path(OUT, name))


def custom_networks_arg(networks, keys=None):
    """The user's own networks among ``networks`` (docs/extending.md), for a command that builds them by
    name; '' for the paper's, so adding a network of one's own reruns nothing else. ``keys``: the entries'
    settings the command reads (the training reads the builder alone: a new label reruns no training)."""
    custom = {
        n: {k: v for k, v in config["custom_networks"][n].items() if keys is None or k in keys}
        for n in networks
        if n in config["custom_networks"]
    }
    return f"--custom-networks {shlex.quote(json.dumps(custom, sort_keys=True))}" if custom else ""


# The main condition's networks and floors (the caliper ablation's twins are named <name>--marks-<...>).
NETWORKS = [run.name for run in RUNS.values() if run.kind == "network" and run.name == run.method]
FLOORS = [run.name for run in RUNS.values() if run.kind == "baseline" and run.name == run.method]
SELECTIONS = runsheet.selections(list(RUNS.values()))  # network -> its recipe-selection candidate runs
LADDER_RUNS = [run.name for run in RUNS.values() if run.kind == "ladder_step"]

# The source files of the package's code that makes the long tables, the tables and the report's pages
# (its analysis modules, as installed: sonoseg.analysis.code_files): an input of every rule that runs that
# code on results already made (summarize, collect, table, paired_table, generalization, equivalence,
# selection_table, convergence_check, report_*). The rules call the `sonoseg` tool, whose code Snakemake
# does not see: with the files as input, an upgrade of sonoseg or an edit of its analysis code redoes those
# files, and no training or prediction. Given relative to the working directory where the package lies under
# it (a venv in the checkout), so that moving the checkout with its results redoes none of them.
ANALYSIS_CODE = analysis.code_files(relative_to=os.getcwd())

LADDER_OFF = (
    "the ladder is off in this study (config ladder.enabled: false): "
    "set it true to run `snakemake ladder` or make its table"
)


def ladder_summaries(wildcards=None):
    """The ladder steps' summaries. Asking for the ladder (`snakemake ladder`, its table or page) in a study
    without it stops, naming the setting, where Snakemake would otherwise do nothing without a word;
    `snakemake all` never asks for it."""
    if not config["ladder"]["enabled"]:
        raise ValueError(LADDER_OFF)
    return [layout.summary(OUT, run) for run in LADDER_RUNS]


ABLATION = runsheet.ablation_pairs(list(RUNS.values()))  # (main run, its other-marks twin) per method
CONVERGENCE = runsheet.convergence_pairs(list(RUNS.values()))  # (a network's run, it with twice the budget)
RELIANCE = runsheet.tested_pairs(
    list(RUNS.values()), "reliance"
)  # (a run trained with marks kept, its models tested without)
TTA = runsheet.tested_pairs(list(RUNS.values()), "tta")  # (a network run, its models tested with flip averaging)
ENSEMBLES = runsheet.tested_pairs(list(RUNS.values()), "ensemble")  # (a network run with several seeds, their ensemble)
# On each external dataset, (a network's single models, the same flip-averaged or as an ensemble).
TTA += runsheet.external_pairs(list(RUNS.values()), "tta")
ENSEMBLES += runsheet.external_pairs(list(RUNS.values()), "ensemble")
# Each run predicted together with its flip-averaged twin (runs.smk, predict_with_flip_twins*), suffix ('' or
# --on-<dataset>) -> the run names before it; one job per network's training does every place it is
# tested at (FLIP_TWIN_GROUPS: places -> networks). Without twins, a training's external sets are
# predicted in one job too (EXTERNAL_GROUPS, runs.smk predict_on*); every other run is predicted alone.
FLIP_TWINS = runsheet.flip_twins(list(RUNS.values()))
FLIP_TWIN_GROUPS = runsheet.flip_twin_groups(FLIP_TWINS)
WITH_TWIN = {
    name for suffix, bases in FLIP_TWINS.items() for base in bases for name in runsheet.twin_names(base, suffix)
}
EXTERNAL_GROUPS = runsheet.external_groups(list(RUNS.values()), WITH_TWIN)
# (places, the runs tested there, whether with flip-averaged twins) for every grouped prediction rule
PREDICTION_GROUPS = [(places, bases, True) for places, bases in FLIP_TWIN_GROUPS.items()] + [
    (places, bases, False) for places, bases in EXTERNAL_GROUPS.items()
]
GROUPED = WITH_TWIN | {base + place for places, bases in EXTERNAL_GROUPS.items() for base in bases for place in places}
PREDICTED_ALONE = [name for name in RUNS if name not in GROUPED]
EXTERNALS = {dataset["name"]: dataset for dataset in config["external_datasets"]}  # name -> its entry
DEVELOPMENT = runsheet.development_set(config)  # the external set that may guide a choice ('' for none)
AUGMENTATION_CHOICES = runsheet.augmentation_choices(list(RUNS.values()))  # network -> option -> candidate run
AUGMENTATION_TAKERS = runsheet.augmentation_takers(list(RUNS.values()))  # choosing network -> networks taking it
PRIORITY = runsheet.schedule_priorities(list(RUNS.values()), DEVELOPMENT)  # run -> its jobs' priority
EXTERNAL_NETWORKS = [name for name in NETWORKS if name in {run.model_from for run in RUNS.values() if run.dataset}]
# The paired tables (tables.smk, paired_table): table name -> (its family of sonoseg paired, its pairs); only those with pairs.
PAIRED_TABLES = {
    table: (catalog.PAIRED_TABLES[table], pairs)
    for table, pairs in (
        ("marks_ablation", ABLATION),
        ("marks_reliance", RELIANCE),
        ("tta", TTA),
        ("ensemble", ENSEMBLES),
        ("augmentation", runsheet.augmentation_pairs(list(RUNS.values()))),
    )
    if pairs
}
FOLDS = [str(f) for f in range(config["split"]["folds"])]
POSTPROCESS = config["predict"]["postprocess"]  # validation: chosen per run and fold (rule choose_postprocess)
# Test-time scale selection (predict.scales, with its size-aware rule predict.shrink_above and the rule's
# second trigger predict.shrink_found_above;
# sonoseg.serving.infer.scale_adaptive), for every prediction with a model and the post-processing choice
# on validation alike; nothing when off.
SCALES_ARG = ""
if config["predict"]["shrink_found_above"] is not None and config["predict"]["shrink_above"] is None:
    stop_planning("config predict.shrink_found_above: a trigger of the size-aware rule; set predict.shrink_above too")
if [float(f) for f in config["predict"]["scales"]] != [1.0]:
    SCALES_ARG = " --scales " + " ".join(str(float(f)) for f in config["predict"]["scales"])
    for key in ("shrink_above", "shrink_found_above"):
        if config["predict"][key] is not None:
            SCALES_ARG += f" --{key.replace('_', '-')} {float(config['predict'][key])}"
CLAIMS = config["claims"]  # the questions the study answers, written before its primary run


def _alternatives(values):
    return "|".join(re.escape(v) for v in values) or "(?!)"


wildcard_constraints:
    run=_alternatives(RUNS),
    network=_alternatives([*SELECTIONS, *AUGMENTATION_CHOICES]),
    seed=r"\d+",
    fold=r"\d+",
    marks=_alternatives(CACHE_MARKS),
    part=_alternatives(PARTS),
    paired=_alternatives(PAIRED_TABLES),
    table=_alternatives(catalog.STUDY_TABLES),
    dataset=_alternatives(EXTERNALS),


# ---------------------------------------------------------------- runs


def run_of(wildcards):
    return RUNS[wildcards.run]


def run_priority(wildcards):
    """The priority of a run's jobs (runsheet.schedule_priorities): what a choice waits on first."""
    return PRIORITY[wildcards.run]


# Where each file lives (sonoseg.study.layout): rule outputs with wildcards, and the inputs built from them.
TRAINING = f"{OUT}/{layout.TRAINING}"  # one training: runs/{run}/fold{fold}/seed{seed}
SHEET = f"{OUT}/{layout.SHEET}"  # the run sheet
SHEET_CONFIG = runsheet.sheet_config_file(OUT, config, write=workflow.is_main_process)  # what it is built from
MANIFEST = f"{OUT}/{layout.MANIFEST}"  # every file of the dataset (rule ingest)
SPLIT = f"{OUT}/{layout.SPLIT}"
PER_IMAGE = f"{OUT}/{layout.PER_IMAGE}"  # every run's per-image results, one long table (rule collect)
TRAININGS = f"{OUT}/{layout.TRAININGS}"


def run_files(run, name):
    """One file of every training (fold and seed) of a run."""
    return [layout.training_file(OUT, run.name, fold, seed, name) for fold in run.folds for seed in run.seeds]


def run_json(run):
    """A run's row of the run sheet, for a command that finds the run's files through sonoseg.study.layout."""
    return shlex.quote(json.dumps(run.row(), sort_keys=True))


def cache(run, fold, part):
    """A run's resized images: its marks condition, its fold's part (an external run: every image of its dataset)."""
    if run.dataset:
        return layout.external_cache(OUT, run.dataset, run.marks)
    return layout.cache(OUT, run.marks, fold, part)


def test_data(wildcards):
    """The manifest and split a run's test images come from: the study's, or its external dataset's."""
    run = run_of(wildcards)
    if run.dataset:
        return {
            "manifest": layout.external_manifest(OUT, run.dataset),
            "split": layout.external_split(OUT, run.dataset),
        }
    return {"manifest": MANIFEST, "split": SPLIT}


def test_fold(wildcards):
    """The fold whose test part a run segments: its own; an external dataset has one part, all test (fold 0)."""
    return 0 if run_of(wildcards).dataset else wildcards.fold


def get_recipe_inputs(wildcards):
    """A run whose learning rate or weight decay is chosen reads the selection's choice in its fold; one
    whose augmentation is chosen, the choice made on the development set."""
    run = run_of(wildcards)
    inputs = {"selection": layout.selection(OUT, run.selected_from, wildcards.fold)} if run.selected_from else {}
    if run.augmentation_from:
        inputs["augmentation"] = layout.augmentation(OUT, run.augmentation_from)
    return inputs


def get_paired_choices(wildcards):
    """The augmentation table's caption says what each choice adopted, and for which networks: its choice files."""
    if wildcards.paired != "augmentation":
        return []
    return [layout.augmentation(OUT, network) for network in AUGMENTATION_TAKERS]


def paired_choice_options(wildcards) -> str:
    """get_paired_choices' files as `sonoseg paired` takes them: --choice FILE NETWORK..."""
    return " ".join(
        f"--choice {layout.augmentation(OUT, network)} {' '.join(AUGMENTATION_TAKERS[network])}"
        for network in AUGMENTATION_TAKERS
        if wildcards.paired == "augmentation"
    )


def get_augmentation_metrics(wildcards):
    """Each augmentation candidate's per-image metrics on the development set, every fold."""
    return {
        option: [
            layout.training_file(OUT, runsheet.on_dataset(run.name, DEVELOPMENT), fold, run.seeds[0], layout.METRICS)
            for fold in run.folds
        ]
        for option, run in AUGMENTATION_CHOICES[wildcards.network].items()
    }


# Each network of the user's own -> its code's files (its builder's module, and the user's modules that module
# draws on: its layers' files), inputs of its trainings and of the cost table: an edit of any of them retrains
# the network and measures it again, where Snakemake alone would keep results of the old code. (Snakemake
# compares an input's content: a file touched, or saved unchanged, reruns nothing.)
BUILDER_FILES = {
    name: files for name, spec in config["custom_networks"].items() if (files := catalog.builder_files(spec["builder"]))
}
# Each network the study trains -> the digest of its own code's content (catalog.network_code_digest: a built-in
# network's module and the network modules it imports; a user's network's files above): a param of its trainings
# and of the cost table. An edit of one network's code retrains that network alone, and a file put back with an
# older time (cp -p, rsync -a), which Snakemake's comparison of inputs passes over, is noticed as an edit is.
NETWORK_CODE = {
    method: catalog.network_code_digest(method, config["custom_networks"].get(method, {}).get("builder"))
    for method in sorted({run.method for run in RUNS.values() if run.recipe})
}


def get_training_inputs(wildcards):
    """The run's recipe and data; for the run that the recipe selection already trained (the
    network's run with the candidates' seed), the candidates, one of which it adopts."""
    run = run_of(wildcards)
    inputs = {
        "recipe": layout.recipe(OUT, run.name, wildcards.fold),
        "train": cache(run, wildcards.fold, "train"),
        "val": cache(run, wildcards.fold, "val"),
    }
    if run.method in BUILDER_FILES:
        inputs["builder_code"] = BUILDER_FILES[run.method]
    if run.pretrained_backbone:  # its weights' record: a changed weights file retrains the run
        inputs["pretrained_record"] = source_record(PRETRAINED_SOURCES[run.pretrained_backbone])
    candidates = []
    if wildcards.seed == str(TRAIN["selection_seed"]):
        candidates = [c.name for c in offered_candidates(run, list(RUNS.values()))]
    if candidates:
        inputs["candidate_models"] = [
            layout.training_file(OUT, c, wildcards.fold, wildcards.seed, layout.MODEL) for c in candidates
        ]
        inputs["candidate_histories"] = [
            layout.training_file(OUT, c, wildcards.fold, wildcards.seed, layout.HISTORY) for c in candidates
        ]
    return inputs


def reuse_arg(wildcards, input):
    """The selection candidates a run may adopt instead of training again (same network, seed,
    recipe and data: the model it would train)."""
    if "candidate_models" not in input.keys():
        return ""
    return f"--reuse-models {' '.join(input.candidate_models)} --reuse-histories {' '.join(input.candidate_histories)}"


def get_selection_candidates(wildcards):
    return [
        layout.training_file(OUT, c.name, wildcards.fold, c.seeds[0], layout.HISTORY)
        for c in SELECTIONS[wildcards.network]
    ]


def selection_points(wildcards):
    """Each candidate's settings, as `sonoseg select-recipe --points` reads them (name=value,...)."""
    return " ".join(",".join(f"{k}={v!r}" for k, v in c.point) for c in SELECTIONS[wildcards.network])


def get_prediction_inputs(wildcards):
    """A network predicts from its models (its own, or those of the run it tests again: several for an
    ensemble) and the resized test images, post-processed as chosen on the models' folds' validation
    parts (predict.postprocess: validation); a floor reads the test images."""
    run = run_of(wildcards)
    inputs = test_data(wildcards)
    if run.uses_model:
        owner, seeds = run.model_from or run.name, run.members or (wildcards.seed,)
        folds = run.member_folds or (wildcards.fold,)
        models = [layout.training_file(OUT, owner, fold, seed, layout.MODEL) for fold in folds for seed in seeds]
        inputs.update(model=models, data=cache(run, wildcards.fold, "test"))
        if POSTPROCESS == "validation":
            inputs["postprocess"] = [layout.postprocess(OUT, owner, fold) for fold in folds]
    return inputs


def plain_twin(wildcards, suffix):
    """The wildcards of a flip-twin job as those of its plain run's own prediction."""
    return SimpleNamespace(run=wildcards.base + suffix, fold=wildcards.fold, seed=wildcards.seed)


def postprocess_arg(input):
    """The post-processing chosen on the models' folds' validation parts, or the configured one."""
    return (
        f"--postprocess-choice {input.postprocess}" if "postprocess" in input.keys() else f"--postprocess {POSTPROCESS}"
    )


def prediction_source(wildcards, input):
    run = run_of(wildcards)
    if run.uses_model:
        return (
            f"--model {input.model} --data {input.data}"
            + (" --reliance" if run.kind == "reliance" else "")
            + (" --tta" if run.tta else "")
            + f" {postprocess_arg(input)}"
            + SCALES_ARG
        )
    return f"--baseline {run.method} --marks {run.marks}"


def get_places_inputs(wildcards, places):
    """A network's training tested at several places (predict_with_flip_twins*, predict_on*): its models and
    post-processing choice (the same at every place), and each place's test images, manifest and split
    (<key>_<index>, in the order of places)."""
    inputs = {}
    for index, place in enumerate(places):
        for key, value in get_prediction_inputs(plain_twin(wildcards, place)).items():
            inputs[key if key in ("model", "postprocess") else f"{key}_{index}"] = value
    return inputs


# What one place's job writes, as predict's options: the plain run's masks and metrics, then its
# flip-averaged twin's (the rule's outputs are named <option, - as _>_<index of the place>).
PLACE_OUTPUTS = (("outdir", "metrics"), ("tta-outdir", "tta-metrics"))


def place_options(twinned):
    """The PLACE_OUTPUTS of a group: the plain run's, and its twin's when it has one."""
    return PLACE_OUTPUTS if twinned else PLACE_OUTPUTS[:1]


def place_output_name(option, index):
    return f"{option.replace('-', '_')}_{index}"


def place_outputs(places, twinned=True):
    """The rule's named outputs: each place's masks (a folder) and metrics, plain (and flip-averaged)."""
    outputs = {}
    for index, place in enumerate(places):
        for run, (masks, metrics) in zip(runsheet.twin_names("{base}", place), place_options(twinned)):
            folder = f"{OUT}/{layout.training_template(run)}"
            outputs[place_output_name(masks, index)] = directory(f"{folder}/{layout.PREDICTIONS}")
            outputs[place_output_name(metrics, index)] = f"{folder}/{layout.METRICS}"
    return outputs


def places_args(wildcards, input, output, places, twinned=True):
    """predict's per-test-set options, one value per place in the order of places."""
    indices = range(len(places))
    values = {
        "data": [input[f"data_{i}"] for i in indices],
        "manifest": [input[f"manifest_{i}"] for i in indices],
        "split": [input[f"split_{i}"] for i in indices],
        "fold": [test_fold(plain_twin(wildcards, place)) for place in places],
        **{
            option: [output[place_output_name(option, i)] for i in indices]
            for options in place_options(twinned)
            for option in options
        },
    }
    return " ".join(f"--{name} " + " ".join(str(value) for value in values[name]) for name in values)


def get_postprocess_inputs(wildcards):
    """A trained run's models of one fold (every seed) and that fold's validation images."""
    run = run_of(wildcards)
    models = [layout.training_file(OUT, run.name, wildcards.fold, seed, layout.MODEL) for seed in run.seeds]
    return {"models": models, "data": cache(run, wildcards.fold, "val"), "manifest": MANIFEST, "split": SPLIT}


def get_run_summary_inputs(wildcards):
    run = run_of(wildcards)
    inputs = {"metrics": run_files(run, layout.METRICS), "code": ANALYSIS_CODE}
    if run.trained:
        inputs["histories"] = run_files(run, layout.HISTORY)
        inputs["models"] = run_files(run, layout.MODEL)
    return inputs


def uses_gpu(wildcards):
    """A training/prediction job's share of `--resources gpu=N` (N devices). With runs_per_gpu k > 1
    the jobs count `gpu_slot` instead, of which there are N * k (registered below). Floors use none."""
    if TRAIN["device"] == "cpu" or not run_of(wildcards).uses_model:
        return 0
    return 0 if TRAIN["runs_per_gpu"] > 1 else 1


def prediction_device(wildcards):
    """The device a prediction job runs on: the training's for a run with a model; a floor or reference
    predicts without one, so a changed train.device does not redo it."""
    return TRAIN["device"] if run_of(wildcards).uses_model else "cpu"


def uses_gpu_slot(wildcards):
    uses_model = run_of(wildcards).uses_model
    return 1 if uses_model and TRAIN["device"] != "cpu" and TRAIN["runs_per_gpu"] > 1 else 0


# k runs per GPU: `--resources gpu=N` keeps meaning N devices; the scheduler gets N * k slots.
if TRAIN["runs_per_gpu"] > 1 and TRAIN["device"] != "cpu":
    _executor = workflow.executor_plugin
    if _executor is not None and _executor.common_settings.non_local_exec:
        stop_planning("config train.runs_per_gpu: must be 1 with a cluster executor (each job gets its own GPU there)")
    _gpus = getattr(workflow.global_resources.get("gpu"), "value", None)
    if _gpus is None:
        stop_planning(
            "config train.runs_per_gpu > 1 needs `--resources gpu=N` (N devices), as the default profile sets"
        )
    workflow.register_resource("gpu_slot", int(_gpus) * TRAIN["runs_per_gpu"])


# ---------------------------------------------------------------- data


def get_dataset_options(wildcards=None):
    options = {k: v for k, v in DATASET.items()}
    if DATASET["layout"] == "synthetic":
        options.update(layout="folder", root=f"{OUT}/data/synthetic", csv="")
    return json.dumps(options, sort_keys=True)


def external_options(dataset):
    """An external dataset's ingest options: its own entry's (a setting left out keeps ingest's default)."""
    not_ingest = ("name", "role", "on_overlap")
    return {"layout": "folder", **{k: v for k, v in EXTERNALS[dataset].items() if k not in not_ingest}}


# Each dataset's layout read at planning as its ingest job will read it (sonoseg.data.manifest.check_layout:
# ingest's own code, up to the pixels, on the options the job gets), so that a wrong layout, a folder without
# images, masks missing or a CSV without its column stop `snakemake -n`, naming the dataset's config key,
# not the ingest job after the queue. Once, by the main process, on the file lists the fingerprint made
# (the phantom: nothing to read before it is made). A layout's warnings are shown when its files or options
# differ from those of the last check that passed (config/layouts_checked.json), not at every planning; its
# ingest log keeps them.
if CHECKS_DATA:
    # the config key declaring each dataset -> (the options its ingest job gets, its fingerprint record)
    _INGESTED = {f"external_datasets {name!r}": (external_options(name), f"external_{name}") for name in EXTERNALS}
    if DATASET["layout"] != "synthetic":
        _INGESTED = {"dataset": (json.loads(get_dataset_options()), "dataset"), **_INGESTED}
    _LAYOUT_STATES = {
        key: json.dumps([DATA_CHECK.records[source].fingerprint, options], sort_keys=True)
        for key, (options, source) in _INGESTED.items()
    }
    _LAYOUTS_CHECKED = f"{OUT}/{layout.LAYOUTS_CHECKED}"
    _DATASETS_CHECKED = config_check.check_datasets(
        {key: options for key, (options, _) in _INGESTED.items()},
        {key: provenance.record_paths(DATA_CHECK.records[source]) for key, (_, source) in _INGESTED.items()},
        warn=config_check.layouts_to_warn_of(_LAYOUT_STATES, provenance.read_json(_LAYOUTS_CHECKED)),
    )
    if _DATASETS_CHECKED.problems:
        stop_planning(config_check.datasets_message(_DATASETS_CHECKED.problems))
    provenance.write_json_atomic(_LAYOUTS_CHECKED, _LAYOUT_STATES)
    # Too few patients for split.folds stop `snakemake -n` too, not the split job after the ingest: the
    # phantom's from its settings, a dataset's from the files its layout paired just now (no pixel read).
    _SPLIT_PROBLEM = config_check.split_problem(config, _DATASETS_CHECKED.found.get("dataset"))
    if _SPLIT_PROBLEM:
        stop_planning(_SPLIT_PROBLEM)


def overlap_records():
    """Each external set's overlap.csv (what its tests left out), name -> path."""
    return {name: layout.external_overlap(OUT, name) for name in EXTERNALS}


def external_manifests():
    """Each external set's manifest (what its ingest read and left out), name -> path."""
    return {name: layout.external_manifest(OUT, name) for name in EXTERNALS}


def named_paths(paths):
    """name -> path as a command's NAME=PATH arguments."""
    return " ".join(f"{name}={path}" for name, path in paths.items())


# Each external set's role (development or held_out) as the tables' NAME=ROLE arguments.
EXTERNAL_ROLES = named_paths({name: entry.get("role", "held_out") for name, entry in EXTERNALS.items()})


def overlap_datasets(wildcards):
    """The datasets whose images an external set must not hold, name -> manifest: the main dataset's,
    and for a held-out set the development set's, whose images guided a choice (docs/method.md)."""
    against = {"main-dataset": MANIFEST}  # no external set can be named so: their names have no '-'
    if DEVELOPMENT and wildcards.dataset != DEVELOPMENT:
        against[DEVELOPMENT] = layout.external_manifest(OUT, DEVELOPMENT)
    return against


def synth_options(calipers=None):
    """The phantom's settings as `sonoseg synth` flags (difficulty, calipers, organ weights); with
    calipers=False the same phantom without its calipers (the reliance runs' unmarked images)."""
    synthetic = {**config["synthetic"], **({} if calipers is None else {"calipers": calipers})}
    organs = json.dumps(synthetic["organs"], sort_keys=True)
    return (
        f"--difficulty {synthetic['difficulty']} --calipers {str(synthetic['calipers']).lower()} "
        f"--caliper-noise {synthetic['caliper_noise']} --organs '{organs}'"
    )


def get_ingest_input(wildcards):
    """The dataset's fingerprint record (rewritten when any of its files changes), and the phantom."""
    inputs = {"fingerprint": source_record("dataset")}
    return {**inputs, "synthetic": f"{OUT}/data/synthetic"} if DATASET["layout"] == "synthetic" else inputs


def get_preprocess_inputs(wildcards):
    """The manifest and split; for the unmarked condition also the phantom and its calipers-free twin."""
    inputs = {"manifest": MANIFEST, "split": SPLIT}
    if wildcards.marks == UNMARKED:
        inputs.update(synthetic=f"{OUT}/data/synthetic", unmarked=f"{OUT}/data/synthetic_unmarked")
    return inputs


def unmarked_arg(wildcards, input):
    if "unmarked" not in input.keys():
        return ""
    return f"--dataset-root {input.synthetic} --unmarked-images {input.unmarked}"


def get_split_file(wildcards):
    if not config["split"]["file"]:
        return {}
    return {"split_file": config["split"]["file"], "split_record": source_record("split_file")}


# ---------------------------------------------------------------- tables


def table_runs(table):
    """The runs a table lists: the study's networks in a paper table, then the floors as extra rows
    (when the table has a network); the ladder's steps."""
    if table == "ladder":
        return LADDER_RUNS
    networks = [n for n in NETWORKS if catalog.entry(n).in_table(table)]
    return networks + FLOORS if networks else []


def get_table_summaries(wildcards):
    return [layout.summary(OUT, run) for run in table_runs(wildcards.table)]


# The runs the collect stage gathers into the long tables: every run of `all` (the convergence
# check's longer trainings belong to their own target).
COLLECTED = [run for run in RUNS.values() if run.kind != "convergence"]


def get_collect_inputs(wildcards=None):
    """Every collected run's per-image metrics and training histories, and the recipes they trained with."""
    return {
        "sheet": SHEET,
        "manifest": MANIFEST,
        "metrics": [path for run in COLLECTED if run.evaluated for path in run_files(run, layout.METRICS)],
        "histories": [path for run in COLLECTED if run.trained for path in run_files(run, layout.HISTORY)],
        "recipes": [layout.recipe(OUT, run.name, fold) for run in COLLECTED if run.trained for fold in run.folds],
        "external_manifests": [layout.external_manifest(OUT, name) for name in EXTERNALS],
        "code": ANALYSIS_CODE,
    }


def get_convergence_inputs(wildcards=None):
    """Both sides of every convergence pair, the checked seed only: per-image metrics, and the
    histories that say what ended each training."""
    inputs = {"metrics": [], "histories": [], "recipes": []}
    for base, longer in CONVERGENCE:
        for run in (base, longer):
            for fold in run.folds:
                inputs["metrics"].append(layout.training_file(OUT, run.name, fold, longer.seeds[0], layout.METRICS))
                inputs["histories"].append(layout.training_file(OUT, run.name, fold, longer.seeds[0], layout.HISTORY))
                inputs["recipes"].append(layout.recipe(OUT, run.name, fold))
    return inputs


def get_cost_table(wildcards=None):
    """GFLOPs and CPU latency per network, when the study measures them (cost.enabled) or a cost table
    is already there."""
    path = f"{OUT}/tables/cost.csv"
    return {"cost": path} if COST["enabled"] or Path(path).exists() else {}


def cost_threads():
    """Every core this run may use, so that no other job shares the CPU while latency is timed; never
    more than the machine has (on a cluster, workflow.cores can be unset or very large)."""
    # Read without workflow.cores, which raises when no --cores was given (a cluster run, --unlock).
    cores = getattr(workflow.global_resources.get("_cores"), "value", None)
    cores = cores if isinstance(cores, int) else COST["threads"]
    return max(COST["threads"], min(cores, os.cpu_count() or 1))


def study_tables():
    return [table for table in catalog.STUDY_TABLES if table_runs(table)]


def get_final_outputs():
    outputs = [SHEET, PER_IMAGE, TRAININGS]
    # Every training's model and every run's masks and metrics, the study's products: one deleted (to have it
    # made again, or lost) is made again, with what was made from it. Snakemake leaves a missing file alone
    # while what was made from it is there, unless a target names it.
    outputs += [path for run in COLLECTED if run.trained for path in run_files(run, layout.MODEL)]
    outputs += [
        path
        for run in COLLECTED
        if run.evaluated
        for name in (layout.PREDICTIONS, layout.METRICS)
        for path in run_files(run, name)
    ]
    for table in study_tables():
        outputs += [f"{OUT}/tables/{table}.{ext}" for ext in ("csv", "md", "tex")]
    outputs += [layout.summary(OUT, run) for run in NETWORKS + FLOORS]
    if SELECTIONS:
        outputs.append(f"{OUT}/tables/selection.csv")
    outputs += [f"{OUT}/tables/{table}.csv" for table in PAIRED_TABLES]
    if CLAIMS["equivalence"]:
        outputs.append(f"{OUT}/tables/equivalence.csv")
    if EXTERNAL_NETWORKS:
        outputs.append(f"{OUT}/tables/generalization.csv")
    if NETWORKS:
        outputs.append(f"{OUT}/tables/subgroups.csv")
    if COST["enabled"]:
        outputs.append(f"{OUT}/tables/cost.csv")  # workflow/rules/tables.smk
    return outputs + get_report_outputs()  # workflow/rules/report.smk


def note_outputs_left_by_other_configs(final_outputs, shown=12):
    """At planning (the Snakefile's last line; ``final_outputs``: what `all` makes), by the process that plans
    the run: what the study folder holds that this config no longer makes, named and kept
    (layout.left_by_other_configs), so that a table on disk from an earlier config (tables/tta.csv after
    predict.tta: false) is not read as this one's. Every one is
    listed in a file when the run is no dry run (written at exit, as Snakemake says so only then). A table
    this config reads when it is there (cost.csv with cost.enabled false) or makes on request (convergence.csv,
    by `snakemake convergence_check`) is not named."""
    if not CHECKS_DATA:
        return
    also = ["cost"] + (["convergence"] if CONVERGENCE else [])
    outputs = [*final_outputs, *(f"{OUT}/tables/{table}.csv" for table in also)]
    left = layout.left_by_other_configs(OUT, RUNS, outputs, EXTERNALS)
    listing = Path(OUT) / layout.LEFT_LISTED
    if left:
        more = f", and {len(left) - shown} more" if len(left) > shown else ""
        print(
            f"{OUT}: {len(left)} output(s) an earlier config made that this one does not (kept; nothing reads "
            f"them now, and a network put back adopts its trainings; delete what you do not want; all listed in "
            f"{listing} after a run): " + ", ".join(left[:shown]) + more,
            file=sys.stderr,
        )

    def write_listing():
        if workflow.executor_plugin is None or workflow.dryrun:
            return
        try:
            if left:
                listing.parent.mkdir(parents=True, exist_ok=True)
                listing.write_text("".join(f"{name}\n" for name in left))
            else:
                listing.unlink(missing_ok=True)
        except OSError as exc:  # a read-only study folder: the note above said it all
            print(f"{listing}: not written ({exc.strerror or exc})", file=sys.stderr)

    atexit.register(write_listing)


# ---------------------------------------------------------------- the HTML report (rules/report.smk)


REPORT = f"{OUT}/report"
REPORT_SEED = 0  # the seed of every random choice the report makes (Figure 2's random image, the bootstrap)


def compared_runs():
    """The runs the report compares: the networks, then the floors (predictions and per-image metrics
    each; only networks have a training history)."""
    return [RUNS[name] for name in NETWORKS + FLOORS]


def get_report_predictions(wildcards=None):
    """Figure 2 shows the first seed's masks of every method (every fold's, so every test image)."""
    return [
        layout.training_file(OUT, run.name, fold, run.seeds[0], layout.PREDICTIONS)
        for run in compared_runs()
        for fold in run.folds
    ]


def get_run_histories(wildcards):
    run = run_of(wildcards)
    if not run.trained:
        raise ValueError(f"training curves: run {run.name!r} has no training")
    return run_files(run, layout.HISTORY)


def get_report_tables():
    return (
        study_tables()
        + (["selection"] if SELECTIONS else [])
        + (["generalization"] if EXTERNAL_NETWORKS else [])
        + list(PAIRED_TABLES)  # in catalog.PAIRED_TABLES' order
        + (["subgroups"] if NETWORKS else [])
    )


def get_report_outputs():
    """Every figure and table of the report (`all` lists them, so --report finds them); training
    curves for every network and ladder step."""
    # (The convergence check's longer trainings belong to its own target, convergence_check.)
    curves = [run.name for run in RUNS.values() if run.kind in ("network", "ladder_step")]
    generalization = [f"{REPORT}/generalization.png"] if EXTERNAL_NETWORKS else []
    return generalization + [
        f"{REPORT}/data/overview.html",
        f"{REPORT}/data/samples.png",
        f"{REPORT}/data/marks.png",
        *[f"{REPORT}/tables/{table}.html" for table in get_report_tables()],
        *[f"{REPORT}/curves/{run}.png" for run in curves],
        f"{REPORT}/figure2.png",
        f"{REPORT}/figure2_all.png",
        f"{REPORT}/cost_accuracy.png",
        f"{REPORT}/cost_front.html",
        f"{REPORT}/statistics/distributions.png",
        f"{REPORT}/statistics/paired.html",
        f"{REPORT}/statistics/forest.png",
    ]
