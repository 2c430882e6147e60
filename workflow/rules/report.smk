rule summarize_network:
    # The documented per-network target: results/<study>/networks/<network>.csv
    input:
        unpack(get_network_runs),
    output:
        f"{OUT}/networks/{{network}}.csv",
    log:
        f"{LOGS}/report/network_{{network}}.log",
    conda:
        CONDA_ENV
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    params:
        key="network",
        name=lambda wc: wc.network,
        seeds=" ".join(SEEDS),
    shell:
        "sonoseg summarize --key {params.key} --name {params.name} --seeds {params.seeds} "
        "--metrics {input.metrics} --histories {input.histories} --out {output} > {log} 2>&1"


use rule summarize_network as summarize_ladder_step with:
    input:
        unpack(get_ladder_runs),
    output:
        f"{OUT}/ladder/{{step}}.csv",
    log:
        f"{LOGS}/report/ladder_{{step}}.log",
    params:
        key="step",
        name=lambda wc: wc.step,
        seeds=" ".join(LADDER_SEEDS),


# Captions name the input size and the ladder's network (the quick study runs it on a cheaper one).
TABLE_SCALE = (
    f"--input-size {config['preprocess']['size']} --input-interpolation {config['preprocess']['interpolation']} "
    f"--ladder-network {LADDER['network']}"
)


rule table1:
    input:
        unpack(get_cost_table),
        summaries=expand(f"{OUT}/networks/{{network}}.csv", network=table_networks(paper.TABLE1)),
    output:
        csv=f"{OUT}/tables/table1.csv",  # in the report as HTML: workflow/rules/plots.smk
        markdown=f"{OUT}/tables/table1.md",
        latex=f"{OUT}/tables/table1.tex",
    log:
        f"{LOGS}/report/table1.log",
    conda:
        CONDA_ENV
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    params:
        kind="table1",
        scale=TABLE_SCALE,
        cost=lambda wc, input: f"--cost {input.cost}" if "cost" in input.keys() else "",
    shell:
        "sonoseg table {params.kind} --summaries {input.summaries} --out {output.csv} {params.scale} "
        "{params.cost} > {log} 2>&1"


use rule table1 as table2 with:
    input:
        unpack(get_cost_table),
        summaries=expand(f"{OUT}/networks/{{network}}.csv", network=table_networks(paper.TABLE2)),
    output:
        csv=f"{OUT}/tables/table2.csv",  # in the report as HTML: workflow/rules/plots.smk
        markdown=f"{OUT}/tables/table2.md",
        latex=f"{OUT}/tables/table2.tex",
    log:
        f"{LOGS}/report/table2.log",
    params:
        kind="table2",
        scale=TABLE_SCALE,
        cost=lambda wc, input: f"--cost {input.cost}" if "cost" in input.keys() else "",


use rule table1 as ladder_table with:
    input:
        summaries=expand(f"{OUT}/ladder/{{step}}.csv", step=LADDER_STEPS),
    output:
        csv=f"{OUT}/tables/ladder.csv",  # in the report as HTML: workflow/rules/plots.smk
        markdown=f"{OUT}/tables/ladder.md",
        latex=f"{OUT}/tables/ladder.tex",
    log:
        f"{LOGS}/report/ladder.log",
    params:
        kind="ladder",
        scale=TABLE_SCALE,
        cost="",


rule weight_decay_table:
    input:
        expand(f"{OUT}/weight_decay/{{network}}/selected.json", network=WEIGHT_DECAY_NETWORKS),
    output:
        f"{OUT}/tables/weight_decay.csv",
    log:
        f"{LOGS}/report/weight_decay.log",
    conda:
        CONDA_ENV
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    shell:
        "sonoseg weight-decay-table --choices {input} --out {output} > {log} 2>&1"
