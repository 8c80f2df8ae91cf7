"""The statistics of one model's held-out predictions for every task: metrics, calibration,
per-group metrics and the fairness gap.

Binary keeps `metrics.classification_metrics` (the dispatcher returns exactly its output).
Multiclass takes class indices (`tasks.encode_labels`) and a (rows, classes) probability matrix
in `target.classes` order; regression takes numbers and predicted numbers (see `core.tasks` for
the prediction shapes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.bootstrap import LOG_LOSS_EPS, batch_roc_auc
from retrain_assets.core.evaluation.metrics import (
    CALIBRATION_BINS,
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
)
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION

# The fairness gap of each task (binary: see `metrics.FAIRNESS_GAPS`), with the words people read.
TASK_FAIRNESS_GAPS = {
    MULTICLASS: {"accuracy_difference": "accuracy gap"},
    REGRESSION: {"relative_mae_difference": "relative MAE gap"},
}
# The columns `group_metrics` gives per group of each non-binary task.
GROUP_METRICS = {MULTICLASS: ("n_rows", "accuracy", "macro_roc_auc", "log_loss", "macro_f1"),
                 REGRESSION: ("n_rows", "mae", "rmse", "r2")}


def _class_matrix(y_idx, proba) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_idx, dtype=np.int64)
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"expected probabilities of shape ({len(y)}, classes), got {p.shape}")
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty window")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"class indices must be within [0, {p.shape[1] - 1}]")
    return y, p


def macro_roc_auc(y_idx, proba) -> float:
    """Unweighted mean over classes of one-vs-rest ROC AUC (scikit-learn's `multi_class="ovr"`,
    `average="macro"`). Classes absent from `y_idx` are left out of the mean (their one-vs-rest
    AUC is undefined); NaN when fewer than two classes are present."""
    y, p = _class_matrix(y_idx, proba)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    labels = np.stack([y == c for c in present])                      # (present classes, n)
    return float(np.mean(batch_roc_auc(labels, p[:, present].T)))


def macro_f1(y_idx, predicted_idx, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in the labels or the predictions
    (scikit-learn's `f1_score(average="macro")`)."""
    y, pred = np.asarray(y_idx), np.asarray(predicted_idx)
    tp = np.bincount(y[y == pred], minlength=n_classes).astype(float)
    fp = np.bincount(pred, minlength=n_classes) - tp
    fn = np.bincount(y, minlength=n_classes) - tp
    denominator = 2 * tp + fp + fn
    seen = denominator > 0
    return float(np.mean(2 * tp[seen] / denominator[seen]))


def multiclass_metrics(y_idx, proba) -> dict:
    """Macro one-vs-rest ROC AUC (see `macro_roc_auc`: classes absent from `y_idx` are left out
    of the mean, NaN with fewer than two classes), log loss (probabilities clipped to
    [1e-15, 1 - 1e-15], not renormalised), macro F1 and accuracy of the most probable class
    (ties: the earlier class), top-label ECE (10 equal-width bins of the top probability vs
    whether the top class is right), the row count, and per-class shares in class order:
    `class_shares` of the labels and `predicted_class_shares` of the predictions (lists)."""
    y, p = _class_matrix(y_idx, proba)
    k = p.shape[1]
    predicted = p.argmax(axis=1)
    confidence = p.max(axis=1)
    correct = (predicted == y).astype(float)
    true_p = np.clip(p[np.arange(len(y)), y], LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return {
        "macro_roc_auc": macro_roc_auc(y, p),
        "log_loss": float(-np.mean(np.log(true_p))),
        "macro_f1": macro_f1(y, predicted, k),
        "accuracy": float(correct.mean()),
        "ece": expected_calibration_error(correct, confidence),
        "n_rows": float(len(y)),
        "class_shares": (np.bincount(y, minlength=k) / len(y)).tolist(),
        "predicted_class_shares": (np.bincount(predicted, minlength=k) / len(y)).tolist(),
    }


def regression_metrics(y, pred, baseline: float) -> dict[str, float]:
    """MAE, RMSE and R² (1 - squared error / the labels' own variance; NaN when the labels are
    constant, where scikit-learn returns 0 or 1) of predicted values; the same errors of the
    baseline that predicts `baseline` (the training window's mean label) for every row; `skill`
    = 1 - MAE / baseline MAE (NaN when the baseline is exact); the row count and the label mean."""
    y, pred = _numbers(y, pred)
    error = pred - y
    base = baseline - y
    total = float(np.sum((y - y.mean()) ** 2))
    mae, baseline_mae = float(np.mean(np.abs(error))), float(np.mean(np.abs(base)))
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else float("nan"),
        "baseline_mae": baseline_mae,
        "baseline_rmse": float(np.sqrt(np.mean(base**2))),
        "skill": 1.0 - mae / baseline_mae if baseline_mae > 0 else float("nan"),
        "n_rows": float(len(y)),
        "label_mean": float(y.mean()),
    }


def conformal_half_width(y, pred, level: float) -> float:
    """Split-conformal half width of a regression prediction interval: the ceil((n + 1) * level)-th
    smallest absolute residual on rows the model was not trained on (its holdout), so that
    `prediction ± half width` holds a new row's label with probability at least `level` while the
    rows keep coming from the holdout's distribution. Infinite when n is too small for the level."""
    y, pred = _numbers(y, pred)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be within (0, 1), got {level!r}")
    rank = int(np.ceil((len(y) + 1) * level))
    if rank > len(y):
        return float("inf")
    return float(np.sort(np.abs(pred - y))[rank - 1])


def _numbers(y, pred) -> tuple[np.ndarray, np.ndarray]:
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    if y.ndim != 1 or y.shape != pred.shape:
        raise ValueError(f"labels and predictions must be 1-D of one length, got {y.shape} and {pred.shape}")
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty window")
    if not (np.isfinite(y).all() and np.isfinite(pred).all()):
        raise ValueError("labels and predictions must be finite")
    return y, pred


def task_metrics(target: TargetSpec, y, predictions, threshold: float = 0.5, baseline: float | None = None) -> dict:
    """The task's metrics: binary exactly `classification_metrics(y, predictions, threshold)`,
    multiclass `multiclass_metrics`, regression `regression_metrics` (needs `baseline`)."""
    if target.type == BINARY:
        return classification_metrics(y, predictions, threshold)
    if target.type == MULTICLASS:
        return multiclass_metrics(y, predictions)
    if baseline is None:
        raise ValueError("regression metrics need the baseline (the training window's mean label)")
    return regression_metrics(y, predictions, baseline)


def top_label_calibration(y_idx, proba, n_bins: int = CALIBRATION_BINS) -> dict[str, list[float]]:
    """Multiclass calibration: per non-empty equal-width bin of the top probability, its mean
    (`mean_confidence`), the share of rows whose top class is right (`fraction_correct`) and
    the row count; the row-weighted gap is the `ece` of `multiclass_metrics`."""
    y, p = _class_matrix(y_idx, proba)
    bins = calibration_bins((p.argmax(axis=1) == y).astype(float), p.max(axis=1), n_bins)
    return {"mean_confidence": bins["mean_predicted"], "fraction_correct": bins["fraction_positive"], "count": bins["count"]}


def regression_calibration(y, pred, n_bins: int = CALIBRATION_BINS) -> dict:
    """Predicted vs actual: per quantile bin of the predicted values (at most `n_bins`; tied
    edges merge bins), the mean predicted and mean actual value and the row count; and a
    summary of the residuals (actual - predicted): mean, standard deviation, 5/25/50/75/95 %
    quantiles and the largest absolute residual."""
    y, pred = _numbers(y, pred)
    edges = np.unique(np.quantile(pred, np.linspace(0, 1, n_bins + 1)[1:-1]))
    bins = np.searchsorted(edges, pred, side="right")
    count = np.bincount(bins, minlength=len(edges) + 1)
    filled = count > 0
    residual = y - pred
    quantiles = np.quantile(residual, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean_predicted": (np.bincount(bins, weights=pred)[filled] / count[filled]).tolist(),
        "mean_actual": (np.bincount(bins, weights=y)[filled] / count[filled]).tolist(),
        "count": count[filled].astype(float).tolist(),
        "residuals": {"mean": float(residual.mean()), "std": float(residual.std()),
                      **{f"q{int(q * 100):02d}": float(v) for q, v in zip((0.05, 0.25, 0.5, 0.75, 0.95), quantiles)},
                      "max_abs": float(np.abs(residual).max())},
    }


def task_calibration(target: TargetSpec, y, predictions) -> dict:
    """Calibration bins per task: binary `metrics.calibration_bins`, multiclass
    `top_label_calibration`, regression `regression_calibration`."""
    if target.type == BINARY:
        return calibration_bins(y, predictions)
    if target.type == MULTICLASS:
        return top_label_calibration(y, predictions)
    return regression_calibration(y, predictions)


def group_metrics(target: TargetSpec, y, predictions, groups: pd.Series) -> pd.DataFrame:
    """Per value of `groups` (as text, sorted), the task's `GROUP_METRICS`: multiclass rows,
    accuracy, macro ROC AUC (NaN with fewer than two classes in the group), log loss and macro F1;
    regression rows, MAE, RMSE and R². Binary: see `metrics.group_metrics`."""
    if target.type == BINARY:
        raise ValueError("binary slices: use metrics.group_metrics (it needs the operating threshold)")
    values = groups.astype(str).to_numpy()
    y, predictions = np.asarray(y), np.asarray(predictions)
    rows = []
    for value in np.unique(values):
        rows_in = values == value
        if target.type == MULTICLASS:
            metrics = multiclass_metrics(y[rows_in], predictions[rows_in])
        else:
            metrics = regression_metrics(y[rows_in], predictions[rows_in], 0.0)
        rows.append({"value": str(value), **{k: metrics[k] for k in GROUP_METRICS[target.type]}})
    return pd.DataFrame(rows, columns=["value", *GROUP_METRICS[target.type]])


def fairness_gap(target: TargetSpec, y, predictions, sensitive: pd.Series) -> dict[str, float]:
    """The task's gap across the groups of `sensitive`: multiclass `accuracy_difference` (highest
    minus lowest group accuracy); regression `relative_mae_difference` (highest minus lowest
    group MAE, divided by the overall MAE: unitless; NaN when the overall MAE is 0)."""
    table = group_metrics(target, y, predictions, sensitive)
    if target.type == MULTICLASS:
        return {"accuracy_difference": float(table["accuracy"].max() - table["accuracy"].min())}
    overall = float(np.mean(np.abs(np.asarray(predictions, dtype=float) - np.asarray(y, dtype=float))))
    spread = float(table["mae"].max() - table["mae"].min())
    return {"relative_mae_difference": spread / overall if overall > 0 else float("nan")}
