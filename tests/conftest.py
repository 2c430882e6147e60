import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_snakemake(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """A real Snakemake run, bounded: Snakemake ignores SIGTERM while jobs run, so kill follows."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    command = ["timeout", "-k", "20", str(timeout), str(BIN / "snakemake"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    """The workflow's files in a temp dir, so test runs never touch the repository's results/."""
    for name in ("Snakefile", "workflow", "config", "envs"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy(source, tmp_path / name)
    return tmp_path


# The tiny study shared by the workflow, SLURM and report tests: two networks, one seed, one epoch.
TINY = {
    "study": "tiny",
    "synthetic": {"patients": 6, "seed": 2, "height": 64, "width": 96},
    "preprocess": {"size": 32},
    "networks": ["unet", "lighter_unet_c1"],
    "seeds": [0],
    "train": {
        "device": "cpu",
        "threads": 1,
        "weight_decay": "auto",
        "weight_decay_grid": [0.0001, 0],
        "min_epochs": 1,
        "max_epochs": 1,
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


def jobs_of(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    table = dry_run_output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
