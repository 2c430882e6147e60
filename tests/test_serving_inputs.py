"""What users bring to `segment` and `export`, and what a study meets in external sets: the mask files
(names that clash, a folder of the images, a folder that cannot be written), images as viewers show
them (EXIF orientation, pages, 16-bit ranges), model files outside their run folder, the messages of
common mistakes; an external set without lesions or with one patient."""

import json
import logging
import os

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import sample_images, write_large_lesion_scans, write_model, write_patient_manifest, write_run_metrics
from PIL import Image, ImageOps

from sonoseg.analysis import figures, generalization, pages, results, stats, tables
from sonoseg.data import imageio
from sonoseg.errors import SonosegError
from sonoseg.serving import export, infer
from sonoseg.serving.sidecar import read_sidecar, served_sides, study_selection
from sonoseg.study.cli import main

# ----------------------------------------------------------------------------- the mask files


def test_two_images_that_would_share_a_mask_file_are_refused_before_any_work(tmp_path, scans):
    paths, model = scans
    other = tmp_path / "other" / paths[0].name  # another folder, the same name
    other.parent.mkdir()
    other.write_bytes(paths[0].read_bytes())
    jpeg = paths[1].with_suffix(".jpg")  # the same stem, another format
    cv2.imwrite(str(jpeg), cv2.imread(str(paths[1])))
    for clash, first in (([paths[0], other], paths[0]), ([paths[1], jpeg], paths[1])):
        with pytest.raises(SonosegError, match=rf"{first.name} and .*{clash[1].name} would both be written to"):
            infer.segment_images(model, clash, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()  # refused before the folder was even made


def test_an_image_given_twice_is_segmented_once(tmp_path, scans, caplog):
    paths, model = scans
    again = paths[0].parent / ".." / "scans" / paths[0].name  # the same file, spelt otherwise
    result = infer.segment_images(model, [paths[0], again, paths[1]], tmp_path / "out", device="cpu")
    assert [p.name for p in result.written] == ["scan0_mask.png", "scan1_mask.png"]
    assert "given more than once; segmented once" in caplog.text


def test_masks_are_never_written_among_the_images(tmp_path, scans):
    # BUSI keeps its ground truth beside the image as NAME_mask.png: the very name segment writes.
    paths, model = scans
    truth = paths[0].parent / "scan0_mask.png"
    cv2.imwrite(str(truth), np.zeros((10, 10), np.uint8))
    before = truth.read_bytes()
    linked = tmp_path / "linked"  # the images named through links in another folder
    linked.mkdir()
    for path in paths:
        (linked / path.name).symlink_to(path)
    for images, outdir in ((paths, paths[0].parent), ([linked / p.name for p in paths], paths[0].parent)):
        with pytest.raises(SonosegError, match="a folder of the images"):
            infer.segment_images(model, images, outdir, device="cpu")
    assert truth.read_bytes() == before
    # Into a folder of their own, masks of an earlier run are replaced as before.
    for _ in range(2):
        assert len(infer.segment_images(model, paths, tmp_path / "masks", device="cpu").written) == 3


def test_names_that_differ_only_in_case_clash(tmp_path, scans):
    # macOS and Windows file systems keep one file of X_mask.png and x_mask.png.
    paths, model = scans
    upper = tmp_path / "other" / "SCAN0.png"
    upper.parent.mkdir()
    upper.write_bytes(paths[0].read_bytes())
    with pytest.raises(SonosegError, match="would both be written to"):
        infer.segment_images(model, [paths[0], upper], tmp_path / "out", device="cpu")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be made")
def test_a_mask_that_cannot_be_written_is_an_error_naming_it(tmp_path, scans, capsys):
    paths, model = scans
    status = main(["segment", "--no-progress", "--model", str(model), "--outdir", "/proc/self", str(paths[0])])
    err = capsys.readouterr().err
    assert status == 2 and "/proc/self/scan0_mask.png: the mask could not be written" in err
    afile = tmp_path / "afile"
    afile.write_text("")
    status = main(["segment", "--no-progress", "--model", str(model), "--outdir", str(afile), str(paths[0])])
    assert status == 2 and "afile: cannot be made the folder for the masks" in capsys.readouterr().err


# ----------------------------------------------------------------------------- images as viewers show them


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_applies_it(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    pixels = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)  # not square: a turn changes the shape
    path = tmp_path / "photo.png"  # lossless, so the pixels compare exactly
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = orientation
    Image.fromarray(pixels).save(path, exif=exif)
    decoded = imageio.read_image(path)
    with Image.open(path) as shown:
        expected = np.asarray(ImageOps.exif_transpose(shown).convert("RGB"))
    assert np.array_equal(decoded.pixels, expected)
    assert decoded.notes == ([] if orientation == 1 else [f"exif_orientation:{orientation}"])


def test_segment_writes_the_mask_of_a_turned_image_as_it_is_viewed_and_says_so(tmp_path, scans, caplog):
    paths, model = scans
    image = Image.open(paths[0]).convert("RGB")
    viewed = {}
    for orientation in (6, 8):  # a quarter turn either way: the same shape, other pixels
        exif = Image.Exif()
        exif[imageio.EXIF_ORIENTATION_TAG] = orientation
        tagged = tmp_path / f"tagged{orientation}.png"
        image.save(tagged, exif=exif)
        as_shown = tmp_path / "shown" / f"tagged{orientation}.png"  # the pixels turned, no tag
        as_shown.parent.mkdir(exist_ok=True)
        ImageOps.exif_transpose(Image.open(tagged)).save(as_shown)
        infer.segment_images(model, [tagged], tmp_path / "out", device="cpu")
        infer.segment_images(model, [as_shown], tmp_path / "out_shown", device="cpu")
        viewed[orientation] = cv2.imread(str(tmp_path / "out" / f"tagged{orientation}_mask.png"), cv2.IMREAD_UNCHANGED)
        shown = cv2.imread(str(tmp_path / "out_shown" / f"tagged{orientation}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert viewed[orientation].shape == (image.width, image.height)
        assert np.array_equal(viewed[orientation], shown)
    assert (viewed[6] > 0).any() and not np.array_equal(viewed[6], viewed[8])
    assert "turned as its EXIF orientation (6)" in caplog.text


def test_ingest_refuses_an_image_and_mask_turned_otherwise_unless_the_sizes_tell(tmp_path):
    from sonoseg.data import ingest

    image = sample_images(1)[0]  # 70 x 90, not square
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[20:40, 30:60] = 255
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = 6
    for case, drawn_on in (("stored", mask), ("viewed", np.rot90(mask, -1))):
        root = tmp_path / case
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        Image.fromarray(image).save(root / "images" / "a.png", exif=exif)
        cv2.imwrite(str(root / "masks" / "a.png"), np.ascontiguousarray(drawn_on))
    with pytest.raises(SonosegError, match=r"EXIF orientation \(exif_orientation:6\) differs from its mask's"):
        ingest(tmp_path / "stored", "folder")
    manifest = ingest(tmp_path / "viewed", "folder")  # the mask fits the image only as viewers show it
    assert "exif_orientation:6" in manifest["flags"].iloc[0] and manifest["status"].iloc[0] == "included"
    # A half turn keeps the shape: which pixels the mask was drawn on cannot be told.
    half = tmp_path / "half"
    (half / "images").mkdir(parents=True)
    (half / "masks").mkdir()
    exif[imageio.EXIF_ORIENTATION_TAG] = 3
    Image.fromarray(image).save(half / "images" / "a.png", exif=exif)
    cv2.imwrite(str(half / "masks" / "a.png"), mask)
    with pytest.raises(SonosegError, match=r"\(exif_orientation:3\) differs from its mask's \(none\)"):
        ingest(half, "folder")
    # Masks of one image (BUSI's NAME_mask_1.png) turned otherwise than each other: named.
    tagged = tmp_path / "mask_tagged.png"
    Image.fromarray(mask).save(tagged, exif=exif)
    with pytest.raises(SonosegError, match="differs from that of the other masks of this image"):
        imageio.read_mask([half / "masks" / "a.png", tagged])


def test_a_graph_exported_at_one_size_for_a_study_that_selected_scales_says_so(tmp_path, scans, caplog):
    # As an earlier sonoseg exported it, or a network that exports at one size only: the sidecar records the
    # study's selection, and segment says it uses the input size alone; --scales is refused.
    paths, model = scans
    onnx_path = tmp_path / "one_size.onnx"
    export.export(model, onnx_path)
    sidecar = json.loads(export.sidecar_path(onnx_path).read_text())
    assert served_sides(sidecar) == [sidecar["input"]["resize"]["height"]]
    sidecar["postprocessing"]["study_scale_selection"] = {"scales": [1.0, 0.75], "in_this_graph": False}
    export.sidecar_path(onnx_path).write_text(json.dumps(sidecar))
    result = infer.segment_images(onnx_path, paths[:1], tmp_path / "out", backend="onnxruntime")
    assert result.written and "this graph was exported at one input size" in caplog.text
    with pytest.raises(SonosegError, match="exported at one input size; --scales needs"):
        infer.segment_images(onnx_path, paths[:1], tmp_path / "out2", backend="onnxruntime", scales=(1.0, 0.75))


def test_a_header_pillow_cannot_read_leaves_the_file_to_opencv(tmp_path):
    path = tmp_path / "odd.png"
    path.write_bytes(b"not an image at all")
    layout = imageio._header(path)
    assert (layout.orientation, layout.pages) == (1, 1)


def test_pages_and_a_low_16_bit_range_are_noted(tmp_path, caplog, scans):
    paths, model = scans
    pages = tmp_path / "pages.tif"
    frames = [Image.fromarray(image) for image in sample_images(2)]
    frames[0].save(pages, save_all=True, append_images=frames[1:])
    assert imageio.read_image(pages).notes == ["first_page_of:2"]
    twelve_bit = tmp_path / "twelve_bit.png"
    gray = cv2.imread(str(paths[0]), cv2.IMREAD_GRAYSCALE).astype(np.uint16)
    cv2.imwrite(str(twelve_bit), gray * 16)
    brightest = int(gray.max()) * 16
    assert f"low_range_16bit:{brightest}" in imageio.read_image(twelve_bit).notes
    full = tmp_path / "full.png"
    cv2.imwrite(str(full), cv2.imread(str(paths[0]), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 257)
    assert not any(note.startswith("low_range") for note in imageio.read_image(full).notes)
    infer.segment_images(model, [pages, twelve_bit], tmp_path / "out", device="cpu")
    assert "a TIFF of 2 pages: the first page is segmented" in caplog.text
    assert f"a 16-bit image whose brightest pixel is {brightest} of 65535" in caplog.text


# ----------------------------------------------------------------------------- models outside their run folder


def _run_folder(root, model, scales=(1.0, 0.75), shrink_above=None):
    """A study's run folder: fold0/seed0/model.pt and fold0/postprocess.json recording ``scales``."""
    member = root / "fold0" / "seed0" / "model.pt"
    member.parent.mkdir(parents=True)
    member.write_bytes(model.read_bytes())
    choice = {"validation_dice": {"keep_one": 0.8, "none": 0.7}, "validation_images": 4, "scales": list(scales)}
    choice["shrink_above"] = shrink_above
    (root / "fold0" / "postprocess.json").write_text(json.dumps(choice))
    return member


def test_a_model_file_away_from_its_run_folder_says_the_study_choice_is_not_with_it(tmp_path, scans, caplog):
    paths, model = scans
    # A postprocess.json two folders above a model that is not in a run folder is no choice of its.
    stray = tmp_path / "stray" / "models" / "unet.pt"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(model.read_bytes())
    (tmp_path / "stray" / "postprocess.json").write_text("{not json")
    infer.segment_images(stray, paths[:1], tmp_path / "out", device="cpu")
    assert "no postprocess.json recorded beside it" in caplog.text
    caplog.clear()
    caplog.set_level(logging.INFO)
    member = _run_folder(tmp_path / "run", model)
    infer.segment_images(member, paths[:1], tmp_path / "out2", device="cpu")
    assert "no postprocess.json" not in caplog.text and "scale chosen per image" in caplog.text


def test_an_exported_run_segments_as_the_study_did_with_its_scale_selection(tmp_path, caplog):
    # Large lesions (the images enlarged) and a size-aware rule: the selection changes some masks, and the
    # exported graph, which takes any square size, makes exactly the masks the run folder makes in torch.
    model = write_model(tmp_path / "model.pt", "lighter_unet_c1", lesion_areas=[10, 20, 30, 40])
    paths = write_large_lesion_scans(tmp_path / "scans", "large")
    run = tmp_path / "run"
    _run_folder(run, model, scales=(1.0, 0.75, 0.5), shrink_above=0.5)
    onnx_path = tmp_path / "exported" / "RUN.ONNX"  # any case of the suffix
    sidecar = export.export(run, onnx_path)
    selection = sidecar["postprocessing"]["study_scale_selection"]
    assert selection["in_this_graph"] and selection["scales"] == [1.0, 0.75, 0.5]
    assert selection["training_lesion_areas"] == [10, 20, 30, 40] and sidecar["input"]["shape"][2] == "side"
    assert study_selection(read_sidecar(onnx_path))["shrink_above"] == 0.5
    infer.segment_images(run, paths, tmp_path / "torch", device="cpu")
    infer.segment_images(onnx_path, paths, tmp_path / "onnx", backend="onnxruntime")
    infer.segment_images(run, paths, tmp_path / "on_the_fly", backend="onnxruntime")
    infer.segment_images(run, paths, tmp_path / "input_size", device="cpu", scales=(1.0,))
    changed = 0
    for path in paths:
        name = f"{path.stem}_mask.png"
        torch_mask = cv2.imread(str(tmp_path / "torch" / name), cv2.IMREAD_UNCHANGED)
        for other in ("onnx", "on_the_fly"):
            assert np.array_equal(torch_mask, cv2.imread(str(tmp_path / other / name), cv2.IMREAD_UNCHANGED))
        changed += not np.array_equal(torch_mask, cv2.imread(str(tmp_path / "input_size" / name), cv2.IMREAD_UNCHANGED))
    assert changed  # the selection made a difference, so the equality above means something
    with pytest.raises(SonosegError, match=r"name the exported model <name>.onnx"):
        export.export(model, tmp_path / "exported" / "model")


# ----------------------------------------------------------------------------- messages of common mistakes


def test_common_mistakes_get_a_line_that_says_what_to_do(tmp_path, scans, capsys):
    paths, model = scans

    def error(*args):
        assert main(["segment", "--no-progress", *args]) == 2
        return capsys.readouterr().err

    with pytest.raises(SystemExit):  # argparse: a greedy --scales took an image
        main(["segment", "--model", str(model), "--outdir", str(tmp_path), "--scales", "1", "0.5", str(paths[0])])
    assert "put the images before --scales, or end the factors with --" in capsys.readouterr().err
    assert "cannot take a 1-px input" in error(
        "--model", str(model), "--size", "1", "--outdir", str(tmp_path / "o"), str(paths[0])
    )
    floor = tmp_path / "threshold_baseline" / "fold0" / "seed0"
    (floor / "predictions").mkdir(parents=True)
    said = error("--model", str(floor.parent.parent), "--outdir", str(tmp_path / "o"), str(paths[0]))
    assert "no model.pt (it has predictions and no training history: a floor" in said
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model.read_bytes()[:5000])
    said = error("--model", str(truncated), "--outdir", str(tmp_path / "o"), str(paths[0]))
    assert "truncated.pt: refused" in said and "cut short" in said and "weights_only" not in said


# ----------------------------------------------------------------------------- external sets


def _external_long_table(tmp_path, patients=("Q1", "Q2", "Q3")):
    inside = write_patient_manifest(tmp_path / "inside.csv", ["a", "b", "c"], ["P1", "P2", "P3"])
    samples = [f"x{i}" for i in range(len(patients))]
    outside = write_patient_manifest(tmp_path / "outside.csv", samples, list(patients))
    for run, dice in (("unet", [0.8, 0.6, 0.7]), ("light_unet", [0.7, 0.7, 0.6])):
        write_run_metrics(tmp_path, run, 0, 0, ["a", "b", "c"], dice)
        write_run_metrics(tmp_path, f"{run}--on-ext", 0, 0, samples, np.linspace(0.3, 0.6, len(samples)))
        (tmp_path / "runs" / run / "fold0" / "recipe.json").write_text('{"learning_rate": 0.001}')
    rows = []
    for run in ("unet", "light_unet"):
        rows += [
            {"name": run, "kind": "network", "method": run, "marks": "keep", "model_from": "", "table_key": "network"},
            {
                "name": f"{run}--on-ext",
                "kind": "external",
                "method": run,
                "marks": "keep",
                "model_from": run,
                "table_key": "network",
                "dataset": "ext",
            },
        ]
    rows = [{**row, "folds": "0", "seeds": "0", "recipe": ""} for row in rows]
    return results.collect_per_image(tmp_path, rows, inside, {"ext": outside})


def test_an_external_set_without_lesions_is_a_row_without_dice_and_a_caption_note(tmp_path):
    per_image = _external_long_table(tmp_path)
    per_image.loc[per_image["dataset"] == "ext", "truth_empty"] = True  # a set of normal scans
    table = generalization.generalization_table(per_image, ["unet"], {"ext": "held_out"}, resamples=100)
    outside = table[table["dataset"] == "ext"].iloc[0]
    assert outside["images"] == 0 and np.isnan(outside["dice"]) and np.isnan(outside["drop"])
    notes = generalization.lesionless_notes(table)
    assert notes == ["ext: no image has a lesion, so it has no Dice (its predictions are in per_image.csv.gz)."]
    table_text = generalization.markdown(table, notes)
    assert notes[0] in table_text
    # The markdown table's cell says why, as the report's page does (not an empty cell).
    assert table_text.count(f"| {generalization.NO_DICE} |") == len(table[table["dataset"] == "ext"])
    generalization.plot(table, tmp_path / "figure.png", notes)
    generalization.write(table, tmp_path / "generalization.csv", notes)
    pages.study_table_html(tmp_path / "generalization.csv", "generalization", tmp_path / "generalization.html")
    page = (tmp_path / "generalization.html").read_text()
    assert "no lesion: no Dice" in page and "ext: no image has a lesion" in page and "nan" not in page
    # The paired tables leave such a pair out rather than stop the study.
    paired = tables.paired_runs(per_image, [("unet", "light_unet"), ("unet--on-ext", "light_unet--on-ext")])
    assert paired["reference"].tolist() == ["unet"] and paired["method"].tolist() == ["light_unet"]


def test_one_patient_gives_no_confidence_interval(tmp_path):
    per_image = _external_long_table(tmp_path, patients=("Q1", "Q1"))
    table = generalization.generalization_table(per_image, ["unet"], {"ext": "held_out"}, resamples=100)
    outside = table[table["dataset"] == "ext"].iloc[0]
    assert outside["patients"] == 1 and np.isnan(outside["ci_low"]) and np.isnan(outside["ci_high"])
    assert f"{outside['dice']:.3f} {stats.NO_CI}" in generalization.markdown(table)
    generalization.write(table, tmp_path / "generalization.csv")
    pages.study_table_html(tmp_path / "generalization.csv", "generalization", tmp_path / "generalization.html")
    assert f"{outside['dice']:.3f} {stats.NO_CI}" in (tmp_path / "generalization.html").read_text()


def test_the_statistics_page_of_one_network_and_no_floor(tmp_path):
    per_image = _external_long_table(tmp_path)
    only = per_image[(per_image["run"] == "unet")]
    manifest = pd.read_csv(tmp_path / "inside.csv")
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "statistics"
    figures.paired_statistics(
        only,
        tmp_path / "manifest.csv",
        out.with_suffix(".csv"),
        out.with_suffix(".html"),
        out.with_suffix(".png"),
        resamples=100,
    )
    assert "No paired comparison" in out.with_suffix(".html").read_text()


@pytest.mark.parametrize("root", ["", "  "])
def test_an_external_set_without_a_root_is_refused_by_the_schema(tmp_path, root):
    import yaml

    from sonoseg.study.commands import load_config

    config = tmp_path / "normal.yaml"
    entry = {"name": "normal", "role": "held_out", "layout": "folder", "root": root}
    config.write_text(yaml.safe_dump({"external_datasets": [entry]}))
    with pytest.raises(SonosegError, match=r"config external_datasets\.0\.root: '\s*' does not match"):
        load_config([str(config)])
    entry["root"] = "normal_scans"
    config.write_text(yaml.safe_dump({"external_datasets": [entry]}))
    assert load_config([str(config)])["external_datasets"][0]["root"] == "normal_scans"


def test_ingest_messages_name_where_either_kind_of_dataset_sets_the_option(tmp_path):
    from sonoseg.data import ingest

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), sample_images(1)[0])
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), np.zeros((5, 5), np.uint8))  # another size
    with pytest.raises(SonosegError) as refused:
        ingest(tmp_path, "folder")
    assert "set on_bad_sample: exclude in this dataset's config entry" in str(refused.value)
    assert "its entry in external_datasets:" in str(refused.value)
    with pytest.raises(SonosegError, match="'list.csv' is read by the folder layout only, and layout is 'busi'"):
        ingest(tmp_path, "busi", dataset_csv="list.csv")


def test_a_selection_whose_smaller_sizes_the_network_cannot_take_is_still_the_studys(tmp_path, scans, caplog):
    # As UNeXt takes 32 px alone: torch leaves the smaller sizes out, and so does the exported graph, which
    # therefore selects as the study did (no warning that it does not).
    paths, model = scans
    run = tmp_path / "run"
    _run_folder(run, model, scales=(1.0, 0.03))  # 2 px: too small for the network's four poolings
    sidecar = export.export(run, tmp_path / "run.onnx")
    assert served_sides(sidecar) == [sidecar["input"]["resize"]["height"]]
    assert sidecar["postprocessing"]["study_scale_selection"]["in_this_graph"]
    infer.segment_images(run, paths, tmp_path / "torch", device="cpu")
    infer.segment_images(tmp_path / "run.onnx", paths, tmp_path / "onnx", backend="onnxruntime")
    said = " ".join(record.getMessage() for record in caplog.records if record.name.startswith("sonoseg"))
    assert "exported at one input size" not in said and "cannot take a 2-px input" in said  # 0.03 x 64 px
    for path in paths:
        name = f"{path.stem}_mask.png"
        assert np.array_equal(*(cv2.imread(str(tmp_path / d / name), cv2.IMREAD_UNCHANGED) for d in ("torch", "onnx")))
