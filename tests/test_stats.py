"""Paired statistics on cases whose answer is known: the patient-level hierarchical bootstrap, sign-flip
test, Holm's correction and table helpers."""

import itertools
import math
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from sonoseg.analysis import stats
from sonoseg.errors import SonosegError


def long(rows) -> pd.DataFrame:
    """(method, run, sample_id, patient, dice) tuples -> the long table."""
    return pd.DataFrame(rows, columns=["method", "run", "sample_id", "patient", "dice"])


def images_of(values: dict[str, list[float]]) -> list[tuple[str, str, float]]:
    """{patient: [difference per image]} -> (sample_id, patient, difference) rows."""
    return [(f"{p}-{i}", p, d) for p, ds in values.items() for i, d in enumerate(ds)]


def paired_table(differences: dict[str, list[float]], base: float = 0.5) -> pd.DataFrame:
    """Reference at `base`, candidate at base + difference; one run each."""
    rows = []
    for sample, patient, d in images_of(differences):
        rows += [("ref", "0", sample, patient, base), ("cand", "0", sample, patient, base + d)]
    return long(rows)


def test_identical_differences_give_a_zero_width_ci_at_that_value():
    rows = []
    for p in range(5):
        for view in "ab":
            for run in ("1", "2", "3"):
                reference = 0.5 + 0.03 * p + (0.01 if view == "b" else 0) + 0.02 * int(run)
                rows += [
                    ("ref", run, f"p{p}{view}", f"p{p}", reference),
                    ("cand", run, f"p{p}{view}", f"p{p}", reference + 0.05),
                ]
    result = stats.hierarchical_comparison(long(rows), "cand", "ref", resamples=2000)
    assert result["mean_difference"] == pytest.approx(0.05)
    assert result["ci_low"] == pytest.approx(0.05) and result["ci_high"] == pytest.approx(0.05)
    assert (result["patients"], result["images"], result["runs_candidate"], result["runs_reference"]) == (5, 10, 3, 3)
    assert result["p"] == pytest.approx(2 / 2**5)  # only all-plus and all-minus reach |T|: exact, 5 patients


def test_bootstrap_distribution_matches_the_enumerated_patient_resamples():
    # Patient A has two images (its views move together), B and C one each; one run.
    differences = {"A": [0.1, 0.3], "B": [0.6], "C": [0.0]}
    exact = Counter()
    for draw in itertools.product(differences, repeat=3):  # 27 equally likely ordered draws of 3 patients
        values = [d for p in draw for d in differences[p]]
        exact[round(sum(values) / len(values), 9)] += 1 / 27
    result = stats.hierarchical_comparison(
        paired_table(differences), "cand", "ref", seed=5, resamples=40_000, return_replicates=True
    )
    assert result["mean_difference"] == pytest.approx(1.0 / 4)  # over images: (0.1 + 0.3 + 0.6 + 0) / 4
    observed = Counter(np.round(result["replicates"], 9))
    assert set(observed) == set(exact)
    for value, probability in exact.items():
        assert observed[value] / 40_000 == pytest.approx(probability, abs=0.01)
    assert result["replicates"].mean() == pytest.approx(sum(v * p for v, p in exact.items()), abs=0.005)
    # The percentile CI is the replicates' quantiles.
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(
        tuple(np.percentile(result["replicates"], [2.5, 97.5]))
    )


def test_runs_are_resampled_once_per_replicate_for_all_images():
    # Every image: seed 1 is 0.1 above the deterministic baseline, seed 2 is 0.3 above; no patient variation.
    # Runs drawn once per replicate (a seed's effect is shared by all images): {0.1, 0.2, 0.3} w.p. 1/4, 1/2, 1/4.
    rows = []
    for p in range(30):
        rows += [
            ("base", "0", f"s{p}", f"p{p}", 0.4 + p / 100),
            ("net", "1", f"s{p}", f"p{p}", 0.5 + p / 100),
            ("net", "2", f"s{p}", f"p{p}", 0.7 + p / 100),
        ]
    result = stats.hierarchical_comparison(long(rows), "net", "base", resamples=20_000, return_replicates=True)
    assert (result["runs_candidate"], result["runs_reference"]) == (2, 1)
    assert result["mean_difference"] == pytest.approx(0.2)
    shares = Counter(np.round(result["replicates"], 9))
    assert {v: n / 20_000 for v, n in shares.items()} == pytest.approx({0.1: 0.25, 0.2: 0.5, 0.3: 0.25}, abs=0.01)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((0.1, 0.3))


def test_same_runs_are_paired_and_other_runs_are_not():
    # Both methods have seeds 1 and 2; within each seed the candidate is 0.1 better; seed 2 is worse for both.
    rows = []
    for p in range(10):
        for run, shift in (("1", 0.0), ("2", -0.2)):
            rows += [("ref", run, f"s{p}", f"p{p}", 0.7 + shift), ("cand", run, f"s{p}", f"p{p}", 0.8 + shift)]
    paired = stats.hierarchical_comparison(long(rows), "cand", "ref", resamples=2000)
    assert (paired["ci_low"], paired["mean_difference"], paired["ci_high"]) == pytest.approx((0.1, 0.1, 0.1))
    # The same values under other run names for the reference: no pairing, the seeds' spread shows.
    renamed = long(rows).assign(run=lambda t: np.where(t["method"] == "ref", "r" + t["run"], t["run"]))
    unpaired = stats.hierarchical_comparison(renamed, "cand", "ref", resamples=2000)
    assert unpaired["mean_difference"] == pytest.approx(0.1)
    assert unpaired["ci_low"] == pytest.approx(-0.1) and unpaired["ci_high"] == pytest.approx(0.3)


def image_level_ci_width(differences, resamples=3000):
    """The width of an image-level percentile bootstrap CI (every image resampled on its own)."""
    picks = np.random.default_rng(0).integers(0, differences.size, size=(resamples, differences.size))
    low, high = np.percentile(differences[picks].mean(axis=1), [2.5, 97.5])
    return high - low


def test_duplicated_views_do_not_shrink_the_patient_level_ci():
    rng = np.random.default_rng(3)
    one_view = {f"p{i}": [float(d)] for i, d in enumerate(rng.normal(0.02, 0.05, 40))}
    two_views = {p: ds * 2 for p, ds in one_view.items()}  # each patient's second view: the same difference
    single = stats.hierarchical_comparison(paired_table(one_view), "cand", "ref", resamples=3000)
    double = stats.hierarchical_comparison(paired_table(two_views), "cand", "ref", resamples=3000)
    assert double["images"] == 2 * single["images"] and double["patients"] == single["patients"] == 40
    assert (double["ci_low"], double["ci_high"]) == pytest.approx((single["ci_low"], single["ci_high"]))
    assert double["p"] == single["p"]
    # The image-level bootstrap takes the copies for new evidence: its interval shrinks by about 1/sqrt(2).
    d1 = np.array([d for ds in one_view.values() for d in ds])
    d2 = np.array([d for ds in two_views.values() for d in ds])
    width1, width2 = image_level_ci_width(d1), image_level_ci_width(d2)
    assert width2 < 0.8 * width1


def test_folds_as_runs_resample_each_folds_runs():
    # Patients 0-9 are tested in fold 0 (models f0-s1, f0-s2), 10-19 in fold 1; the baseline has one run.
    rows = []
    for p in range(20):
        fold = p // 10
        rows.append(("base", "0", f"s{p}", f"p{p}", 0.5))
        rows.append(("net", f"f{fold}-s1", f"s{p}", f"p{p}", 0.6 + 0.1 * fold))
        rows.append(("net", f"f{fold}-s2", f"s{p}", f"p{p}", 0.8 + 0.1 * fold))
        rows.append(("twin", f"f{fold}-s1", f"s{p}", f"p{p}", 0.55 + 0.1 * fold))
        rows.append(("twin", f"f{fold}-s2", f"s{p}", f"p{p}", 0.75 + 0.1 * fold))
    table = long(rows)
    result = stats.hierarchical_comparison(table, "net", "base", resamples=4000)
    assert result["runs_candidate"] == 4 and result["runs_reference"] == 1
    assert result["mean_difference"] == pytest.approx(0.25)  # (0.2 + 0.3) / 2
    assert result["ci_low"] < 0.2 and result["ci_high"] > 0.3  # the seeds' spread within each fold shows
    # Two networks sharing the fold runs are paired run by run: a constant 0.05 apart.
    paired = stats.hierarchical_comparison(table, "net", "twin", resamples=1000)
    assert (paired["ci_low"], paired["ci_high"]) == pytest.approx((0.05, 0.05))


def test_sign_flip_p_enumerated_by_hand():
    # Sign patterns of (0.1, 0.2, -0.05): |sums| 0.35, 0.25, 0.05, 0.15, each twice; observed 0.25 -> 4 of 8.
    assert stats.sign_flip_p([0.1, 0.2, -0.05]) == pytest.approx(0.5)
    assert stats.sign_flip_p([0.1, 0.2, 0.05]) == pytest.approx(2 / 8)
    assert stats.sign_flip_p([0.0, 0.0]) == 1.0
    with pytest.raises(SonosegError, match="no patient difference"):
        stats.sign_flip_p([])


def test_sign_flip_monte_carlo_agrees_with_the_exact_p_and_is_never_zero():
    d = np.random.default_rng(2).normal(0.01, 0.05, 12)
    exact = stats.sign_flip_p(d)
    sampled = stats.sign_flip_p(d, seed=1, permutations=20_000, exact_max=0)
    assert sampled == pytest.approx(exact, abs=0.01)
    assert stats.sign_flip_p(d, seed=1, permutations=20_000, exact_max=0) == sampled  # by seed
    assert stats.sign_flip_p(np.full(40, 0.1), permutations=999) == pytest.approx(1 / 1000)


def test_the_comparisons_p_is_the_sign_flip_test_on_patient_sums():
    differences = {"A": [0.1, 0.3], "B": [-0.2], "C": [0.05], "D": [0.4, -0.1]}
    result = stats.hierarchical_comparison(paired_table(differences), "cand", "ref", resamples=100)
    assert result["p"] == pytest.approx(stats.sign_flip_p([0.4, -0.2, 0.05, 0.3]))


def test_holm_textbook_example():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])  # ties stay tied
    assert stats.holm([]).size == 0
    p = np.random.default_rng(0).uniform(0, 0.2, 15)
    adjusted = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0) and np.all(adjusted >= p) and np.all(adjusted <= 1)
    with pytest.raises(SonosegError, match=r"\[0, 1\]"):
        stats.holm([0.5, 1.5])


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(4).uniform(0, 0.1, 12)
    assert stats.holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


def study(seed: int = 0, patients: int = 30) -> pd.DataFrame:
    """A baseline with one run, U-net and two others with three seeds; 'good' is clearly better than U-net."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        for view in "ab":
            sample, truth = f"p{p}{view}", rng.uniform(0.6, 0.85)
            rows.append(("baseline", "0", sample, f"p{p}", truth - 0.3 + rng.normal(0, 0.05)))
            for run in ("1", "2", "3"):
                rows.append(("unet", run, sample, f"p{p}", truth + rng.normal(0, 0.02)))
                rows.append(("good", run, sample, f"p{p}", truth + 0.08 + rng.normal(0, 0.02)))
                rows.append(("same", run, sample, f"p{p}", truth + rng.normal(0, 0.02)))
    return long(rows)


def test_compare_methods_rows_holm_and_significance():
    table = stats.compare_methods(study(), "unet", "networks vs U-net", resamples=2000, permutations=2000)
    assert list(table.columns) == stats.COMPARISON_COLUMNS
    assert table["method"].tolist() == ["baseline", "good", "same"]
    assert set(table["family"]) == {"networks vs U-net"} and set(table["reference"]) == {"unet"}
    assert table["patients"].tolist() == [30] * 3 and table["images"].tolist() == [60] * 3
    assert table["runs_candidate"].tolist() == [1, 3, 3] and table["runs_reference"].tolist() == [3] * 3
    assert table["p_holm"].to_numpy() == pytest.approx(stats.holm(table["p"]))
    rows = table.set_index("method")
    assert rows.loc["good", "significant"] and rows.loc["baseline", "significant"]
    assert not rows.loc["same", "significant"] and rows.loc["same", "ci_low"] < 0 < rows.loc["same", "ci_high"]
    assert rows.loc["good", "ci_low"] > 0.05
    # A method's row does not depend on which other methods are in the family (but its p_holm does).
    alone = stats.compare_methods(study(), "unet", "x", methods=["good"], resamples=2000, permutations=2000)
    assert alone.loc[0, ["mean_difference", "ci_low", "ci_high", "p"]].tolist() == pytest.approx(
        rows.loc["good", ["mean_difference", "ci_low", "ci_high", "p"]].tolist()
    )
    assert alone.loc[0, "p_holm"] == alone.loc[0, "p"]


def test_compare_methods_is_deterministic_by_seed():
    a = stats.compare_methods(study(), "unet", "f", resamples=500, permutations=500, seed=1)
    b = stats.compare_methods(study(), "unet", "f", resamples=500, permutations=500, seed=1)
    c = stats.compare_methods(study(), "unet", "f", resamples=500, permutations=500, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["ci_low"], c["ci_low"])


def test_compare_methods_refuses_bad_input_naming_the_problem():
    table = study(patients=4)
    with pytest.raises(SonosegError, match="reference method 'fcn8s'"):
        stats.compare_methods(table, "fcn8s", "f")
    with pytest.raises(SonosegError, match="candidate method 'deeplab'"):
        stats.compare_methods(table, "unet", "f", methods=["good", "deeplab"])
    with pytest.raises(SonosegError, match="reference 'unet' is also listed"):
        stats.compare_methods(table, "unet", "f", methods=["unet", "good"])
    with pytest.raises(SonosegError, match="lacks column.*'patient'"):
        stats.compare_methods(table.drop(columns="patient"), "unet", "f")
    with pytest.raises(SonosegError, match="lacks column.*'run'.*seed"):
        stats.compare_methods(table.drop(columns="run").assign(seed=1), "unet", "f")
    moved = table.assign(sample_id=np.where(table["method"] == "good", "x" + table["sample_id"], table["sample_id"]))
    with pytest.raises(SonosegError, match="share no evaluated image"):
        stats.compare_methods(moved, "unet", "f")
    with pytest.raises(SonosegError, match="no numeric 'dice'"):
        stats.compare_methods(table.assign(dice=table["dice"].where(table.index != 3)), "unet", "f")
    with pytest.raises(SonosegError, match="repeat a"):
        stats.compare_methods(pd.concat([table, table.iloc[:1]]), "unet", "f")
    with pytest.raises(SonosegError, match="several patients"):
        stats.compare_methods(table.assign(patient=np.where(table.index == 0, "other", table["patient"])), "unet", "f")
    with pytest.raises(SonosegError, match="no row"):
        stats.compare_methods(table.iloc[:0], "unet", "f")


def test_method_ci_and_table_cells():
    table = study()
    result = stats.method_ci(table, "good", resamples=2000)
    assert (result["patients"], result["images"], result["runs"]) == (30, 60, 3)
    per_run = table[table["method"] == "good"].groupby("run")["dice"].mean()
    assert result["mean"] == pytest.approx(per_run.mean())
    assert result["run_means"] == pytest.approx(tuple(per_run))
    assert result["ci_low"] < result["mean"] < result["ci_high"]
    cell = stats.format_cell(result)
    assert cell.startswith(f"{result['mean']:.3f} [") and "(runs: " in cell and cell.count(",") == 3
    baseline = stats.format_cell(stats.method_ci(table, "baseline", resamples=500))
    assert baseline.endswith("(1 training)") and "±" not in baseline
    five = {"mean": 0.8, "ci_low": 0.75, "ci_high": 0.85, "run_means": [0.79, 0.8, 0.81, 0.8, 0.8]}
    assert stats.format_cell(five) == "0.800 ± 0.007 [0.750, 0.850] (n = 5 trainings)"
    summary = stats.method_table(table, resamples=500)
    assert summary["method"].tolist() == ["baseline", "unet", "good", "same"]
    assert summary.loc[2, "cell"] == stats.format_cell(stats.method_ci(table, "good", resamples=500))


def test_method_ci_moves_a_patients_views_together():
    # Each patient's two views have the same Dice: the CI equals that of the one-view table.
    one = long([("net", "0", f"p{i}", f"p{i}", d) for i, d in enumerate(np.linspace(0.5, 0.9, 25))])
    two = pd.concat([one, one.assign(sample_id=one["sample_id"] + "b")])
    a, b = stats.method_ci(one, "net", resamples=2000), stats.method_ci(two, "net", resamples=2000)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((b["ci_low"], b["ci_high"]))


def test_group_table_per_lesion_type():
    table = study(patients=12)
    kinds = {f"p{p}": ("benign" if p < 8 else "malignant") for p in range(12)}
    table["lesion"] = table["patient"].map(kinds)
    table.loc[table["sample_id"] == "p0a", "lesion"] = ""  # no label: "(none)"
    out = stats.group_table(table, "lesion", methods=["unet", "baseline"], resamples=500)
    assert list(out.columns) == ["lesion", *stats.GROUP_COLUMNS]
    assert out["lesion"].tolist() == ["(none)"] * 2 + ["benign"] * 2 + ["malignant"] * 2
    assert out["method"].tolist() == ["unet", "baseline"] * 3
    rows = out.set_index(["lesion", "method"])
    assert rows.loc[("benign", "unet"), ["images", "patients", "runs"]].tolist() == [15, 8, 3]
    assert rows.loc[("malignant", "baseline"), ["images", "patients", "runs"]].tolist() == [8, 4, 1]
    assert rows.loc[("(none)", "unet"), ["images", "patients"]].tolist() == [1, 1]
    malignant = table[(table["lesion"] == "malignant") & (table["method"] == "unet")]
    assert rows.loc[("malignant", "unet"), "mean"] == pytest.approx(malignant["dice"].mean())
    several = out[out["patients"] >= 2]
    assert all(lo <= m <= hi for lo, m, hi in zip(several["ci_low"], several["mean"], several["ci_high"]))
    # One patient: nothing to resample by patient, so no CI (not the trainings' spread passed off as one).
    assert out.loc[out["patients"] == 1, ["ci_low", "ci_high"]].isna().all().all()
    assert stats.NO_CI in stats.format_cell(rows.loc[("(none)", "unet")])
    with pytest.raises(SonosegError, match="grouping column 'organ'"):
        stats.group_table(table, "organ")


def test_paper_scale_is_fast():
    # 300 patients x 2 views, 5 seeds, 6 methods, 10,000 replicates (20 methods took ~1.5 s on 2 busy cores).
    rng = np.random.default_rng(0)
    samples = [(f"p{p}{v}", f"p{p}") for p in range(300) for v in "ab"]
    frames = [
        pd.DataFrame(
            {
                "method": f"m{m}",
                "run": str(r),
                "sample_id": [s for s, _ in samples],
                "patient": [p for _, p in samples],
                "dice": rng.uniform(0.5, 0.9, len(samples)),
            }
        )
        for m in range(6)
        for r in range(5)
    ]
    start = time.perf_counter()
    table = stats.compare_methods(pd.concat(frames), "m0", "f")
    assert len(table) == 5 and math.isfinite(table["ci_low"].sum())
    assert time.perf_counter() - start < 30


def test_tost_matches_the_textbook_paired_example():
    """Pingouin's documented paired TOST (a, b as below, bound 0.5): 5 degrees of freedom, p 0.954854."""
    a = np.array([4, 7, 8, 6, 3, 2], dtype=float)
    b = np.array([6, 8, 7, 10, 11, 9], dtype=float)
    result = stats.tost_paired(a - b, margin=0.5)
    assert result["dof"] == 5
    assert result["p"] == pytest.approx(0.954854, abs=1e-6)
    assert not result["equivalent"]


def test_tost_shows_equivalence_exactly_when_the_90_percent_interval_lies_inside_the_margin():
    rng = np.random.default_rng(3)
    for _ in range(200):
        d = rng.normal(rng.uniform(-0.05, 0.05), rng.uniform(0.01, 0.1), int(rng.integers(5, 40)))
        result = stats.tost_paired(d, margin=0.03)
        inside = -0.03 < result["ci_low"] and result["ci_high"] < 0.03
        assert result["equivalent"] == inside


def test_equivalence_needs_the_bootstrap_interval_and_the_tost():
    rng = np.random.default_rng(5)
    rows = []
    for patient in range(30):
        for view in (1, 2):
            base = rng.uniform(0.6, 0.9)
            for method, shift in (("unet", 0.0), ("close", 0.005), ("far", -0.08)):
                value = base + shift + rng.normal(0, 0.01)
                rows.append(
                    {
                        "method": method,
                        "run": "fold0/seed0",
                        "sample_id": f"p{patient}v{view}",
                        "patient": f"p{patient}",
                        "dice": value,
                    }
                )
    table = pd.DataFrame(rows)
    close = stats.equivalence(table, "close", "unet", margin=0.02, resamples=2000)
    far = stats.equivalence(table, "far", "unet", margin=0.02, resamples=2000)
    assert close["equivalent"] and close["tost_p"] < 0.05 and -0.02 < close["ci_low"] < close["ci_high"] < 0.02
    assert not far["equivalent"] and far["tost_p"] > 0.5


def test_sign_flips_make_a_holm_p_near_005_precise_in_any_family():
    """permutations_for(m): a Holm-adjusted p near 0.05, whatever its multiplier k <= m, has a Monte Carlo
    standard error below 0.002; never fewer than 100,000 flips."""
    for size in (1, 3, 19, 60, 200):
        flips = stats.permutations_for(size)
        assert flips >= 100_000
        worst = max(k * np.sqrt((0.05 / k) * (1 - 0.05 / k) / flips) for k in range(1, size + 1))
        assert worst < 0.002, (size, flips, worst)
    assert stats.permutations_for(19) > stats.permutations_for(1) == 100_000


def test_holm_p_values_carry_their_monte_carlo_error_and_say_when_they_are_near_005():
    p = np.array([0.01, 0.02, 0.03])
    error = stats.holm_mc_error(p, np.array([10_000, 10_000, 0]))
    # Multipliers 3, 2, 1 (by rank). The third row's Holm p is the running maximum that the second
    # supplies (2 x 0.02 > 1 x 0.03), so it carries the second's error, though its own p is exact.
    second = 2 * np.sqrt(0.02 * 0.98 / 1e4)
    assert error == pytest.approx([3 * np.sqrt(0.01 * 0.99 / 1e4), second, second])
    assert stats.holm_mc_error(np.array([0.01, 0.04]), np.array([0, 0])) == pytest.approx([0.0, 0.0])
    # A Holm p clipped at 1 whose maximum lies far above 1 carries no error (the exact rows beside it had one
    # and the others none, depending on which row supplied it); one just over 1 keeps its supplier's.
    far = stats.holm_mc_error(np.array([0.6, 0.7, 0.9]), np.array([1_000, 0, 0]))
    assert far == pytest.approx([0.0, 0.0, 0.0])
    near = stats.holm_mc_error(np.array([0.34, 0.5, 0.6]), np.array([1_000, 0, 0]))  # 3 x 0.34: within two errors
    assert near == pytest.approx([3 * np.sqrt(0.34 * 0.66 / 1e3)] * 3)
    rows = pd.DataFrame(
        {
            "p": [0.0248, 0.2],
            "permutations": [1_000, 1_000],
            "runs_candidate": 1,
            "runs_reference": 1,
            "runs_per_set": 1,
            "ci_low": 0.0,
            "ci_high": 0.1,
        }
    )
    family = stats.as_family([rows], "f")
    # 0.0248 x 2 = 0.0496, within two errors (2 x 2 x 0.0049) of 0.05: flagged; 0.2 is not.
    assert family["near_threshold"].tolist() == [True, False]


def test_comparisons_record_their_sign_flips():
    table = stats.compare_methods(study(), "unet", "f", resamples=200)
    patients = table["patients"].iloc[0]
    expected = 0 if patients <= stats.EXACT_SIGN_FLIP_MAX_PATIENTS else stats.permutations_for(len(table))
    assert (table["permutations"] == expected).all()
    assert list(table.columns) == stats.COMPARISON_COLUMNS


def test_with_several_runs_a_decision_also_needs_the_interval():
    """The sign-flip p ignores training variance; with several runs 'significant' also needs the CI
    (which resamples the runs) to exclude 0."""
    rows = pd.DataFrame(
        {
            "p": [0.001, 0.001, 0.001],
            "permutations": [0, 0, 0],
            "runs_candidate": [6, 6, 2],
            "runs_reference": [6, 6, 2],
            # 2 folds x 3 seeds: three trainings of each image; 2 folds x 1 seed: one (no training variance)
            "runs_per_set": [3, 3, 1],
            "ci_low": [0.01, -0.01, -0.01],
            "ci_high": [0.05, 0.05, 0.05],
        }
    )
    family = stats.as_family([rows], "f")
    assert family["significant"].tolist() == [True, False, True]
