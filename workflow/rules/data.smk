rule synthesize:
    output:
        directory(f"{OUT}/data/synthetic"),
    params:
        patients=config["synthetic"]["patients"],
        seed=config["synthetic"]["seed"],
        size=lambda wc: (
            f"--height {config['synthetic']['height']} --width {config['synthetic']['width']}"
            if config["synthetic"]["height"] and config["synthetic"]["width"]
            else ""
        ),
        options=synth_options(),
    log:
        f"{LOGS}/data/synthesize.log",
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    conda:
        CONDA_ENV
    shell:
        "sonoseg synth {output} --patients {params.patients} --seed {params.seed} {params.size} {params.options} > {log} 2>&1"


rule ingest:
    input:
        get_ingest_input,
    output:
        f"{OUT}/data/manifest.csv",
    params:
        options=get_dataset_options,
    log:
        f"{LOGS}/data/ingest.log",
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    conda:
        CONDA_ENV
    shell:
        "sonoseg ingest --options {params.options:q} --out {output} > {log} 2>&1"


rule split:
    input:
        manifest=f"{OUT}/data/manifest.csv",
        split_file=get_split_file,
    output:
        f"{OUT}/data/split.csv",
    params:
        seed=config["split"]["seed"],
        fractions=" ".join(str(f) for f in config["split"]["fractions"]),
        split_file=lambda wc, input: f"--split-file {input.split_file}" if input.split_file else "",
    log:
        f"{LOGS}/data/split.log",
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    conda:
        CONDA_ENV
    shell:
        "sonoseg split --manifest {input.manifest} --out {output} --seed {params.seed} "
        "--fractions {params.fractions} {params.split_file} > {log} 2>&1"


rule preprocess:
    input:
        manifest=f"{OUT}/data/manifest.csv",
        split=f"{OUT}/data/split.csv",
    output:
        f"{OUT}/data/cache/{{part}}.npz",
    params:
        size=config["preprocess"]["size"],
    log:
        f"{LOGS}/data/preprocess_{{part}}.log",
    resources:
        runtime=config["resources"]["light_runtime"],
        mem_mb=config["resources"]["light_mem_mb"],
    conda:
        CONDA_ENV
    shell:
        "sonoseg preprocess --manifest {input.manifest} --split {input.split} --part {wildcards.part} "
        "--size {params.size} --out {output} > {log} 2>&1"
