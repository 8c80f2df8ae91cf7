"""Detected vs severity (issue 25): a feature's shift is *detected* when the two-sample test against
the profile's kept reference sample is certain (Benjamini-Hochberg across the batch's features at
`detection_alpha`), its *severity* is the distance's effect-size band whatever the sample size, and
it drifts only when detected with severity moderate or more. Small seeded frames, a few seconds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrain_assets.core.monitoring.drift import SEVERITIES, dataset_drift, feature_drift
from retrain_assets.core.monitoring.profile import build_reference_profile
from retrain_assets.core.policy.definition import DriftThresholds

NUMERIC = ["lognormal", "uniform", "normal", "counts"]
CATEGORICAL = ["level16", "channel"]
LEVELS = np.array([f"level_{i:02d}" for i in range(16)], dtype=object)
LEVEL_P = np.linspace(2.0, 1.0, 16) / np.linspace(2.0, 1.0, 16).sum()
CHANNELS = np.array(["web", "app", "branch", "phone"], dtype=object)


def _frame(rows: int, rng: np.random.Generator, shift: str = "none") -> pd.DataFrame:
    """shift "none": the reference distribution; "subtle": lognormal x1.03, uniform +2 % of its
    range, 3 points of mass from the first level of 16 to the last (each certain at 1e5 rows, each
    far below the 0.1 distances); "big": normal +0.5 std and the channel mix turned around."""
    level_p = LEVEL_P.copy()
    if shift == "subtle":
        level_p[0] -= 0.03
        level_p[-1] += 0.03
    channel_p = [0.1, 0.15, 0.3, 0.45] if shift == "big" else [0.45, 0.3, 0.15, 0.1]
    return pd.DataFrame({
        "lognormal": rng.lognormal(2.0, 0.5, rows) * (1.03 if shift == "subtle" else 1.0),
        "uniform": rng.uniform(0.0, 100.0, rows) + (2.0 if shift == "subtle" else 0.0),
        "normal": rng.normal(0.5 if shift == "big" else 0.0, 1.0, rows),
        "counts": rng.poisson(4, rows),
        "level16": LEVELS[rng.choice(16, rows, p=level_p)],
        "channel": CHANNELS[rng.choice(4, rows, p=channel_p)],
    })


def _table(rows: int, seed: int, shift: str = "none", thresholds: DriftThresholds = DriftThresholds()) -> pd.DataFrame:
    reference = _frame(rows, np.random.default_rng([seed, rows, 0]))
    current = _frame(rows, np.random.default_rng([seed, rows, 1]), shift)
    profile = build_reference_profile(reference, NUMERIC, CATEGORICAL, thresholds=thresholds)
    return feature_drift(profile, current, thresholds).set_index("feature")


@pytest.mark.parametrize("rows, seeds", [(1_000, 40), (10_000, 8), (100_000, 2)])
def test_unchanged_columns_stay_quiet_at_every_size(rows, seeds):
    # 40 batches x 6 features at 1e3 rows: a per-feature 5 % level (the former small-sample
    # verdict) flags some of them here; BH at detection_alpha = 0.001 flags none.
    legacy = 0
    for seed in range(seeds):
        table = _table(rows, seed)
        assert not table["detected"].any() and not table["drifted"].any(), table[["p_value_adjusted", "severity"]]
        assert dataset_drift(table.reset_index())["n_drifted"] == 0
        legacy += int((table["p_value"] < 0.05).sum())
    if rows == 1_000:
        assert legacy > 0


def test_subtle_shifts_are_detected_where_certain_with_minor_severity():
    table = _table(100_000, 5, "subtle")
    subtle = ["lognormal", "uniform", "level16"]
    assert table.loc[subtle, "detected"].all() and (table.loc[subtle, "severity"] == "minor").all()
    assert not table["drifted"].any()  # certain but tiny: reported, nobody paged
    assert not table.drop(index=subtle)["detected"].any()
    # at 1e3 rows the same shifts are within the sampling noise: not detected
    small = _table(1_000, 5, "subtle")
    assert not small["detected"].any() and not small["drifted"].any()


@pytest.mark.parametrize("rows", [300, 1_000, 10_000])
def test_big_shifts_are_detected_with_severity_at_least_moderate(rows):
    table = _table(rows, 2, "big")
    big = ["normal", "channel"]
    assert table.loc[big, "detected"].all() and table.loc[big, "drifted"].all()
    assert set(table.loc[big, "severity"]) <= {"moderate", "major"}
    assert table.loc["normal", "severity"] == "major"  # +0.5 std: normed Wasserstein about 0.5
    assert not table.drop(index=big)["drifted"].any()
    level = DriftThresholds().detection_alpha if rows >= 1_000 else DriftThresholds().alpha
    assert (table["detection_level"] == level).all()


def test_severity_bands_do_not_depend_on_the_sample_size():
    bands = {rows: _table(rows, 9, "subtle")["severity"] for rows in (20_000, 100_000)}
    assert bands[20_000].loc[["lognormal", "uniform", "level16"]].tolist() == ["minor"] * 3
    assert (bands[20_000] == bands[100_000]).all()
    t = DriftThresholds()
    assert [t.severity("numeric", d) for d in (0.0, 0.019, 0.02, 0.1, 0.1001, 0.25, math.inf)] == [
        "none", "none", "minor", "minor", "moderate", "major", "major"]
    assert t.severity("categorical", math.nan) is None
    # a threshold above severity_major: drifted still means "distance above the threshold"
    high = dataclasses.replace(t, wasserstein_threshold=0.3)
    assert [high.severity("numeric", d) for d in (0.26, 0.31)] == ["minor", "major"]
    assert set(SEVERITIES) == {"none", "minor", "moderate", "major"}


def test_detection_uses_the_kept_reference_sample_like_scipy():
    """Two-sample with what the comparison has: the KS p-value is scipy's against the profile's
    kept (<= max_reference_sample) sorted values, chi-square uses the exact reference counts, and
    detection compares their Benjamini-Hochberg adjustment (scipy) with detection_alpha."""
    thresholds = dataclasses.replace(DriftThresholds(), max_reference_sample=5_000)
    reference = _frame(30_000, np.random.default_rng(1))
    current = _frame(30_000, np.random.default_rng(2), "subtle")
    profile = build_reference_profile(reference, NUMERIC, CATEGORICAL, thresholds=thresholds)
    table = feature_drift(profile, current, thresholds).set_index("feature")
    p = []
    for name in NUMERIC:
        kept = profile.numeric[name].sorted_values
        assert len(kept) == 5_000
        expected = stats.ks_2samp(kept, current[name], method="asymp")
        assert table.loc[name, "ks_p_value"] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
        p.append(expected.pvalue)
    for name in CATEGORICAL:
        levels = sorted(set(reference[name]))
        tab = np.array([[int((reference[name] == v).sum()) for v in levels], [int((current[name] == v).sum()) for v in levels]])
        p.append(stats.chi2_contingency(tab, correction=False).pvalue)
        assert table.loc[name, "chi2_p_value"] == pytest.approx(p[-1], rel=1e-9, abs=1e-300)
    adjusted = stats.false_discovery_control(np.array(p), method="bh")
    assert table["p_value_adjusted"].to_numpy() == pytest.approx(adjusted, rel=1e-9, abs=1e-300)
    assert table["detected"].tolist() == (adjusted < thresholds.detection_alpha).tolist()
    # with 5,000 kept reference values the uniform's +2 % is not certain; with all 30,000 it is
    assert not table.loc["uniform", "detected"]
    full = build_reference_profile(reference, NUMERIC, CATEGORICAL, thresholds=DriftThresholds())
    assert feature_drift(full, current).set_index("feature").loc["uniform", "detected"]


def test_psi_threshold_still_decides_drifted_and_the_verdicts_are_reported():
    thresholds = dataclasses.replace(DriftThresholds(), psi_threshold=0.001)
    table = _table(100_000, 5, "subtle", thresholds)
    assert (table["test"] == "psi").all()
    assert table["drifted"].tolist() == (table["psi"] >= 0.001).tolist()
    assert table.loc[["lognormal", "uniform", "level16"], "detected"].all()


def test_the_drift_page_shows_detected_and_severity():
    from retrain_assets.core.reports.drift import render_drift_html

    reference = _frame(100_000, np.random.default_rng([5, 100_000, 0]))
    current = _frame(100_000, np.random.default_rng([5, 100_000, 1]), "subtle")
    profile = build_reference_profile(reference, NUMERIC, CATEGORICAL)
    table = feature_drift(profile, current)
    page = render_drift_html("t", table, dataset_drift(table), profile, current.head(100))
    assert "<th>detected</th><th>severity</th>" in page
    assert page.count("<tr class=detected>") == 3 and page.count("detected, minor") == 3
    assert "detection\nlevel (0.001)" in page and "<tr class=drift>" not in page
