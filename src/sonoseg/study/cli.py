"""The sonoseg command-line tool: parses arguments and calls the stage modules. Every Snakemake
rule is one of these commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from sonoseg.data.options import CACHE_MARKS, INTERPOLATIONS, MARKS, PARTS
from sonoseg.errors import SonosegError
from sonoseg.networks import catalog
from sonoseg.serving.options import BACKENDS, COMPONENT_RULES

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


INGEST_SETTINGS = {  # config key (dataset section) -> sonoseg.data.ingest parameter
    "on_bad_sample": "on_bad_sample",
    "csv": "dataset_csv",
    "include_normal": "include_normal",
    "pixel_spacing": "pixel_spacing",
    "near_duplicate_distance": "near_duplicate_distance",
    "near_duplicate_similarity": "near_duplicate_similarity",
}


def cmd_ingest(args) -> None:
    from sonoseg import data

    options = _json(args.options)
    # The config's dataset keys that are ingest() settings; a key left out keeps ingest()'s default
    # (the schema's defaults, which a test holds equal to those).
    settings = {parameter: options[key] for key, parameter in INGEST_SETTINGS.items() if key in options}
    manifest = data.ingest(options["root"], options["layout"], **settings)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(args.out, index=False)
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
    from sonoseg.study import runsheet

    config = load_config(args.configfile)
    pretrained = provenance.pretrained_sources(run.pretrained_backbone for run in runsheet.build(config))
    out = f"results/{config['study']}"
    check = provenance.check_study(config, out, rehash=args.rehash, pretrained=pretrained)
    for message in check.messages:
        print(message, file=sys.stderr)
    for name, record in check.records.items():
        print(f"{name}\t{record.fingerprint}\t{len(record.files) if record.settings is None else 'settings'}")
    log.info("hashed %d file(s) (the others were unchanged since the last check)", check.hashed)


def _register_custom_networks(args) -> None:
    """The config's custom_networks (a user's own networks), passed as JSON, into the catalog."""
    from sonoseg.networks import catalog

    catalog.register_all(_json(args.custom_networks) if args.custom_networks else {})


def cmd_runs(args) -> None:
    from sonoseg.study import runsheet

    config = _json(args.config_json) if args.config_json else load_config(args.configfile)
    text = runsheet.to_tsv(runsheet.build(config))
    if args.out:
        Path(args.out).write_text(text)
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
            update_config(config, yaml.safe_load(Path(path).read_text()) or {})
        except OSError as exc:
            raise SonosegError(
                f"{path}: cannot read the config ({exc.strerror}); run from the workflow's folder"
            ) from None
    validate(config, "workflow/schemas/config.schema.yaml")
    return config


def cmd_recipe(args) -> None:
    from sonoseg.training import recipe

    final = recipe.resolve(recipe.Recipe.from_json(args.recipe), args.selection or None)
    final.write(args.out)
    log.info("recipe: %s", final.to_json())


def cmd_split(args) -> None:
    from sonoseg import data
    from sonoseg.data import split

    samples = data.included(data.read_manifest(args.manifest))
    if args.split_file:
        if args.folds != 1:
            raise SonosegError("split.file gives one split: it cannot be combined with split.folds > 1")
        result = split.user_split(samples, args.split_file)
    else:
        result = split.fold_split(samples, args.seed, args.folds, tuple(args.fractions), args.stratify or None)
    result.to_csv(args.out, index=False)
    log.info("split (patient groups / samples):\n%s", split.part_counts(result).to_string())


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


def cmd_train(args) -> None:
    slot = _gpu_slot(args.device, args.runs_per_gpu)  # noqa: F841 - held until the process ends
    from sonoseg.training import train
    from sonoseg.training.recipe import Recipe

    _register_custom_networks(args)
    if len(args.reuse_models) != len(args.reuse_histories):
        raise SonosegError("--reuse-models and --reuse-histories must name as many files each")
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


def cmd_predict(args) -> None:
    from sonoseg.data import split

    samples = split.samples_of_part(args.manifest, args.split, "test", args.fold)
    if args.baseline:
        from sonoseg.networks import baseline

        # A floor fitted on data (the position prior) sees the training part only, never the test images' masks.
        needs_training = args.baseline in baseline.NEEDS_TRAINING
        train = split.samples_of_part(args.manifest, args.split, "train", args.fold) if needs_training else None
        count = baseline.predict(
            args.baseline, samples, args.outdir, args.component_rule, train_samples=train, marks=args.marks
        )
    else:
        if not (args.model and args.data):
            raise SonosegError("predict: give --model and --data (a trained network), or --baseline NAME (a floor)")
        slot = _gpu_slot(args.device, args.runs_per_gpu)  # noqa: F841 - held until the process ends
        from sonoseg.serving import infer

        count = infer.predict(
            args.model,
            args.data,
            samples,
            args.outdir,
            args.component_rule,
            args.device,
            reliance=args.reliance,
            tta=args.tta,
        )
    log.info("wrote %d predictions to %s", count, args.outdir)


def cmd_segment(args) -> None:
    slot = _gpu_slot(args.device) if args.backend == "torch" else None  # noqa: F841
    from sonoseg.serving import infer

    result = infer.segment_images(
        args.model,
        args.images,
        args.outdir,
        args.component_rule,
        args.device,
        args.size,
        args.backend,
        args.threads,
        progress=not args.no_progress,
        tta=args.tta,
    )
    log.info("wrote %d masks to %s (%s)", len(result.written), args.outdir, args.backend)
    if result.failed:
        raise SonosegError(
            f"{len(result.failed)} of {len(args.images)} images failed: "
            + "; ".join(message for _, message in result.failed)
        )


def cmd_export(args) -> None:
    from sonoseg.serving import export

    export.export(args.model, args.out, args.component_rule, args.size)


def cmd_cost(args) -> None:
    from sonoseg.serving import cost

    _register_custom_networks(args)
    table = cost.cost_table(args.networks, args.size, args.backend, args.threads, args.repeats, args.warmup)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    log.info(
        "cost at %dx%d, batch 1, %s, %d threads, %s:\n%s",
        args.size,
        args.size,
        args.backend,
        args.threads,
        table["cpu"].iloc[0],
        table.drop(columns=["cpu"]).to_string(index=False),
    )


def cmd_evaluate(args) -> None:
    from sonoseg.analysis import evaluate
    from sonoseg.data import split

    samples = split.samples_of_part(args.manifest, args.split, "test", args.fold)
    metrics = evaluate.evaluate(args.predictions, samples)
    metrics.to_csv(args.out, index=False)
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
    summary.to_csv(args.out, index=False)


def cmd_collect(args) -> None:
    from sonoseg.analysis import results

    rows = results.sheet_rows(results.read_sheet(args.sheet), args.runs)
    per_image = results.collect_per_image(args.study_dir, [r for r in rows if r["kind"] != "candidate"], args.manifest)
    results.write_table(per_image, args.per_image)
    trainings = results.collect_trainings(args.study_dir, rows)
    results.write_table(trainings, args.trainings)
    log.info("collected %d per-image rows of %d runs, %d trainings", len(per_image), len(rows), len(trainings))


def cmd_table(args) -> None:
    from sonoseg.analysis import tables

    tables.study_table(
        args.kind,
        args.summaries,
        args.out,
        args.input_size,
        args.input_interpolation,
        args.ladder_network,
        args.cost or None,
        _per_image(args),
        args.manifest or None,
        args.seed,
    )


def _per_image(args):
    """The collected per-image table (--per-image), the rows of --runs when given; None without one."""
    from sonoseg.analysis import results

    if not getattr(args, "per_image", ""):
        return None
    return results.read_per_image(args.per_image, getattr(args, "runs", None) or None)


def cmd_paired(args) -> None:
    from sonoseg.analysis import tables

    pairs = [tuple(pair.split(":", 1)) for pair in args.pairs]
    table = tables.paired_runs(_per_image(args), pairs, args.seed, args.family)
    table.to_csv(args.out, index=False)
    log.info("%s (twin - main):\n%s", args.family, table.to_string(index=False))


def cmd_equivalence(args) -> None:
    from sonoseg.analysis import tables
    from sonoseg.data import provenance

    pairs = [tuple(pair.split(":", 1)) for pair in args.pairs]
    table = tables.equivalence_table(_per_image(args), pairs, args.margin, args.seed)
    origin = provenance.read_manifest_provenance(args.manifest)["dataset_fingerprint"]
    tables.write_equivalence(table, args.out, args.margin, provenance.caption_line(origin))
    log.info("equivalence claims (margin %g):\n%s", args.margin, table.to_string(index=False))


def cmd_convergence(args) -> None:
    from sonoseg.analysis import results, tables

    pairs = [tuple(pair.split(":", 1)) for pair in args.pairs]
    # The checked seed of both sides of every pair (the base run may have more seeds).
    rows = results.sheet_rows(results.read_sheet(args.sheet), [run for pair in pairs for run in pair])
    rows = [{**row, "seeds": str(args.check_seed)} for row in rows]
    per_image = results.collect_per_image(args.study_dir, rows, args.manifest)
    trainings = results.collect_trainings(args.study_dir, rows)
    table = tables.convergence_table(per_image, trainings, pairs, args.margin, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    log.info("convergence check (margin %g):\n%s", args.margin, table.to_string(index=False))


def cmd_selection_table(args) -> None:
    from sonoseg.training import selection

    selection.choices_table(args.choices).to_csv(args.out, index=False)


def cmd_report_data(args) -> None:
    from sonoseg.analysis import figures, pages

    pages.data_overview(args.manifest, args.split, args.overview)
    figures.sample_grid(args.manifest, args.split, args.samples, seed=args.seed)
    if args.marks:
        figures.marks_examples(args.manifest, args.marks)


def cmd_report_table(args) -> None:
    from sonoseg.analysis import pages

    pages.study_table_html(args.table, args.kind, args.out)


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
    from sonoseg.analysis import figures

    figures.cost_accuracy(
        _per_image(args),
        args.out,
        args.cost,
        args.summaries,
        True,
        args.seed,
        front_csv=args.front_csv,
        front_html=args.front_table,
    )


def cmd_report_statistics(args) -> None:
    from sonoseg.analysis import figures

    per_image = _per_image(args)
    figures.distributions(per_image, args.distributions)
    figures.paired_statistics(per_image, args.manifest, args.csv, args.table, args.forest, args.seed)


def cmd_models(args) -> None:
    from sonoseg.networks import catalog, models

    _register_custom_networks(args)
    for name in models.names():
        print(f"{name:28s} {models.count_parameters(models.build(name)):>12,d}  {catalog.label(name)}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sonoseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write the synthetic phantom dataset as a folder dataset")
    p.add_argument("outdir")
    p.add_argument("--patients", type=int, default=348)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--difficulty", default="paper", help="easy | paper | hard (contrast, clutter, margin ambiguity)")
    p.add_argument("--calipers", choices=["true", "false"], default="true", help="draw light-blue calipers")
    p.add_argument("--caliper-noise", type=float, default=3.0, help="caliper placement noise, px at width 646")
    p.add_argument("--organs", default="", help='organ weights as JSON, e.g. {"breast": 1, "liver": 1}')
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="check a dataset and write its manifest")
    p.add_argument("--options", required=True, help="the config's dataset section as JSON")
    p.add_argument("--fingerprint", default="", help="the dataset's fingerprint record, for the manifest's provenance")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "fingerprint",
        help="fingerprint a study's data (as the workflow does at start) and say what changed since the last run",
    )
    p.add_argument("--configfile", nargs="*", default=[], help="config files merged over config/config.yaml")
    p.add_argument("--rehash", action="store_true", help="read every file again, trusting no cached hash")
    p.set_defaults(func=cmd_fingerprint)

    custom = argparse.ArgumentParser(add_help=False)
    custom.add_argument("--custom-networks", default="", help="the config's custom_networks as JSON")

    p = sub.add_parser("runs", help="print the run sheet of a config: one row per run (kind, method, seeds, recipe)")
    p.add_argument("--configfile", nargs="*", default=[], help="config files merged over config/config.yaml")
    p.add_argument("--config-json", default="", help="the whole config as JSON (as the workflow passes it)")
    p.add_argument("--out", default="", help="write the TSV here instead of standard output")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("recipe", help="write a run's recipe.json (the recipe selection's choice applied)")
    p.add_argument("--recipe", required=True, help="the run sheet's recipe as JSON")
    p.add_argument("--selection", default="", help="the recipe selection whose chosen settings the run takes")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_recipe)

    p = sub.add_parser("split", help="patient-level train/val/test split")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fractions", type=float, nargs=3, default=[0.6, 0.2, 0.2])
    p.add_argument("--split-file", default="")
    p.add_argument("--stratify", default="", help="a manifest column whose values every part gets in proportion")
    p.add_argument("--folds", type=int, default=1, help="patient-level cross-validation folds (1: one split)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("preprocess", help="resize one split and cache it as an array file")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--part", required=True, choices=PARTS)
    p.add_argument("--size", type=int, required=True)
    p.add_argument(
        "--interpolation",
        default=INTERPOLATIONS[0],
        choices=INTERPOLATIONS,
        help="how images and masks are resized to --size (config preprocess.interpolation)",
    )
    p.add_argument(
        "--marks",
        default="keep",
        choices=CACHE_MARKS,
        help="coloured overlays kept or inpainted first; unmarked: the phantom rendered without calipers",
    )
    p.add_argument("--unmarked-images", default="", help="with --marks unmarked: the phantom rendered without calipers")
    p.add_argument(
        "--dataset-root", default="", help="with --unmarked-images: the dataset root the manifest's paths lie in"
    )

    p.add_argument("--fold", type=int, default=0, help="the cross-validation fold whose part to cache")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train one network with one seed", parents=[custom])
    p.add_argument("--network", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--recipe", required=True, help="the run's recipe.json")
    p.add_argument("--model", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--checkpoint", default="")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--pretrained-backbone", default="")
    p.add_argument(
        "--reuse-models", nargs="*", default=[], help="finished runs' model.pt; one that is this training is adopted"
    )
    p.add_argument("--reuse-histories", nargs="*", default=[], help="their history.csv, in the same order")
    p.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=60.0,
        help="write the checkpoint at most this often (train.checkpoint_seconds; 0: every epoch)",
    )
    p.add_argument("--runs-per-gpu", type=int, default=1, help="jobs sharing one GPU (train.runs_per_gpu)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "select-recipe", help="choose a network's auto settings (learning rate, weight decay) by validation loss"
    )
    p.add_argument("--network", required=True)
    p.add_argument("--points", nargs="+", required=True, help="each candidate's settings: name=value[,name=value]")
    p.add_argument("--histories", nargs="+", required=True, help="each candidate's history.csv, in the same order")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_select_recipe)

    p = sub.add_parser("predict", help="segment the test images (a trained network, or a floor), at original size")
    p.add_argument(
        "--model", nargs="*", default=[], help="a trained network's model.pt (with --data); several: their ensemble"
    )
    p.add_argument("--data", default="", help="the resized test images (data/cache/test.npz)")
    p.add_argument("--baseline", default="", help="a floor without training (e.g. threshold_baseline)")
    p.add_argument("--marks", default="keep", choices=MARKS, help="a floor's images: marks kept or inpainted")
    p.add_argument(
        "--reliance",
        action="store_true",
        help="the one exception to matching marks: a model trained with marks kept, tested with them inpainted",
    )
    p.add_argument("--tta", action="store_true", help="horizontal-flip test-time augmentation (predict.tta)")
    p.add_argument("--fold", type=int, default=0, help="the cross-validation fold whose test part to segment")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--component-rule", default="area")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs-per-gpu", type=int, default=1, help="jobs sharing one GPU (train.runs_per_gpu)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("segment", help="segment new images with a trained model (e.g. Lighter U-net @128)")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF; RGB, grayscale, RGBA or 16-bit)")
    p.add_argument(
        "--model",
        required=True,
        help="a model.pt written by the workflow (or, with --backend onnxruntime, a model.onnx), or a run folder "
        "(results/<study>/runs/<network>/): its folds' and seeds' models are averaged as an ensemble",
    )
    p.add_argument("--tta", action="store_true", help="average each model over the image and its horizontal mirror")
    p.add_argument("--outdir", required=True)
    p.add_argument("--component-rule", default="area")
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=0, help="input size (default: the size the model was trained at)")
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="onnxruntime takes a model.onnx from `sonoseg export` (or exports the model.pt first)",
    )
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: its default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("export", help="export a trained model.pt to ONNX (+ a JSON sidecar: pre/post-processing)")
    p.add_argument("--model", required=True, help="a model.pt written by the workflow")
    p.add_argument("--out", required=True, help="model.onnx; the sidecar is written beside it as model.onnx.json")
    p.add_argument("--component-rule", default="area", choices=COMPONENT_RULES)
    p.add_argument("--size", type=int, default=0, help="input size (default: the size the model was trained at)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "cost", help="parameters, forward GFLOPs and CPU latency (batch 1) per network", parents=[custom]
    )
    p.add_argument("--networks", nargs="+", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per network (the median is reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("evaluate", help="Dice and HD95 per test image")
    p.add_argument("--predictions", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--fold", type=int, default=0, help="the cross-validation fold whose test part was segmented")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("summarize", help="per-seed summary of one run (a network, a floor or a ladder step)")
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>)")
    p.add_argument("--run-json", required=True, help="the run's row of the run sheet, as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("collect", help="every run's per-image metrics and trainings as two long tables")
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>)")
    p.add_argument("--sheet", required=True, help="the run sheet (runs.tsv)")
    p.add_argument("--runs", nargs="+", required=True, help="the runs to collect, in the tables' order")
    p.add_argument("--manifest", required=True, help="the manifest (patient groups, metadata)")
    p.add_argument("--per-image", required=True, help="the long per-image table (CSV; .gz compresses)")
    p.add_argument("--trainings", required=True, help="one row per training (CSV)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("table", help="Table 1, Table 2 or the ladder from summaries")
    p.add_argument("kind", choices=catalog.STUDY_TABLES)
    p.add_argument("--summaries", nargs="+", required=True)
    p.add_argument("--out", required=True, help="the CSV; .md and .tex are written beside it")
    p.add_argument("--input-size", type=int, default=0, help="the networks' input size, for the caption")
    p.add_argument(
        "--input-interpolation", default=INTERPOLATIONS[0], choices=INTERPOLATIONS, help="how it was resized, likewise"
    )
    p.add_argument("--ladder-network", default="unet", help="the network the ladder trained, for the caption")
    p.add_argument("--cost", default="", help="tables/cost.csv: adds GFLOPs and CPU latency columns")
    p.add_argument("--per-image", default="", help="the collected per-image table: adds the Dice CI by patient")
    p.add_argument("--manifest", default="", help="the manifest: the caption names the data's fingerprint")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser(
        "paired",
        aliases=["marks-ablation"],
        help="pairs of runs on the same test images, by patient: the caliper ablation, reliance on the marks, TTA",
    )
    p.add_argument("--pairs", nargs="+", required=True, help="MAIN:TWIN run names")
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument(
        "--family",
        default="ablation",
        help="ablation: trained and tested with the marks the other way; reliance: the same models tested with "
        "marks inpainted; tta: the same models tested with flip averaging (sonoseg.analysis.tables.PAIRED_FAMILIES)",
    )
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_paired)

    p = sub.add_parser("equivalence", help="the study's equivalence claims (config claims), TOST with a margin")
    p.add_argument("--manifest", required=True)
    p.add_argument("--pairs", nargs="+", required=True, help="CANDIDATE:REFERENCE run names")
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument("--margin", type=float, required=True, help="the equivalence margin in Dice")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--out", required=True, help="the CSV; a Markdown page of the claims is written beside it")
    p.set_defaults(func=cmd_equivalence)

    p = sub.add_parser("convergence", help="the convergence check: each network against itself with twice the budget")
    p.add_argument("--manifest", required=True)
    p.add_argument("--pairs", nargs="+", required=True, help="BASE:LONGER run names")
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>)")
    p.add_argument("--sheet", required=True, help="the run sheet (runs.tsv)")
    p.add_argument("--check-seed", required=True, help="the seed both sides of each pair trained with")
    p.add_argument("--margin", type=float, required=True, help="the change in Dice that counts as none")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_convergence)

    p = sub.add_parser("selection-table", help="collect every network's recipe selection (learning rate, weight decay)")
    p.add_argument("--choices", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_selection_table)

    p = sub.add_parser("report-data", help="report: manifest and split counts (HTML), sample images (PNG)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overview", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--marks", help="the images with the most coloured marks, before and after inpainting (PNG)")
    p.set_defaults(func=cmd_report_data)
    p = sub.add_parser("report-table", help="report: one study table as HTML, ours beside the paper's")
    p.add_argument("kind", choices=catalog.REPORT_TABLES)
    p.add_argument("--table", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report_table)
    p = sub.add_parser("report-curves", help="report: one network's training curves (every seed)")
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>)")
    p.add_argument("--run-json", required=True, help="the run's row of the run sheet, as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report_curves)
    p = sub.add_parser("report-figure2", help="report: the paper's Figure 2 rebuilt")
    p.add_argument("--manifest", required=True)
    p.add_argument("--study-dir", required=True, help="the study's folder (results/<study>): the predictions")
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument("--runs", nargs="+", required=True, help="the compared runs, in order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="U-net, the best of each family and the floors, large")
    p.add_argument("--all-methods", default="", help="also write the full grid of every method here")
    p.set_defaults(func=cmd_report_figure2)
    p = sub.add_parser("report-cost", help="report: Dice against parameters (GFLOPs, latency with --cost)")
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument("--runs", nargs="+", required=True, help="the compared runs, in order")
    p.add_argument("--cost", help="cost table: network,parameters,gflops,latency_ms,backend,threads,cpu")
    p.add_argument("--summaries", nargs="*", default=[], help="the methods' networks/<run>.csv (parameter counts)")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--front-csv", help="write the parameter front's paired statistics here (needs --manifest)")
    p.add_argument("--front-table", help="the same as an HTML page")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report_cost)
    p = sub.add_parser("report-statistics", help="report: per-image distributions and paired tests")
    p.add_argument("--manifest", required=True)
    p.add_argument("--per-image", required=True, help="the collected per-image table (per_image.csv.gz)")
    p.add_argument("--runs", nargs="+", required=True, help="the compared runs, in order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distributions", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--forest", required=True)
    p.add_argument("--csv", required=True)
    p.set_defaults(func=cmd_report_statistics)
    p = sub.add_parser("models", help="list every registered network with its parameter count", parents=[custom])
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never fetch weights from a hub
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:
        # A reader that stopped early (`sonoseg models | head -n 1`): end quietly, as command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except SonosegError as exc:
        print(f"sonoseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one clear line, not a traceback; SONOSEG_DEBUG=1 shows where it came from
        if os.environ.get("SONOSEG_DEBUG"):
            raise
        print(
            f"sonoseg {args.command}: error: {type(exc).__name__}: {exc} "
            "(rerun with SONOSEG_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
