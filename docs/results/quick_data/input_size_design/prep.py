"""Prepare the input-size study's data (run here, on the CPU, from the repo root, with the venv):
the quick study's phantom (48 patients, seed 0), ingested and split as the workflow does (stratified by
lesion type), caches at 32, 48 and 64 (area, marks inpainted) for train/val/test, and the two external
development sets pymust_far and pymust_dev (NOT pymust_heldout), ingested, split (all test) and cached
at each size. Also writes the U-net family's recipes as the run sheet gives them for config/quick.yaml,
with ultrasound_augment true (the quick study's augmentation choice, 'ultrasound').

Everything goes under scratch_gpu/data; manifests hold repo-relative paths so the tree runs anywhere.
Uses the package's own functions (the same calls as `sonoseg synth/ingest/split/preprocess`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from sonoseg import data
from sonoseg.data import preprocess, split, synth
from sonoseg.study import commands, runsheet
from sonoseg.training.recipe import Recipe

ROOT = Path("scratch_gpu/data")
SIZES = (32, 48, 64)
FAMILY = ("unet", "light_unet", "lighter_unet_c128", "lighter_unet_c1")
EXTERNAL = {"pymust_far": "data/external/pymust_far", "pymust_dev": "data/external/pymust_dev"}


def relative(manifest):
    cwd = str(Path.cwd()) + "/"
    for col in ("image", "mask"):
        manifest[col] = manifest[col].astype(str).str.replace(cwd, "", regex=False)
    return manifest


def main() -> None:
    config = commands.load_config(["config/quick.yaml"])
    # Recipes: the run sheet's rows for the family, the augmentation choice applied ('ultrasound').
    sheet = {run.name: run for run in runsheet.build(config)}
    recipes = {}
    for network in FAMILY:
        base = sheet[network].recipe
        assert isinstance(base, Recipe)
        recipes[network] = json.loads(base.with_changes({"ultrasound_augment": True}).to_json())
    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / "recipes.json").write_text(json.dumps(recipes, indent=2, sort_keys=True) + "\n")
    (ROOT / "config_resolved.yaml").write_text(yaml.safe_dump(config, sort_keys=True))

    syn = config["synthetic"]
    options = synth.PhantomOptions(
        difficulty=syn["difficulty"], calipers=syn["calipers"], caliper_noise=syn["caliper_noise"], organs=syn["organs"]
    )
    size = (syn["height"], syn["width"]) if syn.get("height") and syn.get("width") else None
    synth.write_dataset(ROOT / "synthetic", syn["patients"], syn["seed"], size, options)
    ds = config["dataset"]
    settings = {p: ds[k] for k, p in commands.INGEST_SETTINGS.items() if k in ds}
    manifest = relative(data.ingest(str(ROOT / "synthetic"), "folder", **{**settings, "dataset_csv": ""}))
    manifest.to_csv(ROOT / "manifest.csv", index=False)
    samples = data.included(data.read_manifest(ROOT / "manifest.csv"))
    sp = config["split"]
    result = split.fold_split(samples, sp["seed"], sp["folds"], tuple(sp["fractions"]), sp["stratify"] or None)
    result.to_csv(ROOT / "split.csv", index=False)
    print(split.part_counts(result).to_string())
    pp = config["preprocess"]
    for s in SIZES:
        for part in ("train", "val", "test"):
            part_samples = split.samples_of_part(ROOT / "manifest.csv", ROOT / "split.csv", part, 0)
            n = preprocess.build_cache(
                part_samples, s, ROOT / f"cache/s{s}/{part}.npz", pp["interpolation"], pp["marks"], "scratch-phantom"
            )
            print("phantom", s, part, n)
    for name, root in EXTERNAL.items():
        assert "heldout" not in name and "heldout" not in root
        out = ROOT / "external" / name
        out.mkdir(parents=True, exist_ok=True)
        m = relative(data.ingest(root, "folder"))
        m.to_csv(out / "manifest.csv", index=False)
        ext = split.external_split(data.included(data.read_manifest(out / "manifest.csv")))
        ext.to_csv(out / "split.csv", index=False)
        for s in SIZES:
            test = split.samples_of_part(out / "manifest.csv", out / "split.csv", "test", 0)
            n = preprocess.build_cache(test, s, out / f"cache/s{s}.npz", pp["interpolation"], pp["marks"], name)
            print(name, s, n)


if __name__ == "__main__":
    sys.exit(main())
