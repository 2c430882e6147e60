import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# `make test` runs the suite on as many pytest-xdist workers as there are cores (docs/testing.md). A
# worker's torch, and every process it starts, then uses one thread, so that the workers do not fight
# over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

# Tests that share a costly session- or module-scoped fixture run on one worker (--dist loadgroup), so
# the fixture is made once, not once per worker: the tiny study (a whole `snakemake all`), and the
# networks test_models.py builds once each (an FCN takes seconds).
SHARED_FIXTURE_GROUPS = {
    "tiny_study": "tiny_study",
    "folder_study": "folder_study",
    "built": "built_networks",
    "torchvision_state": "built_networks",
    "fake_weights": "built_networks",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        groups = {SHARED_FIXTURE_GROUPS[name] for name in item.fixturenames if name in SHARED_FIXTURE_GROUPS}
        if len(groups) > 1:
            raise pytest.UsageError(f"{item.nodeid} uses fixtures of two worker groups: {sorted(groups)}")
        if groups:
            item.add_marker(pytest.mark.xdist_group(groups.pop()))


def run_snakemake(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """A real Snakemake run, bounded: Snakemake ignores SIGTERM while jobs run, so kill follows."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    command = ["timeout", "-k", "20", str(timeout), str(BIN / "snakemake"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def synth_folder(folder: Path, patients: int, seed: int, height: int = 64, width: int = 96) -> Path:
    """A folder-layout dataset written by `sonoseg synth` (images/, masks/, patients.csv), as a user makes one."""
    made = subprocess.run(
        [str(BIN / "sonoseg"), "synth", str(folder), "--patients", str(patients), "--seed", str(seed)]
        + ["--height", str(height), "--width", str(width)],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    return folder


def copy_workflow(destination: Path) -> Path:
    """The workflow's files in `destination`, so test runs never touch the repository's results/."""
    for name in ("Snakefile", "workflow", "config", "envs", "data"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            shutil.copy(source, destination / name)
    return destination


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path)


# The tiny study shared by the workflow, SLURM and report tests: two networks, one seed, one epoch.
TINY = {
    "study": "tiny",
    "synthetic": {"patients": 6, "seed": 2, "height": 64, "width": 96},
    "preprocess": {"size": 32, "interpolation": "area"},
    "networks": ["unet", "lighter_unet_c1"],
    "seeds": [0],
    "train": {
        "device": "cpu",
        "threads": 1,
        "weight_decay": 0.0001,
        "weight_decay_grid": [0.0001, 0],
        # Lighter U-net @1 selects its weight decay; its seed 0 is then the chosen candidate, not retrained.
        "overrides": {"lighter_unet_c1": {"weight_decay": "auto"}},
        "min_epochs": 1,
        "max_epochs": 1,
        # One epoch leaves no room for the ultrasound augmentation's clean last epochs (where a test turns it on).
        "ultrasound_clean_epochs": 0,
    },
    "cost": {"repeats": 1, "warmup": 0},
    "ladder": {
        "enabled": True,
        "network": "unet",
        "steps": [
            {
                "name": "baseline",
                "changes": {"augment": False, "loss": "bce", "optimizer": "sgd", "learning_rate": 0.001},
            },
            {"name": "adam", "changes": {"optimizer": "adam", "learning_rate": 0.0001}},
        ],
    },
}


def write_config(workdir: Path, config: dict, name: str = "tiny.yaml") -> str:
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(config))
    return f"config/{name}"


def study_dag(workdir: Path, config: dict, name: str = "dag.yaml"):
    """The job graph of `snakemake all` for ``config`` (written under ``name``): (labels, ancestors) —
    each job's label (its rule, then its wildcards, one per line), and a function giving a job's
    ancestors (every job whose outputs it reads, directly or not)."""
    dag = run_snakemake(["all", "--dag", "--cores", "1", "--configfile", write_config(workdir, config, name)], workdir)
    assert dag.returncode == 0, dag.stderr[-3000:]
    labels = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dag.stdout, re.M))
    parents: dict[str, set[str]] = {}
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dag.stdout, re.M):
        parents.setdefault(b, set()).add(a)

    def ancestors(node: str) -> set[str]:
        seen, stack = set(), [node]
        while stack:
            for parent in parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    return labels, ancestors


def jobs_of(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a run or dry run: rule -> count."""
    table = dry_run_output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@dataclass(frozen=True)
class Study:
    workdir: Path  # a workflow copy
    config: str  # its config file, relative to workdir
    out: Path  # workdir/results/<study>


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Study:
    """The tiny study, run once per test session (`snakemake all`, two cores) and read by every test
    that needs a finished run: the end-to-end test and the HTML report tests. Tests leave it as it was
    made: a test that reruns jobs copies the folder first (the determinism check does), and a changed
    config goes under another file name."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_study"))
    config = write_config(workdir, TINY)
    run = run_snakemake(["all", "--cores", "2", "--configfile", config], workdir, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    return Study(workdir, config, workdir / "results" / TINY["study"])


# Model files for the inference and export tests: a trained-looking model.pt without training.
SIZE = 64


def write_model(
    path: Path,
    network: str,
    normalization=None,
    seed: int = 0,
    interpolation: str | None = None,
    lesion_areas: list[int] | None = None,
    weights_seed: int | None = None,
) -> Path:
    """A model.pt as training writes it; BatchNorm statistics made non-trivial so eval mode matters.
    ``lesion_areas`` None: a file from before training recorded them. ``seed`` is the seed the file
    records (a run folder checks it against its seed<s> folder); ``weights_seed`` draws other weights
    under it (default: ``seed``)."""
    import cv2
    import numpy as np
    import torch

    from sonoseg.data.preprocess import normalize_tensor
    from sonoseg.networks import models
    from sonoseg.serving.modelio import MODEL_FORMAT

    torch.manual_seed(seed if weights_seed is None else weights_seed)
    model = models.build(network)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    if hasattr(model, "outc"):  # U-net family: spread the logits, ~2 % positive, so masks are neither empty nor full
        batch = torch.from_numpy(np.stack([cv2.resize(im, (SIZE, SIZE)) for im in sample_images()]))
        batch = normalize_tensor(batch.permute(0, 3, 1, 2).float() / 255, normalization)
        with torch.no_grad():
            model.outc.weight *= 4 / model.eval()(batch).std()
            model.outc.bias -= torch.quantile(model(batch), 0.98)
    torch.save(
        {
            "format": MODEL_FORMAT,
            "network": network,
            "seed": seed,
            "input_size": SIZE,
            # None: a model file from before preprocess.interpolation (serving must assume bilinear)
            **({"input_interpolation": interpolation} if interpolation else {}),
            "normalization": normalization,
            "best_epoch": 1,
            **({"lesion_areas": lesion_areas} if lesion_areas is not None else {}),
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path


def sample_images(n: int = 3) -> list:
    """Phantom-like images (speckle plus a bright disc) so that masks are neither empty nor full."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(1)
    images = []
    for i in range(n):
        height, width = 70 + 10 * i, 90
        image = np.repeat((rng.random((height, width, 1)) * 80).astype(np.uint8), 3, axis=2)  # grey, as B-mode is
        cv2.circle(image, (40 + 5 * i, 35), 15, (200, 200, 200), -1)
        images.append(image)
    return images


def write_large_lesion_scans(folder: Path, stem: str, n: int = 3) -> list[Path]:
    """sample_images cropped about their disc and enlarged twice, written as PNGs (``stem``0.png, ...): the
    lesion fills more of the field, so that a size-aware scale selection changes masks."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(sample_images(n)):
        paths.append(folder / f"{stem}{i}.png")
        crop = image[10:60, 20:75]
        cv2.imwrite(str(paths[-1]), cv2.resize(crop, (2 * crop.shape[1], 2 * crop.shape[0]))[:, :, ::-1])
    return paths


def write_samples(folder: Path, n: int = 3):
    """sample_images(n) written as PNGs with a mask each, as the test split's rows (sample_id, image,
    mask, height, width) that preprocess.build_cache and infer.predict read."""
    import cv2
    import numpy as np
    import pandas as pd

    rows = []
    for number, image in enumerate(sample_images(n)):
        path, mask = folder / f"{number}.png", folder / f"{number}_m.png"
        cv2.imwrite(str(path), image)
        cv2.imwrite(str(mask), (image[:, :, 0] > 150).astype(np.uint8) * 255)
        rows.append({"sample_id": str(number), "image": str(path), "mask": str(mask)})
        rows[-1].update(height=image.shape[0], width=image.shape[1])
    return pd.DataFrame(rows)


# Per-image results made by hand, for the statistics' and tables' tests: a run's metrics.csv (images with
# a lesion) where the workflow writes it, and a manifest giving each sample its patient group.


def write_run_metrics(root: Path, run: str, fold: int, seed: int, samples, dice, hd95=1.0, policy="medpy") -> Path:
    """<root>/runs/<run>/fold<fold>/seed<seed>/metrics.csv, one lesion image per sample."""
    import pandas as pd

    path = root / "runs" / run / f"fold{fold}" / f"seed{seed}" / "metrics.csv"
    path.parent.mkdir(parents=True)
    columns = {"sample_id": list(samples), "dice": dice, "hd95_px": hd95, "hd95_mm": ""}
    flags = {"truth_empty": False, "prediction_empty": False, "hd95_policy": policy}
    pd.DataFrame({**columns, **flags}).to_csv(path, index=False)
    return path


def sheet_row(name: str, folds=("0",), seeds=("0",), trained: bool = True, **columns) -> dict:
    """A run's row of the run sheet, as far as the collect stage and the summaries read it."""
    row = {"name": name, "kind": "network", "method": name, "marks": "keep", "model_from": "", "table_key": "network"}
    row.update(folds=" ".join(map(str, folds)), seeds=" ".join(map(str, seeds)), recipe="{}" if trained else "")
    return {**row, **columns}


def unet_with_external_run(root: Path, dataset: str = "ext") -> list[dict]:
    """The run-sheet rows of U-net and of its run on the external set ``dataset`` by two folds' models, and
    the recipe.json each fold's models trained with (the long table names it); their metrics are the caller's."""
    for fold in (0, 1):
        recipe = root / "runs" / "unet" / f"fold{fold}" / "recipe.json"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text('{"learning_rate": 0.001}')
    return [
        sheet_row("unet", trained=False),
        sheet_row(
            f"unet--on-{dataset}", folds=("0", "1"), kind="external", method="unet", model_from="unet", dataset=dataset
        ),
    ]


def collect(root: Path, rows: list[dict], manifest: Path):
    """The long per-image table of runs written under ``root`` (sonoseg.analysis.results, as the collect stage)."""
    from sonoseg.analysis import results

    return results.collect_per_image(root, [{**row, "recipe": ""} for row in rows], manifest)


def write_patient_manifest(path: Path, samples, groups) -> Path:
    """A manifest of included samples, each in its patient group (its own patient)."""
    import pandas as pd

    frame = pd.DataFrame({"sample_id": list(samples), "patient": list(groups), "group": list(groups)})
    frame.assign(status="included", height=64, width=64).to_csv(path, index=False)
    return path


def easy_caches(root: Path, size: int = 32, counts=(("train", 24), ("val", 8))) -> tuple[Path, Path]:
    """A bright ellipse on dark speckle: a network that trains at all learns it within a few epochs
    (training caches as `sonoseg preprocess` writes them; ``counts``: images per part)."""
    rng = np.random.default_rng(0)
    paths = []
    for part, count in counts:
        yy, xx = np.mgrid[:size, :size]
        masks = np.zeros((count, size, size), np.uint8)
        for i in range(count):
            (cy, cx), (ry, rx) = rng.uniform(0.3, 0.7, 2) * size, rng.uniform(0.12, 0.25, 2) * size
            masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        images = (rng.uniform(0, 90, (count, size, size, 1)) + 140 * masks[..., None]).astype(np.uint8).repeat(3, -1)
        path = root / f"{part}.npz"
        with open(path, "wb") as handle:
            np.savez(handle, images=images, masks=masks, sample_ids=np.array([f"{part}{i}" for i in range(count)]))
        paths.append(path)
    return paths[0], paths[1]


def keep_every_checkpoint(monkeypatch, folder: Path) -> Path:
    """Training's checkpoints, each also copied to folder/epoch<N>.pt as it is written (a run can then be
    resumed from any epoch's); returns the folder."""
    from sonoseg.serving import modelio
    from sonoseg.training import train

    folder.mkdir()
    real_save = train.save_atomic

    def save(obj, path):
        real_save(obj, path)
        if obj.get("format") == modelio.CHECKPOINT_FORMAT:
            shutil.copy(path, folder / f"epoch{obj['state']['epoch']}.pt")

    monkeypatch.setattr(train, "save_atomic", save)
    return folder


@pytest.fixture
def scans(tmp_path):
    """Three phantom-like scans as PNG files, and a model for them (the serving tests' images)."""
    import cv2

    paths = []
    for i, image in enumerate(sample_images()):
        paths.append(tmp_path / "scans" / f"scan{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        cv2.imwrite(str(paths[-1]), image[:, :, ::-1])
    return paths, write_model(tmp_path / "model.pt", "lighter_unet_c1")


def set_at(value, *keys):
    """An edit of a nested mapping (an exported model's sidecar, say): ``value`` set at the path ``keys``."""

    def edit(stated):
        for key in keys[:-1]:
            stated = stated[key]
        stated[keys[-1]] = value

    return edit
