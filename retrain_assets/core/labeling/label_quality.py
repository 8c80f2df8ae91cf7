"""How far labels can be trusted: inter-annotator agreement over rows several annotators labeled,
and suspects, labels a trained model confidently disputes: per class by confident learning
(binary, multiclass), per number by an outlying residual (regression).
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from retrain_assets.core.labeling.label_files import canonical_label, naive_utc
from retrain_assets.core.spec import DatasetSpec

# Regression suspects: a residual whose modified z-score (Iglewicz & Hoaglin 1993) exceeds this is
# an outlier; 3.5 is their recommended cut-off (under normal residuals about 1 row in 2,000 passes it).
RESIDUAL_CUTOFF = 3.5
# norm.ppf(0.75): the median absolute deviation of a standard normal, so MAD / this estimates sigma.
_MAD_TO_SIGMA = 0.6744897501960817
# When over half the residuals are equal (MAD 0): the mean absolute deviation x sqrt(pi / 2) estimates sigma.
_MEAN_AD_TO_SIGMA = 1.2533141373155003

def annotator_agreement(annotations: pd.DataFrame, spec: DatasetSpec, min_overlap: int = 10) -> dict:
    """Inter-annotator agreement over rows labeled by at least two distinct annotators.

    Uses only annotations that voted (gate == "") when a gate column exists; every source counts
    as an annotator, and an annotator's newest annotation of a row stands for it. Returns
    {"overlapping_rows", "agreement_rate" (share of those rows with one label only; NaN if none),
    "pairs": [{"annotator_a", "annotator_b", "overlap", "agreement", "cohen_kappa"}]} for every
    pair sharing at least `min_overlap` rows (kappa NaN when undefined, e.g. a single label).
    Regression: agreement means the same number; kappa (for categories) is NaN, and each pair also
    has "mean_abs_difference" over its shared rows, in the label's units.
    """
    id_col = spec.id_column
    ann = annotations if "gate" not in annotations.columns else annotations[annotations["gate"] == ""]
    if "labeled_at" in ann.columns:
        ann = ann.assign(_at=naive_utc(ann["labeled_at"])).sort_values("_at", kind="stable")
    ann = ann.drop_duplicates([id_col, "annotator"], keep="last")
    ann = ann.assign(label=ann["label"].map(lambda v: canonical_label(v, spec.target)))
    wide = ann.pivot(index=id_col, columns="annotator", values="label")
    overlapping = wide[wide.notna().sum(axis=1) >= 2]
    pairs = []
    for a, b in combinations(sorted(wide.columns), 2):
        shared = wide[[a, b]].dropna()
        if len(shared) == 0 or len(shared) < min_overlap:
            continue
        kappa = float("nan")
        if spec.target.is_classification:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kappa = float(cohen_kappa_score(shared[a].astype(str), shared[b].astype(str)))
        pair = {"annotator_a": str(a), "annotator_b": str(b), "overlap": int(len(shared)),
                "agreement": float((shared[a] == shared[b]).mean()),
                "cohen_kappa": kappa if math.isfinite(kappa) else float("nan")}
        if not spec.target.is_classification:
            numbers = shared.apply(pd.to_numeric, errors="coerce")
            pair["mean_abs_difference"] = float((numbers[a] - numbers[b]).abs().mean())
        pairs.append(pair)
    return {
        "overlapping_rows": int(len(overlapping)),
        "agreement_rate": float((overlapping.nunique(axis=1) == 1).mean()) if len(overlapping) else float("nan"),
        "pairs": pairs,
    }


def suspect_labels(y: np.ndarray, proba_positive: np.ndarray, cap: int) -> np.ndarray:
    """Positions of labels the model confidently disagrees with, most confident disagreement first, at most `cap`.

    Confident-learning thresholds (as in cleanlab's confident joint): t_c is the mean predicted
    probability of class c over the rows labeled c. A row labeled i is suspect when the other class
    j has probability >= t_j and its own probability p_i < t_i. Ordered by p_i ascending, ties by
    position. Binary labels {0, 1} only; no rows, a single class or cap <= 0 give an empty array.
    """
    y = np.asarray(y).ravel()
    p = np.asarray(proba_positive, dtype=float).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) and not np.isin(y, (0, 1)).all():
        raise ValueError("suspect_labels needs binary labels in {0, 1}")
    y = y.astype(int)
    if cap <= 0 or len(np.unique(y)) < 2:
        return np.empty(0, dtype=np.intp)
    proba = np.column_stack([1.0 - p, p])
    thresholds = np.array([proba[y == c, c].mean() for c in (0, 1)])
    rows = np.arange(len(y))
    self_confidence = proba[rows, y]
    other = 1 - y
    suspect = (proba[rows, other] >= thresholds[other]) & (self_confidence < thresholds[y])
    found = rows[suspect]
    return found[np.argsort(self_confidence[found], kind="stable")][:cap].astype(np.intp)


def suspect_classes(y: np.ndarray, proba: np.ndarray, cap: int) -> np.ndarray:
    """Multiclass `suspect_labels`: positions of labels the model confidently disagrees with, most
    confident disagreement first, at most `cap`.

    y: class indices (`core.tasks.encode_labels`); proba: (rows, classes) in `target.classes`
    order. Confident-learning thresholds: t_c is the mean probability of class c over the rows
    labeled c (a class no row is labeled with gets no threshold: no row is suspected of being it).
    A row labeled i is suspect when some other class j has probability >= t_j and its own
    probability p_i < t_i. Ordered by p_i ascending, ties by position; with two classes this is
    `suspect_labels`. Fewer than two labeled classes, no rows or cap <= 0 give an empty array.
    """
    y = np.asarray(y).ravel()
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"expected probabilities of shape ({len(y)}, classes), got {p.shape}")
    if len(y) and not (np.isin(y, np.arange(p.shape[1]))).all():
        raise ValueError(f"suspect_classes needs class indices in 0..{p.shape[1] - 1}")
    y = y.astype(int)
    if cap <= 0 or len(np.unique(y)) < 2:
        return np.empty(0, dtype=np.intp)
    thresholds = np.array([p[y == c, c].mean() if (y == c).any() else np.inf for c in range(p.shape[1])])
    rows = np.arange(len(y))
    self_confidence = p[rows, y]
    beats = p >= thresholds[None, :]
    beats[rows, y] = False
    suspect = beats.any(axis=1) & (self_confidence < thresholds[y])
    found = rows[suspect]
    return found[np.argsort(self_confidence[found], kind="stable")][:cap].astype(np.intp)


def residual_z(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Modified z-scores of the residuals y - predicted: (r - median(r)) / sigma, with sigma the
    median absolute deviation / 0.6745 (robust: the outliers being looked for do not inflate it);
    when over half the residuals are equal (MAD 0), the mean absolute deviation x 1.2533. All zeros
    when every residual is equal."""
    r = np.asarray(y, dtype=float).ravel() - np.asarray(predicted, dtype=float).ravel()
    if not len(r):
        return r
    center = np.median(r)
    deviation = np.abs(r - center)
    sigma = np.median(deviation) / _MAD_TO_SIGMA
    if not sigma > 0:
        sigma = np.mean(deviation) * _MEAN_AD_TO_SIGMA
    return (r - center) / sigma if sigma > 0 else np.zeros_like(r)


def suspect_values(y: np.ndarray, predicted: np.ndarray, cap: int, cutoff: float = RESIDUAL_CUTOFF) -> np.ndarray:
    """Regression `suspect_labels`: positions of labels whose residual against the model's
    prediction is an outlier (|`residual_z`| > `cutoff`), largest |z| first (ties by position), at
    most `cap`. No rows or cap <= 0 give an empty array."""
    y, predicted = np.asarray(y, dtype=float).ravel(), np.asarray(predicted, dtype=float).ravel()
    if len(y) != len(predicted):
        raise ValueError(f"{len(y)} labels but {len(predicted)} predictions")
    if cap <= 0 or not len(y):
        return np.empty(0, dtype=np.intp)
    z = np.abs(residual_z(y, predicted))
    found = np.flatnonzero(z > cutoff)
    return found[np.argsort(-z[found], kind="stable")][:cap].astype(np.intp)
