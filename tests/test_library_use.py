"""sonoseg as a Python library, from a script or a notebook rather than the workflow: a network registered by
hand obeys the config's rules and says whose its name is, docs/extending.md's Python example runs as written, and
the statistics refuse the study's collected table as read rather than pool its datasets and runs into one mean."""

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sonoseg.analysis import results, stats
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


# ----------------------------------------------------------------------------- the statistics' input


def collected(tmp_path: Path, trainings=("fold0/seed0",)) -> pd.DataFrame:
    """A study's per_image.csv.gz as read_per_image reads it: U-net's run, its flip-averaged twin, its test on an
    external set (the same trainings, another dataset's images) and the threshold floor."""
    runs = [  # run, kind, method, dataset, Dice
        ("unet", "network", "unet", results.IN_DOMAIN, 0.9),
        ("unet--tta", "tta", "unet", results.IN_DOMAIN, 0.7),
        ("unet--on-ext", "external", "unet", "ext", 0.1),
        ("threshold_baseline", "floor", "threshold_baseline", results.IN_DOMAIN, 0.4),
    ]
    rows = []
    for run, kind, method, dataset, dice in runs:
        for training in trainings if kind != "floor" else ("none",):
            fold, seed = training.split("/") if "/" in training else ("fold0", "seed0")
            for patient in range(4):
                for view in "ab":
                    sample = f"{'e' if dataset == 'ext' else 'p'}{patient}{view}"
                    rows.append(
                        {
                            "run": run,
                            "kind": kind,
                            "method": method,
                            "dataset": dataset,
                            "fold": fold[-1],
                            "seed": seed[-1],
                            "training": training,
                            "sample_id": sample,
                            "patient": sample[:2],
                            "truth_empty": False,
                            "dice": dice + 0.01 * patient,
                        }
                    )
    path = tmp_path / "per_image.csv.gz"
    pd.DataFrame(rows).to_csv(path, index=False)
    return results.read_per_image(path)


ENTRY_POINTS = {
    "method_ci": lambda table: stats.method_ci(table, "unet", resamples=20),
    "method_replicates": lambda table: stats.method_replicates(table, "unet", resamples=20),
    "method_table": lambda table: stats.method_table(table, methods=["unet"], resamples=20),
    "group_table": lambda table: stats.group_table(table, "kind", methods=["unet"], resamples=20),
    "hierarchical_comparison": lambda table: stats.hierarchical_comparison(
        table, "unet", "threshold_baseline", resamples=20, permutations=10
    ),
    "compare_methods": lambda table: stats.compare_methods(table, "threshold_baseline", "f", resamples=20),
    "equivalence": lambda table: stats.equivalence(table, "unet", "threshold_baseline", 0.1, resamples=20),
    "long_table": lambda table: stats.long_table(table),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_collected_table_as_read_is_refused_not_pooled(tmp_path, entry):
    """method_ci(read_per_image(...), "unet") once gave the mean of the in-domain test, its flip-averaged twin and
    the external set's images together. Every entry point refuses it, saying what it found and how to select."""
    with pytest.raises(SonosegError) as refused:
        ENTRY_POINTS[entry](collected(tmp_path))
    message = str(refused.value)
    assert "method 'unet' has rows of 2 datasets (ext, in-domain)" in message
    assert (
        "method 'unet' has several runs under one training label, fold/seed ('unet', 'unet--tta', 'unet--on-ext')"
        in message
    )
    assert "docs/statistics.md" in message and "patient_table" in message


def test_one_networks_datasets_pooled_under_its_trainings_are_refused(tmp_path):
    """Runs named by training (one run per training), but the in-domain and external images together."""
    per_image = collected(tmp_path, ("fold0/seed0", "fold0/seed1"))
    tested = per_image[per_image["kind"].isin(["network", "external"])]
    with pytest.raises(SonosegError, match=r"method 'unet' has rows of 2 datasets \(ext, in-domain\)") as refused:
        stats.method_ci(tested.assign(run=tested["training"]), "unet", resamples=20)
    assert "several runs" not in str(refused.value)


def test_the_recipe_of_statistics_md_and_the_studys_selection_are_accepted(tmp_path):
    """What docs/statistics.md says to do, and what the study's tables do (patient_table), give the in-domain
    run's own mean; a method whose rows are one selection is accepted beside one whose rows are not."""
    per_image = collected(tmp_path, ("fold0/seed0", "fold0/seed1"))
    in_domain = per_image[(per_image["dataset"] == "in-domain") & ~per_image["truth_empty"]]
    renamed = in_domain.drop(columns="method").rename(columns={"run": "method", "training": "run"})
    expected = 0.9 + 0.01 * 1.5
    assert stats.method_ci(renamed, "unet", resamples=20)["mean"] == pytest.approx(expected)
    chosen = results.patient_table(per_image, ["unet", "threshold_baseline"])
    assert stats.method_ci(chosen, "unet", resamples=20)["mean"] == pytest.approx(expected)
    assert stats.hierarchical_comparison(chosen, "unet", "threshold_baseline", resamples=20)["patients"] == 4
    (tmp_path / "once").mkdir()
    trained_once = collected(tmp_path / "once")  # one training: no image of a method and run repeated
    assert stats.method_ci(trained_once, "threshold_baseline", resamples=20)["mean"] == pytest.approx(0.4 + 0.015)
