"""Paired statistics of per-image metrics: is one network's Dice really different from another's
on the same test images?

Everything here (``hierarchical_comparison``, ``compare_methods``, ``method_ci``, ``group_table``,
``format_cell``, ``sign_flip_p``, ``holm``, ``equivalence``) resamples patients, then runs (trainings:
fold and seed), as docs/statistics.md describes. (An older image-level bootstrap and Wilcoxon test,
which took a patient's views for independent evidence, are gone.)"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from sonoseg.errors import SonosegError

# ----------------------------------------------------------------------------- patient-level statistics
#
# The input of everything below is one long table, one row per (method, run, test image):
#   method     the network or baseline
#   run        a seed and/or fold identifier (compared as a string: seed 1 and "1" are one run)
#   sample_id  the test image
#   patient    the resampling unit: a patient's views (or, better, the split's duplicate group) move together
#   <metric>   the per-image value, "dice" by default
# docs/statistics.md states each procedure; the docstrings repeat what a caller needs.

LONG_COLUMNS = ("method", "run", "sample_id", "patient")
EXACT_SIGN_FLIP_MAX_PATIENTS = 16  # 2**16 = 65,536 sign patterns: enumerated, so the p-value is exact
_CHUNK = 1000  # bootstrap replicates per block: bounds memory at about 3 * _CHUNK * patients floats

COMPARISON_COLUMNS = [
    "method",
    "reference",
    "family",
    "patients",
    "images",
    "runs_candidate",
    "runs_reference",
    "runs_per_set",
    "mean_difference",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "significant",
    "permutations",
    "p_mc_error",
    "near_threshold",
]
# Sign flips (docs/statistics.md, "Precision of the p-values"): at least MIN_PERMUTATIONS, and enough
# that a Holm-adjusted p near alpha has a Monte Carlo standard error below P_TARGET_ERROR in its family.
MIN_PERMUTATIONS = 100_000
P_TARGET_ERROR = 0.002


def permutations_for(family_size: int, alpha: float = 0.05, target: float = P_TARGET_ERROR) -> int:
    """Sign flips for a family of ``family_size`` comparisons. A row whose Holm multiplier is k has an
    adjusted p of k * p_raw; near alpha, p_raw is about alpha / k, whose Monte Carlo standard error with N
    flips is sqrt(p_raw (1 - p_raw) / N), so the adjusted p's is at most sqrt(alpha k / N) <= target when
    N >= alpha k / target**2, for every k up to the family's size."""
    return max(MIN_PERMUTATIONS, math.ceil(alpha * max(1, family_size) / target**2))


def long_table(per_image: pd.DataFrame, metric: str = "dice", methods: Iterable[str] | None = None) -> pd.DataFrame:
    """The checked long table: the columns of LONG_COLUMNS as strings and the metric as float.

    Raises SonosegError naming the problem: a missing column, no row, a missing or non-numeric metric
    value, an image listed twice for one method and run, an image assigned to two patients, an empty
    patient, or rows of ``methods`` (every method when None) that are no one selection (_mixed_selection: the
    study's collected table as read). Every function below calls it; call it yourself to check a table once."""
    if not isinstance(per_image, pd.DataFrame):
        raise SonosegError(f"statistics: expected a per-image table (DataFrame), got {type(per_image).__name__}")
    missing = [c for c in (*LONG_COLUMNS, metric) if c not in per_image.columns]
    if missing:
        hint = ""
        if "run" in missing and "seed" in per_image.columns:
            hint = " (a table with a seed column: per_image.assign(run=per_image['seed'].astype(str)))"
        if "patient" in missing:
            hint += " (merge the manifest's patient, or its duplicate 'group', on sample_id)"
        raise SonosegError(
            f"statistics: the per-image table lacks column(s) {', '.join(map(repr, missing))}{hint}; "
            f"it has {', '.join(map(repr, per_image.columns))}"
        )
    if per_image.empty:
        raise SonosegError("statistics: the per-image table has no row")
    mixed = _mixed_selection(per_image, methods)
    if mixed:
        raise SonosegError(
            f"statistics: the per-image table is not one selection: {'; '.join(mixed)}; the statistics would pool "
            "them into one mean. Select one dataset's images with a lesion and compare the study's runs as the "
            "methods first, as docs/statistics.md (\"Data and unit\") shows: per_image[(per_image['dataset'] == "
            "'in-domain') & ~per_image['truth_empty']].drop(columns='method').rename(columns={'run': 'method', "
            "'training': 'run'}) (sonoseg.analysis.results.patient_table(per_image, runs) does it for runs of one "
            "dataset)"
        )
    table = per_image[[*LONG_COLUMNS, metric]].copy()
    for column in LONG_COLUMNS:
        if table[column].isna().any() or (table[column].astype(str).str.strip() == "").any():
            bad = table[table[column].isna() | (table[column].astype(str).str.strip() == "")]
            raise SonosegError(
                f"statistics: {len(bad)} row(s) have an empty {column!r} "
                f"(first: sample_id {bad['sample_id'].iloc[0]!r}, method {bad['method'].iloc[0]!r})"
            )
        table[column] = table[column].astype(str)
    values = pd.to_numeric(table[metric], errors="coerce")
    if values.isna().any():
        bad = table[values.isna()]
        raise SonosegError(
            f"statistics: {len(bad)} row(s) have no numeric {metric!r} (first: method {bad['method'].iloc[0]!r}, "
            f"run {bad['run'].iloc[0]!r}, sample_id {bad['sample_id'].iloc[0]!r}); drop the images the metric "
            f"does not apply to (e.g. no lesion) before the statistics"
        )
    table[metric] = values.astype(float)
    twice = table.duplicated(["method", "run", "sample_id"], keep=False)
    if twice.any():
        first = table[twice].iloc[0]
        raise SonosegError(
            f"statistics: {int(twice.sum())} rows repeat a (method, run, sample_id) "
            f"(first: {first['method']!r}, run {first['run']!r}, sample_id {first['sample_id']!r})"
        )
    patients_of = table.groupby("sample_id")["patient"].nunique()
    if (patients_of > 1).any():
        sample = patients_of[patients_of > 1].index[0]
        raise SonosegError(
            f"statistics: sample_id {sample!r} belongs to several patients "
            f"({', '.join(sorted(table.loc[table['sample_id'] == sample, 'patient'].unique()))})"
        )
    return table


def _mixed_selection(per_image: pd.DataFrame, methods: Iterable[str] | None) -> list[str]:
    """What makes the rows of ``methods`` (every method when None) no one selection, one line per method: rows of
    several datasets (a ``dataset`` column), or several runs under one training label (a ``training`` column: the
    study's collected table, whose ``run`` is a run of the sheet, a twin, an external test or a ladder step, all
    labelled fold/seed). The statistics would pool them into one mean, silently wrong."""
    rows = per_image if methods is None else per_image[per_image["method"].astype(str).isin({str(m) for m in methods})]
    found = []
    for name, of_method in rows.groupby(rows["method"].astype(str), sort=False):
        if "dataset" in of_method.columns and of_method["dataset"].nunique() > 1:
            datasets = ", ".join(sorted(map(str, of_method["dataset"].dropna().unique())))
            found.append(f"method {name!r} has rows of {of_method['dataset'].nunique()} datasets ({datasets})")
        if "training" in of_method.columns and (of_method.groupby("training")["run"].nunique() > 1).any():
            runs = list(dict.fromkeys(of_method["run"].astype(str)))
            shown = ", ".join(map(repr, runs[:5])) + (f", ... ({len(runs)} in all)" if len(runs) > 5 else "")
            found.append(f"method {name!r} has several runs under one training label, fold/seed ({shown})")
    return found


def _by_method(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The checked table split by method, in table order."""
    return dict(tuple(table.groupby("method", sort=False)))


def _method_rows(by_method: Mapping[str, pd.DataFrame], method: str, role: str) -> pd.DataFrame:
    if method not in by_method:
        known = ", ".join(map(repr, by_method))
        raise SonosegError(f"statistics: {role} method {method!r} has no per-image metrics (methods: {known})")
    return by_method[method]


def _run_sets(rows: pd.DataFrame, metric: str) -> list[tuple[tuple[str, ...], pd.Index, np.ndarray]]:
    """One method's values as image x run matrices, one per run set: the images evaluated by the same runs
    (every image when seeds are crossed with images; a fold's test images when runs are folds).
    Returns (run set, its images, their image x run values) per run set, in run-set order."""
    wide = rows.pivot(index="sample_id", columns="run", values=metric)
    values = wide.to_numpy()
    present = ~np.isnan(values)
    runs = np.asarray(wide.columns)
    patterns, which = np.unique(present, axis=0, return_inverse=True)
    which = np.ravel(which)
    sets = []
    for number, pattern in enumerate(patterns):
        chosen = which == number
        sets.append((tuple(runs[pattern]), wide.index[chosen], values[np.ix_(chosen, pattern)]))
    return sorted(sets, key=lambda item: item[0])


def _terms(
    by_method: Mapping[str, pd.DataFrame], metric: str, candidate: str, reference: str | None
) -> tuple[dict[tuple[str, ...], np.ndarray], np.ndarray, int, int, int]:
    """The bootstrap's inputs: per run set, a patient x run matrix of summed (candidate - reference) values
    over the patient's shared images (the reference enters with a minus sign; a run set both methods have
    is one matrix, so its runs are paired); images per patient; and the run counts.

    Returns (terms, images_per_patient, images, runs_candidate, runs_reference)."""
    methods = {"candidate": _method_rows(by_method, candidate, "candidate")}
    if reference is not None:
        methods["reference"] = _method_rows(by_method, reference, "reference")
    shared = set(methods["candidate"]["sample_id"])
    for rows in methods.values():
        shared &= set(rows["sample_id"])
    if not shared:
        raise SonosegError(
            f"statistics: {candidate!r} and {reference!r} share no evaluated image (sample_id), so nothing is paired"
        )
    rows = methods["candidate"]
    patient_of = rows[rows["sample_id"].isin(shared)].drop_duplicates("sample_id").set_index("sample_id")["patient"]
    patients = pd.Index(sorted(set(patient_of)))
    images_per_patient = np.bincount(patients.get_indexer(patient_of), minlength=len(patients))
    terms: dict[tuple[str, ...], np.ndarray] = {}
    runs = {}
    for role, rows in methods.items():
        rows = rows[rows["sample_id"].isin(shared)]
        runs[role] = rows["run"].nunique()
        sign = 1.0 if role == "candidate" else -1.0
        for key, images, values in _run_sets(rows, metric):
            sums = np.zeros((len(patients), len(key)))
            np.add.at(sums, patients.get_indexer(patient_of.loc[images]), values)
            terms[key] = terms.get(key, 0.0) + sign * sums
    return terms, images_per_patient, len(shared), runs["candidate"], runs.get("reference", 0)


def _counts(rng: np.random.Generator, rows: int, size: int) -> np.ndarray:
    """rows x size multiplicities of `size` draws with replacement from `size` items (one resample per row)."""
    picks = rng.integers(0, size, (rows, size)) + (np.arange(rows) * size)[:, None]
    return np.bincount(picks.ravel(), minlength=rows * size).reshape(rows, size).astype(float)


def _bootstrap(
    terms: Mapping[tuple[str, ...], np.ndarray], images_per_patient: np.ndarray, seed: int, resamples: int
) -> np.ndarray:
    """The hierarchical bootstrap replicates (see hierarchical_comparison). Patients and runs come from two
    streams of the seed, so every comparison over the same patients sees the same patient resamples."""
    if resamples < 1:
        raise SonosegError(f"statistics: resamples must be at least 1, got {resamples}")
    patient_stream, run_stream = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    count = len(images_per_patient)
    if count < MIN_PATIENTS_FOR_CI:  # one patient: resampling it gives the runs' spread, not a CI by patient
        return np.full(resamples, np.nan)
    keys = sorted(terms)
    replicates = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        rows = min(_CHUNK, resamples - start)
        patients = _counts(patient_stream, rows, count)  # rows x patients: how often each patient is drawn
        per_patient = np.zeros((rows, count))  # a patient's summed run-resampled difference over its images
        for key in keys:
            matrix = terms[key]
            if matrix.shape[1] == 1:
                per_patient += matrix[:, 0]
                continue
            weights = _counts(run_stream, rows, matrix.shape[1]) / matrix.shape[1]
            per_patient += weights @ matrix.T
        replicates[start : start + rows] = (patients * per_patient).sum(axis=1) / (patients @ images_per_patient)
    return replicates


# A CI by patient needs patients to resample: with one, every replicate draws it alone, and the interval
# would show only the trainings' spread (a one-image external set read "0.731 [0.706, 0.757]"). NaN then.
MIN_PATIENTS_FOR_CI = 2
NO_CI = f"[no CI: under {MIN_PATIENTS_FOR_CI} patients]"


def counted(number: int, noun: str) -> str:
    """ "1 patient", "2 patients": a count as a caption writes it (nouns that take an s)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def value_text(value: float, digits: int = 3, signed: bool = False) -> str:
    """A number at ``digits`` decimals (with its sign for a difference), or in two significant digits where the
    decimals would read 0 and lose its sign: a bound of -0.0002 is not "-0.000", which reads as excluding 0 (a
    Dice, never below 0, keeps its decimals: 0.000)."""
    sign = "+" if signed else ""
    if (signed or value < 0) and value != 0 and round(value, digits) == 0:
        return f"{value:{sign}.1e}"
    return f"{value:{sign}.{digits}f}"


def ci_text(low: float, high: float, digits: int = 3, signed: bool = False) -> str:
    """A CI as tables show it, "[low, high]" (with signs for a difference), or NO_CI where there is none."""
    if np.isnan(low) or np.isnan(high):
        return NO_CI
    return f"[{value_text(low, digits, signed)}, {value_text(high, digits, signed)}]"


def _percentile_ci(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise SonosegError(f"statistics: confidence must lie between 0 and 1, got {confidence}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def sign_flip_p(
    patient_differences: Sequence[float] | np.ndarray,
    seed: int = 0,
    permutations: int = MIN_PERMUTATIONS,
    exact_max: int = EXACT_SIGN_FLIP_MAX_PATIENTS,
) -> float:
    """Two-sided sign-flip permutation p-value of H0 "each patient's difference is symmetric about 0".

    Statistic: |sum over patients of the patient's difference| (the mean difference times a constant).
    Up to `exact_max` patients every one of the 2**n sign patterns is enumerated and
    p = #{patterns with |T| >= |T_observed|} / 2**n (exact; the identity pattern counts). Beyond, `permutations`
    random patterns (seeded) give p = (1 + #{|T| >= |T_observed|}) / (1 + permutations), never 0.
    Ties are counted with a tolerance of 1e-12. All differences 0 gives p = 1."""
    d = np.asarray(patient_differences, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise SonosegError("sign-flip test: no patient difference")
    if not np.isfinite(d).all():
        raise SonosegError("sign-flip test: a patient difference is not finite")
    observed = abs(d.sum()) - 1e-12
    if d.size <= exact_max:
        patterns = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
        return float((np.abs(patterns @ d) >= observed).mean())
    if permutations < 1:
        raise SonosegError(f"sign-flip test: permutations must be at least 1, got {permutations}")
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    extreme = 0
    for start in range(0, permutations, _CHUNK):
        rows = min(_CHUNK, permutations - start)
        signs = 1 - 2 * rng.integers(0, 2, (rows, d.size))
        extreme += int((np.abs(signs @ d) >= observed).sum())
    return (1 + extreme) / (1 + permutations)


def holm(p_values: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order: with the m p-values sorted ascending,
    adjusted_(i) = max over j <= i of min(1, (m - j + 1) * p_(j)). Reject H_(i) at level alpha when
    adjusted_(i) < alpha; this controls the family-wise error rate at alpha for any dependence."""
    p = np.asarray(list(p_values), dtype=float)
    if p.size == 0:
        return p
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise SonosegError(f"Holm correction: p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def _compare(
    by_method: Mapping[str, pd.DataFrame],
    metric: str,
    candidate: str,
    reference: str,
    seed: int,
    resamples: int,
    confidence: float,
    permutations: int,
    return_replicates: bool,
    return_patient_means: bool = False,
) -> dict:
    terms, images_per_patient, images, runs_candidate, runs_reference = _terms(by_method, metric, candidate, reference)
    per_patient = sum(matrix.mean(axis=1) for matrix in terms.values())  # summed over images, averaged over runs
    replicates = _bootstrap(terms, images_per_patient, seed, resamples)
    low, high = _percentile_ci(replicates, confidence)
    result = {
        "method": candidate,
        "reference": reference,
        "patients": len(images_per_patient),
        "images": images,
        "runs_candidate": runs_candidate,
        "runs_reference": runs_reference,
        # the most runs that evaluated one image (a fold's trainings): 1 means no training variance
        "runs_per_set": max(len(key) for key in terms),
        "mean_difference": float(per_patient.sum() / images),
        "ci_low": low,
        "ci_high": high,
        "p": sign_flip_p(per_patient, seed, permutations),
        # random sign flips behind p; 0 when every pattern was enumerated (an exact p)
        "permutations": 0 if len(per_patient) <= EXACT_SIGN_FLIP_MAX_PATIENTS else permutations,
    }
    if return_replicates:
        result["replicates"] = replicates
    if return_patient_means:  # each patient's mean difference over its images (runs averaged)
        result["patient_means"] = per_patient / images_per_patient
    return result


def hierarchical_comparison(
    per_image: pd.DataFrame,
    candidate: str,
    reference: str,
    metric: str = "dice",
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
    permutations: int = MIN_PERMUTATIONS,
    return_replicates: bool = False,
) -> dict:
    """Candidate minus reference on the test images both evaluated, patient-level and hierarchical.

    per_image: the long table (method, run, sample_id, patient, metric; see long_table), one selection of rows
    for the two methods (one dataset; the study's runs compared as methods: docs/statistics.md).

    Per image, the value of a method is the mean over the runs that evaluated it; the difference is
    candidate - reference. The point estimate is the mean of these differences over the images.

    Each bootstrap replicate (1) draws as many patients as there are, with replacement; a patient's images
    all come with it, as often as it is drawn; then (2) draws the runs with replacement: for each run set
    (the runs that evaluated an image: all runs when seeds are crossed with images, a fold's runs when runs
    are folds) as many runs as the set has, one draw shared by all images with that run set; and
    (3) computes the mean over the drawn images of (candidate's mean over its drawn runs - reference's mean
    over its drawn runs). When both methods have the same run set for an image (same seeds, or the same fold),
    they share one run draw, so the difference is taken within each run (paired by run). When the run sets
    differ (a deterministic baseline's single run against 3 seeds, or seeds 1-3 against seeds 1-2), each
    method's runs are drawn independently and each method is averaged over its own drawn runs: no pairing by
    run is assumed. The CI is the percentile interval of the replicates (numpy's linear interpolation).

    p is sign_flip_p over the patients' differences (sum over a patient's images of the run-averaged
    difference): exact up to 16 patients, Monte Carlo with `permutations` patterns beyond. It is conditional
    on the runs (it does not resample them); the CI is not.

    Returns a dict: method, reference, patients, images, runs_candidate, runs_reference, mean_difference,
    ci_low, ci_high, p (and replicates, the bootstrap values, when return_replicates). Deterministic given
    seed; patients and runs are drawn from separate streams of it, so every comparison over the same
    patients gets the same patient resamples."""
    by_method = _by_method(long_table(per_image, metric, (candidate, reference)))
    return _compare(
        by_method, metric, candidate, reference, seed, resamples, confidence, permutations, return_replicates
    )


def tost_paired(differences: Sequence[float], margin: float, alpha: float = 0.05) -> dict:
    """Schuirmann's two one-sided tests (TOST) of equivalence on paired differences, t-based: H0 "the mean
    difference is <= -margin or >= +margin". p_lower tests mean > -margin, p_upper mean < +margin, each
    one-sided with n - 1 degrees of freedom; p = max(p_lower, p_upper), and equivalence is shown at level
    alpha when p < alpha — the same as the (1 - 2 alpha) t-interval lying inside (-margin, +margin).

    Returns a dict: n, dof, mean, sd, t_lower, t_upper, p_lower, p_upper, p, ci_low, ci_high (the
    1 - 2 alpha interval), margin, equivalent."""

    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size < 2:
        raise SonosegError(f"equivalence test: at least 2 paired differences are needed, got {d.size}")
    if not np.isfinite(d).all():
        raise SonosegError("equivalence test: a paired difference is not finite")
    if not margin > 0:
        raise SonosegError(f"equivalence test: the margin must be positive, got {margin}")
    if not 0 < alpha < 0.5:
        raise SonosegError(f"equivalence test: alpha must lie between 0 and 0.5, got {alpha}")
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    if se == 0:  # every difference equal: inside the margin or not, with certainty
        inside = -margin < mean < margin
        p_lower = p_upper = 0.0 if inside else 1.0
        t_lower = t_upper = float("nan")
    else:
        t_lower, t_upper = (mean + margin) / se, (mean - margin) / se
        p_lower, p_upper = float(scipy_stats.t.sf(t_lower, n - 1)), float(scipy_stats.t.cdf(t_upper, n - 1))
    half = float(scipy_stats.t.ppf(1 - alpha, n - 1) * se)
    p = max(p_lower, p_upper)
    return {
        "n": n,
        "dof": n - 1,
        "mean": mean,
        "sd": sd,
        "t_lower": t_lower,
        "t_upper": t_upper,
        "p_lower": p_lower,
        "p_upper": p_upper,
        "p": p,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "margin": margin,
        "equivalent": p < alpha,
    }


def equivalence(
    per_image: pd.DataFrame,
    candidate: str,
    reference: str,
    margin: float,
    metric: str = "dice",
    alpha: float = 0.05,
    seed: int = 0,
    resamples: int = 10_000,
) -> dict:
    """Is candidate as good as reference within +-margin? Two conditions, both required:

    - the hierarchical bootstrap's (1 - 2 alpha) interval of the difference (patients resampled, then
      runs: with several trainings per fold it carries training variance) lies inside (-margin, +margin);
    - the TOST over the patients' mean differences (tost_paired; conditional on the runs) has p < alpha.

    Returns hierarchical_comparison's fields (at confidence 1 - 2 alpha, p left out) and margin,
    tost_p, equivalent."""
    by_method = _by_method(long_table(per_image, metric, (candidate, reference)))
    compared = _compare(by_method, metric, candidate, reference, seed, resamples, 1 - 2 * alpha, 1, False, True)
    patient_means = compared.pop("patient_means")
    # One patient leaves no spread to test with: no TOST, so no equivalence shown.
    tost = tost_paired(patient_means, margin, alpha) if len(patient_means) >= 2 else {"p": float("nan")}
    inside = -margin < compared["ci_low"] and compared["ci_high"] < margin
    compared.pop("p"), compared.pop("permutations")
    shown = bool(inside and tost["p"] < alpha)
    return {**compared, "margin": margin, "tost_p": tost["p"], "equivalent": shown}


def compare_methods(
    per_image: pd.DataFrame,
    reference: str,
    family_name: str,
    metric: str = "dice",
    methods: Sequence[str] | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
    permutations: int | None = None,
) -> pd.DataFrame:
    """Every method (default: every method of per_image but the reference, in table order) against the
    reference with hierarchical_comparison, one row each, and Holm's correction over these rows: the family
    is this call's comparisons, named family_name. significant = p_holm < alpha and, where a side has several
    trainings per fold, the CI excluding 0 (as_family). ``permutations``: the
    sign flips (default: permutations_for this call's rows; pass permutations_for the whole family when
    several calls make one, see as_family).

    Columns: COMPARISON_COLUMNS (method, reference, family, patients, images, runs_candidate, runs_reference,
    mean_difference, ci_low, ci_high, p, p_holm, significant, permutations, p_mc_error, near_threshold)."""
    by_method = _by_method(long_table(per_image, metric, None if methods is None else [reference, *methods]))
    _method_rows(by_method, reference, "reference")
    if not 0 < alpha < 1:
        raise SonosegError(f"statistics: alpha must lie between 0 and 1, got {alpha}")
    if methods is None:
        methods = [m for m in by_method if m != reference]
    elif reference in methods:
        raise SonosegError(f"statistics: the reference {reference!r} is also listed among the methods to compare")
    if permutations is None:
        permutations = permutations_for(len(methods), alpha)
    rows = [
        _compare(by_method, metric, method, reference, seed, resamples, confidence, permutations, False)
        for method in methods
    ]
    frame = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in FAMILY_COLUMNS])
    return as_family([frame], family_name, alpha)[COMPARISON_COLUMNS]


FAMILY_COLUMNS = ("family", "p_holm", "significant", "p_mc_error", "near_threshold")  # set by as_family


def as_family(comparisons: Sequence[pd.DataFrame], family_name: str, alpha: float = 0.05) -> pd.DataFrame:
    """Comparison rows of one or several calls made one family: named family_name, Holm's correction
    over all their rows, significant = p_holm < alpha and, where a side has several runs (trainings),
    the CI excluding 0 as well."""
    frame = with_holm(pd.concat(list(comparisons), ignore_index=True), alpha)
    frame["family"] = family_name
    # The sign-flip p is conditional on the fitted runs: where several trainings exist, a decision also
    # needs the CI (which resamples them) to exclude 0 (docs/statistics.md, "Decisions").
    several = frame["runs_per_set"] > 1  # several trainings of one image's fold, not merely several folds
    excludes_zero = (frame["ci_low"] > 0) | (frame["ci_high"] < 0)
    frame["significant"] = (frame["p_holm"] < alpha) & (~several | excludes_zero)
    return frame


def with_holm(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Rows with a sign-flip p (and the flips behind it), one family: Holm's p (a p that could not be
    computed counts as 1), its Monte Carlo error, and whether it lies within two errors of alpha."""
    p = frame["p"].fillna(1.0).to_numpy()
    frame["p_holm"] = holm(p)
    frame["p_mc_error"] = holm_mc_error(p, frame["permutations"].to_numpy())
    frame["near_threshold"] = (frame["p_holm"] - alpha).abs() < 2 * frame["p_mc_error"]
    return frame


def holm_mc_error(p_values: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """The Monte Carlo standard error of each Holm-adjusted p, for raw p-values from N random sign flips
    (N = 0: exact, no error). A Holm p is the running maximum of (m - rank) x p over the sorted p-values;
    its error is that of the row which supplies the maximum: (m - rank) x sqrt(p (1 - p) / N) there.
    At most 1; 0 where the Holm p is 1, its maximum more than two of those errors above 1 (no run of the
    flips would bring it under 1: an error there would only look as if it could)."""
    p = np.asarray(p_values, dtype=float)
    flips = np.asarray(permutations, dtype=float)
    order = np.argsort(p, kind="stable")
    multiplier = p.size - np.arange(p.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw_error = np.where(flips > 0, np.sqrt(p * (1 - p) / np.where(flips > 0, flips, 1)), 0.0)
    scaled, errors = multiplier * p[order], multiplier * raw_error[order]
    error = np.empty(p.size)
    top = 0
    for i in range(p.size):  # the running maximum's supplier, as holm() takes it
        if scaled[i] >= scaled[top]:
            top = i
        error[order[i]] = 0.0 if scaled[top] - 2 * errors[top] > 1 else errors[top]
    return np.minimum(error, 1.0)


def _method_ci(
    by_method: Mapping[str, pd.DataFrame], metric: str, method: str, seed: int, resamples: int, confidence: float
) -> dict:
    terms, images_per_patient, images, runs, _ = _terms(by_method, metric, method, None)
    per_patient = sum(matrix.mean(axis=1) for matrix in terms.values())
    low, high = _percentile_ci(_bootstrap(terms, images_per_patient, seed, resamples), confidence)
    run_means = by_method[method].groupby("run", sort=True)[metric].mean()
    return {
        "method": method,
        "patients": len(images_per_patient),
        "images": images,
        "runs": runs,
        "mean": float(per_patient.sum() / images),
        "ci_low": low,
        "ci_high": high,
        "run_means": tuple(float(v) for v in run_means),
        "run_sd": float(run_means.std(ddof=1)) if len(run_means) > 1 else float("nan"),
    }


def method_ci(
    per_image: pd.DataFrame,
    method: str,
    metric: str = "dice",
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> dict:
    """One method's mean metric with the hierarchical patient-level CI (the bootstrap of
    hierarchical_comparison without a reference): the tables' CI column.

    Returns a dict: method, patients, images, runs, mean (mean over images of the mean over runs), ci_low,
    ci_high, run_means (per run, in run order: the mean over the images that run evaluated) and run_sd (their
    standard deviation, ddof 1; NaN with one run). format_cell turns it into a table cell."""
    by_method = _by_method(long_table(per_image, metric, (method,)))
    return _method_ci(by_method, metric, method, seed, resamples, confidence)


def method_replicates(
    per_image: pd.DataFrame, method: str, metric: str = "dice", seed: int = 0, resamples: int = 10_000
) -> np.ndarray:
    """The bootstrap replicates of one method's mean (patients, then trainings, as method_ci resamples
    them), for a difference between methods tested on different patients (resampled independently)."""
    terms, images_per_patient, *_ = _terms(_by_method(long_table(per_image, metric, (method,))), metric, method, None)
    return _bootstrap(terms, images_per_patient, seed, resamples)


def independent_difference_ci(first: np.ndarray, second: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The CI of mean(first) - mean(second) from replicates drawn independently (two sets of patients)."""
    return _percentile_ci(first - second, confidence)


def format_cell(summary: Mapping, digits: int = 3, trained: bool = True) -> str:
    """A table cell from a method_ci result (or a group_table row): mean [CI low, CI high], then
    - 5 runs or more: "± run SD (n = N trainings)" before the CI — the SD of the per-run means;
    - 2 to 4 runs: "(runs: v1, v2, …)", the per-run means themselves (an SD of so few is no summary);
    - 1 run: "(1 training)" — no SD (it is not 0: it is unknown); "(no training)" for a method that trains nothing
      (``trained`` False: a floor, a reference). Counts of trainings, not of images."""
    run_means = list(summary["run_means"])
    mean = f"{summary['mean']:.{digits}f}"
    ci = ci_text(summary["ci_low"], summary["ci_high"], digits)
    if len(run_means) >= 5:
        sd = float(np.std(run_means, ddof=1))
        return f"{mean} ± {sd:.{digits}f} {ci} (n = {len(run_means)} trainings)"
    if len(run_means) >= 2:
        return f"{mean} {ci} (runs: {', '.join(f'{v:.{digits}f}' for v in run_means)})"
    if len(run_means) == 1:
        return f"{mean} {ci} (1 training)" if trained else f"{mean} {ci} (no training)"
    raise SonosegError("format_cell: the summary has no run")


GROUP_COLUMNS = ["method", "images", "patients", "runs", "mean", "ci_low", "ci_high", "run_means"]


def group_table(
    per_image: pd.DataFrame,
    column: str,
    metric: str = "dice",
    methods: Sequence[str] | None = None,
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per value of `column` (lesion type, class, view, …; empty or missing values become "(none)") and per
    method (default: all, in table order): images, patients, runs, mean metric and its hierarchical
    patient-level CI (method_ci restricted to the group's images; a patient whose images fall in two groups
    counts in both), and run_means for format_cell.

    Columns: column, then GROUP_COLUMNS (method, images, patients, runs, mean, ci_low, ci_high, run_means);
    rows ordered by group value, then method."""
    if column not in per_image.columns:
        raise SonosegError(
            f"statistics: the per-image table lacks the grouping column {column!r} "
            "(a collected table carries view and meta_*: merge others from the manifest on sample_id); "
            f"it has {', '.join(map(repr, per_image.columns))}"
        )
    if column in (*LONG_COLUMNS, metric):
        raise SonosegError(f"statistics: cannot group by {column!r}, one of the table's own columns")
    table = long_table(per_image, metric, methods)
    groups = per_image[column].astype(object).where(per_image[column].notna(), "").astype(str).str.strip()
    table[column] = groups.replace("", "(none)").to_numpy()
    by_method = _by_method(table)
    if methods is None:
        methods = list(by_method)
    for method in methods:
        _method_rows(by_method, method, "listed")
    rows = []
    for value, rows_of_group in table.groupby(column, sort=True):
        in_group = _by_method(rows_of_group)
        for method in methods:
            if method not in in_group:
                continue
            summary = _method_ci(in_group, metric, method, seed, resamples, confidence)
            rows.append({column: value, **{k: summary[k] for k in GROUP_COLUMNS}})
    return pd.DataFrame(rows, columns=[column, *GROUP_COLUMNS])


def method_table(
    per_image: pd.DataFrame,
    metric: str = "dice",
    methods: Sequence[str] | None = None,
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """method_ci for every method (default: all, in table order), checking the table once.

    Columns: GROUP_COLUMNS (method, images, patients, runs, mean, ci_low, ci_high, run_means) and cell
    (format_cell's text, 3 decimals)."""
    by_method = _by_method(long_table(per_image, metric, methods))
    if methods is None:
        methods = list(by_method)
    rows = []
    for method in methods:
        summary = _method_ci(by_method, metric, method, seed, resamples, confidence)
        rows.append({**{k: summary[k] for k in GROUP_COLUMNS}, "cell": format_cell(summary)})
    return pd.DataFrame(rows, columns=[*GROUP_COLUMNS, "cell"])
