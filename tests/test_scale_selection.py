"""Test-time scale selection (predict.scales; sonoseg.serving.infer.scale_adaptive): each image also
predicted shrunk, the prediction whose own lesion is the most confident kept, no label read."""

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import sample_images, write_model, write_samples

from sonoseg.errors import SonosegError
from sonoseg.serving import export, infer, modelio, segmenter


def disc_probability(batch: np.ndarray, level_by_size: dict[int, float]) -> np.ndarray:
    """A made network: a centred disc of a quarter of the image's side, at a probability that depends on
    the input size (level_by_size), 0.1 elsewhere; it records the sizes it was asked for."""
    n, _, size, _ = batch.shape
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= (size / 4) ** 2
    disc_probability.asked.append(size)
    return np.repeat(np.where(disc, level_by_size[size], 0.1)[None], n, axis=0).astype(np.float32)


def test_lesion_confidence_is_the_mean_probability_inside_the_predicted_lesion():
    batch = np.zeros((3, 4, 4), np.float32)
    batch[0, :2, :2] = [[0.9, 0.7], [0.6, 0.8]]  # lesion: four pixels, mean 0.75; the rest 0
    batch[1] = 0.4  # nothing above 0.5: no lesion
    batch[2, 0, 0] = 1.0
    np.testing.assert_allclose(infer.lesion_confidence(batch), [0.75, 0.0, 1.0], atol=1e-6)


def test_the_most_confident_size_is_kept_and_brought_back_to_the_input_size():
    disc_probability.asked = []
    levels = {32: 0.6, 24: 0.9, 16: 0.7}
    run = infer.scale_adaptive(lambda b: disc_probability(b, levels), (1.0, 0.75, 0.5))
    batch = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    out = run(batch)
    assert out.shape == (2, 32, 32) and sorted(set(disc_probability.asked)) == [16, 24, 32]
    # 24 px won (0.9 inside): its map, resized bilinearly to 32 px, not the 32-px one (0.6 inside).
    small = disc_probability(batch[:, :, :24, :24], levels)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(small)[:, None], size=(32, 32), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[:, 16, 16].min() > 0.85


def test_a_tie_or_a_less_confident_smaller_size_keeps_the_input_size():
    disc_probability.asked = []
    batch = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    for levels in ({32: 0.8, 24: 0.8}, {32: 0.8, 24: 0.6}):
        run = infer.scale_adaptive(lambda b, levels=levels: disc_probability(b, levels), (1.0, 0.75))
        np.testing.assert_array_equal(run(batch), disc_probability(batch, levels))


def test_scales_of_one_alone_are_the_model_itself_and_bad_factors_are_refused():
    def run(batch):
        return batch[:, 0]

    assert infer.scale_adaptive(run, (1.0,)) is run
    with pytest.raises(SonosegError, match="factors must be > 0"):
        infer.scale_adaptive(run, (1.0, 0.0))


@pytest.mark.parametrize(
    "refusal, said",
    [
        (RuntimeError, "(cannot pool a 24-px map)"),  # PyTorch's shape errors
        (ValueError, "(ValueError: cannot pool a 24-px map)"),  # a network's own check of its input size
        (AssertionError, "(AssertionError: cannot pool a 24-px map)"),
    ],
)
def test_a_size_the_network_cannot_take_is_left_out_with_a_warning(caplog, refusal, said):
    asked = []

    def strided(batch):  # a network whose downsampling needs a multiple of 16
        size = batch.shape[-1]
        asked.append(size)
        if size % 16:
            raise refusal(f"cannot pool a {size}-px map")
        return np.full((len(batch), size, size), 0.7 if size == 32 else 0.9, np.float32)

    label = f"strided ({refusal.__name__})"  # each its own: a label is warned of once
    run = infer.scale_adaptive(strided, (1.0, 0.75, 0.5), label=label)
    batch = np.zeros((1, 3, 32, 32), np.float32)
    np.testing.assert_allclose(run(batch), 0.9)  # 16 px taken, 24 px left out
    assert f"{label} cannot take a 24-px input {said}: that size left out" in caplog.text
    asked.clear()
    run(batch)
    assert sorted(asked) == [16, 32]  # left out once and for all: not tried for the next batch
    with pytest.raises(KeyError):  # any other error is the network's fault, not the size's: it stops the run
        infer.scale_adaptive(lambda b: {}[b.shape[-1]] if b.shape[-1] != 32 else b[:, 0], (1.0, 0.75))(batch)


def test_predict_and_segment_choose_the_scale_per_image_on_a_real_model(tmp_path):
    """A trained-format model through predict (with its flip-averaged twin) and segment: with scales the
    masks differ from the plain ones, each variant chooses its own scale, and 1.0 alone changes nothing."""
    from sonoseg.data import preprocess

    samples = write_samples(tmp_path, 3)
    cache = tmp_path / "keep.npz"
    preprocess.build_cache(samples, 64, cache, "bilinear", "keep")
    model = write_model(tmp_path / "a.pt", "unet", seed=0)
    scales = (1.0, 0.75, 0.5)

    def probabilities(run):
        arrays = preprocess.load_cache(cache)
        return run(infer.images_to_tensor(arrays["images"]).numpy())

    predictor = infer.torch_predictor(model, "cpu")
    plain = probabilities(predictor.run)
    chosen = probabilities(infer.scale_adaptive(predictor.run, scales))
    assert not np.allclose(plain, chosen)  # another size won somewhere, or the test shows nothing
    assert (infer.lesion_confidence(chosen) >= infer.lesion_confidence(plain)).all()

    def masks(name):
        return [cv2.imread(str(tmp_path / name / f"{n}.png"), cv2.IMREAD_GRAYSCALE) for n in range(3)]

    infer.predict(model, cache, samples, tmp_path / "plain", device="cpu", postprocess="none")
    infer.predict(model, cache, samples, tmp_path / "off", device="cpu", postprocess="none", scales=(1.0,))
    infer.predict(model, cache, samples, tmp_path / "tta", device="cpu", postprocess="none", tta=True, scales=scales)
    infer.predict(
        model,
        cache,
        samples,
        tmp_path / "one",
        device="cpu",
        postprocess="none",
        tta_outdir=tmp_path / "twin",
        scales=scales,
    )
    infer.predict(model, cache, samples, tmp_path / "scaled", device="cpu", postprocess="none", scales=scales)
    assert all(np.array_equal(x, y) for x, y in zip(masks("off"), masks("plain")))
    assert all(np.array_equal(x, y) for x, y in zip(masks("one"), masks("scaled")))
    assert all(np.array_equal(x, y) for x, y in zip(masks("twin"), masks("tta")))
    assert not all(np.array_equal(x, y) for x, y in zip(masks("scaled"), masks("plain")))

    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    for name, factors in (("seg_plain", (1.0,)), ("seg_scaled", scales)):
        result = segmenter.segment_images(model, [image], tmp_path / name, device="cpu", scales=factors)
        assert result.written and not result.failed
    # ONNX Runtime: the model.pt exported on the fly at any size gives the same mask; a graph exported at
    # one size is refused with --scales.
    segmenter.segment_images(model, [image], tmp_path / "onnx", backend="onnxruntime", scales=scales)
    seg_plain, seg_scaled, onnx = (
        cv2.imread(str(tmp_path / d / "scan_mask.png")) for d in ("seg_plain", "seg_scaled", "onnx")
    )
    assert not np.array_equal(seg_plain, seg_scaled)  # the selection changed this mask, so the next line tells
    assert np.array_equal(seg_scaled, onnx)
    export.export(model, tmp_path / "fixed.onnx")
    with pytest.raises(SonosegError, match="exported at one input size; --scales needs"):
        segmenter.segment_images(
            tmp_path / "fixed.onnx", [image], tmp_path / "onnx2", backend="onnxruntime", scales=scales
        )


def test_no_lesion_at_any_size_keeps_the_input_size_and_repeated_sizes_are_tried_once():
    asked = []

    def faint(batch):  # nothing above 0.5 anywhere: no lesion at any size
        asked.append(batch.shape[-1])
        return np.full((len(batch), batch.shape[-1], batch.shape[-1]), 0.3 + 0.01 * batch.shape[-1] / 32, np.float32)

    run = infer.scale_adaptive(faint, (1.0, 1.5, 0.75, 0.76, 0.5))  # 1.5 adds nothing; 0.75 and 0.76: 24 px
    batch = np.zeros((2, 3, 32, 32), np.float32)
    np.testing.assert_array_equal(run(batch), faint(batch))
    assert sorted(asked[:-1]) == [16, 24, 32]


def test_the_post_processing_choice_sees_the_probabilities_the_test_will(tmp_path):
    from sonoseg.data import preprocess
    from sonoseg.training import postprocess

    samples = write_samples(tmp_path, 3)
    cache = tmp_path / "val.npz"
    preprocess.build_cache(samples, 64, cache, "bilinear", "keep")
    model = write_model(tmp_path / "a.pt", "unet", seed=0)
    plain = postprocess.validation_dice([model], cache, samples, "area", "cpu")
    scaled = postprocess.validation_dice([model], cache, samples, "area", "cpu", scales=(1.0, 0.75, 0.5))
    again = postprocess.validation_dice([model], cache, samples, "area", "cpu", scales=(1.0,))
    pd_equal = plain[["keep_one", "none"]].to_numpy()
    np.testing.assert_array_equal(again[["keep_one", "none"]].to_numpy(), pd_equal)
    assert not np.array_equal(scaled[["keep_one", "none"]].to_numpy(), pd_equal)


def two_fold_run_with_choice(tmp_path, choice: dict):
    """A run folder as a study writes it (U-net models in folds 0 and 1, one seed each), each fold's
    postprocess.json recording ``choice``, and one scan to segment: (run folder, image)."""
    run = tmp_path / "runs" / "unet"
    for fold in (0, 1):
        (run / f"fold{fold}" / "seed0").mkdir(parents=True)
        write_model(run / f"fold{fold}" / "seed0" / "model.pt", "unet", weights_seed=fold)
        (run / f"fold{fold}" / "postprocess.json").write_text(json.dumps(choice))
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    return run, image


def test_segment_applies_the_scales_recorded_with_a_studys_models(tmp_path):
    """choose-postprocess records the scales it used beside the fold's models; segment on the run folder
    applies them by default (as the study predicted), an explicit --scales overrides them, and folds
    that disagree are named."""
    choice = {"chosen": "keep_one", "validation_dice": {"keep_one": 0.5, "none": 0.4}, "validation_images": 2}
    run, image = two_fold_run_with_choice(tmp_path, {**choice, "scales": [1.0, 0.75, 0.5]})
    members = modelio.ensemble_members(run)
    assert modelio.recorded_choice(members).scales() == ((1.0, 0.75, 0.5), None, None)

    def mask(name, **options):
        segmenter.segment_images(run, [image], tmp_path / name, device="cpu", **options)
        return cv2.imread(str(tmp_path / name / "scan_mask.png"), cv2.IMREAD_GRAYSCALE)

    recorded, explicit, off = mask("recorded"), mask("explicit", scales=(1.0, 0.75, 0.5)), mask("off", scales=(1.0,))
    assert np.array_equal(recorded, explicit)
    assert not np.array_equal(recorded, off)  # the scales changed something, or the test shows nothing
    (run / "fold1" / "postprocess.json").write_text(json.dumps(choice))  # recorded before scales: (1.0,)
    with pytest.raises(
        SonosegError,
        match=r"fold1/postprocess.json: scales \[1.0\] \(shrink_above None, shrink_found_above None\) differ "
        r"from .*fold0",
    ):
        modelio.recorded_choice(members).scales()
    # A second trigger recorded without the rule it belongs to is refused by name.
    (run / "fold1" / "postprocess.json").write_text(json.dumps({**choice, "shrink_found_above": 1.3}))
    with pytest.raises(SonosegError, match=r"fold1/postprocess.json: records shrink_found_above 1.3 without"):
        modelio.recorded_choice(members).scales()


def test_segment_reads_each_folds_recorded_choice_once_and_only_when_it_needs_it(tmp_path, monkeypatch):
    """segment on a run folder takes both its scales and its post-processing from the folds'
    postprocess.json, each file read once; told both, it reads none, so a broken record does not stop
    it, while one it needs is named."""
    choice = {"validation_dice": {"keep_one": 0.5, "none": 0.4}, "validation_images": 2, "scales": [1.0]}
    run, image = two_fold_run_with_choice(tmp_path, choice)
    read = []
    reader = modelio._read_choice
    monkeypatch.setattr(modelio, "_read_choice", lambda path: read.append(path) or reader(path))
    assert segmenter.segment_images(run, [image], tmp_path / "recorded", device="cpu").written
    assert sorted(read) == sorted(run / f"fold{f}" / "postprocess.json" for f in (0, 1))
    (run / "fold1" / "postprocess.json").write_text("{")
    read.clear()
    told = segmenter.segment_images(
        run, [image], tmp_path / "told", device="cpu", scales=(1.0,), postprocess="keep_one"
    )
    assert told.written and not read
    with pytest.raises(SonosegError, match=r"fold1/postprocess.json: not a post-processing choice"):
        segmenter.segment_images(run, [image], tmp_path / "broken", device="cpu", scales=(1.0,))


def test_segment_applies_the_post_processing_its_run_folder_records(tmp_path, monkeypatch):
    """A run folder whose folds chose no post-processing on validation is segmented without keeping
    one component (keep_one, the default, would hide a choice that was read and not applied); a file
    given twice to the choice counts twice."""
    choice = {"validation_dice": {"keep_one": 0.4, "none": 0.5}, "validation_images": 2, "scales": [1.0]}
    run, image = two_fold_run_with_choice(tmp_path, choice)
    applied = []
    writer = segmenter.write_mask
    monkeypatch.setattr(segmenter, "write_mask", lambda *args: applied.append(args[-1]) or writer(*args))
    assert segmenter.segment_images(run, [image], tmp_path / "recorded", device="cpu").written
    assert applied == ["none"]
    segmenter.segment_images(run, [image], tmp_path / "told", device="cpu", postprocess="keep_one")
    assert applied == ["none", "keep_one"]
    # fold0 says none by 0.1 over 2 images, a third file keep_one by 0.15 over 2: given twice, fold0 wins.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"validation_dice": {"keep_one": 0.55, "none": 0.4}, "validation_images": 2}))
    fold0 = run / "fold0" / "postprocess.json"
    assert modelio.chosen_postprocess([fold0, other]) == "keep_one"
    assert modelio.chosen_postprocess([fold0, fold0, other]) == "none"


def sized_disc(level_by_size: dict[int, float]):
    """A made network: per image, a centred disc whose radius is the mean of its first channel times
    its side (so its area scales with the input size, as a lesion's does), at a probability that depends
    on the input size, 0.1 elsewhere; it records (size, number of images) of each call."""

    def run(batch: np.ndarray) -> np.ndarray:
        n, _, size, _ = batch.shape
        run.asked.append((size, n))
        yy, xx = np.mgrid[:size, :size]
        centre = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2
        return np.stack(
            [np.where(centre <= (image[0].mean() * size) ** 2, level_by_size[size], 0.1) for image in batch]
        ).astype(np.float32)

    run.asked = []
    return run


def test_the_size_aware_rule_tries_smaller_sizes_only_for_lesions_larger_than_the_limit():
    """Image 0's lesion (radius 0.4 of the side: ~515 px at 32 px) is over the limit and takes its most
    confident size (16 px); image 1's (radius 0.15: ~72 px) is not, and keeps the input size although
    16 px is more confident. Only image 0 is run shrunk. Where the input size is the most confident,
    image 0 keeps it too."""
    batch = np.zeros((2, 3, 32, 32), np.float32)
    batch[0, 0], batch[1, 0] = 0.4, 0.15  # uniform: shrinking by area keeps the radius a fraction of the side
    network = sized_disc({32: 0.6, 24: 0.7, 16: 0.9})
    out = infer.scale_adaptive(network, (1.0, 0.75, 0.5), area_limit=200)(batch)
    assert network.asked == [(32, 2), (24, 1), (16, 1)]
    at_16 = network(batch[:1, :, :16, :16])  # image 0 shrunk to 16 px
    expected_0 = torch.nn.functional.interpolate(
        torch.from_numpy(at_16)[:, None], size=(32, 32), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(out[0], expected_0, atol=1e-6)  # 16 px: the most confident size
    np.testing.assert_array_equal(out[1], network(batch[1:])[0])  # the input size, untouched
    # The always-rule (no limit) shrinks image 1 too.
    assert not np.array_equal(infer.scale_adaptive(network, (1.0, 0.75, 0.5))(batch)[1], out[1])
    # The input size the most confident: image 0 keeps it as well.
    confident_at_input = sized_disc({32: 0.95, 24: 0.7, 16: 0.9})
    out = infer.scale_adaptive(confident_at_input, (1.0, 0.75, 0.5), area_limit=200)(batch)
    np.testing.assert_array_equal(out, confident_at_input(batch))
    # No image over the limit: nothing is run shrunk.
    network.asked.clear()
    np.testing.assert_array_equal(
        infer.scale_adaptive(network, (1.0, 0.75, 0.5), area_limit=10_000)(batch), network(batch)
    )
    assert {size for size, _ in network.asked} == {32}


def found_disc(level_by_size: dict[int, float]):
    """A made network that finds more of a lesion when it is shown smaller: per image, a centred disc
    whose radius is the mean of its first channel times the side at 32 px and the mean of its second
    channel times the side at any smaller size, at a probability that depends on the input size, 0.1
    elsewhere; it records (size, number of images) of each call."""

    def run(batch: np.ndarray) -> np.ndarray:
        n, _, size, _ = batch.shape
        run.asked.append((size, n))
        yy, xx = np.mgrid[:size, :size]
        centre = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2
        radius = [image[0 if size == 32 else 1].mean() * size for image in batch]
        return np.stack([np.where(centre <= r**2, level_by_size[size], 0.1) for r in radius]).astype(np.float32)

    run.asked = []
    return run


def test_the_second_trigger_keeps_a_smaller_size_that_finds_a_lesion_far_over_the_limit():
    """Both lesions are under the limit (200 px) at 32 px (radius 0.15 of the side: ~72 px). Shrunk, the
    network finds image 0's whole (radius 0.4: ~515 px at 32 px, over 2 x 200) and image 1's half as
    large again (radius 0.3: ~290 px, over the limit but not over 2 x it), both most confident at 16 px.
    The size-aware rule alone keeps both at the input size; its second trigger (found_above 2) tries
    every image smaller and keeps 16 px for image 0 only."""
    batch = np.zeros((2, 3, 32, 32), np.float32)
    batch[:, 0] = 0.15
    batch[0, 1], batch[1, 1] = 0.4, 0.3
    network = found_disc({32: 0.6, 24: 0.7, 16: 0.9})
    at_input = network(batch)
    np.testing.assert_array_equal(infer.scale_adaptive(network, (1.0, 0.75, 0.5), area_limit=200)(batch), at_input)
    network.asked.clear()
    out = infer.scale_adaptive(network, (1.0, 0.75, 0.5), area_limit=200, found_above=2.0)(batch)
    assert network.asked == [(32, 2), (24, 2), (16, 2)]  # every image tried at every size
    expected_0 = torch.nn.functional.interpolate(
        torch.from_numpy(network(batch[:1, :, :16, :16]))[:, None], size=(32, 32), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    assert (expected_0 > 0.5).sum() > 400 and 200 < (
        infer.scale_adaptive(network, (1.0, 0.5))(batch)[1] > 0.5
    ).sum() < 400
    np.testing.assert_allclose(out[0], expected_0, atol=1e-6)
    np.testing.assert_array_equal(out[1], at_input[1])
    # An image over the limit at the input size keeps its most confident size with the trigger on, as without.
    over = batch.copy()
    over[1, 0] = 0.4  # ~515 px at 32 px
    network.asked.clear()
    both = infer.scale_adaptive(network, (1.0, 0.75, 0.5), area_limit=200, found_above=2.0)(over)
    np.testing.assert_array_equal(both[1], infer.scale_adaptive(network, (1.0, 0.75, 0.5), area_limit=200)(over)[1])
    assert not np.array_equal(both[1], network(over)[1])  # a smaller size, not the input size
    # Without the limit there is no trigger to add: every image keeps its most confident size, as before.
    np.testing.assert_array_equal(
        infer.scale_adaptive(network, (1.0, 0.75, 0.5), found_above=2.0)(batch),
        infer.scale_adaptive(network, (1.0, 0.75, 0.5))(batch),
    )
    with pytest.raises(
        SonosegError, match=r"shrink_found_above \(--shrink-found-above\) must be a factor of at least 1, got 0.5"
    ):
        infer.scale_adaptive(network, (1.0, 0.75), area_limit=200, found_above=0.5)


def test_the_limit_is_a_quantile_of_the_training_lesions_the_model_file_records(tmp_path):
    from sonoseg.data import preprocess

    recorded = write_model(tmp_path / "new.pt", "unet", lesion_areas=[10, 20, 30, 40, 50])
    older = write_model(tmp_path / "old.pt", "unet")
    predictor = infer.torch_predictor(recorded, "cpu")
    assert predictor.lesion_areas == (10, 20, 30, 40, 50)
    scales = (1.0, 0.75)
    assert infer.area_limit(predictor, scales, 1.0, "m") == 50 and infer.area_limit(predictor, scales, 0.5, "m") == 30
    assert infer.area_limit(predictor, scales, None, "m") is None
    with pytest.raises(SonosegError, match=r"shrink_above must be a quantile in \(0, 1\], got 1.5"):
        infer.area_limit(predictor, scales, 1.5, "m")
    # Asked for another input size, the areas scale with it (64 px trained, 32 px asked: a quarter).
    assert infer.torch_predictor(recorded, "cpu", size=32).lesion_areas == (2.5, 5.0, 7.5, 10.0, 12.5)
    # An ensemble pools its members' areas; one member without them leaves the ensemble without.
    both = infer.model_predictor([recorded, write_model(tmp_path / "b.pt", "unet", lesion_areas=[60])], "cpu")
    assert both.lesion_areas == (10, 20, 30, 40, 50, 60)
    assert infer.model_predictor([recorded, older], "cpu").lesion_areas is None
    # A model file from before the areas were recorded is refused by name, through predict too.
    samples = write_samples(tmp_path, 3)
    cache = tmp_path / "keep.npz"
    preprocess.build_cache(samples, 64, cache, "bilinear", "keep")
    with pytest.raises(SonosegError, match=r"old.pt: the model file records no training lesion areas"):
        infer.predict(older, cache, samples, tmp_path / "out", device="cpu", scales=(1.0, 0.75), shrink_above=1.0)
    # ... but not when the scales ask for nothing smaller: the rule has nothing to decide.
    assert infer.predict(older, cache, samples, tmp_path / "out", device="cpu", scales=(1.0,), shrink_above=1.0) == 3


def test_segment_applies_the_recorded_size_aware_rule_and_the_choice_records_it(tmp_path):
    """choose-postprocess (the CLI) records shrink_above beside the scales; segment on the run folder
    applies both by default, as an explicit --scales with --shrink-above does; the limit changes the
    masks against the always-rule."""
    from sonoseg.data import preprocess
    from sonoseg.study.cli import main

    run = tmp_path / "runs" / "unet"
    (run / "fold0" / "seed0").mkdir(parents=True)
    model = write_model(run / "fold0" / "seed0" / "model.pt", "unet", lesion_areas=[1] * 5)
    samples = write_samples(tmp_path, 3)
    samples.assign(split="val")[["sample_id", "split"]].to_csv(tmp_path / "split.csv", index=False)
    samples.assign(status="included").to_csv(tmp_path / "manifest.csv", index=False)
    cache = tmp_path / "val.npz"
    preprocess.build_cache(samples, 64, cache, "bilinear", "keep")
    choice = run / "fold0" / "postprocess.json"
    assert (
        main(
            [
                "choose-postprocess",
                "--model",
                str(model),
                "--data",
                str(cache),
                "--manifest",
                str(tmp_path / "manifest.csv"),
                "--split",
                str(tmp_path / "split.csv"),
                "--device",
                "cpu",
                "--scales",
                "1.0",
                "0.75",
                "0.5",
                "--shrink-above",
                "1.0",
                "--shrink-found-above",
                "1.3",
                "--out",
                str(choice),
            ]
        )
        == 0
    )
    recorded = json.loads(choice.read_text())
    assert recorded["scales"] == [1.0, 0.75, 0.5] and recorded["shrink_above"] == 1.0
    assert recorded["shrink_found_above"] == 1.3
    assert recorded["folds"] == 1  # a split without folds: the run has one
    assert modelio.recorded_choice(modelio.ensemble_members(run)).scales() == ((1.0, 0.75, 0.5), 1.0, 1.3)
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])

    def mask(name, **options):
        segmenter.segment_images(run, [image], tmp_path / name, device="cpu", **options)
        return cv2.imread(str(tmp_path / name / "scan_mask.png"), cv2.IMREAD_GRAYSCALE)

    scales = (1.0, 0.75, 0.5)
    by_default = mask("recorded")
    assert np.array_equal(by_default, mask("explicit", scales=scales, shrink_above=1.0, shrink_found_above=1.3))
    # Every lesion is over the 1-px limit, so every image is tried smaller, as the always-rule does.
    assert np.array_equal(by_default, mask("always", scales=scales))
    assert not np.array_equal(by_default, mask("off", scales=(1.0,)))  # a smaller size won, or this shows nothing


def test_the_flip_twin_shares_the_plain_passes_and_gives_the_masks_each_variant_gives_alone(tmp_path):
    """predict with its flip-averaged twin and the second trigger (every image at every size): each
    size's plain pass is made once for both variants (3 sizes: 6 passes, not 9), and the masks equal
    those of the plain and the flip-averaged predictions made apart."""
    from sonoseg.data import preprocess

    samples = write_samples(tmp_path, 3)
    cache = tmp_path / "keep.npz"
    preprocess.build_cache(samples, 64, cache, "bilinear", "keep")
    model = write_model(tmp_path / "a.pt", "unet", seed=0, lesion_areas=[1] * 5)
    predictor = infer.torch_predictor(model, "cpu")
    network, calls = predictor.run, []

    def counted(batch):
        calls.append(batch.shape[-1])
        return network(batch)

    predictor.run = counted
    rule = {"scales": (1.0, 0.75, 0.5), "shrink_above": 1.0, "shrink_found_above": 1.3, "postprocess": "none"}

    def predict(name, **options):
        calls.clear()
        infer.predict(model, cache, samples, tmp_path / name, device="cpu", predictor=predictor, **rule, **options)
        return sorted(calls)

    assert predict("one", tta_outdir=tmp_path / "twin") == [32, 32, 48, 48, 64, 64]
    assert predict("plain") == [32, 48, 64] and predict("tta", tta=True) == [32, 32, 48, 48, 64, 64]

    def masks(name):
        return [cv2.imread(str(tmp_path / name / f"{n}.png"), cv2.IMREAD_GRAYSCALE) for n in range(3)]

    assert all(np.array_equal(x, y) for x, y in zip(masks("one"), masks("plain")))
    assert all(np.array_equal(x, y) for x, y in zip(masks("twin"), masks("tta")))


def test_the_commands_refuse_a_size_aware_rule_without_scales(tmp_path, capsys):
    from sonoseg.study.cli import main

    model = write_model(tmp_path / "m.pt", "unet", lesion_areas=[50])
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    args = ["segment", str(image), "--model", str(model), "--outdir", str(tmp_path / "x"), "--device", "cpu"]
    assert main(args + ["--shrink-above", "1"]) == 2
    assert "--shrink-above is a rule of --scales" in capsys.readouterr().err
    assert main(args + ["--scales", "1", "--shrink-above", "1"]) == 2  # nothing below 1: nothing to decide
    assert "--shrink-above is a rule of --scales" in capsys.readouterr().err
    # predict and choose-postprocess refuse it alike, before reading anything.
    for command in (
        ["predict", "--manifest", "m.csv", "--split", "s.csv", "--outdir", "o"],
        [
            "choose-postprocess",
            "--model",
            "m.pt",
            "--data",
            "v.npz",
            "--manifest",
            "m.csv",
            "--split",
            "s.csv",
            "--out",
            "c.json",
        ],
    ):
        assert main(command + ["--shrink-above", "1"]) == 2
        assert "--shrink-above is a rule of --scales" in capsys.readouterr().err
    # The second trigger is a trigger of that rule: refused without --shrink-above.
    assert main(args + ["--scales", "1", "0.75", "--shrink-found-above", "1.3"]) == 2
    assert "--shrink-found-above is a trigger of the size-aware rule" in capsys.readouterr().err
    assert main(args + ["--scales", "1", "0.75", "--shrink-above", "1"]) == 0
