"""`sonoseg segment` stopped part way, as a service manager or a user stops it: SIGTERM (docker stop,
systemd, timeout) left no record of the masks already written, and Ctrl-C printed a Python traceback; killed
where Python cannot clean up (SIGKILL, the out-of-memory killer), it left masks the next run refused as not
segment's; and main left its SIGTERM handler installed in the process that called it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_model

from sonoseg.serving import output_record
from sonoseg.study.cli import main

BIN = Path(sys.executable).parent


def start_a_long_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, list[str]]:
    """segment on 400 links to one 600 x 800 scan (some seconds of work), started in the background; its
    output folder, and its command (to run it again)."""
    image = np.random.default_rng(0).integers(0, 80, (600, 800, 3), dtype=np.uint8)
    cv2.circle(image, (400, 300), 120, (200, 200, 200), -1)
    images = tmp_path / "scans"
    images.mkdir()
    cv2.imwrite(str(images / "scan.png"), image)
    for i in range(400):
        os.link(images / "scan.png", images / f"copy{i:03d}.png")
    model = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    outdir = tmp_path / "masks"
    command = [str(BIN / "sonoseg"), "segment", "--model", str(model), "--outdir", str(outdir), "--no-progress"]
    command += sorted(str(p) for p in images.glob("copy*.png"))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible
    )
    return process, outdir, command


def interruptible() -> None:
    """In the child: Ctrl-C's signal at its default, as a terminal's foreground command has it. A command
    started in the background (nohup, `&` in a script, some CI runners) inherits SIGINT ignored, and a
    Python started so keeps ignoring it, as it should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_masks(process: subprocess.Popen, outdir: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(list(outdir.glob("*_mask.png"))) < count:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)


def runs(outdir: Path) -> list[dict]:
    return json.loads((outdir / output_record.RECORD_NAME).read_text())["runs"]


@pytest.mark.parametrize("stop, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_segment_says_so_in_one_line_and_records_what_it_wrote(tmp_path, stop, status):
    process, outdir, _ = start_a_long_run(tmp_path)
    wait_for_masks(process, outdir, 3)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr[-3000:]
    assert "Traceback" not in stderr and f"sonoseg segment: stopped by {signal.Signals(stop).name}" in stderr
    (run,) = runs(outdir)
    written = sorted(p.name for p in outdir.glob("*_mask.png"))
    assert run["interrupted"] and 3 <= run["written"] == len(written) < 400
    assert sorted(entry["mask"] for entry in run["images"] if entry["mask"]) == written
    assert sum(entry.get("error") == "not reached" for entry in run["images"]) == 400 - len(written)


def test_the_masks_of_a_killed_segment_are_replaced_by_the_same_command_run_again(tmp_path):
    """Killed with no Python cleanup (SIGKILL; the out-of-memory killer, a crash, docker stop's grace run out),
    a run wrote no record, and the masks it wrote were refused by the next run as files segment did not write.
    Its entry is now written before the first mask, marked unfinished with the masks it may write."""
    process, outdir, command = start_a_long_run(tmp_path)
    wait_for_masks(process, outdir, 3)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed = sorted(p.name for p in outdir.glob("*_mask.png"))
    assert 3 <= len(killed) < 400
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = runs(outdir)
    assert first["interrupted"] == output_record.UNFINISHED and first["finished"] is None
    assert set(killed) <= set(first["masks_planned"]) and len(first["masks_planned"]) == 400
    assert "interrupted" not in second and "masks_planned" not in second
    assert (second["written"], second["replaced"]) == (400, len(killed))


def test_segment_puts_back_the_sigterm_handler_it_replaced(tmp_path):
    """main installs a SIGTERM handler for segment; a caller in the same process (a test, a notebook, a
    service calling main) got it back in place of its own."""

    def own(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, own)
    try:
        missing = ["--model", str(tmp_path / "missing.pt"), "--outdir", str(tmp_path / "masks")]
        assert main(["segment", *missing, str(tmp_path / "scan.png")]) == 2  # no such model
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_negative_input_size_is_refused_by_the_parser(tmp_path):
    done = subprocess.run(
        [str(BIN / "sonoseg"), "segment", "--model", "m.pt", "--outdir", str(tmp_path), "--size", "-5", "x.png"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "'-5' is not an input size" in done.stderr, done.stderr
