import hashlib

import numpy as np
import pandas as pd

from sonoseg import synth


def test_same_seed_same_bytes():
    a_img, a_mask = synth.render(7, 3, 1)
    b_img, b_mask = synth.render(7, 3, 1)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    c_img, _ = synth.render(8, 3, 1)
    assert c_img.tobytes() != a_img.tobytes()


def test_images_look_like_the_papers():
    for patient in range(6):
        views = [synth.render(0, patient, v) for v in (1, 2)]
        for image, mask in views:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[:2] in synth.ORIGINAL_SIZES
            assert set(np.unique(mask)) <= {0, 255} and mask.any()
            # The lesion is hypoechoic: darker inside than in a ring around it.
            lesion = mask > 0
            assert image[lesion].mean() < image[~lesion & (image.sum(axis=2) > 0)].mean()
            # Calipers: light-blue pixels (blue > red) exist and lie outside the mask.
            blue = (image[:, :, 2].astype(int) - image[:, :, 0] > 60)
            assert blue.any()
        # Both views of a patient share the image size (one scanner setting).
        assert views[0][0].shape == views[1][0].shape


def test_write_dataset_is_a_folder_dataset(tmp_path):
    synth.write_dataset(tmp_path / "d", patients=3, seed=1, size=(96, 128))
    table = pd.read_csv(tmp_path / "d" / "patients.csv")
    assert len(table) == 6 and table["patient"].nunique() == 3
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == sorted(table["image"])
    digest = lambda d: hashlib.sha256(b"".join(p.read_bytes() for p in sorted((d / "images").iterdir()))).hexdigest()
    synth.write_dataset(tmp_path / "e", patients=3, seed=1, size=(96, 128))
    assert digest(tmp_path / "d") == digest(tmp_path / "e")
