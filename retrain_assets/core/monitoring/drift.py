"""Drift verdicts of one batch against the reference profile (`profile.py`).

The feature table has one row per profiled feature with every statistic of `distances.py`, the
Benjamini-Hochberg adjusted p-values across the batch's features and two verdicts under the
policy's `DriftThresholds`: *detected* (the two-sample test is certain: below `detection_alpha`
from `large_sample_rows` current values on, below `alpha` under it) and *severity* (the distance's effect-size band, independent of it);
a feature drifts when both hold (severity at least moderate), and the batch verdict is the share
of drifted features.
Label drift, prediction (score) drift and the out-of-distribution share complete the picture.
Missing values, categories and bins follow `values.py`; a statistic that cannot be computed (no
current or no reference values) is NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from retrain_assets.core.monitoring.distances import (
    category_vectors,
    chi_square_counts,
    compare,
    jensen_shannon_counts,
    ks_compared,
    psi,
    wasserstein_compared,
)
from retrain_assets.core.monitoring.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from retrain_assets.core.monitoring.values import as_float_array, bin_counts_of, binary_labels, category_counts, factorize
from retrain_assets.core.policy.definition import DriftThresholds

# Imported inside the functions that use them, not with the module (`retrain-assets drift` loads
# them on a thread while it reads columns: `apps.drift.REPORT_MODULES`).
DEFERRED_IMPORTS = ("scipy.stats",)
INSUFFICIENT_DATA = "insufficient data"
FEATURE_COLUMNS = [
    "feature", "kind", "n_reference", "n_current", "missing_share",
    "psi", "psi_band", "ks_statistic", "ks_p_value", "wasserstein_norm", "jensen_shannon",
    "chi2_statistic", "chi2_p_value", "p_value", "p_value_adjusted",
    "test", "drift_score", "threshold", "drifted",
    "detected", "detection_level", "severity",
]  # fmt: skip
SEVERITIES = ("none", "minor", "moderate", "major")


def feature_drift(profile: ReferenceProfile, df: pd.DataFrame, thresholds: DriftThresholds = DriftThresholds()) -> pd.DataFrame:
    """One row per profiled feature (numeric first, then categorical) with every statistic and
    the verdict.

    n_current is the feature's non-missing current count and missing_share its missing share
    of the batch's rows; a numeric feature's order statistics read at most
    `thresholds.sample_rows` of its values (`values.sample_of`). `detected`: the KS (numeric) / chi-square (categorical) p-value,
    Benjamini-Hochberg adjusted across the batch's features (`p_value_adjusted`), is below
    `detection_level`: `thresholds.detection_alpha` from large_sample_rows non-missing current
    values on, `thresholds.alpha` below (small batches, where power is scarce). `severity`: the band of
    wasserstein_norm (numeric) or jensen_shannon (categorical), `DriftThresholds.severity`,
    whatever the batch size. `drifted` = detected and severity "moderate" or "major" (the
    distance strictly above its threshold); with `thresholds.psi_threshold` set, PSI >=
    psi_threshold instead (at any batch size). `test`, `drift_score` and `threshold` keep the
    statistic of the former single verdict for readers: with n_current < large_sample_rows the
    p-value test ("ks" / "chi2", p_value_adjusted vs alpha), otherwise the distance
    ("wasserstein" / "jensen_shannon" vs its threshold), or "psi". A feature with no current or
    no reference values gets test "insufficient data", NaN statistics, severity None and
    detected / drifted False. Statistics not defined for a kind are NaN; psi_band is "none" /
    "moderate" / "major" (None when psi is NaN).
    """
    absent = [c for c in [*profile.numeric, *profile.categorical] if c not in df.columns]
    if absent:
        raise KeyError(f"batch lacks profiled columns {absent}")
    n_rows = len(df)
    rows: list[dict[str, Any]] = []
    for name, prof in profile.numeric.items():
        rows.append(numeric_feature_drift(prof, df[name], n_rows, thresholds.sample_rows))
    for name, prof in profile.categorical.items():
        counts, n_missing = category_counts(df[name])
        rows.append(categorical_drift_row(prof, n_rows, counts, n_missing))
    return drift_table(rows, thresholds)


def numeric_feature_drift(profile: NumericProfile, values: Any, n_rows: int, sample_rows: int | None = None) -> dict[str, Any]:
    """One numeric feature's row of `feature_drift` from the batch's values of it (one sort of at
    most `sample_rows` of them: `DriftThresholds.sample_rows`); the DuckDB path
    (`core.monitoring.large_batch_drift`) calls it with one fetched column at a time."""
    cmp = compare(profile, values, sample_rows)
    row = _empty_row(profile.name, "numeric", profile.n, cmp.n_values, cmp.n_missing, n_rows)
    if cmp.m and profile.n:
        row["ks_statistic"], row["ks_p_value"] = ks_compared(profile, cmp)
        cur_bins = bin_counts_of(cmp.sorted, profile.bin_edges)
        row["psi"] = psi(profile.bin_counts, cur_bins)
        row["jensen_shannon"] = jensen_shannon_counts(profile.bin_counts, cur_bins)
        row["wasserstein_norm"] = wasserstein_compared(profile, cmp)
        row["p_value"] = row["ks_p_value"]
    return row


def categorical_drift_row(profile: CategoricalProfile, n_rows: int, counts: dict[str, int], n_missing: int) -> dict[str, Any]:
    """One categorical feature's statistics from the batch's non-missing counts per category string."""
    n_cur = int(sum(counts.values()))
    row = _empty_row(profile.name, "categorical", profile.n, n_cur, n_missing, n_rows)
    if n_cur and profile.n:
        ref, cur = category_vectors(profile, counts)
        row["psi"] = psi(ref, cur)
        row["jensen_shannon"] = jensen_shannon_counts(ref, cur)
        row["chi2_statistic"], row["chi2_p_value"] = chi_square_counts(ref, cur)
        row["p_value"] = row["chi2_p_value"]
    return row


def drift_table(rows: list[dict[str, Any]], thresholds: DriftThresholds = DriftThresholds()) -> pd.DataFrame:
    """The feature table from per-feature rows: Benjamini-Hochberg across the features, PSI bands
    and each feature's verdict (the rules are in `feature_drift`'s docstring)."""
    table = pd.DataFrame(rows, columns=FEATURE_COLUMNS)
    table["p_value_adjusted"] = benjamini_hochberg(table["p_value"].to_numpy(dtype=np.float64)) if rows else []
    for i, row in table.iterrows():  # one iteration per feature, not per data row
        testable = row["n_current"] > 0 and row["n_reference"] > 0
        if not testable:
            continue
        psi_value = row["psi"]
        if not math.isnan(psi_value):
            band = "major" if psi_value >= thresholds.psi_major else "moderate" if psi_value >= thresholds.psi_moderate else "none"
            table.at[i, "psi_band"] = band
        distance = row["wasserstein_norm"] if row["kind"] == "numeric" else row["jensen_shannon"]
        severity = thresholds.severity(row["kind"], float(distance))
        small = row["n_current"] < thresholds.large_sample_rows
        level = thresholds.alpha if small else thresholds.detection_alpha
        detected = bool(row["p_value_adjusted"] < level)
        if small:
            test = "ks" if row["kind"] == "numeric" else "chi2"
            score, threshold = row["p_value_adjusted"], thresholds.alpha
        elif row["kind"] == "numeric":
            test, score, threshold = "wasserstein", distance, thresholds.wasserstein_threshold
        else:
            test, score, threshold = "jensen_shannon", distance, thresholds.jensen_shannon_threshold
        drifted = detected and severity in ("moderate", "major")
        if thresholds.psi_threshold is not None:
            test, score, threshold = "psi", psi_value, thresholds.psi_threshold
            drifted = bool(score >= threshold)
        table.at[i, "test"] = test
        table.at[i, "drift_score"] = score
        table.at[i, "threshold"] = threshold
        table.at[i, "drifted"] = drifted
        table.at[i, "detected"] = detected
        table.at[i, "detection_level"] = level
        table.at[i, "severity"] = severity
    table["drifted"] = table["drifted"].astype(bool)
    table["detected"] = table["detected"].astype(bool)
    for col in ("n_reference", "n_current"):
        table[col] = table[col].astype(np.int64)
    return table


def dataset_drift(feature_table: pd.DataFrame, thresholds: DriftThresholds = DriftThresholds()) -> dict[str, Any]:
    """Batch-level verdict: drifted when at least `dataset_drift_share` of the tested features
    drift. Features with "insufficient data" are left out of the share and counted in
    `n_untested`; with no tested feature the share is NaN and the batch does not drift.
    """
    tested = feature_table[feature_table["test"] != INSUFFICIENT_DATA]
    n_features = int(len(tested))
    n_drifted = int(tested["drifted"].astype(bool).sum())
    share = n_drifted / n_features if n_features else math.nan
    return {
        "n_features": n_features,
        "n_drifted": n_drifted,
        "drift_share": share,
        "dataset_drifted": bool(n_features > 0 and share >= thresholds.dataset_drift_share),
        "n_untested": int(len(feature_table) - n_features),
    }


def benjamini_hochberg(p_values: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (`scipy.stats.false_discovery_control`, "bh").

    NaN entries stay NaN and are not counted among the hypotheses.
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        from scipy import stats  # on first use, as in `distances.py`

        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def label_drift(reference_positive_rate: float | None, labels: Any) -> dict[str, Any]:
    """Label-prior shift: current positive rate vs the reference's, with the two-sided exact
    binomial test (`scipy.stats.binomtest`) of the current positives against the reference rate.
    Labels are 0/1 (or bool); missing labels are dropped. NaN where there is nothing to compare.
    """
    y = binary_labels(labels if labels is not None else [])
    ref = math.nan if reference_positive_rate is None else float(reference_positive_rate)
    cur = float(y.mean()) if len(y) else math.nan
    p_value = math.nan
    if len(y) and 0.0 <= ref <= 1.0:
        from scipy import stats  # on first use, as in `distances.py`

        p_value = float(stats.binomtest(int(y.sum()), len(y), ref).pvalue)
    return {"reference_positive_rate": ref, "current_positive_rate": cur, "difference": cur - ref, "p_value": p_value}


def prediction_drift(score_profile: NumericProfile, scores: Any) -> dict[str, float]:
    """Drift of the model's score distribution, with the numeric feature statistics."""
    cmp = compare(score_profile, scores)
    ks_stat, ks_p = ks_compared(score_profile, cmp)
    cur_bins = bin_counts_of(cmp.sorted, score_profile.bin_edges)
    empty = cmp.m == 0 or score_profile.n == 0
    return {
        "ks_statistic": ks_stat,
        "ks_p_value": ks_p,
        "psi": math.nan if empty else psi(score_profile.bin_counts, cur_bins),
        "jensen_shannon": math.nan if empty else jensen_shannon_counts(score_profile.bin_counts, cur_bins),
        "wasserstein_norm": wasserstein_compared(score_profile, cmp),
    }


def out_of_distribution_share(profile: ReferenceProfile, df: pd.DataFrame) -> float:
    """Share of rows with any category unseen in the reference or any numeric value outside the
    reference [min, max]. Missing values are not out of distribution. NaN for an empty frame.
    """
    if len(df) == 0:
        return math.nan
    ood = np.zeros(len(df), dtype=bool)
    for name, prof in profile.numeric.items():
        if name in df.columns and prof.n:
            x = as_float_array(df[name])
            with np.errstate(invalid="ignore"):
                ood |= (x < prof.min) | (x > prof.max)
    for name, prof in profile.categorical.items():
        if name in df.columns:
            codes, keys = factorize(df[name])
            unseen = np.array([k not in prof.counts for k in keys] + [False], dtype=bool)
            ood |= unseen[codes]  # code -1 (missing) picks the trailing False
    return float(ood.mean())


def _empty_row(name: str, kind: str, n_ref: int, n_cur: int, n_missing: int, n_rows: int) -> dict[str, Any]:
    row: dict[str, Any] = {c: math.nan for c in FEATURE_COLUMNS}
    row.update(
        feature=name,
        kind=kind,
        n_reference=int(n_ref),
        n_current=int(n_cur),
        missing_share=n_missing / n_rows if n_rows else math.nan,
        psi_band=None,
        test=INSUFFICIENT_DATA,
        drifted=False,
        detected=False,
        severity=None,
    )
    return row
