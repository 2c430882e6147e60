"""The sonoseg command-line tool: parses arguments and calls the stage modules. Every Snakemake
rule is one of these commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from sonoseg.errors import SonosegError

log = logging.getLogger("sonoseg")


def _json(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SonosegError(f"not valid JSON: {text[:80]!r} ({exc})") from None


def cmd_synth(args) -> None:
    from sonoseg import synth
    size = (args.height, args.width) if args.height and args.width else None
    synth.write_dataset(args.outdir, args.patients, args.seed, size)
    log.info("wrote %d patients x 2 views to %s", args.patients, args.outdir)


def cmd_ingest(args) -> None:
    from sonoseg import data
    options = _json(args.options)
    manifest = data.ingest(
        options["root"], options["layout"], options.get("on_bad_sample", "fail"), options.get("csv"),
        options.get("include_normal", True), options.get("pixel_spacing"), options.get("near_duplicate_distance", 4))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(args.out, index=False)
    log.info("manifest: %s", args.out)


def cmd_split(args) -> None:
    from sonoseg import data, split
    samples = data.included(data.read_manifest(args.manifest))
    if args.split_file:
        result = split.user_split(samples, args.split_file)
    else:
        result = split.split_samples(samples, args.seed, tuple(args.fractions))
    result.to_csv(args.out, index=False)
    counts = result.groupby("split").agg(samples=("sample_id", "size"), groups=("group", "nunique"))
    log.info("split (patient groups / samples):\n%s", counts.to_string())


def _samples_of_split(manifest: str, split_csv: str, part: str):
    import pandas as pd
    from sonoseg import data
    samples = data.included(data.read_manifest(manifest))
    parts = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    chosen = set(parts.loc[parts["split"] == part, "sample_id"])
    return samples[samples["sample_id"].isin(chosen)].reset_index(drop=True)


def cmd_preprocess(args) -> None:
    from sonoseg import preprocess
    samples = _samples_of_split(args.manifest, args.split, args.part)
    if samples.empty:
        raise SonosegError(f"{args.split}: the {args.part} split is empty")
    count = preprocess.build_cache(samples, args.size, args.out)
    log.info("cached %d %s images at %dx%d in %s", count, args.part, args.size, args.size, args.out)


def _gpu_slot(device: str):
    """Take a GPU slot before torch starts CUDA (only when a GPU may be used)."""
    if device == "cpu":
        return None
    from sonoseg import gpu
    return gpu.acquire_slot()[1]


def cmd_train(args) -> None:
    slot = _gpu_slot(args.device)  # noqa: F841 - held until the process ends
    from sonoseg import train
    from sonoseg.recipe import Recipe
    recipe = Recipe.from_json(args.recipe)
    if args.weight_decay_file:
        chosen = float(_json(Path(args.weight_decay_file).read_text())["weight_decay"])
        recipe = recipe.with_changes({"weight_decay": chosen})
    train.train(args.network, args.seed, args.train, args.val, recipe, args.model, args.history,
                checkpoint=args.checkpoint, device=args.device, threads=args.threads,
                pretrained_backbone=args.pretrained_backbone or None)


def cmd_select_weight_decay(args) -> None:
    from sonoseg import report
    candidates = dict(zip((float(d) for d in args.decays), args.histories, strict=True))
    chosen, table = report.select_weight_decay(candidates)
    Path(args.out).write_text(json.dumps({"network": args.network, "weight_decay": chosen,
                                          "criterion": "lowest validation loss", "candidates": table.to_dict("records")},
                                         indent=2))
    log.info("%s: weight decay %g chosen by lowest validation loss\n%s", args.network, chosen, table.to_string(index=False))


def cmd_predict(args) -> None:
    slot = _gpu_slot(args.device)  # noqa: F841
    from sonoseg import data, infer
    samples = data.included(data.read_manifest(args.manifest))
    count = infer.predict(args.model, args.data, samples, args.outdir, args.component_rule, args.device)
    log.info("wrote %d predictions to %s", count, args.outdir)


def cmd_segment(args) -> None:
    slot = _gpu_slot(args.device)  # noqa: F841
    from sonoseg import infer
    written = infer.segment_images(args.model, args.images, args.outdir, args.component_rule, args.device, args.size)
    log.info("wrote %d masks to %s", len(written), args.outdir)


def cmd_evaluate(args) -> None:
    from sonoseg import evaluate
    samples = _samples_of_split(args.manifest, args.split, "test")
    metrics = evaluate.evaluate(args.predictions, samples)
    metrics.to_csv(args.out, index=False)
    log.info("%d test images: mean Dice %.4f, mean HD95 %.2f px (%d penalised empty cases)", len(metrics),
             metrics["dice"].mean(), metrics["hd95_px"].mean(), metrics["hd95_policy"].str.startswith("penalty").sum())


def cmd_summarize(args) -> None:
    """One row per seed of a network (or ladder step): mean test metrics and the kept epoch."""
    import pandas as pd
    from sonoseg import report
    rows = []
    for seed, metrics, history in zip(args.seeds, args.metrics, args.histories, strict=True):
        rows.append({args.key: args.name, "seed": int(seed), **report.summarize_run(metrics, history)})
    pd.DataFrame(rows).to_csv(args.out, index=False)


def cmd_table(args) -> None:
    import pandas as pd
    from sonoseg import paper, report
    runs = pd.concat([pd.read_csv(p, dtype={"network": str, "step": str}) for p in args.summaries], ignore_index=True)
    if args.kind == "ladder":
        table = report.ladder_table(runs, list(runs["step"].drop_duplicates()))
        report.write_table(table, args.out, "Section 4.2 tuning ladder (U-net, cumulative steps; test set)", "Step")
        return
    reference = paper.TABLE1 if args.kind == "table1" else paper.TABLE2
    caption = {"table1": "Table 1. Test metrics by architecture (mean ± std over seeds)",
               "table2": "Table 2. U-net and its lightweight variants (mean ± std over seeds)"}[args.kind]
    table = report.network_table(runs, reference, list(runs["network"].drop_duplicates()))
    report.write_table(table, args.out, caption)


def cmd_weight_decay_table(args) -> None:
    import pandas as pd
    rows = []
    for path in args.choices:
        choice = _json(Path(path).read_text())
        for candidate in choice["candidates"]:
            rows.append({"network": choice["network"], "chosen": candidate["weight_decay"] == choice["weight_decay"],
                         "criterion": choice["criterion"], **candidate})
    pd.DataFrame(rows).to_csv(args.out, index=False)


def cmd_models(args) -> None:
    from sonoseg import models
    for name in models.names():
        print(f"{name:28s} {models.count_parameters(models.build(name)):>12,d}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sonoseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write the synthetic phantom dataset as a folder dataset")
    p.add_argument("outdir")
    p.add_argument("--patients", type=int, default=348)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="check a dataset and write its manifest")
    p.add_argument("--options", required=True, help="the config's dataset section as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("split", help="patient-level train/val/test split")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fractions", type=float, nargs=3, default=[0.6, 0.2, 0.2])
    p.add_argument("--split-file", default="")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("preprocess", help="resize one split and cache it as an array file")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--part", required=True, choices=["train", "val", "test"])
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train one network with one seed")
    p.add_argument("--network", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--recipe", required=True, help="training settings as JSON")
    p.add_argument("--weight-decay-file", default="", help="JSON with the selected weight_decay")
    p.add_argument("--model", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--checkpoint", default="")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--pretrained-backbone", default="")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("select-weight-decay", help="pick a network's weight decay by validation loss")
    p.add_argument("--network", required=True)
    p.add_argument("--decays", nargs="+", required=True)
    p.add_argument("--histories", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_select_weight_decay)

    p = sub.add_parser("predict", help="segment the cached test images, post-processed, at original size")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--component-rule", default="area")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("segment", help="segment new images with a trained model (e.g. Lighter U-net @128)")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF; RGB, grayscale, RGBA or 16-bit)")
    p.add_argument("--model", required=True, help="a model.pt written by the workflow")
    p.add_argument("--outdir", required=True)
    p.add_argument("--component-rule", default="area")
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=0, help="input size (default: the size the model was trained at)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="Dice and HD95 per test image")
    p.add_argument("--predictions", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("summarize", help="per-seed summary of one network or ladder step")
    p.add_argument("--key", default="network", choices=["network", "step"])
    p.add_argument("--name", required=True)
    p.add_argument("--seeds", nargs="+", required=True)
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--histories", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("table", help="Table 1, Table 2 or the ladder from summaries")
    p.add_argument("kind", choices=["table1", "table2", "ladder"])
    p.add_argument("--summaries", nargs="+", required=True)
    p.add_argument("--out", required=True, help="the CSV; .md and .tex are written beside it")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("weight-decay-table", help="collect every network's weight-decay choice")
    p.add_argument("--choices", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_weight_decay_table)

    p = sub.add_parser("models", help="list every registered network with its parameter count")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never fetch weights from a hub
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SonosegError as exc:
        print(f"sonoseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
