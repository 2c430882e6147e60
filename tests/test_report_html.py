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
from conftest import REPO, run_snakemake

from sonoseg.analysis import report_labels, stats
from sonoseg.networks import catalog

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
    # --cores: the cost rule's threads are "every core", which Snakemake needs to know even for --report. The
    # stylesheet the workflow's profiles give every report (the tests' workflow copies run without a profile).
    stylesheet = tiny_study.workdir / "workflow" / "profiles" / "default" / "report.css"
    made = run_snakemake(
        ["--report", str(report), "--cores", "1", "--configfile", tiny_study.config]
        + ["--report-stylesheet", str(stylesheet)],
        tiny_study.workdir,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-4000:]
    return {
        "path": report,
        "out": tiny_study.out,
        "results": embedded_results(report.read_text()),
        "stderr": made.stderr,
    }


def embedded_results(page: str) -> dict:
    """Snakemake 9 writes one HTML file: every result is a data URI in the `results` script variable."""
    match = re.search(r'<script id="results">\s*var results = (.*?);\s*</script>', page, re.S)
    assert match, "no embedded results in the report"
    return json.loads(match[1])


def plain_text(html: str) -> str:
    """An HTML caption's words: tags dropped, white space made single spaces."""
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


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
    assert "The recipe selection: the learning rate and weight decay" in caption["report/tables/selection.html"]
    assert "Dice by subgroup" in caption["report/tables/subgroups.html"]
    assert "Training of unet:" in caption["report/curves/unet.png"]
    # The statistics' captions name the methods the pages use (docs/statistics.md), and the cost figure's
    # the study's floors and references, as the rule hands them from the catalog.
    for name in ("statistics/paired.html", "statistics/forest.png"):
        assert "sign-flip" in caption[f"report/{name}"] and "Holm" in caption[f"report/{name}"], name
        assert "Wilcoxon" not in caption[f"report/{name}"] and "resamples of images" not in caption[f"report/{name}"]
    cost_caption = plain_text(caption["report/cost_accuracy.png"])
    assert "the floors, dashed (threshold_baseline, position_prior, dark_in_prior)" in cost_caption
    assert "the references, dotted (caliper_reader)" in cost_caption
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
    # One seed: the cell says (1 seed), never a spread of ± 0.000; the CI by patient stands beside it (or, as
    # here, where the test images are one patient's, says there is none).
    assert f"{table1.loc[0, 'dice_mean']:.3f} (1 seed)" in html_table1 and "0.929 ± 0.002" in html_table1
    assert stats.ci_text(table1.loc[0, "dice_ci_low"], table1.loc[0, "dice_ci_high"]) in html_table1
    ladder = pd.read_csv(tiny_report["out"] / "tables" / "ladder.csv")
    html_ladder = decoded(results["results/tiny/report/tables/ladder.html"]).decode()
    assert all(f"{d:.3f} (1 seed)" in html_ladder for d in ladder["dice_mean"]) and "0.855" in html_ladder
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
    # ... and the sonoseg commit that made the results, as the tables' captions name it (not the manifest's).
    table1 = (tiny_report["out"] / "tables" / "table1.md").read_text()
    made_by = re.search(r"(sonoseg \S+ at commit \S+?)[.;)]", table1)[1]
    assert f"by {made_by} (the manifest by sonoseg" in description.replace("``", "")
    # ... the commit that built the report, the same here: no word of pages made by other code.
    assert f"This report was built by {made_by}." in description.replace("``", "")
    assert "made by other code" not in description and "made by other code" not in tiny_report["stderr"]


def test_report_over_tables_of_other_code_warns_where_it_is_run_and_on_its_front_page(tiny_study, tmp_path):
    """A user upgrading a finished study runs `make report` before the study: the tables and pages say what the
    older code said, and the terminal says so, not the report's front page alone."""
    workdir = tmp_path / "upgraded"
    shutil.copytree(tiny_study.workdir, workdir, symlinks=True)  # the shared study stays as it was made
    tables = workdir / tiny_study.out.relative_to(tiny_study.workdir) / "tables"
    for markdown in tables.glob("*.md"):  # the captions name the commit that made each table
        markdown.write_text(re.sub(r"at commit [^\s.;,]+", "at commit 0123456789ab", markdown.read_text()))
    report = workdir / "report.html"
    made = run_snakemake(["--report", str(report), "--cores", "1", "--configfile", tiny_study.config], workdir)
    assert made.returncode == 0, made.stderr[-4000:]
    assert "Warning: The tables and pages were made by other code than this" in made.stderr
    description = plain_text(json.loads(re.search(r'var workflow_desc = (".*?");\n', report.read_text())[1]))
    assert "by sonoseg" in description and "at commit 0123456789ab" in description
    assert "Warning: The tables and pages were made by other code than this" in description


def test_every_figure_of_the_report_says_where_it_came_from_in_its_own_text(tiny_report):
    """A figure taken out of the report (into a paper, a slide) carries its provenance in the PNG's text: the
    sonoseg that drew it, and what its numbers come from (the data, the code, the trainings), as the tables'
    captions end."""
    from PIL import Image

    table1 = (tiny_report["out"] / "tables" / "table1.md").read_text()
    source = table1[table1.index("Data fingerprint ") :].split("\n")[0].strip().rstrip("*")  # the caption's bold
    figures_made = sorted((tiny_report["out"] / "report").rglob("*.png"))
    assert len(figures_made) >= 6
    for png in figures_made:
        text = Image.open(png).text
        assert text["Software"].startswith("sonoseg ") and " at commit " in text["Software"], png
        if png.parent.name == "curves":  # a run's trainings: the commit and the precision they ran in
            assert text["Source"].startswith("Trained at commit "), png
        elif png.parent.name == "data":  # the data alone
            assert text["Source"].startswith(source.split("; models trained")[0].rstrip(".")), png
        else:  # the study's results: as Table 1's caption names them
            assert text["Source"] == source, png
    # The cost front's page, made with the cost figure, says it too.
    assert source in (tiny_report["out"] / "report" / "cost_front.html").read_text()


def tiny_path(path: str) -> str:
    return Path(path).relative_to("results/tiny").as_posix()


def test_report_names_its_entries_in_reading_order_and_every_table_its_provenance(tiny_report):
    results = {tiny_path(p): r for p, r in tiny_report["results"].items()}
    # "2 Tables": Table 1 and Table 2 first, then the others in catalog order, each with its place and name.
    table_pages = [Path(p).stem for p in results if p.startswith("report/tables/")]
    shown = [kind for kind in catalog.REPORT_TABLES if kind in table_pages]
    assert shown[:2] == ["table1", "table2"] and len(shown) == len(table_pages)
    expected = [f"{place} {report_labels.REPORT_ENTRIES[kind]}" for place, kind in enumerate(shown, start=1)]
    assert [results[f"report/tables/{kind}.html"]["labels"]["table"] for kind in shown] == expected
    # The training curves: networks, then the ladder, each in the run sheet's order (not the alphabet's).
    curves = {Path(p).stem: r["labels"]["run"] for p, r in results.items() if p.startswith("report/curves/")}
    assert curves == {
        "unet": "1 unet",
        "lighter_unet_c1": "2 lighter_unet_c1",
        "ladder--baseline": "1 baseline",
        "ladder--adam": "2 adam",
    }
    # The front page lists the tables the report holds, by those names, and says what the report needs.
    description = plain_text(
        json.loads(re.search(r'var workflow_desc = (".*?");\n', tiny_report["path"].read_text())[1])
    )
    entries = sorted(r["labels"]["table"] for r in results.values() if "table" in (r["labels"] or {}))
    assert set(expected) <= set(entries)  # the tables, and the generalization figure where there is one
    names = "; ".join(label.split(" ", 1)[1] for label in entries)
    assert f"2 Tables, ours beside the paper's where it printed numbers: {names}." in description
    assert "shows what exists" not in description and "stops at the first one missing, so snakemake all" in description
    # Every table page says which data and which sonoseg commit its numbers come from, as its Markdown
    # twin does (the recipe selection's too, and with no bold marker left in its caption).
    assert "selection" in shown
    for kind in shown:
        page = decoded(results[f"report/tables/{kind}.html"]).decode()
        source = re.search(
            r"Data fingerprint \w+; sonoseg \S+ at commit [^\s.;]+(?:; models trained at commit [^.]+)?\.",
            (tiny_report["out"] / "tables" / f"{kind}.md").read_text(),
        )
        assert source and source[0] in page and "**" not in page, kind
    # The ladder page shows the HD95 columns its Markdown twin shows, and the penalised images.
    ladder = decoded(results["report/tables/ladder.html"]).decode()
    for column in ("HD95 px (ours)", "HD95 px, both non-empty (ours)", "HD95 penalised images"):
        assert f"<th>{column}</th>" in ladder, column


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
    assert f"{table1.loc[0, 'dice_mean']:.3f} (1 seed)" in text

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


def test_chromium_lists_each_sections_entries_in_reading_order(tiny_report, browser):
    """Through the report's own interface: the viewer sorts a section's entries by their labels' text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def open_section(*names: str) -> list[str]:
        browser.get(tiny_report["path"].as_uri())
        WebDriverWait(browser, 60).until(
            lambda d: d.execute_script("return document.querySelectorAll('#app a').length > 0")
        )
        for name in names:
            browser.find_element(By.XPATH, f"//*[normalize-space(text())='{name}']").click()
        return [
            cell.text
            for cell in WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "td.pl-2"))
        ]

    listed = open_section("2 Tables")
    assert listed[:2] == ["1 Table 1: architectures", "2 Table 2: U-net and its lightweight variants"], listed
    labels = [r["labels"]["table"] for r in tiny_report["results"].values() if "table" in (r["labels"] or {})]
    places = [int(entry.split(" ", 1)[0]) for entry in listed]
    assert sorted(listed) == sorted(labels) and places == sorted(places), listed  # in the places' order
    assert open_section("3 Training curves", "1 Networks") == ["1 unet", "2 lighter_unet_c1"]
    assert open_section("3 Training curves", "2 Tuning ladder (section 4.2)") == ["1 baseline", "2 adam"]
    assert open_section("1 Data") == ["1 manifest and split counts", "2 sample images", "3 coloured marks, inpainted"]


def test_chromium_shows_the_front_pages_first_line_at_a_laptops_size(tiny_report, browser):
    """Snakemake's viewer centres the front page in a box of the window's height: a page taller than the window
    lost its top, which could not be scrolled to (at 1280 x 800 the first two paragraphs). It starts at the
    box's top now (workflow/report/workflow.rst)."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1280, 800)
    try:
        browser.get(tiny_report["path"].as_uri())
        WebDriverWait(browser, 60).until(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('p')].some(p => p.textContent.startsWith('Study'))"
            )
        )
        first, box = browser.execute_script("""
            const p = [...document.querySelectorAll('p')].find(e => e.textContent.startsWith('Study'));
            let box = p.parentElement;
            while (box && !box.classList.contains('h-screen')) box = box.parentElement;
            box.scrollTop = 0;
            return [p.getBoundingClientRect().top, box.getBoundingClientRect().top];
        """)
        assert first >= box, (first, box)
    finally:
        browser.set_window_size(1400, 1000)


def test_chromium_shows_a_figure_taller_than_the_window_from_its_top(tiny_report, browser):
    """A probe's Figure 2 (1,131 x 1,783 px) lost its top in the viewer, which centres every entry in a box of
    the window's height: the title, the legend and the first row could not be scrolled to. The profiles'
    stylesheet (workflow/profiles/default/report.css) starts every entry at the box's top."""
    import yaml
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for profile in ("default", "slurm"):  # every report made through a profile gets it
        settings = yaml.safe_load((REPO / "workflow" / "profiles" / profile / "config.yaml").read_text())
        assert (REPO / "workflow" / "profiles" / profile / settings["report-stylesheet"]).is_file()
    browser.set_window_size(900, 400)
    try:
        browser.get(tiny_report["path"].as_uri())
        WebDriverWait(browser, 60).until(
            lambda d: d.execute_script("return document.querySelectorAll('#app a').length")
        )
        browser.find_element(By.XPATH, "//*[normalize-space(text())='4 Figure 2 rebuilt']").click()
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.XPATH, "//table//a"))
        browser.find_elements(By.XPATH, "//table//a")[0].click()
        top, box, height = WebDriverWait(browser, 20).until(
            lambda d: d.execute_script("""
                const img = [...document.images].find(i => i.src.startsWith('data:image/png') && i.complete
                    && i.naturalWidth > 0 && i.offsetParent !== null);
                if (!img) return null;
                let box = img.parentElement;
                while (box && !box.classList.contains('h-screen')) box = box.parentElement;
                box.scrollTop = 0;
                return [img.getBoundingClientRect().top, box.getBoundingClientRect().top,
                        img.getBoundingClientRect().height];
            """)
        )
        assert height > 400 and top >= box, (top, box, height)  # taller than the window, its top in view
    finally:
        browser.set_window_size(1400, 1000)


def test_chromium_keeps_a_wide_table_inside_its_page(tiny_report, browser, tmp_path):
    """Table 2 is wider than the report's frame at a laptop's width: its page ran past the frame's edge. The
    table now scrolls sideways in a box of its own, and the page itself is no wider than the window."""
    results = tiny_report["results"]
    (entry,) = [r for p, r in results.items() if p.endswith("report/tables/table2.html")]
    page = tmp_path / "table2.html"
    page.write_bytes(decoded(entry))
    browser.set_window_size(600, 800)
    try:
        browser.get(page.as_uri())
        page_width, window_width, box_scroll, box_width = browser.execute_script("""
            const box = document.querySelector('div.table');
            return [document.documentElement.scrollWidth, document.documentElement.clientWidth,
                    box.scrollWidth, box.clientWidth];
        """)
        assert box_scroll > box_width, "the table fits at 600 px: the test no longer shows what it guards"
        assert page_width <= window_width, (page_width, window_width)
    finally:
        browser.set_window_size(1400, 1000)
