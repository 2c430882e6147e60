# Non-learned baselines (config `baselines`, e.g. threshold_baseline): a kind of run without
# training. They segment the test images from the manifest, then go through the networks' own
# evaluate and summarize rules, so their rows in Table 1 and Table 2 are computed like a network's.
# A baseline is deterministic: it has a run per study seed like a network (identical runs, std 0),
# so every consumer of per-seed predictions and metrics treats it as one more method.
# The {baseline} wildcard never matches a network (and {network} never matches a baseline).


rule baseline_predict:
    input:
        manifest=f"{OUT}/data/manifest.csv",
        split=f"{OUT}/data/split.csv",
    output:
        directory(f"{OUT}/predictions/{{baseline}}/seed{{seed}}"),
    log:
        f"{LOGS}/predict/{{baseline}}/seed{{seed}}.log",
    conda:
        CONDA_ENV
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    params:
        component_rule=config["predict"]["component_rule"],
    shell:
        "sonoseg baseline --name {wildcards.baseline} --manifest {input.manifest} --split {input.split} "
        "--outdir {output} --component-rule {params.component_rule} > {log} 2>&1"


use rule evaluate as baseline_evaluate with:
    input:
        predictions=f"{OUT}/predictions/{{baseline}}/seed{{seed}}",
        manifest=f"{OUT}/data/manifest.csv",
        split=f"{OUT}/data/split.csv",
    output:
        f"{OUT}/metrics/{{baseline}}/seed{{seed}}.csv",
    log:
        f"{LOGS}/evaluate/{{baseline}}/seed{{seed}}.log",


use rule summarize_network as summarize_baseline with:
    input:
        metrics=expand(f"{OUT}/metrics/{{{{baseline}}}}/seed{{seed}}.csv", seed=SEEDS),
        histories=[],  # no training, no history: the summary leaves epochs empty
    output:
        f"{OUT}/networks/{{baseline}}.csv",
    log:
        f"{LOGS}/report/network_{{baseline}}.log",
    params:
        key="network",
        name=lambda wc: wc.baseline,
        seeds=" ".join(SEEDS),
