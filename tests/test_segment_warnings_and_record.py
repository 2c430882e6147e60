"""What a hospital engineer's probe of `sonoseg segment` found: a tinted image (or a colour Doppler box) got a
wrong mask without a word; a loop of links among the images stopped the whole run; mask-name clashes were
named one pair per run; --threads was recorded but not applied by the torch backend; the record listed the
scales asked for, not the sizes the network took, could not name the models it used beyond their paths, and
said an image whose mask could not be written was "not reached"; and --size took any number."""

import json
import os
import re

import cv2
import numpy as np
import pytest
import torch

from sonoseg.errors import SonosegError
from sonoseg.serving import export, infer, segmenter
from sonoseg.serving.image_warnings import COLOURED_SHARE
from sonoseg.study.cli import main


def record(outdir):
    return json.loads((outdir / "segment_runs.json").read_text())["runs"][-1]


def test_an_image_coloured_over_much_of_it_is_segmented_with_a_warning_the_record_keeps(tmp_path, scans, caplog):
    from sonoseg.data import marks, synth

    _, model = scans
    grey = np.ascontiguousarray(synth.render(0, 0, 0)[0][:, :, ::-1])  # a phantom scan, its calipers drawn
    cv2.imwrite(str(tmp_path / "phantom.png"), grey)
    tinted = np.clip(grey * np.array([0.6, 0.85, 1.0]) + np.array([0, 10, 30]), 0, 255).astype(np.uint8)  # sepia
    cv2.imwrite(str(tmp_path / "tinted.png"), tinted)
    boxed = grey.copy()
    boxed[100:250, 150:350] = (0, 0, 220)  # a red Doppler-like box over part of the scan (BGR)
    cv2.imwrite(str(tmp_path / "doppler.png"), boxed)
    images = [tmp_path / "phantom.png", tmp_path / "tinted.png", tmp_path / "doppler.png"]
    segmenter.segment_images(model, images, tmp_path / "masks", device="cpu")
    entries = {os.path.basename(entry["image"]): entry for entry in record(tmp_path / "masks")["images"]}
    assert "warnings" not in entries["phantom.png"]  # a grey scan with a scanner's coloured calipers
    for name in ("tinted.png", "doppler.png"):
        (warning,) = entries[name]["warnings"]
        assert "of its pixels are coloured" in warning and "convert a tinted image to grey" in warning
        assert f"{name}: {warning}" in caplog.text
        assert entries[name]["mask"] == name.replace(".png", "_mask.png")  # segmented all the same
    # The phantom's own calipers (a scanner's marks) are far under the share that is warned of.
    shares = [marks.find_marks(synth.render(0, patient, 0)[0]).mean() for patient in range(6)]
    assert max(shares) > 0 and max(shares) < COLOURED_SHARE / 5


def test_a_loop_of_links_among_the_images_fails_by_name_and_the_others_are_segmented(tmp_path, scans):
    paths, model = scans
    loop = tmp_path / "scans" / "loop.png"
    loop.symlink_to(loop)
    result = segmenter.segment_images(model, [*paths, loop], tmp_path / "masks", device="cpu")
    assert len(result.written) == 3
    ((failed, message),) = result.failed
    assert failed == loop and str(loop) in message


def test_every_mask_name_clash_is_named_at_once(tmp_path, scans):
    paths, model = scans
    image = cv2.imread(str(paths[0]))
    for name in ("img.bmp", "img.jpg", "img.tiff", "anim.png", "anim.gif"):
        ok, data = cv2.imencode(os.path.splitext(name)[1], image) if not name.endswith(".gif") else (True, None)
        (tmp_path / name).write_bytes(data.tobytes() if data is not None else b"GIF89a")
    given = [tmp_path / name for name in ("img.bmp", "img.jpg", "img.tiff", "anim.png", "anim.gif")]
    with pytest.raises(SonosegError) as raised:
        segmenter.segment_images(model, given, tmp_path / "masks", device="cpu")
    message = str(raised.value)
    assert "img.bmp and " in message and "img.jpg and " in message and "img.tiff would all be written" in message
    assert "anim.png and " in message and "anim.gif would both be written" in message


def test_threads_are_applied_by_the_torch_backend_as_recorded_and_given_back(tmp_path, scans, monkeypatch):
    paths, model = scans
    given, real, during = torch.get_num_threads(), torch.set_num_threads, []
    real(2)  # not the count asked for (the suite's workers run with 1): only a count given back passes
    before = torch.get_num_threads()

    def set_threads(count):
        real(count)
        during.append(count)

    monkeypatch.setattr(torch, "set_num_threads", set_threads)
    try:
        segmenter.segment_images(model, paths[:1], tmp_path / "masks", device="cpu", threads=1)
        assert during and during[0] == 1 and record(tmp_path / "masks")["threads"] == 1
        # A notebook segmenting one folder keeps its own thread count for what it does next.
        assert torch.get_num_threads() == before
    finally:
        real(given)


def test_a_device_sonoseg_cannot_use_is_named_as_the_caller_set_it():
    """The Python argument for a caller in Python, the study's train.device for its predict jobs and choices."""
    for option, said in (("device", "device: 'gpu'"), ("train.device", "train.device: 'gpu'")):
        with pytest.raises(SonosegError, match=re.escape(said)):
            infer.model_predictor(__file__, "gpu", option)  # refused before the file is read


def test_the_record_lists_the_sizes_the_network_took_and_names_each_model_beyond_its_path(tmp_path, scans):
    """UNeXt needs a multiple of 32: at 64 px, --scales 0.5 asks for 32 px (taken) and 0.75 for 48 px, which it
    cannot take (left out, with a warning): the record lists the sizes each image could be tried at."""
    from conftest import write_model

    paths, _ = scans
    model = write_model(tmp_path / "unext.pt", "unext", lesion_areas=[10, 20])
    saved = torch.load(model, weights_only=False)
    saved["fingerprint"] = "f" * 16  # as training records it
    saved["trained_with"] = "bf16 + channels_last"
    torch.save(saved, model)
    segmenter.segment_images(model, paths[:2], tmp_path / "masks", device="cpu", scales=(1.0, 0.75, 0.5))
    entry = record(tmp_path / "masks")
    assert entry["scales"] == [1.0, 0.75, 0.5] and entry["input_sizes"] == [64, 32]
    assert entry["cwd"] == os.getcwd() and entry["member_ids"] == ["f" * 16]
    assert entry["precision"] == "fp32"  # what the masks were computed in, whatever the model trained in
    # An export says what its model trained in (the graph computes in fp32 whatever it was).
    sidecar = export.export(model, tmp_path / "unext.onnx")
    assert sidecar["source_model"]["trained_with"] == "bf16 + channels_last"


def test_input_sizes_out_of_all_reason_are_refused_by_the_command(tmp_path, scans, capsys):
    paths, model = scans
    for size in ("-5", "4096", "100000"):  # 4096 px crashed PyTorch's convolution on a CPU (a segmentation fault)
        with pytest.raises(SystemExit) as stopped:
            main(["segment", "--model", str(model), "--size", size, "--outdir", str(tmp_path / "m"), str(paths[0])])
        assert stopped.value.code == 2
        assert f"'{size}' is not an input size: pixels, 1 to 2048" in capsys.readouterr().err
    # A thread count far over the CPUs only slows the run, and tens of thousands broke PyTorch's thread pool (told
    # as a model file that would not load).
    from sonoseg.study import cli

    for threads in (str(cli.MOST_THREADS + 1), "99999"):
        with pytest.raises(SystemExit) as stopped:
            main(
                ["segment", "--model", str(model), "--threads", threads, "--outdir", str(tmp_path / "m"), str(paths[0])]
            )
        assert stopped.value.code == 2
        assert f"'{threads}' is not a number of threads: 1 to {cli.MOST_THREADS}, 4 per CPU" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_size_away_from_the_trained_one_is_served_as_asked_with_one_warning(tmp_path, scans, caplog):
    """--size is taken (a user may want another scale) but said: the masks are then not the study's."""
    from sonoseg.serving import export

    paths, model = scans
    trained = torch.load(model, weights_only=True)["input_size"]
    said = f"px, not the {trained} px it was trained at"
    segmenter.segment_images(model, paths[:1], tmp_path / "same", device="cpu", size=trained)
    assert said not in caplog.text
    for backend in ("torch", "onnxruntime"):  # onnxruntime exports the model.pt first: said once, not twice
        caplog.clear()
        segmenter.segment_images(model, paths[:1], tmp_path / backend, device="cpu", size=2 * trained, backend=backend)
        assert record(tmp_path / backend)["input_size"] == 2 * trained
        assert caplog.text.count(said) == 1 and f"served at --size {2 * trained} px" in caplog.text
    caplog.clear()
    export.export(model, tmp_path / "model.onnx", size=2 * trained)
    assert caplog.text.count(said) == 1 and f"exported at --size {2 * trained} px" in caplog.text


def test_a_file_that_is_no_model_is_refused_before_any_note_about_it(tmp_path, scans, caplog):
    paths, _ = scans
    junk = tmp_path / "copied" / "junk.pt"
    junk.parent.mkdir()
    junk.write_bytes(b"not a model")
    with pytest.raises(
        SonosegError, match=r"junk.pt: refused: not a sonoseg-model-v1 file .*: not a torch file \(another kind of file"
    ):
        segmenter.segment_images(junk, paths[:1], tmp_path / "masks", device="cpu")
    assert "postprocess.json" not in caplog.text
    # A torch file, even one of tensors alone saved in the legacy pickle format, is not called "no torch file".
    legacy = tmp_path / "legacy.pt"
    torch.save({"weight": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False, pickle_protocol=4)
    with pytest.raises(SonosegError, match=r"legacy.pt: refused: not a sonoseg-model-v1 file") as raised:
        segmenter.segment_images(legacy, paths[:1], tmp_path / "masks", device="cpu")
    assert "not a torch file" not in str(raised.value)


def test_an_image_mostly_transparent_is_segmented_with_a_warning(tmp_path, scans, caplog):
    """An RGBA image whose alpha hides most of it: segmented as the colours under the alpha, with a warning the
    record keeps; a little transparency (a rounded corner) is not warned of."""
    paths, model = scans
    scan = cv2.imread(str(paths[0]))
    for name, hidden in (("hidden.png", slice(None)), ("corner.png", slice(0, 2))):
        rgba = cv2.cvtColor(scan, cv2.COLOR_BGR2BGRA)
        rgba[hidden, hidden, 3] = 0
        cv2.imwrite(str(tmp_path / name), rgba)
    segmenter.segment_images(
        model, [tmp_path / "hidden.png", tmp_path / "corner.png"], tmp_path / "masks", device="cpu"
    )
    entries = {os.path.basename(entry["image"]): entry for entry in record(tmp_path / "masks")["images"]}
    (warning,) = entries["hidden.png"]["warnings"]
    assert warning.startswith("100% of its pixels are fully transparent (alpha 0)") and "hidden.png" in caplog.text
    assert "warnings" not in entries["corner.png"]
    assert entries["hidden.png"]["mask"] == "hidden_mask.png"


def test_a_blank_frame_a_pipe_and_a_damaged_png_are_each_said_for_what_they_are(tmp_path, scans, caplog):
    """A probe fed PACS-like exports: flat grey frames got masks of 48-91 % "lesion" without a word; a named pipe
    called scan.png was "an empty file (0 bytes)"; a PNG with bytes overwritten was "not a readable image", as a
    text file is."""
    paths, model = scans
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((60, 80), np.uint8))
    cv2.imwrite(str(tmp_path / "grey.jpg"), (128 + rng.integers(-2, 3, (60, 80))).astype(np.uint8))
    damaged = bytearray(paths[0].read_bytes())
    start = damaged.index(b"IDAT") + 40
    damaged[start : start + 64] = bytes(range(64))
    (tmp_path / "damaged.png").write_bytes(bytes(damaged))
    os.mkfifo(tmp_path / "pipe.png")
    images = [paths[0], *(tmp_path / name for name in ("black.png", "grey.jpg", "damaged.png", "pipe.png"))]
    result = segmenter.segment_images(model, images, tmp_path / "masks", device="cpu")
    entries = {os.path.basename(entry["image"]): entry for entry in record(tmp_path / "masks")["images"]}
    assert "warnings" not in entries[paths[0].name]  # a scan
    for name in ("black.png", "grey.jpg"):
        (warning,) = entries[name]["warnings"]
        assert warning.startswith("99% of its pixels lie within") and "there is no scan to segment" in warning
        assert entries[name]["mask"]  # segmented all the same
    failed = dict(result.failed)
    assert failed[tmp_path / "pipe.png"] == f"{tmp_path / 'pipe.png'}: not a regular file (a named pipe)"
    assert failed[tmp_path / "damaged.png"].endswith("damaged PNG (it starts as one, but its pixels do not decode)")


def test_the_flat_warning_looks_at_every_pixel_and_leaves_dark_16_bit_scans_to_their_own(tmp_path, scans):
    """A reviewer's frame, black but for every fourth row bright, was called flat (every fourth row and column
    was looked at); a dark 10-bit scan in a 16-bit file got "no scan to segment" beside its own warning."""
    from sonoseg.data import imageio
    from sonoseg.serving import image_warnings

    striped = np.zeros((60, 80), np.uint8)
    striped[1::4] = 200
    cv2.imwrite(str(tmp_path / "striped.png"), striped)
    ten_bit = (np.random.default_rng(0).integers(0, 1024, (60, 80))).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "ten_bit.png"), ten_bit)
    for name, expected in (("striped.png", []), ("ten_bit.png", ["a 16-bit image whose brightest pixel"])):
        found = image_warnings.warnings_for(imageio.read_image(tmp_path / name), 32, "inpaint")
        assert [warning[: len(expected[0])] for warning in found] == expected if expected else found == []


def test_a_command_run_in_a_folder_removed_under_it_says_so(tmp_path):
    """A service's working folder removed under it (a deploy replaced it): every serving command failed, the
    ONNX one with a FileNotFoundError naming no file, the torch ones with MKL's 'FATAL ERROR' at import."""
    import subprocess

    from conftest import BIN

    gone = tmp_path / "release-1"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{BIN / "sonoseg"}" export --model m.pt --out m.onnx'
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 2, ran.stderr
    assert "sonoseg export: error: the working folder no longer exists" in ran.stderr
    assert "FATAL" not in ran.stderr and "Traceback" not in ran.stderr


@pytest.mark.parametrize("stderr", ["2>&1 | head -c 20", "2>&-", "2>/dev/full"])
def test_segment_writes_every_mask_whatever_becomes_of_its_standard_error(tmp_path, scans, stderr):
    """A pipeline read segment's messages with `| head` (a reader that quits), or started it with its standard
    error closed or full: the progress bar's next write stopped the run, and `| head` made it exit 0 with no
    mask written. Off a terminal there is no bar; every mask is written."""
    import subprocess

    from conftest import BIN

    paths, model = scans
    images = " ".join(f'"{path}"' for path in paths)
    command = f'set -o pipefail; "{BIN / "sonoseg"}" segment --model "{model}" --outdir "{tmp_path / "m"}" {images}'
    ran = subprocess.run(["bash", "-c", f"{command} {stderr}"], capture_output=True, text=True, timeout=300)
    assert ran.returncode in (0, 141), ran  # 141: head's quitting seen by the shell's pipefail, after the run
    assert sorted(p.name for p in (tmp_path / "m").glob("*_mask.png")) == [f"{p.stem}_mask.png" for p in paths]
    assert record(tmp_path / "m")["written"] == len(paths) and "interrupted" not in record(tmp_path / "m")


def test_a_model_or_choice_the_user_may_not_read_is_said_so_not_called_damaged(tmp_path, scans, monkeypatch):
    """A service user without read permission on a model file or its postprocess.json was told the file was
    'not a sonoseg-model-v1 file that loads safely ... (cut short, or not a torch file)' or 'not a
    post-processing choice': read as damaged or tampered. (As root, whom permissions do not stop, the
    file system's refusal is made: torch.load's, and a choice that is a folder.)"""
    from sonoseg.serving import modelio

    _, model = scans

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(model))

    monkeypatch.setattr(torch, "load", refused)
    with pytest.raises(SonosegError) as error:
        modelio.load_checked(model, modelio.MODEL_FORMAT)
    assert str(error.value) == f"{model}: cannot be read (Permission denied)"
    folder = tmp_path / "postprocess.json"
    folder.mkdir()
    with pytest.raises(SonosegError) as error:
        modelio.chosen_postprocess([folder])
    assert str(error.value) == f"{folder}: the post-processing choice cannot be read (Is a directory)"
