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


def test_one_predict_process_segments_several_test_sets_as_separate_ones_would(tmp_path, capsys):
    """predict's per-test-set options (one value each, in order): the models loaded once for the study's
    own test images and each external set, the same masks as one process per set."""
    from sonoseg.study import cli

    _, _, cache, samples = bilinear_test_cache(tmp_path)
    model = write_model(tmp_path / "m.pt", "lighter_unet_c1", interpolation="bilinear")
    sets, caches = [], []
    arrays = dict(np.load(cache))
    for name, ids in (("own", ["a", "b"]), ("external", ["c"])):
        manifest, split = tmp_path / f"{name}_manifest.csv", tmp_path / f"{name}_split.csv"
        keep = np.isin(arrays["sample_ids"], ids)
        caches.append(tmp_path / f"{name}.npz")
        with open(caches[-1], "wb") as handle:
            np.savez(handle, **{key: value[keep] for key, value in arrays.items()})
        chosen = samples[samples["sample_id"].isin(ids)]
        chosen.assign(patient=chosen["sample_id"], group=chosen["sample_id"], view=1, status="included").to_csv(
            manifest, index=False
        )
        pd.DataFrame({"sample_id": ids, "split": "test"}).to_csv(split, index=False)
        sets.append((manifest, split))
    common = ["predict", "--model", str(model), "--device", "cpu"]
    together = ["--data", *(str(c) for c in caches), "--manifest", *(str(m) for m, _ in sets)]
    together += ["--split", *(str(s) for _, s in sets), "--outdir", str(tmp_path / "t0"), str(tmp_path / "t1")]
    together += ["--tta-outdir", str(tmp_path / "f0"), str(tmp_path / "f1")]
    assert cli.main(common + together) == 0
    for index, (manifest, split) in enumerate(sets):
        alone = ["--data", str(caches[index]), "--manifest", str(manifest), "--split", str(split)]
        alone += ["--outdir", str(tmp_path / f"a{index}"), "--tta-outdir", str(tmp_path / f"g{index}")]
        assert cli.main(common + alone) == 0
        for together_dir, alone_dir in ((f"t{index}", f"a{index}"), (f"f{index}", f"g{index}")):
            written = sorted(p.name for p in (tmp_path / together_dir).iterdir())
            assert written == sorted(p.name for p in (tmp_path / alone_dir).iterdir()) and written
            for name in written:
                assert (tmp_path / together_dir / name).read_bytes() == (tmp_path / alone_dir / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "t0").iterdir()) == ["a.png", "b.png"]
    # One value too few for a per-set option: a clear error, nothing written.
    short = common + [
        "--data",
        str(caches[0]),
        "--manifest",
        str(sets[0][0]),
        str(sets[1][0]),
        "--split",
        str(sets[0][1]),
    ]
    capsys.readouterr()
    assert cli.main(short + ["--outdir", str(tmp_path / "x")]) == 2
    assert "--manifest gives 2 values for 1 test sets (--outdir)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
