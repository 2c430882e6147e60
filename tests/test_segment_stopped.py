"""`sonoseg segment` stopped part way, as a service manager or a user stops it: SIGTERM (docker stop,
systemd, timeout) left no record of the masks already written, and Ctrl-C printed a Python traceback."""

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

BIN = Path(sys.executable).parent


def start_a_long_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """segment on 400 links to one 600 x 800 scan (some seconds of work), started in the background."""
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
    process = subprocess.Popen(
        [*command, *sorted(str(p) for p in images.glob("copy*.png"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, outdir


@pytest.mark.parametrize("stop, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_segment_says_so_in_one_line_and_records_what_it_wrote(tmp_path, stop, status):
    process, outdir = start_a_long_run(tmp_path)
    deadline = time.monotonic() + 120
    while len(list(outdir.glob("*_mask.png"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr[-3000:]
    assert "Traceback" not in stderr and f"sonoseg segment: stopped by {signal.Signals(stop).name}" in stderr
    (run,) = json.loads((outdir / output_record.RECORD_NAME).read_text())["runs"]
    written = sorted(p.name for p in outdir.glob("*_mask.png"))
    assert run["interrupted"] and 3 <= run["written"] == len(written) < 400
    assert sorted(entry["mask"] for entry in run["images"] if entry["mask"]) == written
    assert sum(entry.get("error") == "not reached" for entry in run["images"]) == 400 - len(written)


def test_a_negative_input_size_is_refused_by_the_parser(tmp_path):
    done = subprocess.run(
        [str(BIN / "sonoseg"), "segment", "--model", "m.pt", "--outdir", str(tmp_path), "--size", "-5", "x.png"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "'-5' is not an input size" in done.stderr, done.stderr
