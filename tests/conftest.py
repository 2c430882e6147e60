import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
