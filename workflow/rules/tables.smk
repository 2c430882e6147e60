# The study's tables: Table 1, Table 2 and the ladder (ours beside the paper's), the recipe
# selection's choices (learning rate, weight decay), and the cost of every network. In the report as HTML: workflow/rules/report.smk.


rule collect:
    # The study's results as data: every run's per-image metrics (one row per run x training x test
    # image, with the run sheet's columns and the image's patient and metadata) and every training
    # (epochs, steps, what ended it), two long tables that every table, figure and statistic reads.
    input:
        unpack(get_collect_inputs),
    output:
        per_image=PER_IMAGE,
        trainings=TRAININGS,
    log:
        f"{LOGS}/collect.log",
    conda:
        CONDA_ENV
    params:
        study=lambda wc, input: layout.study_dir(input.sheet, layout.SHEET),
        runs=" ".join(run.name for run in COLLECTED),
        external=" ".join(f"{name}={layout.external_manifest(OUT, name)}" for name in EXTERNALS),
    shell:
        "sonoseg collect --study-dir {params.study} --sheet {input.sheet} --runs {params.runs} --manifest {input.manifest} "
        "--external-manifest {params.external} --per-image {output.per_image} --trainings {output.trainings} > {log} 2>&1"


rule ladder:
    # The tuning ladder's runs alone: each step's trainings, predictions and summary
    # (networks/ladder--<step>.csv). Its table, tables/ladder.md, reads the study's long table of every
    # run (the Dice CIs by patient), so it comes with the whole study.
    input:
        ladder_summaries,


rule table:
    input:
        unpack(get_cost_table),
        summaries=lambda wc: ladder_summaries() if wc.table == "ladder" else get_table_summaries(wc),
        per_image=PER_IMAGE,
        manifest=MANIFEST,
        code=ANALYSIS_CODE,
    output:
        csv=f"{OUT}/tables/{{table}}.csv",
        markdown=f"{OUT}/tables/{{table}}.md",
        latex=f"{OUT}/tables/{{table}}.tex",
    log:
        f"{LOGS}/table/{{table}}.log",
    conda:
        CONDA_ENV
    params:
        custom=custom_networks_arg(NETWORKS),  # the labels and families of a user's networks
        # Captions name the input size and the ladder's network (the quick study runs it on a cheaper one).
        scale=(
            f"--input-size {config['preprocess']['size']} --input-interpolation {config['preprocess']['interpolation']} "
            f"--ladder-network {config['ladder']['network']}"
        ),
        cost=lambda wc, input: f"--cost {input.cost}" if "cost" in input.keys() and wc.table != "ladder" else "",
        seed=REPORT_SEED,
    shell:
        "sonoseg table {wildcards.table} --summaries {input.summaries} --out {output.csv} {params.scale} "
        "{params.cost} --per-image {input.per_image} --manifest {input.manifest} --seed {params.seed} {params.custom} > {log} 2>&1"


rule selection_table:
    input:
        choices=[layout.selection(OUT, network, fold) for network in SELECTIONS for fold in FOLDS],
        manifest=MANIFEST,  # the data the choices were made on, named in the caption
        code=ANALYSIS_CODE,
    output:
        csv=f"{OUT}/tables/selection.csv",
        markdown=f"{OUT}/tables/selection.md",
    log:
        f"{LOGS}/selection_table.log",
    conda:
        CONDA_ENV
    shell:
        "sonoseg selection-table --choices {input.choices} --manifest {input.manifest} --out {output.csv} "
        "> {log} 2>&1"


rule cost_prepare:
    # What the cost table times, made beforehand beside other jobs: each network's parameters, GFLOPs
    # and exported graph (seconds per network; no quiet machine needed). Deleted once timed.
    input:
        [path for network in NETWORKS for path in BUILDER_FILES.get(network, [])],
    output:
        temp(directory(f"{OUT}/cost_prepared")),
    log:
        f"{LOGS}/cost_prepare.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        networks=" ".join(NETWORKS),
        size=config["preprocess"]["size"],
        backend=COST["backend"],
        custom=custom_networks_arg(NETWORKS, keys=("builder",)),  # built and timed: a new label times nothing
        code=" ".join(f"{network}={NETWORK_CODE.get(network, '')}" for network in NETWORKS),  # reruns on an edit
    shell:
        "sonoseg cost-prepare --networks {params.networks} --size {params.size} --backend {params.backend} "
        "{params.custom} --out-dir {output} > {log} 2>&1"


rule cost:
    # CPU latency of every network at the study's input size, timed on what cost_prepare made.
    # Latency is only meaningful on an idle CPU: the rule takes every core Snakemake has, so no other
    # job (training above all) runs beside it; the measurement itself uses cost.threads threads. Last
    # among ready jobs (priority), so that it waits for a moment when both cores free up anyway.
    input:
        rules.cost_prepare.output,
    output:
        f"{OUT}/tables/cost.csv",
    log:
        f"{LOGS}/cost.log",
    benchmark:
        f"{BENCH}/cost.tsv"
    priority: runsheet.ANY_OTHER - 1
    conda:
        CONDA_ENV
    threads: cost_threads()
    params:
        networks=" ".join(NETWORKS),
        size=config["preprocess"]["size"],
        backend=COST["backend"],
        measure_threads=COST["threads"],
        repeats=COST["repeats"],
        warmup=COST["warmup"],
        custom=custom_networks_arg(NETWORKS, keys=("builder",)),  # built and timed: a new label times nothing
    shell:
        "sonoseg cost --networks {params.networks} --size {params.size} --backend {params.backend} "
        "--threads {params.measure_threads} --repeats {params.repeats} --warmup {params.warmup} "
        "--prepared {input} {params.custom} --out {output} > {log} 2>&1"


rule paired_table:
    # Pairs of runs on the same test images, by patient (common.smk: PAIRED_TABLES): the caliper ablation
    # (ablation.marks: each method trained and tested with the marks the other way), reliance on the
    # marks (the kept-marks models tested without them), test-time augmentation (predict.tta: the same
    # models flip-averaged), the ensemble of each fold's seeds against the single trainings; on each
    # external dataset too (a network's single models against them flip-averaged, or all of them averaged).
    input:
        per_image=PER_IMAGE,
        manifest=MANIFEST,  # the data's fingerprint, which ends the Markdown's caption as in every table
        code=ANALYSIS_CODE,
        choices=get_paired_choices,  # the augmentation table's: what each choice adopted
    output:
        csv=f"{OUT}/tables/{{paired}}.csv",
        markdown=f"{OUT}/tables/{{paired}}.md",
    log:
        f"{LOGS}/paired_table/{{paired}}.log",
    conda:
        CONDA_ENV
    params:
        pairs=lambda wc: " ".join(f"{main.name}:{twin.name}" for main, twin in PAIRED_TABLES[wc.paired][1]),
        family=lambda wc: PAIRED_TABLES[wc.paired][0],
        seed=REPORT_SEED,
        choices=paired_choice_options,
    shell:
        "sonoseg paired --pairs {params.pairs} --per-image {input.per_image} --manifest {input.manifest} "
        "--seed {params.seed} --family {params.family} {params.choices} --out {output.csv} > {log} 2>&1"


rule generalization:
    # Every network's in-domain Dice beside its Dice on each external dataset (config external_datasets),
    # single, flip-averaged and ensembled, with patient-level CIs and the drop (docs/method.md).
    input:
        per_image=PER_IMAGE,
        manifest=MANIFEST,  # the data's fingerprint, which ends the caption as in every table
        overlap=list(overlap_records().values()),  # what each set's tests left out
        manifests=list(external_manifests().values()),  # and what its ingest left out
        code=ANALYSIS_CODE,
    output:
        csv=f"{OUT}/tables/generalization.csv",
        markdown=f"{OUT}/tables/generalization.md",
    log:
        f"{LOGS}/generalization.log",
    conda:
        CONDA_ENV
    params:
        custom=custom_networks_arg(NETWORKS),  # the labels and families of a user's networks
        networks=" ".join(EXTERNAL_NETWORKS),
        datasets=EXTERNAL_ROLES,
        seed=REPORT_SEED,
        overlap=named_paths(overlap_records()),
        manifests=named_paths(external_manifests()),
    shell:
        "sonoseg generalization --per-image {input.per_image} --manifest {input.manifest} --networks {params.networks} "
        "--datasets {params.datasets} --overlap {params.overlap} --manifests {params.manifests} "
        "--seed {params.seed} --out {output.csv} {params.custom} > {log} 2>&1"


rule subgroups:
    # Every network's Dice per value of the configured manifest columns (subgroups.columns: BUSI's class,
    # the lesion type), in-domain and on each external dataset: on which images a network fails.
    input:
        per_image=PER_IMAGE,
        manifest=MANIFEST,  # the data's fingerprint, which ends the caption as in every table
        code=ANALYSIS_CODE,
    output:
        csv=f"{OUT}/tables/subgroups.csv",
        markdown=f"{OUT}/tables/subgroups.md",
    log:
        f"{LOGS}/subgroups.log",
    conda:
        CONDA_ENV
    params:
        custom=custom_networks_arg(NETWORKS),  # the labels of a user's networks
        networks=" ".join(NETWORKS),
        columns=" ".join(config["subgroups"]["columns"]),
        datasets=EXTERNAL_ROLES,
        seed=REPORT_SEED,
    shell:
        "sonoseg subgroups --per-image {input.per_image} --manifest {input.manifest} --networks {params.networks} "
        "--columns {params.columns} --datasets {params.datasets} --seed {params.seed} --out {output.csv} "
        "{params.custom} > {log} 2>&1"


rule equivalence:
    # The study's "as good as" claims (config claims.equivalence), each with the config's margin.
    input:
        manifest=MANIFEST,
        per_image=PER_IMAGE,
        code=ANALYSIS_CODE,
    output:
        csv=f"{OUT}/tables/equivalence.csv",
        markdown=f"{OUT}/tables/equivalence.md",
    log:
        f"{LOGS}/equivalence.log",
    conda:
        CONDA_ENV
    params:
        custom=custom_networks_arg(NETWORKS),  # the labels and families of a user's networks
        pairs=" ".join(f"{candidate}:{reference}" for candidate, reference in CLAIMS["equivalence"]),
        margin=CLAIMS["margin"],
        seed=REPORT_SEED,
    shell:
        "sonoseg equivalence --manifest {input.manifest} --pairs {params.pairs} --per-image {input.per_image} "
        "--margin {params.margin} --seed {params.seed} --out {output.csv} {params.custom} > {log} 2>&1"


rule convergence_check:
    # Not part of all: `snakemake convergence_check`. The chosen networks (config convergence.networks)
    # retrained with twice the epoch budget, and whether that changes their test Dice (tables/convergence.csv).
    input:
        unpack(get_convergence_inputs),
        manifest=MANIFEST,
        sheet=SHEET,
        code=ANALYSIS_CODE,
    output:
        f"{OUT}/tables/convergence.csv",
    log:
        f"{LOGS}/convergence_check.log",
    conda:
        CONDA_ENV
    params:
        study=lambda wc, input: layout.study_dir(input.sheet, layout.SHEET),
        pairs=" ".join(f"{base.name}:{longer.name}" for base, longer in CONVERGENCE),
        margin=config["convergence"]["margin"],
        check_seed=lambda wc: CONVERGENCE[0][1].seeds[0],
        seed=REPORT_SEED,
    shell:
        "sonoseg convergence --manifest {input.manifest} --pairs {params.pairs} --study-dir {params.study} "
        "--sheet {input.sheet} --check-seed {params.check_seed} --margin {params.margin} --seed {params.seed} "
        "--out {output} > {log} 2>&1"
