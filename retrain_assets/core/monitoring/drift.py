"""Drift statistics: a reference profile of the training data and per-batch tests against it.

The reference is summarised once (`build_reference_profile`) into a compact, JSON-serialisable
`ReferenceProfile`: per numeric feature its moments, reference-quantile bins and a sorted
(sub)sample with prefix sums; per categorical feature its category counts; plus the champion's
score distribution and the label prior. Every statistic below compares that profile with one
current batch column and agrees with the corresponding scipy function on the same data, without
ever merging the two samples: a numeric comparison costs one sort of the batch (m values) plus
binary searches of the shorter of the two sorted samples in the longer one (n kept reference
values), O(m log m + min(m, n) log max(m, n)); a categorical one is one factorisation.

Conventions shared by every function:
- Missing values (None, NaN, and for numeric features also +/-inf and text that is not a number)
  are dropped and counted as missing; statistics use the non-missing values only.
- Categories are compared as strings (`str(value)`, with integral floats written as integers,
  so an integer-coded column that turned float by gaining NaN still matches); a current
  category never seen in the reference falls into one extra "unseen" bucket, which has zero
  reference mass.
- Numeric bins are the reference's interior quantile edges e1 < ... < ek (duplicates removed),
  giving the k+1 bins (-inf, e1], (e1, e2], ..., (ek, +inf).
- A statistic that cannot be computed (no current or no reference values) is NaN.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon as _scipy_jensenshannon

from retrain_assets.core.policy.definition import DriftThresholds

INSUFFICIENT_DATA = "insufficient data"
FEATURE_COLUMNS = [
    "feature", "kind", "n_reference", "n_current", "missing_share",
    "psi", "psi_band", "ks_statistic", "ks_p_value", "wasserstein_norm", "jensen_shannon",
    "chi2_statistic", "chi2_p_value", "p_value", "p_value_adjusted",
    "test", "drift_score", "threshold", "drifted",
]  # fmt: skip


@dataclass(eq=False)
class NumericProfile:
    """Reference summary of one numeric feature.

    `std` is the population standard deviation (ddof=0) of the non-missing values. `bin_edges`
    are the unique interior `n_bins`-quantiles (linear interpolation) and `bin_counts` the
    reference counts of the len(bin_edges)+1 bins (-inf, e1], (e1, e2], ..., (ek, +inf).
    `sorted_values` are the sorted non-missing values, or, above `max_reference_sample`, that many
    evenly spaced order statistics (always including min and max). `prefix_sums[k]` is the sum of
    the k smallest kept values (length len(sorted_values) + 1, prefix_sums[0] == 0).
    """

    name: str
    n: int
    n_missing: int
    mean: float
    std: float
    min: float
    max: float
    bin_edges: np.ndarray
    bin_counts: np.ndarray
    sorted_values: np.ndarray
    prefix_sums: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericProfile):
            return NotImplemented
        scalars = ("mean", "std", "min", "max")
        return (
            (self.name, self.n, self.n_missing) == (other.name, other.n, other.n_missing)
            and all(_same_float(getattr(self, s), getattr(other, s)) for s in scalars)
            and all(
                np.array_equal(getattr(self, a), getattr(other, a), equal_nan=True)
                for a in ("bin_edges", "bin_counts", "sorted_values", "prefix_sums")
            )
        )


@dataclass
class CategoricalProfile:
    """Reference summary of one categorical feature: counts per category (as strings)."""

    name: str
    n: int
    n_missing: int
    counts: dict[str, int]


@dataclass
class ReferenceProfile:
    """What drift is measured against: the training window's features, scores and label prior."""

    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    n_rows: int
    scores: NumericProfile | None = None
    positive_rate: float | None = None
    created_from: str = ""

    def to_json(self) -> str:
        """Lossless JSON: floats are written with repr precision, NaN as null.

        `prefix_sums` are not stored; `from_json` recomputes them (bit-identical, same cumsum).
        """
        payload = {
            "format": 1,
            "n_rows": self.n_rows,
            "created_from": self.created_from,
            "positive_rate": _float_or_none(self.positive_rate),
            "numeric": {k: _numeric_to_dict(p) for k, p in self.numeric.items()},
            "categorical": {
                k: {"name": p.name, "n": p.n, "n_missing": p.n_missing, "counts": p.counts} for k, p in self.categorical.items()
            },
            "scores": _numeric_to_dict(self.scores) if self.scores is not None else None,
        }
        return json.dumps(payload, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        """Inverse of `to_json`."""
        raw = json.loads(text)
        if raw.get("format") != 1:
            raise ValueError(f"unsupported reference profile format {raw.get('format')!r}")
        rate = raw.get("positive_rate")
        return cls(
            numeric={k: _numeric_from_dict(d) for k, d in raw["numeric"].items()},
            categorical={
                k: CategoricalProfile(d["name"], int(d["n"]), int(d["n_missing"]), {str(c): int(v) for c, v in d["counts"].items()})
                for k, d in raw["categorical"].items()
            },
            n_rows=int(raw["n_rows"]),
            scores=_numeric_from_dict(raw["scores"]) if raw.get("scores") is not None else None,
            positive_rate=None if rate is None else float(rate),
            created_from=str(raw.get("created_from", "")),
        )


# --------------------------------------------------------------------------------------------
# Building the reference


def build_reference_profile(
    df: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    thresholds: DriftThresholds = DriftThresholds(),
    created_from: str = "",
) -> ReferenceProfile:
    """Profile the reference rows (usually the champion's training window).

    `scores` are the champion's scores on these rows and `labels` their 0/1 labels; either may
    be None. The label prior is the mean of the non-missing labels (None when there are none).
    """
    missing = [c for c in [*numeric, *categorical] if c not in df.columns]
    if missing:
        raise KeyError(f"reference frame lacks columns {missing}")
    positive_rate = None
    if labels is not None:
        y = _binary_labels(labels)
        positive_rate = float(y.mean()) if len(y) else None
    return ReferenceProfile(
        numeric={c: numeric_profile(c, df[c], thresholds) for c in numeric},
        categorical={c: categorical_profile(c, df[c]) for c in categorical},
        n_rows=int(len(df)),
        scores=numeric_profile("score", scores, thresholds) if scores is not None else None,
        positive_rate=positive_rate,
        created_from=created_from,
    )


def numeric_profile(name: str, values: Any, thresholds: DriftThresholds = DriftThresholds()) -> NumericProfile:
    """Profile one numeric column (see `NumericProfile` for the conventions)."""
    finite, n_missing = _numeric_values(values)
    full = np.sort(finite)
    n = len(full)
    if n:
        edges = np.unique(np.quantile(full, np.arange(1, thresholds.n_bins) / thresholds.n_bins))
        mean, std, lo, hi = float(np.mean(full)), float(np.std(full)), float(full[0]), float(full[-1])
    else:
        edges = np.empty(0)
        mean = std = lo = hi = math.nan
    if n > thresholds.max_reference_sample:
        kept = full[np.round(np.linspace(0, n - 1, thresholds.max_reference_sample)).astype(np.int64)]
    else:
        kept = full
    return NumericProfile(
        name=name,
        n=n,
        n_missing=n_missing,
        mean=mean,
        std=std,
        min=lo,
        max=hi,
        bin_edges=edges.astype(np.float64),
        bin_counts=_bin_counts(full, edges),
        sorted_values=np.ascontiguousarray(kept, dtype=np.float64),
        prefix_sums=_prefix_sums(kept),
    )


def categorical_profile(name: str, values: Any) -> CategoricalProfile:
    """Profile one categorical column: non-missing counts per category string."""
    counts, n_missing = _category_counts(values)
    return CategoricalProfile(name=name, n=int(sum(counts.values())), n_missing=n_missing, counts=counts)


# --------------------------------------------------------------------------------------------
# Statistics


def psi(expected_fractions: Any, actual_fractions: Any, eps: float = 1e-4) -> float:
    """Population Stability Index: sum((a - e) * ln(a / e)) over bins.

    Both vectors are normalised to sum 1 (so counts work too), floored at `eps` (an empty bin
    gets eps instead of making the index infinite) and renormalised. NaN when either is empty.
    """
    e = np.asarray(expected_fractions, dtype=np.float64)
    a = np.asarray(actual_fractions, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"psi needs vectors of equal length, got {e.shape} and {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        return math.nan
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def psi_numeric(profile: NumericProfile, values: Any) -> float:
    """PSI over the reference-quantile bins."""
    return psi(profile.bin_counts, _bin_counts(_sorted_numeric(values), profile.bin_edges))


def psi_categorical(profile: CategoricalProfile, values: Any) -> float:
    """PSI over the reference categories plus the unseen bucket."""
    ref, cur = _category_vectors(profile, _category_counts(values)[0])
    return psi(ref, cur)


def ks_test(profile: NumericProfile, values: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: (statistic, two-sided p-value).

    The statistic is sup |F_ref - F_cur| of the right-continuous ECDFs, evaluated at each
    distinct current value x with both the values at x and the left limits at x: that is where
    the supremum is attained, so no merge of the two samples is needed. The p-value is scipy's
    asymptotic one, `kstwo.sf(d, round(n*m/(n+m)))` clipped to [0, 1]. Both are computed from
    the kept reference `sorted_values` (n = its length), so the result always equals
    `scipy.stats.ks_2samp(profile.sorted_values, values, method="asymp")`, ties included; for a
    subsampled reference (n > max_reference_sample) that is the test of the kept order
    statistics, whose ECDF is within 1/n of the full reference's. As in scipy, the p-value is
    NaN when round(n*m/(n+m)) is 0 (one value on each side).
    """
    return _ks(profile, _compare(profile, values))


def wasserstein_normalized(profile: NumericProfile, values: Any) -> float:
    """Wasserstein-1 distance (integral of |F_ref - F_cur|) divided by the reference std.

    Equals `scipy.stats.wasserstein_distance(ref, cur) / std`, computed from the sorted
    reference and its prefix sums in O(m log n). When the reference is constant (std 0) the
    result is 0.0 if every current value equals that constant, else +inf.
    """
    return _wasserstein_norm(profile, _compare(profile, values))


def jensen_shannon_numeric(profile: NumericProfile, values: Any) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the binned reference and current."""
    return _js(profile.bin_counts, _bin_counts(_sorted_numeric(values), profile.bin_edges))


def jensen_shannon_categorical(profile: CategoricalProfile, values: Any) -> float:
    """Jensen-Shannon distance (base 2) over the reference categories plus the unseen bucket."""
    return _js(*_category_vectors(profile, _category_counts(values)[0]))


def chi_square_test(profile: CategoricalProfile, values: Any) -> tuple[float, float]:
    """Chi-square test of homogeneity, reference counts vs current counts: (statistic, p-value).

    The 2 x k table covers the reference categories plus the unseen bucket, minus categories
    that are zero in both rows; no continuity correction. Same as
    `scipy.stats.chi2_contingency(table, correction=False)`; (0.0, 1.0) when one category is left.
    """
    return _chi2(*_category_vectors(profile, _category_counts(values)[0]))


def benjamini_hochberg(p_values: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (`scipy.stats.false_discovery_control`, "bh").

    NaN entries stay NaN and are not counted among the hypotheses.
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def out_of_distribution_share(profile: ReferenceProfile, df: pd.DataFrame) -> float:
    """Share of rows with any category unseen in the reference or any numeric value outside the
    reference [min, max]. Missing values are not out of distribution. NaN for an empty frame.
    """
    if len(df) == 0:
        return math.nan
    ood = np.zeros(len(df), dtype=bool)
    for name, prof in profile.numeric.items():
        if name in df.columns and prof.n:
            x = _as_float_array(df[name])
            with np.errstate(invalid="ignore"):
                ood |= (x < prof.min) | (x > prof.max)
    for name, prof in profile.categorical.items():
        if name in df.columns:
            codes, keys = _factorize(df[name])
            unseen = np.array([k not in prof.counts for k in keys] + [False], dtype=bool)
            ood |= unseen[codes]  # code -1 (missing) picks the trailing False
    return float(ood.mean())


def feature_drift(profile: ReferenceProfile, df: pd.DataFrame, thresholds: DriftThresholds = DriftThresholds()) -> pd.DataFrame:
    """One row per profiled feature (numeric first, then categorical) with every statistic and
    the verdict.

    n_current is the feature's non-missing current count and missing_share its missing share
    of the batch's rows. With n_current < large_sample_rows the verdict is the p-value test (KS
    for numeric, chi-square for categorical) with the Benjamini-Hochberg adjusted p (across all
    features of the batch) below alpha; otherwise the distance test: wasserstein_norm (numeric)
    or jensen_shannon (categorical) strictly above its threshold. `drift_score` is the value
    the verdict used. With `thresholds.psi_threshold` set, PSI >= psi_threshold is the verdict
    (test "psi") at any batch size. A feature with no current or no reference values gets test
    "insufficient data", NaN statistics and drifted False. Statistics not defined for a kind
    are NaN; psi_band is "none" / "moderate" / "major" (None when psi is NaN).
    """
    absent = [c for c in [*profile.numeric, *profile.categorical] if c not in df.columns]
    if absent:
        raise KeyError(f"batch lacks profiled columns {absent}")
    n_rows = len(df)
    rows: list[dict[str, Any]] = []
    for name, prof in profile.numeric.items():
        rows.append(numeric_feature_drift(prof, df[name], n_rows))
    for name, prof in profile.categorical.items():
        counts, n_missing = _category_counts(df[name])
        rows.append(categorical_drift_row(prof, n_rows, counts, n_missing))
    return drift_table(rows, thresholds)


def numeric_feature_drift(profile: NumericProfile, values: Any, n_rows: int) -> dict[str, Any]:
    """One numeric feature's row of `feature_drift` from the batch's values of it (one sort of
    them); the DuckDB path (`core.large_batch`) calls it with one fetched column at a time."""
    cmp = _compare(profile, values)
    row = _empty_row(profile.name, "numeric", profile.n, cmp.m, cmp.n_missing, n_rows)
    if cmp.m and profile.n:
        row["ks_statistic"], row["ks_p_value"] = _ks(profile, cmp)
        cur_bins = _bin_counts(cmp.sorted, profile.bin_edges)
        row["psi"] = psi(profile.bin_counts, cur_bins)
        row["jensen_shannon"] = _js(profile.bin_counts, cur_bins)
        row["wasserstein_norm"] = _wasserstein_norm(profile, cmp)
        row["p_value"] = row["ks_p_value"]
    return row


def categorical_drift_row(profile: CategoricalProfile, n_rows: int, counts: dict[str, int], n_missing: int) -> dict[str, Any]:
    """One categorical feature's statistics from the batch's non-missing counts per category string."""
    n_cur = int(sum(counts.values()))
    row = _empty_row(profile.name, "categorical", profile.n, n_cur, n_missing, n_rows)
    if n_cur and profile.n:
        ref, cur = _category_vectors(profile, counts)
        row["psi"] = psi(ref, cur)
        row["jensen_shannon"] = _js(ref, cur)
        row["chi2_statistic"], row["chi2_p_value"] = _chi2(ref, cur)
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
        if thresholds.psi_threshold is not None:
            test, score, threshold = "psi", psi_value, thresholds.psi_threshold
            drifted = bool(score >= threshold)
        elif row["n_current"] < thresholds.large_sample_rows:
            test = "ks" if row["kind"] == "numeric" else "chi2"
            score, threshold = row["p_value_adjusted"], thresholds.alpha
            drifted = bool(score < threshold)
        elif row["kind"] == "numeric":
            test, score, threshold = "wasserstein", row["wasserstein_norm"], thresholds.wasserstein_threshold
            drifted = bool(score > threshold)
        else:
            test, score, threshold = "jensen_shannon", row["jensen_shannon"], thresholds.jensen_shannon_threshold
            drifted = bool(score > threshold)
        table.at[i, "test"] = test
        table.at[i, "drift_score"] = score
        table.at[i, "threshold"] = threshold
        table.at[i, "drifted"] = drifted
    table["drifted"] = table["drifted"].astype(bool)
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


def label_drift(reference_positive_rate: float | None, labels: Any) -> dict[str, Any]:
    """Label-prior shift: current positive rate vs the reference's, with the two-sided exact
    binomial test (`scipy.stats.binomtest`) of the current positives against the reference rate.
    Labels are 0/1 (or bool); missing labels are dropped. NaN where there is nothing to compare.
    """
    y = _binary_labels(labels if labels is not None else [])
    ref = math.nan if reference_positive_rate is None else float(reference_positive_rate)
    cur = float(y.mean()) if len(y) else math.nan
    p_value = math.nan
    if len(y) and 0.0 <= ref <= 1.0:
        p_value = float(stats.binomtest(int(y.sum()), len(y), ref).pvalue)
    return {"reference_positive_rate": ref, "current_positive_rate": cur, "difference": cur - ref, "p_value": p_value}


def prediction_drift(score_profile: NumericProfile, scores: Any) -> dict[str, float]:
    """Drift of the model's score distribution, with the numeric feature statistics."""
    cmp = _compare(score_profile, scores)
    ks_stat, ks_p = _ks(score_profile, cmp)
    cur_bins = _bin_counts(cmp.sorted, score_profile.bin_edges)
    empty = cmp.m == 0 or score_profile.n == 0
    return {
        "ks_statistic": ks_stat,
        "ks_p_value": ks_p,
        "psi": math.nan if empty else psi(score_profile.bin_counts, cur_bins),
        "jensen_shannon": math.nan if empty else _js(score_profile.bin_counts, cur_bins),
        "wasserstein_norm": _wasserstein_norm(score_profile, cmp),
    }


# --------------------------------------------------------------------------------------------
# Internals


@dataclass
class _Comparison:
    """A current numeric column sorted and set against a profile's kept reference values.

    Both ECDFs only step at sample values, so the two are compared at the distinct values `x`
    of the shorter sample (`walk_reference` says which): `ref_le`/`ref_lt` and `cur_le`/`cur_lt`
    count the reference and current values <= x and < x. Walking the shorter sample keeps every
    step O(short * log(long)) apart from sorting the batch.
    """

    sorted: np.ndarray
    n_missing: int
    m: int
    walk_reference: bool = False
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    ref_le: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ref_lt: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cur_le: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cur_lt: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def _compare(profile: NumericProfile, values: Any) -> _Comparison:
    finite, n_missing = _numeric_values(values)
    s = np.sort(finite)
    m, ref = len(s), profile.sorted_values
    cmp = _Comparison(sorted=s, n_missing=n_missing, m=m)
    if m == 0 or len(ref) == 0:
        return cmp
    cmp.walk_reference = m > len(ref)
    walked, other = (ref, s) if cmp.walk_reference else (s, ref)
    x, walked_le = _distinct(walked)
    walked_lt = np.concatenate(([0], walked_le[:-1]))
    other_le = np.searchsorted(other, x, side="right").astype(np.int64)
    other_lt = np.searchsorted(other, x, side="left").astype(np.int64)
    cmp.x = x
    if cmp.walk_reference:
        cmp.ref_le, cmp.ref_lt, cmp.cur_le, cmp.cur_lt = walked_le, walked_lt, other_le, other_lt
    else:
        cmp.ref_le, cmp.ref_lt, cmp.cur_le, cmp.cur_lt = other_le, other_lt, walked_le, walked_lt
    return cmp


def _distinct(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a non-empty sorted array and, for each, the count of values <= it."""
    last = np.empty(len(sorted_values), dtype=bool)
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=last[:-1])
    last[-1] = True
    return sorted_values[last], np.flatnonzero(last).astype(np.int64) + 1


def _ks(profile: NumericProfile, cmp: _Comparison) -> tuple[float, float]:
    n, m = len(profile.sorted_values), cmp.m
    if m == 0 or n == 0:
        return math.nan, math.nan
    # |F_ref - F_cur| at x and just below x; the same fractions scipy forms, so the same floats.
    d_at = np.abs(cmp.ref_le / n - cmp.cur_le / m).max()
    d_below = np.abs(cmp.ref_lt / n - cmp.cur_lt / m).max()
    d = float(max(d_at, d_below))
    big, small = sorted([float(n), float(m)], reverse=True)
    en = np.round(big * small / (big + small))
    if en < 1:
        return d, math.nan
    return d, float(np.clip(stats.kstwo.sf(d, en), 0.0, 1.0))


def _wasserstein_norm(profile: NumericProfile, cmp: _Comparison) -> float:
    r, s = profile.sorted_values, cmp.sorted
    if cmp.m == 0 or len(r) == 0:
        return math.nan
    if not profile.std > 0:
        return 0.0 if s[0] == s[-1] == r[0] else math.inf
    if cmp.walk_reference:  # integrate the batch's ECDF with its prefix sums between reference values
        w = _w1(s, _prefix_sums(s), cmp.x, cmp.ref_le, cmp.cur_le)
    else:  # integrate the reference's ECDF with its stored prefix sums between batch values
        w = _w1(r, profile.prefix_sums, cmp.x, cmp.cur_le, cmp.ref_le)
    return w / profile.std


def _w1(a: np.ndarray, S: np.ndarray, u: np.ndarray, b_le: np.ndarray, a_le: np.ndarray) -> float:
    """Integral over the line of |F_A - F_B| (scipy's `wasserstein_distance`).

    A is a sorted sample of n values with prefix sums S (S[k] = sum of the k smallest). B is
    given by its distinct sorted values u, the counts b_le = #(B <= u) (so m = b_le[-1]) and
    a_le = #(A <= u). H(x) = integral of F_A up to x = (k x - S[k]) / n with k = #(A <= x).
    On [u_i, u_i+1) F_B is the constant c = b_le[i] / m; F_A < c left of q = the ceil(c n)-th
    smallest value of A and F_A >= c from q on, so the piece is
    c (q - lo) - (H(q) - H(lo)) + (H(hi) - H(q)) - c (hi - q), with q clipped into [lo, hi].
    Below u_0 F_B = 0 (integral H(u_0)); above the last u F_B = 1 (integral of 1 - F_A).
    """
    n, m = len(a), int(b_le[-1])

    def H(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return (k * x - S[k]) / n

    left_tail = float(H(u[:1], a_le[:1])[0])
    k_top = int(a_le[-1])
    right_tail = float(((S[n] - S[k_top]) - (n - k_top) * u[-1]) / n)
    if len(u) == 1:
        return left_tail + right_tail
    lo, hi = u[:-1], u[1:]
    k_lo, k_hi = a_le[:-1], a_le[1:]
    cnt = b_le[:-1]
    c = cnt / m
    K = (cnt * n + m - 1) // m  # smallest k with k / n >= c, in 1..n
    q = np.clip(a[K - 1], lo, hi)
    k_q = np.searchsorted(a, q, side="right")
    pieces = c * (2 * q - lo - hi) + H(lo, k_lo) + H(hi, k_hi) - 2 * H(q, k_q)
    return float(left_tail + pieces.sum() + right_tail)


def _js(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return math.nan
    return float(_scipy_jensenshannon(ref, cur, base=2))


def _chi2(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    table = np.vstack([ref_counts, cur_counts]).astype(np.float64)
    if table[0].sum() <= 0 or table[1].sum() <= 0:
        return math.nan, math.nan
    table = table[:, table.sum(axis=0) > 0]
    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def _bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of sorted values in (-inf, e1], (e1, e2], ..., (ek, +inf)."""
    le = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate(([0], le, [len(sorted_values)]))).astype(np.int64)


def _category_vectors(profile: CategoricalProfile, current: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current counts over the reference categories, then the unseen bucket."""
    ref = np.array([*profile.counts.values(), 0], dtype=np.int64)
    seen = [current.get(c, 0) for c in profile.counts]
    unseen = sum(v for k, v in current.items() if k not in profile.counts)
    return ref, np.array([*seen, unseen], dtype=np.int64)


def _factorize(values: Any) -> tuple[np.ndarray, list[str]]:
    """Codes per row (-1 for missing) and the distinct values as strings (may repeat)."""
    if isinstance(values, pd.Series):
        s = values
    else:
        s = pd.Series(values if isinstance(values, np.ndarray) else list(values), dtype=None if isinstance(values, np.ndarray) else object)
    if isinstance(s.dtype, pd.CategoricalDtype):
        return np.asarray(s.cat.codes, dtype=np.int64), [_category_key(c) for c in s.cat.categories]
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), [_category_key(u) for u in uniques]


def _category_key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _category_counts(values: Any) -> tuple[dict[str, int], int]:
    """Non-missing counts per category string, and the missing count."""
    codes, keys = _factorize(values)
    counts = np.bincount(codes + 1, minlength=len(keys) + 1)
    out: dict[str, int] = {}
    for key, count in zip(keys, counts[1:].tolist()):
        if count:
            out[key] = out.get(key, 0) + int(count)
    return out, int(counts[0])


def _as_float_array(values: Any) -> np.ndarray:
    """Values as float64, with non-numbers (None, pd.NA, text) as NaN."""
    if isinstance(values, pd.Series):
        if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            return values.to_numpy(dtype=np.float64, na_value=np.nan)
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False).reshape(-1)
    return _as_float_array(pd.Series(arr.reshape(-1), dtype=object))


def _numeric_values(values: Any) -> tuple[np.ndarray, int]:
    """Finite values (unsorted) and the count of the others (missing, infinite, not a number)."""
    if values is None:
        return np.empty(0), 0
    x = _as_float_array(values)
    ok = np.isfinite(x)
    finite = x[ok]
    return finite, int(len(x) - len(finite))


def _sorted_numeric(values: Any) -> np.ndarray:
    return np.sort(_numeric_values(values)[0])


def _binary_labels(labels: Any) -> np.ndarray:
    y = _as_float_array(labels)
    y = y[~np.isnan(y)]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1 (or bool); map the positive class to 1 first")
    return y


def _prefix_sums(sorted_values: np.ndarray) -> np.ndarray:
    return np.concatenate(([0.0], np.cumsum(sorted_values, dtype=np.float64)))


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _float_or_none(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _numeric_to_dict(p: NumericProfile) -> dict[str, Any]:
    return {
        "name": p.name,
        "n": p.n,
        "n_missing": p.n_missing,
        "mean": _float_or_none(p.mean),
        "std": _float_or_none(p.std),
        "min": _float_or_none(p.min),
        "max": _float_or_none(p.max),
        "bin_edges": p.bin_edges.tolist(),
        "bin_counts": [int(c) for c in p.bin_counts],
        "sorted_values": p.sorted_values.tolist(),
    }


def _numeric_from_dict(d: dict[str, Any]) -> NumericProfile:
    def num(x: Any) -> float:
        return math.nan if x is None else float(x)

    kept = np.asarray(d["sorted_values"], dtype=np.float64)
    return NumericProfile(
        name=str(d["name"]),
        n=int(d["n"]),
        n_missing=int(d["n_missing"]),
        mean=num(d["mean"]),
        std=num(d["std"]),
        min=num(d["min"]),
        max=num(d["max"]),
        bin_edges=np.asarray(d["bin_edges"], dtype=np.float64),
        bin_counts=np.asarray(d["bin_counts"], dtype=np.int64),
        sorted_values=kept,
        prefix_sums=_prefix_sums(kept),
    )


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
    )
    return row
