"""Paired statistics: the bootstrap CI and the Wilcoxon test on cases whose answer is known."""

import numpy as np
import pandas as pd
import pytest

from sonoseg import stats
from sonoseg.errors import SonosegError


def test_bootstrap_ci_covers_a_known_shift_and_excludes_zero():
    rng = np.random.default_rng(1)
    reference = pd.Series(rng.uniform(0.6, 0.9, 80), index=[f"s{i}" for i in range(80)])
    candidate = reference + 0.05 + rng.normal(0, 0.01, 80)
    result = stats.paired_comparison(candidate, reference, seed=0, resamples=4000)
    assert result["images"] == 80
    assert result["ci_low"] < 0.05 < result["ci_high"]
    assert result["ci_low"] > 0  # a real difference: the interval leaves 0 out
    assert result["wilcoxon_p"] < 1e-6
    # Reproducible by seed.
    assert stats.paired_comparison(candidate, reference, seed=0, resamples=4000) == result


def test_identical_inputs_show_no_difference():
    values = pd.Series([0.8, 0.7, 0.9, 0.75], index=list("abcd"))
    result = stats.paired_comparison(values, values.copy(), seed=3, resamples=500)
    assert result["mean_difference"] == 0 and result["ci_low"] == 0 and result["ci_high"] == 0
    assert result["wilcoxon_p"] == 1.0


def test_noise_without_shift_is_not_significant():
    rng = np.random.default_rng(7)
    reference = pd.Series(rng.uniform(0.5, 0.9, 60))
    candidate = reference + rng.normal(0, 0.02, 60) * rng.choice([-1, 1], 60)
    result = stats.paired_comparison(candidate, reference, seed=0, resamples=2000)
    assert result["ci_low"] < 0 < result["ci_high"]
    assert result["wilcoxon_p"] > 0.05


def test_pairs_by_sample_id_not_by_position():
    reference = pd.Series([0.1, 0.5, 0.9], index=["a", "b", "c"])
    candidate = pd.Series([0.9, 0.1, 0.5], index=["c", "a", "b"])  # same values, other order
    assert stats.paired_comparison(candidate, reference, seed=0, resamples=100)["mean_difference"] == 0


def test_compare_to_reference_rows_and_missing_reference():
    per_image = pd.DataFrame(
        {
            "method": ["unet"] * 3 + ["light"] * 3,
            "sample_id": list("abc") * 2,
            "dice": [0.9, 0.8, 0.7, 0.8, 0.7, 0.6],
        }
    )
    table = stats.compare_to_reference(per_image, "unet", resamples=200)
    assert table["method"].tolist() == ["light"]
    assert table.loc[0, "mean_difference"] == pytest.approx(-0.1)
    with pytest.raises(SonosegError, match="reference method 'fcn8s'"):
        stats.compare_to_reference(per_image, "fcn8s")


def test_no_shared_images_is_an_error():
    with pytest.raises(SonosegError, match="share no evaluated image"):
        stats.paired_comparison(pd.Series([0.5], index=["a"]), pd.Series([0.5], index=["b"]), seed=0)
