# Training reads the train and validation caches only: the test split is never an input here,
# so neither the weight-decay selection nor early stopping can see it.


rule train:
    input:
        unpack(get_weight_decay_choice),
        train=f"{OUT}/data/cache/train.npz",
        val=f"{OUT}/data/cache/val.npz",
    output:
        model=f"{OUT}/models/{{network}}/seed{{seed}}/model.pt",
        history=f"{OUT}/models/{{network}}/seed{{seed}}/history.csv",
    log:
        f"{LOGS}/train/{{network}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{network}}/seed{{seed}}.tsv"
    retries: 1
    conda:
        CONDA_ENV
    threads: TRAIN["threads"]
    resources:
        gpu=uses_gpu(),
        gpu_slot=uses_gpu_slot(),
        runs_per_gpu=RUNS_PER_GPU,  # a resource, not a param: changing it never reruns a job
        runtime=config["resources"]["train_runtime"],
        mem_mb=config["resources"]["train_mem_mb"],
    params:
        network=lambda wc: wc.network,
        seed=lambda wc: wc.seed,
        recipe=lambda wc: recipe_for(wc.network).to_json(),
        weight_decay=lambda wc, input: f"--weight-decay-file {input.wd}" if "wd" in input.keys() else "",
        # Outside the declared outputs: Snakemake's cleanup of a failed job must not delete it.
        checkpoint=lambda wc: f"{OUT}/checkpoints/models/{wc.network}/seed{wc.seed}.pt",
        device=TRAIN["device"],
        pretrained=lambda wc: pretrained_arg(wc.network),
    shell:
        "sonoseg train --network {params.network} --seed {params.seed} --train {input.train} --val {input.val} "
        "--recipe {params.recipe:q} {params.weight_decay} --model {output.model} --history {output.history} "
        "--checkpoint {params.checkpoint} --device {params.device} --threads {threads} {params.pretrained} "
        "--runs-per-gpu {resources.runs_per_gpu} "
        ">> {log} 2>&1"


use rule train as train_weight_decay_candidate with:
    input:
        train=f"{OUT}/data/cache/train.npz",
        val=f"{OUT}/data/cache/val.npz",
    output:
        model=f"{OUT}/weight_decay/{{network}}/wd{{decay}}/model.pt",
        history=f"{OUT}/weight_decay/{{network}}/wd{{decay}}/history.csv",
    log:
        f"{LOGS}/weight_decay/{{network}}/wd{{decay}}.log",
    benchmark:
        f"{BENCH}/weight_decay/{{network}}/wd{{decay}}.tsv"
    params:
        network=lambda wc: wc.network,
        seed=TRAIN["weight_decay_seed"],
        recipe=lambda wc: recipe_for(wc.network, {"weight_decay": float(wc.decay)}).to_json(),
        weight_decay="",
        checkpoint=lambda wc: f"{OUT}/checkpoints/weight_decay/{wc.network}/wd{wc.decay}.pt",
        device=TRAIN["device"],
        pretrained=lambda wc: pretrained_arg(wc.network),


rule select_weight_decay:
    input:
        get_weight_decay_histories,
    output:
        f"{OUT}/weight_decay/{{network}}/selected.json",
    log:
        f"{LOGS}/weight_decay/{{network}}/select.log",
    conda:
        CONDA_ENV
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    params:
        decays=" ".join(DECAYS),
    shell:
        "sonoseg select-weight-decay --network {wildcards.network} --decays {params.decays} "
        "--histories {input} --out {output} > {log} 2>&1"


# The chosen candidate of the weight-decay selection already is that network's run with the candidates'
# seed (same network, seed, recipe, data and device; on a CPU training it again gives the same bytes, as
# the determinism tests show), so that seed's final model is the candidate's, not a second training.
rule adopt_weight_decay_candidate:
    input:
        unpack(get_weight_decay_candidates),
        selected=f"{OUT}/weight_decay/{{network}}/selected.json",
    output:
        model=f"{OUT}/models/{{network}}/seed{{seed}}/model.pt",
        history=f"{OUT}/models/{{network}}/seed{{seed}}/history.csv",
    log:
        f"{LOGS}/train/{{network}}/seed{{seed}}.log",
    wildcard_constraints:
        network=_alternatives(WEIGHT_DECAY_NETWORKS),
        seed=_alternatives(ADOPTED_SEEDS),
    conda:
        CONDA_ENV
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    params:
        decays=" ".join(DECAYS),
    shell:
        "sonoseg adopt-weight-decay --selected {input.selected} --decays {params.decays} --models {input.models} "
        "--histories {input.histories} --model {output.model} --history {output.history} > {log} 2>&1"


ruleorder: adopt_weight_decay_candidate > train


use rule train as ladder_train with:
    input:
        train=f"{OUT}/data/cache/train.npz",
        val=f"{OUT}/data/cache/val.npz",
    output:
        model=f"{OUT}/ladder/{{step}}/models/seed{{seed}}/model.pt",
        history=f"{OUT}/ladder/{{step}}/models/seed{{seed}}/history.csv",
    log:
        f"{LOGS}/ladder/{{step}}/train_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/ladder/{{step}}/train_seed{{seed}}.tsv"
    params:
        network=LADDER["network"],
        seed=lambda wc: wc.seed,
        recipe=lambda wc: ladder_recipe(wc.step).to_json(),
        weight_decay="",
        checkpoint=lambda wc: f"{OUT}/checkpoints/ladder/{wc.step}/seed{wc.seed}.pt",
        device=TRAIN["device"],
        pretrained="",
