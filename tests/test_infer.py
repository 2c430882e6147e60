"""predict applies the model's input normalization exactly as segment and export do."""

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import SIZE, sample_images, write_model

from sonoseg.data.preprocess import IMAGENET_NORMALIZATION
from sonoseg.errors import SonosegError
from sonoseg.serving import infer


def bilinear_test_cache(tmp_path):
    """A test cache of sample_images() as one written before preprocess.interpolation (so: bilinear)."""
    images = sample_images()
    resized = np.stack([cv2.resize(im, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for im in images])
    cache = tmp_path / "test.npz"
    with open(cache, "wb") as handle:
        np.savez(
            handle, images=resized, masks=np.zeros(resized.shape[:3], np.uint8), sample_ids=np.array(["a", "b", "c"])
        )
    samples = pd.DataFrame(
        {
            "sample_id": ["a", "b", "c"],
            "height": [im.shape[0] for im in images],
            "width": [im.shape[1] for im in images],
        }
    )
    return images, resized, cache, samples


def test_predict_applies_the_stored_normalization(tmp_path):
    images, resized, cache, samples = bilinear_test_cache(tmp_path)
    masks = {}
    for label, normalization in (("imagenet", IMAGENET_NORMALIZATION), ("none", None)):
        model = write_model(tmp_path / f"{label}.pt", "lighter_unet_c1", normalization)
        infer.predict(model, cache, samples, tmp_path / label, device="cpu")
        run = infer.torch_predictor(model, "cpu").run
        probability = run(resized.transpose(0, 3, 1, 2).astype(np.float32) / 255)
        masks[label] = []
        for sample_id, image, prob in zip("abc", images, probability):
            written = cv2.imread(str(tmp_path / label / f"{sample_id}.png"), cv2.IMREAD_UNCHANGED) > 0
            assert np.array_equal(written, infer.probability_to_mask(prob, *image.shape[:2]))
            masks[label].append(written)
    assert all(0 < m.sum() < m.size for m in masks["imagenet"] + masks["none"])
    # Same weights, different normalization: the masks differ, so the stored normalization was used.
    assert any(not np.array_equal(a, b) for a, b in zip(masks["imagenet"], masks["none"]))


def test_predict_refuses_a_cache_resized_otherwise_than_the_training_data(tmp_path):
    _, _, cache, samples = bilinear_test_cache(tmp_path)
    model = write_model(tmp_path / "area.pt", "lighter_unet_c1", interpolation="area")
    with pytest.raises(SonosegError, match=r"test.npz was resized bilinear, but .*area.pt was trained"):
        infer.predict(model, cache, samples, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
