import ast
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


def imported_modules(path) -> set[str]:
    """The top-level names a Python file imports (import a.b -> a; from a.b import c -> a)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_module_imports_another():
    """Shared helpers live in conftest.py, the one module pytest loads before every test module: a test
    module that imports another ties the two files together (renaming, splitting or deselecting the
    one breaks the other) and hides a shared helper among one module's tests."""
    tests = REPO / "tests"
    modules = {path.stem for path in tests.glob("test_*.py")}
    crossing = {
        path.name: sorted(imported_modules(path) & (modules - {path.stem})) for path in sorted(tests.glob("test_*.py"))
    }
    assert not {name: imports for name, imports in crossing.items() if imports}
