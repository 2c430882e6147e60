"""GPU slots for multi-GPU workstations.

``--resources gpu=N`` only caps how many GPU jobs Snakemake runs at once; it does not say which
GPU each job should use. Each training or prediction job therefore takes a slot: an exclusive
lock file per device, held for the life of the process (the OS frees it even after kill -9), and
sets CUDA_VISIBLE_DEVICES before CUDA starts. With ``train.runs_per_gpu: k`` each device has k
slots (k lock files), so k small trainings share one GPU. Under SLURM the scheduler already
assigned the device, so its CUDA_VISIBLE_DEVICES is used as it is.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

from sonoseg.errors import SonosegError

log = logging.getLogger(__name__)
DEFAULT_LOCK_DIR = Path(os.environ.get("SONOSEG_GPU_LOCK_DIR", "/tmp/sonoseg-gpu-slots"))


def visible_devices() -> list[str]:
    """The devices this workstation offers: SONOSEG_GPU_DEVICES, else CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    for variable in ("SONOSEG_GPU_DEVICES", "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(variable)
        if value is not None:
            return [d.strip() for d in value.split(",") if d.strip()]
    if shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]
    return []


def slot_lock_name(device: str, slot: int) -> str:
    """Slot 0 keeps the one-run-per-GPU name, so jobs with different runs_per_gpu still exclude each other there."""
    return f"gpu{device}.lock" if slot == 0 else f"gpu{device}.{slot}.lock"


def acquire_slot(
    lock_dir: str | Path = DEFAULT_LOCK_DIR,
    devices: list[str] | None = None,
    wait_seconds: float = 86400,
    poll: float = 0.5,
    runs_per_gpu: int = 1,
) -> tuple[str | None, IO | None]:
    """Take a free slot; returns (device, lock handle). Keep the handle open while the device is used.

    Slots are taken device by device first (slot 0 of every device, then slot 1, ...), so k runs
    per GPU only stack up on a device when every device already has one.
    """
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        log.info(
            "GPU slot: SLURM job %s assigned CUDA_VISIBLE_DEVICES=%s",
            os.environ["SLURM_JOB_ID"],
            os.environ["CUDA_VISIBLE_DEVICES"],
        )
        return os.environ["CUDA_VISIBLE_DEVICES"], None
    devices = visible_devices() if devices is None else devices
    if not devices:
        return None, None
    if runs_per_gpu < 1:
        raise SonosegError(f"train.runs_per_gpu: must be at least 1, got {runs_per_gpu}")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    while True:
        for slot in range(runs_per_gpu):
            for device in devices:
                handle = open(lock_dir / slot_lock_name(device, slot), "a+")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                os.environ["CUDA_VISIBLE_DEVICES"] = device
                log.info("GPU slot: device %s, slot %d of %d (lock %s)", device, slot + 1, runs_per_gpu, handle.name)
                return device, handle
        if time.monotonic() > deadline:
            raise SonosegError(
                f"no free GPU slot among devices {devices} ({runs_per_gpu} per device) after "
                f"waiting {wait_seconds:g} s; the lock files in {lock_dir} name the processes holding them"
            )
        time.sleep(poll)
