"""The SLURM profile on a real local cluster (tests/slurm/cluster.sh start; .ci/run starts it)."""

import re
import shutil
import subprocess

import pandas as pd
import pytest
from conftest import TINY, run_snakemake, write_config


def cluster_is_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return result.returncode == 0 and bool(re.search(r"idle|mix|alloc", result.stdout))


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not cluster_is_up(), reason="no SLURM cluster: run tests/slurm/cluster.sh start"),
]


def test_tiny_study_through_slurm(workflow_copy):
    config = {
        **TINY,
        "study": "slurm",
        "networks": ["lighter_unet_c1"],
        "ladder": {"enabled": False},
        "train": {**TINY["train"], "device": "auto", "weight_decay": 0.0001, "overrides": {}},
    }
    path = write_config(workflow_copy, config)
    # Table 2 rather than `all`: the same data, training, prediction and evaluation jobs without the
    # report's; status checks start after 1 s, not the profile's 5 (the test's jobs take seconds).
    target = "results/slurm/tables/table2.csv"
    options = ["--profile", "workflow/profiles/slurm", "--workflow-profile", "none"]  # as docs/cluster.md runs it
    options += ["--slurm-init-seconds-before-status-checks", "1"]
    # The profile's resources, made small for the test cluster (as a user sets them for theirs).
    options += ["--default-resources", "slurm_partition=main", "runtime=10", "mem_mb=500", "tasks_per_gpu=0"]
    options += ["--set-resources", "train:runtime=10", "train:mem_mb=1000"]
    result = run_snakemake([target, *options, "--configfile", path, "--jobs", "4"], workflow_copy, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # The workstation's profile (gpu=1: one GPU job at a time) is not loaded: the scheduler gives each its own.
    assert "workflow specific profile" not in output and 'Resource("gpu", 1)' not in output, output[:3000]
    job_ids = set(re.findall(r"SLURM jobid (\d+)", output))
    assert len(job_ids) >= 10, output[-2000:]  # every job went through sbatch
    table = pd.read_csv(workflow_copy / "results" / "slurm" / "tables" / "table2.csv")
    assert table["dice_mean"].notna().all()
    # The training job asked SLURM for a GPU: the scheduler still knows the job and shows its GPU request.
    train_job = re.search(r"SLURM jobid (\d+) \(log: [^)]*rule_train/", output)
    assert train_job, output[-2000:]
    job = subprocess.run(["scontrol", "show", "job", "-o", train_job[1]], capture_output=True, text=True)
    assert job.returncode == 0, job.stderr
    assert re.search(r"TresPerJob=gres[:/]gpu[:=]1", job.stdout), job.stdout
    # Inside that job, CUDA_VISIBLE_DEVICES came from SLURM, and the GPU-slot code took it as it was.
    log = (
        workflow_copy / "results" / "slurm" / "logs" / "train" / "lighter_unet_c1" / "fold0" / "seed0.log"
    ).read_text()
    assert "training lighter_unet_c1 seed 0" in log
    assert re.search(rf"GPU slot: SLURM job {train_job[1]} assigned CUDA_VISIBLE_DEVICES=\S+", log), log[:2000]
