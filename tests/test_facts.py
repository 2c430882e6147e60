"""One place per fact (issue 25): where a fact must be written twice (the config schema cannot import
Python), a test ties the copies to the one source."""

from dataclasses import fields
from pathlib import Path

import yaml

from sonoseg.analysis import pages, tables
from sonoseg.networks import baseline, catalog
from sonoseg.serving.options import PRECISIONS
from sonoseg.training.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["properties"]
CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_recipe_defaults_are_the_dataclass_the_schema_and_the_config_alike():
    """Every training setting's default: the Recipe dataclass's is the schema's, and config/config.yaml
    (the paper-scale study) either leaves it out or gives the same value, except the settings chosen
    per network (auto)."""
    schema = SCHEMA["train"]["properties"]
    compared = 0
    for field in fields(Recipe):
        if field.name not in schema or "default" not in schema[field.name]:
            continue
        # "auto": the config's default is to choose the value per network (the dataclass holds a number).
        assert schema[field.name]["default"] in (field.default, "auto"), field.name
        given = CONFIG["train"].get(field.name, field.default)
        assert given in (field.default, "auto"), f"config/config.yaml train.{field.name}: {given} != {field.default}"
        compared += 1
    assert compared >= 10  # the comparison really reads the schema
    assert tuple(schema["precision"]["enum"]) == PRECISIONS


def test_table_kinds_are_the_catalogs():
    """The study's tables of networks: the catalog names them; the schema, the captions and the report's
    page titles follow."""
    assert SCHEMA["custom_networks"]["additionalProperties"]["properties"]["table"]["enum"] == list(
        catalog.NETWORK_TABLES
    )
    assert set(tables.CAPTIONS) == set(catalog.NETWORK_TABLES)
    assert set(pages.TABLE_TITLES) == set(catalog.REPORT_TABLES)
    assert {entry.table for entry in catalog.CATALOG.values() if entry.is_network} <= set(catalog.NETWORK_TABLES)


def test_methods_without_training_are_the_catalogs():
    """The floors and references: the catalog lists them, the baseline module implements each, the schema
    and config/config.yaml name the same."""
    untrained = catalog.untrained()
    assert SCHEMA["baselines"]["items"]["enum"] == untrained == SCHEMA["baselines"]["default"]
    assert CONFIG["baselines"] == untrained
    assert set(baseline.BASELINES) == set(untrained)
