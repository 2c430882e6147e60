rule predict:
    input:
        model=f"{OUT}/models/{{network}}/seed{{seed}}/model.pt",
        data=f"{OUT}/data/cache/test.npz",
        manifest=f"{OUT}/data/manifest.csv",
    output:
        directory(f"{OUT}/predictions/{{network}}/seed{{seed}}"),
    log:
        f"{LOGS}/predict/{{network}}/seed{{seed}}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=uses_gpu(),
        gpu_slot=uses_gpu_slot(),
        runs_per_gpu=RUNS_PER_GPU,  # a resource, not a param: changing it never reruns a job
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    params:
        component_rule=config["predict"]["component_rule"],
        device=TRAIN["device"],
    shell:
        "sonoseg predict --model {input.model} --data {input.data} --manifest {input.manifest} "
        "--outdir {output} --component-rule {params.component_rule} --device {params.device} "
        "--runs-per-gpu {resources.runs_per_gpu} > {log} 2>&1"


rule evaluate:
    input:
        predictions=f"{OUT}/predictions/{{network}}/seed{{seed}}",
        manifest=f"{OUT}/data/manifest.csv",
        split=f"{OUT}/data/split.csv",
    output:
        f"{OUT}/metrics/{{network}}/seed{{seed}}.csv",
    log:
        f"{LOGS}/evaluate/{{network}}/seed{{seed}}.log",
    conda:
        CONDA_ENV
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    shell:
        "sonoseg evaluate --predictions {input.predictions} --manifest {input.manifest} --split {input.split} "
        "--out {output} > {log} 2>&1"


use rule predict as ladder_predict with:
    input:
        model=f"{OUT}/ladder/{{step}}/models/seed{{seed}}/model.pt",
        data=f"{OUT}/data/cache/test.npz",
        manifest=f"{OUT}/data/manifest.csv",
    output:
        directory(f"{OUT}/ladder/{{step}}/predictions/seed{{seed}}"),
    log:
        f"{LOGS}/ladder/{{step}}/predict_seed{{seed}}.log",


use rule evaluate as ladder_evaluate with:
    input:
        predictions=f"{OUT}/ladder/{{step}}/predictions/seed{{seed}}",
        manifest=f"{OUT}/data/manifest.csv",
        split=f"{OUT}/data/split.csv",
    output:
        f"{OUT}/ladder/{{step}}/metrics/seed{{seed}}.csv",
    log:
        f"{LOGS}/ladder/{{step}}/evaluate_seed{{seed}}.log",
