"""Serving an exported model needs no torch (docs/deploy.md): `sonoseg segment --backend onnxruntime` on a
model.onnx, with its sidecar checks, the study's scale selection, flip averaging, post-processing and the
run's record, runs in a Python that cannot import torch, and writes the masks it writes where torch can be
imported; the torch backend serves as before. The scale selection's resizing, in NumPy, gives torch's
numbers bit for bit."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import write_large_lesion_scans, write_model

from sonoseg.serving import export, infer, interpolate, modelio
from sonoseg.study.cli import main

# Put before a program: torch and torchvision (and what is loaded of them) cannot be imported, nor the onnx
# package and onnxscript, which only exporting needs: a serving machine installs what docs/deploy.md lists.
WITHOUT_TORCH = """
import importlib.abc
import sys


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torchvision", "onnx", "onnxscript"):
            raise ModuleNotFoundError(f"{name}: blocked, as on a machine without PyTorch", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
"""
SEGMENT = """
from sonoseg.study.cli import main

status = main(sys.argv[1:])
loaded = [name for name in sys.modules if name.partition(".")[0] in ("torch", "torchvision")]
print("torch modules loaded:", loaded)
sys.exit(status)
"""


def run_without_torch(program: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH + program, *args], capture_output=True, text=True, timeout=300
    )


def test_torch_is_blocked_in_the_serving_python():
    blocked = run_without_torch("import torch")
    assert blocked.returncode != 0 and "torch: blocked, as on a machine without PyTorch" in blocked.stderr
    assert run_without_torch("import torchvision.models").returncode != 0
    assert run_without_torch("import numpy, cv2, scipy.ndimage, pandas, onnxruntime").returncode == 0


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    """A study's run folder whose models were predicted with a size-aware scale selection and keep every
    pixel above the threshold (its fold's postprocess.json), exported as one graph that takes every size the
    selection tries; and scans whose lesions are large, so that the selection changes masks."""
    tmp_path = tmp_path_factory.mktemp("exported_run")
    member = tmp_path / "runs" / "lighter_unet_c1" / "fold0" / "seed0" / "model.pt"
    member.parent.mkdir(parents=True)
    write_model(member, "lighter_unet_c1", lesion_areas=[1, 2, 3, 4])
    choice = {"validation_dice": {"keep_one": 0.7, "none": 0.8}, "validation_images": 4, "scales": [1.0, 0.75, 0.5]}
    (member.parent.parent / "postprocess.json").write_text(json.dumps({**choice, "shrink_above": 0.5}))
    onnx_path = tmp_path / "deploy" / "model.onnx"
    sidecar = export.export(member.parent.parent.parent, onnx_path)
    assert sidecar["postprocessing"]["study_scale_selection"]["in_this_graph"]
    assert sidecar["postprocessing"]["postprocess"] == "none"
    scans = write_large_lesion_scans(tmp_path / "scans", "scan")
    return member.parent.parent.parent, onnx_path, scans


def masks(folder, scans) -> list[bytes]:
    return [(folder / f"{scan.stem}_mask.png").read_bytes() for scan in scans]


def test_an_exported_model_segments_without_torch_as_with_it(tmp_path, exported_run):
    run, onnx_path, scans = exported_run
    options = ["--backend", "onnxruntime", "--model", str(onnx_path), "--tta", "--threads", "1", "--no-progress"]
    images = [str(scan) for scan in scans]
    served = run_without_torch(SEGMENT, "segment", *options, "--outdir", str(tmp_path / "without"), *images)
    assert served.returncode == 0, served.stderr[-3000:]
    assert "torch modules loaded: []" in served.stdout
    # The sidecar's selection and post-processing were applied, as the log and the run's record say.
    assert "scale chosen per image among [1.0, 0.75, 0.5]" in served.stderr and "post-processing none" in served.stderr
    (record,) = json.loads((tmp_path / "without" / "segment_runs.json").read_text())["runs"]
    assert record["backend"] == "onnxruntime" and record["tta"] and record["postprocess"] == "none"
    assert record["scales"] == [1.0, 0.75, 0.5] and record["shrink_above"] == 0.5

    assert main(["segment", *options, "--outdir", str(tmp_path / "with"), *images]) == 0
    without = masks(tmp_path / "without", scans)
    assert without == masks(tmp_path / "with", scans)
    assert any(cv2.imdecode(np.frombuffer(mask, np.uint8), cv2.IMREAD_GRAYSCALE).any() for mask in without)
    # The selection changed a mask, so the equality above covers it.
    assert main(["segment", *options, "--scales", "1", "--outdir", str(tmp_path / "input_size"), *images]) == 0
    assert without != masks(tmp_path / "input_size", scans)


def test_the_torch_backend_serves_the_run_as_its_exported_graph_does(tmp_path, exported_run):
    run, onnx_path, scans = exported_run
    images = [str(scan) for scan in scans]
    for name, model, backend in (("torch", run, "torch"), ("onnx", onnx_path, "onnxruntime")):
        assert (
            main(["segment", "--model", str(model), "--backend", backend, "--outdir", str(tmp_path / name)] + images)
            == 0
        )
    assert masks(tmp_path / "torch", scans) == masks(tmp_path / "onnx", scans)


def test_a_sidecar_is_checked_without_torch(tmp_path, exported_run):
    _, exported, scans = exported_run
    onnx_path = tmp_path / exported.name
    shutil.copy(exported, onnx_path)
    shutil.copy(export.sidecar_path(exported), export.sidecar_path(onnx_path))
    # A .onnx model is served by ONNX Runtime without --backend: no torch is asked for.
    served = run_without_torch(
        SEGMENT, "segment", "--model", str(onnx_path), "--outdir", str(tmp_path / "s"), str(scans[0])
    )
    assert served.returncode == 0, served.stderr[-3000:]
    assert (tmp_path / "s" / f"{scans[0].stem}_mask.png").is_file()
    sidecar = json.loads(export.sidecar_path(exported).read_text())
    sidecar["postprocessing"]["threshold"] = 0.3
    export.sidecar_path(onnx_path).write_text(json.dumps(sidecar))
    args = ["segment", "--model", str(onnx_path), "--outdir", str(tmp_path / "o")]
    refused = run_without_torch(SEGMENT, *args, str(scans[0]))
    assert refused.returncode == 2 and "postprocessing.threshold is 0.3" in refused.stderr, refused.stderr[-3000:]


def test_what_needs_torch_says_so_in_a_line(tmp_path, exported_run):
    run, _, scans = exported_run
    member = str(run / "fold0" / "seed0" / "model.pt")
    for model, backend in ((member, "torch"), (member, "onnxruntime"), (str(run), "onnxruntime")):
        args = ["segment", "--backend", backend, "--model", model, "--outdir", str(tmp_path / "o"), str(scans[0])]
        refused = run_without_torch(SEGMENT, *args)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "needs PyTorch, which this Python cannot import" in refused.stderr
        assert "serve model.onnx with --backend onnxruntime" in refused.stderr
    # The commands that need torch throughout: a line, not a traceback.
    for args in (["models"], ["export", "--model", member, "--out", str(tmp_path / "m.onnx")]):
        refused = run_without_torch(SEGMENT, *args)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert f"sonoseg {args[0]}: error: this command needs PyTorch (torch)" in refused.stderr
        assert "Traceback" not in refused.stderr
    # A mistyped model path is named as missing, not blamed on the missing torch.
    args = ["segment", "--model", str(tmp_path / "no_such_model.pt"), "--outdir", str(tmp_path / "o"), str(scans[0])]
    missing = run_without_torch(SEGMENT, *args)
    assert missing.returncode == 2 and "no_such_model.pt" in missing.stderr, missing.stderr[-3000:]
    assert "needs PyTorch" not in missing.stderr


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() == "DEFAULT",
    reason="torch built for CPUs without fused multiply-adds rounds bilinear resizing otherwise",
)
@pytest.mark.parametrize("size", [16, 32, 56, 63, 64, 65, 96, 128, 257])
def test_the_scale_selections_resizing_is_torchs_bit_for_bit(size):
    """Both of torch's CPU bilinear kernels (outputs up to 64 px square, and larger) and area pooling, at
    the sizes scale selection tries."""
    rng = np.random.default_rng(size)
    images = rng.integers(0, 256, (2, 3, size, size)).astype(np.float32) / 255
    for side in sorted({round(size * f) for f in (0.875, 0.75, 0.625, 0.5, 0.33)} - {size}):
        shrunk = torch.nn.functional.interpolate(torch.from_numpy(images), size=(side, side), mode="area").numpy()
        np.testing.assert_array_equal(interpolate.area(images, side), shrunk)
        probability = (1 / (1 + np.exp(-rng.normal(0, 6, (2, side, side))))).astype(np.float32)
        back = torch.nn.functional.interpolate(
            torch.from_numpy(probability)[:, None], size=(size, size), mode="bilinear", align_corners=False
        )[:, 0].numpy()
        np.testing.assert_array_equal(interpolate.bilinear(probability, size), back)
    assert infer.scale_adaptive(lambda batch: batch[:, 0], (1.0, 0.5))(images).shape == (2, size, size)


def test_images_become_the_same_input_without_torch():
    every_value = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    images = np.concatenate([every_value, every_value[:, ::-1]])
    np.testing.assert_array_equal(modelio.images_to_array(images), modelio.images_to_tensor(images).numpy())
