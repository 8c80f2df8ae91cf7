"""Drift statistics: agreement with scipy on random data, edge cases, profile round-trip and
the per-feature verdicts on synthetic batches."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from retrain_assets.core.monitoring import drift
from retrain_assets.core.monitoring.distances import (
    chi_square_test,
    jensen_shannon_categorical,
    jensen_shannon_numeric,
    ks_test,
    psi,
    psi_categorical,
    psi_numeric,
    wasserstein_normalized,
)
from retrain_assets.core.monitoring.drift import (
    INSUFFICIENT_DATA,
    benjamini_hochberg,
    dataset_drift,
    feature_drift,
    label_drift,
    out_of_distribution_share,
    prediction_drift,
)
from retrain_assets.core.monitoring.profile import ReferenceProfile, build_reference_profile, categorical_profile, numeric_profile
from retrain_assets.core.policy.definition import DriftThresholds

# (reference size, current size): large reference vs small batch, tiny batches, a batch
# longer than the reference (the statistics then walk the reference's values instead).
SIZES = [(20_000, 500), (1000, 1), (1000, 2), (1000, 3), (2, 1), (50, 7), (300, 300), (200, 5000)]
SEEDS = [0, 1, 2]


def _samples(seed: int, n_ref: int, n_cur: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if ties:  # heavy ties: a handful of distinct values on both sides
        return rng.integers(0, 6, n_ref).astype(float), rng.integers(1, 8, n_cur).astype(float)
    return rng.normal(3.0, 2.0, n_ref), rng.normal(3.0 + rng.normal(0, 0.5), 2.0 * rng.uniform(0.7, 1.4), n_cur)


def _close(actual: float, expected: float, tol: float = 1e-9) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)
    return abs(actual - expected) <= tol * max(1.0, abs(expected))


# ---------------------------------------------------------------------------------------------
# Agreement with scipy


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
@pytest.mark.parametrize("sizes", SIZES, ids=[f"{a}v{b}" for a, b in SIZES])
@pytest.mark.parametrize("seed", SEEDS)
def test_ks_matches_scipy_asymptotic(seed, sizes, ties):
    ref, cur = _samples(seed, *sizes, ties)
    d, p = ks_test(numeric_profile("x", ref), cur)
    with warnings.catch_warnings():  # scipy warns (and returns p=NaN) for one value on each side
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = stats.ks_2samp(ref, cur, method="asymp")
    assert _close(d, float(expected.statistic))
    assert _close(p, float(expected.pvalue))


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
@pytest.mark.parametrize("sizes", SIZES, ids=[f"{a}v{b}" for a, b in SIZES])
@pytest.mark.parametrize("seed", SEEDS)
def test_wasserstein_matches_scipy(seed, sizes, ties):
    ref, cur = _samples(seed, *sizes, ties)
    if np.std(ref) == 0:
        pytest.skip("constant reference: covered by the constant-column tests")
    got = wasserstein_normalized(numeric_profile("x", ref), cur)
    assert _close(got, stats.wasserstein_distance(ref, cur) / np.std(ref))


def test_wasserstein_with_large_offset_stays_accurate():
    rng = np.random.default_rng(5)
    ref, cur = rng.normal(1e5, 7.0, 20_000), rng.normal(1e5 + 3.0, 7.0, 500)
    got = wasserstein_normalized(numeric_profile("x", ref), cur)
    assert _close(got, stats.wasserstein_distance(ref, cur) / np.std(ref))


def _binned_fractions(ref: np.ndarray, cur: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Reference-decile bins (-inf, e1], ..., (ek, inf), computed independently with pd.cut."""
    edges = np.unique(np.quantile(ref, np.arange(1, n_bins) / n_bins))
    bins = [-np.inf, *edges, np.inf]
    p = pd.Series(pd.cut(ref, bins, right=True)).value_counts(sort=False).to_numpy()
    q = pd.Series(pd.cut(cur, bins, right=True)).value_counts(sort=False).to_numpy()
    return p / p.sum(), q / q.sum()


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
@pytest.mark.parametrize("sizes", SIZES, ids=[f"{a}v{b}" for a, b in SIZES])
@pytest.mark.parametrize("seed", SEEDS)
def test_numeric_jensen_shannon_and_psi_match_binned_reference(seed, sizes, ties):
    ref, cur = _samples(seed, *sizes, ties)
    prof = numeric_profile("x", ref)
    p, q = _binned_fractions(ref, cur)
    assert np.array_equal(prof.bin_counts / prof.n, p)
    assert _close(jensen_shannon_numeric(prof, cur), float(jensenshannon(p, q, base=2)))
    assert _close(psi_numeric(prof, cur), psi(p, q))


def _categorical_samples(seed: int, n_ref: int, n_cur: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.choice(["a", "b", "c", "d", "e"], n_ref, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    cur = rng.choice(["a", "b", "c", "d", "new1", "new2"], n_cur, p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05])
    return ref, cur


def _expected_table(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    cats = list(dict.fromkeys(ref.tolist()))
    ref_row = [int((ref == c).sum()) for c in cats] + [0]
    cur_row = [int((cur == c).sum()) for c in cats] + [int((~np.isin(cur, cats)).sum())]
    table = np.array([ref_row, cur_row], dtype=float)
    return table[:, table.sum(axis=0) > 0]


@pytest.mark.parametrize("sizes", SIZES, ids=[f"{a}v{b}" for a, b in SIZES])
@pytest.mark.parametrize("seed", SEEDS)
def test_categorical_chi2_and_jensen_shannon_match_scipy(seed, sizes):
    ref, cur = _categorical_samples(seed, *sizes)
    prof = categorical_profile("k", ref)
    table = _expected_table(ref, cur)
    stat, p = chi_square_test(prof, cur)
    if table.shape[1] < 2:
        assert (stat, p) == (0.0, 1.0)
    else:
        expected = stats.chi2_contingency(table, correction=False)
        assert _close(stat, float(expected.statistic))
        assert _close(p, float(expected.pvalue))
    assert _close(jensen_shannon_categorical(prof, cur), float(jensenshannon(table[0], table[1], base=2)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("size", [1, 2, 7, 40])
def test_benjamini_hochberg_matches_scipy_and_skips_nan(seed, size):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, size) ** 3
    assert np.allclose(benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"), rtol=0, atol=1e-9)
    with_nan = np.concatenate([p, [np.nan, np.nan]])
    rng.shuffle(with_nan)
    adjusted = benjamini_hochberg(with_nan)
    ok = ~np.isnan(with_nan)
    assert np.isnan(adjusted[~ok]).all()
    assert np.allclose(adjusted[ok], stats.false_discovery_control(with_nan[ok], method="bh"), rtol=0, atol=1e-9)
    assert benjamini_hochberg([]).shape == (0,)
    assert np.isnan(benjamini_hochberg([np.nan])).all()


# ---------------------------------------------------------------------------------------------
# PSI and edge cases


def test_psi_formula_and_empty_bins_get_eps():
    e, a = np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.4, 0.2])
    assert psi(e, a) == pytest.approx(float(np.sum((a - e) * np.log(a / e))), abs=1e-12)
    assert psi(e, e) == 0.0
    assert psi([10, 6, 4], [4, 4, 2]) == pytest.approx(psi(e, a), abs=1e-12)  # counts work too
    # An empty bin on either side is floored at eps: large but finite.
    value = psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2])
    floored = np.array([0.5, 0.5, 1e-4]) / 1.0001
    assert math.isfinite(value)
    assert value == pytest.approx(float(np.sum((a - floored) * np.log(a / floored))), rel=1e-12)
    assert math.isnan(psi([1, 2], [0, 0]))


def test_numeric_psi_with_empty_current_bins():
    ref = np.arange(1000, dtype=float)
    prof = numeric_profile("x", ref)
    assert len(prof.bin_edges) == 9 and prof.bin_counts.sum() == 1000
    cur = np.full(50, 5.0)  # every value in the first decile: nine empty bins
    value = psi_numeric(prof, cur)
    assert math.isfinite(value) and value > 0.25
    assert jensen_shannon_numeric(prof, cur) == pytest.approx(float(jensenshannon(prof.bin_counts, [50] + [0] * 9, base=2)))


def test_constant_reference_column():
    prof = numeric_profile("x", np.full(100, 2.5))
    assert prof.std == 0.0 and list(prof.bin_edges) == [2.5] and list(prof.bin_counts) == [100, 0]
    assert wasserstein_normalized(prof, [2.5, 2.5, 2.5]) == 0.0
    assert ks_test(prof, [2.5, 2.5])[0] == 0.0
    assert psi_numeric(prof, [2.5, 2.5]) == 0.0
    assert wasserstein_normalized(prof, [2.5, 3.0]) == math.inf
    assert ks_test(prof, [3.0, 3.0])[0] == 1.0
    assert psi_numeric(prof, [3.0]) > 1.0


def test_constant_column_in_feature_drift():
    ref = pd.DataFrame({"x": np.full(500, 1.0), "y": np.arange(500.0)})
    prof = build_reference_profile(ref, ["x", "y"], [])
    same = feature_drift(prof, pd.DataFrame({"x": np.full(50, 1.0), "y": np.arange(50.0) * 10}), DriftThresholds())
    assert not same.set_index("feature").loc["x", "drifted"]
    moved = feature_drift(prof, pd.DataFrame({"x": np.full(2000, 2.0), "y": np.arange(2000.0) / 4}), DriftThresholds())
    row = moved.set_index("feature").loc["x"]
    assert row["test"] == "wasserstein" and row["drift_score"] == math.inf and row["drifted"]


def test_all_missing_current_column_is_insufficient_data():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=400), "k": rng.choice(["a", "b"], 400)})
    prof = build_reference_profile(ref, ["x"], ["k"])
    cur = pd.DataFrame({"x": [np.nan] * 10, "k": [None] * 10})
    table = feature_drift(prof, cur, DriftThresholds()).set_index("feature")
    for name in ("x", "k"):
        row = table.loc[name]
        assert row["n_current"] == 0 and row["missing_share"] == 1.0
        assert row["test"] == INSUFFICIENT_DATA and not row["drifted"]
        assert math.isnan(row["p_value"]) and math.isnan(row["psi"]) and math.isnan(row["jensen_shannon"])
    assert dataset_drift(table.reset_index(), DriftThresholds())["dataset_drifted"] is False
    empty = feature_drift(prof, cur.iloc[:0], DriftThresholds())
    assert len(empty) == 2 and (empty["test"] == INSUFFICIENT_DATA).all() and not empty["drifted"].any()
    assert math.isnan(out_of_distribution_share(prof, cur.iloc[:0]))


def test_unseen_category_counts_everywhere():
    ref = pd.DataFrame({"k": ["a"] * 60 + ["b"] * 40, "x": np.linspace(0, 1, 100)})
    prof = build_reference_profile(ref, ["x"], ["k"])
    cur = pd.DataFrame({"k": ["a"] * 5 + ["b"] * 3 + ["zzz"] * 2, "x": [0.5] * 10})
    kprof = prof.categorical["k"]
    assert math.isfinite(psi_categorical(kprof, cur["k"]))
    stat, p = chi_square_test(kprof, cur["k"])
    expected = stats.chi2_contingency(np.array([[60, 40, 0], [5, 3, 2]]), correction=False)
    assert stat == pytest.approx(expected.statistic, rel=1e-12) and p == pytest.approx(expected.pvalue, rel=1e-12)
    assert out_of_distribution_share(prof, cur) == pytest.approx(0.2)
    # numeric values outside the reference range count too; missing values do not
    cur2 = pd.DataFrame({"k": ["a", None, "b", "a"], "x": [0.5, 2.0, np.nan, -0.1]})
    assert out_of_distribution_share(prof, cur2) == pytest.approx(0.5)
    row = feature_drift(prof, cur, DriftThresholds()).set_index("feature").loc["k"]
    assert row["n_current"] == 10 and math.isfinite(row["psi"]) and row["test"] == "chi2"


def test_integer_categories_match_after_the_column_turns_float():
    prof = categorical_profile("grade", pd.Series([1, 2, 2, 3] * 25))
    batch = pd.Series([1.0, 2.0, np.nan, 3.0, 2.0])  # an int column with a NaN arrives as float
    assert chi_square_test(prof, batch)[0] == pytest.approx(
        stats.chi2_contingency(np.array([[25, 50, 25], [1, 2, 1]]), correction=False).statistic
    )
    assert jensen_shannon_categorical(prof, batch) == pytest.approx(0.0, abs=1e-12)


def test_tiny_batches_do_not_crash():
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": rng.normal(size=300), "c": np.ones(300), "k": rng.choice(["a", "b", "c"], 300)})
    prof = build_reference_profile(ref, ["x", "c"], ["k"])
    for rows in (1, 2):
        cur = pd.DataFrame({"x": rng.normal(size=rows), "c": np.ones(rows), "k": ["b"] * rows})
        table = feature_drift(prof, cur, DriftThresholds())
        assert list(table["test"]) == ["ks", "ks", "chi2"]
        assert table["ks_statistic"].iloc[:2].notna().all() and table["chi2_p_value"].iloc[2] <= 1.0
        assert not table["drifted"].any()


def test_text_and_infinities_in_numeric_column_count_as_missing():
    prof = numeric_profile("x", [1.0, 2.0, 3.0, np.inf, None])
    assert (prof.n, prof.n_missing) == (3, 2)
    frame_prof = build_reference_profile(pd.DataFrame({"x": np.arange(20.0)}), ["x"], [])
    row = feature_drift(frame_prof, pd.DataFrame({"x": pd.Series(["1.5", "oops", None, "4"], dtype=object)})).iloc[0]
    assert row["n_current"] == 2 and row["missing_share"] == 0.5


# ---------------------------------------------------------------------------------------------
# Profile


def test_reference_subsample_is_evenly_spaced_order_statistics():
    rng = np.random.default_rng(1)
    values = rng.normal(size=5000)
    prof = numeric_profile("x", values, DriftThresholds(max_reference_sample=100))
    full = np.sort(values)
    assert len(prof.sorted_values) == 100 and prof.n == 5000
    assert prof.sorted_values[0] == full[0] and prof.sorted_values[-1] == full[-1]
    assert np.array_equal(prof.sorted_values, full[np.round(np.linspace(0, 4999, 100)).astype(int)])
    assert prof.prefix_sums[0] == 0.0 and prof.prefix_sums[-1] == pytest.approx(prof.sorted_values.sum())
    assert prof.bin_counts.sum() == 5000  # bins count the full reference, not the sample
    # KS is then the test of the kept order statistics against the batch
    cur = rng.normal(0.2, 1, 300)
    d, p = ks_test(prof, cur)
    expected = stats.ks_2samp(prof.sorted_values, cur, method="asymp")
    assert _close(d, float(expected.statistic)) and _close(p, float(expected.pvalue))


def test_profile_json_round_trip_is_lossless():
    rng = np.random.default_rng(2)
    df = pd.DataFrame(
        {
            "x": rng.normal(size=3000) / 3,  # floats without short decimal forms
            "n": rng.integers(0, 4, 3000).astype(float),
            "empty": [np.nan] * 3000,
            "k": rng.choice(["a", "b", "c"], 3000),
            "flag": rng.choice([True, False], 3000),
        }
    )
    df.loc[::7, "k"] = None
    prof = build_reference_profile(
        df, ["x", "n", "empty"], ["k", "flag"], scores=rng.uniform(size=3000), labels=rng.integers(0, 2, 3000),
        thresholds=DriftThresholds(max_reference_sample=1000), created_from="data version abc",
    )  # fmt: skip
    text = prof.to_json()
    back = ReferenceProfile.from_json(text)
    assert back == prof
    assert back.to_json() == text
    assert np.array_equal(back.numeric["x"].prefix_sums, prof.numeric["x"].prefix_sums)
    assert math.isnan(back.numeric["empty"].mean) and back.numeric["empty"].n == 0
    assert back.categorical["flag"].counts.keys() == {"True", "False"}
    assert back.categorical["k"].n_missing == len(df.loc[::7])
    assert "NaN" not in text  # strict JSON
    assert ReferenceProfile.from_json(build_reference_profile(df, ["x"], []).to_json()).scores is None


# ---------------------------------------------------------------------------------------------
# Verdicts on synthetic batches


def _frame(seed: int, rows: int, shifted: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mix = [0.2, 0.3, 0.5] if shifted else [0.5, 0.3, 0.2]
    return pd.DataFrame(
        {
            "income": rng.normal(50.0 + (5.0 if shifted else 0.0), 10.0, rows),  # +0.5 std when shifted
            "age": rng.normal(40.0, 12.0, rows),
            "score": rng.uniform(300, 850, rows).round(),
            "region": rng.choice(["north", "south", "east"], rows, p=mix),
            "channel": rng.choice(["web", "branch", "phone", "partner"], rows, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


@pytest.fixture(scope="module")
def reference_profile() -> ReferenceProfile:
    return build_reference_profile(_frame(100, 20_000), ["income", "age", "score"], ["region", "channel"])


@pytest.mark.parametrize("rows, tests", [(300, {"ks", "chi2"}), (5000, {"wasserstein", "jensen_shannon"})])
def test_feature_drift_flags_exactly_the_shifted_columns(reference_profile, rows, tests):
    thresholds = DriftThresholds()
    table = feature_drift(reference_profile, _frame(8, rows, shifted=True), thresholds)
    assert list(table.columns) == drift.FEATURE_COLUMNS
    assert set(table["test"]) == tests
    assert set(table.loc[table["drifted"], "feature"]) == {"income", "region"}
    summary = dataset_drift(table, thresholds)
    assert summary == {"n_features": 5, "n_drifted": 2, "drift_share": 0.4, "dataset_drifted": False, "n_untested": 0}
    kinds = table.set_index("feature")["kind"]
    numeric_rows = table[kinds.values == "numeric"]
    assert numeric_rows[["chi2_statistic", "chi2_p_value"]].isna().all().all()
    assert table[kinds.values == "categorical"][["ks_statistic", "ks_p_value", "wasserstein_norm"]].isna().all().all()
    assert (table["p_value_adjusted"] >= table["p_value"]).all()
    income = table.set_index("feature").loc["income"]
    assert income["psi_band"] in {"moderate", "major"}
    if rows < thresholds.large_sample_rows:
        assert income["drift_score"] == income["p_value_adjusted"] and income["threshold"] == thresholds.alpha
    else:
        assert income["drift_score"] == income["wasserstein_norm"] > thresholds.wasserstein_threshold


@pytest.mark.parametrize("rows", [300, 5000])
def test_feature_drift_flags_nothing_on_the_same_distribution(reference_profile, rows):
    table = feature_drift(reference_profile, _frame(11, rows), DriftThresholds())
    assert not table["drifted"].any()
    assert (table["psi_band"] == "none").all()
    assert dataset_drift(table, DriftThresholds())["n_drifted"] == 0


def test_feature_drift_accepts_pandas_categorical_columns(reference_profile):
    batch = _frame(7, 300, shifted=True)
    as_category = batch.astype({"region": "category", "channel": "category"})
    plain = feature_drift(reference_profile, batch)
    typed = feature_drift(reference_profile, as_category)
    pd.testing.assert_frame_equal(plain, typed)


def test_dataset_drift_share_threshold():
    table = pd.DataFrame({"test": ["ks", "ks", "chi2", INSUFFICIENT_DATA], "drifted": [True, False, True, False]})
    out = dataset_drift(table, DriftThresholds(dataset_drift_share=0.6))
    assert out == {"n_features": 3, "n_drifted": 2, "drift_share": pytest.approx(2 / 3), "dataset_drifted": True, "n_untested": 1}
    assert not dataset_drift(table, DriftThresholds(dataset_drift_share=0.7))["dataset_drifted"]


# ---------------------------------------------------------------------------------------------
# Labels and scores


def test_label_drift():
    labels = np.array([1] * 30 + [0] * 70)
    out = label_drift(0.2, labels)
    assert out["current_positive_rate"] == pytest.approx(0.3) and out["difference"] == pytest.approx(0.1)
    assert out["p_value"] == pytest.approx(stats.binomtest(30, 100, 0.2).pvalue, rel=1e-12)
    assert label_drift(0.3, labels)["p_value"] == pytest.approx(1.0)
    with_missing = label_drift(0.5, np.array([1.0, np.nan, 0.0, 1.0]))
    assert with_missing["current_positive_rate"] == pytest.approx(2 / 3)
    for empty in (np.array([]), np.array([np.nan])):
        out = label_drift(0.2, empty)
        assert math.isnan(out["current_positive_rate"]) and math.isnan(out["p_value"])
    assert math.isnan(label_drift(None, labels)["p_value"])
    with pytest.raises(ValueError):
        label_drift(0.2, np.array([0, 2]))
    prof = build_reference_profile(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}), ["x"], [], labels=np.array([1, 0, 0, 0]))
    assert prof.positive_rate == 0.25


def test_prediction_drift():
    rng = np.random.default_rng(4)
    ref_scores = rng.beta(2, 5, 5000)
    prof = build_reference_profile(pd.DataFrame({"x": ref_scores}), ["x"], [], scores=ref_scores)
    same = prediction_drift(prof.scores, ref_scores)
    assert same["ks_statistic"] == 0.0 and same["ks_p_value"] == 1.0
    assert same["psi"] == 0.0 and same["jensen_shannon"] == 0.0 and same["wasserstein_norm"] == pytest.approx(0.0, abs=1e-12)
    shifted = rng.beta(3, 4, 800)
    out = prediction_drift(prof.scores, shifted)
    assert set(out) == {"ks_statistic", "ks_p_value", "psi", "jensen_shannon", "wasserstein_norm"}
    assert out["ks_p_value"] < 1e-6 and out["psi"] > 0.1 and out["wasserstein_norm"] > 0.1
    assert _close(out["ks_statistic"], float(stats.ks_2samp(ref_scores, shifted, method="asymp").statistic))
    empty = prediction_drift(prof.scores, np.array([]))
    assert all(math.isnan(v) for v in empty.values())
