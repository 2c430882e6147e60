"""What a user probe of `sonoseg segment` and `sonoseg export` found: an exported model segments with
the post-processing its sidecar records, an image named through a link gets its own mask, a folder
among the images is skipped, a hand-broken sidecar is named, options out of range are refused by name,
and export says when a model file has no study choice beside it, as segment does. A second probe: a file name
that is not UTF-8 crashed segment (SIGSEGV in OpenCV), an image whose mask name is over the file system's
limit stopped the whole run, a folder at a mask's place was guessed at, an animated PNG was called a TIFF, and
an image of 1 x 1 px was segmented without a word."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import SIZE, set_at, write_model
from PIL import Image

from sonoseg.errors import SonosegError
from sonoseg.serving import device, export, mask_files, output_record, segmenter
from sonoseg.serving.modelio import MODEL_FORMAT
from sonoseg.serving.sidecar import read_sidecar
from sonoseg.study import commands
from sonoseg.study.cli import main

# A network of the user's own whose mask is the image's bright pixels: the test draws the components.
BRIGHTNESS_NETS = """
from torch import nn


def brightness():
    return nn.Conv2d(3, 1, 1)
"""


def brightness_model(folder, monkeypatch):
    """A model.pt whose logit is 40 x (mean RGB - 0.5): lesion where the image is brighter than mid-grey."""
    (folder / "probe_brightness_nets.py").write_text(BRIGHTNESS_NETS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "probe_brightness_nets", raising=False)
    conv = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(40 / 3)
        conv.bias.fill_(-20.0)
    path = folder / "model.pt"
    torch.save(
        {
            "format": MODEL_FORMAT,
            "network": "probe_brightness",
            "builder": "probe_brightness_nets:brightness",
            "seed": 0,
            "input_size": SIZE,
            "normalization": None,
            "best_epoch": 1,
            "state_dict": conv.state_dict(),
        },
        path,
    )
    return path


def two_blobs(path):
    """A SIZE x SIZE scan with two bright components: a filled 10 x 10 square (area 100, 36 contour points)
    and a 1-px line 60 px long (area 60, 118 contour points). The rule area keeps the square,
    contour_points the line."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[5:15, 5:15] = 255
    image[40, 2:62] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path


def mask(folder, name="scan_mask.png"):
    return cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED) > 0


# ----------------------------------------------------------------------------- 1. the sidecar's post-processing


def test_an_exported_model_segments_with_the_component_rule_its_sidecar_records(tmp_path, monkeypatch, caplog):
    model = brightness_model(tmp_path, monkeypatch)
    scan = two_blobs(tmp_path / "scans" / "scan.png")
    onnx_path = tmp_path / "exp" / "cp.onnx"
    assert main(["export", "--model", str(model), "--out", str(onnx_path), "--component-rule", "contour_points"]) == 0
    assert read_sidecar(onnx_path)["postprocessing"]["component_rule"] == "contour_points"

    def segment(outdir, *options):
        assert main(["segment", "--no-progress", "--outdir", str(tmp_path / outdir), *options, str(scan)]) == 0
        return mask(tmp_path / outdir)

    by_area = segment("area", "--model", str(model), "--device", "cpu")
    by_points = segment("points", "--model", str(model), "--device", "cpu", "--component-rule", "contour_points")
    assert by_area[5:15, 5:15].all() and not by_area[40].any()  # the rules keep different components here
    assert by_points[40, 2:62].all() and not by_points[5:15, 5:15].any()
    caplog.clear()
    exported = segment("onnx", "--backend", "onnxruntime", "--model", str(onnx_path))
    assert np.array_equal(exported, by_points)  # the sidecar's rule, as torch writes it when told
    assert "records component rule" not in caplog.text
    # Told another rule than the sidecar's: applied, with a warning naming both.
    told = segment("onnx_area", "--backend", "onnxruntime", "--model", str(onnx_path), "--component-rule", "area")
    assert np.array_equal(told, by_area)
    assert "its sidecar records component rule contour_points, but area was asked for" in caplog.text
    # A model.pt has no sidecar: area, unless told.
    on_the_fly = segmenter.segment_images(model, [scan], tmp_path / "fly", backend="onnxruntime")
    assert np.array_equal(mask(tmp_path / "fly"), by_area) and on_the_fly.written


@pytest.mark.parametrize(
    "key, value, said",
    [
        ("threshold", 0.3, "postprocessing.threshold is 0.3, but sonoseg segment thresholds the probability at 0.5"),
        ("fill_holes", False, "postprocessing.fill_holes is false, but sonoseg segment fills the kept lesion's holes"),
    ],
)
def test_a_sidecar_recording_another_threshold_or_no_hole_filling_is_refused(
    tmp_path, monkeypatch, capsys, key, value, said
):
    model = brightness_model(tmp_path, monkeypatch)
    scan = two_blobs(tmp_path / "scans" / "scan.png")
    onnx_path = tmp_path / "model.onnx"
    export.export(model, onnx_path)
    sidecar = json.loads(export.sidecar_path(onnx_path).read_text())
    sidecar["postprocessing"][key] = value
    export.sidecar_path(onnx_path).write_text(json.dumps(sidecar))
    options = ["--backend", "onnxruntime", "--model", str(onnx_path), "--outdir", str(tmp_path / "o"), str(scan)]
    assert main(["segment", "--no-progress", *options]) == 2
    err = capsys.readouterr().err
    assert f"{export.sidecar_path(onnx_path)}: {said}" in err
    assert not (tmp_path / "o" / "scan_mask.png").exists()


# ----------------------------------------------------------------------------- 2. one mask per name given


def test_an_image_named_through_a_link_gets_its_own_mask(tmp_path, monkeypatch, caplog):
    model = brightness_model(tmp_path, monkeypatch)
    scan = two_blobs(tmp_path / "lk" / "scan1.png")
    (tmp_path / "lk" / "patient_A.png").symlink_to("scan1.png")
    os.link(scan, tmp_path / "lk" / "patient_B.png")
    monkeypatch.chdir(tmp_path)
    images = ["lk/scan1.png", "lk/patient_A.png", "lk/patient_B.png", "lk/../lk/scan1.png"]
    assert main(["segment", "--no-progress", "--model", str(model), "--device", "cpu", "--outdir", "o", *images]) == 0
    written = sorted(path.name for path in (tmp_path / "o").glob("*_mask.png"))
    assert written == ["patient_A_mask.png", "patient_B_mask.png", "scan1_mask.png"]
    assert np.array_equal(mask(tmp_path / "o", "patient_A_mask.png"), mask(tmp_path / "o", "scan1_mask.png"))
    # Only the same name twice (here spelt through ..) is given more than once.
    warned = [r.getMessage() for r in caplog.records if "given more than once" in r.getMessage()]
    assert warned == ["lk/../lk/scan1.png: given more than once; segmented once"]


# ----------------------------------------------------------------------------- 3. folders among the images


def test_a_folder_stands_for_its_images_and_an_earlier_run_s_masks_are_skipped(tmp_path, monkeypatch, caplog):
    model = brightness_model(tmp_path, monkeypatch)
    two_blobs(tmp_path / "scans" / "scan.png")
    monkeypatch.chdir(tmp_path)
    command = ["segment", "--no-progress", "--model", str(model), "--device", "cpu"]
    for _ in range(2):  # `segment --outdir scans/masks scans/*` run again: scans/masks is now among scans/*
        caplog.clear()
        given = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.glob("scans/*"))
        assert main([*command, "--outdir", "scans/masks", *given]) == 0
        assert (tmp_path / "scans" / "masks" / "scan_mask.png").is_file()
    assert given == ["scans/masks", "scans/scan.png"]
    warned = [r.getMessage() for r in caplog.records if "earlier segment run" in r.getMessage()]
    assert warned == [
        "scans/masks: an earlier segment run's masks (it holds segment_runs.json), not images: skipped (name its "
        "images by a glob to segment them)"
    ]
    assert not (tmp_path / "scans" / "masks" / "scan_mask_mask.png").exists()
    # The folder itself: its own image files by name, in any case of suffix, WebP and GIF too (read when named);
    # not its subfolders or hidden images (each named in a warning), its notes (counted in the log) or the junk
    # of operating systems.
    two_blobs(tmp_path / "scans" / "b.PNG")
    pixels = cv2.imread(str(tmp_path / "scans" / "b.PNG"))
    for name in ("c.webp", "d.gif"):
        (tmp_path / "scans" / name).write_bytes(cv2.imencode(Path(name).suffix, pixels)[1].tobytes())
    two_blobs(tmp_path / "scans" / "older" / "deep.png")
    two_blobs(tmp_path / "scans" / ".hidden.png")
    (tmp_path / "scans" / "notes.txt").write_text("not an image")
    (tmp_path / "scans" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "scans" / "._scan.png").write_bytes(b"an AppleDouble resource fork, not an image")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*command, "--outdir", "out", "scans"]) == 0
    masks_written = sorted(path.name for path in (tmp_path / "out").glob("*.png"))
    assert masks_written == ["b_mask.png", "c_mask.png", "d_mask.png", "scan_mask.png"]
    assert np.array_equal(mask(tmp_path / "out", "c_mask.png"), mask(tmp_path / "out", "b_mask.png"))
    assert np.array_equal(mask(tmp_path / "out"), mask(tmp_path / "scans" / "masks"))
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scans: ")]
    assert said == [
        "scans: 2 file(s) that operating systems and file managers write, not segmented (.DS_Store, ._scan.png)",
        "scans: 1 file(s) not in an image format sonoseg reads (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp), "
        "not segmented (notes.txt)",
        "scans: 1 hidden image file(s) not segmented (.hidden.png): name them to segment them",
        "scans: its 1 subfolder(s) are not entered (older): name them (or their images) to segment their images",
    ]
    # And the record lists each of them with its reason (a probe found a folder's DICOM in a log line alone).
    (entry,) = [run for run in json.loads((tmp_path / "out" / "segment_runs.json").read_text())["runs"]]
    assert {
        Path(item["file"]).name: item["reason"].split(":")[0].split(" (")[0] for item in entry["not_segmented"]
    } == {
        ".DS_Store": "a file operating systems or file managers write",
        "._scan.png": "a file operating systems or file managers write",
        "notes.txt": "not in an image format sonoseg reads",
        ".hidden.png": "a hidden image",
        "older": "a subfolder",
        "masks": "an earlier segment run's masks",
    }
    assert (
        "5 other file(s) or folder(s)" not in caplog.text
        and "6 other file(s) or folder(s) in the folders" in caplog.text
    )

    # A folder that cannot be read: refused by name (as an unprivileged user meets a folder of mode 000).
    def unreadable(self):
        raise PermissionError(13, "Permission denied", str(self))

    with monkeypatch.context() as patched:
        patched.setattr(Path, "iterdir", unreadable)
        with pytest.raises(SonosegError, match=r"^scans: the folder cannot be read \(Permission denied\)$"):
            segmenter.segment_images(model, ["scans"], tmp_path / "elsewhere", device="cpu")
    # A folder whose images all lie in subfolders (a BUSI root) says so.
    caplog.clear()
    (tmp_path / "busi" / "benign").mkdir(parents=True)
    two_blobs(tmp_path / "busi" / "benign" / "benign (1).png")
    with pytest.raises(SonosegError, match="no image to segment"):
        segmenter.segment_images(model, ["busi"], tmp_path / "elsewhere", device="cpu")
    assert any(
        "busi: a folder with no image file of its own" in r.getMessage()
        and "its 1 subfolder(s) are not entered" in r.getMessage()
        for r in caplog.records
    )
    # Nothing to segment: one clear error, nothing written.
    (tmp_path / "empty").mkdir()
    with pytest.raises(SonosegError, match=r"no image to segment: the folders given hold no image file"):
        segmenter.segment_images(model, ["empty", "scans/masks"], tmp_path / "elsewhere", device="cpu")
    assert not (tmp_path / "elsewhere").exists()


# ----------------------------------------------------------------------------- 4. a hand-broken sidecar


def _drop(sidecar, *keys):
    for key in keys[:-1]:
        sidecar = sidecar[key]
    del sidecar[keys[-1]]


@pytest.mark.parametrize(
    "edit, said",
    [
        (lambda s: _drop(s, "input"), "no input (every sidecar `sonoseg export` writes has it"),
        (lambda s: _drop(s, "postprocessing"), "no postprocessing (every sidecar"),
        (lambda s: _drop(s, "input", "resize"), "no input.resize (every sidecar"),
        (lambda s: _drop(s, "onnx_sha256"), "no onnx_sha256 (every sidecar"),
        (lambda s: _drop(s, "postprocessing", "component_rule"), "no postprocessing.component_rule"),
        (set_at(96, "input", "resize", "height"), "input.resize is 96 x 64 px; an exported graph takes square inputs"),
        (set_at("64", "input", "resize", "height"), "input.resize.height is '64', not an integer"),
        (
            set_at("largest", "postprocessing", "component_rule"),
            "postprocessing.component_rule is 'largest', not one of",
        ),
        (set_at("edges", "input", "resize", "interpolation"), "input.resize.interpolation is 'edges', not one of"),
        (set_at([], "input"), "input is [], not a section of keys"),
    ],
)
def test_a_hand_broken_sidecar_is_named_with_its_key(tmp_path, monkeypatch, capsys, edit, said):
    model = brightness_model(tmp_path, monkeypatch)
    scan = two_blobs(tmp_path / "scans" / "scan.png")
    onnx_path = tmp_path / "model.onnx"
    export.export(model, onnx_path)
    sidecar = json.loads(export.sidecar_path(onnx_path).read_text())
    edit(sidecar)
    export.sidecar_path(onnx_path).write_text(json.dumps(sidecar))
    options = ["--backend", "onnxruntime", "--model", str(onnx_path), "--outdir", str(tmp_path / "o"), str(scan)]
    assert main(["segment", "--no-progress", *options]) == 2
    err = capsys.readouterr().err
    assert f"sonoseg segment: error: {export.sidecar_path(onnx_path)}: {said}" in err, err
    assert "does not match its sidecar" not in err


@pytest.mark.parametrize("scales", [(), (0.75,)], ids=["one size", "several sizes"])
def test_a_sidecar_whose_size_is_not_the_graphs_is_refused(tmp_path, monkeypatch, capsys, scales):
    model = brightness_model(tmp_path, monkeypatch)
    scan = two_blobs(tmp_path / "scans" / "scan.png")
    onnx_path = tmp_path / "model.onnx"
    written = export.export(model, onnx_path, serve_scales=scales)
    assert ("sides" in written["input"]) == bool(scales)
    options = ["--backend", "onnxruntime", "--model", str(onnx_path), "--outdir", str(tmp_path / "o"), str(scan)]
    for edits in ({"resize": 96}, {"resize": 96, "shape": 96}):
        sidecar = json.loads(json.dumps(written))
        sidecar["input"]["resize"].update(height=edits["resize"], width=edits["resize"])
        if "shape" in edits and not scales:
            sidecar["input"]["shape"][2:] = [96, 96]
        export.sidecar_path(onnx_path).write_text(json.dumps(sidecar))
        assert main(["segment", "--no-progress", *options]) == 2
        err = capsys.readouterr().err
        assert f"error: {export.sidecar_path(onnx_path)}: input.resize.height" in err, err
        assert "RuntimeError" not in err and "96" in err and "64" in err


# ----------------------------------------------------------------------------- 5. options out of range


@pytest.mark.parametrize(
    "options, said",
    [
        (["--scales", "1", "2", "--"], "argument --scales: 2 is not a scale factor in (0, 1]"),
        (["--scales", "0", "--"], "argument --scales: 0 is not a scale factor in (0, 1]"),
        (["--threads", "-1"], "argument --threads: '-1' is not a number of threads: 1 to "),
    ],
)
def test_options_out_of_range_are_refused_by_the_parser(tmp_path, capsys, options, said):
    with pytest.raises(SystemExit) as exit_:
        main(["segment", "--model", "m.pt", "--outdir", str(tmp_path / "o"), *options, "scan.png"])
    assert exit_.value.code == 2
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("name", ["gpu", "mps", "cuda:x", "CPU"])
def test_a_device_sonoseg_does_not_compute_on_is_named_with_the_accepted_ones(tmp_path, monkeypatch, capsys, name):
    model = brightness_model(tmp_path, monkeypatch)
    scan = two_blobs(tmp_path / "scans" / "scan.png")
    monkeypatch.setattr(commands, "_gpu_slot", lambda *a, **k: pytest.fail("a GPU slot was taken for no device"))
    assert main(["segment", "--model", str(model), "--device", name, "--outdir", str(tmp_path / "o"), str(scan)]) == 2
    err = capsys.readouterr().err
    assert f"error: --device: {name!r} is not a device sonoseg computes on; one of auto" in err
    assert "cpu, cuda, cuda:<index>" in err and "RuntimeError" not in err
    # Training names its config key, from the same function.
    with pytest.raises(SonosegError, match=rf"^train.device: {name!r} is not a device"):
        device.select_device(name)


def test_cuda_asked_for_without_it_names_the_option_segment_was_given(tmp_path, monkeypatch, capsys):
    model = brightness_model(tmp_path, monkeypatch)
    scan = two_blobs(tmp_path / "scans" / "scan.png")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(commands, "_gpu_slot", lambda *a, **k: None)
    assert main(["segment", "--model", str(model), "--device", "cuda", "--outdir", str(tmp_path / "o"), str(scan)]) == 2
    err = capsys.readouterr().err
    assert "error: --device: 'cuda' asked for, but no CUDA device is visible" in err and "train.device" not in err
    with pytest.raises(SonosegError, match=r"^train.device: 'cuda:1' asked for, but no CUDA device is visible"):
        device.select_device("cuda:1")
    assert device.select_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    "visible, warned", [("0", True), ("GPU-1a2b", True), ("", False), ("-1", False), (None, False)]
)
def test_auto_on_the_cpu_in_a_job_given_a_gpu_is_warned_of(monkeypatch, caplog, visible, warned):
    """A SLURM job given a GPU (CUDA_VISIBLE_DEVICES set) whose PyTorch sees none (a CPU-only build) trained on the
    CPU without a word; a job given no GPU computes on the CPU as asked."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with caplog.at_level(logging.WARNING, logger="sonoseg.serving.device"):
        assert device.select_device("auto") == torch.device("cpu")
    said = f"train.device: 'auto': this job was given a GPU (CUDA_VISIBLE_DEVICES={visible}), but PyTorch sees no"
    assert (said in caplog.text) is warned, caplog.text


# ----------------------------------------------------------------------------- 6. export of a model out of its run


def test_export_of_a_model_file_out_of_its_run_folder_warns_as_segment_does(tmp_path, monkeypatch, caplog):
    model = brightness_model(tmp_path, monkeypatch)
    scan = two_blobs(tmp_path / "scans" / "scan.png")
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "model.onnx")]) == 0
    exported = [r.getMessage() for r in caplog.records if "no postprocess.json recorded beside it" in r.getMessage()]
    assert len(exported) == 1 and exported[0].startswith(f"{model}: no postprocess.json recorded beside it")
    assert "keep_one and the input size alone; to export as the study did, give `sonoseg export` its run" in exported[0]
    caplog.clear()
    segmenter.segment_images(model, [scan], tmp_path / "o", device="cpu")
    segmented = [r.getMessage() for r in caplog.records if "no postprocess.json recorded beside it" in r.getMessage()]
    assert len(segmented) == 1 and segmented[0].split(":")[1] == exported[0].split(":")[1]  # the same words
    # segment exporting on the fly says it once, not once more for its export.
    caplog.clear()
    segmenter.segment_images(model, [scan], tmp_path / "o2", backend="onnxruntime")
    assert caplog.text.count("no postprocess.json recorded beside it") == 1
    # A model in its run folder, with its fold's choice beside it: no warning.
    member = tmp_path / "run" / "fold0" / "seed0" / "model.pt"
    member.parent.mkdir(parents=True)
    member.write_bytes(model.read_bytes())
    choice = {"validation_dice": {"keep_one": 0.8, "none": 0.7}, "validation_images": 4, "scales": [1.0]}
    (tmp_path / "run" / "fold0" / "postprocess.json").write_text(json.dumps(choice))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        export.export(member, tmp_path / "member.onnx")
    assert "no postprocess.json" not in caplog.text


# ----------------------------------------------------------------------------- BUSI's masks among the images


def test_busi_masks_given_among_the_images_are_warned_of_and_segmented(tmp_path, monkeypatch, caplog):
    """`segment busi/benign/*` catches BUSI's ground truth (NAME_mask.png, NAME_mask_1.png, any case): one
    warning names them; they are segmented all the same (an image may be so named)."""
    model = brightness_model(tmp_path, monkeypatch)
    names = ["benign (1).png", "benign (1)_mask.png", "benign (1)_mask_1.png", "benign (2)_MASK.png"]
    scans = [two_blobs(tmp_path / "benign" / name) for name in names]
    with caplog.at_level(logging.WARNING, logger="sonoseg.serving"):
        segmenter.segment_images(model, scans, tmp_path / "out", device="cpu")
    warned = [r.getMessage() for r in caplog.records if "like" in r.getMessage() and "mask" in r.getMessage()]
    assert warned == [
        "3 images look like masks (NAME_mask.png, BUSI's naming): benign (1)_mask.png, benign (1)_mask_1.png, "
        "benign (2)_MASK.png: segmented as images anyway; leave them out of the images given"
    ]
    for name in names:
        assert (tmp_path / "out" / name.replace(".png", "_mask.png")).is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sonoseg.serving"):
        segmenter.segment_images(model, scans[:2], tmp_path / "out", device="cpu")
    assert [r.getMessage() for r in caplog.records if "looks like a mask" in r.getMessage()] == [
        f"{scans[1]}: looks like a mask (NAME_mask.png, BUSI's naming): segmented as an image anyway; leave it out "
        "of the images given"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sonoseg.serving"):
        segmenter.segment_images(model, scans[:1], tmp_path / "out", device="cpu")  # the image alone: no warning
    assert not [r for r in caplog.records if "like a mask" in r.getMessage() or "like masks" in r.getMessage()]


def test_a_long_list_of_busi_masks_is_named_in_part(tmp_path, caplog):
    """More masks than a log line names: the first few and how many more, on one line."""
    images = [tmp_path / f"benign ({number})_mask.png" for number in range(1, 9)]
    for image in images:
        image.touch()
    with caplog.at_level(logging.WARNING, logger="sonoseg.serving"):
        mask_files.mask_files(images, tmp_path / "out")
    assert [r.getMessage() for r in caplog.records] == [
        "8 images look like masks (NAME_mask.png, BUSI's naming): benign (1)_mask.png, benign (2)_mask.png, "
        "benign (3)_mask.png, benign (4)_mask.png, benign (5)_mask.png, … (3 more): segmented as images anyway; "
        "leave them out of the images given"
    ]


# ----------------------------------------------------------------------------- the mask files' names and places


def test_an_image_named_in_latin_1_gets_its_mask_instead_of_a_crash(tmp_path, scans):
    """cv2.imwrite took the surrogate-escaped name Python holds for a Latin-1 café.png as UTF-8 and crashed the
    process (SIGSEGV, exit 139) after the first mask: no record, no later mask. Run as a user runs it, in a
    process of its own, as a crash would take the tests' process with it."""
    paths, model = scans
    folder = tmp_path / "latin1"
    folder.mkdir()
    latin1 = folder / os.fsdecode(b"caf\xe9_latin1.png")
    try:
        latin1.write_bytes(paths[0].read_bytes())
    except OSError as exc:  # a file system that takes UTF-8 names only (APFS) cannot hold the name at all
        pytest.skip(f"this file system refuses a name that is not UTF-8 ({exc.strerror})")
    ok = folder / "ok.png"
    ok.write_bytes(paths[0].read_bytes())
    outdir = tmp_path / "out"
    command = [Path(sys.executable).parent / "sonoseg", "segment", "--no-progress", "--model", model]
    done = subprocess.run([*command, "--outdir", outdir, ok, latin1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(os.fsencode(outdir))) == [b"caf\xe9_latin1_mask.png", b"ok_mask.png", b"segment_runs.json"]
    written = outdir / os.fsdecode(b"caf\xe9_latin1_mask.png")
    assert written.read_bytes() == (outdir / "ok_mask.png").read_bytes()  # the same scan, the same mask
    (run,) = json.loads((outdir / output_record.RECORD_NAME).read_text())["runs"]
    assert [entry["mask"] for entry in run["images"]] == ["ok_mask.png", written.name]
    # The next run into the folder finds its own mask in the record under that name, and replaces it.
    again = subprocess.run([*command, "--outdir", outdir, latin1], capture_output=True, text=True)
    assert again.returncode == 0 and "replaced the mask an earlier run wrote" in again.stderr, again.stderr[-3000:]


def test_masks_another_model_wrote_are_replaced_with_a_warning_naming_it(tmp_path, caplog):
    """Another model segmenting into the same --outdir replaced every mask with an INFO line each and a summary
    of 'wrote N masks': now a warning names the earlier model, once, and the summary counts the replaced."""
    scans = [two_blobs(tmp_path / "scans" / f"s{i}.png") for i in range(2)]
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = write_model(tmp_path / "first" / "model.pt", "lighter_unet_c1", weights_seed=0)
    second = write_model(tmp_path / "second" / "model.pt", "lighter_unet_c1", weights_seed=1)
    outdir = tmp_path / "out"

    def segment(model):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            command = ["segment", "--no-progress", "--device", "cpu", "--model", str(model), "--outdir", str(outdir)]
            assert main([*command, *map(str, scans)]) == 0
        return caplog.text

    said = segment(first)
    assert "another model" not in said and "in place of" not in said
    said = segment(first)  # the same model again: its own masks, replaced without a warning
    assert (
        "another model" not in said and "wrote 2 masks to" in said and "2 of them in place of an earlier run's" in said
    )
    said = segment(second)
    assert (
        f"{outdir}: 2 mask(s) here were written from another model, {first}, and this run ({second}) replaces "
        "them: s0_mask.png, s1_mask.png" in said
    )
    assert said.count("written from another model") == 1


def test_an_image_whose_mask_name_is_over_the_limit_fails_alone(tmp_path, monkeypatch, capsys):
    """A legal image name of up to the limit gives a mask name 5 bytes longer: one such image stopped the whole
    run (OSError: File name too long) before any image was segmented. It fails by name; the others go on."""
    model = brightness_model(tmp_path, monkeypatch)
    outdir = tmp_path / "out"
    limit = mask_files.name_max(tmp_path)
    assert limit == os.pathconf(tmp_path, "PC_NAME_MAX")  # the file system's own limit (no --outdir yet)
    fits = two_blobs(tmp_path / "scans" / ("f" * (limit - len("_mask.png")) + ".png"))  # a mask name of the limit
    over = two_blobs(tmp_path / "scans" / ("a" * (limit - 8) + ".png"))  # a mask name one byte over it
    plain = two_blobs(tmp_path / "scans" / "b.png")
    command = ["segment", "--no-progress", "--model", str(model), "--device", "cpu", "--outdir", str(outdir)]
    assert main([*command, str(plain), str(over), str(fits)]) == 2
    err = capsys.readouterr().err
    said = f"{over}: its mask's name, {'a' * 24}…_mask.png, would be {limit + 1} bytes, over the {limit}-byte limit"
    assert "1 of 3 images failed" in err and said in err, err[-3000:]
    assert "give the image a shorter name" in err and "Errno" not in err
    assert sorted(p.name for p in outdir.glob("*_mask.png")) == ["b_mask.png", fits.stem + "_mask.png"]
    (run,) = json.loads((outdir / output_record.RECORD_NAME).read_text())["runs"]
    assert (run["written"], run["failed"]) == (2, 1) and run["images"][1]["error"].startswith(said)


def test_a_folder_at_a_masks_place_is_named_as_a_folder_and_stops_the_run(tmp_path, monkeypatch, capsys):
    """The message guessed at a full disk or a read-only folder; the run stops as for any mask that cannot be
    written (docs/deploy.md), recording what it wrote, and leaves no part-written file behind."""
    model = brightness_model(tmp_path, monkeypatch)
    scans = [two_blobs(tmp_path / "scans" / name) for name in ("a.png", "b.png")]
    outdir = tmp_path / "out"
    segmenter.segment_images(model, scans, outdir, device="cpu")
    (outdir / "b_mask.png").unlink()
    (outdir / "b_mask.png").mkdir()  # where the record says segment wrote a mask, a folder now
    command = ["segment", "--no-progress", "--model", str(model), "--device", "cpu", "--outdir", str(outdir)]
    assert main([*command, *map(str, scans)]) == 2
    err = capsys.readouterr().err
    assert f"{outdir / 'b_mask.png'}: the mask could not be written (a folder is at that path: move it" in err
    assert "disk full" not in err
    assert sorted(p.name for p in outdir.iterdir()) == ["a_mask.png", "b_mask.png", output_record.RECORD_NAME]
    assert json.loads((outdir / output_record.RECORD_NAME).read_text())["runs"][1]["interrupted"]


# ----------------------------------------------------------------------------- images of unusual kinds and shapes


@pytest.mark.parametrize("kind, said", [("PNG", "an animated PNG of 2 frames"), ("GIF", "an animated GIF of 2 frames")])
def test_an_animated_image_is_named_as_what_it_is(tmp_path, monkeypatch, caplog, kind, said):
    model = brightness_model(tmp_path, monkeypatch)
    frames = [Image.fromarray(np.full((SIZE, SIZE, 3), value, np.uint8)) for value in (90, 200)]
    image = tmp_path / f"cine.{kind.lower()}"
    frames[0].save(image, format=kind, save_all=True, append_images=frames[1:])
    segmenter.segment_images(model, [image], tmp_path / "out", device="cpu")
    assert f"{image}: {said}: the first frame is segmented" in caplog.text and "TIFF" not in caplog.text
    assert not mask(tmp_path / "out", "cine_mask.png").any()  # the first frame, mid-grey and darker: no lesion


def test_an_image_too_small_or_too_narrow_for_a_scan_is_segmented_with_a_warning(tmp_path, monkeypatch, caplog):
    model = brightness_model(tmp_path, monkeypatch)
    shapes = {"dot": (1, 1), "strip": (500, 1), "band": (20, 300), "scan": (60, 80), "edge": (8, 64)}
    images = []
    for name, shape in shapes.items():
        images.append(tmp_path / "scans" / f"{name}.png")
        images[-1].parent.mkdir(exist_ok=True)
        cv2.imwrite(str(images[-1]), np.full((*shape, 3), 255, np.uint8))
    with caplog.at_level(logging.WARNING, logger="sonoseg.serving"):
        result = segmenter.segment_images(model, images, tmp_path / "out", device="cpu")
    assert len(result.written) == 5 and not result.failed  # warned of, not failed
    warned = sorted(r.getMessage() for r in caplog.records if "may mean nothing" in r.getMessage())
    end = f"for the model's square {SIZE}-px input, and its mask may mean nothing; segmented all the same"
    assert [line.split("; segmented")[0] + "; segmented all the same" for line in warned] == [
        f"{images[2]}: 300x20 px, one side over 8 times the other: stretched out of shape {end}",
        f"{images[0]}: 1x1 px, a side under 8 px: too few pixels {end}",
        f"{images[1]}: 1x500 px, a side under 8 px: too few pixels {end}",
    ]
    assert mask(tmp_path / "out", "dot_mask.png").shape == (1, 1)


# ----------------------------------------------------------------------------- what is known of a file in the outdir


def test_a_hand_made_mask_in_a_folder_without_a_record_is_named_as_unrecorded_not_as_an_earlier_runs(
    tmp_path, monkeypatch, caplog
):
    """A mask-named file in an output folder with no segment_runs.json was called "left from an earlier run", a
    guess (a hand-drawn mask?): what is known is said, that no record lists it, with the ways on."""
    model = brightness_model(tmp_path, monkeypatch)
    scans = [two_blobs(tmp_path / "scans" / name) for name in ("a.png", "b.png")]
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "x_mask.png").write_bytes(b"drawn by hand")
    with caplog.at_level(logging.WARNING):
        segmenter.segment_images(model, scans, outdir, device="cpu")
    assert "earlier run" not in caplog.text
    assert (
        f"{outdir}: 1 file(s) named as masks that no image of this run maps to, not written by a recorded segment run "
        "(it has no segment_runs.json, the record of the masks segment writes there): x_mask.png (kept; to keep them "
        f"apart from this run's masks, move them out of {outdir}, or give segment another --outdir)"
    ) in caplog.text
    # With a record: a's mask, which it lists, is an earlier run's; x's is one it does not list.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        segmenter.segment_images(model, scans[1:], outdir, device="cpu")
    assert f"{outdir}: 1 mask file(s) that no image of this run maps to, left from an earlier run: a_mask.png" in (
        caplog.text
    )
    assert "not written by a recorded segment run (its segment_runs.json does not list them): x_mask.png" in (
        caplog.text
    )
    # An image that now fails: the mask at its place, which the record lists, is named as kept.
    scans[1].write_bytes(scans[1].read_bytes()[:-20])  # cut short: no IEND
    result = segmenter.segment_images(model, scans[1:], outdir, device="cpu")
    ((failed, message),) = result.failed
    assert failed == scans[1] and message.endswith(
        f"({outdir / 'b_mask.png'} is kept as it was: an earlier run's mask, which segment_runs.json lists)"
    )
    assert (outdir / "x_mask.png").read_bytes() == b"drawn by hand"


# ----------------------------------------------------------------------------- each image file opened once


def test_each_image_file_is_opened_once_its_pages_and_orientation_taken_from_that_reading(
    tmp_path, monkeypatch, caplog
):
    """The file was opened for its checks, again by Pillow for its header, again for its bytes, and a
    multi-page one once more for the warning to name its format: each is opened once now, and the warnings
    and the turned mask are as before."""
    import builtins
    import io

    model = brightness_model(tmp_path, monkeypatch)
    pages = tmp_path / "scans" / "cine.tif"
    pages.parent.mkdir()
    frames = [Image.fromarray(np.full((SIZE, SIZE, 3), value, np.uint8)) for value in (200, 90)]
    frames[0].save(pages, save_all=True, append_images=frames[1:])
    turned = tmp_path / "scans" / "turned.jpg"
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :20] = 255  # bright on the left as stored: at the top once turned (orientation 6, 90 degrees clockwise)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(turned, exif=exif, quality=95)
    inputs = {pages.resolve(), turned.resolve()}
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and Path(os.fsdecode(file)).resolve() in inputs:
            opened.append(Path(os.fsdecode(file)).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)  # pathlib's open and read_bytes
    with caplog.at_level(logging.WARNING):
        result = segmenter.segment_images(model, [pages, turned], tmp_path / "out", device="cpu")
    assert len(result.written) == 2 and not result.failed
    assert sorted(opened) == ["cine.tif", "turned.jpg"]
    assert f"{pages}: a TIFF of 2 pages: the first page is segmented" in caplog.text
    assert f"{turned}: turned as its EXIF orientation (6) says a viewer shows it" in caplog.text
    assert mask(tmp_path / "out", "cine_mask.png").all()  # the first page, the bright one
    lesion = mask(tmp_path / "out", "turned_mask.png")
    assert lesion.shape == (60, 40) and lesion[:15].all() and not lesion[25:].any()


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "--model", "m.pt", "--outdir", "", "scan.png"],
        ["segment", "--model", " ", "--outdir", "out", "scan.png"],
        ["segment", "--model", "m.pt", "--outdir", "out", ""],
        ["export", "--model", "", "--out", "m.onnx"],
        ["export", "--model", "m.pt", "--out", ""],
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_working_folder(argv, tmp_path, monkeypatch, capsys):
    """A script's unset variable (--outdir "$OUT") gives an empty path, which the OS reads as the working folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "an empty path (an unset variable in a script?)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_export_into_a_folder_it_cannot_write_says_why(tmp_path, monkeypatch):
    """A read-only file system (a mounted archive, a container's image) is said as such, not blamed on
    permissions. (Simulated: as root, a folder's permissions never stop a write, and mounting needs privileges.)"""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    for flag, said in ((os.ST_RDONLY, "is on a read-only file system"), (0, r"may not be written in \(permissions\)")):
        monkeypatch.setattr(os, "statvfs", lambda path, flag=flag: type("Stat", (), {"f_flag": flag})())
        with pytest.raises(SonosegError, match=rf"model.onnx: cannot be written: the folder .* {said}$"):
            export.check_out(tmp_path / "model.onnx")


def test_a_folder_counts_gif_as_an_image_only_where_opencv_decodes_it(monkeypatch):
    """OpenCV decodes GIF where it was built with its GIF codec (PyPI's wheels since 4.11): a folder's GIFs are
    segmented there, and counted among the files not read elsewhere, not failed one by one."""
    import importlib

    assert mask_files._decodes_gif()  # this environment's OpenCV: the folder's test above segments a GIF
    with monkeypatch.context() as patched:
        patched.setattr(cv2, "imdecode", lambda *args: None)  # an OpenCV built without it
        without = importlib.reload(mask_files)
        assert ".gif" not in without.SEGMENT_SUFFIXES and ".webp" in without.SEGMENT_SUFFIXES
    assert ".gif" in importlib.reload(mask_files).SEGMENT_SUFFIXES


def test_an_image_whose_name_starts_with_a_dash_gets_a_hint_and_segments_after_two_dashes(
    tmp_path, monkeypatch, capsys
):
    """A probe's `-x.png` was "the following arguments are required: images", and `*.png` catching it was
    "unrecognized arguments" with no word on why: argparse reads it as an option. A hint says how to give it."""
    model = brightness_model(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    two_blobs(tmp_path / "-x.png")
    command = ["segment", "--no-progress", "--model", str(model), "--device", "cpu", "--outdir", "out"]
    with pytest.raises(SystemExit) as stopped:
        main([*command, "-x.png"])
    assert stopped.value.code == 2
    said = capsys.readouterr().err
    assert "the following arguments are required: images" in said
    assert "sonoseg: -x.png: a file name starting with '-' is read as an option; give files after '--'" in said
    assert main([*command, "--", "-x.png"]) == 0 and (tmp_path / "out" / "-x_mask.png").is_file()
