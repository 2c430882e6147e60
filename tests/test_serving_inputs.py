"""What users bring to `segment` and `export`, and what a study meets in external sets: the mask files
(names that clash, a folder of the images, a folder that cannot be written), images as viewers show
them (EXIF orientation, pages, 16-bit ranges), model files outside their run folder, the messages of
common mistakes; an external set without lesions or with one patient."""

import json
import logging
import os
import re
import shutil
import struct
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import sample_images, write_large_lesion_scans, write_model, write_patient_manifest, write_run_metrics
from PIL import ExifTags, Image, ImageOps

from sonoseg.analysis import comparisons, figures, generalization, pages, results, stats
from sonoseg.data import imageio
from sonoseg.errors import SonosegError
from sonoseg.serving import export, mask_files, segmenter
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
            segmenter.segment_images(model, clash, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()  # refused before the folder was even made


def test_many_clashing_names_are_named_up_to_a_limit_and_all_counted(tmp_path):
    # A folder of thousands given whole: the error names the first clashes and counts the rest (no file read).
    names = [tmp_path / "a" / f"s{i}.png" for i in range(mask_files.CLASHES_SHOWN + 5)]
    twins = [path.with_suffix(".tif") for path in names]
    with pytest.raises(SonosegError) as error:
        mask_files.mask_files([*names, *twins], tmp_path / "out")
    message = str(error.value)
    assert message.count("would both be written to") == mask_files.CLASHES_SHOWN
    assert "; and 5 more such names: segment them into different --outdir, or rename them" in message


def test_an_image_given_twice_is_segmented_once(tmp_path, scans, caplog):
    paths, model = scans
    again = paths[0].parent / ".." / "scans" / paths[0].name  # the same file, spelt otherwise
    result = segmenter.segment_images(model, [paths[0], again, paths[1]], tmp_path / "out", device="cpu")
    assert [p.name for p in result.written] == ["scan0_mask.png", "scan1_mask.png"]
    assert "given more than once; segmented once" in caplog.text


def test_a_mistyped_image_path_is_said_before_the_model_loads(tmp_path, scans, caplog):
    paths, model = scans
    typo = paths[0].with_name("scna0.png")
    # Every name given mistyped: refused by path before the model is read (a file that is no model is not
    # looked at: the refusal comes first).
    not_a_model = tmp_path / "not_a_model.pt"
    not_a_model.write_bytes(b"junk")
    with pytest.raises(SonosegError, match=rf"^no such file or folder: {re.escape(str(typo))}; nothing to segment$"):
        segmenter.segment_images(not_a_model, [typo], tmp_path / "out", device="cpu")
    # One of several: warned of at once, counted as failed, the others segmented.
    result = segmenter.segment_images(model, [typo, paths[1]], tmp_path / "out", device="cpu")
    assert [p.name for p in result.written] == [f"{paths[1].stem}_mask.png"]
    assert [path for path, _ in result.failed] == [typo]
    assert f"1 of the 2 images given do not exist: {typo}; they are counted as failed" in caplog.text
    # A pattern in quotes reaches segment unexpanded (segment takes no patterns): said so.
    pattern = paths[0].parent / "*.png"
    with pytest.raises(SonosegError, match=re.escape(f"(if {pattern} is a pattern, the shell did not expand it")):
        segmenter.segment_images(not_a_model, [pattern], tmp_path / "out", device="cpu")


def test_an_outdir_that_cannot_take_files_is_refused_before_the_model_loads(tmp_path, scans):
    """A read-only --outdir was refused only once the model (a large ensemble, say) had loaded. /sys takes no
    file even from root, as an immutable or read-only folder takes none."""
    paths, _ = scans
    not_a_model = tmp_path / "not_a_model.pt"
    not_a_model.write_bytes(b"junk")  # never read: the refusal comes first
    with pytest.raises(SonosegError, match=r"^/sys: masks cannot be written in this folder \(Permission denied\)$"):
        segmenter.segment_images(not_a_model, [paths[0]], "/sys", device="cpu")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sonoseg-write-check")]


def test_a_second_run_into_an_outdir_another_run_is_writing_is_refused(tmp_path, scans):
    """Two segment runs into one --outdir at once wrote over each other's masks, each record claiming them all.
    The folder is held from the record's first entry to its last; it is free again after, also after a failure."""
    paths, model = scans
    outdir = tmp_path / "out"
    outdir.mkdir()
    with mask_files.FolderHeld(outdir):  # as another run holds it (another process: the same lock)
        with pytest.raises(SonosegError, match=re.escape(f"{outdir}: another segment run is writing its masks there")):
            segmenter.segment_images(model, [paths[0]], outdir, device="cpu")
        # Said before the model loads (a probe waited for a large ensemble to load to be told): a file that is no
        # model is not even read.
        not_a_model = tmp_path / "ensemble.pt"
        not_a_model.write_bytes(b"not read")
        with pytest.raises(SonosegError, match=re.escape(f"{outdir}: another segment run is writing its masks there")):
            segmenter.segment_images(not_a_model, [paths[0]], outdir, device="cpu")
    assert sorted(p.name for p in outdir.iterdir()) == []  # no lock file among the masks, no mask, no record
    assert len(segmenter.segment_images(model, [paths[0]], outdir, device="cpu").written) == 1
    gone = tmp_path / "gone.png"  # a run whose every image fails frees the folder too
    result = segmenter.segment_images(model, [paths[1], gone], outdir, device="cpu")
    assert len(result.written) == 1 and [path for path, _ in result.failed] == [gone]
    assert len(segmenter.segment_images(model, [paths[2]], outdir, device="cpu").written) == 1


def test_dicom_files_are_named_as_dicom_with_how_to_export_them(tmp_path, scans, caplog):
    """A department exports DICOM: named directly, it was 'not a readable image'; in a folder, an INFO count."""
    paths, model = scans
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(paths[0], folder / "scan.png")
    (folder / "IMG0001.dcm").write_bytes(bytes(128) + b"DICM" + bytes(64))
    (folder / "IMG0002").write_bytes(bytes(128) + b"DICM" + bytes(64))  # DICOM often has no extension
    (folder / "notes").write_bytes(b"not an image at all, nor DICOM" * 10)
    result = segmenter.segment_images(model, [folder], tmp_path / "out", device="cpu")
    assert [p.name for p in result.written] == ["scan_mask.png"]
    assert (
        f"{folder}: 2 DICOM file(s) not segmented (IMG0001.dcm, IMG0002): DICOM, which sonoseg does not read: "
        "export the frames as PNG first" in caplog.text
    )
    with pytest.raises(SonosegError, match=re.escape(f"{folder / 'IMG0001.dcm'}: DICOM, which sonoseg does not read")):
        imageio.read_image(folder / "IMG0001.dcm")
    named = segmenter.segment_images(model, [folder / "IMG0002", paths[1]], tmp_path / "out2", device="cpu")
    assert named.failed == [(folder / "IMG0002", f"{folder / 'IMG0002'}: {imageio.DICOM_ADVICE}")]


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
            segmenter.segment_images(model, images, outdir, device="cpu")
    assert truth.read_bytes() == before
    # Into a folder of their own, masks of an earlier run are replaced as before.
    for _ in range(2):
        assert len(segmenter.segment_images(model, paths, tmp_path / "masks", device="cpu").written) == 3


def test_names_that_differ_only_in_case_clash(tmp_path, scans):
    # macOS and Windows file systems keep one file of X_mask.png and x_mask.png.
    paths, model = scans
    upper = tmp_path / "other" / "SCAN0.png"
    upper.parent.mkdir()
    upper.write_bytes(paths[0].read_bytes())
    with pytest.raises(SonosegError, match="would both be written to"):
        segmenter.segment_images(model, [paths[0], upper], tmp_path / "out", device="cpu")
    # And in Unicode form only: one name from macOS (NFD) and one from Windows (NFC) are one file on either.
    for form, folder in (("NFD", "mac"), ("NFC", "win")):
        named = tmp_path / folder / unicodedata.normalize(form, "rené.png")
        named.parent.mkdir()
        named.write_bytes(paths[0].read_bytes())
    spelt = [tmp_path / "mac" / unicodedata.normalize("NFD", "rené.png"), tmp_path / "win" / "rené.png"]
    with pytest.raises(SonosegError, match="would both be written to"):
        segmenter.segment_images(model, spelt, tmp_path / "out", device="cpu")


def test_a_broken_link_among_the_images_is_named_as_one(tmp_path, scans, capsys):
    """A dangling link read "cannot be read (No such file or directory)", where the ingest says what it is."""
    paths, model = scans
    (tmp_path / "gone.png").symlink_to(tmp_path / "moved.png")
    status = main(
        [
            "segment",
            "--no-progress",
            "--model",
            str(model),
            "--outdir",
            str(tmp_path / "out"),
            str(paths[0]),
            str(tmp_path / "gone.png"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and f"gone.png: broken symbolic link (to {tmp_path / 'moved.png'})" in err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be made")
def test_a_mask_that_cannot_be_written_is_an_error_naming_it(tmp_path, scans, capsys):
    paths, model = scans
    # A folder where nothing can be written stops the run before the model loads, naming the folder.
    status = main(["segment", "--no-progress", "--model", str(model), "--outdir", "/proc/self", str(paths[0])])
    err = capsys.readouterr().err
    assert status == 2 and "/proc/self: masks cannot be written in this folder" in err
    with pytest.raises(SonosegError, match="^/proc/self/scan0_mask.png: the mask could not be written"):
        mask_files.write_png(np.zeros((4, 4), np.uint8), Path("/proc/self/scan0_mask.png"))
    afile = tmp_path / "afile"
    afile.write_text("")
    status = main(["segment", "--no-progress", "--model", str(model), "--outdir", str(afile), str(paths[0])])
    said = capsys.readouterr().err
    assert status == 2 and f"afile: cannot be made the folder for the masks ({afile} is a file, not a folder)" in said


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
    # A TIFF too: OpenCV 5.1 turns one by its tag whatever the flags, which once made it turned twice.
    for orientation, suffix in ((6, ".png"), (8, ".png"), (6, ".tif")):  # a quarter turn either way
        exif = Image.Exif()
        exif[imageio.EXIF_ORIENTATION_TAG] = orientation
        name = f"tagged{orientation}{suffix.replace('.', '_')}"
        tagged = (tmp_path / name).with_suffix(suffix)
        image.save(tagged, exif=exif)
        as_shown = tmp_path / "shown" / f"{name}.png"  # the pixels turned (as Pillow turns them), no tag
        as_shown.parent.mkdir(exist_ok=True)
        _as_pillow_shows(np.asarray(image), orientation).save(as_shown)
        segmenter.segment_images(model, [tagged], tmp_path / "out", device="cpu")
        segmenter.segment_images(model, [as_shown], tmp_path / "out_shown", device="cpu")
        viewed[tagged.name] = cv2.imread(str(tmp_path / "out" / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
        shown = cv2.imread(str(tmp_path / "out_shown" / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert viewed[tagged.name].shape == (image.width, image.height)
        assert np.array_equal(viewed[tagged.name], shown), tagged.name
    six, eight = viewed["tagged6_png.png"], viewed["tagged8_png.png"]
    assert (six > 0).any() and not np.array_equal(six, eight)
    assert "turned as its EXIF orientation (6)" in caplog.text


def _as_pillow_shows(pixels: np.ndarray, orientation: int) -> Image.Image:
    """The pixels as Pillow's ImageOps.exif_transpose turns them for this EXIF orientation: the reference
    for every format. (Pillow 13 turns a TIFF itself while loading it, and garbles a quarter-turned one, so
    the reference is made from the pixels and the tag, not from the file.)"""
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = orientation
    image.info["exif"] = exif.tobytes()
    return ImageOps.exif_transpose(image)


def _with_a_corner_marked(height: int = 24, width: int = 40) -> np.ndarray:
    """A dark frame, not square, with a bright block near its top-left corner: any turn or mirror moves it."""
    pixels = np.full((height, width), 20, np.uint8)
    pixels[2:8, 3:12] = 235
    return pixels


# How each format is written: its name for Pillow, how the marked frame is stored, and whether it is lossless.
TAGGED_FORMATS = {
    "tiff8": ("TIFF", lambda gray: gray, {}, True),
    "tiff16": ("TIFF", lambda gray: gray.astype(np.uint16) * 257, {}, True),
    "tiff_rgb": ("TIFF", lambda gray: np.dstack([gray, gray // 2, gray // 3]), {}, True),
    "jpeg": ("JPEG", lambda gray: gray, {"quality": 100}, False),
    "png": ("PNG", lambda gray: gray, {}, True),
    "webp": ("WEBP", lambda gray: np.dstack([gray] * 3), {"lossless": True}, True),
}


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("kind", sorted(TAGGED_FORMATS))
def test_every_format_comes_out_turned_once_as_viewers_show_it(tmp_path, kind, orientation):
    pillow_format, stored, options, lossless = TAGGED_FORMATS[kind]
    gray = _with_a_corner_marked()
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = orientation
    path = tmp_path / f"scan.{kind}"
    Image.fromarray(stored(gray)).save(path, pillow_format, exif=exif, **options)
    expected = np.asarray(_as_pillow_shows(gray, orientation))
    decoded = imageio.read_image(path)
    assert decoded.pixels.shape[:2] == expected.shape
    assert np.array_equal(decoded.pixels[..., 0] > 127, expected > 127)  # where the marker is
    if lossless:
        assert np.array_equal(decoded.pixels[..., 0], expected)
    assert f"exif_orientation:{orientation}" in decoded.notes
    mask = imageio.read_mask(path)  # masks are read alike, so they stay on the images' pixels
    assert np.array_equal(mask.pixels, expected > 127) and mask.orientation == orientation


def test_an_image_and_its_mask_tagged_alike_stay_aligned_whatever_their_formats(tmp_path):
    from sonoseg.data import ingest

    gray = _with_a_corner_marked(48, 80)
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = 6
    lesion = np.where(gray > 127, 255, 0).astype(np.uint8)  # drawn on the stored pixels, tagged as they are
    for image_suffix, mask_suffix in ((".png", ".tif"), (".tif", ".png"), (".tif", ".tif"), (".jpg", ".tif")):
        root = tmp_path / f"{image_suffix[1:]}_{mask_suffix[1:]}"
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        Image.fromarray(gray).save(root / "images" / f"a{image_suffix}", exif=exif, quality=100)
        Image.fromarray(lesion).save(root / "masks" / f"a{mask_suffix}", exif=exif)
        image = imageio.read_image(root / "images" / f"a{image_suffix}").pixels[..., 0]
        mask = imageio.read_mask(root / "masks" / f"a{mask_suffix}").pixels
        assert mask.shape == image.shape == (80, 48), root.name
        assert np.array_equal(mask, image > 127), root.name
        manifest = ingest(root, "folder")  # the ingest reads them so too: the pair fits
        assert manifest["status"].iloc[0] == "included", manifest["reason"].iloc[0]


@pytest.mark.parametrize("suffix", [".tif", ".jpg", ".png", ".webp"])
def test_a_decoder_is_left_no_orientation_to_turn_by(tmp_path, suffix):
    # Flags with which OpenCV 5.1 turns each of these by the tag: once the tag says 1, none turns, so the
    # pixels are as stored whatever a version of OpenCV does with it; the file stays valid (a PNG's CRC).
    gray = _with_a_corner_marked()
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = 6
    path = tmp_path / f"scan{suffix}"
    Image.fromarray(np.dstack([gray] * 3)).save(path, exif=exif, quality=100, lossless=True)
    data = np.fromfile(path, np.uint8)
    assert cv2.imdecode(data, cv2.IMREAD_COLOR).shape[:2] == (40, 24)  # turned by OpenCV itself
    assert imageio.neutralise_orientation(data) == 6
    assert imageio.neutralise_orientation(data.copy()) == 1  # the tag is still there, saying 1
    unturned = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert unturned.shape[:2] == (24, 40) and unturned[4, 6, 0] > 127
    neutral = tmp_path / f"neutral{suffix}"
    data.tofile(neutral)
    with Image.open(neutral) as reread:
        reread.load()
        assert reread.getexif()[imageio.EXIF_ORIENTATION_TAG] == 1


def _tiff_by_hand(gray: np.ndarray, order: str, kind: int, sort: bool, big: bool) -> bytes:
    """An uncompressed 8-bit TIFF (classic, or BigTIFF with ``big``) in byte ``order`` whose orientation 6 is
    stored as TIFF type ``kind``, its entries sorted by tag or not: as writers other than Pillow store it."""
    height, width = gray.shape
    offset, entry_size, value_size = ("Q", 20, 8) if big else ("I", 12, 4)
    values = {1: "B", 3: "H", 4: "I", 8: "h", 9: "i"}  # BYTE, SHORT, LONG, SSHORT, SLONG
    tags = [(256, 3, width), (257, 3, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, None)]
    tags += [(imageio.EXIF_ORIENTATION_TAG, kind, 6), (277, 3, 1), (278, 3, height), (279, 4, gray.size)]
    if not sort:  # the orientation after tags above it, the strip offsets last
        tags = tags[:5] + tags[7:] + [tags[6], tags[5]]
    head = (b"II" if order == "<" else b"MM") + struct.pack(order + "H", 43 if big else 42)
    head += struct.pack(order + "HHQ", 8, 0, 16) if big else struct.pack(order + "I", 8)
    count = "Q" if big else "H"
    pixels_at = len(head) + struct.calcsize(count) + len(tags) * entry_size + value_size
    ifd = struct.pack(order + count, len(tags))
    for tag, tag_kind, value in tags:
        field = struct.pack(order + values[tag_kind], pixels_at if value is None else value)  # left-justified
        ifd += struct.pack(order + "HH" + offset, tag, tag_kind, 1) + field.ljust(value_size, b"\0")
    return head + ifd + bytes(value_size) + gray.tobytes()  # no next IFD, then the pixels


# Pillow 13 takes a big-endian BigTIFF for a classic one (it looks for 43 in the wrong byte) and warns; its
# header is then read by OpenCV alone, which is what the test is about.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
@pytest.mark.parametrize("sort", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
@pytest.mark.parametrize("kind", [1, 3, 4, 8, 9], ids=["byte", "short", "long", "sshort", "slong"])
def test_a_tiff_orientation_of_any_integer_type_and_place_turns_the_pixels_once(tmp_path, kind, order, sort, big):
    # libtiff turns by the tag whatever its integer type and wherever it lies in the IFD; one left in the
    # file was turned by OpenCV and again by Pillow's reading of it (a 40x24 image came out 24x40).
    gray = _with_a_corner_marked()
    path = tmp_path / "scan.tif"
    path.write_bytes(_tiff_by_hand(gray, order, kind, sort, big))
    expected = np.asarray(_as_pillow_shows(gray, 6))
    decoded = imageio.read_image(path)
    assert decoded.pixels.shape[:2] == expected.shape == (40, 24)
    assert np.array_equal(decoded.pixels[..., 0], expected)
    assert "exif_orientation:6" in decoded.notes and decoded.orientation == 6
    data = np.fromfile(path, np.uint8)
    assert imageio.neutralise_orientation(data) == 6
    assert imageio.neutralise_orientation(data) == 1  # written at its width: the tag still reads, saying 1
    assert cv2.imdecode(data, cv2.IMREAD_UNCHANGED).shape[:2] == (24, 40)  # nothing left for OpenCV to turn by


def patch_tiff_tag(path: Path, tag: int, layout: str, *values: int) -> None:
    """Rewrite the entry of ``tag`` in the first IFD of a classic TIFF Pillow wrote: ``values`` packed by
    ``layout`` (struct, the file's byte order) from the entry's type field on."""
    data = bytearray(path.read_bytes())
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    for index in range(struct.unpack_from(order + "H", data, ifd)[0]):
        entry = ifd + 2 + 12 * index
        if struct.unpack_from(order + "H", data, entry)[0] == tag:
            struct.pack_into(order + layout, data, entry + 2, *values)
    path.write_bytes(bytes(data))


def test_a_tiff_written_by_pillow_with_its_orientation_patched_to_a_long_is_turned_once(tmp_path):
    # Pillow writes the tag as a SHORT; the same file with it as a LONG (4 bytes, same place) must read alike.
    gray = _with_a_corner_marked()
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = 6
    path = tmp_path / "scan.tif"
    Image.fromarray(gray).save(path, exif=exif)
    patch_tiff_tag(path, imageio.EXIF_ORIENTATION_TAG, "HII", 4, 1, 6)  # type LONG, count 1, value 6
    decoded = imageio.read_image(path)
    assert np.array_equal(decoded.pixels[..., 0], np.asarray(_as_pillow_shows(gray, 6)))
    assert "exif_orientation:6" in decoded.notes


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
def test_a_white_is_zero_tiff_reads_as_viewers_show_it_at_any_depth(tmp_path, depth, compression):
    """A probe's 16-bit WhiteIsZero TIFF (grey stored inverted) was segmented inverted, without a word: OpenCV
    inverts an 8-bit one but reads a 16-bit one as stored. Both now read as a viewer shows them."""
    top = np.iinfo(depth).max
    viewed = (np.tile(np.linspace(0, top, 40), (24, 1))).astype(depth)  # dark left, bright right
    path = tmp_path / "scan.tif"
    Image.fromarray(top - viewed).save(path, compression=compression)  # the stored values: inverted
    patch_tiff_tag(path, imageio.TIFF_PHOTOMETRIC, "HIH", 3, 1, 0)  # SHORT, count 1: BlackIsZero -> WhiteIsZero
    assert Image.open(path).tag_v2[imageio.TIFF_PHOTOMETRIC] == 0
    expected = viewed if depth == np.uint8 else (viewed // 257).astype(np.uint8)
    assert np.array_equal(imageio.read_image(path).pixels[..., 0], expected)


def big_endian_grey_tiff(stored: np.ndarray, photometric: int) -> bytes:
    """A classic big-endian ("MM") TIFF of one uncompressed strip of 16-bit grey ``stored`` values, written by
    hand: Pillow neither writes nor reads one."""
    height, width = stored.shape
    tags = [(256, width), (257, height), (258, 16), (259, 1), (262, photometric), (273, 0), (277, 1)]
    tags += [(278, height), (279, stored.size * 2)]
    ifd_size = 2 + 12 * len(tags) + 4
    pixels_at = 8 + ifd_size
    entries = b"".join(
        struct.pack(">HHI", tag, 4, 1) + struct.pack(">I", pixels_at if tag == 273 else value) for tag, value in tags
    )
    header = b"MM\x00*" + struct.pack(">I", 8)
    return header + struct.pack(">H", len(tags)) + entries + bytes(4) + stored.astype(">u2").tobytes()


def test_a_big_endian_white_is_zero_tiff_is_refused_not_read_inverted(tmp_path):
    """A reviewer's big-endian 16-bit WhiteIsZero TIFF was still read as stored (inverted): Pillow, which read
    the tag, cannot open it. The tag is read by sonoseg's own TIFF reader in either byte order; Pillow being
    the reference for the inversion, such a file is refused, by name, rather than guessed."""
    viewed = np.tile(np.linspace(0, 65535, 40), (24, 1)).astype(np.uint16)
    path = tmp_path / "scan.tif"
    path.write_bytes(big_endian_grey_tiff(65535 - viewed, photometric=0))
    assert imageio.tiff_tag(np.fromfile(path, np.uint8), imageio.TIFF_PHOTOMETRIC) == 0
    with pytest.raises(SonosegError, match=r"scan.tif: a WhiteIsZero TIFF \(grey stored inverted\) that cannot be"):
        imageio.read_image(path)
    path.write_bytes(big_endian_grey_tiff(viewed, photometric=1))  # BlackIsZero: read as it is
    assert np.array_equal(imageio.read_image(path).pixels[..., 0], (viewed // 257).astype(np.uint8))


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
    result = segmenter.segment_images(onnx_path, paths[:1], tmp_path / "out", backend="onnxruntime")
    assert result.written and "this graph was exported at one input size" in caplog.text
    with pytest.raises(SonosegError, match="exported at one input size; --scales needs"):
        segmenter.segment_images(onnx_path, paths[:1], tmp_path / "out2", backend="onnxruntime", scales=(1.0, 0.75))


def test_a_header_pillow_cannot_read_leaves_the_file_to_opencv(tmp_path):
    path = tmp_path / "odd.png"
    path.write_bytes(b"not an image at all")
    with open(path, "rb") as handle:
        layout = imageio._header(handle)
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
    segmenter.segment_images(model, [pages, twelve_bit], tmp_path / "out", device="cpu")
    assert "a TIFF of 2 pages: the first page is segmented" in caplog.text
    assert f"a 16-bit image whose brightest pixel is {brightest} of 65535" in caplog.text


# ----------------------------------------------------------------------------- data after the end, files cut short

# How each kind of file is written by OpenCV: a JPEG in one scan, in several (progressive), with restart markers.
WRITTEN = {
    "png": (".png", []),
    "jpeg": (".jpg", []),
    "progressive_jpeg": (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "jpeg_restart_markers": (".jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 1]),
}


def _encoded(kind: str, pixels: np.ndarray) -> bytes:
    suffix, params = WRITTEN[kind]
    return cv2.imencode(suffix, pixels, params)[1].tobytes()


def _as_read(encoded: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("kind", sorted(WRITTEN))
def test_data_after_the_end_marker_of_any_size_is_not_a_truncation(tmp_path, kind):
    # Phones append megabytes after a JPEG's end-of-image marker (a Motion Photo's video, a second picture),
    # tools append bytes after a PNG's IEND: far more than the 4 KiB from the end once searched for the marker.
    # The random bytes hold end markers and starts of scan of their own, as a video does.
    image = cv2.resize(sample_images(1)[0], (180, 140))
    whole = _encoded(kind, image)
    rng = np.random.default_rng(0)
    trailer = _encoded(kind, image[::4, ::4]) + rng.bytes(8000 if kind == "png" else 1 << 20)
    path = tmp_path / f"scan.{'png' if kind == 'png' else 'jpg'}"
    path.write_bytes(whole + trailer)
    assert imageio.problem_with_file(path) is None
    assert np.array_equal(imageio.read_image(path).pixels, _as_read(whole))


@pytest.mark.parametrize("kind", sorted(WRITTEN))
def test_a_file_cut_short_is_refused_naming_it(tmp_path, kind):
    whole = _encoded(kind, cv2.resize(sample_images(1)[0], (180, 140)))
    png = "PNG (its chunks run past the file's end before an IEND chunk"
    name = png if kind == "png" else "JPEG (no end-of-image marker"
    end = 12 if kind == "png" else 2  # the IEND chunk; the end-of-image marker
    path = tmp_path / f"scan.{'png' if kind == 'png' else 'jpg'}"
    for cut in (whole[: len(whole) // 2], whole[:-end]):  # within the pixels; just before the end
        path.write_bytes(cut)
        with pytest.raises(SonosegError, match=rf"^{re.escape(str(path))}: truncated {re.escape(name)}"):
            imageio.read_image(path)


def _exif_with_a_thumbnail(thumbnail: bytes, orientation: int) -> bytes:
    """An APP1 segment as a camera writes one: EXIF whose first IFD holds the orientation and whose second
    points to a JPEG thumbnail, with a start of scan and an end-of-image marker of its own."""
    second_ifd = 8 + 2 + 12 + 4  # after the TIFF header and the first IFD (one entry)
    thumbnail_at = second_ifd + 2 + 2 * 12 + 4
    first = struct.pack("<HHHIHHI", 1, imageio.EXIF_ORIENTATION_TAG, 3, 1, orientation, 0, second_ifd)
    second = struct.pack("<HHHIIHHIII", 2, 0x0201, 4, 1, thumbnail_at, 0x0202, 4, 1, len(thumbnail), 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + first + second + thumbnail
    return b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff


def test_a_jpeg_with_an_exif_thumbnail_cut_within_its_scan_is_refused(tmp_path):
    image = cv2.resize(sample_images(1)[0], (180, 140))
    main, thumbnail = _encoded("jpeg", image), _encoded("jpeg", image[::8, ::8])
    whole = main[:2] + _exif_with_a_thumbnail(thumbnail, 6) + main[2:]
    path = tmp_path / "photo.jpg"
    path.write_bytes(whole + np.random.default_rng(0).bytes(1 << 20))
    with Image.open(path) as photo:  # as Pillow reads a camera's EXIF: the orientation, the thumbnail
        exif = photo.getexif()
        assert exif[imageio.EXIF_ORIENTATION_TAG] == 6 and exif.get_ifd(ExifTags.IFD.IFD1)[0x0202] == len(thumbnail)
    decoded = imageio.read_image(path)  # whole, with data after it: read, turned once
    assert decoded.pixels.shape == (180, 140, 3) and decoded.notes == ["exif_orientation:6"]
    cut = whole[: len(whole) - len(main) // 2]
    assert cut.count(b"\xff\xd9") == 1  # the thumbnail's end marker: not the image's
    path.write_bytes(cut)
    with pytest.raises(SonosegError, match=rf"^{re.escape(str(path))}: truncated JPEG"):
        imageio.read_image(path)


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
    segmenter.segment_images(stray, paths[:1], tmp_path / "out", device="cpu")
    assert "no postprocess.json recorded beside it" in caplog.text
    caplog.clear()
    caplog.set_level(logging.INFO)
    member = _run_folder(tmp_path / "run", model)
    segmenter.segment_images(member, paths[:1], tmp_path / "out2", device="cpu")
    assert "no postprocess.json" not in caplog.text and "scale chosen per image" in caplog.text
    # A link to it (current.pt -> a run folder's model) is served as its run folder serves it: it lost the choice.
    caplog.clear()
    link = tmp_path / "current.pt"
    link.symlink_to(member)
    segmenter.segment_images(link, paths[:1], tmp_path / "out3", device="cpu")
    assert "no postprocess.json" not in caplog.text and "scale chosen per image" in caplog.text
    assert (tmp_path / "out3" / f"{paths[0].stem}_mask.png").read_bytes() == (
        tmp_path / "out2" / f"{paths[0].stem}_mask.png"
    ).read_bytes()


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
    segmenter.segment_images(run, paths, tmp_path / "torch", device="cpu")
    segmenter.segment_images(onnx_path, paths, tmp_path / "onnx", backend="onnxruntime")
    segmenter.segment_images(run, paths, tmp_path / "on_the_fly", backend="onnxruntime")
    segmenter.segment_images(run, paths, tmp_path / "input_size", device="cpu", scales=(1.0,))
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
    # The same through ONNX Runtime (the model exported for it now): a size, not a graph that does not export.
    said = error(
        "--model", str(model), "--backend", "onnxruntime", "--size", "1", "--outdir", str(tmp_path / "o"), str(paths[0])
    )
    assert f"{model}: the network cannot take a 1-px input (" in said and "cost table" not in said
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
    paired = comparisons.paired_runs(per_image, [("unet", "light_unet"), ("unet--on-ext", "light_unet--on-ext")])
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
    segmenter.segment_images(run, paths, tmp_path / "torch", device="cpu")
    segmenter.segment_images(tmp_path / "run.onnx", paths, tmp_path / "onnx", backend="onnxruntime")
    said = " ".join(record.getMessage() for record in caplog.records if record.name.startswith("sonoseg"))
    assert "exported at one input size" not in said and "cannot take a 2-px input" in said  # 0.03 x 64 px
    for path in paths:
        name = f"{path.stem}_mask.png"
        assert np.array_equal(*(cv2.imread(str(tmp_path / d / name), cv2.IMREAD_UNCHANGED) for d in ("torch", "onnx")))


def test_a_model_or_output_given_twice_is_refused_not_the_last_kept(tmp_path, capsys):
    # argparse keeps the last of a repeated option: --model A --model B served B alone without a word.
    for argv, option in (
        (["segment", "--model", "a", "--model", "b", "--outdir", "o", "x.png"], "--model"),
        (["segment", "--model", "a", "--outdir", "o", "--outdir", "p", "x.png"], "--outdir"),
        (["export", "--model", "a", "--model", "b", "--out", "x.onnx"], "--model"),
        (["export", "--model", "a", "--out", "x.onnx", "--out", "y.onnx"], "--out"),
    ):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert f"error: {option} given twice (" in capsys.readouterr().err


def test_pytorch_missing_is_said_in_a_line_and_an_older_pytorch_is_not_called_missing(monkeypatch, capsys):
    from sonoseg.study import commands

    def missing(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    def older(args):  # installed, but without a name this sonoseg imports: its own message, not "install it"
        raise ImportError("cannot import name 'flop_counter' from 'torch.utils'", name="torch.utils")

    monkeypatch.setattr(commands, "cmd_models", missing)
    assert main(["models"]) == 2
    assert "sonoseg models: error: this command needs PyTorch (torch)" in capsys.readouterr().err
    monkeypatch.setattr(commands, "cmd_models", older)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert "cannot import name 'flop_counter'" in err and "needs PyTorch" not in err
