"""Claims as data (issue 27): the config names the study's "as good as" claims and their margin before
the primary run; tables/equivalence.{csv,md} answers them."""

import numpy as np
import pytest
from conftest import TINY, collect, run_snakemake, sheet_row, write_config, write_patient_manifest, write_run_metrics

from sonoseg.analysis import comparisons


def write_runs(tmp_path, shifts: dict[str, float]):
    rng = np.random.default_rng(1)
    samples = [f"p{p}v{v}" for p in range(40) for v in (1, 2)]
    base = rng.uniform(0.6, 0.9, len(samples))
    for run, shift in shifts.items():
        for seed in (0, 1, 2):
            write_run_metrics(tmp_path, run, 0, seed, samples, base + shift + rng.normal(0, 0.01, len(samples)))
    manifest = write_patient_manifest(tmp_path / "manifest.csv", samples, [s[:-2] for s in samples])
    return collect(tmp_path, [sheet_row(run, seeds=(0, 1, 2)) for run in shifts], manifest)


def test_equivalence_claims_are_answered_with_their_margin_and_holm(tmp_path):
    per_image = write_runs(tmp_path, {"unet": 0.0, "lighter_unet_c128": 0.004, "lighter_unet_c1": -0.06})
    pairs = [("lighter_unet_c128", "unet"), ("lighter_unet_c1", "unet")]
    table = comparisons.equivalence_table(per_image, pairs, margin=0.02)  # unet named twice: its rows once
    rows = table.set_index("method")
    assert bool(rows.loc["lighter_unet_c128", "equivalent"]) and not bool(rows.loc["lighter_unet_c1", "equivalent"])
    assert rows.loc["lighter_unet_c128", "runs_candidate"] == 3  # three trainings, resampled as runs
    assert (table["tost_p_holm"] >= table["tost_p"]).all() and (table["margin"] == 0.02).all()
    comparisons.write_equivalence(table, tmp_path / "equivalence.csv", 0.02)
    page = (tmp_path / "equivalence.md").read_text()
    assert "margin ±0.02 Dice" in page
    assert "Lighter U-net @128 as good as U-net within ±0.02: holds" in page
    assert "Lighter U-net @1 as good as U-net within ±0.02: is not shown" in page


def test_claims_are_config_and_name_the_studys_methods(workflow_copy):
    claims = {"margin": 0.03, "equivalence": [["lighter_unet_c1", "unet"]]}
    dry = run_snakemake(
        ["all", "-n", "-p", "--cores", "1", "--configfile", write_config(workflow_copy, {**TINY, "claims": claims})],
        workflow_copy,
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "sonoseg equivalence" in dry.stdout and "--pairs lighter_unet_c1:unet" in dry.stdout
    assert "--margin 0.03" in dry.stdout
    wrong = {**TINY, "claims": {"equivalence": [["lighter_unet_c128", "unet"]]}}
    failed = run_snakemake(
        ["all", "-n", "--cores", "1", "--configfile", write_config(workflow_copy, wrong)], workflow_copy
    )
    assert failed.returncode != 0
    assert "claims.equivalence: ['lighter_unet_c128']" in failed.stdout + failed.stderr


@pytest.mark.parametrize("margin", [0.0, -0.01])
def test_a_margin_must_be_positive(margin):
    from sonoseg.analysis import stats

    with pytest.raises(Exception, match="margin must be positive"):
        stats.tost_paired([0.1, 0.2, 0.15], margin)


@pytest.mark.parametrize("study", ["fair", "quick_ensemble"])
def test_every_number_a_committed_study_quotes_is_in_its_committed_tables(study):
    """Claims as data: each number (three or more decimals) docs/results/<study>/README.md quotes is a
    value of one of the committed tables in its folder (subfolders included), at the precision quoted;
    a number typed by hand, or left behind by a rerun, fails."""
    import re
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "docs" / "results" / study
    number = re.compile(r"(?<![\w.])[-−+]?\d+\.\d+(?:e[-+]?\d+)?")
    values = [
        float(text.replace("−", "-"))
        for table in folder.rglob("*")
        if table.suffix in (".md", ".csv") and table.name != "README.md"
        for text in number.findall(table.read_text())
    ]
    quoted = {text for text in number.findall((folder / "README.md").read_text()) if len(text.split(".")[1]) >= 3}
    assert len(quoted) > 20  # the page quotes its tables: the check reads them
    unsupported = [
        text
        for text in sorted(quoted)
        if not any(
            round(value, len(text.split(".")[1])) == abs(float(text.replace("−", "-"))) for value in map(abs, values)
        )
    ]
    assert unsupported == [], f"numbers quoted in {folder / 'README.md'} but in none of its tables: {unsupported}"
