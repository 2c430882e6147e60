"""Models that travel: a run folder served as an ensemble, and horizontal-flip test-time augmentation."""

import cv2
import numpy as np
import pytest
from conftest import sample_images, write_model

from sonoseg.errors import SonosegError
from sonoseg.serving import infer


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as the workflow writes it: two folds, one seed each, two different models."""
    folder = tmp_path / "runs" / "unet"
    for fold, seed in ((0, 0), (1, 5)):
        path = folder / f"fold{fold}" / "seed0" / "model.pt"
        path.parent.mkdir(parents=True)
        write_model(path, "unet", seed=seed)
    return folder


def test_the_ensemble_averages_its_members_probabilities(run_folder):
    members = infer.ensemble_members(run_folder)
    assert [m.relative_to(run_folder).as_posix() for m in members] == ["fold0/seed0/model.pt", "fold1/seed0/model.pt"]
    single = [infer.torch_predictor(m, "cpu") for m in members]
    both = infer.ensemble(single, members)
    batch = single[0].prepare(sample_images(1)[0])
    first, second = single[0].run(batch), single[1].run(batch)
    assert not np.allclose(first, second)  # two different members, or the test shows nothing
    np.testing.assert_allclose(both.run(batch), (first + second) / 2, rtol=0, atol=1e-7)


def test_segment_takes_a_run_folder(run_folder, tmp_path):
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    result = infer.segment_images(run_folder, [image], tmp_path / "masks", device="cpu", tta=True)
    assert result.written == [tmp_path / "masks" / "scan_mask.png"] and not result.failed


def test_a_run_folder_with_a_missing_or_corrupt_member_is_refused_by_name(run_folder, tmp_path):
    (run_folder / "fold1" / "seed0" / "model.pt").unlink()
    with pytest.raises(SonosegError, match=r"fold1/seed0: this member of the run folder .* has no model.pt"):
        infer.ensemble_members(run_folder)
    (run_folder / "fold1" / "seed0" / "model.pt").write_bytes(b"not a model")
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), sample_images(1)[0])
    with pytest.raises(SonosegError, match=r"fold1/seed0/model.pt"):
        infer.segment_images(run_folder, [image], tmp_path / "masks", device="cpu")


def test_members_that_see_different_inputs_are_refused(tmp_path):
    folder = tmp_path / "runs" / "unet"
    for fold, interpolation in ((0, "bilinear"), (1, "area")):
        path = folder / f"fold{fold}" / "seed0" / "model.pt"
        path.parent.mkdir(parents=True)
        write_model(path, "unet", interpolation=interpolation)
    members = infer.ensemble_members(folder)
    with pytest.raises(SonosegError, match="fold1/seed0/model.pt: input .* differs"):
        infer.ensemble([infer.torch_predictor(m, "cpu") for m in members], members)


def test_flip_averaging_flips_back_exactly(run_folder):
    predictor = infer.torch_predictor(infer.ensemble_members(run_folder)[0], "cpu")
    batch = predictor.prepare(sample_images(1)[0])
    averaged = infer.flip_averaged(predictor.run)
    mirrored = np.ascontiguousarray(batch[..., ::-1])
    # TTA of the mirror image is the mirror of TTA: the flip is undone exactly, along the width only.
    np.testing.assert_array_equal(averaged(mirrored), averaged(batch)[..., ::-1])
    plain = predictor.run(batch)
    by_hand = (plain + predictor.run(mirrored)[..., ::-1]) / 2
    np.testing.assert_array_equal(averaged(batch), by_hand)
    assert not np.array_equal(averaged(batch), plain)


def test_only_a_run_folder_with_the_same_seeds_in_every_fold_is_an_ensemble(run_folder, tmp_path):
    with pytest.raises(SonosegError, match="not a run folder"):
        infer.ensemble_members(run_folder.parent)  # runs/: several runs would mix networks
    extra = run_folder / "fold0" / "seed1" / "model.pt"
    extra.parent.mkdir()
    write_model(extra, "unet", seed=2)
    with pytest.raises(SonosegError, match=r"fold1: seeds \['seed0'\] differ from fold0's \['seed0', 'seed1'\]"):
        infer.ensemble_members(run_folder)
