import json
import os
import re
from pathlib import Path

from snakemake.utils import validate

from sonoseg import paper
from sonoseg.catalog import pretrained_backbone_for, weight_decay_is_auto
from sonoseg.recipe import ladder_recipes, recipe_from_config

if "pretrained_backbone" in config.get("train", {}):
    raise ValueError(
        "config train.pretrained_backbone: replaced by train.pretrained_backbones, one weights file per backbone "
        "kind (e.g. {vgg16: vgg16.pth, resnet101: resnet101.pth, mobilenet_v2: mobilenet_v2.pth}), each loaded only "
        "into the networks built on that backbone; see docs/method.md, 'Pretrained backbones'"
    )
validate(config, schema="../schemas/config.schema.yaml")

OUT = f"results/{config['study']}"
LOGS = f"{OUT}/logs"
BENCH = f"{OUT}/benchmarks"
NETWORKS = config["networks"]
# Non-learned methods (sonoseg.baseline): predicted and evaluated like a network, without training.
BASELINES = config["baselines"]
SEEDS = [str(s) for s in config["seeds"]]
LADDER_SEEDS = [str(s) for s in config["ladder"]["seeds"]] or SEEDS
TRAIN = config["train"]
DATASET = config["dataset"]
LADDER = config["ladder"]
COST = config["cost"]
LADDER_STEPS = [step["name"] for step in LADDER["steps"]] if LADDER["enabled"] else []
# Only networks whose weight decay is auto (the train section's, or their override's) get candidates.
WEIGHT_DECAY_NETWORKS = [n for n in NETWORKS if weight_decay_is_auto(TRAIN, n)]
WEIGHT_DECAY_AUTO = bool(WEIGHT_DECAY_NETWORKS)
DECAYS = [f"{d:g}" for d in TRAIN["weight_decay_grid"]] if WEIGHT_DECAY_AUTO else []
# The study seed (if the candidates' seed is one) whose final model is the chosen weight-decay candidate
# (rule adopt_weight_decay_candidate).
ADOPTED_SEEDS = [s for s in SEEDS if WEIGHT_DECAY_AUTO and s == str(TRAIN["weight_decay_seed"])]
CONDA_ENV = "../../envs/sonoseg.yaml"

if DATASET["layout"] != "synthetic" and not DATASET["root"]:
    raise ValueError(f"config dataset.root: required for dataset.layout {DATASET['layout']!r}")
for _baseline in BASELINES:
    if _baseline in NETWORKS:
        raise ValueError(f"config networks: {_baseline!r} is a baseline (config baselines: no training), not a network")
for _network in TRAIN["overrides"]:
    if _network not in NETWORKS:
        raise ValueError(f"config train.overrides: {_network!r} is not one of the study's networks {NETWORKS}")
    pretrained_backbone_for(TRAIN, _network)  # a pretrained_backbone override needs a network with a backbone
if not set(LADDER_SEEDS) <= set(SEEDS):
    raise ValueError(f"config ladder.seeds: {LADDER_SEEDS} must be among the study's seeds {SEEDS}")
if len(set(LADDER_STEPS)) != len(LADDER_STEPS):
    raise ValueError(f"config ladder.steps: step names must be unique, got {LADDER_STEPS}")


def _alternatives(values):
    return "|".join(re.escape(v) for v in values) or "(?!)"


wildcard_constraints:
    network=_alternatives(NETWORKS),
    baseline=_alternatives(BASELINES),
    seed=_alternatives(SEEDS),
    part="train|val|test",
    decay=_alternatives(DECAYS),
    step=_alternatives(LADDER_STEPS),


# ---------------------------------------------------------------- recipes (config, never code)


def recipe_for(network, changes=None):
    """The network's training settings: the train section, then its overrides, then any changes.

    An override's pretrained_backbone is not a recipe setting (see pretrained_arg), and its
    weight_decay auto is resolved by the weight-decay selection (get_weight_decay_choice)."""
    overrides = {
        k: v
        for k, v in TRAIN["overrides"].get(network, {}).items()
        if k != "pretrained_backbone" and not (k == "weight_decay" and v == "auto")
    }
    recipe = recipe_from_config(TRAIN).with_changes(overrides)
    return recipe.with_changes(changes or {})


def ladder_recipe(step):
    """A ladder step: the ladder network's recipe after every change up to and including this step."""
    return ladder_recipes(recipe_for(LADDER["network"]), LADDER["steps"])[step]


def pretrained_arg(network):
    """The weights file of the network's backbone kind (train.pretrained_backbones), or its own
    override; networks without such a backbone (the U-nets) get none."""
    path = pretrained_backbone_for(TRAIN, network)
    return f"--pretrained-backbone {path}" if path else ""


RUNS_PER_GPU = TRAIN["runs_per_gpu"]


def uses_gpu():
    """A training/prediction job's share of `--resources gpu=N` (N devices). With runs_per_gpu k > 1
    the jobs count `gpu_slot` instead, of which there are N * k (registered below)."""
    return 0 if TRAIN["device"] == "cpu" or RUNS_PER_GPU > 1 else 1


def uses_gpu_slot():
    return 1 if TRAIN["device"] != "cpu" and RUNS_PER_GPU > 1 else 0


# k runs per GPU: `--resources gpu=N` keeps meaning N devices; the scheduler gets N * k slots.
if RUNS_PER_GPU > 1 and TRAIN["device"] != "cpu":
    _executor = workflow.executor_plugin
    if _executor is not None and _executor.common_settings.non_local_exec:
        raise ValueError(
            "config train.runs_per_gpu: must be 1 with a cluster executor (each job gets its own GPU there)"
        )
    _gpus = getattr(workflow.global_resources.get("gpu"), "value", None)
    if _gpus is None:
        raise ValueError(
            "config train.runs_per_gpu > 1 needs `--resources gpu=N` (N devices), as the default profile sets"
        )
    workflow.register_resource("gpu_slot", int(_gpus) * RUNS_PER_GPU)


# ---------------------------------------------------------------- input functions


def get_dataset_options(wildcards=None):
    options = {k: v for k, v in DATASET.items()}
    if DATASET["layout"] == "synthetic":
        options.update(layout="folder", root=f"{OUT}/data/synthetic", csv="")
    return json.dumps(options, sort_keys=True)


def synth_options():
    """The phantom's settings as `sonoseg synth` flags (difficulty, calipers, organ weights)."""
    synthetic = config["synthetic"]
    organs = json.dumps(synthetic["organs"], sort_keys=True)
    return (
        f"--difficulty {synthetic['difficulty']} --calipers {str(synthetic['calipers']).lower()} "
        f"--caliper-noise {synthetic['caliper_noise']} --organs '{organs}'"
    )


def get_ingest_input(wildcards):
    return [f"{OUT}/data/synthetic"] if DATASET["layout"] == "synthetic" else []


def get_split_file(wildcards):
    return [config["split"]["file"]] if config["split"]["file"] else []


def get_weight_decay_choice(wildcards):
    """The selected weight decay of a network (auto), or nothing when the config fixes it."""
    if wildcards.network in WEIGHT_DECAY_NETWORKS:
        return {"wd": f"{OUT}/weight_decay/{wildcards.network}/selected.json"}
    return {}


def get_weight_decay_candidates(wildcards):
    """The weight-decay candidates' models and histories of a network (auto), in DECAYS order."""
    if wildcards.network not in WEIGHT_DECAY_NETWORKS:
        raise ValueError(
            f"weight-decay selection: {wildcards.network!r} has a fixed weight decay "
            f"(only {WEIGHT_DECAY_NETWORKS} use auto)"
        )
    runs = [f"{OUT}/weight_decay/{wildcards.network}/wd{d}" for d in DECAYS]
    return {"models": [f"{run}/model.pt" for run in runs], "histories": [f"{run}/history.csv" for run in runs]}


def get_weight_decay_histories(wildcards):
    return get_weight_decay_candidates(wildcards)["histories"]


def get_network_runs(wildcards):
    return {
        "metrics": expand(f"{OUT}/metrics/{wildcards.network}/seed{{seed}}.csv", seed=SEEDS),
        "histories": expand(f"{OUT}/models/{wildcards.network}/seed{{seed}}/history.csv", seed=SEEDS),
    }


def get_ladder_runs(wildcards):
    return {
        "metrics": expand(f"{OUT}/ladder/{wildcards.step}/metrics/seed{{seed}}.csv", seed=LADDER_SEEDS),
        "histories": expand(f"{OUT}/ladder/{wildcards.step}/models/seed{{seed}}/history.csv", seed=LADDER_SEEDS),
    }


def table_networks(reference):
    """The study's networks in a paper table, then the baselines as extra rows (when the table exists)."""
    networks = [n for n in NETWORKS if n in reference]
    return networks + BASELINES if networks else []


def get_final_outputs():
    outputs = []
    for kind, reference in (("table1", paper.TABLE1), ("table2", paper.TABLE2)):
        if table_networks(reference):
            outputs += [f"{OUT}/tables/{kind}.{ext}" for ext in ("csv", "md", "tex")]
    outputs += expand(f"{OUT}/networks/{{network}}.csv", network=NETWORKS + BASELINES)
    if WEIGHT_DECAY_AUTO:
        outputs.append(f"{OUT}/tables/weight_decay.csv")
    if COST["enabled"]:
        outputs.append(f"{OUT}/tables/cost.csv")  # workflow/rules/cost.smk
    if LADDER_STEPS:
        outputs += [f"{OUT}/tables/ladder.{ext}" for ext in ("csv", "md", "tex")]
    return outputs + get_report_outputs()  # workflow/rules/plots.smk


# ---------------------------------------------------------------- the HTML report (rules/plots.smk)


REPORT = f"{OUT}/report"
REPORT_SEED = 0  # the seed of every random choice the report makes (Figure 2's random image, the bootstrap)


def report_methods():
    """Networks, then the non-learned baselines: both have predictions and per-image metrics; only
    networks have a training history."""
    return NETWORKS + BASELINES


def get_report_metrics(wildcards=None):
    return expand(f"{OUT}/metrics/{{method}}/seed{{seed}}.csv", method=report_methods(), seed=SEEDS)


def get_report_predictions(wildcards=None):
    """Figure 2 shows the first seed's masks of every method."""
    return expand(f"{OUT}/predictions/{{method}}/seed{{seed}}", method=report_methods(), seed=SEEDS[:1])


def get_network_histories(wildcards):
    if wildcards.network not in NETWORKS:
        raise ValueError(f"training curves: {wildcards.network!r} is not one of the study's networks {NETWORKS}")
    return expand(f"{OUT}/models/{wildcards.network}/seed{{seed}}/history.csv", seed=SEEDS)


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


def get_report_tables():
    tables = [
        kind for kind, reference in (("table1", paper.TABLE1), ("table2", paper.TABLE2)) if table_networks(reference)
    ]
    tables += ["ladder"] if LADDER_STEPS else []
    tables += ["weight_decay"] if WEIGHT_DECAY_AUTO else []
    return tables


def get_report_outputs():
    """Every figure and table of the report (rule all lists them, so --report finds them)."""
    return [
        f"{REPORT}/data/overview.html",
        f"{REPORT}/data/samples.png",
        *expand(f"{REPORT}/tables/{{table}}.html", table=get_report_tables()),
        *expand(f"{REPORT}/curves/{{network}}.png", network=NETWORKS),
        f"{REPORT}/figure2.png",
        f"{REPORT}/cost_accuracy.png",
        f"{REPORT}/statistics/distributions.png",
        f"{REPORT}/statistics/paired.html",
        f"{REPORT}/statistics/forest.png",
    ]
