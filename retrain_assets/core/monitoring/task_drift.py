"""Label drift and prediction drift of one batch per task, against the reference profile.

Each dispatcher returns a flat dict of numbers (NaN where there is nothing to compare):

`task_label_drift(profile, labels, target)`, labels encoded as `core.tasks.encode_labels` does:
- binary: exactly `drift.label_drift(profile.positive_rate, labels)`;
- multiclass: `class_share_drift` of the labels' class counts vs `profile.label_counts`;
- regression: `numeric_drift` of the labels vs `profile.label_values`.

`task_prediction_drift(profile, predictions, target)`, predictions in the task's shape:
- binary: exactly `drift.prediction_drift(profile.scores, scores)`;
- multiclass: `class_share_drift` of the predicted classes (argmax) vs `profile.predicted_counts`,
  plus `reference_mean_probability_<c>`, `current_mean_probability_<c>` and
  `mean_probability_difference_<c>` per class c;
- regression: `numeric_drift` of the predicted values vs `profile.scores`.

Class keys use the class as text (`core.tasks.class_texts`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from retrain_assets.core.monitoring.distances import jensen_shannon_counts, psi
from retrain_assets.core.monitoring.drift import label_drift, prediction_drift
from retrain_assets.core.monitoring.profile import NumericProfile, ReferenceProfile, class_counts, class_probabilities
from retrain_assets.core.monitoring.values import numeric_values
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION, class_texts

# Pseudo-count a class absent from the reference gets, so that its expected count is small but not zero.
ABSENT_CLASS_PSEUDO_COUNT = 0.5


def chi_square_shares(reference_counts: Any, current_counts: Any) -> tuple[float, float]:
    """Chi-square goodness-of-fit of the current class counts to the reference class shares:
    (statistic, p-value) of `scipy.stats.chisquare(current, expected)` with expected =
    n_current * reference share.

    A class with no reference rows gets `ABSENT_CLASS_PSEUDO_COUNT` reference rows before the
    shares are formed (a class the reference never saw then counts heavily against it instead of
    dividing by zero); a class absent from both is left out (it carries no evidence). NaN when
    either side is empty; (0.0, 1.0) when a single class is left.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.shape != cur.shape:
        raise ValueError(f"count vectors differ in length: {ref.shape} and {cur.shape}")
    if ref.sum() <= 0 or cur.sum() <= 0:
        return math.nan, math.nan
    keep = (ref > 0) | (cur > 0)
    ref = np.where(ref[keep] > 0, ref[keep], ABSENT_CLASS_PSEUDO_COUNT)
    cur = cur[keep]
    if len(cur) < 2:
        return 0.0, 1.0
    expected = cur.sum() * ref / ref.sum()
    res = stats.chisquare(cur, expected)
    return float(res.statistic), float(res.pvalue)


def class_share_drift(reference_counts: Any, current_counts: Any, classes: list[str]) -> dict[str, float]:
    """Drift of class shares: `n_reference`, `n_current`, `chi2_statistic` and `chi2_p_value`
    (`chi_square_shares`), `jensen_shannon` (distance, base 2, of the two share vectors), `psi`
    (over the classes, `distances.psi`), and per class c `reference_share_<c>`,
    `current_share_<c>` and `share_difference_<c>` (current minus reference)."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if len(ref) != len(classes) or len(cur) != len(classes):
        raise ValueError(f"{len(classes)} classes but counts of length {len(ref)} and {len(cur)}")
    chi2, p_value = chi_square_shares(ref, cur)
    out = {
        "n_reference": float(ref.sum()),
        "n_current": float(cur.sum()),
        "chi2_statistic": chi2,
        "chi2_p_value": p_value,
        "jensen_shannon": jensen_shannon_counts(ref, cur),
        "psi": psi(ref, cur) if ref.sum() > 0 and cur.sum() > 0 else math.nan,
    }
    ref_share = ref / ref.sum() if ref.sum() > 0 else np.full(len(ref), math.nan)
    cur_share = cur / cur.sum() if cur.sum() > 0 else np.full(len(cur), math.nan)
    for c, r, s in zip(classes, ref_share, cur_share):
        out[f"reference_share_{c}"] = float(r)
        out[f"current_share_{c}"] = float(s)
        out[f"share_difference_{c}"] = float(s - r)
    return out


def numeric_drift(reference: NumericProfile | None, values: Any) -> dict[str, float]:
    """A numeric distribution (regression labels or predictions) against its reference profile:
    `prediction_drift`'s `ks_statistic`, `ks_p_value`, `psi`, `jensen_shannon`,
    `wasserstein_norm`, plus `reference_mean`, `current_mean` and `mean_difference`."""
    finite, _ = numeric_values(values)
    current_mean = float(finite.mean()) if len(finite) else math.nan
    if reference is None:
        out = dict.fromkeys(("ks_statistic", "ks_p_value", "psi", "jensen_shannon", "wasserstein_norm"), math.nan)
        reference_mean = math.nan
    else:
        out = prediction_drift(reference, finite)
        reference_mean = reference.mean
    out.update(reference_mean=reference_mean, current_mean=current_mean, mean_difference=current_mean - reference_mean)
    return out


def task_label_drift(profile: ReferenceProfile, labels: Any, target: TargetSpec) -> dict[str, float]:
    """Label drift of the batch's (encoded) labels for `target`'s task (see the module doc)."""
    _require_task(profile, target)
    if target.type == BINARY:
        return label_drift(profile.positive_rate, labels)
    if target.type == REGRESSION:
        return numeric_drift(profile.label_values, labels)
    classes = _classes(profile)
    reference = profile.label_counts if profile.label_counts is not None else [0] * len(classes)
    return class_share_drift(reference, class_counts(labels, len(classes)), classes)


def task_prediction_drift(profile: ReferenceProfile, predictions: Any, target: TargetSpec) -> dict[str, float]:
    """Prediction drift of the batch's predictions for `target`'s task (see the module doc)."""
    _require_task(profile, target)
    if target.type == BINARY:
        return prediction_drift(profile.scores, predictions)
    if target.type == REGRESSION:
        return numeric_drift(profile.scores, predictions)
    classes = _classes(profile)
    k = len(classes)
    proba = class_probabilities(predictions, k)
    current = np.bincount(proba.argmax(axis=1), minlength=k)
    reference = profile.predicted_counts if profile.predicted_counts is not None else [0] * k
    out = class_share_drift(reference, current, classes)
    ref_means = profile.mean_probabilities if profile.mean_probabilities is not None else [math.nan] * k
    cur_means = proba.mean(axis=0) if len(proba) else np.full(k, math.nan)
    for c, r, m in zip(classes, ref_means, cur_means):
        out[f"reference_mean_probability_{c}"] = float(r)
        out[f"current_mean_probability_{c}"] = float(m)
        out[f"mean_probability_difference_{c}"] = float(m - r)
    return out


def _require_task(profile: ReferenceProfile, target: TargetSpec) -> None:
    if profile.task != target.type:
        raise ValueError(f"the reference profile was built for a {profile.task} target, the spec's target is "
                         f"{target.type}: rebuild the reference profile from the champion")
    if target.type == MULTICLASS and profile.classes is not None and profile.classes != class_texts(target):
        raise ValueError(f"the reference profile's classes {profile.classes} are not the spec's {class_texts(target)}: "
                         "rebuild the reference profile from the champion")


def _classes(profile: ReferenceProfile) -> list[str]:
    if not profile.classes:
        raise ValueError("a multiclass reference profile lacks its classes: rebuild it with target= the spec's target")
    return profile.classes
