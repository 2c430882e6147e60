import ast
import os
import re
import shutil
import subprocess
import sys

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


SKIP_EVERY_TEST = """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    pytest.skip("only the worker each test lands on matters here")
"""
TINY_STUDY_TESTS = (
    "test_report_html.py::test_report_holds_every_section_with_real_content",
    "test_report_html.py::test_chromium_opens_the_report_without_errors_and_every_figure_loads",
    "test_workflow.py::test_tiny_study_end_to_end_then_nothing_to_do",
)


def test_tests_sharing_the_tiny_study_run_on_one_xdist_worker(tmp_path):
    # make test's --dist loadgroup: conftest's groups must reach xdist, or each worker makes the tiny
    # study (pytest 9.2 with pytest-xdist 3.8 silently did not; pyproject.toml pins pytest below it).
    (tmp_path / "skip_every_test.py").write_text(SKIP_EVERY_TEST)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["-m", "pytest", "-v", "-n", "2", "--dist", "loadgroup", "-p", "skip_every_test", "-p", "no:cacheprovider"]
    files = ["tests/test_report_html.py", "tests/test_workflow.py"]
    command = [sys.executable, *args, *files]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    placed = re.findall(r"\[(gw\d+)\] \[ *\d+%\] SKIPPED tests/(\S+)", run.stdout)
    tiny = {worker for worker, test in placed if test.startswith(TINY_STUDY_TESTS)}
    collected = int(re.search(r"workers \[(\d+) items\]", run.stdout)[1])  # every test of the two files
    assert len(placed) == collected >= 8 and len({worker for worker, _ in placed}) == 2, run.stdout[-2000:]
    assert len(tiny) == 1 and sum(test.startswith(TINY_STUDY_TESTS) for _, test in placed) == 3, placed


def test_make_reads_the_study_name_past_a_comment_or_quotes(tmp_path):
    """`make report` builds results/<study>/: the config's `study` line may carry a comment or quotes."""
    for line, study in (("study: mine  # my study", "mine"), ('study: "q2"', "q2"), ("study: plain", "plain")):
        config = tmp_path / f"{study}.yaml"
        config.write_text(line + "\n")
        planned = subprocess.run(
            ["make", "-n", "report", f"CONFIG={config}", "BIN=.venv/bin"], cwd=REPO, capture_output=True, text=True
        )
        assert planned.returncode == 0, planned.stderr
        cores = min(len(os.sched_getaffinity(0)), 8)  # make's default: the cores it may run on, at most 8
        assert f"--report results/{study}/report.html --cores {cores} --configfile {config}" in planned.stdout
    # Several files layered, as Snakemake layers them: the last file that names a study wins (a user's file over
    # config/quick.yaml wrote its report over the quick study's); one that names none keeps the earlier one's.
    unnamed = tmp_path / "unnamed.yaml"
    unnamed.write_text("seeds: [0]\n")
    for files, study in (
        ("config/quick.yaml " + str(tmp_path / "mine.yaml"), "mine"),
        (str(tmp_path / "mine.yaml") + " config/quick.yaml", "quick"),
        ("config/quick.yaml " + str(unnamed), "quick"),
        (str(unnamed), "paper"),  # config/config.yaml's, which Snakemake reads first
    ):
        planned = subprocess.run(
            ["make", "-n", "report", f"CONFIG={files}", "BIN=.venv/bin"], cwd=REPO, capture_output=True, text=True
        )
        assert planned.returncode == 0, planned.stderr
        assert f"--report results/{study}/report.html " in planned.stdout, (files, planned.stdout)


def test_make_refuses_a_checkout_whose_path_holds_a_colon(tmp_path):
    """A probe's checkout under `scans:2024 (copie)` failed as "make: snakemake: No such file or directory":
    PATH, which the Makefile puts the venv's bin on, separates its folders by ':'. Refused, naming why."""
    checkout = tmp_path / "scans:2024 (copie)"
    checkout.mkdir()
    shutil.copy(REPO / "Makefile", checkout)
    planned = subprocess.run(["make", "-n", "study"], cwd=checkout, capture_output=True, text=True)
    assert planned.returncode != 0
    assert f"{checkout}: the checkout's path holds a ':', which PATH cannot hold" in planned.stderr
