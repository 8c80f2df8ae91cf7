"""Labels per task: the label contract at normalization (multiclass, regression), the regression
median / spread gate, the multiclass vote with three or more classes, review decisions per task
and suspect labels per task."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import median_abs_deviation

from retrain_assets.core.labeling.label_files import normalize_annotations
from retrain_assets.core.labeling.label_quality import (RESIDUAL_CUTOFF, annotator_agreement, residual_z, suspect_classes,
                                                        suspect_labels, suspect_values)
from retrain_assets.core.labeling.numeric_labels import (label_scale, reference_scale, weighted_median,
                                                         weighted_spread)
from retrain_assets.core.labeling.resolution import apply_review_decisions, resolve_labels
from retrain_assets.core.policy.definition import LabelGates
from retrain_assets.core.spec import parse_spec

DELIVERED = pd.Timestamp("2025-01-05 08:00:00")
EVENT = pd.Timestamp("2025-01-01 09:00:00")
LATER = "2025-01-03 12:00:00"
FILE = "labels/2025-01-01.csv"


def _spec(target: dict):
    return parse_spec({"name": "demo", "id": "id", "event_time": "at", "target": target,
                       "columns": {"id": {"type": "int"}, "at": {"type": "timestamp"}, "x": {"type": "float"}}})


REGRESSION = _spec({"name": "y", "type": "regression", "min": 0, "max": 100})
OPEN_REGRESSION = _spec({"name": "y", "type": "regression"})
MULTICLASS = _spec({"name": "y", "type": "multiclass", "classes": ["sun", "rain", "fog", "snow"]})
INT_MULTICLASS = _spec({"name": "y", "type": "multiclass", "classes": [1, 2, 3]})


def normalized(spec, rows: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """normalize_annotations of (id, label, annotator, confidence[, labeled_at]) rows."""
    frame = pd.DataFrame([{"id": r[0], "y": r[1], "annotator": r[2], "confidence": r[3],
                           "labeled_at": r[4] if len(r) > 4 else LATER} for r in rows])
    return normalize_annotations(frame, spec, DELIVERED, FILE)


def annotations(spec, rows: list[tuple]) -> pd.DataFrame:
    ann, rejected = normalized(spec, rows)
    assert rejected.empty, rejected["reason"].tolist()
    return ann


def batch(ids=(1, 2, 3, 4)) -> pd.DataFrame:
    return pd.DataFrame({"id": list(ids), "at": pd.Series([EVENT] * len(ids), dtype="datetime64[ns]")})


# --- the label contract at normalization ------------------------------------------------------------


def test_regression_labels_that_break_the_contract_are_quarantined_with_what_to_fix():
    given = ["21.50", 21.5, "abc", "nan", 100.5, -0.5, "inf", " 7 ", 0, 100]
    ann, rejected = normalize_annotations(pd.DataFrame({"id": range(1, 11), "y": pd.Series(given, dtype=object)}),
                                          REGRESSION, DELIVERED, FILE)
    assert len(ann) + len(rejected) == len(given)  # nothing lost
    assert ann["id"].tolist() == [1, 2, 8, 9, 10]
    assert ann["label"].tolist() == ["21.5", "21.5", "7", "0", "100"]  # one spelling per number
    assert rejected["row_number"].tolist() == [3, 4, 5, 6, 7]
    assert rejected["reason"].tolist() == [
        "y: 'abc' is not a number: a regression label must be a finite number",
        "y: 'nan' is not a number: a regression label must be a finite number",
        "y: 100.5 is above the declared maximum 100 (target.max): correct the label file, or widen target.max in the spec",
        "y: -0.5 is below the declared minimum 0 (target.min): correct the label file, or widen target.min in the spec",
        "y: 'inf' is not a number: a regression label must be a finite number",
    ]
    assert json.loads(rejected["row_json"].iloc[0])["y"] == "abc"  # the original row is kept


def test_regression_without_a_range_accepts_any_finite_number():
    ann, rejected = normalized(OPEN_REGRESSION, [(1, "-1e6", "a", 1.0), (2, "3.25", "a", 1.0), (3, "", "a", 1.0)])
    assert ann["label"].tolist() == ["-1000000", "3.25"]
    assert rejected["reason"].tolist() == ["y: missing label"]


def test_multiclass_unknown_class_is_quarantined_and_numeric_classes_normalize():
    ann, rejected = normalized(MULTICLASS, [(1, "sun", "a", 1.0), (2, "hail", "a", 1.0), (3, " fog ", "a", 0.9),
                                            (4, "Sun", "a", 1.0)])
    assert ann["label"].tolist() == ["sun", "fog"]
    assert len(ann) + len(rejected) == 4
    assert rejected["reason"].tolist() == [
        f"y: {v!r} is not one of the declared classes ['sun', 'rain', 'fog', 'snow']: correct the label file, or declare "
        "the class under target.classes in the spec" for v in ("hail", "Sun")]
    ann, rejected = normalized(INT_MULTICLASS, [(1, "2.0", "a", 1.0), (2, 3, "a", 1.0), (3, "4", "a", 1.0)])
    assert ann["label"].tolist() == ["2", "3"] and rejected["row_number"].tolist() == [3]


def test_a_label_problem_joins_the_row_s_other_problems():
    _, rejected = normalized(REGRESSION, [(1, "abc", "a", 2.0)])
    assert rejected["reason"].tolist() == ["y: 'abc' is not a number: a regression label must be a finite number; "
                                           "confidence: outside [0, 1] (got 2.0)"]


# --- weighted median and spread ---------------------------------------------------------------------


def test_weighted_median_matches_a_hand_computation():
    # sorted 10, 20, 30, 40 with weights 0.2, 0.3, 0.4, 0.1: cumulative 0.2, 0.5, 0.9 -> half (0.5) reached
    # exactly at 20, so the midpoint of 20 and 30.
    assert weighted_median([30, 10, 40, 20], [0.4, 0.2, 0.1, 0.3]) == 25.0
    # weights 0.1, 0.3, 0.5, 0.1: cumulative 0.1, 0.4, 0.9 -> 30 passes half first.
    assert weighted_median([10, 20, 30, 40], [0.1, 0.3, 0.5, 0.1]) == 30.0
    assert weighted_median([5.0], [0.7]) == 5.0
    assert np.isnan(weighted_median([1.0, 2.0], [0.0, 0.0]))
    assert weighted_median([1.0, 2.0, 100.0], [1.0, 1.0, 0.0]) == 1.5  # a zero weight does not count
    # spread: |10-25| 0.2 + |20-25| 0.3 + |30-25| 0.4 + |40-25| 0.1 = 3 + 1.5 + 2 + 1.5 = 8, over weight 1.0
    assert weighted_spread([10, 20, 30, 40], [0.2, 0.3, 0.4, 0.1], 25.0) == pytest.approx(8.0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10])
def test_weighted_median_with_equal_weights_is_numpy_s_median(n):
    values = np.random.default_rng(n).normal(20, 5, n).round(1)
    assert weighted_median(values, np.full(n, 0.8)) == pytest.approx(float(np.median(values)))
    assert weighted_spread(values, np.ones(n), 3.0) == pytest.approx(float(np.mean(np.abs(values - 3.0))))


def test_label_scale_prefers_the_caller_s_then_the_declared_range_then_the_observed():
    assert label_scale(REGRESSION.target, scale=7.0, observed=["1", "2"]) == 7.0
    assert label_scale(REGRESSION.target, observed=["1", "2"]) == 100.0
    assert label_scale(OPEN_REGRESSION.target, scale=7.0, observed=["1", "2"]) == 7.0
    assert label_scale(OPEN_REGRESSION.target, observed=["1", "4.5", "x"]) == 3.5
    assert label_scale(OPEN_REGRESSION.target) == 0.0
    with pytest.raises(ValueError, match="positive number"):
        label_scale(OPEN_REGRESSION.target, scale=0.0)
    labels = np.random.default_rng(0).normal(50, 10, 500)
    low, high = np.percentile(labels, [1, 99])
    assert reference_scale(labels) == pytest.approx(high - low)
    assert reference_scale([3.0, 3.0]) is None and reference_scale([]) is None


# --- regression resolution -----------------------------------------------------------------------------


def test_regression_rows_resolve_to_the_weighted_median_or_go_to_review_when_they_spread():
    ann = annotations(REGRESSION, [(1, "20", "a", 1.0), (1, "21", "b", 0.8), (1, "22", "c", 0.9),
                                   (2, "10", "a", 1.0), (2, "40", "b", 1.0), (3, "5.5", "a", 0.9)])
    res = resolve_labels(ann, batch(), REGRESSION, LabelGates())
    # row 1: cumulative 1.0, 1.8 -> 21 (half 1.35); spread (1.0 * 1 + 0.9 * 1) / 2.7 over scale 100.
    assert res.labels["id"].tolist() == [1, 3]
    assert res.labels["y"].tolist() == [21.0, 5.5] and res.labels["y"].dtype == "float64"
    assert res.labels["label_confidence"].tolist() == pytest.approx([1 - 1.9 / 2.7 / 100, 1.0])
    assert res.labels["n_annotations"].tolist() == [3, 1] and res.labels["annotators"].tolist() == ["a,b,c", "a"]
    gated = res.gated.set_index("id").loc[2]
    assert gated["gate"] == "disputed" and gated["proposed_label"] == "25"
    assert gated["reasons"] == ("disputed: 2 annotations spread 15 (weighted mean absolute deviation) around their weighted "
                                "median 25, 0.150 of the label scale 100 > 0.050")


def test_the_spread_threshold_is_inclusive_and_uses_the_caller_s_scale_without_a_declared_range():
    ann = annotations(OPEN_REGRESSION, [(1, "10", "a", 1.0), (1, "12", "b", 1.0)])  # median 11, spread 1
    gates = LabelGates(max_label_spread=0.05)
    assert resolve_labels(ann, batch(), OPEN_REGRESSION, gates, scale=20.0).labels["y"].tolist() == [11.0]  # 1/20 = 0.05
    held = resolve_labels(ann, batch(), OPEN_REGRESSION, gates, scale=19.0)
    assert held.labels.empty and "0.053 of the label scale 19" in held.gated["reasons"].iloc[0]
    # no declared range, no scale: the partition's own range (2), so a spread of 1 is half of it
    assert resolve_labels(ann, batch(), OPEN_REGRESSION, gates).gated["gate"].tolist() == ["disputed"]


def test_regression_gates_work_as_for_classes():
    ann = annotations(REGRESSION, [
        (1, "20", "a", 1.0, "2024-12-31 00:00:00"),   # before_event
        (2, "20", "a", 0.3),                           # low_confidence
        (3, "20", "a", 1.0, "2025-01-02 00:00:00"),   # superseded by a's newer annotation
        (3, "30", "a", 1.0, "2025-01-03 00:00:00"),
        (4, "21.5", "u", 1.0), (4, "22", "u", 1.0),    # same file, same annotator, two numbers
        (9, "20", "a", 1.0),                           # unknown_id
    ])
    ann.loc[ann["annotator"] == "u", "annotator"] = "unknown"
    res = resolve_labels(ann, batch(), REGRESSION, LabelGates())
    assert res.labels[["id", "y"]].values.tolist() == [[3, 30.0]]
    gated = res.gated.set_index("id")
    assert gated["gate"].to_dict() == {1: "before_event", 2: "low_confidence", 4: "conflicting", 9: "unknown_id"}
    assert gated.loc[2, "proposed_label"] == "20" and gated.loc[4, "proposed_label"] is None
    # an annotation stored before the contract (or under a wider range) is gated, not trained on
    stored = ann[ann["id"] == 3].assign(label=["20", "130"])
    held = resolve_labels(stored, batch(), REGRESSION, LabelGates()).gated
    assert held["gate"].tolist() == ["invalid_label"]
    assert "invalid_label: annotator a: y: 130 is above the declared maximum 100" in held["reasons"].iloc[0]


def test_equal_regression_spellings_are_one_label_not_a_conflict():
    ann = annotations(REGRESSION, [(1, "21.50", "unknown", 1.0), (1, 21.5, "unknown", 1.0)])
    res = resolve_labels(ann, batch(), REGRESSION, LabelGates())
    assert res.labels["y"].tolist() == [21.5] and res.gated.empty


# --- multiclass resolution -------------------------------------------------------------------------------


def test_multiclass_vote_over_four_classes_resolves_disputes_and_ties():
    ann = annotations(MULTICLASS, [
        (1, "sun", "a", 0.9), (1, "sun", "b", 0.8), (1, "rain", "c", 0.7),     # sun 1.7 / 2.4 = 0.708
        (2, "sun", "a", 0.9), (2, "rain", "b", 0.9), (2, "fog", "c", 0.9),     # three-way tie
        (3, "snow", "a", 1.0), (3, "fog", "b", 0.7), (3, "rain", "c", 0.7),    # snow 1.0 / 2.4 = 0.417
        (4, "fog", "a", 0.9),
    ])
    res = resolve_labels(ann, batch(), MULTICLASS, LabelGates())
    assert res.labels[["id", "y"]].values.tolist() == [[1, "sun"], [4, "fog"]]
    assert res.labels["label_confidence"].tolist() == pytest.approx([1.7 / 2.4, 1.0])
    gated = res.gated.set_index("id")
    assert gated.loc[2, "reasons"] == "disputed: 3 annotations tie at a weighted share of 0.33 each"
    assert gated.loc[2, "proposed_label"] is None
    assert gated.loc[3, "reasons"] == "disputed: 3 annotations disagree, weighted share of 'snow' is 0.42 < 0.70"
    assert gated.loc[3, "proposed_label"] == "snow"


# --- review decisions per task -----------------------------------------------------------------------


def _decide(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"id": r[0], "action": r[1], "label_after": r[2], "decided_at": "2025-01-06"} for r in rows])


def test_regression_review_relabels_with_a_number_within_the_range():
    ann = annotations(REGRESSION, [(1, "10", "a", 1.0), (1, "40", "b", 1.0), (2, "10", "a", 1.0), (2, "40", "b", 1.0),
                                   (3, "7", "a", 1.0)])
    res = resolve_labels(ann, batch(), REGRESSION, LabelGates())
    out = apply_review_decisions(res, _decide((1, "relabel", "25.50"), (2, "accept", ""), (3, "accept", "8")), REGRESSION)
    assert out.labels[["id", "y", "label_confidence", "review_action"]].values.tolist() == [
        [1, 25.5, 1.0, "relabel"], [2, 25.0, 1.0, "accept"], [3, 8.0, 1.0, "accept"]]
    assert out.gated.empty
    for label_after, message in [("abc", "'abc' is not a number"), ("100.5", "above the declared maximum 100"),
                                 ("-1", "below the declared minimum 0"), ("", "gives no label; give label_after")]:
        with pytest.raises(ValueError, match=message):
            apply_review_decisions(res, _decide((1, "relabel", label_after)), REGRESSION)


def test_multiclass_review_relabels_with_a_declared_class():
    res = resolve_labels(annotations(MULTICLASS, [(1, "sun", "a", 0.9), (1, "rain", "b", 0.9)]), batch(), MULTICLASS,
                         LabelGates())
    out = apply_review_decisions(res, _decide((1, "relabel", "snow")), MULTICLASS)
    assert out.labels[["id", "y", "review_action"]].values.tolist() == [[1, "snow", "relabel"]]
    with pytest.raises(ValueError, match=r"'hail', which is not one of the classes \['sun', 'rain', 'fog', 'snow'\]"):
        apply_review_decisions(res, _decide((1, "relabel", "hail")), MULTICLASS)
    with pytest.raises(ValueError, match="relabel it with a label_after"):
        apply_review_decisions(res, _decide((1, "accept", "")), MULTICLASS)  # a tie proposes nothing


# --- suspect labels per task ---------------------------------------------------------------------------


def _brute_force_confident_learning(y, proba):
    """Confident learning, one row and one class at a time (the reference for suspect_classes)."""
    k = proba.shape[1]
    t = [np.mean([proba[i, c] for i in range(len(y)) if y[i] == c]) if c in set(y) else np.inf for c in range(k)]
    found = [i for i in range(len(y))
             if proba[i, y[i]] < t[y[i]] and any(proba[i, j] >= t[j] for j in range(k) if j != y[i])]
    return sorted(found, key=lambda i: (proba[i, y[i]], i))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_suspects_match_a_brute_force_confident_learning(seed):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(4), 60)
    y = rng.integers(0, 3, 60)  # class 3 is never a label: no row is suspected of being it
    assert suspect_classes(y, proba, cap=60).tolist() == _brute_force_confident_learning(y, proba)
    assert suspect_classes(y, proba, cap=3).tolist() == _brute_force_confident_learning(y, proba)[:3]


def test_multiclass_suspects_with_two_classes_are_the_binary_suspects():
    rng = np.random.default_rng(5)
    p = rng.uniform(size=80)
    y = (rng.uniform(size=80) < p).astype(int)
    assert suspect_classes(y, np.column_stack([1 - p, p]), cap=10).tolist() == suspect_labels(y, p, cap=10).tolist()
    assert suspect_classes(np.zeros(5, dtype=int), np.full((5, 3), 1 / 3), cap=5).size == 0  # one class: no judgment
    with pytest.raises(ValueError, match="class indices"):
        suspect_classes(np.array([0, 3]), np.full((2, 3), 1 / 3), cap=1)


def test_regression_residual_z_is_the_scipy_modified_z_score():
    rng = np.random.default_rng(3)
    y, predicted = rng.normal(20, 4, 200), rng.normal(20, 4, 200)
    r = y - predicted
    expected = (r - np.median(r)) / median_abs_deviation(r, scale="normal")
    assert residual_z(y, predicted) == pytest.approx(expected)


def test_regression_suspects_are_residual_outliers_largest_first():
    rng = np.random.default_rng(4)
    predicted = rng.uniform(0, 50, 100)
    y = predicted + rng.normal(0, 1, 100)
    y[[7, 42, 13]] += [15.0, -30.0, 4.0]  # two gross errors, one borderline
    z = np.abs(residual_z(y, predicted))
    found = suspect_values(y, predicted, cap=10)
    assert found.tolist() == [i for i in np.argsort(-z, kind="stable") if z[i] > RESIDUAL_CUTOFF]
    assert found[:2].tolist() == [42, 7]
    assert suspect_values(y, predicted, cap=1).tolist() == [42]
    assert suspect_values(predicted, predicted, cap=5).size == 0  # perfect fit: no residual stands out
    # over half the residuals exactly zero: the mean absolute deviation stands in for the MAD
    y_tied = predicted.copy()
    y_tied[:3] += [0.5, -0.5, 40.0]
    assert suspect_values(y_tied, predicted, cap=5).tolist() == [2]


def test_regression_agreement_reports_the_mean_absolute_difference_instead_of_kappa():
    ann = annotations(REGRESSION, [(1, "20", "a", 1.0), (1, "20.0", "b", 1.0), (2, "10", "a", 1.0), (2, "13", "b", 1.0),
                                   (3, "7", "a", 1.0)])
    agreement = annotator_agreement(ann, REGRESSION, min_overlap=2)
    assert agreement["overlapping_rows"] == 2 and agreement["agreement_rate"] == 0.5
    (pair,) = agreement["pairs"]
    assert (pair["overlap"], pair["agreement"], pair["mean_abs_difference"]) == (2, 0.5, 1.5)
    assert np.isnan(pair["cohen_kappa"])
