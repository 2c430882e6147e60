"""The study config checked against its schema (workflow/schemas/config.schema.yaml) before anything is
planned, with one short line per problem naming the key.

Snakemake's own validation stops at the first problem and prints the whole schema and config with it
(some 2,000 lines for a misspelt key). Two parts of the config are open objects there and so were never
checked: a network's ``train.overrides`` and a ladder step's ``changes``. Each of their settings is
checked here against the train section's own definition of that setting, so that ``learning_rate: 1e-3``
(text to YAML: no dot) or a negative learning rate stops the start rather than a training job hours in.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

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
