import re

import tomllib
import yaml
from conftest import REPO


def names(requirements):
    return {re.split(r"[<>=!\[ ]", r, maxsplit=1)[0].lower() for r in requirements if not r.startswith("-e")}


def test_conda_env_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs" / "sonoseg.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert names(pip_section) == names(project["dependencies"])
    pins = {r for r in project["dependencies"] if "==" in r}
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= pins
    assert pins <= set(pip_section)


def test_every_rule_file_is_included():
    snakefile = (REPO / "Snakefile").read_text()
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        assert f'include: "workflow/rules/{rules.name}"' in snakefile
