# One rule chain for every run of the sheet (common.smk: RUNS): recipe -> train -> predict (and
# score) -> summary. The kind of run (network, selection candidate, ladder step, floor) is a
# column of the sheet; the input functions pick what each kind reads. Training reads the train and
# validation caches only: the test split is never an input here, so neither the recipe
# selection nor early stopping can see it.


localrules:
    run_sheet,
    recipe,


rule run_sheet:
    # The run sheet as a person reads it: one row per run (sonoseg runs --configfile FILE prints it too).
    output:
        SHEET,
    log:
        f"{LOGS}/run_sheet.log",
    conda:
        CONDA_ENV
    params:
        # The config without the settings no run reads (checkpoint_seconds, runs_per_gpu: changing one redoes
        # nothing), as a file named by its digest: a changed config reruns the sheet, said in a short path.
        config=SHEET_CONFIG,
    shell:
        "sonoseg runs --config-json-file {params.config} --out {output} > {log} 2>&1"


rule recipe:
    input:
        unpack(get_recipe_inputs),
    output:
        f"{OUT}/{layout.RECIPE}",
    log:
        f"{LOGS}/recipe/{{run}}/fold{{fold}}.log",
    priority: run_priority  # a network's recipe, once its choices are made, gates its training
    conda:
        CONDA_ENV
    params:
        recipe=lambda wc: run_of(wc).recipe.to_json(),
        # The choices the run takes: the recipe selection's (--selection), the development set's (--augmentation).
        choices=lambda wc, input: " ".join(
            f"--{name} {input[name]}" for name in ("selection", "augmentation") if name in input.keys()
        ),
    shell:
        "sonoseg recipe --recipe {params.recipe:q} {params.choices} --out {output} > {log} 2>&1"


rule select_recipe:
    # A network's auto settings (learning rate, weight decay) in one fold: the candidate with the lowest
    # validation loss (sonoseg.training.selection).
    input:
        get_selection_candidates,
    output:
        f"{OUT}/{layout.SELECTION}",
    log:
        f"{LOGS}/select_recipe/{{network}}/fold{{fold}}.log",
    priority: runsheet.GATES_A_CHOICE
    conda:
        CONDA_ENV
    params:
        points=selection_points,
    shell:
        "sonoseg select-recipe --network {wildcards.network} --points {params.points} "
        "--histories {input} --out {output} > {log} 2>&1"


rule choose_augmentation:
    # A network's augmentation (ultrasound_augment: auto): the candidate with the higher Dice on the
    # development external set, by patient (sonoseg.training.augmentation_choice); nothing else is read.
    input:
        unpack(get_augmentation_metrics),
        manifest=lambda wc: layout.external_manifest(OUT, DEVELOPMENT),
    output:
        f"{OUT}/{layout.AUGMENTATION}",
    log:
        f"{LOGS}/choose_augmentation/{{network}}.log",
    priority: runsheet.GATES_A_CHOICE
    conda:
        CONDA_ENV
    params:
        metrics=lambda wc, input: " ".join(
            f"{option}={path}" for option in AUGMENTATION_CHOICES[wc.network] for path in input[option]
        ),
        dataset=DEVELOPMENT,
    shell:
        "sonoseg choose-augmentation --network {wildcards.network} --metrics {params.metrics} "
        "--manifest {input.manifest} --dataset {params.dataset} --out {output} > {log} 2>&1"


rule train:
    input:
        unpack(get_training_inputs),
    output:
        model=f"{TRAINING}/{layout.MODEL}",
        history=f"{TRAINING}/{layout.HISTORY}",
    log:
        f"{LOGS}/train/{layout.TRAINING_ID}.log",
    benchmark:
        f"{BENCH}/train/{layout.TRAINING_ID}.tsv"
    priority: run_priority
    retries: 1
    conda:
        CONDA_ENV
    threads: TRAIN["threads"]
    resources:
        gpu=uses_gpu,
        gpu_slot=uses_gpu_slot,
        runs_per_gpu=TRAIN["runs_per_gpu"],  # a resource, not a param: changing it never reruns a job
        checkpoint_seconds=TRAIN["checkpoint_seconds"],  # likewise: how often a checkpoint is written
    params:
        network=lambda wc: run_of(wc).method,
        # Outside the declared outputs: Snakemake's cleanup of a failed job must not delete it. Beside it the
        # training keeps its finished copy (seed<s>.finished/), which a rerun that is the same training adopts.
        checkpoint=lambda wc: f"{OUT}/{layout.CHECKPOINT.format(run=wc.run, fold=wc.fold, seed=wc.seed)}",
        device=TRAIN["device"],
        pretrained=lambda wc: (
            f"--pretrained-backbone {run_of(wc).pretrained_backbone}" if run_of(wc).pretrained_backbone else ""
        ),
        reuse=reuse_arg,
        custom=lambda wc: custom_networks_arg([run_of(wc).method], keys=("builder",)),
        code=lambda wc: NETWORK_CODE.get(run_of(wc).method, ""),  # not passed: its change reruns the training
    shell:
        "sonoseg train --network {params.network} --seed {wildcards.seed} --recipe {input.recipe} "
        "--train {input.train} --val {input.val} --model {output.model} --history {output.history} "
        "--checkpoint {params.checkpoint} --device {params.device} --threads {threads} {params.pretrained} "
        "{params.reuse} {params.custom} --runs-per-gpu {resources.runs_per_gpu} "
        "--checkpoint-seconds {resources.checkpoint_seconds} >> {log} 2>&1"


rule choose_postprocess:
    # Whether keeping one connected component helps this run's models, decided on the fold's validation
    # part only (every seed's model; sonoseg.training.postprocess); every prediction with them reads it.
    input:
        unpack(get_postprocess_inputs),
    output:
        f"{OUT}/{layout.POSTPROCESS}",
    log:
        f"{LOGS}/choose_postprocess/{{run}}/fold{{fold}}.log",
    priority: run_priority
    conda:
        CONDA_ENV
    threads: 1
    params:
        component_rule=config["predict"]["component_rule"],
        # predict.scales rides on this param (nothing when off), so that a study without it keeps its
        # jobs' params and shell text as they were: its finished jobs are not redone.
        device=TRAIN["device"] + SCALES_ARG,
    shell:
        "sonoseg choose-postprocess --model {input.models} --data {input.data} --manifest {input.manifest} "
        "--split {input.split} --fold {wildcards.fold} --component-rule {params.component_rule} "
        "--device {params.device} --out {output} > {log} 2>&1"


PREDICT = (
    "sonoseg predict {params.source} --manifest {input.manifest} --split {input.split} --fold {params.fold} "
    "--outdir {output.predictions} --metrics {output.metrics} {params.twin}"
    "--component-rule {params.component_rule} --device {params.device} "
    "--runs-per-gpu {resources.runs_per_gpu} > {log} 2>&1"
)


rule predict:
    # The run's test images segmented at their original size, and scored (Dice, HD95 per image, medpy)
    # in the same job. A run with a flip-averaged twin is predicted with it, below.
    input:
        unpack(get_prediction_inputs),
    output:
        predictions=directory(f"{TRAINING}/{layout.PREDICTIONS}"),
        metrics=f"{TRAINING}/{layout.METRICS}",
    log:
        f"{LOGS}/predict/{layout.TRAINING_ID}.log",
    wildcard_constraints:
        run=_alternatives(PREDICTED_ALONE),
    priority: run_priority
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=uses_gpu,
        gpu_slot=uses_gpu_slot,
        runs_per_gpu=TRAIN["runs_per_gpu"],  # a resource, not a param: changing it never reruns a job
    params:
        source=prediction_source,
        component_rule=config["predict"]["component_rule"],
        device=prediction_device,
        fold=test_fold,
        twin="",
    shell:
        PREDICT


# A network's training tested with its flip-averaged twin (predict.tta) at every place it is tested (its
# own test images, each external set), in one job: one process and one model load, and the plain
# probability is half of the flip average (two forward passes, not three). One rule per group of places
# (runsheet.flip_twin_groups), as the names put --tta and --on-<dataset> after the network's run.
# Without twins, a training's external sets share one job the same way (runsheet.external_groups).
for _places, _bases, _twinned in PREDICTION_GROUPS:
    # '_test' for the study's own test images, '_on_<dataset>' for each external set
    _where = "".join(re.sub(r"\W", "_", place.replace(runsheet.SEPARATOR, "_")) or "_test" for place in _places)
    _first_plain = runsheet.twin_names("{base}", _places[0])[0]  # the log is named after it

    rule:
        name:
            f"predict_with_flip_twins{_where}" if _twinned else f"predict{_where}"
        input:
            unpack(lambda wc, places=_places: get_places_inputs(wc, places)),
        output:
            **place_outputs(_places, _twinned),
        log:
            f"{LOGS}/predict/{layout.TRAINING_ID.format(run=_first_plain, fold='{fold}', seed='{seed}')}.log",
        wildcard_constraints:
            base=_alternatives(_bases),
        priority: lambda wc, places=_places: run_priority(plain_twin(wc, places[0]))
        conda:
            CONDA_ENV
        threads: 1
        resources:
            gpu=lambda wc, places=_places: uses_gpu(plain_twin(wc, places[0])),
            gpu_slot=lambda wc, places=_places: uses_gpu_slot(plain_twin(wc, places[0])),
            runs_per_gpu=TRAIN["runs_per_gpu"],
        params:
            postprocess=lambda wc, input: postprocess_arg(input) + SCALES_ARG,  # as prediction_source
            places=lambda wc, input, output, places=_places, twinned=_twinned: places_args(
                wc, input, output, places, twinned
            ),
            component_rule=config["predict"]["component_rule"],
            device=TRAIN["device"],
        shell:
            "sonoseg predict --model {input.model} {params.postprocess} {params.places} "
            "--component-rule {params.component_rule} --device {params.device} "
            "--runs-per-gpu {resources.runs_per_gpu} > {log} 2>&1"


rule summarize:
    # One run's per-seed summary; results/<study>/networks/<network>.csv is the target that trains and
    # evaluates one network alone (README).
    input:
        unpack(get_run_summary_inputs),
    output:
        f"{OUT}/{layout.SUMMARY}",
    log:
        f"{LOGS}/summarize/{{run}}.log",
    conda:
        CONDA_ENV
    params:
        study=lambda wc, output: layout.study_dir(output[0], layout.SUMMARY),
        run=lambda wc: run_json(run_of(wc)),
    shell:
        "sonoseg summarize --study-dir {params.study} --run-json {params.run} --out {output} > {log} 2>&1"
