"""GPU slots with a pretend device list: concurrent jobs get different devices, freed slots are reused."""

import os
import subprocess
import sys
import time

HOLD = """
import os, sys, time
from sonoseg import gpu
device, handle = gpu.acquire_slot(sys.argv[1], devices=["0", "1"], wait_seconds=30, poll=0.05)
print(device, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[2]))
"""


def start(lock_dir, seconds):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.Popen([sys.executable, "-c", HOLD, str(lock_dir), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env=env)


def test_concurrent_jobs_take_different_slots_and_freed_slots_are_reused(tmp_path):
    first = start(tmp_path, 2)
    assert first.stdout.readline().split() == ["0", "0"]
    second = start(tmp_path, 30)
    assert second.stdout.readline().split() == ["1", "1"]
    # Both slots taken: a third job waits until the first ends, then gets its device.
    started = time.monotonic()
    third = start(tmp_path, 0)
    assert third.stdout.readline().split() == ["0", "0"]
    assert first.wait(timeout=10) == 0
    assert time.monotonic() - started > 0.5
    third.wait(timeout=10)
    second.kill()  # a killed job's lock is freed by the OS
    second.wait()
    fourth = start(tmp_path, 30)
    assert fourth.stdout.readline().split() == ["0", "0"]
    fifth = start(tmp_path, 0)
    assert fifth.stdout.readline().split() == ["1", "1"]
    fifth.wait(timeout=10)
    fourth.kill()
    fourth.wait()


def test_slurm_assignment_is_used_as_is(tmp_path, monkeypatch):
    from sonoseg import gpu
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu.acquire_slot(tmp_path, devices=["0", "1"]) == ("3", None)


def test_no_devices_means_cpu(tmp_path, monkeypatch):
    from sonoseg import gpu
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert gpu.acquire_slot(tmp_path, devices=[]) == (None, None)
