"""Fixes from a user probe of export and of serving its graph. An exported model's sidecar states nothing
about the processing that `segment` neither does nor applies: an edit to another channel order, aspect
ratio, resize back, threshold rule, hole filling or meaning is refused naming the key, its value and what
segment does; one to a value the export took from the model (normalisation, interpolation, marks, shapes,
sizes) is refused with the graph's own record of it; a format-2 sidecar lacking a key export writes is
named, a format-1 sidecar is still served. `export` refuses an --out it cannot write before any work, and
names the run folder to export for a run that tests another run's models (and `segment --tta` flip-averages
an exported graph as torch does). A study's run sheet that cannot be read is named in a warning, once, and
the run folder is checked as one away from its study."""

import hashlib
import json
import logging
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import sample_images, set_at, write_model

from sonoseg.errors import SonosegError
from sonoseg.networks import models
from sonoseg.serving import export, modelio, segmenter, sidecar
from sonoseg.study.cli import main


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A model exported at one size (no scale selection), its sidecar as written, and a scan."""
    folder = tmp_path_factory.mktemp("exported")
    model = write_model(folder / "model.pt", "lighter_unet_c1")
    onnx_path = folder / "model.onnx"
    written = export.export(model, onnx_path)
    scan = folder / "scan.png"
    cv2.imwrite(str(scan), sample_images(1)[0][:, :, ::-1])
    return model, onnx_path, written, scan


def served(tmp_path, exported, edit=None):
    """The exported graph copied into tmp_path with its sidecar, edited by ``edit`` (a function of the sidecar)."""
    _, onnx_path, written, _ = exported
    copy = tmp_path / onnx_path.name
    shutil.copy(onnx_path, copy)
    edited = json.loads(json.dumps(written))
    if edit is not None:
        edit(edited)
    sidecar.sidecar_path(copy).write_text(json.dumps(edited))
    return copy


def refused(tmp_path, exported, edit) -> str:
    """segment's refusal of the exported graph with its sidecar edited; no mask is written."""
    copy = served(tmp_path, exported, edit)
    with pytest.raises(SonosegError) as error:
        segmenter.segment_images(copy, [exported[3]], tmp_path / "masks", backend="onnxruntime")
    assert not (tmp_path / "masks" / "scan_mask.png").exists()
    message = str(error.value)
    assert message.startswith(f"{sidecar.sidecar_path(copy)}: "), message
    return message


# ----------------------------------------------------------------------------- 1. what the sidecar states


@pytest.mark.parametrize(
    "edit, said",
    [
        (
            set_at("BGR", "input", "channel_order"),
            'input.channel_order is "BGR", but sonoseg segment feeds the channels in RGB order, as the model was '
            'trained: restore "RGB"',
        ),
        (
            set_at(True, "input", "resize", "keep_aspect_ratio"),
            "input.resize.keep_aspect_ratio is true, but sonoseg segment resizes each image to the square input size "
            "without keeping its aspect ratio",
        ),
        (
            set_at("nearest", "postprocessing", "resize_to_original"),
            'postprocessing.resize_to_original is "nearest", but sonoseg segment resizes the probability map '
            "bilinearly",
        ),
        (
            set_at("lesion where probability >= threshold", "postprocessing", "threshold_rule"),
            'postprocessing.threshold_rule is "lesion where probability >= threshold", but sonoseg segment marks '
            "lesion where the probability is over the threshold (>: a probability of exactly the threshold is "
            'background): restore "lesion where probability > threshold"',
        ),
        (  # of its very kind: 1 is not true
            set_at(1, "postprocessing", "fill_holes"),
            "postprocessing.fill_holes is 1, but sonoseg segment fills the kept lesion's holes",
        ),
        (
            set_at("0 background, 1 lesion (PNG)", "postprocessing", "mask_values"),
            'postprocessing.mask_values is "0 background, 1 lesion (PNG)", but sonoseg segment writes each mask as a '
            "PNG of 0 and 255",
        ),
        (
            set_at("OpenCV cv2.INTER_AREA: the mean", "input", "resize", "interpolation_meaning"),
            'input.resize.interpolation_meaning is "OpenCV cv2.INTER_AREA: the mean", but sonoseg segment resizes by '
            'input.resize.interpolation, "bilinear": restore "OpenCV cv2.INTER_LINEAR',
        ),
        (
            set_at("keep the largest", "postprocessing", "component_rule_meaning"),
            'postprocessing.component_rule_meaning is "keep the largest", but sonoseg segment keeps a component by '
            'postprocessing.component_rule, "area" (unless --component-rule says otherwise): restore "keep the '
            '8-connected component with the largest area"',
        ),
        (
            set_at("inpaint them", "input", "marks", "meaning"),
            'input.marks.meaning is "inpaint them", but sonoseg segment treats the marks by input.marks.treatment, '
            '"keep": restore "feed the image as it is, marks included"',
        ),
    ],
    ids=[
        "channel_order",
        "keep_aspect_ratio",
        "resize_to_original",
        "threshold_rule",
        "fill_holes",
        "mask_values",
        "interpolation_meaning",
        "component_rule_meaning",
        "marks_meaning",
    ],
)
def test_a_sidecar_stating_what_segment_does_not_do_is_refused_naming_key_value_and_what_it_does(
    tmp_path, exported, edit, said
):
    assert said in refused(tmp_path, exported, edit)


@pytest.mark.parametrize(
    "edit, said",
    [
        (
            set_at({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, "input", "normalization"),
            'input.normalization is {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, but its graph was exported '
            "with null (the graph's own record, sonoseg.exported_with): the graph applies that one itself (sonoseg "
            "segment feeds it [0, 1] RGB); restore null, or export the model again",
        ),
        (
            set_at("area", "input", "resize", "interpolation"),
            'input.resize.interpolation is "area", but its graph was exported with "bilinear" (the graph\'s own '
            "record, sonoseg.exported_with): sonoseg segment resizes each image as the model's training images were; "
            'restore "bilinear"',
        ),
        (
            set_at("inpaint", "input", "marks", "treatment"),
            'input.marks.treatment is "inpaint", but its graph was exported with "keep"',
        ),
        (
            set_at([64, 32], "input", "sides"),
            "input.sides is [64, 32], but its graph was exported with none (the graph's own record, "
            "sonoseg.exported_with): sonoseg segment runs the graph at the sizes checked against torch at export "
            "alone; remove it",
        ),
        (
            set_at(["batch", 2, 64, 64], "output", "shape"),
            'output.shape is ["batch", 2, 64, 64], but its graph was exported with ["batch", 1, 64, 64]',
        ),
        (
            set_at("unet", "network"),
            'network is "unet", but its graph was exported with "lighter_unet_c1" (the graph\'s own record, '
            "sonoseg.exported_with): sonoseg segment names the network in its log and in each mask's record",
        ),
    ],
    ids=["normalization", "interpolation", "marks", "sides", "output_shape", "network"],
)
def test_a_sidecar_stating_other_than_its_graph_was_exported_with_is_refused_with_the_graphs_value(
    tmp_path, exported, edit, said
):
    assert said in refused(tmp_path, exported, edit)


def test_the_graph_records_what_it_was_exported_with_as_onnx_runtime_reads_it(tmp_path, exported):
    _, onnx_path, written, _ = exported
    session = sidecar.onnx_session(onnx_path)
    in_graph = json.loads(session.get_modelmeta().custom_metadata_map[sidecar.GRAPH_RECORD])
    assert in_graph == sidecar.graph_record(written)
    assert in_graph["input.resize.interpolation"] == "bilinear" and in_graph["input.normalization"] is None
    assert "input.sides" not in in_graph  # exported at one size
    assert sidecar.read_sidecar(onnx_path) == written  # read from the graph's bytes, without a session
    # A format-2 sidecar whose graph holds no record, or is no ONNX file at all, is named.
    bare = export.export_network(models.build("lighter_unet_c1"), None, 64, tmp_path / "bare.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x0a\xff\xff\xff")  # a length-delimited field cut short
    for graph, said in ((bare, "holds no record of what it was exported with"), (broken, "not an ONNX file")):
        stated = dict(written, onnx_sha256=hashlib.sha256(graph.read_bytes()).hexdigest())
        sidecar.sidecar_path(graph).write_text(json.dumps(stated))
        with pytest.raises(SonosegError, match=f"{graph}: {said}"):
            sidecar.read_sidecar(graph)


def test_a_graph_exported_before_it_recorded_its_network_is_served_as_its_sidecar_names_it(tmp_path, exported):
    """Graphs record their network since a later sonoseg than their sidecar format's first: one without it is
    served as before, its sidecar's network taken as it stands."""
    import onnx

    _, onnx_path, written, _ = exported
    graph = onnx.load(str(onnx_path))
    (entry,) = [prop for prop in graph.metadata_props if prop.key == sidecar.GRAPH_RECORD]
    entry.value = json.dumps({k: v for k, v in json.loads(entry.value).items() if k != "network"})
    earlier = tmp_path / "earlier.onnx"
    onnx.save(graph, str(earlier))
    stated = dict(written, network="my_name", onnx_sha256=hashlib.sha256(earlier.read_bytes()).hexdigest())
    sidecar.sidecar_path(earlier).write_text(json.dumps(stated))
    assert sidecar.read_sidecar(earlier)["network"] == "my_name"


def test_a_format_2_sidecar_lacking_the_study_scale_selection_is_refused_naming_it(tmp_path, exported):
    # Written null for a model the study predicted at the input size alone: missing, it is a damaged sidecar.
    assert exported[2]["postprocessing"]["study_scale_selection"] is None
    said = refused(tmp_path, exported, lambda stated: stated["postprocessing"].pop("study_scale_selection"))
    assert "no postprocessing.study_scale_selection (every sidecar `sonoseg export` writes has it" in said


def older(stated):
    """The sidecar as an earlier sonoseg wrote it: format 1, without the keys added since, its words its own."""
    stated["format"] = "sonoseg-onnx-sidecar/1"
    for section, key in (("input", "orientation"), ("input", "marks"), ("postprocessing", "postprocess")):
        del stated[section][key]
    del stated["input"]["resize"]["interpolation_meaning"]
    del stated["postprocessing"]["study_scale_selection"]
    stated["postprocessing"]["component_rule_meaning"] = "keep the largest connected component"


def test_a_format_1_sidecar_is_served_as_its_sonoseg_wrote_it(tmp_path, exported):
    masks = []
    for name, edit in (("now", None), ("older", older)):
        (tmp_path / name).mkdir()
        copy = served(tmp_path / name, exported, edit)
        segmenter.segment_images(copy, [exported[3]], tmp_path / name / "masks", backend="onnxruntime")
        masks.append(cv2.imread(str(tmp_path / name / "masks" / "scan_mask.png"), cv2.IMREAD_UNCHANGED))
    assert np.array_equal(*masks) and masks[0].any()

    # What segment does is checked in a format-1 sidecar too: its words for it are the first format's.
    def older_in_bgr(stated):
        older(stated)
        stated["input"]["channel_order"] = "BGR"

    said = refused(tmp_path, exported, older_in_bgr)
    assert 'input.channel_order is "BGR", but sonoseg segment feeds the channels in RGB order' in said


# ----------------------------------------------------------------------------- 2. an --out export cannot write


def test_an_out_export_cannot_write_is_refused_before_any_work(tmp_path, capsys):
    # The model does not exist: the --out is named first, so nothing was loaded or exported.
    missing_model = tmp_path / "missing.pt"
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(SonosegError, match=r"d\.onnx: a folder is at that path, so the export cannot be written"):
        export.export(missing_model, tmp_path / "d.onnx")
    (tmp_path / "e.onnx.json").mkdir()
    with pytest.raises(SonosegError, match=r"e\.onnx\.json: a folder is at that path"):
        export.export(missing_model, tmp_path / "e.onnx")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(
        SonosegError, match=rf"its folder cannot be made: {tmp_path / 'a_file'} is a file, not a folder"
    ):
        export.export(missing_model, tmp_path / "a_file" / "sub" / "x.onnx")
    model = write_model(tmp_path / "model.pt", "lighter_unet_c1")
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "d.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"sonoseg export: error: {tmp_path / 'd.onnx'}: a folder is at that path" in err
    assert "IsADirectoryError" not in err and not list((tmp_path / "d.onnx").iterdir())


# ----------------------------------------------------------------------------- 3. a run that tests another's models


def test_export_of_a_tta_run_names_the_run_folder_to_export_and_segment_tta(tmp_path, capsys):
    runs = tmp_path / "results" / "quick" / "runs"
    run = runs / "light_unet--tta"
    (run / "fold0" / "seed0" / "predictions").mkdir(parents=True)
    said = (
        f"{run}: this run tests the models of run light_unet (flip-averaged): it holds their predictions, no model "
        f"of its own; to export those models, export the run folder {runs / 'light_unet'}, and serve the graph with "
        "`sonoseg segment --tta` (flip averaging, as this run tested them; the graph holds none)"
    )
    assert main(["export", "--model", str(run), "--out", str(tmp_path / "x.onnx")]) == 2
    assert f"sonoseg export: error: {said}\n" in capsys.readouterr().err
    # segment's words are its own.
    with pytest.raises(SonosegError) as error:
        modelio.ensemble_members(run)
    assert str(error.value).endswith(
        f"serve the run folder {runs / 'light_unet'} with --tta (flip averaging, as this run tested them)"
    )


def test_segment_tta_flip_averages_an_exported_graph_as_torch_does(tmp_path, exported):
    model, onnx_path, _, _ = exported
    scans = []
    for number, image in enumerate(sample_images()):
        scans.append(tmp_path / f"scan{number}.png")
        cv2.imwrite(str(scans[-1]), image[:, :, ::-1])
    runs = {"torch": (model, "torch", True), "onnx": (onnx_path, "onnxruntime", True)}
    runs["onnx_no_tta"] = (onnx_path, "onnxruntime", False)
    for name, (served_model, backend, tta) in runs.items():
        segmenter.segment_images(served_model, scans, tmp_path / name, backend=backend, tta=tta, device="cpu")

    def masks(name):
        return [cv2.imread(str(tmp_path / name / f"{scan.stem}_mask.png"), cv2.IMREAD_UNCHANGED) for scan in scans]

    assert all(np.array_equal(a, b) for a, b in zip(masks("torch"), masks("onnx")))
    assert not all(np.array_equal(a, b) for a, b in zip(masks("onnx"), masks("onnx_no_tta")))  # the flip counts


# ----------------------------------------------------------------------------- 4. a run sheet that cannot be read


def sheet_at(path, what):
    if what == "folder":
        path.mkdir()
    else:
        path.write_bytes(
            {"empty": b"", "garbage": b"\x00\xff\xfe not a sheet", "no name column": b"run\tfolds\nx\t0 1 2\n"}.get(
                what, b"name\tfolds\tseeds\trecipe\nanother_run\t0 1 2\t0\t{}\n"
            )
        )


@pytest.mark.parametrize(
    "what, why",
    [
        ("empty", "it is empty"),
        ("garbage", "not UTF-8 text"),
        ("no name column", "its first line names no name column (run, folds)"),
        ("folder", "a folder is at that path"),
        # readable, without this run: a folder copied in, or a run the study's config no longer has
        (
            "lists other runs",
            "it lists no run lighter_unet_c1 (a folder copied in, or a run its config no longer has?)",
        ),
    ],
)
def test_a_run_sheet_that_cannot_be_read_is_warned_of_once_and_the_run_checked_as_away_from_its_study(
    tmp_path, caplog, what, why
):
    run = tmp_path / "runs" / "lighter_unet_c1"
    for fold in (0, 1):
        model = run / f"fold{fold}" / "seed0" / "model.pt"
        model.parent.mkdir(parents=True)
        modelio.save_model(model, network="lighter_unet_c1", state_dict={"w": torch.zeros(1)}, seed=0)
        (run / f"fold{fold}" / "postprocess.json").write_text(json.dumps({"folds": 3}))
    sheet = tmp_path / "runs.tsv"
    sheet_at(sheet, what)
    with caplog.at_level(logging.WARNING), pytest.raises(SonosegError, match=r"fold2 missing: .* records a run of 3"):
        modelio.ensemble_members(run)
    warned = [r.getMessage() for r in caplog.records if "run sheet gives nothing" in r.getMessage()]
    assert warned == [
        f"{sheet}: the study's run sheet gives nothing for this run ({why}): the run folder {run} is checked as one "
        "away from its study, by its folds' postprocess.json, not against the folds, seeds and network a sheet lists"
    ]
