"""Paired statistics of per-image metrics: is one network's Dice really different from another's
on the same test images? A percentile bootstrap of the mean paired difference and the Wilcoxon
signed-rank test, both on the per-image differences (images are the paired unit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from sonoseg.errors import SonosegError


def bootstrap_mean_ci(
    differences: np.ndarray, seed: int, resamples: int = 10_000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of paired differences."""
    differences = np.asarray(differences, dtype=float)
    if differences.size == 0:
        raise SonosegError("bootstrap: no paired values")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, differences.size, size=(resamples, differences.size))
    means = differences[picks].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is zero (no evidence of any)."""
    differences = np.asarray(differences, dtype=float)
    if differences.size == 0 or np.allclose(differences, 0):
        return 1.0
    return float(scipy_stats.wilcoxon(differences, zero_method="wilcox").pvalue)


def paired_comparison(
    candidate: pd.Series, reference: pd.Series, seed: int, resamples: int = 10_000, confidence: float = 0.95
) -> dict:
    """Candidate minus reference, paired by index (sample id); only images both have are compared."""
    both = pd.concat({"candidate": candidate, "reference": reference}, axis=1, join="inner").dropna()
    if both.empty:
        raise SonosegError("paired comparison: the two methods share no evaluated image")
    differences = (both["candidate"] - both["reference"]).to_numpy()
    low, high = bootstrap_mean_ci(differences, seed, resamples, confidence)
    return {
        "images": len(differences),
        "mean_difference": float(differences.mean()),
        "median_difference": float(np.median(differences)),
        "ci_low": low,
        "ci_high": high,
        "wilcoxon_p": wilcoxon_p(differences),
    }


def compare_to_reference(
    per_image: pd.DataFrame, reference: str, metric: str = "dice", seed: int = 0, resamples: int = 10_000
) -> pd.DataFrame:
    """One row per method against the reference method; per_image has columns method, sample_id and the metric
    (averaged over seeds first, so every image counts once)."""
    if reference not in set(per_image["method"]):
        raise SonosegError(f"paired comparison: reference method {reference!r} has no per-image metrics")
    by_image = per_image.groupby(["method", "sample_id"], sort=False)[metric].mean()
    rows = []
    for method in per_image["method"].drop_duplicates():
        if method == reference:
            continue
        result = paired_comparison(by_image.loc[method], by_image.loc[reference], seed, resamples)
        rows.append({"method": method, "reference": reference, "metric": metric, **result})
    return pd.DataFrame(
        rows,
        columns=[
            "method",
            "reference",
            "metric",
            "images",
            "mean_difference",
            "median_difference",
            "ci_low",
            "ci_high",
            "wilcoxon_p",
        ],
    )
