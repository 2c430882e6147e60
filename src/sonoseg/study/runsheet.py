"""The run sheet: every run of a study as one row, built from the config and validated.

A run is one method trained (or, for a floor, applied) under one recipe on one split, with one or
more seeds. Its kind is a column, and one rule chain (workflow/rules/runs.smk) serves every kind:

| kind | what it is | its name |
|---|---|---|
| ``network`` | a network of ``networks`` (its recipe: the train section and its overrides) | the network |
| ``candidate`` | a network at one point of the grid of its ``auto`` settings | ``<network>--lr<rate>-wd<decay>`` |
| ``ladder_step`` | the ladder network after every change up to this step | ``ladder--<step>`` |
| ``baseline`` | a method without training (a floor or a reference) | the method |
| ``reliance`` | a network trained with marks kept, tested inpainted | ``<run>--tested-inpaint`` |
| ``ensemble`` | a network's seeds averaged in each fold (a network with several seeds) | ``<run>--ensemble`` |
| ``tta`` | a network's models tested with horizontal-flip averaging | ``<run>--tta`` |
| ``convergence`` | a network retrained with twice its epoch budget, one seed | ``<network>--budget2x`` |
| ``external`` | a network's models (single, tta or ensemble) tested on an external dataset | ``<run>--on-<dataset>`` |
| ``augmentation`` | a network (ultrasound_augment auto) trained with one option | ``<network>--augment-<option>`` |

A candidate's name lists only its network's auto settings (``<network>--wd<decay>`` when the learning
rate is fixed); its ``point`` column gives their values. ``baseline`` rows are floors or references
(sonoseg.networks.catalog). Two more columns make the evidence's dimensions: ``marks`` (coloured overlays kept
or inpainted before resizing; the caliper ablation adds each network and floor once more under the
other condition, as ``<name>--marks-<condition>``) and ``folds`` (patient-level cross-validation:
every run is made once per fold, each fold testing its own patients). ``dataset`` names the external
dataset (config ``external_datasets``) an ``external`` run tests on: every image of it, by every fold's
models; empty for the study's own test images.

Each run lives in ``runs/<name>/fold<F>/``: ``recipe.json`` (what training reads), then per seed
``seed<N>/model.pt``, ``history.csv``, ``predictions/`` and ``metrics.csv``. A new kind of run is a
new row here, not a new rule. ``sonoseg runs --configfile FILE`` prints the sheet; the workflow
writes it as ``runs.tsv``.

Torch-free: the workflow builds the sheet when it parses the Snakefile.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from sonoseg.data.options import UNMARKED
from sonoseg.data.provenance import write_json_atomic
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog
from sonoseg.study import layout
from sonoseg.training.augmentation_choice import OPTIONS as AUGMENTATION_OPTIONS
from sonoseg.training.recipe import Recipe, describe_changes, ladder_recipes, network_recipe, recipe_from_config
from sonoseg.training.selection import GRIDS

KINDS = (
    "network",
    "candidate",
    "ladder_step",
    "baseline",
    "reliance",
    "ensemble",
    "tta",
    "convergence",
    "external",
    "augmentation",
)
SHORT_NAMES = {"learning_rate": "lr", "weight_decay": "wd"}  # in a candidate's name
SEPARATOR = "--"  # between a run's method and its variant: never part of a network or step name


@dataclass(frozen=True)
class Run:
    name: str  # the run's folder under runs/
    kind: str  # one of KINDS
    method: str  # the network built (or the floor applied)
    seeds: tuple[str, ...]
    recipe: Recipe | None = None  # None for a run without training
    selected_from: str = ""  # the network whose recipe selection sets this run's auto settings
    augmentation_from: str = ""  # the network whose augmentation choice (development set) sets ultrasound_augment
    point: tuple[tuple[str, float], ...] = ()  # a selection candidate's values of its network's auto settings
    model_from: str = ""  # a reliance run: the run whose models it tests (on its own marks condition)
    pretrained_backbone: str = ""  # the ImageNet weights file its backbone starts from ('' for none)
    table_key: str = "network"  # the column the tables group its summary by: network, or step
    table_name: str = ""  # its row name there (the network, or the ladder step)
    marks: str = "keep"  # the images' coloured marks: kept, or inpainted before resizing
    folds: tuple[str, ...] = ("0",)  # the cross-validation folds it is made in
    recipe_changes: str = ""  # a network's changes to the study's recipe (its overrides), as its table row names them
    tta: bool = False  # tested with horizontal-flip averaging (test-time augmentation)
    members: tuple[str, ...] = ()  # an ensemble run: the seeds whose models it averages, in each fold
    dataset: str = ""  # an external run: the external dataset it tests on ('' for the study's own test images)
    member_folds: tuple[str, ...] = ()  # an external ensemble: the folds whose models it averages too (all)

    @property
    def trained(self) -> bool:
        return self.recipe is not None

    @property
    def uses_model(self) -> bool:
        """Whether its predictions come from trained models (its own, or a reliance run's model_from's)."""
        return self.trained or bool(self.model_from)

    @property
    def variant(self) -> str:
        """How its models are used: single, tta (flip-averaged) or ensemble (averaged)."""
        return "ensemble" if self.members else "tta" if self.tta else "single"

    @property
    def evaluated(self) -> bool:
        """Selection candidates are only trained: the selection reads their validation loss."""
        return self.kind != "candidate"

    def row(self) -> dict:
        row = asdict(self)
        row["seeds"] = " ".join(self.seeds)
        row["folds"] = " ".join(self.folds)
        row["recipe"] = self.recipe.to_json() if self.recipe else ""
        row["point"] = " ".join(f"{k}={decay_name(v)}" for k, v in self.point)
        row["members"] = " ".join(self.members)
        row["member_folds"] = " ".join(self.member_folds)
        return row


def decay_name(decay: float) -> str:
    return f"{decay:g}"


def candidate_points(train: dict, network: str) -> list[dict[str, float]]:
    """The grid of a network's auto settings: one dict of chosen values per candidate (every
    learning rate with every weight decay when both are auto), in the grids' order."""
    auto = catalog.auto_settings(train, network)
    grids = [[float(decay_name(v)) for v in train[GRIDS[setting]]] for setting in auto]
    return [dict(zip(auto, values)) for values in itertools.product(*grids)]


def candidate_name(network: str, point: dict[str, float]) -> str:
    return f"{network}{SEPARATOR}" + "-".join(f"{SHORT_NAMES[k]}{decay_name(v)}" for k, v in point.items())


# Settings of how a job runs, not of what it makes (the schema says changing one reruns nothing): the run
# sheet's rule takes the config without them, so that changing one does not redo the sheet and what reads it.
# A training's thread count is one of them: its fingerprint leaves it out (docs/workflow.md), so that a study moved to
# a machine with more cores adopts what it trained.
RUN_ONLY_SETTINGS = ("checkpoint_seconds", "runs_per_gpu", "threads")


# Config sections no run reads, only a table after them (subgroups: tables/subgroups): left out of the run
# sheet's config, so that changing them redoes that table, not the sheet and everything collected after it.
TABLE_ONLY_SECTIONS = ("subgroups",)


def sheet_config(config: dict) -> dict:
    """The config the run sheet's rule is made from: the train section's RUN_ONLY_SETTINGS and the
    TABLE_ONLY_SECTIONS left out (the sheet never reads them: build gives the same runs with or without them)."""
    train = {key: value for key, value in config["train"].items() if key not in RUN_ONLY_SETTINGS}
    return {**{k: v for k, v in config.items() if k not in TABLE_ONLY_SECTIONS}, "train": train}


def sheet_config_file(out: str | Path, config: dict, write: bool = True) -> str:
    """Where the run sheet's config (sheet_config) lies as JSON, under a name made from its digest: the
    run sheet's rule takes this path, so that a changed config reruns it, and Snakemake says so with a
    short path rather than the whole config (twice). Written once per config (``write``: by the process
    that plans the run), atomically; a config seen before keeps its file, so a dry run with another
    config changes nothing the real run reads."""
    payload = sheet_config(config)
    # The digest of the very text write_json_atomic writes, so that a file's name is the digest of its bytes.
    text = json.dumps(payload, indent=1, sort_keys=True) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = layout.sheet_config(out, digest)
    if write and not Path(path).is_file():
        write_json_atomic(path, payload)
    return path


def study_networks(config: dict) -> list[str]:
    """The networks the study trains: the config's networks, then the user's own (custom_networks)."""
    return list(config["networks"]) + [n for n in config.get("custom_networks", {}) if n not in config["networks"]]


def unused_overrides_note(config: dict) -> str:
    """A note on the networks train.overrides sets that the study does not train (its networks and the
    ladder's, whose steps start from that network's recipe; "" when none): a config
    layered over another (a smaller study over config/quick.yaml) narrows the networks and keeps their
    overrides unless it clears them (``train.overrides: null``, config_check.clear_nulls); those are not used,
    which the workflow and `sonoseg runs` say, and how to clear them."""
    ladder = config.get("ladder", {})
    trained = set(study_networks(config)) | ({ladder.get("network")} if ladder.get("enabled") else set())
    unused = [network for network in config["train"]["overrides"] if network not in trained]
    if not unused:
        return ""
    return (
        f"config train.overrides sets {', '.join(unused)}, which this study does not train (config networks, "
        "ladder.network): those overrides are not used (a config layered over another keeps its overrides; "
        f"train.overrides: {{{unused[0]}: null}} clears one network's, train.overrides: null all)"
    )


def check_config(config: dict) -> None:
    """What the schema cannot say: names that must be known, and lists that must agree."""
    networks, floors = study_networks(config), config["baselines"]
    if not networks:
        raise SonosegError("config networks: empty, and no custom_networks: the study has no network to train")
    known = catalog.networks()
    for network in networks:
        if network not in known:
            raise SonosegError(f"config networks: unknown network {network!r}; known networks: {', '.join(known)}")
    for floor in floors:
        if floor in networks:
            raise SonosegError(
                f"config networks: {floor!r} is a baseline (config baselines: no training), not a network"
            )
    train = config["train"]
    for network in train["overrides"]:
        if network not in known:
            raise SonosegError(
                f"config train.overrides: unknown network {network!r}; known networks: {', '.join(known)}"
            )
        if network in networks:
            catalog.pretrained_backbone_for(train, network)  # a pretrained_backbone override needs a backbone
    ladder = config["ladder"]
    if ladder.get("enabled") and ladder.get("network") not in known:
        raise SonosegError(
            f"config ladder.network: unknown network {ladder.get('network')!r}; known networks: {', '.join(known)}"
        )
    split = config.get("split", {})
    fractions = split.get("fractions")  # one split by fractions (K folds read the validation share alone)
    if fractions and split.get("folds", 1) == 1 and not split.get("file") and abs(sum(fractions) - 1) > 1e-6:
        raise SonosegError(f"config split.fractions: {fractions} must sum to 1 (train, validation, test)")
    seeds = [str(s) for s in config["seeds"]]
    ladder_seeds = [str(s) for s in ladder["seeds"]] or seeds
    if not set(ladder_seeds) <= set(seeds):
        raise SonosegError(f"config ladder.seeds: {ladder_seeds} must be among the study's seeds {seeds}")
    steps = [step["name"] for step in ladder["steps"]]
    if len(set(steps)) != len(steps):
        raise SonosegError(f"config ladder.steps: step names must be unique, got {steps}")
    for network in config.get("convergence", {}).get("networks", []):
        if network not in networks:
            raise SonosegError(
                f"config convergence.networks: {network!r} is not one of the study's networks {networks}"
            )
    methods = set(networks) | set(floors)
    for pair in config.get("claims", {}).get("equivalence", []):
        unknown = [m for m in pair if m not in methods]
        if unknown:
            raise SonosegError(
                f"config claims.equivalence: {unknown} in {pair} are not among the study's networks and "
                f"baselines {sorted(methods)}"
            )
    check_external_datasets(config.get("external_datasets", []), config.get("dataset", {}), config.get("study"))
    chosen_on_development = [n for n in networks if augmentation_auto(train, n)]
    probe = augmentation_probe(config)
    if probe and probe not in networks:
        raise SonosegError(
            f"config augmentation_choice.network: {probe!r} is not one of the study's networks {networks}"
        )
    if chosen_on_development and not development_set(config):
        raise SonosegError(
            f"config train.ultrasound_augment: auto (for {chosen_on_development}) chooses on the development "
            "external set: declare one in external_datasets (role: development)"
        )
    for name in networks + steps:
        if SEPARATOR in name:
            raise SonosegError(f"config: {name!r}: a network or ladder step name must not contain {SEPARATOR!r}")


# Options a layout reads; given to another layout they would be ignored without a word.
LAYOUT_ONLY_OPTIONS = {"csv": ("folder", ""), "include_normal": ("busi", False)}


def check_external_datasets(datasets: list[dict], main: dict | None = None, study: str | None = None) -> None:
    """The external sets' names, roles, options and folders, checked before anything runs (``main``: the
    config's dataset section, whose folder no external set may share; ``study``: the study's name, whose
    folder, results/<study>, no dataset may read)."""
    names = [d["name"] for d in datasets]
    # Letter case aside too: each name becomes a folder (results/<study>/external/<name>/), and busi and BUSI
    # would be one folder on macOS's and Windows' file systems.
    if len({name.casefold() for name in names}) != len(names):
        raise SonosegError(f"config external_datasets: names must be unique, regardless of letter case; got {names}")
    development = [d["name"] for d in datasets if d.get("role") == "development"]
    if len(development) > 1:
        raise SonosegError(
            f"config external_datasets: at most one development set (the one set that may guide a choice), "
            f"got {development}"
        )
    for name in names:
        if SEPARATOR in name:
            raise SonosegError(f"config external_datasets: {name!r}: a dataset name must not contain {SEPARATOR!r}")
    for dataset in datasets:
        _check_layout_options(f"external_datasets {dataset['name']!r}", dataset, "folder")
    if main:
        _check_layout_options("dataset", main, "synthetic")
    _check_external_roots(datasets, main or {}, study)


def _check_layout_options(key: str, dataset: dict, default_layout: str) -> None:
    layout_name = dataset.get("layout", default_layout)
    for option, (reader, unset) in LAYOUT_ONLY_OPTIONS.items():
        if dataset.get(option, unset) not in (unset, None) and layout_name != reader:
            raise SonosegError(
                f"config {key}: {option} is read by the {reader} layout only, and this dataset's layout is "
                f"{layout_name!r}: remove it, or set layout: {reader}"
            )


def _check_external_roots(datasets: list[dict], main: dict, study: str | None = None) -> None:
    """No two sets read one folder, or one inside the other: their images would count twice, under two
    names (or, against the main dataset, be tested on the images the networks trained on). No set reads
    the study's own folder (``study``: its name): the study writes there, the built-in phantom included."""
    folders = [(f"external_datasets {d['name']!r}", Path(d["root"])) for d in datasets if d.get("root")]
    if main.get("layout", "synthetic") != "synthetic" and main.get("root"):
        folders.insert(0, ("dataset", Path(main["root"])))
    if study:
        written = Path(layout.study_folder(study))
        for key, root in folders:
            # Inside it, a set reads what the study writes; around it (a root of '.'), its fingerprint would
            # change with every file the study writes.
            inside, around = _same_or_inside(root, written), _same_or_inside(written, root)
            if inside or around:
                relation = "reads the study's own folder" if inside else "holds the study's own folder"
                raise SonosegError(
                    f"config {key} (root {str(root.resolve())!r}) {relation} {str(written)!r}, where the study "
                    "writes (the built-in phantom's images among them): give the dataset a folder of its own"
                )
    for index, (first, first_root) in enumerate(folders):
        for second, second_root in folders[index + 1 :]:
            first_in_second, second_in_first = (
                _same_or_inside(first_root, second_root),
                _same_or_inside(second_root, first_root),
            )
            if first_in_second or second_in_first:
                same = first_in_second and second_in_first
                relation = "the same folder" if same else "folders one inside the other"
                risk = (
                    "the networks would be tested on images they trained on"
                    if first == "dataset"
                    else "their images would be counted twice, under two names"
                )
                raise SonosegError(
                    f"config {first} (root {str(first_root.resolve())!r}) and {second} (root "
                    f"{str(second_root.resolve())!r}) read {relation}: {risk}; keep one, or give each its own folder"
                )


def _same_or_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it. By the resolved paths (links followed), and where
    both exist by the file system's own identity (os.path.samefile), which also sees one folder spelled in
    two letter cases on a case-insensitive file system (macOS, Windows) or reached through a bind mount."""
    path, folder = path.resolve(), folder.resolve()
    for candidate in (path, *path.parents):
        if candidate == folder:
            return True
        try:
            if os.path.samefile(candidate, folder):
                return True
        except OSError:  # either does not exist (yet): the paths have said it
            continue
    return False


def augmentation_auto(train: dict, network: str) -> bool:
    """Whether a network's ultrasound_augment is chosen on the development set (``auto``: its override's
    value when it has one, else the train section's)."""
    return catalog.is_auto(train, network, "ultrasound_augment")


def augmentation_probe(config: dict) -> str:
    """The network whose augmentation choice every auto network takes (config augmentation_choice.network,
    a cheaper probe, as the ladder's network); '' when each chooses its own."""
    return config.get("augmentation_choice", {}).get("network", "")


def development_set(config: dict) -> str:
    """The external dataset allowed to guide a choice (role development), or ''."""
    return next((d["name"] for d in config.get("external_datasets", []) if d.get("role") == "development"), "")


def build(config: dict) -> list[Run]:
    """Every run of the study, in a stable order: networks, their selection candidates, the ladder,
    the floors."""
    catalog.register_all(config.get("custom_networks", {}))
    check_config(config)
    train = config["train"]
    seeds = tuple(str(s) for s in config["seeds"])
    data = {"marks": config["preprocess"]["marks"], "folds": tuple(str(f) for f in range(config["split"]["folds"]))}
    runs: list[Run] = []
    for network in study_networks(config):
        auto = bool(catalog.auto_settings(train, network))
        runs.append(
            Run(
                network,
                "network",
                network,
                seeds,
                network_recipe(train, network),
                selected_from=network if auto else "",
                augmentation_from=(augmentation_probe(config) or network) if augmentation_auto(train, network) else "",
                pretrained_backbone=catalog.pretrained_backbone_for(train, network),
                table_name=network,
                recipe_changes=describe_changes(recipe_from_config(train), network_recipe(train, network)),
                **data,
            )
        )
    for network in study_networks(config):
        for point in candidate_points(train, network) if catalog.auto_settings(train, network) else []:
            runs.append(
                Run(
                    candidate_name(network, point),
                    "candidate",
                    network,
                    (str(train["selection_seed"]),),
                    network_recipe(train, network, point),
                    point=tuple(point.items()),
                    pretrained_backbone=catalog.pretrained_backbone_for(train, network),
                    table_name=network,
                    **data,
                )
            )
    runs += augmentation_candidates(runs, train)
    ladder = config["ladder"]
    if ladder["enabled"]:
        ladder_seeds = tuple(str(s) for s in ladder["seeds"]) or seeds
        recipes = ladder_recipes(network_recipe(train, ladder["network"]), ladder["steps"])
        for step, recipe in recipes.items():
            runs.append(
                Run(
                    f"ladder{SEPARATOR}{step}",
                    "ladder_step",
                    ladder["network"],
                    ladder_seeds,
                    recipe,
                    table_key="step",
                    table_name=step,
                    **data,
                )
            )
    # A floor is fitted, deterministically, once per fold: under every seed it would be the same run again,
    # counted as several (an SD of 0 where it has none). Its first seed names it.
    for floor in config["baselines"]:
        runs.append(Run(floor, "baseline", floor, seeds[:1], table_name=floor, **data))
    if config["ablation"]["marks"]:
        runs += marks_ablation(runs, data["marks"])
        # On the phantom with calipers, also on the same images rendered without them.
        unmarked = config["dataset"]["layout"] == "synthetic" and config["synthetic"]["calipers"]
        runs += reliance_runs(runs, unmarked=unmarked)
    runs += ensemble_runs(runs)
    if config["predict"]["tta"]:
        runs += tta_runs(runs)
    runs += external_runs(runs, [d["name"] for d in config.get("external_datasets", [])], data["marks"])
    runs += convergence_runs(runs, config.get("convergence", {}).get("networks", []))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise SonosegError(f"run sheet: run names must be unique, got {names}")
    return runs


def other_marks(marks: str) -> str:
    return "inpaint" if marks == "keep" else "keep"


def marks_ablation(runs: list[Run], marks: str) -> list[Run]:
    """The caliper ablation: every network and floor once more, on the same split and with the same
    recipe (its weight decay chosen by the main condition's selection), with the coloured marks
    treated the other way."""
    other = other_marks(marks)
    return [
        replace(run, name=f"{run.name}{SEPARATOR}marks-{other}", marks=other, table_name=run.table_name)
        for run in runs
        if run.kind in ("network", "baseline")
    ]


def reliance_runs(runs: list[Run], unmarked: bool = False) -> list[Run]:
    """Reliance on the marks, measured directly: every network run trained with the marks kept is also
    tested, image by image, on the same test images with the marks inpainted (no training: its models)
    and, with ``unmarked`` (the phantom, which can draw its images without calipers), on the same
    patients' images rendered without them: no inpainting residue, nothing but the calipers gone."""
    conditions = ("inpaint", UNMARKED) if unmarked else ("inpaint",)
    return [
        tested_again(run, f"tested-{condition}", "reliance", marks=condition)
        for run in runs
        if run.kind == "network" and run.marks == "keep"
        for condition in conditions
    ]


def tested_again(run: Run, suffix: str, kind: str, **changes) -> Run:
    """A run without training that tests ``run``'s own models another way (``<run>--<suffix>``): on other
    images (reliance), flip-averaged (tta), or its seeds averaged (ensemble); ``changes`` say how."""
    fields = {"seeds": run.seeds, "marks": run.marks, "folds": run.folds, **changes}
    return Run(
        f"{run.name}{SEPARATOR}{suffix}", kind, run.method, model_from=run.name, table_name=run.table_name, **fields
    )


def tested_pairs(runs: list[Run], kind: str) -> list[tuple[Run, Run]]:
    """(a run, one of its tested_again runs of ``kind``), for the paired tables."""
    by_name = {run.name: run for run in runs}
    return [(by_name[run.model_from], run) for run in runs if run.kind == kind]


def ensemble_runs(runs: list[Run]) -> list[Run]:
    """Ensembles, as nnU-Net serves its folds: every network run with several seeds is also tested as
    the ensemble of its seeds' models in each fold (the mean of their probabilities; no training), each
    test patient by the ensemble of its own fold. Its one "seed" folder is named after the first member."""
    return [
        tested_again(run, "ensemble", "ensemble", seeds=run.seeds[:1], members=run.seeds)
        for run in runs
        if run.kind == "network" and len(run.seeds) > 1
    ]


def tta_runs(runs: list[Run]) -> list[Run]:
    """Test-time augmentation: every network run (each marks condition) tested once more with
    horizontal-flip averaging, with its own models (no training), paired image by image with it."""
    return [tested_again(run, "tta", "tta", tta=True) for run in runs if run.kind == "network"]


def augmentation_candidates(runs: list[Run], train: dict) -> list[Run]:
    """The augmentation choice's candidates (sonoseg.training.augmentation_choice): each network whose
    ultrasound_augment is auto (or only the probe network, config augmentation_choice.network), trained
    with each option with the recipe selection's seed in every fold (its other settings as its own
    run's, the learning rate and weight decay chosen as its)."""
    seed = (str(train["selection_seed"]),)
    choosing = {run.augmentation_from for run in runs if run.augmentation_from}
    return [
        replace(
            run,
            name=f"{run.name}{SEPARATOR}augment-{option}",
            kind="augmentation",
            seeds=seed,
            recipe=run.recipe.with_changes({"ultrasound_augment": flag}),
            augmentation_from="",
        )
        for run in runs
        if run.kind == "network" and run.name in choosing
        for option, flag in AUGMENTATION_OPTIONS.items()
    ]


def augmentation_pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(a network trained with the paper's augmentation, with the ultrasound one), on its own test
    images and on each external dataset: the augmentation table's pairs."""
    by_name = {run.name: run for run in runs}
    tested = {(r.model_from, r.dataset): r for r in runs if r.kind == "external"}
    pairs = []
    for run in runs:
        if run.kind == "augmentation" and run.name.endswith(f"{SEPARATOR}augment-ultrasound"):
            paper = by_name[run.name.replace(f"{SEPARATOR}augment-ultrasound", f"{SEPARATOR}augment-paper")]
            pairs.append((paper, run))
            pairs += [
                (tested[(paper.name, r.dataset)], r)
                for r in runs
                if r.kind == "external" and r.model_from == run.name and (paper.name, r.dataset) in tested
            ]
    return pairs


# Scheduling priorities (Snakemake's `priority:`: among the jobs ready to run, the highest first).
GATES_A_CHOICE, WAITED_ON_A_CHOICE, NETWORK, ANY_OTHER = 3, 2, 1, 0
GATES_EVERY_JOB = GATES_A_CHOICE + 1  # the main dataset's ingest and split


def schedule_priorities(runs: list[Run], development: str) -> dict[str, int]:
    """run name -> the priority of its jobs (training, post-processing choice, predictions). What a
    choice waits on goes first: a recipe selection's candidates, an augmentation choice's candidates
    and their tests on the development set, since every run of the network waits for the choice.
    Then the runs that waited (they can start only then, so the study's end waits on them), then the
    other networks, and last what nothing waits on (the ladder's steps, the floors). A run that tests
    another's models again (flip averaging, an ensemble, an external set) takes that run's priority.
    The order changes when jobs run, never what they compute."""

    def own(run: Run) -> int:
        if run.kind in ("candidate", "augmentation"):
            return GATES_A_CHOICE
        if run.selected_from or run.augmentation_from:
            return WAITED_ON_A_CHOICE
        return NETWORK if run.kind in ("network", "convergence") else ANY_OTHER

    by_name = {run.name: run for run in runs}
    priorities = {}
    for run in runs:
        tested = by_name.get(run.model_from) if run.model_from else None
        if tested is None:
            priorities[run.name] = own(run)
        elif own(tested) == GATES_A_CHOICE and run.dataset != development:
            priorities[run.name] = NETWORK  # a candidate's other tests: no choice reads them
        else:
            priorities[run.name] = own(tested)
    return priorities


def augmentation_choices(runs: list[Run]) -> dict[str, dict[str, Run]]:
    """network -> option -> its candidate run."""
    choices: dict[str, dict[str, Run]] = {}
    for run in runs:
        if run.kind == "augmentation":
            option = run.name.rsplit(f"{SEPARATOR}augment-", 1)[1]
            choices.setdefault(run.method, {})[option] = run
    return choices


def augmentation_takers(runs: list[Run]) -> dict[str, list[str]]:
    """choosing network -> the networks whose runs train with the augmentation it chooses (augmentation_from)."""
    takers: dict[str, set[str]] = {}
    for run in runs:
        if run.kind == "network" and run.augmentation_from:
            takers.setdefault(run.augmentation_from, set()).add(run.method)
    return {network: sorted(names) for network, names in takers.items()}


def on_dataset(name: str, dataset: str) -> str:
    """The name of a run that tests run ``name``'s models on an external dataset."""
    return f"{name}{SEPARATOR}on-{dataset}"


def external_runs(runs: list[Run], datasets: list[str], marks: str) -> list[Run]:
    """External validation: every network run of the main marks condition tested once more on each
    external dataset in full (no training), by each of its trainings (``<run>--on-<dataset>``), with
    flip averaging when the study tests that (``<run>--tta--on-<dataset>``), and, where it has several
    trainings, as the ensemble of all of them, every fold and seed (``<run>--ensemble--on-<dataset>``:
    no image of an external set was seen by any fold, so every model may vote, as nnU-Net's folds do).
    External images reach no training and no choice but those the development set may guide."""
    tested = [run for run in runs if run.marks == marks and run.kind in ("network", "tta", "augmentation")]
    external = []
    for dataset in datasets:
        for run in tested:
            if run.kind in ("network", "augmentation"):
                external.append(tested_again(run, f"on-{dataset}", "external", dataset=dataset))
            else:
                external.append(replace(run, name=on_dataset(run.name, dataset), kind="external", dataset=dataset))
        for run in tested:
            if run.kind == "network" and len(run.folds) * len(run.seeds) > 1:
                external.append(
                    tested_again(
                        run,
                        f"ensemble{SEPARATOR}on-{dataset}",
                        "external",
                        dataset=dataset,
                        folds=run.folds[:1],
                        seeds=run.seeds[:1],
                        members=run.seeds,
                        member_folds=run.folds,
                    )
                )
    return external


def external_pairs(runs: list[Run], variant: str) -> list[tuple[Run, Run]]:
    """On each external dataset, (a network's single models, the same models as ``variant``: tta or
    ensemble), for the paired tables."""
    single = {(run.model_from, run.dataset): run for run in runs if run.kind == "external" and run.variant == "single"}
    return [
        (single[(run.model_from, run.dataset)], run)
        for run in runs
        if run.kind == "external" and run.variant == variant and (run.model_from, run.dataset) in single
    ]


def flip_twins(runs: list[Run]) -> dict[str, list[str]]:
    """The runs whose flip-averaged twin is predicted in the same job (one process, one model load, two
    forward passes instead of three), grouped by what follows the network's run name: '' on the study's
    own test images, '--on-<dataset>' on an external set -> the names before it. A pair is
    (twin_names(base, suffix)); a pair named otherwise is left to predict alone."""
    twins: dict[str, list[str]] = {}
    for plain, flipped in tested_pairs(runs, "tta") + external_pairs(runs, "tta"):
        suffix = on_dataset("", plain.dataset) if plain.dataset else ""
        base = plain.name[: len(plain.name) - len(suffix)]
        if (plain.name, flipped.name) == twin_names(base, suffix):
            twins.setdefault(suffix, []).append(base)
    return twins


def flip_twin_groups(twins: dict[str, list[str]]) -> dict[tuple[str, ...], list[str]]:
    """flip_twins regrouped by network: the places a run's models are tested at with their flip-averaged
    twins (suffixes) -> the runs (bases) tested at exactly those places. One job per base and training
    predicts every place of its group: its own test images alone (so that a changed external set
    never reruns them), and every external set in one process with one model load."""
    places: dict[tuple[str, bool], list[str]] = {}
    for suffix, bases in twins.items():
        for base in bases:
            places.setdefault((base, suffix != ""), []).append(suffix)
    return _bases_by_places((base, suffixes) for (base, _), suffixes in places.items())


def _bases_by_places(places_of_bases) -> dict[tuple[str, ...], list[str]]:
    """(base, its places) pairs -> the sorted places -> the bases tested at exactly those places."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for base, suffixes in places_of_bases:
        groups.setdefault(tuple(sorted(suffixes)), []).append(base)
    return groups


def external_groups(runs: list[Run], with_twin: set[str]) -> dict[tuple[str, ...], list[str]]:
    """The external sets a training's own models are tested at without a flip-averaged twin, grouped by
    network run: places ('--on-<dataset>', sorted) -> the runs (bases) tested at exactly those places,
    where they are two or more. One job per base and training predicts them all (one process, one model
    load), as flip_twin_groups does with twins. ``with_twin``: the run names already predicted with
    their twins. An augmentation candidate's sets stay apart: its development-set prediction decides
    the choice, and a job that read a held-out set too would let that set reach the choice."""
    by_name = {run.name: run for run in runs}
    places: dict[str, list[str]] = {}
    for run in runs:
        if run.kind != "external" or run.variant != "single" or run.name in with_twin:
            continue
        base, suffix = run.model_from, on_dataset("", run.dataset)
        if run.name != base + suffix or by_name.get(base) is None or by_name[base].kind == "augmentation":
            continue
        places.setdefault(base, []).append(suffix)
    return _bases_by_places((base, suffixes) for base, suffixes in places.items() if len(suffixes) > 1)


def twin_names(base: str, suffix: str) -> tuple[str, str]:
    """(the plain run, its flip-averaged twin) of flip_twins' base and suffix."""
    return base + suffix, f"{base}{SEPARATOR}tta{suffix}"


def convergence_runs(runs: list[Run], networks: list[str]) -> list[Run]:
    """The convergence check: each chosen network once more with twice its epoch budget (the stop rule
    still on; the same chosen learning rate and weight decay), with its first seed, in every fold."""
    by_name = {run.name: run for run in runs}
    checked = []
    for network in networks:
        run = by_name[network]
        recipe = run.recipe.with_changes({"max_epochs": 2 * run.recipe.max_epochs})
        checked.append(
            replace(run, name=f"{network}{SEPARATOR}budget2x", kind="convergence", seeds=run.seeds[:1], recipe=recipe)
        )
    return checked


def convergence_pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(a network's run, the same network with twice the epoch budget)."""
    by_name = {run.name: run for run in runs}
    return [(by_name[run.method], run) for run in runs if run.kind == "convergence"]


def ablation_pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(the main condition's run, its other-marks twin) for every method of the caliper ablation."""
    by_name = {run.name: run for run in runs}
    return [
        (by_name[run.name.rsplit(SEPARATOR, 1)[0]], run)
        for run in runs
        if run.kind in ("network", "baseline") and run.name.endswith(f"{SEPARATOR}marks-{run.marks}")
    ]


def to_frame(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([run.row() for run in runs])


def to_tsv(runs: list[Run]) -> str:
    return to_frame(runs).to_csv(sep="\t", index=False)


def selections(runs: list[Run]) -> dict[str, list[Run]]:
    """network -> its selection candidate runs, in the grids' order."""
    selection: dict[str, list[Run]] = {}
    for run in runs:
        if run.kind == "candidate":
            selection.setdefault(run.method, []).append(run)
    return selection
