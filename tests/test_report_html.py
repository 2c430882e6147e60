"""The study's HTML report (snakemake --report) of the tiny study: every section with real content,
and a real headless Chromium opens it without errors, every figure loading."""

import base64
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_snakemake

from sonoseg.analysis import stats

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SECTIONS = [
    "1 Data",
    "2 Tables",
    "3 Training curves",
    "4 Figure 2 rebuilt",
    "5 Cost vs accuracy",
    "6 Per-image statistics",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_report(tiny_study) -> dict:
    """The self-contained HTML report of the tiny study (conftest's tiny_study: run once per session,
    with its report figures, and shared with the end-to-end test)."""
    report = tiny_study.out / "report.html"
    # --cores: the cost rule's threads are "every core", which Snakemake needs to know even for --report.
    made = run_snakemake(
        ["--report", str(report), "--cores", "1", "--configfile", tiny_study.config], tiny_study.workdir, timeout=300
    )
    assert made.returncode == 0, made.stderr[-4000:]
    return {"path": report, "out": tiny_study.out, "results": embedded_results(report.read_text())}


def embedded_results(page: str) -> dict:
    """Snakemake 9 writes one HTML file: every result is a data URI in the `results` script variable."""
    match = re.search(r'<script id="results">\s*var results = (.*?);\s*</script>', page, re.S)
    assert match, "no embedded results in the report"
    return json.loads(match[1])


def decoded(result: dict) -> bytes:
    header, _, payload = result["data_uri"].partition(",")
    assert header.endswith(";base64"), header
    return base64.b64decode(payload)


def test_report_holds_every_section_with_real_content(tiny_report):
    page = tiny_report["path"].read_text()
    results = tiny_report["results"]
    for section in SECTIONS:
        assert f'"{section}"' in page, f"section {section!r} missing from the report"
    names = {Path(p).relative_to("results/tiny").as_posix() for p in results}  # paths relative to the workdir
    expected = {
        "report/data/overview.html",
        "report/data/samples.png",
        "report/data/marks.png",
        "report/tables/table1.html",
        "report/tables/table2.html",
        "report/tables/ladder.html",
        "report/tables/selection.html",
        "report/tables/subgroups.html",
        "report/curves/unet.png",
        "report/curves/lighter_unet_c1.png",
        "report/figure2.png",
        "report/figure2_all.png",
        "report/curves/ladder--adam.png",
        "report/cost_accuracy.png",
        "report/cost_front.html",
        "report/statistics/distributions.png",
        "report/statistics/paired.html",
        "report/statistics/forest.png",
    }
    assert expected <= names, expected - names
    # Figures are real PNGs, small enough for a paper-scale report to stay small.
    for path, result in results.items():
        data = decoded(result)
        if path.endswith(".png"):
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and 2_000 < len(data) < 1_500_000, path
    # Each page's caption is its own: the captions' templates read the rules' wildcards (report_table, run),
    # where a misnamed one gave every table the recipe selection's caption and every curve no network.
    caption = {Path(p).relative_to("results/tiny").as_posix(): str(r.get("caption", "")) for p, r in results.items()}
    assert "Table 1 of the paper rebuilt" in caption["report/tables/table1.html"]
    assert "tuning ladder" in caption["report/tables/ladder.html"]
    assert "Weight decay chosen per network" in caption["report/tables/selection.html"]
    assert "Dice by subgroup" in caption["report/tables/subgroups.html"]
    assert "Training of unet:" in caption["report/curves/unet.png"]
    # Dice by subgroup: the phantom's lesion types, each network's cells.
    html_subgroups = decoded(results["results/tiny/report/tables/subgroups.html"]).decode()
    subgroup_rows = pd.read_csv(tiny_report["out"] / "tables" / "subgroups.csv")
    assert set(subgroup_rows["subgroup"]) == {"meta_lesion_type"} and set(subgroup_rows["network"]) == {
        "unet",
        "lighter_unet_c1",
    }
    assert all(f"{d:.3f}" in html_subgroups for d in subgroup_rows["dice"])
    # The tables hold our numbers and the paper's.
    table1 = pd.read_csv(tiny_report["out"] / "tables" / "table1.csv")
    html_table1 = decoded(results["results/tiny/report/tables/table1.html"]).decode()
    # One seed: the cell says n = 1, never a spread of ± 0.000; the CI by patient stands beside it (or, as
    # here, where the test images are one patient's, says there is none).
    assert f"{table1.loc[0, 'dice_mean']:.3f} (n = 1)" in html_table1 and "0.929 ± 0.002" in html_table1
    assert stats.ci_text(table1.loc[0, "dice_ci_low"], table1.loc[0, "dice_ci_high"]) in html_table1
    ladder = pd.read_csv(tiny_report["out"] / "tables" / "ladder.csv")
    html_ladder = decoded(results["results/tiny/report/tables/ladder.html"]).decode()
    assert all(f"{d:.3f} (n = 1)" in html_ladder for d in ladder["dice_mean"]) and "0.855" in html_ladder
    overview = decoded(results["results/tiny/report/data/overview.html"]).decode()
    split = pd.read_csv(tiny_report["out"] / "data" / "split.csv")
    assert f"<td>included</td><td>{len(split)}</td>" in overview
    paired = decoded(results["results/tiny/report/statistics/paired.html"]).decode()
    comparison = pd.read_csv(tiny_report["out"] / "report" / "statistics" / "paired.csv")
    against_unet = comparison[comparison["family"] == "every method vs unet"]
    others = ["lighter_unet_c1", "threshold_baseline", "caliper_reader", "position_prior", "dark_in_prior"]
    assert against_unet["method"].tolist() == others and (against_unet["reference"] == "unet").all()
    assert f"{against_unet['mean_difference'].iloc[0]:+.4f}" in paired and "sign-flip" in paired and "Holm" in paired
    # Every network against every floor: a family of its own, Holm-corrected, with a verdict per network.
    floors = comparison[comparison["family"] == "every network vs every floor"]
    assert len(floors) == 2 * 3 and "Beats every floor: unet: " in paired
    assert set(floors["reference"]) == {"threshold_baseline", "position_prior", "dark_in_prior"}
    # The caliper reader reads marks drawn from the annotation: a reference, a family apart, no verdict.
    references = comparison[comparison["family"] == "every network vs each reference"]
    assert references["reference"].tolist() == ["caliper_reader", "caliper_reader"]
    assert "Against each reference" in paired
    # The front by patient: U-net (more parameters) against Lighter U-net @1, on the front or not.
    front = pd.read_csv(tiny_report["out"] / "report" / "cost_front.csv")
    assert front[["method", "reference"]].values.tolist() == [["unet", "lighter_unet_c1"]]
    front_page = decoded(results["results/tiny/report/cost_front.html"]).decode()
    assert f"{front['mean_difference'].iloc[0]:+.4f}" in front_page and "Holm" in front_page
    # The workflow description carries the study's settings, and the data its results were made from.
    description = json.loads(re.search(r'var workflow_desc = (".*?");\n', page)[1])
    assert "Study <strong>tiny</strong>" in description and "images resized to 32" in description
    assert "Results made from the dataset with fingerprint" in description


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("no headless Chromium: install Debian's chromium and chromium-driver (.ci/run does)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is in the test extra: pip install -e '.[test]'"
    )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def test_chromium_opens_the_report_without_errors_and_every_figure_loads(tiny_report, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(tiny_report["path"].as_uri())
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script(
            "return document.querySelector('#app') && document.querySelector('#app').children.length > 0"
        )
    )
    assert browser.execute_script("return Object.keys(results).length") == len(tiny_report["results"])
    categories = browser.execute_script("return Object.keys(categories)")
    assert set(SECTIONS) <= set(categories), categories

    # Every figure decodes in the browser: an <img> per PNG result, natural width > 0.
    widths = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const pngs = Object.entries(results).filter(([p, r]) => r.mime_type === "image/png");
        Promise.all(pngs.map(([p, r]) => new Promise(resolve => {
            const img = document.createElement("img");
            img.onload = () => resolve([p, img.naturalWidth]);
            img.onerror = () => resolve([p, 0]);
            img.src = r.data_uri;
            document.body.appendChild(img);
        }))).then(done);
    """)
    pngs = [p for p in tiny_report["results"] if p.endswith(".png")]
    assert len(pngs) >= 7 and sorted(p for p, _ in widths) == sorted(pngs)
    assert all(width > 0 for _, width in widths), widths

    # Through the report's own interface: open the Figure-2 section and show its figure.
    browser.find_element(By.XPATH, "//*[normalize-space(text())='4 Figure 2 rebuilt']").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.XPATH, "//table//a"))
    browser.find_elements(By.XPATH, "//table//a")[0].click()
    shown = WebDriverWait(browser, 20).until(
        lambda d: d.execute_script(
            "const img = [...document.images].find(i => i.src.startsWith('data:image/png') && i.complete "
            "&& i.naturalWidth > 0 && i.offsetParent !== null); return img ? img.naturalWidth : 0"
        )
    )
    assert shown > 100

    # The table pages render in the browser with our numbers.
    table1 = pd.read_csv(tiny_report["out"] / "tables" / "table1.csv")
    path = "results/tiny/report/tables/table1.html"
    text = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(results[arguments[0]].data_uri).then(r => r.text()).then(html => {
            const doc = new DOMParser().parseFromString(html, "text/html");
            done(doc.querySelector("table").innerText);
        });
    """,
        path,
    )
    assert f"{table1.loc[0, 'dice_mean']:.3f} (n = 1)" in text

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
