"""Numeric drift statistics above `DriftThresholds.sample_rows` read a seeded sample of the column
(`values.sample_of`): exact for that sample, within the stated bound of the whole column."""

import math

import numpy as np
import pandas as pd
from scipy import stats

from retrain_assets.core.monitoring.drift import feature_drift
from retrain_assets.core.monitoring.profile import build_reference_profile
from retrain_assets.core.monitoring.values import sample_of
from retrain_assets.core.policy.definition import DriftThresholds

SMALL = DriftThresholds(max_reference_sample=500, sample_rows=2_000)


def _frames(n: int = 20_000, shift: float = 0.05):
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": rng.normal(size=n)})
    cur = pd.DataFrame({"x": rng.normal(loc=shift, size=n)})
    cur.loc[:99, "x"] = np.nan
    return ref, cur


def test_sample_of_is_seeded_and_keeps_small_columns_whole():
    values = np.arange(10.0)
    assert sample_of(values, 10) is values and sample_of(values, None) is values
    first, again = sample_of(np.arange(1000.0), 100), sample_of(np.arange(1000.0), 100)
    assert len(first) == 100 and len(np.unique(first)) == 100
    np.testing.assert_array_equal(first, again)


def test_profile_above_sample_rows_keeps_exact_moments_and_samples_the_order_statistics():
    ref, _ = _frames()
    prof = build_reference_profile(ref, ["x"], [], thresholds=SMALL).numeric["x"]
    x = ref["x"].to_numpy()
    assert prof.n == len(x) and prof.min == x.min() and prof.max == x.max()
    assert math.isclose(prof.mean, x.mean(), rel_tol=1e-12) and math.isclose(prof.std, x.std(), rel_tol=1e-12)
    sample = np.sort(sample_of(x, SMALL.sample_rows))
    kept = sample[np.round(np.linspace(0, len(sample) - 1, SMALL.max_reference_sample)).astype(np.int64)]
    np.testing.assert_array_equal(prof.sorted_values, kept)
    assert prof.bin_counts.sum() == SMALL.sample_rows


def test_batch_above_sample_rows_is_scipys_test_of_its_sample_and_counts_every_value():
    ref, cur = _frames()
    prof = build_reference_profile(ref, ["x"], [], thresholds=SMALL)
    row = feature_drift(prof, cur, SMALL).iloc[0]
    finite = cur["x"].dropna().to_numpy()
    assert row["n_current"] == len(finite) and math.isclose(row["missing_share"], 100 / len(cur))
    sample = sample_of(finite, SMALL.sample_rows)
    expected = stats.ks_2samp(prof.numeric["x"].sorted_values, sample, method="asymp")
    assert math.isclose(row["ks_statistic"], expected.statistic, rel_tol=1e-12)
    assert math.isclose(row["ks_p_value"], expected.pvalue, rel_tol=1e-9)
    w = stats.wasserstein_distance(prof.numeric["x"].sorted_values, sample) / prof.numeric["x"].std
    assert math.isclose(row["wasserstein_norm"], w, rel_tol=1e-9)


def test_sampled_statistics_stay_within_the_dkw_bound_of_the_whole_column():
    ref, cur = _frames()
    sampled = feature_drift(build_reference_profile(ref, ["x"], [], thresholds=SMALL), cur, SMALL).iloc[0]
    whole = DriftThresholds(max_reference_sample=500, sample_rows=len(ref))
    exact = feature_drift(build_reference_profile(ref, ["x"], [], thresholds=whole), cur, whole).iloc[0]
    # Two sampled ECDFs (reference and batch, 2,000 values each): within 2 x sqrt(ln(2 / 0.001) / 4,000).
    bound = 2 * math.sqrt(math.log(2 / 0.001) / (2 * SMALL.sample_rows))
    assert abs(sampled["ks_statistic"] - exact["ks_statistic"]) <= bound
    # W1 is the integral of |F_ref - F_cur| over the values' range: it moves by at most that range x the ECDFs' gap.
    span = (max(ref["x"].max(), cur["x"].max()) - min(ref["x"].min(), cur["x"].min())) / ref["x"].std(ddof=0)
    assert abs(sampled["wasserstein_norm"] - exact["wasserstein_norm"]) <= bound * span
    assert sampled["ks_statistic"] != exact["ks_statistic"]  # the sample is really a sample


def test_sample_rows_below_the_kept_reference_values_is_refused():
    try:
        DriftThresholds(max_reference_sample=1000, sample_rows=999)
    except ValueError as exc:
        assert "sample_rows" in str(exc)
    else:
        raise AssertionError("sample_rows < max_reference_sample was accepted")


def test_the_pages_bars_of_a_big_batch_come_from_a_sample_and_say_so():
    from retrain_assets.core.reports.drift import CHART_ROWS, render_drift_html

    ref, cur = _frames(n=CHART_ROWS + 5_000)
    prof = build_reference_profile(ref, ["x"], [], thresholds=SMALL)
    features = feature_drift(prof, cur, SMALL)
    page = render_drift_html("t", features, {"n_rows": len(cur)}, prof, cur)
    assert f"bars of a seeded sample of {CHART_ROWS:,} of its {len(cur):,} rows" in page
    small = render_drift_html("t", features, {"n_rows": 100}, prof, cur.head(100))
    assert "seeded sample" not in small
