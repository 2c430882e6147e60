# The HTML report's figures and tables (snakemake --report results/<study>/report.html): each is the
# output of its own rule, so one new network rebuilds only what lists it. Sections are numbered
# categories; captions live in workflow/report/; input functions in common.smk. Every rule here takes
# ANALYSIS_CODE (common.smk) as input: a new version of sonoseg's analysis code redoes the pages.
# The report's viewer lists a section's entries by the text of their labels, so a label leads with the
# entry's place in the section (report_labels.report_entry).
from sonoseg.analysis import report_labels


wildcard_constraints:
    report_table=_alternatives(catalog.REPORT_TABLES),


# The training curves in two groups, each in the run sheet's order (the ladder's: its steps').
CURVE_GROUPS = {"network": "1 Networks", "ladder_step": "2 Tuning ladder (section 4.2)"}


rule report_data:
    input:
        manifest=MANIFEST,
        split=SPLIT,
        code=ANALYSIS_CODE,
    output:
        overview=report(
            f"{REPORT}/data/overview.html",
            caption="../report/data.rst",
            category="1 Data",
            labels={"item": "1 manifest and split counts"},
        ),
        samples=report(
            f"{REPORT}/data/samples.png",
            caption="../report/samples.rst",
            category="1 Data",
            labels={"item": "2 sample images"},
        ),
        marks=report(
            f"{REPORT}/data/marks.png",
            caption="../report/marks.rst",
            category="1 Data",
            labels={"item": "3 coloured marks, inpainted"},
        ),
    log:
        f"{LOGS}/report_data.log",
    conda:
        CONDA_ENV
    params:
        seed=REPORT_SEED,
    shell:
        "sonoseg report-data --manifest {input.manifest} --split {input.split} --seed {params.seed} "
        "--overview {output.overview} --samples {output.samples} --marks {output.marks} > {log} 2>&1"


rule report_table:
    input:
        table=f"{OUT}/tables/{{report_table}}.csv",
        code=ANALYSIS_CODE,
    output:
        report(
            f"{REPORT}/tables/{{report_table}}.html",
            caption="../report/tables.rst",
            category="2 Tables",
            labels=lambda wildcards: {
                "table": report_labels.report_entry(
                    wildcards.report_table, get_report_tables(), report_labels.REPORT_ENTRIES[wildcards.report_table]
                )
            },
        ),
    log:
        f"{LOGS}/report_table/{{report_table}}.log",
    conda:
        CONDA_ENV
    shell:
        "sonoseg report-table {wildcards.report_table} --table {input.table} --out {output} > {log} 2>&1"


rule report_generalization:
    input:
        table=f"{OUT}/tables/generalization.csv",
        overlap=list(overlap_records().values()),
        manifests=list(external_manifests().values()),
        code=ANALYSIS_CODE,
    output:
        report(
            f"{REPORT}/generalization.png",
            caption="../report/generalization.rst",
            category="2 Tables",
            # Right after its table (the same place; the viewer puts the longer text second).
            labels=lambda wildcards: {
                "table": report_labels.report_entry(
                    "generalization", get_report_tables(), f"{report_labels.REPORT_ENTRIES['generalization']} (figure)"
                )
            },
        ),
    log:
        f"{LOGS}/report_generalization.log",
    conda:
        CONDA_ENV
    params:
        overlap=named_paths(overlap_records()),
        manifests=named_paths(external_manifests()),
    shell:
        "sonoseg report-generalization --table {input.table} --overlap {params.overlap} "
        "--manifests {params.manifests} --out {output} > {log} 2>&1"


rule report_curves:
    input:
        histories=get_run_histories,
        code=ANALYSIS_CODE,
    output:
        report(
            f"{REPORT}/curves/{{run}}.png",
            caption="../report/curves.rst",
            category="3 Training curves",
            subcategory=lambda wildcards: CURVE_GROUPS[run_of(wildcards).kind],
            labels=lambda wildcards: {
                "run": report_labels.report_entry(
                    wildcards.run,
                    [run.name for run in RUNS.values() if run.kind == run_of(wildcards).kind],
                    run_of(wildcards).table_name,
                )
            },
        ),
    log:
        f"{LOGS}/report_curves/{{run}}.log",
    conda:
        CONDA_ENV
    params:
        study=lambda wc, input: layout.study_dir(input.histories[0], f"{layout.TRAINING}/{layout.HISTORY}"),
        run=lambda wc: run_json(run_of(wc)),
    shell:
        "sonoseg report-curves --study-dir {params.study} --run-json {params.run} --out {output} > {log} 2>&1"


rule report_figure2:
    input:
        manifest=MANIFEST,
        per_image=PER_IMAGE,
        predictions=get_report_predictions(),
        code=ANALYSIS_CODE,
    output:
        chosen=report(
            f"{REPORT}/figure2.png",
            caption="../report/figure2.rst",
            category="4 Figure 2 rebuilt",
            labels={"figure": "1 U-net, the best of each family, the floors"},
        ),
        every=report(
            f"{REPORT}/figure2_all.png",
            caption="../report/figure2.rst",
            category="4 Figure 2 rebuilt",
            labels={"figure": "2 every method"},
        ),
    log:
        f"{LOGS}/report_figure2.log",
    conda:
        CONDA_ENV
    params:
        study=lambda wc, input: layout.study_dir(input.manifest, layout.MANIFEST),
        runs=" ".join(run.name for run in compared_runs()),
        seed=REPORT_SEED,
        custom=custom_networks_arg(NETWORKS),  # the labels and families of a user's networks
    shell:
        "sonoseg report-figure2 --manifest {input.manifest} --per-image {input.per_image} --runs {params.runs} "
        "--study-dir {params.study} --seed {params.seed} --out {output.chosen} "
        "--all-methods {output.every} {params.custom} > {log} 2>&1"


rule report_cost:
    input:
        unpack(get_cost_table),
        manifest=MANIFEST,
        per_image=PER_IMAGE,
        summaries=[layout.summary(OUT, run.name) for run in compared_runs()],
        code=ANALYSIS_CODE,
    output:
        figure=report(
            f"{REPORT}/cost_accuracy.png",
            caption="../report/cost.rst",
            category="5 Cost vs accuracy",
            labels={"figure": "1 Dice against cost"},
        ),
        front=report(
            f"{REPORT}/cost_front.html",
            caption="../report/cost_front.rst",
            category="5 Cost vs accuracy",
            labels={"figure": "2 the front by patient"},
        ),
        front_csv=f"{REPORT}/cost_front.csv",
    log:
        f"{LOGS}/report_cost.log",
    conda:
        CONDA_ENV
    params:
        custom=custom_networks_arg(NETWORKS),  # the labels and families of a user's networks
        cost=lambda wc, input: f"--cost {input.cost}" if "cost" in input.keys() else "",
        runs=" ".join(run.name for run in compared_runs()),
        seed=REPORT_SEED,
        # For the caption (cost.rst): the methods without a cost by the role the figure's key gives them
        # (figures._untrained_kind: a catalog reference, else a floor).
        floors=[name for name in FLOORS if name not in catalog.references()],
        references=[name for name in FLOORS if name in catalog.references()],
    shell:
        "sonoseg report-cost --manifest {input.manifest} --per-image {input.per_image} --runs {params.runs} "
        "--summaries {input.summaries} "
        "--seed {params.seed} {params.cost} --front-csv {output.front_csv} --front-table {output.front} "
        "--out {output.figure} {params.custom} > {log} 2>&1"


rule report_statistics:
    input:
        manifest=MANIFEST,
        per_image=PER_IMAGE,
        code=ANALYSIS_CODE,
    output:
        distributions=report(
            f"{REPORT}/statistics/distributions.png",
            caption="../report/distributions.rst",
            category="6 Per-image statistics",
            labels={"item": "1 Dice and HD95 per image"},
        ),
        table=report(
            f"{REPORT}/statistics/paired.html",
            caption="../report/paired.rst",
            category="6 Per-image statistics",
            labels={"item": "2 paired differences and breakdowns"},
        ),
        forest=report(
            f"{REPORT}/statistics/forest.png",
            caption="../report/forest.rst",
            category="6 Per-image statistics",
            labels={"item": "3 forest plot"},
        ),
        csv=f"{REPORT}/statistics/paired.csv",
    log:
        f"{LOGS}/report_statistics.log",
    conda:
        CONDA_ENV
    params:
        custom=custom_networks_arg(NETWORKS),  # the labels and families of a user's networks
        runs=" ".join(run.name for run in compared_runs()),
        seed=REPORT_SEED,
    shell:
        "sonoseg report-statistics --manifest {input.manifest} --per-image {input.per_image} --runs {params.runs} "
        "--seed {params.seed} "
        "--distributions {output.distributions} --table {output.table} --forest {output.forest} "
        "--csv {output.csv} {params.custom} > {log} 2>&1"
