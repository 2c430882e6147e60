"""What each `sonoseg` command does with its parsed arguments: hands them to the stage modules
(sonoseg.study.cli declares the commands and their arguments). No stage logic lives here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

from sonoseg.data.options import INGEST_SETTINGS, ingest_parameters
from sonoseg.data.provenance import write_text_atomic
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog
from sonoseg.serving.options import backend_for, check_device_name, shrinks

log = logging.getLogger("sonoseg")


def _json(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SonosegError(f"not valid JSON: {text[:80]!r} ({exc})") from None


def cmd_synth(args) -> None:
    from sonoseg.data import synth

    size = (args.height, args.width) if args.height and args.width else None
    options = synth.PhantomOptions(
        difficulty=args.difficulty,
        calipers=args.calipers == "true",
        caliper_noise=args.caliper_noise,
        organs=_json(args.organs) if args.organs else dict(synth.DEFAULT_ORGAN_WEIGHTS),
    )
    synth.write_dataset(args.outdir, args.patients, args.seed, size, options)
    log.info("wrote %d patients x 2 views to %s", args.patients, args.outdir)


def cmd_ingest(args) -> None:
    from sonoseg import data

    options = _json(args.options)
    # A key ingest() does not take would be ignored unseen (a typo running as the default): refused.
    unknown = sorted(set(options) - set(INGEST_SETTINGS) - {"root", "layout"})
    if unknown:
        raise SonosegError(
            f"ingest --options: unknown setting(s) {', '.join(unknown)}; known: "
            f"{', '.join(['root', 'layout', *INGEST_SETTINGS])}"
        )
    log.info("ingest on %d thread(s) (--threads)", args.threads)
    manifest = data.ingest(options["root"], options["layout"], **ingest_parameters(options), threads=args.threads)
    _write_csv(manifest, args.out)
    log.info("manifest: %s", args.out)
    if args.fingerprint:
        from sonoseg.data import provenance

        stamp = provenance.write_manifest_provenance(args.out, args.fingerprint)
        log.info(
            "dataset fingerprint %s (sonoseg %s, commit %s)",
            stamp["dataset_fingerprint"],
            stamp["sonoseg_version"],
            stamp["commit"],
        )


def cmd_fingerprint(args) -> None:
    from sonoseg.data import provenance
    from sonoseg.study import layout, runsheet

    config = load_config(args.configfile)
    pretrained = provenance.pretrained_sources(run.pretrained_backbone for run in runsheet.build(config))
    out = layout.study_folder(config["study"])
    check = provenance.check_study(config, out, rehash=args.rehash, pretrained=pretrained)
    for message in check.messages:
        print(message, file=sys.stderr)
    for name, record in check.records.items():
        print(f"{name}\t{record.fingerprint}\t{len(record.files) if record.settings is None else 'settings'}")
    log.info("hashed %d file(s) (the others were unchanged since the last check)", check.hashed)
    check.undo()  # a look, as a dry run is: the next run of the study still compares with the data it was made from


def register_custom_networks(custom_networks_json: str) -> None:
    """The config's custom_networks (a user's own networks), passed as JSON, into the catalog."""
    catalog.register_all(_json(custom_networks_json) if custom_networks_json else {})


def cmd_runs(args) -> None:
    from sonoseg.study import runsheet

    if args.config_json_file:
        try:
            args.config_json = Path(args.config_json_file).read_text()
        except OSError as exc:
            raise SonosegError(f"{args.config_json_file}: cannot read the config ({exc.strerror})") from None
    config = _json(args.config_json) if args.config_json else load_config(args.configfile)
    text = runsheet.to_tsv(runsheet.build(config))
    if runsheet.unused_overrides_note(config):
        log.warning(runsheet.unused_overrides_note(config))
    if args.out:
        write_text_atomic(args.out, text)
    else:
        sys.stdout.write(text)


def load_config(configfiles: list[str]) -> dict:
    """config/config.yaml with the given files merged over it and the schema's defaults filled in, as
    Snakemake does (run from the workflow's folder)."""
    import yaml
    from snakemake.utils import update_config, validate

    config = {}
    for path in ["config/config.yaml", *configfiles]:
        try:
            read = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise SonosegError(
                f"{path}: cannot read the config ({exc.strerror}); run from the workflow's folder"
            ) from None
        except yaml.YAMLError as exc:
            raise SonosegError(f"{path}: not a readable YAML config ({exc})") from None
        # As Snakemake refuses it (without naming the file): an empty file, or a list, is no config; an empty one
        # read as nothing gave the paper study's run sheet, and `fingerprint` hashed its data.
        if not isinstance(read, dict):
            raise SonosegError(
                f"{path}: {'empty' if read is None else 'not a mapping of keys'}: a config file "
                "holds top-level keys (dataset:, networks:, ...)"
            )
        update_config(config, read)
    from sonoseg.study import config_check

    config_check.clear_nulls(config)
    found = config_check.problems(config, config_check.load_schema("workflow/schemas/config.schema.yaml"))
    if found:
        raise SonosegError(config_check.message(found))
    validate(config, "workflow/schemas/config.schema.yaml")
    return config


def cmd_recipe(args) -> None:
    from sonoseg.training import recipe

    final = recipe.resolve(recipe.Recipe.from_json(args.recipe), args.selection or None, args.augmentation or None)
    final.write(args.out)
    log.info("recipe: %s", final.to_json())


def cmd_split(args) -> None:
    from sonoseg import data
    from sonoseg.data import split

    samples = data.included(data.read_manifest(args.manifest))
    overlap_options = (
        args.against,
        args.overlap_out,
        args.on_overlap,
        args.near_duplicate_distance,
        args.near_duplicate_similarity,
    )
    if not args.external and any(option not in (None, "", []) for option in overlap_options):
        raise SonosegError(
            "split: --against, --on-overlap, --near-duplicate-* and --overlap-out are for an external dataset's "
            "split (--external)"
        )
    if args.external and args.split_file:
        raise SonosegError("split: --external tests every image of an external dataset; --split-file is the study's")
    if args.external:
        result = _external_split(samples, args)
    elif args.split_file:
        if args.folds != 1:
            raise SonosegError("split.file gives one split: it cannot be combined with split.folds > 1")
        result = split.user_split(samples, args.split_file)
    else:
        result = split.fold_split(samples, args.seed, args.folds, tuple(args.fractions), args.stratify or None)
    if not (args.split_file or args.external):  # a split file's parts are checked as it is read
        split.check_dealt(result, samples, args.folds, args.fractions)
    _write_csv(result, args.out)
    log.info("split (patient groups / samples):\n%s", split.part_counts(result).to_string())


def _external_split(samples, args):
    """Every included sample a test image, less what the datasets given by --against also hold."""
    from sonoseg import data
    from sonoseg.data import duplicates, overlap, split

    others = dict(_name_value(item, "--against") for item in args.against)
    if len(others) != len(args.against):
        raise SonosegError(f"split --against: a dataset is named twice in {args.against}")
    found = overlap.find_overlap(
        samples,
        {name: data.included(data.read_manifest(path)) for name, path in others.items()},
        duplicates.DEFAULT_DUPLICATE_DISTANCE if args.near_duplicate_distance is None else args.near_duplicate_distance,
        duplicates.DEFAULT_DUPLICATE_SIMILARITY
        if args.near_duplicate_similarity is None
        else args.near_duplicate_similarity,
        args.threads,
    )
    if args.overlap_out:
        _write_csv(found, args.overlap_out)
    return overlap.apply_policy(split.external_split(samples), found, args.on_overlap or "fail", args.dataset)


def cmd_preprocess(args) -> None:
    from sonoseg.data import preprocess, provenance, split

    samples = split.samples_of_part(args.manifest, args.split, args.part, args.fold)
    if samples.empty:
        raise SonosegError(f"{args.split}: the {args.part} split of fold {args.fold} is empty")
    fingerprint = provenance.read_manifest_provenance(args.manifest)["dataset_fingerprint"]
    unmarked = (args.dataset_root, args.unmarked_images) if args.unmarked_images else None
    count = preprocess.build_cache(
        samples, args.size, args.out, args.interpolation, args.marks, fingerprint, unmarked=unmarked
    )
    log.info(
        "cached %d %s images of fold %d at %dx%d (%s, marks %s) in %s",
        count,
        args.part,
        args.fold,
        args.size,
        args.size,
        args.interpolation,
        args.marks,
        args.out,
    )


def _gpu_slot(device: str, runs_per_gpu: int = 1):
    """Take a GPU slot before torch starts CUDA (only when a GPU may be used)."""
    if device == "cpu":
        return None
    from sonoseg.serving import gpu

    return gpu.acquire_slot(runs_per_gpu=runs_per_gpu)[1]


# `SONOSEG_ADOPT_FINISHED=0 snakemake ... --forcerun train` trains again what a rerun would adopt; an
# environment variable, not a rule's resource or param, so that neither a profile's resources nor the
# jobs' recorded commands change with it.
ADOPT_FINISHED_VARIABLE = "SONOSEG_ADOPT_FINISHED"


def cmd_train(args) -> None:
    from sonoseg.training import reuse, train
    from sonoseg.training.recipe import Recipe

    if len(args.reuse_models) != len(args.reuse_histories):
        raise SonosegError("--reuse-models and --reuse-histories must name as many files each")
    if args.adopt_finished not in ("0", "1"):
        raise SonosegError(f"${ADOPT_FINISHED_VARIABLE} is {args.adopt_finished!r}: 0 (train again) or 1 (adopt)")
    finished = args.finished_copy or (reuse.finished_copy_beside(args.checkpoint) if args.checkpoint else None)
    # One process per training (a training outlives a kill -9 of Snakemake), before a GPU slot is taken (a training
    # waiting for another would hold one idle); a stopped and resumed training's log keeps every attempt.
    with reuse.training_held(args.checkpoint):
        slot = _gpu_slot(args.device, args.runs_per_gpu)  # noqa: F841 - held until the process ends
        with reuse.attempts_log(args.checkpoint):
            train.train(
                network=args.network,
                seed=args.seed,
                train_data=args.train,
                val_data=args.val,
                recipe=Recipe.read(args.recipe),
                model_out=args.model,
                history_out=args.history,
                checkpoint=args.checkpoint or None,
                checkpoint_seconds=args.checkpoint_seconds,
                device=args.device,
                threads=args.threads,
                pretrained_backbone=args.pretrained_backbone or None,
                reusable=list(zip(args.reuse_models, args.reuse_histories)),
                finished_copy=finished,
                adopt_finished=args.adopt_finished == "1",
            )


def _point(text: str) -> dict[str, float]:
    """A candidate's settings as the workflow passes them: name=value[,name=value]."""
    try:
        return {name: float(value) for name, value in (item.split("=", 1) for item in text.split(","))}
    except ValueError:
        raise SonosegError(f"--points: {text!r} is not name=value[,name=value]") from None


def cmd_select_recipe(args) -> None:
    from sonoseg.training import selection

    if len(args.points) != len(args.histories):
        raise SonosegError(f"--points names {len(args.points)} candidates, --histories {len(args.histories)}")
    candidates = [(_point(point), history) for point, history in zip(args.points, args.histories)]
    chosen, table = selection.write_selection(args.network, candidates, args.out)
    log.info("%s: %s chosen by %s\n%s", args.network, chosen, selection.CRITERION, table.to_string())


PER_TEST_SET = ("data", "manifest", "split", "fold", "outdir", "metrics", "tta_outdir", "tta_metrics")


def test_sets(args) -> list[SimpleNamespace]:
    """predict's test sets: its per-set options give one value each, in the same order (the study's
    own test images and each external set, for one model: one process and one model load for all)."""
    count = len(args.outdir)
    given = {}
    for name in PER_TEST_SET:
        values = getattr(args, name)
        if values and len(values) != count:  # (--manifest and --split are required by the parser)
            option = "--" + name.replace("_", "-")
            raise SonosegError(f"predict: {option} gives {len(values)} values for {count} test sets (--outdir)")
        given[name] = values or [0 if name == "fold" else ""] * count  # left out: fold 0, or none
    return [SimpleNamespace(**{name: given[name][i] for name in PER_TEST_SET}) for i in range(count)]


def _refuse_scale_rules_without_their_base(args) -> None:
    """--shrink-above decides which images --scales tries smaller: without scales below 1 it would do
    nothing, silently (and segment would apply the recorded ones instead); --shrink-found-above is a
    trigger of that rule, nothing without it."""
    if args.shrink_above is not None and not shrinks(args.scales or ()):
        raise SonosegError("--shrink-above is a rule of --scales: give scales below 1 with it")
    if args.shrink_found_above is not None and args.shrink_above is None:
        raise SonosegError("--shrink-found-above is a trigger of the size-aware rule: give --shrink-above with it")


def cmd_predict(args) -> None:
    from sonoseg.data import split

    _refuse_scale_rules_without_their_base(args)

    sets = test_sets(args)
    for test in sets:  # every set's test part read (and checked) before waiting for a GPU slot
        test.samples = split.samples_of_part(test.manifest, test.split, "test", test.fold)
    if args.baseline and any(test.tta_outdir for test in sets):
        raise SonosegError("predict: a floor has no flip-averaged twin; --tta-outdir is for a trained network")
    if any(test.tta_metrics and not test.tta_outdir for test in sets):
        raise SonosegError("predict: --tta-metrics scores the masks of --tta-outdir; give both")
    if args.baseline:
        from sonoseg.networks import baseline
    elif not (args.model and all(test.data for test in sets)):
        raise SonosegError("predict: give --model and --data (a trained network), or --baseline NAME (a floor)")
    else:
        slot = _gpu_slot(args.device, args.runs_per_gpu)  # noqa: F841 - held until the process ends
        from sonoseg.serving import infer, modelio

        predictor = infer.model_predictor(args.model, args.device, "train.device")  # once for every test set
        postprocess = (
            modelio.chosen_postprocess(args.postprocess_choice) if args.postprocess_choice else args.postprocess
        )
    from sonoseg.data.provenance import sonoseg_commit

    made_by = sonoseg_commit()  # asked of git once a job, not once a scored folder
    for test in sets:
        samples = test.samples
        if args.baseline:
            # A floor fitted on data (the position prior) sees the training part only, never the test images' masks.
            needs_training = args.baseline in baseline.NEEDS_TRAINING
            train = split.samples_of_part(test.manifest, test.split, "train", test.fold) if needs_training else None
            count = baseline.predict(
                args.baseline, samples, test.outdir, args.component_rule, train_samples=train, marks=args.marks
            )
        else:
            count = infer.predict(
                args.model,
                test.data,
                samples,
                test.outdir,
                args.component_rule,
                args.device,
                reliance=args.reliance,
                tta=args.tta,
                postprocess=postprocess,
                tta_outdir=test.tta_outdir or None,
                predictor=predictor,
                scales=tuple(args.scales),
                shrink_above=args.shrink_above,
                shrink_found_above=args.shrink_found_above,
            )
        log.info(
            "wrote %d predictions to %s", count, test.outdir + (f" and {test.tta_outdir}" if test.tta_outdir else "")
        )
        # Scored in the same process: one job per model, not one more per scoring. Each row says the rule its
        # mask was made with: a validation choice of `none` departs from the paper's one lesion (the tables mark it).
        applied = "keep_one" if args.baseline else postprocess  # a floor keeps one component, whatever the setting
        for outdir, metrics in ((test.outdir, test.metrics), (test.tta_outdir, test.tta_metrics)):
            if metrics:
                from sonoseg.analysis import evaluate

                # ... and the code that made and scored it: an upgrade's rerun keeps the predictions it need not redo
                scored = evaluate.evaluate(outdir, samples).assign(postprocess=applied, prediction_commit=made_by)
                _write_metrics(scored, metrics)


def cmd_choose_augmentation(args) -> None:
    from sonoseg.training import augmentation_choice

    grouped: dict[str, list[str]] = {}
    for item in args.metrics:
        name, path = _name_value(item, "--metrics")
        grouped.setdefault(name, []).append(path)
    choice = augmentation_choice.choose(args.network, grouped, args.manifest, args.dataset)
    augmentation_choice.write_choice(choice, args.out)
    log.info("%s: %s augmentation (development-set Dice %s)", args.network, choice["chosen_name"], choice["dice"])


def cmd_choose_postprocess(args) -> None:
    from sonoseg.data import split
    from sonoseg.training import postprocess

    _refuse_scale_rules_without_their_base(args)

    samples = split.samples_of_part(args.manifest, args.split, "val", args.fold)
    table = postprocess.validation_dice(
        args.model,
        args.data,
        samples,
        args.component_rule,
        args.device,
        scales=tuple(args.scales),
        shrink_above=args.shrink_above,
        shrink_found_above=args.shrink_found_above,
    )
    choice = postprocess.choose(table)
    # The scale selection its probabilities were made with: what a later `segment` of these models applies
    # unless told otherwise (sonoseg.serving.modelio.RecordedChoice.scales).
    choice["scales"] = [float(f) for f in args.scales]
    choice["shrink_above"] = args.shrink_above
    choice["shrink_found_above"] = args.shrink_found_above
    # The run's number of folds: a run folder served away from its study's run sheet is checked against it
    # (a missing last fold is not seen in the fold numbers alone; sonoseg.serving.modelio.ensemble_members).
    choice["folds"] = split.fold_count(args.split)
    choice["fingerprints"] = postprocess.training_fingerprints(args.model)  # which trainings the choice was made with
    postprocess.write_choice(choice, args.out)
    log.info("post-processing %s (validation Dice %s)", choice["chosen"], choice["validation_dice"])


def cmd_segment(args) -> None:
    _refuse_scale_rules_without_their_base(args)
    args.backend = backend_for(args.model, args.backend)  # an exported graph: ONNX Runtime
    check_device_name(args.device, "--device")  # before waiting for a GPU slot
    slot = _gpu_slot(args.device) if args.backend == "torch" else None  # noqa: F841
    from sonoseg.serving import segmenter
    from sonoseg.serving.mask_files import RECORD_NAME

    result = segmenter.segment_images(
        args.model,
        args.images,
        args.outdir,
        args.component_rule,
        args.device,
        args.size,
        args.backend,
        args.threads,
        progress=not args.no_progress and _on_a_terminal(sys.stderr),
        tta=args.tta,
        postprocess=args.postprocess,
        scales=tuple(args.scales) if args.scales else None,
        shrink_above=args.shrink_above,
        shrink_found_above=args.shrink_found_above,
        **({"max_pixels": args.max_pixels} if args.max_pixels else {}),  # else segment_images' default
    )
    replaced = f", {result.replaced} of them in place of an earlier run's" if result.replaced else ""
    log.info("wrote %d masks to %s (%s)%s", len(result.written), args.outdir, args.backend, replaced)
    if result.not_segmented:  # each named, with its reason, in the record; the lines before said which
        log.info(
            "%d other file(s) or folder(s) in the folders given were not segmented (listed with the reason under "
            "not_segmented in %s)",
            len(result.not_segmented),
            Path(args.outdir) / RECORD_NAME,
        )
    if result.failed:
        raise SonosegError(
            f"{len(result.failed)} of {len(result.failed) + len(result.written)} images failed: "
            + "; ".join(message for _, message in result.failed)
        )


def cmd_export(args) -> None:
    from sonoseg.serving import export

    export.export(args.model, args.out, args.component_rule, args.size)


def cmd_cost(args) -> None:
    from sonoseg.serving import cost

    table = cost.cost_table(
        args.networks, args.size, args.backend, args.threads, args.repeats, args.warmup, prepared=args.prepared
    )
    _write_csv(table, args.out)
    log.info(
        "cost at %dx%d, batch 1, %s, %d threads, %s:\n%s",
        args.size,
        args.size,
        args.backend,
        args.threads,
        table["cpu"].iloc[0],
        table.drop(columns=["cpu"]).to_string(index=False),
    )


def cmd_cost_prepare(args) -> None:
    from sonoseg.serving import cost

    cost.prepare(args.networks, args.size, args.backend, args.out_dir)


def cmd_evaluate(args) -> None:
    from sonoseg.analysis import evaluate
    from sonoseg.data import split

    samples = split.samples_of_part(args.manifest, args.split, "test", args.fold)
    _write_metrics(evaluate.evaluate(args.predictions, samples), args.out)


def _on_a_terminal(stream) -> bool:
    """Whether a progress bar has a reader: ``stream`` a terminal. One piped to a reader that quits (`2>&1 |
    head`), closed (`2>&-`) or full (/dev/full) stopped segment mid-run at the bar's next write, its masks
    unwritten; a log file gains nothing from a bar's redraws."""
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # a closed stream
        return False


def _write_metrics(metrics, out) -> None:
    _write_csv(metrics, out)
    log.info(
        "%d test images: mean Dice %.4f, mean HD95 %.2f px (%d penalised empty cases)",
        len(metrics),
        metrics["dice"].mean(),
        metrics["hd95_px"].mean(),
        metrics["hd95_policy"].str.startswith("penalty").sum(),
    )


def cmd_summarize(args) -> None:
    from sonoseg.analysis import tables

    summary = tables.summarize(args.study_dir, _json(args.run_json))
    _write_csv(summary, args.out)


def cmd_collect(args) -> None:
    from sonoseg.analysis import results

    rows = results.sheet_rows(results.read_sheet(args.sheet), args.runs)
    external = dict(_name_value(item, "--external-manifest") for item in args.external_manifest)
    evaluated = [r for r in rows if r["kind"] != "candidate"]
    per_image = results.collect_per_image(args.study_dir, evaluated, args.manifest, external)
    results.write_table(per_image, args.per_image)
    trainings = results.collect_trainings(args.study_dir, rows)
    results.write_table(trainings, args.trainings)
    log.info("collected %d per-image rows of %d runs, %d trainings", len(per_image), len(rows), len(trainings))


def _name_value(text: str, option: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SonosegError(f"{option}: {text!r} is not NAME=VALUE")
    return name, value


def cmd_generalization(args) -> None:
    from sonoseg.analysis import generalization, results

    manifest = _manifest_given(args.manifest)  # before anything is read or written
    per_image = results.read_per_image(args.per_image)
    roles = dict(_name_value(item, "--datasets") for item in args.datasets)
    table = generalization.generalization_table(per_image, args.networks, roles, args.seed)
    notes = _left_out_notes(args) + generalization.lesionless_notes(table)
    source = results.source_line(manifest, per_image)
    generalization.write(table, args.out, notes, source)
    log.info("generalization:\n%s", generalization.markdown(table, notes, source))


def cmd_subgroups(args) -> None:
    from sonoseg.analysis import results, subgroups

    manifest = _manifest_given(args.manifest)  # before anything is read or written
    per_image = results.read_per_image(args.per_image)
    roles = dict(_name_value(item, "--datasets") for item in args.datasets)
    table = subgroups.subgroup_table(per_image, args.networks, args.columns, roles, args.seed)
    absent = subgroups.absent_columns(per_image, args.columns)
    available = subgroups.available_columns(per_image)
    for column in absent:
        log.warning(
            "subgroups: no image of any dataset has a value in %r (columns there are: %s)", column, ", ".join(available)
        )
    source = results.source_line(manifest, per_image)
    subgroups.write(table, args.out, subgroups.caption(table, absent, available, source, configured=bool(args.columns)))
    log.info("subgroups: %d rows", len(table))


def _left_out_notes(args) -> list[str]:
    """A caption's sentences: what each external set's ingest left out (--manifests NAME=manifest.csv) and
    what its tests left out as shared with another dataset (--overlap NAME=overlap.csv)."""
    from sonoseg import data
    from sonoseg.analysis import generalization
    from sonoseg.data import overlap

    ingest = [
        generalization.ingest_note(data.read_manifest(manifest_csv), dataset)
        for dataset, manifest_csv in (_name_value(item, "--manifests") for item in args.manifests)
    ]
    tests = [
        overlap.describe(overlap.read_record(record_csv), dataset)
        for dataset, record_csv in (_name_value(item, "--overlap") for item in args.overlap)
    ]
    return ingest + tests


def cmd_table(args) -> None:
    from sonoseg.analysis import tables

    manifest = _manifest_given(args.manifest)  # before anything is read or written
    tables.study_table(
        args.kind,
        args.summaries,
        args.out,
        args.input_size,
        args.input_interpolation,
        args.ladder_network,
        args.cost or None,
        _per_image(args),
        manifest,
        args.seed,
    )


def _per_image(args):
    """The collected per-image table (--per-image), the rows of --runs when given; None without one."""
    from sonoseg.analysis import results

    if not getattr(args, "per_image", ""):
        return None
    return results.read_per_image(args.per_image, getattr(args, "runs", None) or None)


def cmd_paired(args) -> None:
    from sonoseg.analysis import comparisons, results
    from sonoseg.training.augmentation_choice import read_record

    manifest = _manifest_given(args.manifest)  # before anything is read or written
    pairs = [tuple(pair.split(":", 1)) for pair in args.pairs]
    adopted = [comparisons.adoption_sentence(read_record(path), takers) for path, *takers in args.choice]
    per_image = _per_image(args)
    table = comparisons.paired_runs(per_image, pairs, args.seed, args.family)
    comparisons.write_paired(table, args.out, args.family, results.source_line(manifest, per_image), adopted)
    log.info("%s (method - reference):\n%s", args.family, table.to_string(index=False))


def _write_csv(table, path) -> None:
    """A command's CSV, written whole or not at all (results.write_table): a kill or a full disk never leaves
    one cut short mid-row where the next job reads it."""
    from sonoseg.analysis.results import write_table

    write_table(table, path)


def _manifest_given(manifest: str | None) -> str | None:
    """The study's manifest a command was given (None when none was): a path that is not there is refused
    before anything is written (a mistyped one captioned a table "Data fingerprint unknown"). The reader
    behind it stays lenient, for the planning, where a manifest not yet made is no error."""
    if manifest and not Path(manifest).is_file():
        raise SonosegError(f"{manifest}: manifest not found (--manifest: the study's data/manifest.csv)")
    if not manifest:  # allowed (a table of per-image rows from elsewhere), but said: the caption loses its source
        log.warning(
            "no --manifest: the caption names neither the data's fingerprint nor the commits that made the "
            "numbers (give the study's data/manifest.csv)"
        )
    return manifest or None


def _data_fingerprint(manifest: str) -> str:
    """The dataset fingerprint a table's caption names, read from the study's manifest given (_manifest_given)."""
    from sonoseg.data import provenance

    if not manifest:
        raise SonosegError("--manifest: the study's data/manifest.csv, whose data fingerprint the caption names")
    return provenance.read_manifest_provenance(_manifest_given(manifest))["dataset_fingerprint"]


def cmd_equivalence(args) -> None:
    from sonoseg.analysis import comparisons, results

    origin = _data_fingerprint(args.manifest)
    pairs = [tuple(pair.split(":", 1)) for pair in args.pairs]
    per_image = _per_image(args)
    table = comparisons.equivalence_table(per_image, pairs, args.margin, args.seed)
    comparisons.write_equivalence(table, args.out, args.margin, results.caption_from(origin, per_image))
    log.info("equivalence claims (margin %g):\n%s", args.margin, table.to_string(index=False))


def cmd_convergence(args) -> None:
    from sonoseg.analysis import comparisons, results

    pairs = [tuple(pair.split(":", 1)) for pair in args.pairs]
    # The checked seed of both sides of every pair (the base run may have more seeds).
    rows = results.sheet_rows(results.read_sheet(args.sheet), [run for pair in pairs for run in pair])
    rows = [{**row, "seeds": str(args.check_seed)} for row in rows]
    per_image = results.collect_per_image(args.study_dir, rows, args.manifest)
    trainings = results.collect_trainings(args.study_dir, rows)
    table = comparisons.convergence_table(per_image, trainings, pairs, args.margin, args.seed)
    _write_csv(table, args.out)
    log.info("convergence check (margin %g):\n%s", args.margin, table.to_string(index=False))


def cmd_selection_table(args) -> None:
    from sonoseg.data import provenance
    from sonoseg.training import selection

    fingerprint = _data_fingerprint(args.manifest) if args.manifest else "unknown"
    table = selection.choices_table(args.choices)
    _write_csv(table, args.out)
    write_text_atomic(
        Path(args.out).with_suffix(".md"), selection.choices_markdown(table, provenance.caption_line(fingerprint))
    )


def cmd_report_data(args) -> None:
    from sonoseg.analysis import figures, pages

    pages.data_overview(args.manifest, args.split, args.overview)
    figures.sample_grid(args.manifest, args.split, args.samples, seed=args.seed)
    if args.marks:
        figures.marks_examples(args.manifest, args.marks)


def cmd_report_table(args) -> None:
    from sonoseg.analysis import pages

    pages.study_table_html(args.table, args.kind, args.out)


def cmd_report_generalization(args) -> None:
    from sonoseg.analysis import generalization, results

    table = generalization.read(args.table)
    notes = _left_out_notes(args) + generalization.lesionless_notes(table)
    generalization.plot(table, args.out, notes, results.written_source(args.table))


def cmd_report_curves(args) -> None:
    from sonoseg.analysis import figures

    figures.training_curves(args.study_dir, _json(args.run_json), args.out)


def cmd_report_figure2(args) -> None:
    from sonoseg.analysis import figures

    per_image = _per_image(args)
    log.info(figures.figure2(args.manifest, per_image, args.study_dir, args.out, args.seed))
    if args.all_methods:
        figures.figure2(args.manifest, per_image, args.study_dir, args.all_methods, args.seed, every_method=True)


def cmd_report_cost(args) -> None:
    from sonoseg.analysis import figures, results

    manifest = _manifest_given(args.manifest)  # before anything is read or written
    per_image = _per_image(args)
    figures.cost_accuracy(
        per_image,
        args.out,
        args.cost,
        args.summaries,
        True,
        args.seed,
        front_csv=args.front_csv,
        front_html=args.front_table,
        source=results.source_line(manifest, per_image),
    )


def cmd_report_statistics(args) -> None:
    from sonoseg.analysis import figures, results

    manifest = _manifest_given(args.manifest)
    per_image = _per_image(args)
    figures.distributions(per_image, args.distributions, results.source_line(manifest, per_image))
    figures.paired_statistics(per_image, manifest, args.csv, args.table, args.forest, args.seed)


def cmd_models(args) -> None:
    from sonoseg.networks import models

    for name in models.names():
        print(f"{name:28s} {models.count_parameters(models.build(name)):>12,d}  {catalog.label(name)}", flush=True)
