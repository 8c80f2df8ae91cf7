"""The statistics of one model's held-out scores: classification metrics, calibration bins and
their expected calibration error, per-group metrics, fairness gaps, and the cost of inference.

Each is a small pure function; `report.build_evaluation_report` puts them together for both models.
"""

from __future__ import annotations

import io
import math
import pickle
import time

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, demographic_parity_difference, equal_opportunity_difference
from sklearn.metrics import roc_auc_score

from retrain_assets.core.evaluation.bootstrap import batch_average_precision, batch_roc_auc

CALIBRATION_BINS = 10
# The gaps `fairness_gaps` measures, with the words the gate and the report use for them.
FAIRNESS_GAPS = {"demographic_parity_difference": "demographic-parity gap", "equal_opportunity_difference": "equal-opportunity gap"}


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Ranking (ROC AUC, PR AUC), probabilistic (log loss, Brier, ECE) and thresholded metrics
    (accuracy, F1, precision, recall at `threshold`) of positive-class scores.

    ROC AUC and PR AUC are NaN when the window holds one class only (undefined, not 0.5).
    """
    y_true = np.asarray(y_true, dtype=int)
    scores = np.clip(np.asarray(scores, dtype=float), 1e-15, 1 - 1e-15)
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty window")
    both_classes = len(np.unique(y_true)) == 2
    predicted = scores >= threshold
    # Computed in numpy (the rank metrics by the bootstrap's exact kernels), equal to scikit-learn's
    # (tested): scikit-learn's input checks cost milliseconds per call, and a backtest calls this
    # thousands of times.
    positive = y_true == 1
    tp = float(np.sum(predicted & positive))
    fp = float(np.sum(predicted & ~positive))
    fn = float(np.sum(~predicted & positive))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "roc_auc": float(batch_roc_auc(y_true, scores[None, :])[0]) if both_classes else float("nan"),
        "pr_auc": float(batch_average_precision(y_true, scores[None, :])[0]) if both_classes else float("nan"),
        "log_loss": float(-np.mean(np.where(positive, np.log(scores), np.log1p(-scores)))),
        "brier": float(np.mean((scores - y_true) ** 2)),
        "ece": expected_calibration_error(y_true, scores),
        "accuracy": float(np.mean(predicted == positive)),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "precision": precision,
        "recall": recall,
        "threshold": float(threshold),
        "n_rows": float(len(y_true)),
        "positive_rate": float(y_true.mean()),
    }


def calibration_bins(y_true: np.ndarray, scores: np.ndarray, n_bins: int = CALIBRATION_BINS) -> dict[str, list[float]]:
    """Mean score, observed positive rate and row count of each non-empty equal-width score bin."""
    y_true = np.asarray(y_true, dtype=float)
    scores = np.asarray(scores, dtype=float)
    bins = np.minimum((scores * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    filled = count > 0
    mean_predicted = np.bincount(bins, weights=scores, minlength=n_bins)[filled] / count[filled]
    fraction_positive = np.bincount(bins, weights=y_true, minlength=n_bins)[filled] / count[filled]
    return {"mean_predicted": mean_predicted.tolist(), "fraction_positive": fraction_positive.tolist(),
            "count": count[filled].astype(float).tolist()}


def expected_calibration_error(y_true: np.ndarray, scores: np.ndarray, n_bins: int = CALIBRATION_BINS) -> float:
    """Row-weighted mean gap between mean score and observed positive rate over equal-width bins."""
    bins = calibration_bins(y_true, scores, n_bins)
    count = np.asarray(bins["count"])
    gaps = np.abs(np.asarray(bins["mean_predicted"]) - np.asarray(bins["fraction_positive"]))
    return float((count * gaps).sum() / count.sum())


def _auc_or_nan(y_true, scores) -> float:
    return float(roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else float("nan")


def _true_positive_rate(y_true, y_pred) -> float:
    positives = np.asarray(y_true) == 1
    return float(np.asarray(y_pred)[positives].mean()) if positives.any() else float("nan")


def group_metrics(y_true: np.ndarray, scores: np.ndarray, groups: pd.Series, threshold: float) -> pd.DataFrame:
    """Per value of `groups`: rows, positive rate, ROC AUC, accuracy, selection rate and TPR."""
    y_true = np.asarray(y_true, dtype=int)
    scores = np.asarray(scores, dtype=float)
    frame = MetricFrame(
        metrics={
            "n_rows": lambda y, s: float(len(y)),
            "positive_rate": lambda y, s: float(np.mean(y)),
            "roc_auc": _auc_or_nan,
            "accuracy": lambda y, s: float(np.mean(y == (s >= threshold))),
            "selection_rate": lambda y, s: float(np.mean(s >= threshold)),
            "true_positive_rate": lambda y, s: _true_positive_rate(y, s >= threshold),
        },
        y_true=y_true,
        y_pred=scores,
        sensitive_features=groups.astype(str).to_numpy(),
    )
    return frame.by_group.reset_index(names="value").astype({"value": str})


def fairness_gaps(y_true: np.ndarray, scores: np.ndarray, sensitive: pd.Series, threshold: float) -> dict[str, float]:
    """Demographic-parity difference (spread of the positive-prediction rate across groups) and
    equal-opportunity difference (spread of the true-positive rate), both from fairlearn."""
    y_true = np.asarray(y_true, dtype=int)
    predicted = (np.asarray(scores) >= threshold).astype(int)
    groups = sensitive.astype(str).to_numpy()
    has_positives = all((y_true[groups == g] == 1).any() for g in np.unique(groups))
    return {
        "demographic_parity_difference": float(demographic_parity_difference(y_true, predicted, sensitive_features=groups)),
        "equal_opportunity_difference": float(equal_opportunity_difference(y_true, predicted, sensitive_features=groups))
        if has_positives else float("nan"),
    }



def inference_cost(model, features: pd.DataFrame, repeats: int = 3) -> dict[str, float]:
    """Time to score one batch of 1,000 rows (best of `repeats`; the given rows, repeated or cut
    to 1,000) with `predict_proba` when the model has it (a classifier), else `predict` (a
    regressor), and the model's serialized (pickle) size."""
    if features.empty:
        raise ValueError("need at least one row to time the model")
    batch = features.iloc[np.arange(1000) % len(features)]
    score = model.predict_proba if hasattr(model, "predict_proba") else model.predict
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        score(batch)
        best = min(best, time.perf_counter() - started)
    buffer = io.BytesIO()
    pickle.dump(model, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    return {"latency_ms_per_1000_rows": best * 1000.0,
            "model_size_bytes": float(buffer.tell())}
