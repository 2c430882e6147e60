rule synthesize:
    output:
        directory(f"{OUT}/data/synthetic"),
    log:
        f"{LOGS}/synthesize.log",
    conda:
        CONDA_ENV
    params:
        patients=config["synthetic"]["patients"],
        seed=config["synthetic"]["seed"],
        size=lambda wc: (
            f"--height {config['synthetic']['height']} --width {config['synthetic']['width']}"
            if config["synthetic"]["height"] and config["synthetic"]["width"]
            else ""
        ),
        options=synth_options(),
    shell:
        "sonoseg synth {output} --patients {params.patients} --seed {params.seed} {params.size} {params.options} > {log} 2>&1"


rule synthesize_unmarked:
    # The same phantom without its calipers (the reliance runs' images: same patients, same speckle,
    # only the marks gone); only when the run sheet has such runs.
    output:
        directory(f"{OUT}/data/synthetic_unmarked"),
    log:
        f"{LOGS}/synthesize_unmarked.log",
    conda:
        CONDA_ENV
    params:
        patients=config["synthetic"]["patients"],
        seed=config["synthetic"]["seed"],
        size=lambda wc: (
            f"--height {config['synthetic']['height']} --width {config['synthetic']['width']}"
            if config["synthetic"]["height"] and config["synthetic"]["width"]
            else ""
        ),
        options=synth_options(calipers=False),
    shell:
        "sonoseg synth {output} --patients {params.patients} --seed {params.seed} {params.size} {params.options} > {log} 2>&1"


rule ingest:
    input:
        unpack(get_ingest_input),
    output:
        manifest=MANIFEST,
        provenance=f"{OUT}/data/manifest.json",
    log:
        f"{LOGS}/ingest.log",
    priority: runsheet.GATES_EVERY_JOB  # every job waits on the main dataset's manifest and split
    conda:
        CONDA_ENV
    params:
        options=get_dataset_options,
    shell:
        "sonoseg ingest --options {params.options:q} --fingerprint {input.fingerprint} --out {output.manifest} > {log} 2>&1"


rule split:
    input:
        unpack(get_split_file),
        manifest=MANIFEST,
    output:
        SPLIT,
    log:
        f"{LOGS}/split.log",
    priority: runsheet.GATES_EVERY_JOB
    conda:
        CONDA_ENV
    params:
        seed=config["split"]["seed"],
        fractions=" ".join(str(f) for f in config["split"]["fractions"]),
        split_file=lambda wc, input: f"--split-file {input.split_file}" if "split_file" in input.keys() else "",
        stratify=f"--stratify {config['split']['stratify']}" if config["split"]["stratify"] else "",
        folds=config["split"]["folds"],
    shell:
        "sonoseg split --manifest {input.manifest} --out {output} --seed {params.seed} --folds {params.folds} "
        "--fractions {params.fractions} {params.split_file} {params.stratify} > {log} 2>&1"


rule preprocess:
    input:
        unpack(get_preprocess_inputs),
    output:
        f"{OUT}/data/cache/{{marks}}/fold{{fold}}/{{part}}.npz",
    log:
        f"{LOGS}/preprocess/{{marks}}/fold{{fold}}/{{part}}.log",
    priority: runsheet.GATES_A_CHOICE  # every training and choice waits on the data
    conda:
        CONDA_ENV
    params:
        size=config["preprocess"]["size"],
        interpolation=config["preprocess"]["interpolation"],
        unmarked=unmarked_arg,
    shell:
        "sonoseg preprocess --manifest {input.manifest} --split {input.split} --part {wildcards.part} "
        "--fold {wildcards.fold} --marks {wildcards.marks} --size {params.size} "
        "--interpolation {params.interpolation} {params.unmarked} --out {output} > {log} 2>&1"


# External datasets (config external_datasets): ingested, split (every image a test image) and resized
# like the study's own, under external/<dataset>/; read by the external runs' predictions only.


rule ingest_external:
    input:
        fingerprint=lambda wc: source_record(f"external_{wc.dataset}"),
    output:
        manifest=f"{OUT}/{layout.EXTERNAL_MANIFEST}",
        provenance=f"{OUT}/{layout.EXTERNAL}/manifest.json",
    log:
        f"{LOGS}/ingest_external/{{dataset}}.log",
    priority: runsheet.GATES_A_CHOICE  # every training and choice waits on the data
    conda:
        CONDA_ENV
    params:
        options=lambda wc: json.dumps(external_options(wc.dataset), sort_keys=True),
    shell:
        "sonoseg ingest --options {params.options:q} --fingerprint {input.fingerprint} --out {output.manifest} > {log} 2>&1"


rule split_external:
    # Every image a test image, less any the main dataset (and, for a held-out set, the development
    # set) also holds: on_overlap says whether such an image fails the study or leaves it.
    input:
        manifest=f"{OUT}/{layout.EXTERNAL_MANIFEST}",
        against=lambda wc: list(overlap_datasets(wc).values()),
    output:
        split=f"{OUT}/{layout.EXTERNAL_SPLIT}",
        overlap=f"{OUT}/{layout.EXTERNAL_OVERLAP}",
    log:
        f"{LOGS}/split_external/{{dataset}}.log",
    priority: runsheet.GATES_A_CHOICE  # every training and choice waits on the data
    conda:
        CONDA_ENV
    params:
        against=lambda wc: named_paths(overlap_datasets(wc)),
        on_overlap=lambda wc: EXTERNALS[wc.dataset]["on_overlap"],
        distance=config["dataset"]["near_duplicate_distance"],
        similarity=config["dataset"]["near_duplicate_similarity"],
    shell:
        "sonoseg split --manifest {input.manifest} --external --dataset {wildcards.dataset} "
        "--against {params.against} --on-overlap {params.on_overlap} --near-duplicate-distance {params.distance} "
        "--near-duplicate-similarity {params.similarity} --overlap-out {output.overlap} --out {output.split} > {log} 2>&1"


rule preprocess_external:
    input:
        manifest=f"{OUT}/{layout.EXTERNAL_MANIFEST}",
        split=f"{OUT}/{layout.EXTERNAL_SPLIT}",
    output:
        f"{OUT}/{layout.EXTERNAL_CACHE}",
    log:
        f"{LOGS}/preprocess_external/{{dataset}}/{{marks}}.log",
    priority: runsheet.GATES_A_CHOICE  # every training and choice waits on the data
    conda:
        CONDA_ENV
    params:
        size=config["preprocess"]["size"],
        interpolation=config["preprocess"]["interpolation"],
    shell:
        "sonoseg preprocess --manifest {input.manifest} --split {input.split} --part test "
        "--marks {wildcards.marks} --size {params.size} --interpolation {params.interpolation} "
        "--out {output} > {log} 2>&1"
