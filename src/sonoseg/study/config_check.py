"""The study config checked against its schema (workflow/schemas/config.schema.yaml) before anything is
planned, with one short line per problem naming the key; and each dataset it declares read as its ingest
job will read it (dataset_problems), so that a wrong layout stops the planning, not a job.

Snakemake's own validation stops at the first problem and prints the whole schema and config with it
(some 2,000 lines for a misspelt key). Two parts of the config are open objects there and so were never
checked: a network's ``train.overrides`` and a ladder step's ``changes``. Each of their settings is
checked here against the train section's own definition of that setting, so that ``learning_rate: 1e-3``
(text to YAML: no dot) or a negative learning rate stops the start rather than a training job hours in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

from sonoseg.errors import SonosegError

SHOWN = 80  # characters of a bad value shown in a message
# A number in exponent form without a dot, which YAML 1.1 (PyYAML) reads as text.
YAML_TEXT_NUMBER = re.compile(r"^[+-]?\d+[eE][+-]?\d+$")


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def problems(config: dict, schema: dict) -> list[str]:
    """Every problem of the config, as 'config <key path>: <what is wrong>' (empty when none)."""
    found = [_line(error.absolute_path, error) for error in _errors(schema, config)]
    train = schema["properties"]["train"]["properties"]
    for network, settings in ((config.get("train") or {}).get("overrides") or {}).items():
        found += _settings_problems(train, settings, ["train", "overrides", network])
    for number, step in enumerate((config.get("ladder") or {}).get("steps") or []):
        if isinstance(step, dict):
            found += _settings_problems(train, step.get("changes"), ["ladder", "steps", number, "changes"])
    return found


def message(found: list[str]) -> str:
    return f"{len(found)} problem(s) in the config (workflow/schemas/config.schema.yaml):\n" + "\n".join(
        f"  {line}" for line in found
    )


def dataset_problems(
    datasets: dict[str, dict], listed: dict[str, Iterable[Path]] | None = None, warn: Iterable[str] | None = None
) -> list[str]:
    """Each dataset the study ingests, read as its ingest job will read it, before any job runs: the same
    code (sonoseg.data.manifest.check_layout, which is ingest's up to the pixels), so that a dataset declared
    with the wrong layout, a folder without images, masks missing or a CSV without its column stops the
    planning, not the ingest job after the queue. ``datasets``: the config key declaring each ('dataset',
    "external_datasets 'udiat'") -> the options its job gets (``sonoseg ingest --options``, read through
    sonoseg.data.options.ingest_parameters); ``listed``: the key -> the files under its root, already listed
    (sonoseg.data.provenance.record_paths); ``warn``: the keys whose layout warnings (a CSV row naming no
    image, an unknown BUSI class folder) are shown, all when None: the workflow shows them when it first
    sees a dataset or its files change, not at every planning (the ingest log keeps them). One problem per
    dataset, 'config KEY (layout L, root R): what the ingest would say' (empty when none)."""
    from sonoseg.data.manifest import LAYOUT_SETTINGS, check_layout
    from sonoseg.data.options import ingest_parameters

    found = []
    for key, options in datasets.items():
        settings = {k: v for k, v in ingest_parameters(options).items() if k in LAYOUT_SETTINGS}
        try:
            with _warnings_shown(warn is None or key in warn):
                check_layout(options["root"], options["layout"], **settings, listed=(listed or {}).get(key))
        except SonosegError as exc:
            found.append(f"config {key} (layout {options['layout']}, root {options['root']}): {exc}")
    return found


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


def _line(path, error) -> str:
    where = ".".join(str(part) for part in path) or "(top level)"
    text = error.message
    if error.context:  # none of a value's accepted forms (a number, or 'auto'): say why each is not it
        reasons = dict.fromkeys(sub.message for sub in error.context)
        text = f"{_shown(error.instance)} is not accepted: " + "; ".join(reasons)
    if len(text) > 2 * SHOWN:  # a whole section quoted back
        text = text[: 2 * SHOWN] + " …"
    if isinstance(error.instance, str) and YAML_TEXT_NUMBER.match(error.instance.strip()):
        text += f" (YAML reads {error.instance} as text, without a dot: write it as {_as_number(error.instance)})"
    return f"config {where}: {text}"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + " …"


def _as_number(text: str) -> str:
    """The number as YAML reads it: in decimals (1e-3 -> 0.001, 1e3 -> 1000; YAML's exponent form needs a dot
    and a signed exponent, 1.0e+3)."""
    value = float(text)
    return str(int(value)) if value.is_integer() else repr(value)
