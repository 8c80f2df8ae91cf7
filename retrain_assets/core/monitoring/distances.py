"""The per-feature drift statistics: one batch column against its reference profile.

Every statistic agrees with the corresponding scipy function on the same data, without ever
merging the two samples: a numeric comparison costs one sort of the batch (m values) plus binary
searches of the shorter of the two sorted samples in the longer one (n kept reference values),
O(m log m + min(m, n) log max(m, n)); a categorical one is one factorisation. The kernels that
take a `Comparison` or count vectors (`ks_compared`, `wasserstein_compared`,
`jensen_shannon_counts`, `chi_square_counts`) let `drift.py` compute every statistic of a
feature from one sort. Missing values, categories and bins follow `values.py`; a statistic that
cannot be computed (no current or no reference values) is NaN.

SciPy is imported where a p-value or the Jensen-Shannon distance is computed, not with the module:
`retrain-assets drift` starts reading and sorting columns while it loads (`apps.drift`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrain_assets.core.monitoring.profile import CategoricalProfile, NumericProfile
from retrain_assets.core.monitoring.values import (
    bin_counts_of,
    category_counts,
    numeric_values,
    prefix_sums_of,
    sample_of,
    sorted_numeric,
)

# Imported inside the functions that use them, not with the module (`retrain-assets drift` loads
# them on a thread while it reads columns: `apps.drift.REPORT_MODULES`).
DEFERRED_IMPORTS = ("scipy.stats", "scipy.spatial.distance")


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
    return psi(profile.bin_counts, bin_counts_of(sorted_numeric(values), profile.bin_edges))


def psi_categorical(profile: CategoricalProfile, values: Any) -> float:
    """PSI over the reference categories plus the unseen bucket."""
    ref, cur = category_vectors(profile, category_counts(values)[0])
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
    return ks_compared(profile, compare(profile, values))


def wasserstein_normalized(profile: NumericProfile, values: Any) -> float:
    """Wasserstein-1 distance (integral of |F_ref - F_cur|) divided by the reference std.

    Equals `scipy.stats.wasserstein_distance(ref, cur) / std`, computed from the sorted
    reference and its prefix sums in O(m log n). When the reference is constant (std 0) the
    result is 0.0 if every current value equals that constant, else +inf.
    """
    return wasserstein_compared(profile, compare(profile, values))


def jensen_shannon_numeric(profile: NumericProfile, values: Any) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the binned reference and current."""
    return jensen_shannon_counts(profile.bin_counts, bin_counts_of(sorted_numeric(values), profile.bin_edges))


def jensen_shannon_categorical(profile: CategoricalProfile, values: Any) -> float:
    """Jensen-Shannon distance (base 2) over the reference categories plus the unseen bucket."""
    return jensen_shannon_counts(*category_vectors(profile, category_counts(values)[0]))


def chi_square_test(profile: CategoricalProfile, values: Any) -> tuple[float, float]:
    """Chi-square test of homogeneity, reference counts vs current counts: (statistic, p-value).

    The 2 x k table covers the reference categories plus the unseen bucket, minus categories
    that are zero in both rows; no continuity correction. Same as
    `scipy.stats.chi2_contingency(table, correction=False)`; (0.0, 1.0) when one category is left.
    """
    return chi_square_counts(*category_vectors(profile, category_counts(values)[0]))


@dataclass
class Comparison:
    """A current numeric column sorted and set against a profile's kept reference values.

    Both ECDFs only step at sample values, so the two are compared at the distinct values `x`
    of the shorter sample (`walk_reference` says which): `ref_le`/`ref_lt` and `cur_le`/`cur_lt`
    count the reference and current values <= x and < x. Walking the shorter sample keeps every
    step O(short * log(long)) apart from sorting the batch.
    """

    sorted: np.ndarray
    n_missing: int
    m: int  # the values compared: at most the `limit` of `compare`
    n_values: int = 0  # the non-missing values of the column, sampled or not
    walk_reference: bool = False
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    ref_le: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ref_lt: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cur_le: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cur_lt: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def compare(profile: NumericProfile, values: Any, limit: int | None = None) -> Comparison:
    """Sort the current values (at most `limit` of them, `values.sample_of`) and count both
    samples at the distinct values of the shorter one."""
    finite, n_missing = numeric_values(values)
    s = np.sort(sample_of(finite, limit))
    m, ref = len(s), profile.sorted_values
    cmp = Comparison(sorted=s, n_missing=n_missing, m=m, n_values=len(finite))
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


def ks_compared(profile: NumericProfile, cmp: Comparison) -> tuple[float, float]:
    """`ks_test` from a comparison already made."""
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
    from scipy import stats  # on first use (see the module doc)

    return d, float(np.clip(stats.kstwo.sf(d, en), 0.0, 1.0))


def wasserstein_compared(profile: NumericProfile, cmp: Comparison) -> float:
    """`wasserstein_normalized` from a comparison already made."""
    r, s = profile.sorted_values, cmp.sorted
    if cmp.m == 0 or len(r) == 0:
        return math.nan
    if not profile.std > 0:
        return 0.0 if s[0] == s[-1] == r[0] else math.inf
    if cmp.walk_reference:  # integrate the batch's ECDF with its prefix sums between reference values
        w = _w1(s, prefix_sums_of(s), cmp.x, cmp.ref_le, cmp.cur_le)
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


def jensen_shannon_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between two count vectors over the same bins; NaN when one is empty."""
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return math.nan
    from scipy.spatial.distance import jensenshannon  # on first use (see the module doc)

    return float(jensenshannon(ref, cur, base=2))


def chi_square_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """`chi_square_test` of two count vectors over the same categories (see there)."""
    table = np.vstack([ref_counts, cur_counts]).astype(np.float64)
    if table[0].sum() <= 0 or table[1].sum() <= 0:
        return math.nan, math.nan
    table = table[:, table.sum(axis=0) > 0]
    from scipy import stats  # on first use (see the module doc)

    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def category_vectors(profile: CategoricalProfile, current: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current counts over the reference categories, then the unseen bucket."""
    ref = np.array([*profile.counts.values(), 0], dtype=np.int64)
    seen = [current.get(c, 0) for c in profile.counts]
    unseen = sum(v for k, v in current.items() if k not in profile.counts)
    return ref, np.array([*seen, unseen], dtype=np.int64)
