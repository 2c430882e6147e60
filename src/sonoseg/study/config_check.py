"""The study config checked against its schema (workflow/schemas/config.schema.yaml) before anything is
planned, with one short line per problem naming the key; and each dataset it declares read as its ingest
job will read it (check_datasets), and its split checked against the patients it holds (split_problem),
so that a wrong layout or too many folds stop the planning, not a job.

Snakemake's own validation stops at the first problem and prints the whole schema and config with it
(some 2,000 lines for a misspelt key). Two parts of the config are open objects there and so were never
checked: a network's ``train.overrides`` and a ladder step's ``changes``. Each of their settings is
checked here against the train section's own definition of that setting, so that ``learning_rate: 1e-3``
(text to YAML: no dot) or a negative learning rate stops the start rather than a training job hours in.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import re
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from jsonschema import Draft202012Validator

from sonoseg.errors import SonosegError

if TYPE_CHECKING:  # the data readers are imported when a dataset is read, not with the config check
    from sonoseg.data.manifest import LayoutFound

SHOWN = 80  # characters of a bad value shown in a message
# A number in exponent form without a dot, which YAML 1.1 (PyYAML) reads as text.
YAML_TEXT_NUMBER = re.compile(r"^[+-]?\d+[eE][+-]?\d+$")


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def clear_nulls(config: dict) -> dict:
    """``train.overrides: null`` clears every network's overrides, and ``train.overrides.<network>: null``
    that network's, in place. Config files merge key by key (Snakemake's update_config), so an empty map given
    over config/quick.yaml's changes nothing there; null replaces it. Run before the check and the schema's
    defaults."""
    train = config.get("train")
    if isinstance(train, dict) and "overrides" in train:
        if train["overrides"] is None:
            train["overrides"] = {}
        elif isinstance(train["overrides"], dict):
            train["overrides"] = {network: s for network, s in train["overrides"].items() if s is not None}
    return config


def retype_command_line_text(config: dict, schema: dict) -> list[str]:
    """Values the schema wants as numbers, booleans or lists that came as text, re-read as a config file's YAML
    reads them, in place; the keys changed. Snakemake reads a nested ``--config`` value with YAML's base
    loader, which keeps every scalar as text: ``--config 'train={"threads": 2}'`` gives threads '2'. Text YAML
    itself keeps as text (``1e-3``, ``'2'`` re-read is 2 but 'abc' stays 'abc') is left for the check to name."""
    changed = []
    train = schema["properties"]["train"]["properties"]
    parts = [(schema, [])] + [
        (train[key], path + [key])
        for path, settings in _settings_sections(config)
        for key in settings
        if key in train and key != "overrides"
    ]
    for part_schema, base in parts:
        for error in _errors(part_schema, _at(config, base)):
            if error.validator not in ("type", "enum", "anyOf", "oneOf") or not isinstance(error.instance, str):
                continue
            try:
                value = yaml.safe_load(error.instance)
            except yaml.YAMLError:
                continue
            path = base + list(error.absolute_path)
            if not isinstance(value, str) and _of_a_type_wanted(error, value):
                _at(config, path[:-1])[path[-1]] = value
                changed.append(".".join(str(p) for p in path))
    return changed


def _of_a_type_wanted(error, value) -> bool:
    """Whether ``value`` has a type the schema wants where ``error`` (a type error, or none of anyOf/oneOf's
    forms) was found: its type alone, so that a number out of range (``--config 'preprocess={"size": 48}'``)
    is then named for its range, as a config file's is."""
    forms = [error.schema] if error.validator in ("type", "enum") else error.schema.get(error.validator, [])
    return any(
        ("type" in form and Draft202012Validator({"type": form["type"]}).is_valid(value))
        or ("enum" in form and value in form["enum"])  # ultrasound_augment: true, as text 'true'
        for form in forms
    )


def _settings_sections(config: dict) -> list[tuple[list, dict]]:
    """The open sections checked against the train section's definitions: each network's overrides and each
    ladder step's changes, as (their key path, their settings)."""
    found = [
        (["train", "overrides", network], settings)
        for network, settings in ((config.get("train") or {}).get("overrides") or {}).items()
    ]
    found += [
        (["ladder", "steps", number, "changes"], step.get("changes"))
        for number, step in enumerate((config.get("ladder") or {}).get("steps") or [])
        if isinstance(step, dict)
    ]
    return [(path, settings) for path, settings in found if isinstance(settings, dict)]


def _at(config, path: list):
    for part in path:
        config = config[part]
    return config


def problems(config: dict, schema: dict) -> list[str]:
    """Every problem of the config, as 'config <key path>: <what is wrong>' (empty when none)."""
    custom = config.get("custom_networks") if isinstance(config.get("custom_networks"), dict) else {}
    found = [_line(error.absolute_path, error, custom) for error in _errors(schema, config)]
    train = schema["properties"]["train"]["properties"]
    for path, settings in _settings_sections(config):
        found += _settings_problems(train, settings, path)
    return found


def message(found: list[str]) -> str:
    return f"{len(found)} problem(s) in the config (workflow/schemas/config.schema.yaml):\n" + "\n".join(
        f"  {line}" for line in found
    )


@dataclass(frozen=True)
class DatasetsChecked:
    """check_datasets' answer: one problem per dataset that has one, 'config KEY (layout L, root R): what
    the ingest would say' (empty when none), and what each other dataset's layout pairs (its key ->
    sonoseg.data.manifest.LayoutFound), which the split's check reads rather than pairing the files again."""

    problems: list[str]
    found: dict[str, LayoutFound]


def check_datasets(
    datasets: dict[str, dict], listed: dict[str, Iterable[Path]] | None = None, warn: Iterable[str] | None = None
) -> DatasetsChecked:
    """Each dataset the study ingests, read as its ingest job will read it, before any job runs: the same
    code (sonoseg.data.manifest.check_layout, which is ingest's up to the pixels), so that a dataset declared
    with the wrong layout, a folder without images, masks missing or a CSV without its column stops the
    planning, not the ingest job after the queue. ``datasets``: the config key declaring each ('dataset',
    "external_datasets 'udiat'") -> the options its job gets (``sonoseg ingest --options``, read through
    sonoseg.data.options.ingest_parameters); ``listed``: the key -> the files under its root, already listed
    (sonoseg.data.provenance.record_paths); ``warn``: the keys whose layout warnings (a CSV row naming no
    image, an unknown BUSI class folder) are shown, all when None: the workflow shows them when it first
    sees a dataset or its files change, not at every planning (the ingest log keeps them)."""
    problems, found = [], {}
    for key, options in datasets.items():
        try:
            with _warnings_shown(warn is None or key in warn):
                found[key] = layout_found(options, (listed or {}).get(key))
        except SonosegError as exc:
            problems.append(f"config {key} (layout {options['layout']}, root {options['root']}): {exc}")
    return DatasetsChecked(problems, found)


def layout_found(options: dict, listed: Iterable[Path] | None = None) -> LayoutFound:
    """sonoseg.data.manifest.check_layout on a dataset's options as its ingest job gets them (``options``
    and ``listed`` as check_datasets takes them)."""
    from sonoseg.data.manifest import LAYOUT_SETTINGS, check_layout
    from sonoseg.data.options import ingest_parameters

    settings = {k: v for k, v in ingest_parameters(options).items() if k in LAYOUT_SETTINGS}
    return check_layout(options["root"], options["layout"], **settings, listed=listed)


def split_problem(config: dict, found: LayoutFound | None = None) -> str:
    """Why the study's split cannot be made, known at planning ('' when it can, as far as planning can tell):
    split.folds K needs 2K patient groups (sonoseg.data.split.fold_split), and a dataset has no more groups
    than patients; split.file gives one split, never K folds. The patients are the phantom's
    (synthetic.patients), or those of the images the dataset's layout pairs with masks (no pixel read), a
    bound the ingest can only lower: ``found``, what check_datasets found in the dataset, required for a
    dataset that is not the phantom (the planning pairs its files once)."""
    split, dataset = config["split"], config["dataset"]
    stratify = split.get("stratify")
    dealt = not split["file"]  # a split file is read as given: nothing is stratified
    if dealt and stratify and dataset["layout"] != "synthetic" and found is not None and stratify not in found.columns:
        from sonoseg.data.split import missing_stratum_column

        return f"config {missing_stratum_column(stratify, list(found.columns))}"
    folds = split["folds"]
    if folds < 2:
        return ""
    if split["file"]:
        return (
            f"config split.folds: {folds} folds with split.file {split['file']}, which gives one split: set "
            "split.folds: 1, or split.file: '' to deal the folds"
        )
    if dataset["layout"] == "synthetic":
        patients = config["synthetic"]["patients"]
        whose = f"the phantom has {patients} (synthetic.patients)"
    else:
        if found is None:
            raise ValueError("split_problem: a dataset's split is checked against what check_datasets found in it")
        patients = len(found.patients)
        whose = (
            f"the dataset (layout {dataset['layout']}, root {dataset['root']}) has at most {patients}, the "
            "patients of the images its layout pairs with masks"
        )
    if patients >= 2 * folds:
        return ""
    fewer = f"set split.folds to {patients // 2} or fewer" if patients >= 4 else "set split.folds: 1"
    return (
        f"config split.folds: {folds} folds need at least {2 * folds} patient groups, and {whose}: {fewer}, "
        "or use more patients"
    )


@contextmanager
def _warnings_shown(shown: bool):
    """The data readers' warnings logged as usual, or (``shown`` False) left out while the block runs."""
    readers = logging.getLogger("sonoseg.data")
    level = readers.level
    if not shown:
        readers.setLevel(logging.ERROR)
    try:
        yield
    finally:
        readers.setLevel(level)


# Snakemake commands that read no data: the workflow runs no data check for them (workflow/rules/common.smk).
BOOKKEEPING_OPTIONS = ("--unlock", "--cleanup-metadata", "--cm")


def reads_no_data(argv: Iterable[str]) -> bool:
    """Whether a Snakemake command line (``sys.argv``: Snakemake tells the Snakefile nothing of its command)
    only keeps Snakemake's books: --unlock or --cleanup-metadata, also as argparse takes them, abbreviated
    (``--unl``) or with ``=``. An abbreviation of several options Snakemake itself refuses, so taking any
    prefix of these here is safe."""
    for token in argv:
        name = token.split("=", 1)[0]
        if name == "--":
            return False  # targets follow
        if len(name) > 2 and name.startswith("--") and any(option.startswith(name) for option in BOOKKEEPING_OPTIONS):
            return True
    return False


def only_reports(argv: Iterable[str]) -> bool:
    """Whether a Snakemake command line makes the report and runs nothing (``--report FILE``, also as
    ``--report=FILE``; not ``--report-after-run``, which runs the workflow first): the planning's "the
    study redoes" is then what the next run will do, not this one."""
    names = [token.split("=", 1)[0] for token in itertools.takewhile(lambda token: token != "--", argv)]
    return "--report" in names and "--report-after-run" not in names


def layouts_to_warn_of(states: dict[str, str], seen: dict | None) -> list[str]:
    """The datasets whose layout warnings are news: those whose state (their files' fingerprint and the options
    they are read with, ``states``: config key -> state) differs from the state the last check that passed
    recorded (``seen``, the same mapping; None: no check recorded one). Not at every planning; again when the
    files or the options change, or when a planning stopped before it could record them."""
    return [key for key, state in states.items() if (seen or {}).get(key) != state]


def datasets_message(found: list[str]) -> str:
    return (
        f"{len(found)} dataset(s) in the config cannot be ingested as declared (each read as its ingest job "
        "would read it; no job has run). What each layout expects: README.md, 'Your own data'.\n" + "\n".join(found)
    )


def _errors(schema: dict, instance) -> list:
    return sorted(Draft202012Validator(schema).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])


def _settings_problems(train: dict, settings, path: list) -> list[str]:
    """A network's overrides or a ladder step's changes: each setting the train section defines, checked
    against that definition (a setting it does not define is the recipe's to refuse, by name)."""
    if not isinstance(settings, dict):
        return []
    found = []
    for key, value in settings.items():
        if key in train and key != "overrides":
            found += [_line([*path, key, *error.absolute_path], error) for error in _errors(train[key], value)]
    return found


def _line(path, error, custom_networks: dict | None = None) -> str:
    where = ".".join(str(part) for part in path) or "(top level)"
    text = error.message
    if error.validator == "enum":
        text = _not_one_of(list(path), error.instance, error.validator_value, custom_networks or {})
    elif error.context:  # none of a value's accepted forms (a number, or 'auto'): say why each is not it
        reasons = dict.fromkeys(sub.message for sub in error.context)
        text = f"{_shown(error.instance)} is not accepted: " + "; ".join(reasons)
    if len(text) > 2 * SHOWN and error.validator != "enum":  # a whole section quoted back
        text = text[: 2 * SHOWN] + " …"
    if isinstance(error.instance, str) and YAML_TEXT_NUMBER.match(error.instance.strip()):
        text += f" (YAML reads {error.instance} as text, without a dot: write it as {_as_number(error.instance)})"
    return f"config {where}: {text}"


def _not_one_of(path: list, value, accepted: list, custom_networks: dict) -> str:
    """A value outside a setting's list: every accepted value (a list cut short hides the one meant), the
    closest first when the value looks like a misspelling of it; a network of the user's own listed among
    the built-in ones, said as such."""
    if path[:1] == ["networks"] and isinstance(value, str) and value in custom_networks:
        return (
            f"{value!r} is a network of your own (custom_networks): the study trains every network of "
            "custom_networks from there, and networks lists the built-in ones only; take it out of networks "
            "(docs/extending.md)"
        )
    names = [str(name) for name in accepted]
    close = _closest(value, names) if isinstance(value, str) else []
    meant = f"did you mean {' or '.join(repr(name) for name in close)}? " if close else ""
    return f"{_shown(value)} is not accepted: {meant}the accepted values are {', '.join(names)}"


def _closest(value: str, names: list[str]) -> list[str]:
    """The names most like ``value`` (difflib's similarity, at least its usual 0.6), all of them when several are
    alike ('lighter_unet_cl' is one letter from lighter_unet_c1 as from _c8: which was meant is not guessed)."""
    scores = {name: difflib.SequenceMatcher(None, value, name).ratio() for name in names}
    best = max(scores.values(), default=0.0)
    return [name for name in names if scores[name] == best] if best >= 0.6 else []


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + " …"


def _as_number(text: str) -> str:
    """The number as YAML reads it: in decimals (1e-3 -> 0.001, 1e3 -> 1000; YAML's exponent form needs a dot
    and a signed exponent, 1.0e+3)."""
    value = float(text)
    return str(int(value)) if value.is_integer() else repr(value)
