rule cost:
    # Parameters, forward GFLOPs and CPU latency of every network at the study's input size.
    # Latency is only meaningful on an idle CPU: the rule takes every core Snakemake has, so no other
    # job (training above all) runs beside it; the measurement itself uses cost.threads threads.
    output:
        f"{OUT}/tables/cost.csv",
    log:
        f"{LOGS}/cost/cost.log",
    benchmark:
        f"{BENCH}/cost.tsv"
    conda:
        CONDA_ENV
    threads: cost_threads()
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    params:
        networks=" ".join(NETWORKS),
        size=config["preprocess"]["size"],
        backend=COST["backend"],
        measure_threads=COST["threads"],
        repeats=COST["repeats"],
        warmup=COST["warmup"],
    shell:
        "sonoseg cost --networks {params.networks} --size {params.size} --backend {params.backend} "
        "--threads {params.measure_threads} --repeats {params.repeats} --warmup {params.warmup} "
        "--out {output} > {log} 2>&1"
