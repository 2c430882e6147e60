"""sonoseg as a Python library, from a script or a notebook rather than the workflow: a network registered by
hand obeys the config's rules and says whose its name is, and docs/extending.md's Python example runs as written."""

import re
import sys
from pathlib import Path

import pytest
import yaml

from sonoseg.errors import SonosegError
from sonoseg.networks import catalog

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["properties"]


@pytest.fixture
def own_catalog(monkeypatch):
    """The catalog as a test's registrations leave it, restored after."""
    monkeypatch.setattr(catalog, "CATALOG", dict(catalog.CATALOG))


# ----------------------------------------------------------------------------- registering a network


@pytest.mark.parametrize("name", ["a/b", "1bad", "", "_mine", "tiny-unet", "tiny unet", "net\n", "ü_net"])
def test_register_refuses_a_name_the_config_would_refuse(own_catalog, name):
    """The name becomes folder and file names: the rule the schema applies to custom_networks holds for a name
    registered from Python too, and nothing is registered."""
    with pytest.raises(SonosegError, match="a name is a letter, then letters, digits or underscores"):
        catalog.register(name, "my_networks:tiny_unet")
    assert name not in catalog.CATALOG


def test_register_accepts_a_name_the_config_accepts(own_catalog):
    for name in ("tiny_unet", "T", "net2_b"):
        assert catalog.register(name, "my_networks:tiny_unet").name == name


def test_the_schemas_name_pattern_is_the_catalogs():
    """One rule: the schema (which cannot import Python) writes NETWORK_NAME's pattern, anchored, and both
    read the same names alike."""
    pattern = SCHEMA["custom_networks"]["propertyNames"]["pattern"]
    assert pattern == f"^{catalog.NETWORK_NAME.pattern}$"
    for name in ("tiny_unet", "T", "a/b", "1bad", "_x", "x-y", "net2_b", "ü"):
        assert bool(re.search(pattern, name)) == bool(catalog.NETWORK_NAME.fullmatch(name)), name


def test_registering_a_users_network_again_names_the_builder_it_has(own_catalog):
    """A name of the user's own registered again with another builder is the user's, not a built-in method's;
    the same builder again (a config read once more) is allowed and replaces its label."""
    catalog.register("mine", "my_networks:tiny_unet")
    with pytest.raises(SonosegError, match=r"'mine': already registered by you with builder 'my_networks:tiny_unet'"):
        catalog.register("mine", "my_networks:other")
    assert catalog.CATALOG["mine"].builder == "my_networks:tiny_unet"
    assert catalog.register("mine", "my_networks:tiny_unet", label="Mine").label == "Mine"


@pytest.mark.parametrize("name", ["unet", "threshold_baseline"])
def test_a_built_in_methods_name_is_refused_as_built_in(own_catalog, name):
    """With another builder or its own: a user's entry would replace sonoseg's (and a floor would become a
    network)."""
    for builder in ("my_networks:tiny_unet", catalog.CATALOG[name].builder or "my_networks:tiny_unet"):
        with pytest.raises(SonosegError, match="the name is taken by a built-in method"):
            catalog.register(name, builder)
    assert catalog.CATALOG[name].family != "user"


def test_the_python_example_of_extending_md_runs_as_written(own_catalog, monkeypatch):
    """docs/extending.md, "From Python": its code block, run with examples/my_networks.py importable."""
    text = (REPO / "docs/extending.md").read_text()
    part = text.split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", part, re.S).group(1)
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    monkeypatch.delitem(sys.modules, "my_networks", raising=False)
    exec(compile(code, "docs/extending.md", "exec"), {})
    assert catalog.CATALOG["tiny_unet"].label == "Tiny U-net (mine)"
