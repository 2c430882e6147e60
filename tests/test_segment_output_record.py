"""What a user probe of `sonoseg segment` found: its output folder keeps no record of which model and
options wrote which mask, and masks of earlier runs lie there unnoticed; and an image of any size was
decoded (a 215 kB PNG of 182 Mpx took 2.2 GB), the decompression-bomb guard being out of the way. Then: a
second signal while the record was written lost it; a mask's temporary file was named by the process id alone,
and was left behind by a Ctrl-C."""

import json
import logging
import os
import signal
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import sample_images

from sonoseg.data import imageio, provenance
from sonoseg.data.provenance import sonoseg_commit, sonoseg_version
from sonoseg.errors import SonosegError
from sonoseg.serving import output_record, segmenter
from sonoseg.serving.mask_files import mask_files, write_png
from sonoseg.study import cli
from sonoseg.study.cli import main

REPO = Path(__file__).resolve().parents[1]


def huge_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says width x height RGB pixels, with a few bytes of pixel data: it is refused (or
    fails) before or when decoded; the bytes a bomb would inflate to are never made."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def runs(outdir: Path) -> list[dict]:
    record = json.loads((outdir / output_record.RECORD_NAME).read_text())
    assert record["format"] == output_record.RECORD_FORMAT
    return record["runs"]


# ----------------------------------------------------------------------------- 1. the output folder's record


def test_each_run_is_recorded_beside_its_masks_and_earlier_runs_are_kept(tmp_path, scans, caplog):
    paths, model = scans
    outdir = tmp_path / "masks"
    segmenter.segment_images(model, paths[:2], outdir, device="cpu")
    (first,) = runs(outdir)
    assert first["sonoseg_version"] == sonoseg_version() and first["commit"] == sonoseg_commit()
    assert first["model"] == str(model) and first["members"] == [str(model)]
    assert (first["backend"], first["device"], first["tta"], first["scales"]) == ("torch", "cpu", False, [1.0])
    assert (first["postprocess_option"], first["postprocess"], first["component_rule"]) == (
        "recorded",
        "keep_one",
        "area",
    )
    assert first["max_pixels"] == imageio.MAX_IMAGE_PIXELS and first["started"] <= first["finished"]
    assert first["images"] == [
        {"image": str(paths[0]), "mask": "scan0_mask.png", "replaced": False},
        {"image": str(paths[1]), "mask": "scan1_mask.png", "replaced": False},
    ]
    assert (first["written"], first["failed"], first["replaced"], first["masks_left_from_earlier_runs"]) == (2, 0, 0, 0)

    # Another run into the folder: the first run's entry is kept as it was; scan0's mask is replaced (info),
    # scan1's, of no image of this run, is named as left from an earlier run, and not deleted.
    huge = huge_png(tmp_path / "scans2" / "huge.png", 20_000, 10_000)
    with caplog.at_level(logging.INFO):
        result = segmenter.segment_images(model, [paths[0], paths[2], huge], outdir, device="cpu", tta=True)
    assert len(result.written) == 2 and [path for path, _ in result.failed] == [huge]
    earlier, second = runs(outdir)
    assert earlier == first
    assert second["tta"] is True
    assert second["images"][:2] == [
        {"image": str(paths[0]), "mask": "scan0_mask.png", "replaced": True},
        {"image": str(paths[2]), "mask": "scan2_mask.png", "replaced": False},
    ]
    assert second["images"][2]["image"] == str(huge) and second["images"][2]["mask"] is None
    assert "over the limit" in second["images"][2]["error"]
    assert (second["written"], second["failed"], second["replaced"], second["masks_left_from_earlier_runs"]) == (
        2,
        1,
        1,
        1,
    )
    left = [r for r in caplog.records if "left from an earlier run" in r.getMessage()]
    assert len(left) == 1 and left[0].levelno == logging.WARNING and "scan1_mask.png" in left[0].getMessage()
    assert any(r.levelno == logging.INFO and "scan0_mask.png: replaced" in r.getMessage() for r in caplog.records)
    assert (outdir / "scan1_mask.png").exists()


def test_the_warning_names_a_few_of_many_masks_left(tmp_path, scans, caplog):
    paths, model = scans
    outdir = tmp_path / "masks"
    outdir.mkdir()
    for i in range(8):
        (outdir / f"old{i}_mask.png").write_bytes(b"")
    (outdir / "notes.txt").write_text("not a mask")
    segmenter.segment_images(model, paths[:1], outdir, device="cpu")
    # No record lists them (the folder has none): said so, not guessed to be an earlier run's.
    assert "earlier run" not in caplog.text
    (warning,) = [r.getMessage() for r in caplog.records if "no image of this run maps to" in r.getMessage()]
    assert warning.startswith(
        f"{outdir}: 8 file(s) named as masks that no image of this run maps to, not written by a recorded segment "
        "run (it has no segment_runs.json, the record of the masks segment writes there): old0_mask.png, "
        "old1_mask.png, "
    )
    assert warning.endswith(f", ... (kept; to keep them apart from this run's masks, move them out of {outdir}, or "
                            "give segment another --outdir)")  # fmt: skip
    assert "old7" not in warning
    assert "notes.txt" not in warning
    # The record counts them as what they are: no earlier run's masks, 8 files no record lists.
    assert (runs(outdir)[0]["masks_left_from_earlier_runs"], runs(outdir)[0]["unrecorded_mask_files_left"]) == (0, 8)
    assert len(list(outdir.glob("old*_mask.png"))) == 8  # nothing deleted


def test_a_file_in_the_records_place_that_is_not_a_record_is_kept_aside(tmp_path, scans, caplog):
    paths, model = scans
    outdir = tmp_path / "masks"
    outdir.mkdir()
    (outdir / output_record.RECORD_NAME).write_text('{"cut short')
    segmenter.segment_images(model, paths[:1], outdir, device="cpu")
    assert (outdir / "segment_runs.1.json").read_text() == '{"cut short'
    assert len(runs(outdir)) == 1 and "kept as" in caplog.text


def test_a_run_stopped_by_an_error_still_records_what_it_wrote(tmp_path, scans, monkeypatch):
    paths, model = scans
    outdir = tmp_path / "masks"
    real = segmenter.write_mask
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SonosegError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(segmenter, "write_mask", failing)
    with pytest.raises(SonosegError, match="disk full"):
        segmenter.segment_images(model, paths, outdir, device="cpu")
    (run,) = runs(outdir)
    assert "disk full" in run["interrupted"] and run["written"] == 1
    assert [image["mask"] for image in run["images"]] == ["scan0_mask.png", None, None]
    # The image whose mask could not be written is recorded with why, the one after it as not reached.
    assert [image.get("error") for image in run["images"]] == [None, "disk full", "not reached"]


def test_a_file_at_a_masks_place_that_the_record_does_not_list_is_never_overwritten(tmp_path, scans, capsys):
    """A hand-drawn ground truth (or any file segment did not write) where a mask would go was overwritten, and
    said to be the mask of an earlier run: refused, before the model is loaded, naming it and the ways on."""
    paths, model = scans
    outdir = tmp_path / "masks"
    outdir.mkdir()
    truth = outdir / "scan0_mask.png"
    truth.write_bytes(b"a hand-drawn mask")
    # No record in the folder: refused before the model is even looked for (this one is not there).
    with pytest.raises(SonosegError) as refused:
        segmenter.segment_images(tmp_path / "no_model.pt", paths, outdir, device="cpu")
    assert str(refused.value) == (
        f"{outdir}: 1 file(s) under the names this run would write its masks to, not written by a recorded segment "
        "run (it has no segment_runs.json, the record of the masks segment writes there): scan0_mask.png; not "
        f"overwritten (a hand-drawn ground truth?): move them out of {outdir}, or give segment another --outdir"
    )
    assert truth.read_bytes() == b"a hand-drawn mask" and not (outdir / "scan1_mask.png").exists()
    # A record that lists other masks: scan1's is replaced, the file it does not list still refused.
    segmenter.segment_images(model, paths[1:2], outdir, device="cpu")
    status = main(["segment", "--no-progress", "--model", str(model), "--device", "cpu", "--outdir", str(outdir)]
                  + [str(p) for p in paths])  # fmt: skip
    assert status == 2 and "its segment_runs.json does not list them): scan0_mask.png;" in capsys.readouterr().err
    assert truth.read_bytes() == b"a hand-drawn mask" and len(runs(outdir)) == 1  # refused runs are not recorded
    # The file moved away as told: segment writes there, and the next run replaces its own mask.
    truth.rename(tmp_path / "truth.png")
    segmenter.segment_images(model, paths[:1], outdir, device="cpu")
    assert segmenter.segment_images(model, paths[:1], outdir, device="cpu").written == [truth]
    assert [run["replaced"] for run in runs(outdir)] == [0, 0, 1]


def test_the_refusal_names_a_few_of_many_files_and_says_which_is_a_folder(tmp_path, scans):
    paths, model = scans
    images = [paths[0].with_name(f"scan{i}.png") for i in range(3, 10)]
    for image in images:
        image.write_bytes(paths[0].read_bytes())
    outdir = tmp_path / "masks"
    (outdir / "scan3_mask.png").mkdir(parents=True)
    for image in images[1:6]:
        (outdir / f"{image.stem}_mask.png").write_bytes(b"")
    (outdir / output_record.RECORD_NAME).write_text('{"cut short')
    with pytest.raises(SonosegError) as refused:
        segmenter.segment_images(model, images, outdir, device="cpu")
    message = str(refused.value)
    assert "6 file(s)" in message and "its segment_runs.json is not a record segment can read" in message
    assert "scan3_mask.png (a folder), scan4_mask.png, scan5_mask.png, scan6_mask.png, scan7_mask.png, … (1 more)" in (
        message
    )
    assert (outdir / output_record.RECORD_NAME).read_text() == '{"cut short'  # the refused run moved nothing


def test_each_run_is_recorded_as_unfinished_from_its_start_and_replaced_at_its_end(tmp_path):
    """A run's entry is written before its first mask (a run killed with no Python cleanup leaves it, and the
    next run counts its masks as segment's) and replaced, not added to, at the end; the record is read again
    then, so that another run into the folder that wrote its entry meanwhile keeps it."""
    outdir = tmp_path / "masks"
    outdir.mkdir()
    planned = mask_files([tmp_path / "scans" / "a.png", tmp_path / "scans" / "b.png"], outdir)
    first, second = segmenter.SegmentResult(), segmenter.SegmentResult()
    with output_record.RunRecord(outdir, planned[:1], first, {}):
        (begun,) = runs(outdir)
        assert begun["interrupted"] == output_record.UNFINISHED and begun["masks_planned"] == ["a_mask.png"]
        assert output_record.masks_recorded([begun]) == {"a_mask.png"}
        with output_record.RunRecord(outdir, planned[1:], second, {}):
            assert [run.get("interrupted") for run in runs(outdir)] == [output_record.UNFINISHED] * 2
            (outdir / "b_mask.png").write_bytes(b"png")
            second.written.append(outdir / "b_mask.png")
        (outdir / "a_mask.png").write_bytes(b"png")
        first.written.append(outdir / "a_mask.png")
    done = runs(outdir)
    assert [[image["mask"] for image in run["images"]] for run in done] == [["a_mask.png"], ["b_mask.png"]]
    assert not any("interrupted" in run or "masks_planned" in run or run["finished"] is None for run in done)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_while_the_record_is_written_is_delivered_once_it_is_on_disk(tmp_path, monkeypatch, second):
    """Ctrl-C, then Ctrl-C again (or docker stop's SIGTERM) while the record was being written: the record was
    lost. The signal is now held until it is on disk. A thread besides the main one runs meanwhile, as torch's
    and ONNX Runtime's do: the OS hands it a signal that only the main thread blocks."""
    outdir = tmp_path / "masks"
    outdir.mkdir()
    planned = mask_files([tmp_path / "scans" / "a.png", tmp_path / "scans" / "b.png"], outdir)
    result = segmenter.SegmentResult()
    sent = []
    real = output_record.write_json_atomic

    def signalled(path, payload):  # the signal sent as the run's final entry is about to be written
        if not sent and payload["runs"][-1].get("finished"):
            sent.append(second)
            os.kill(os.getpid(), second)
        return real(path, payload)

    monkeypatch.setattr(output_record, "write_json_atomic", signalled)
    # The handlers segment runs with (pytest started in the background by a shell may inherit SIGINT ignored).
    handlers = {signal.SIGTERM: signal.signal(signal.SIGTERM, cli._stop)}
    handlers[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    worker_done = threading.Event()
    worker = threading.Thread(target=worker_done.wait)
    worker.start()
    try:
        with pytest.raises(KeyboardInterrupt if second == signal.SIGINT else cli.Stopped):
            with output_record.RunRecord(outdir, planned, result, {}):
                (outdir / "a_mask.png").write_bytes(b"png")
                result.written.append(outdir / "a_mask.png")
                raise KeyboardInterrupt  # the first Ctrl-C
    finally:
        worker_done.set()
        worker.join()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    (run,) = runs(outdir)
    assert run["interrupted"] == "KeyboardInterrupt: " and run["written"] == 1 and "masks_planned" not in run
    assert [image["mask"] for image in run["images"]] == ["a_mask.png", None]


@pytest.mark.parametrize("write", ["mask", "json"])
def test_a_ctrl_c_between_the_write_and_the_rename_leaves_no_temporary_file(tmp_path, monkeypatch, write):
    """Only an OSError removed the temporary file: a Ctrl-C (or SIGTERM, raised as Stopped) between the write
    and the rename left .sonoseg-mask-<pid>.tmp, or the JSON record's, in the folder."""

    def interrupted(source, target):  # fault injection: the signal's exception exactly there
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        if write == "mask":
            write_png(np.zeros((4, 4), np.uint8), tmp_path / "scan_mask.png")
        else:
            provenance.write_json_atomic(tmp_path / "record.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_mask_is_written_beside_another_writers_temporary_file_under_the_same_process_id(tmp_path):
    """The temporary file was named by the process id alone: two writers into one folder with one pid (two
    containers on a bind mount, each with its process 1; two NFS hosts) shared it, one truncating the other's
    half-written mask and renaming it away. Its mode is a normal file's, the umask's (not mkstemp's 0600)."""
    theirs = tmp_path / f".sonoseg-mask-{os.getpid()}.tmp"
    theirs.write_bytes(b"another host's mask, half written")
    mask = np.zeros((6, 5), np.uint8)
    mask[1:4, 2:4] = 255
    umask = os.umask(0o027)
    try:
        write_png(mask, tmp_path / "scan_mask.png")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(umask)
    assert theirs.read_bytes() == b"another host's mask, half written"
    assert np.array_equal(cv2.imread(str(tmp_path / "scan_mask.png"), cv2.IMREAD_UNCHANGED), mask)
    assert (tmp_path / "scan_mask.png").stat().st_mode == (tmp_path / "plain").stat().st_mode
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [theirs.name, "plain", "scan_mask.png"]


# ----------------------------------------------------------------------------- 2. the image size limit


def test_an_image_over_the_pixel_limit_is_refused_by_its_header_naming_its_size_and_the_limit(tmp_path):
    # 12000 x 10000: over sonoseg's limit, under Pillow's own; 13500 x 13500 (the probe's 182 Mpx): over both.
    for width, height, size in (
        (12_000, 10_000, "12000x10000 = 120,000,000 pixels"),
        (13_500, 13_500, "13500x13500 = 182,250,000 pixels"),
    ):
        path = huge_png(tmp_path / f"{width}.png", width, height)
        with pytest.raises(SonosegError) as refused:
            imageio.read_image(path)
        message = str(refused.value)
        assert message.startswith(f"{path}: ") and size in message
        assert f"over the limit of {imageio.MAX_IMAGE_PIXELS:,} pixels" in message


def test_the_limit_is_a_parameter_of_the_reader_also_checked_on_the_decoded_pixels(tmp_path, monkeypatch):
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), sample_images(1)[0])  # 90 x 70
    assert imageio.read_image(path, max_pixels=90 * 70).pixels.shape == (70, 90, 3)
    with pytest.raises(SonosegError, match=r"90x70 = 6,300 pixels .* over the limit of 6,299 pixels"):
        imageio.read_image(path, max_pixels=90 * 70 - 1)
    monkeypatch.setattr(imageio, "_header", lambda _: imageio.Layout())  # a header Pillow cannot read
    with pytest.raises(SonosegError, match="over the limit of 6,299 pixels"):
        imageio.read_image(path, max_pixels=90 * 70 - 1)


def test_segment_counts_an_image_over_the_limit_as_failed_and_goes_on(tmp_path, scans, capsys):
    paths, model = scans
    huge = huge_png(tmp_path / "big" / "huge.png", 20_000, 10_000)
    outdir = tmp_path / "masks"
    assert main(["segment", "--no-progress", "--model", str(model), "--device", "cpu", "--outdir", str(outdir)]
                + [str(paths[0]), str(huge)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "1 of 2 images failed" in err and f"{huge}: 20000x10000 = 200,000,000 pixels" in err
    assert (outdir / "scan0_mask.png").exists() and not (outdir / "huge_mask.png").exists()
    infer_result = segmenter.segment_images(model, [paths[0]], tmp_path / "small", device="cpu", max_pixels=100)
    assert infer_result.written == [] and "over the limit of 100 pixels" in infer_result.failed[0][1]
    # The limit from the command line: lowered, the scan is refused too; a limit that is no number, refused.
    command = ["segment", "--no-progress", "--model", str(model), "--device", "cpu", "--outdir", str(tmp_path / "cli")]
    assert main([*command, "--max-pixels", "100", str(paths[0])]) == 2
    assert "over the limit of 100 pixels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*command, "--max-pixels", "0", str(paths[0])])
    assert "'0' is not a number of pixels" in capsys.readouterr().err


def test_the_phantom_and_the_committed_external_sets_are_far_under_the_limit():
    """The ingest reads with the same limit: no image it is given by the study may come near it."""
    from PIL import Image

    from sonoseg.data import synth

    sizes = []
    for path in (REPO / "data" / "external").rglob("*"):
        if path.suffix.lower() in imageio.IMAGE_SUFFIXES:
            with Image.open(path) as image:
                sizes.append(image.size[0] * image.size[1])
    assert sizes and max(sizes) < imageio.MAX_IMAGE_PIXELS / 10
    assert max(height * width for height, width in synth.ORIGINAL_SIZES) < imageio.MAX_IMAGE_PIXELS / 100
