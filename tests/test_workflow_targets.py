"""What a target asks for, and what redoes it: `snakemake ladder` in a study without the ladder stops,
naming the setting; new analysis code (an upgrade of sonoseg, an edit) redoes the tables and the report's
pages, never a training or a prediction (workflow/rules/common.smk, ANALYSIS_CODE)."""

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from conftest import TINY, jobs_of, run_snakemake, write_config

import sonoseg
from sonoseg import analysis

# The rules that run the analysis code on results already made, and take its files as input.
CODE_RULES = {
    "summarize",
    "collect",
    "table",
    "paired_table",
    "generalization",
    "subgroups",
    "equivalence",
    "selection_table",
    "convergence_check",
    "report_data",
    "report_table",
    "report_generalization",
    "report_curves",
    "report_figure2",
    "report_cost",
    "report_statistics",
}
LADDER_OFF = "the ladder is off in this study (config ladder.enabled: false): set it true to run `snakemake ladder`"


def planned_inputs(dry_run_output: str) -> list[tuple[str, list[str]]]:
    """Each job of a dry run: (its rule, its input files)."""
    jobs = []
    for line in dry_run_output.splitlines():
        if started := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append((started[1], []))
        elif (listed := re.match(r"^\s+input: (.*)$", line)) and jobs:
            jobs[-1][1].extend(listed[1].split(", "))
    return jobs


def test_the_ladder_asked_for_in_a_study_without_it_stops_naming_the_setting(workflow_copy):
    config = write_config(workflow_copy, {**TINY, "ladder": {**TINY["ladder"], "enabled": False}}, "no_ladder.yaml")
    for target in ("ladder", "results/tiny/tables/ladder.md"):
        dry = run_snakemake([target, "-n", "--cores", "1", "--configfile", config], workflow_copy)
        assert dry.returncode != 0, dry.stdout[-2000:]
        assert LADDER_OFF in dry.stdout + dry.stderr, dry.stderr[-3000:]  # on screen, naming the setting
    # The study itself goes on without it: no ladder step, no ladder table.
    dry = run_snakemake(["all", "-n", "--cores", "1", "--configfile", config], workflow_copy)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "ladder--" not in dry.stdout and "tables/ladder" not in dry.stdout and jobs_of(dry.stdout)["table"] == 2


def test_the_analysis_code_is_the_imported_package_s_modules():
    files = analysis.code_files()
    package = Path(sonoseg.__file__).resolve().parent
    assert {str(package / "analysis" / "stats.py"), str(package / "training" / "selection.py")} <= set(files)
    assert all(Path(f).is_file() and f.endswith(".py") for f in files) and files == sorted(files)


def test_the_tables_and_pages_take_the_analysis_code_and_nothing_upstream_does(workflow_copy):
    # Every rule of CODE_RULES in one plan: paired tables (flip averaging), an equivalence claim, the
    # convergence check, the selection table (TINY's auto weight decay), the external sets' generalization.
    every = {
        **TINY,
        "predict": {"tta": True},
        "claims": {"equivalence": [["lighter_unet_c1", "unet"]]},
        "convergence": {"networks": ["unet"]},
    }
    config = write_config(workflow_copy, every, "every_table.yaml")
    dry = run_snakemake(["all", "convergence_check", "-n", "--cores", "1", "--configfile", config], workflow_copy)
    assert dry.returncode == 0, dry.stderr[-3000:]
    code = analysis.code_files()
    taking = {rule for rule, inputs in planned_inputs(dry.stdout) if set(code) <= set(inputs)}
    touching = {rule for rule, inputs in planned_inputs(dry.stdout) if set(code) & set(inputs)}
    assert taking == touching == CODE_RULES, (taking, touching)
    assert {"train", "predict", "cost"} <= set(jobs_of(dry.stdout))  # planned, without it


@pytest.mark.slow
def test_new_analysis_code_redoes_the_tables_and_pages_not_the_trainings(tiny_study, tmp_path, monkeypatch):
    # A copy of the finished tiny study, whose plan imports the package from a copy of its source made
    # older than every result: the test edits that copy, never the repository's src/ (where the venv's
    # editable install finds the package otherwise).
    workdir = tmp_path / "study"
    shutil.copytree(tiny_study.workdir, workdir, symlinks=True)
    package = tmp_path / "src" / "sonoseg"
    shutil.copytree(Path(sonoseg.__file__).resolve().parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    long_ago = time.time() - 365 * 86400
    for path in package.rglob("*"):
        os.utime(path, (long_ago, long_ago))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(package.parent), os.environ.get("PYTHONPATH")])))

    def plan(*args):
        dry = run_snakemake(["all", "-n", "--cores", "1", "--configfile", tiny_study.config, *args], workdir)
        assert dry.returncode == 0, dry.stderr[-3000:]
        return dry

    # The package found elsewhere (an upgrade into another environment): its files are the analysis
    # code now, a new set of inputs of the tables and pages only.
    dry = plan()
    assert str(package / "analysis" / "stats.py") in dry.stdout
    assert "table" in jobs_of(dry.stdout) and set(jobs_of(dry.stdout)) <= CODE_RULES | {"all"}, jobs_of(dry.stdout)
    # By the files' times alone, the study is up to date ...
    dry = plan("--rerun-triggers", "mtime")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]
    # ... until one analysis module is edited (touched): the summaries, the long tables, the tables and
    # every page are redone, no training, prediction or cost measurement.
    (package / "analysis" / "stats.py").touch()
    jobs = jobs_of(plan("--rerun-triggers", "mtime").stdout)
    assert set(jobs) <= CODE_RULES | {"all"}, jobs
    assert {"table", "selection_table", "generalization", "report_table", "report_statistics", "report_curves"} <= set(
        jobs
    ), jobs


def test_the_analysis_code_is_named_relative_to_a_working_directory_that_holds_it(tmp_path):
    # A checkout moved with its results and its package (a venv made again in it) names the same inputs, so
    # nothing reruns; a package installed outside the working directory keeps its absolute paths.
    absolute = analysis.code_files()
    source_root = Path(sonoseg.__file__).resolve().parents[1]  # the folder that holds the package
    relative = analysis.code_files(relative_to=source_root)
    assert all(not Path(name).is_absolute() and name.startswith("sonoseg/") for name in relative)
    assert sorted(str(source_root / name) for name in relative) == absolute
    assert analysis.code_files(relative_to=tmp_path) == absolute
    # The workflow asks for them so (its test copies hold no package, so no run of theirs can show it).
    common = (Path(__file__).parents[1] / "workflow" / "rules" / "common.smk").read_text()
    assert "ANALYSIS_CODE = analysis.code_files(relative_to=os.getcwd())" in common


def test_outputs_an_earlier_config_made_are_named_after_a_run_and_kept(tiny_study, tmp_path):
    """A run of the config that made the study names nothing; after a ladder step leaves the config, its run
    folder, summary and curves are named (not read as this config's, nor deleted), as a table no run fills,
    at planning: in a dry run and in a run with nothing to do too."""
    workdir = tmp_path / "study"
    shutil.copytree(tiny_study.workdir, workdir, symlinks=True)
    note = re.compile(r"results/tiny: (\d+) output\(s\) an earlier config made that this one does not \(kept.*: (.*)")
    same = run_snakemake(["all", "--cores", "1", "--configfile", tiny_study.config], workdir)
    assert same.returncode == 0, same.stderr[-3000:]
    assert "Nothing to be done" in same.stdout + same.stderr and not note.search(same.stderr), same.stderr[-3000:]
    out = workdir / "results" / "tiny"
    (out / "tables" / "tta.csv").write_text("network,delta\n")  # as predict.tta: true left it
    fewer = {**TINY, "ladder": {**TINY["ladder"], "steps": TINY["ladder"]["steps"][:1]}}
    run = run_snakemake(["all", "--cores", "1", "--configfile", write_config(workdir, fewer, "fewer.yaml")], workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    found = note.search(run.stderr)
    assert found, run.stderr[-3000:]
    left = ["runs/ladder--adam/", "networks/ladder--adam.csv", "report/curves/ladder--adam.png", "tables/tta.csv"]
    assert found[2].split(", ") == left and found[1] == str(len(left))  # by place: runs first
    assert all((out / name).exists() for name in left)
    assert (out / "logs" / "left_by_other_configs.txt").read_text().split() == left  # every one, after a run
    # Said at planning: a dry run, and a run with nothing to do (which no onsuccess hook reaches), say it too.
    for extra in (["-n"], []):
        again = run_snakemake(["all", "--cores", "1", "--configfile", "config/fewer.yaml", *extra], workdir)
        assert again.returncode == 0 and note.search(again.stderr)[2].split(", ") == left, again.stderr[-3000:]


def test_a_fold_a_seed_and_an_external_set_an_earlier_config_made_are_named_too(tmp_path):
    """Within a run still in the config, a seed or a fold it no longer has (seeds [0, 1] -> [0], split.folds 2 -> 1),
    and an external set's folder after the set was renamed or removed; not the files beside them."""
    from types import SimpleNamespace

    from sonoseg.study import layout

    out = tmp_path / "results" / "study"
    for folder in (
        "runs/unet/fold0/seed0",
        "runs/unet/fold0/seed1",  # seed 1 taken out
        "runs/unet/fold0/seed0.finished",  # a finished training kept to adopt: not a seed's folder
        "runs/unet/fold1/seed0",  # fold 1 taken out
        "runs/unet--on-gone/fold0/seed0",
        "external/kept/cache",
        "external/gone/cache",
    ):
        (out / folder).mkdir(parents=True)
    (out / "runs/unet/fold0/postprocess.json").write_text("{}")
    runs = {"unet": SimpleNamespace(folds=("0",), seeds=("0",))}
    left = layout.left_by_other_configs(out, runs, [], externals=["kept"])
    assert left == ["runs/unet/fold0/seed1/", "runs/unet/fold1/", "runs/unet--on-gone/", "external/gone/"]
    every = SimpleNamespace(folds=("0", "1"), seeds=("0", "1"))
    runs = {"unet": every, "unet--on-gone": every}
    assert layout.left_by_other_configs(out, runs, [], externals=["kept", "gone"]) == []
