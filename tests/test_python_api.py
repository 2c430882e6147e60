"""sonoseg as a Python library after a study: Segmenter, the one documented way to segment an array, gives the
mask `sonoseg segment` writes (a model file, a run folder with its recorded choice, an exported graph); the
arrays it takes and refuses; the serving functions' messages, options and docstrings."""

import inspect
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import sample_images, write_model

from sonoseg.errors import SonosegError
from sonoseg.serving import Segmenter, export, infer, predictor, segmenter
from sonoseg.serving.mask_files import RECORD_NAME, write_png
from sonoseg.study.cli import main

# A fold's choice on validation: no post-processing, and test-time scale selection.
CHOICE = {"validation_dice": {"keep_one": 0.4, "none": 0.5}, "validation_images": 2, "scales": [1.0, 0.75, 0.5]}


def run_folder(tmp_path):
    """results/<study>/runs/<network>/ as a study leaves it: two folds of one seed, each fold's postprocess.json."""
    run = tmp_path / "runs" / "lighter_unet_c1"
    for fold in (0, 1):
        (run / f"fold{fold}" / "seed0").mkdir(parents=True)
        write_model(run / f"fold{fold}" / "seed0" / "model.pt", "lighter_unet_c1", weights_seed=fold)
        (run / f"fold{fold}" / "postprocess.json").write_text(json.dumps(CHOICE))
    return run


def segment_command(model, image_file, outdir, *options) -> bytes:
    """The mask file the real `sonoseg segment` writes for ``image_file``."""
    command = ["segment", "--no-progress", "--model", str(model), "--outdir", str(outdir), *options, str(image_file)]
    assert main(command) == 0
    return (outdir / f"{image_file.stem}_mask.png").read_bytes()


def as_mask_file(mask: np.ndarray, path) -> bytes:
    """``mask`` written as segment writes its masks (0/255 PNG)."""
    return write_png(mask.astype(np.uint8) * 255, path).read_bytes()


def test_a_segmenter_gives_the_mask_segment_writes_byte_for_byte(tmp_path):
    """A model file, a run folder (its recorded 'none' and scales applied) and an exported graph, each against the
    real command on the image saved as PNG (the array path against the file path, the recorded choice resolved
    alike); the run folder's mask differs from keep_one's, so the recorded choice is applied."""
    image = sample_images(1)[0]
    image_file = tmp_path / "scan.png"
    cv2.imwrite(str(image_file), image[:, :, ::-1])
    model = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    onnx = tmp_path / "model.onnx"
    export.export(model, onnx)
    run = run_folder(tmp_path)
    for name, served, options in (
        ("pt", model, ["--device", "cpu"]),
        ("run", run, ["--device", "cpu"]),
        ("onnx", onnx, []),
    ):
        expected = segment_command(served, image_file, tmp_path / name, *options)
        loaded = Segmenter(served, device="cpu")
        mask = loaded(image)
        assert mask.dtype == bool and mask.shape == image.shape[:2]
        assert as_mask_file(mask, tmp_path / f"{name}_python.png") == expected, name
    assert loaded.postprocess == "keep_one"  # the exported graph's sidecar says so
    # The run folder: what the folds recorded is applied; the plain ensemble with keep_one is another mask.
    by_run = Segmenter(run, device="cpu")
    assert by_run.postprocess == "none" and by_run.selection.factors == (1.0, 0.75, 0.5)
    plain = Segmenter(run, device="cpu", postprocess="keep_one", scales=(1.0,))
    assert not np.array_equal(by_run(image), plain(image))


@pytest.mark.parametrize(
    ("stored", "given"),
    [
        ("grey", lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)),
        ("16-bit grey", lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257 + 100),
        ("16-bit RGB", lambda rgb: rgb.astype(np.uint16) * 257 + 200),
        ("RGBA", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])),
    ],
)
def test_arrays_read_image_converts_are_converted_as_segment_reads_their_files(tmp_path, stored, given):
    """The array a file holds (grey, 16-bit, RGBA) gives the mask segment writes for that file."""
    pixels = given(sample_images(1)[0])
    image_file = tmp_path / "scan.png"
    colour_order = {3: [2, 1, 0], 4: [2, 1, 0, 3]}  # OpenCV writes BGR(A)
    cv2.imwrite(str(image_file), pixels[:, :, colour_order[pixels.shape[2]]] if pixels.ndim == 3 else pixels)
    model = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    expected = segment_command(model, image_file, tmp_path / "out", "--device", "cpu")
    assert as_mask_file(Segmenter(model, device="cpu")(pixels), tmp_path / "python.png") == expected, stored


@pytest.mark.parametrize(
    ("image", "said"),
    [
        (np.zeros((70, 90, 3), np.float32), "dtype float32 and shape (70, 90, 3)"),
        (np.zeros((70, 90, 3)), "dtype float64"),
        (np.zeros((70, 90), bool), "dtype bool"),
        (np.zeros((70, 90, 3), np.int32), "dtype int32"),
        (np.zeros((1, 70, 90), np.uint8), "shape (1, 70, 90): not one image's pixels"),
        (np.zeros((70, 90, 2), np.uint8), "shape (70, 90, 2)"),
        (np.zeros((2, 70, 90, 3), np.uint8), "shape (2, 70, 90, 3)"),
        (np.zeros((0, 0), np.uint8), "shape (0, 0): an empty image"),
        ([[0, 1], [1, 0]], "a list, not a numpy array"),
    ],
)
def test_arrays_no_image_file_gives_are_refused_naming_dtype_shape_and_what_is_taken(tmp_path, image, said):
    loaded = Segmenter(write_model(tmp_path / "model.pt", "lighter_unet_c1"), device="cpu")
    with pytest.raises(SonosegError, match=r"uint8 or uint16 arrays .* \(height, width, 4\) RGBA") as refused:
        loaded(image)
    assert said in str(refused.value)
    if np.asarray(image).dtype.kind == "f":
        assert "scale it to uint8 first" in str(refused.value)


def test_predictor_prepare_refuses_all_but_one_rgb_uint8_image(tmp_path):
    loaded = infer.model_predictor(write_model(tmp_path / "model.pt", "lighter_unet_c1"), "cpu")
    assert loaded.prepare(sample_images(1)[0]).shape == (1, 3, 64, 64)
    wrong_arrays = [np.zeros((70, 90), np.uint8), np.zeros((70, 90, 4), np.uint8), np.zeros((1, 70, 90), np.uint8)]
    wrong_arrays += [np.zeros((70, 90, 3), dtype) for dtype in (np.float32, np.float64, np.uint16, bool)]
    for wrong in wrong_arrays:
        with pytest.raises(SonosegError, match=rf"^Predictor.prepare takes one RGB uint8 image .*{wrong.dtype}"):
            loaded.prepare(wrong)
    with pytest.raises(SonosegError, match=r"an empty image, shaped \(0, 5, 3\)"):
        loaded.prepare(np.zeros((0, 5, 3), np.uint8))


def test_model_predictor_names_a_missing_file_a_folder_and_the_device_argument(tmp_path):
    with pytest.raises(SonosegError, match=r"nope.pt: no such model file$"):
        infer.model_predictor(tmp_path / "nope.pt")
    with pytest.raises(SonosegError, match=r"a folder, not a model file .*Segmenter"):
        infer.model_predictor(tmp_path)
    model = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    with pytest.raises(SonosegError, match=r"^device: 'gpu' is not a device sonoseg computes on") as refused:
        infer.model_predictor(model, "gpu")
    assert "train.device" not in str(refused.value)
    with pytest.raises(SonosegError, match=r"^threads: -1 is not a number of threads"):
        Segmenter(model, threads=-1)
    with pytest.raises(SonosegError, match=r"^threads: True is not a number of threads"):
        Segmenter(model, threads=True)  # Python's bool is an int; a flag is no count
    # A notebook's count, as NumPy gives it: taken, and held as Python's int (the run's record is JSON).
    assert type(Segmenter(model, device="cpu", threads=np.int64(1)).threads) is int
    with pytest.raises(SonosegError, match=r"no such model file or run folder"):
        Segmenter(tmp_path / "nope.pt")


def test_an_option_is_named_as_the_caller_gave_it(tmp_path):
    """A Python caller's keyword (size=) and segment's command-line option (--size), by the same check."""
    model = write_model(tmp_path / "m.pt", "lighter_unet_c1")
    export.export(model, tmp_path / "m.onnx")
    with pytest.raises(SonosegError, match=r"an exported model has its input size; size does not apply$"):
        Segmenter(tmp_path / "m.onnx", size=48)
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    with pytest.raises(SonosegError, match=r"an exported model has its input size; --size does not apply"):
        segmenter.segment_images(tmp_path / "m.onnx", [image], tmp_path / "out", size=48)


def test_a_postprocess_segment_does_not_take_is_refused_before_anything_is_read_or_written(tmp_path):
    not_a_model = tmp_path / "junk.pt"
    not_a_model.write_bytes(b"junk")  # never read: the option is refused first
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    with pytest.raises(SonosegError) as refused:
        segmenter.segment_images(not_a_model, [image], tmp_path / "out", postprocess="keep one")
    assert str(refused.value) == "--postprocess: 'keep one' is not one of ('keep_one', 'none', 'recorded')"
    assert not (tmp_path / "out" / RECORD_NAME).exists()
    with pytest.raises(SonosegError, match=r"^postprocess: 'keep one' is not one of \('keep_one', 'none', 'recorded'"):
        Segmenter(not_a_model, postprocess="keep one")


def test_threads_asked_for_are_given_back_after_segmenting(tmp_path):
    """segment_images and a Segmenter run torch with the threads asked for, and leave the process's count as it
    was: a notebook is not slowed after."""
    image = sample_images(1)[0]
    image_file = tmp_path / "scan.png"
    cv2.imwrite(str(image_file), image[:, :, ::-1])
    model = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    before = torch.get_num_threads()
    seen = []
    loaded = Segmenter(model, device="cpu", threads=1)
    run = loaded.predictor.run
    loaded.predictor.run = lambda batch: seen.append(torch.get_num_threads()) or run(batch)
    try:
        torch.set_num_threads(2)
        loaded(image)
        assert torch.get_num_threads() == 2
        segmenter.segment_images(model, [image_file], tmp_path / "out", device="cpu", threads=1)
        assert torch.get_num_threads() == 2
        assert json.loads((tmp_path / "out" / RECORD_NAME).read_text())["runs"][-1]["threads"] == 1
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


def test_serving_from_python_imports_no_training_code(tmp_path):
    """nnU-Net v2's predictor reads a model folder and imports no trainer; sonoseg's Segmenter alike. And the
    stage's light modules do not bring the inference stack with them."""
    model = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    code = (
        "import sys; import sonoseg.serving.options; assert 'sonoseg.serving.infer' not in sys.modules; "
        "import numpy as np; from sonoseg.serving import Segmenter; "
        f"Segmenter({str(model)!r}, device='cpu')(np.zeros((70, 90, 3), np.uint8)); "
        "print(sorted(m for m in sys.modules if m.startswith('sonoseg.training')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("documented", "words"),
    [
        (infer.model_predictor, ("device", "Returns", "Raises")),
        (predictor.torch_predictor, ("model_path", "device", "size", "float32 (N, size, size)", "Raises")),
        (infer.probability_to_mask, ("probability", "height", "rule", "postprocess", "Returns a bool", "Raises")),
        (predictor.Predictor.prepare, ("rgb", "float32 (1, 3, size, size)", "Raises")),
        (predictor.Predictor, ("run", "float32 (N, 3, size, size)", "(N, size, size)")),
        (Segmenter, ("model_path", "run folder", "model.onnx", "postprocess", "Raises")),
        (Segmenter.__call__, ("image", "bool (H, W)", "Raises")),
    ],
)
def test_the_serving_functions_say_what_they_take_return_and_raise(documented, words):
    doc = inspect.getdoc(documented)
    assert all(word in doc for word in words), [word for word in words if word not in doc]
