"""Regression labels: a row's annotations combined into one number, and how far they spread.

A number is not voted on: two annotators who read 21.4 and 21.6 agree, while a class vote would
call them a tie. A row's annotations are combined by their confidence-weighted median (robust: one
wild annotation among several does not move it), and their disagreement is measured as the
weighted mean absolute deviation from that median (the quantity the median minimizes), relative
to the label's scale so that one threshold (`policy.labels.max_label_spread`) fits every unit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import label_number


def weighted_median(values, weights) -> float:
    """The value that splits the weight in half: sorted by value, the first whose cumulative weight
    reaches half the total; where it reaches exactly half, the midpoint of it and the next value
    (so equal weights give `numpy.median`). Zero weights are left out; NaN when no weight is left."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    keep = w > 0
    v, w = v[keep], w[keep]
    if not len(v):
        return float("nan")
    order = np.argsort(v, kind="stable")
    v, cumulative = v[order], np.cumsum(w[order])
    half = cumulative[-1] / 2.0
    k = int(np.searchsorted(cumulative, half - 1e-12 * cumulative[-1]))
    if np.isclose(cumulative[k], half, rtol=1e-12, atol=0.0) and k + 1 < len(v):
        return float((v[k] + v[k + 1]) / 2.0)
    return float(v[k])


def weighted_spread(values, weights, center: float) -> float:
    """Weighted mean absolute deviation from `center`: sum(w |v - center|) / sum(w); NaN without weight."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    total = w.sum()
    return float(np.sum(w * np.abs(v - center)) / total) if total > 0 else float("nan")


def reference_scale(labels) -> float | None:
    """A label scale from reference labels when the spec declares no range: the distance from their
    1st to their 99th percentile (a range, comparable with target.max - target.min, that a few
    extreme labels do not stretch). None when there are no finite labels or they are all equal."""
    numbers = np.asarray([n for n in map(label_number, np.asarray(labels, dtype=object).ravel()) if n is not None])
    if not len(numbers):
        return None
    low, high = np.percentile(numbers, [1, 99])
    return float(high - low) if high > low else None


def label_scale(target: TargetSpec, scale: float | None = None, observed=()) -> float:
    """The scale a regression row's spread is measured against: `scale` when the caller measured
    one (`reference_scale` of the reference labels); else target.max - target.min when both are
    declared; else the range (max - min) of the `observed` label values (this partition's
    annotations); 0.0 when none of these exists.

    A measured scale comes first because a declared range is a validity bound, often generous: the
    demand scenario declares 0..2000 units while its labels span 0..206 (1st-99th percentile range
    149), so against the declared range a row would need a spread of 100 units to be disputed."""
    if scale is not None:
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"a label scale must be a positive number, got {scale!r}")
        return float(scale)
    if target.min is not None and target.max is not None and target.max > target.min:
        return float(target.max - target.min)
    numbers = [n for n in map(label_number, observed) if n is not None]
    return float(max(numbers) - min(numbers)) if numbers else 0.0


def numeric_vote(voting: pd.DataFrame, id_col: str, scale: float) -> pd.DataFrame:
    """Per id (index) of the annotations that passed the gates: `winner` (confidence-weighted
    median), `total` (summed confidence), `spread` (weighted mean absolute deviation from the
    median), `relative_spread` (spread / scale; 0 when the annotations agree exactly), `scale`, and
    `share` = max(0, 1 - relative_spread), the label_confidence of a resolved regression row (1.0
    when its annotations agree exactly, lower the more they spread)."""
    rows = []
    # numpy groups, not DataFrame.groupby: a partition has thousands of small groups.
    codes, keys = pd.factorize(voting[id_col], sort=True)
    all_values = voting["label"].map(label_number).to_numpy(dtype=float)
    all_weights = voting["confidence"].to_numpy(dtype=float)
    order = np.argsort(codes, kind="stable")
    for key, group in zip(keys, np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(order) else []):
        values, weights = all_values[group], all_weights[group]
        median = weighted_median(values, weights)
        spread = weighted_spread(values, weights, median) if np.isfinite(median) else float("nan")
        if not spread > 0:
            relative = 0.0 if spread == 0 else float("nan")
        else:
            relative = spread / scale if scale > 0 else float("inf")
        rows.append({id_col: key, "winner": median, "total": float(weights.sum()), "spread": spread,
                     "relative_spread": relative, "scale": float(scale), "share": max(0.0, 1.0 - relative)
                     if np.isfinite(relative) else 0.0})
    columns = ["winner", "total", "spread", "relative_spread", "scale", "share"]
    frame = pd.DataFrame(rows, columns=[id_col, *columns])
    return frame.set_index(id_col) if len(frame) else frame.set_index(id_col).astype(float)
