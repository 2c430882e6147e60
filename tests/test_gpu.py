"""GPU slots with a pretend device list: concurrent jobs get different devices, freed slots are reused."""

import os
import subprocess
import sys
import time

HOLD = """
import os, sys, time
from sonoseg.serving import gpu
device, handle = gpu.acquire_slot(sys.argv[1], devices=["0", "1"], wait_seconds=30, poll=0.05)
print(device, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[2]))
"""


def start(lock_dir, seconds):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_dir), str(seconds)], stdout=subprocess.PIPE, text=True, env=env
    )


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
    from sonoseg.serving import gpu

    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu.acquire_slot(tmp_path, devices=["0", "1"]) == ("3", None)


def test_no_devices_means_cpu(tmp_path, monkeypatch):
    from sonoseg.serving import gpu

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert gpu.acquire_slot(tmp_path, devices=[]) == (None, None)


HOLD_SHARED = """
import os, sys, time
from sonoseg.serving import gpu
device, handle = gpu.acquire_slot(sys.argv[1], devices=["0", "1"], wait_seconds=float(sys.argv[3]), poll=0.05,
                                  runs_per_gpu=2)
print(device, os.path.basename(handle.name), flush=True)
time.sleep(float(sys.argv[2]))
"""


def start_shared(lock_dir, seconds, wait=30):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.Popen(
        [sys.executable, "-c", HOLD_SHARED, str(lock_dir), str(seconds), str(wait)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_runs_per_gpu_gives_k_slots_per_device_spread_over_devices(tmp_path):
    holders = []
    for expected in (["0", "gpu0.lock"], ["1", "gpu1.lock"], ["0", "gpu0.1.lock"], ["1", "gpu1.1.lock"]):
        holders.append(start_shared(tmp_path, 30))
        assert holders[-1].stdout.readline().split() == expected
    # All four slots of two devices taken: a fifth job waits, and a timeout is one clear line.
    fifth = start_shared(tmp_path, 0, wait=0.3)
    _, error = fifth.communicate(timeout=30)
    assert fifth.returncode != 0 and "no free GPU slot among devices ['0', '1'] (2 per device)" in error
    for holder in holders:
        holder.kill()
        holder.wait()


def test_slot_timeout_is_one_clear_line_from_the_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SONOSEG_GPU_DEVICES="0", SONOSEG_GPU_LOCK_DIR=str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), "30"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout.readline().split()[0] == "0"
    # predict reads the test part of the split first (one sample), then waits for a GPU slot.
    manifest, split = tmp_path / "manifest.csv", tmp_path / "split.csv"
    manifest.write_text("sample_id,patient,group,view,status,height,width\na,P1,P1,1,included,40,60\n")
    split.write_text("sample_id,split\na,test\n")
    code = (
        "import sys; from sonoseg.serving import gpu; from sonoseg.study import cli; gpu.acquire_slot.__defaults__ = "
        "(gpu.DEFAULT_LOCK_DIR, None, 0.2, 0.05, 1); sys.exit(cli.main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "predict",
            "--model",
            "m.pt",
            "--data",
            "d.npz",
            "--manifest",
            str(manifest),
            "--split",
            str(split),
            "--outdir",
            str(tmp_path / "out"),
            "--device",
            "auto",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    holder.kill()
    holder.wait()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("sonoseg predict: error: no free GPU slot")
    assert "Traceback" not in result.stderr
