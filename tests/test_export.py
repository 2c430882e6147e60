"""ONNX export: parity with torch per network family, the sidecar, `segment` on both backends,
unreadable images."""

import json
import os
import shutil
import time

import cv2
import numpy as np
import pytest
import torch
from conftest import SIZE, sample_images, write_model

from sonoseg.data import preprocess
from sonoseg.data.preprocess import IMAGENET_NORMALIZATION, INTERPOLATION_MEANING
from sonoseg.errors import SonosegError
from sonoseg.networks import models
from sonoseg.serving import export, infer, segmenter
from sonoseg.serving.sidecar import read_sidecar
from sonoseg.study.cli import main


@pytest.mark.slow
@pytest.mark.parametrize(
    "network,normalization",
    [
        ("unet", None),
        ("lighter_unet_c4", None),
        ("slim_unet", None),
        ("fcn8s", IMAGENET_NORMALIZATION),
        ("deeplabv3plus_mobilenetv2", IMAGENET_NORMALIZATION),
    ],
)
def test_onnx_matches_torch(tmp_path, network, normalization):
    model_path = write_model(tmp_path / "model.pt", network, normalization)
    onnx_path = tmp_path / "model.onnx"
    sidecar = export.export(model_path, onnx_path)
    assert sidecar["opset"] == export.OPSET and sidecar["input"]["normalization"] == normalization

    torch_run = infer.torch_predictor(model_path, "cpu").run
    onnx = infer.onnxruntime_predictor(onnx_path)
    assert (onnx.size, onnx.interpolation) == (SIZE, "bilinear")
    onnx_run = onnx.run
    images = sample_images()
    batch = np.stack([cv2.resize(im, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for im in images])
    batch = batch.transpose(0, 3, 1, 2).astype(np.float32) / 255  # dynamic batch: three at once
    expected, got = torch_run(batch), onnx_run(batch)
    assert got.shape == expected.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    for image, p_torch, p_onnx in zip(images, expected, got):
        height, width = image.shape[:2]
        assert np.array_equal(
            infer.probability_to_mask(p_torch, height, width), infer.probability_to_mask(p_onnx, height, width)
        )
    # The normalization is inside the graph: the torch path without it must differ.
    if normalization:
        with torch.no_grad():
            bare = torch.sigmoid(models.build(network).eval()(torch.from_numpy(batch))).numpy()[:, 0]
        assert not np.allclose(bare, expected, atol=1e-3)


def test_sidecar_round_trips_and_describes_the_preprocessing(tmp_path):
    model_path = write_model(tmp_path / "model.pt", "lighter_unet_c1", IMAGENET_NORMALIZATION)
    onnx_path = tmp_path / "model.onnx"
    written = export.export(model_path, onnx_path, component_rule="contour_points")
    read = read_sidecar(onnx_path)
    assert read == written == json.loads(export.sidecar_path(onnx_path).read_text())
    assert read["input"]["channel_order"] == "RGB"
    assert read["input"]["resize"] == {
        "height": SIZE,
        "width": SIZE,
        "interpolation": "bilinear",
        "interpolation_meaning": INTERPOLATION_MEANING["bilinear"],
        "keep_aspect_ratio": False,
    }
    assert read["input"]["normalization"] == IMAGENET_NORMALIZATION
    assert read["postprocessing"]["threshold"] == 0.5
    assert read["postprocessing"]["component_rule"] == "contour_points"
    assert read["parity"]["max_abs_probability_difference_vs_torch"] <= 1e-4
    # A changed ONNX file no longer matches its sidecar.
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    with pytest.raises(SonosegError, match="does not match its sidecar"):
        read_sidecar(onnx_path)


def test_a_failed_export_keeps_the_earlier_one_and_names_the_file_and_the_full_disk(tmp_path, monkeypatch):
    """An export onto a full disk left its graph cut short in place of a good one, beside the good one's sidecar,
    and said "OSError: [Errno 28]" naming no file. Now the graph is made beside --out and renamed over it."""
    model_path = write_model(tmp_path / "model.pt", "lighter_unet_c1", None)
    onnx_path = tmp_path / "model.onnx"
    export.export(model_path, onnx_path)
    good = onnx_path.read_bytes(), export.sidecar_path(onnx_path).read_bytes()

    def full_disk(program, path, **options):
        with open(path, "wb") as handle:
            handle.write(b"\x08" * 100)  # what fitted
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", full_disk)
    with pytest.raises(SonosegError) as error:
        export.export(model_path, onnx_path)
    assert str(error.value) == f"{onnx_path}: could not be written (No space left on device)"
    assert (onnx_path.read_bytes(), export.sidecar_path(onnx_path).read_bytes()) == good
    assert read_sidecar(onnx_path)["onnx_file"] == "model.onnx"  # still one export's pair
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json", "model.pt"]
    # A killed export's staging files (its process gone) are removed by the next export to that name.
    monkeypatch.undo()
    stale = tmp_path / ".model.onnx.4194303.partial"  # a pid no process has (the largest Linux allows)
    stale_now = tmp_path / ".model.onnx.4194303.k2x9_q1a.partial"  # the same, named as exports name them now
    container = tmp_path / ".model.onnx.1.b7c0_x2z.partial"  # a container's pid 1, which runs here too: by age
    running = tmp_path / f".model.onnx.{os.getppid()}.partial"  # a running process's: kept
    recent = tmp_path / ".model.onnx.4194302.partial"  # maybe another machine's export on a shared folder: kept
    for path in (stale, stale_now, container, running, recent):
        path.write_bytes(b"a graph cut short by kill -9")
    export.sidecar_path(stale).write_text("{}")
    for path in (stale, stale_now, container, running):
        os.utime(path, (time.time() - 7 * 3600,) * 2)
    export.export(model_path, onnx_path)
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == sorted(["model.onnx", "model.onnx.json", "model.pt", running.name, recent.name])


def test_exports_from_processes_of_one_pid_stage_apart(tmp_path, monkeypatch):
    """Two containers sharing a volume each ran their export as pid 1: both staged the graph under one name,
    and both failed (a probe, with unshare). Each export's staging file is its own, whatever the pid."""
    model_path = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    staged = []
    monkeypatch.setattr(export.os, "getpid", lambda: 1)
    monkeypatch.setattr(export, "_export_staged", lambda model, out, staging, *rest: staged.append(staging))
    for _ in range(2):
        export.export(model_path, tmp_path / "m.onnx")
    assert len(set(staged)) == 2 and all(path.name.startswith(".m.onnx.1.") for path in staged)
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".partial")]  # none left behind


def test_an_exported_graph_has_the_mode_the_umask_gives_a_new_file(tmp_path):
    """Staged under a name mkstemp drew, the graph is still made anew: not mkstemp's owner-only 0600, which a
    service reading a shared model folder could not open."""
    model_path = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    old = os.umask(0o022)
    try:
        export.export(model_path, tmp_path / "m.onnx")
    finally:
        os.umask(old)
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o644


def test_export_refuses_foreign_model(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    assert main(["export", "--model", str(foreign), "--out", str(tmp_path / "m.onnx")]) == 2
    assert not (tmp_path / "m.onnx.json").exists()
    with pytest.raises(SonosegError, match="refused"):
        export.export(foreign, tmp_path / "m.onnx")


class DataDependent(torch.nn.Module):
    """A user's network whose forward branches on its data: it trains and serves in torch, not in ONNX."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        logits = self.conv(x)
        return logits if logits.mean() > 0 else -logits


def test_a_network_that_does_not_export_is_one_line_naming_the_file_and_the_way_out(tmp_path):
    with pytest.raises(SonosegError) as error:
        export.export_network(DataDependent(), None, 32, tmp_path / "mine.onnx")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'mine.onnx'}: the network does not export to ONNX (")
    assert "cost: {backend: torch}" in message and "\n" not in message
    # ... and an ONNX graph given where a model file is expected says which backend reads it.
    graph = tmp_path / "graph.onnx"
    graph.write_bytes(b"\x08\x07")
    with pytest.raises(
        SonosegError,
        match=r"an ONNX graph, not a sonoseg-model-v1 file: serve it with ONNX Runtime \(--backend onnxruntime, or no",
    ):
        infer.torch_predictor(graph, device="cpu")


def test_segment_same_masks_on_both_backends_and_unreadable_image(tmp_path, capsys):
    model_path = write_model(tmp_path / "model.pt", "lighter_unet_c1", IMAGENET_NORMALIZATION)
    paths = []
    for i, image in enumerate(sample_images()):
        paths.append(tmp_path / f"scan{i}.png")
        cv2.imwrite(str(paths[-1]), image[:, :, ::-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--model", str(model_path), "--out", str(onnx_path)]) == 0

    images = [str(paths[0]), str(broken), *map(str, paths[1:])]
    status_torch = main(
        ["segment", "--model", str(model_path), "--outdir", str(tmp_path / "torch"), "--device", "cpu", *images]
    )
    err = capsys.readouterr().err
    assert status_torch == 2
    assert "1 of 4 images failed" in err and "broken.png" in err
    # A .onnx model is served by ONNX Runtime without --backend (in any case of its suffix).
    shutil.copy(onnx_path, tmp_path / "MODEL.ONNX")
    shutil.copy(f"{onnx_path}.json", tmp_path / "MODEL.ONNX.json")
    graph = str(tmp_path / "MODEL.ONNX")
    status_onnx = main(["segment", "--model", graph, "--outdir", str(tmp_path / "onnx"), *images])
    assert status_onnx == 2
    (run,) = json.loads((tmp_path / "onnx" / "segment_runs.json").read_text())["runs"]
    assert run["backend"] == "onnxruntime"
    lesion_pixels = 0
    for path in paths:
        mask_torch = cv2.imread(str(tmp_path / "torch" / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        mask_onnx = cv2.imread(str(tmp_path / "onnx" / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask_torch.shape == cv2.imread(str(path)).shape[:2]
        assert np.array_equal(mask_torch, mask_onnx)
        lesion_pixels += int((mask_torch > 0).sum())
    assert lesion_pixels > 0  # the masks compared are not all empty
    assert not (tmp_path / "torch" / "broken_mask.png").exists()


def test_segment_onnxruntime_exports_a_model_pt_on_the_fly(tmp_path):
    model_path = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), sample_images(1)[0])
    result = segmenter.segment_images(model_path, [path], tmp_path / "out", backend="onnxruntime")
    assert [p.name for p in result.written] == ["scan_mask.png"] and not result.failed


def test_new_images_are_resized_as_the_model_was_trained(tmp_path):
    # A model trained on area-resized caches: segment (both backends) and the sidecar resize by area.
    model_path = write_model(tmp_path / "model.pt", "lighter_unet_c1", interpolation="area")
    onnx_path = tmp_path / "model.onnx"
    sidecar = export.export(model_path, onnx_path)
    assert sidecar["input"]["resize"]["interpolation"] == "area"
    assert infer.onnxruntime_predictor(onnx_path).interpolation == "area"
    # An older model file without the key was trained on bilinear caches.
    assert infer.torch_predictor(write_model(tmp_path / "old.pt", "lighter_unet_c1"), "cpu").interpolation == "bilinear"

    torch_run = infer.torch_predictor(model_path, "cpu").run
    # ~3x to shrink; nearest keeps the speckle sharp, so that area and bilinear shrinking differ
    images = [
        cv2.resize(im, (3 * im.shape[1], 3 * im.shape[0]), interpolation=cv2.INTER_NEAREST) for im in sample_images()
    ]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"scan{i}.png")
        cv2.imwrite(str(paths[-1]), image[:, :, ::-1])
    for backend, model in (("torch", model_path), ("onnxruntime", onnx_path)):
        segmenter.segment_images(model, paths, tmp_path / backend, device="cpu", backend=backend)
    differs = False
    for path, image in zip(paths, images):
        by_area, by_bilinear = (
            torch_run(preprocess.resize_image(image, SIZE, kind)[None].transpose(0, 3, 1, 2).astype(np.float32) / 255)
            for kind in ("area", "bilinear")
        )
        expected = infer.probability_to_mask(by_area[0], *image.shape[:2])
        differs |= not np.array_equal(expected, infer.probability_to_mask(by_bilinear[0], *image.shape[:2]))
        for backend in ("torch", "onnxruntime"):
            written = cv2.imread(str(tmp_path / backend / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED) > 0
            assert np.array_equal(written, expected), (backend, path.name)
    assert differs  # a bilinear resize would have written other masks, so the check above means something
    # A model file naming an interpolation this version does not know is refused, naming the file.
    unknown = write_model(tmp_path / "unknown.pt", "lighter_unet_c1", interpolation="cubic")
    with pytest.raises(SonosegError, match=r"unknown.pt: refused: input_interpolation 'cubic'"):
        infer.torch_predictor(unknown, "cpu")
