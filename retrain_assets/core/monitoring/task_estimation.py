"""Label-free performance estimates per task, each with a band, and their check once labels arrive.

- binary: `estimation.estimate_performance` / `estimation.check_estimate`, unchanged.
- multiclass: confidence-based estimation, one-vs-rest (like NannyML's multiclass CBPE). The
  class probabilities are assumed calibrated, so each unseen label is drawn from its row's
  categorical distribution, independently. Expected accuracy is the mean top-label probability
  (analytic); macro ROC AUC and macro F1 are the means over `n_draws` simulated label vectors of
  the realised metrics of the fixed probabilities, and every band is the central `band` interval
  of the simulated metrics (sampling noise of the labels, as in the binary case).
- regression: direct loss estimation (like NannyML's DLE), in `loss_estimation.py`.

All three are blind to concept drift by construction (they trust the model's probabilities or
the reference's error model); the checks turn a realised metric outside the band into
`reliable=False`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from retrain_assets.core.monitoring.estimation import (
    EstimateCheck,
    PerformanceEstimate,
    _outside,
    check_estimate,
    estimate_performance,
    expected_auc,
    narrowed,
    simulation_sample,
)
from retrain_assets.core.monitoring.profile import class_probabilities
from retrain_assets.core.monitoring.loss_estimation import (
    LossModel,
    RegressionEstimate,
    RegressionEstimateCheck,
    band_interval,
    check_regression_estimate,
    estimate_regression_performance,
    require_band,
)
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION

# Label draws are simulated in blocks of about this many cells (draws x rows) to bound memory.
_BLOCK_CELLS = 1_000_000


@dataclass(frozen=True)
class MulticlassEstimate:
    """Expected accuracy, macro one-vs-rest ROC AUC and macro F1 of a batch, each with its
    central `band` interval. `macro_roc_auc*` are NaN when no simulated label vector let any
    class's AUC be defined."""

    accuracy: float
    accuracy_low: float
    accuracy_high: float
    macro_roc_auc: float
    macro_roc_auc_low: float
    macro_roc_auc_high: float
    macro_f1: float
    macro_f1_low: float
    macro_f1_high: float
    n_rows: int
    band: float


@dataclass(frozen=True)
class MulticlassEstimateCheck:
    """A multiclass estimate judged against labels (accuracy and macro ROC AUC are judged; macro
    F1 is reported only)."""

    reliable: bool
    realized_accuracy: float
    realized_macro_roc_auc: float
    realized_macro_f1: float
    reason: str


def expected_multiclass_accuracy(probabilities: np.ndarray) -> float:
    """Mean top-label probability: the accuracy expected from calibrated class probabilities."""
    return float(_probabilities(probabilities).max(axis=1).mean())


def estimate_multiclass_performance(
    probabilities: np.ndarray, band: float = 0.95, n_draws: int = 500, seed: int = 0
) -> MulticlassEstimate:
    """Estimate accuracy, macro ROC AUC and macro F1 of (rows, k) class probabilities without
    labels (see the module doc). Deterministic in `seed` and independent of the memory blocking."""
    p = _probabilities(probabilities)
    require_band(band, n_draws)
    rng = np.random.default_rng(seed)
    simulated, scale = simulation_sample(p, rng)
    accuracies, aucs, f1s = _simulate_multiclass(simulated, n_draws, rng)
    accuracies = narrowed(accuracies, scale, center=expected_multiclass_accuracy(p))
    if scale < 1:  # centred on every row's expectations (`estimation.expected_auc`, expected F1 counts)
        aucs, f1s = narrowed(aucs, scale, center=_expected_macro_auc(p)), narrowed(f1s, scale, center=_expected_macro_f1(p))
    acc_low, acc_high = band_interval(accuracies, band)
    auc, auc_low, auc_high = _mean_and_interval(aucs, band)
    f1, f1_low, f1_high = _mean_and_interval(f1s, band)
    return MulticlassEstimate(
        accuracy=expected_multiclass_accuracy(p), accuracy_low=acc_low, accuracy_high=acc_high,
        macro_roc_auc=auc, macro_roc_auc_low=auc_low, macro_roc_auc_high=auc_high,
        macro_f1=f1, macro_f1_low=f1_low, macro_f1_high=f1_high, n_rows=len(p), band=band,
    )


def multiclass_realized(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Realised accuracy, macro F1 (over the classes present in labels or predictions, as
    scikit-learn's default) and macro one-vs-rest ROC AUC (mean over the classes with both
    positive and negative rows; equals `roc_auc_score(multi_class="ovr")` when every class
    occurs) of class-index labels."""
    p = _probabilities(probabilities)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} predictions")
    pred = p.argmax(axis=1)
    aucs = [roc_auc_score(y == c, p[:, c]) for c in range(p.shape[1]) if 0 < (y == c).sum() < len(y)]
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0.0)),
        "macro_roc_auc": float(np.mean(aucs)) if aucs else math.nan,
    }


def check_multiclass_estimate(
    estimate: MulticlassEstimate, labels: np.ndarray, probabilities: np.ndarray, tolerance: float = 0.02
) -> MulticlassEstimateCheck:
    """Realised accuracy or macro ROC AUC outside [low - tolerance, high + tolerance] makes the
    estimate unreliable (an undefined realised AUC is not judged), as `estimation.check_estimate`."""
    realized = multiclass_realized(labels, probabilities)
    if len(labels) != estimate.n_rows:
        raise ValueError(f"the estimate was made on {estimate.n_rows} rows, not on these {len(labels)}: its band does not apply")
    acc, auc = realized["accuracy"], realized["macro_roc_auc"]
    problems = [_outside("accuracy", acc, estimate.accuracy_low, estimate.accuracy_high, tolerance)]
    if not (math.isnan(auc) or math.isnan(estimate.macro_roc_auc)):
        problems.append(_outside("macro ROC AUC", auc, estimate.macro_roc_auc_low, estimate.macro_roc_auc_high, tolerance))
    problems = [p for p in problems if p]
    if problems:
        reason = "; ".join(problems) + ": the class probabilities are no longer calibrated (concept drift?)"
    else:
        reason = (f"realised accuracy {acc:.3f} vs estimated {estimate.accuracy:.3f}, macro ROC AUC {auc:.3f} vs "
                  f"estimated {estimate.macro_roc_auc:.3f}: within the band")
    return MulticlassEstimateCheck(not problems, acc, auc, realized["macro_f1"], reason)


def _expected_macro_auc(p: np.ndarray) -> float:
    """Mean over classes of the expected one-vs-rest ROC AUC of p[:, c] (`estimation.expected_auc`)."""
    aucs = [expected_auc(p[:, c], p[:, c]) for c in range(p.shape[1])]
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else math.nan


def _expected_macro_f1(p: np.ndarray) -> float:
    """Mean over classes of 2 E[TP] / (E[labelled c] + predicted c), the simulated macro F1's centre up to O(1 / rows)."""
    pred = p.argmax(axis=1)
    k = p.shape[1]
    tp = np.bincount(pred, weights=p[np.arange(len(p)), pred], minlength=k)
    denominator = p.sum(axis=0) + np.bincount(pred, minlength=k)
    f1 = np.divide(2 * tp, denominator, out=np.full(k, np.nan), where=denominator > 0)
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else math.nan


def _simulate_multiclass(p: np.ndarray, n_draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy, macro ROC AUC and macro F1 of `n_draws` label vectors drawn row by row from the
    categorical distributions `p` (inverse CDF of one uniform per cell).

    Per draw and class c, with n1 the rows labelled c, the one-vs-rest AUC of p[:, c] is by
    Mann-Whitney (R - n1 (n1 + 1) / 2) / (n1 n0), R the sum of those rows' average ranks of
    p[:, c]; F1 is 2 TP / (n1 + predicted count). Both come from counts per (draw, class), one
    `bincount` per block. Macro means skip classes where the metric is undefined (NaN if all are).
    """
    n, k = p.shape
    pred = p.argmax(axis=1)
    ranks = np.column_stack([rankdata(p[:, c]) for c in range(k)])
    cum = np.cumsum(p, axis=1)[:, :-1]
    n_predicted = np.bincount(pred, minlength=k).astype(np.float64)
    n1, rank_sum, tp = (np.empty((n_draws, k)) for _ in range(3))
    block = max(1, _BLOCK_CELLS // n)
    rows = np.arange(n)
    for start in range(0, n_draws, block):
        stop = min(start + block, n_draws)
        u = rng.random((stop - start, n))
        labels = np.zeros(u.shape, dtype=np.int64)
        for c in range(k - 1):
            labels += u >= cum[:, c]
        cells = (np.arange(stop - start)[:, None] * k + labels).ravel()
        size = (stop - start) * k
        n1[start:stop] = np.bincount(cells, minlength=size).reshape(-1, k)
        rank_sum[start:stop] = np.bincount(cells, weights=ranks[rows, labels].ravel(), minlength=size).reshape(-1, k)
        tp[start:stop] = np.bincount(cells, weights=(labels == pred).ravel(), minlength=size).reshape(-1, k)
    accuracies = tp.sum(axis=1) / n
    n0 = n - n1
    with np.errstate(divide="ignore", invalid="ignore"):
        aucs = (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)
        f1s = 2 * tp / (n1 + n_predicted)
    aucs[(n1 == 0) | (n0 == 0)] = np.nan
    f1s[(n1 + n_predicted) == 0] = np.nan
    return accuracies, _row_nanmean(aucs), _row_nanmean(f1s)


TaskEstimate = PerformanceEstimate | MulticlassEstimate | RegressionEstimate
TaskEstimateCheck = EstimateCheck | MulticlassEstimateCheck | RegressionEstimateCheck


def estimate_task_performance(
    target: TargetSpec, predictions: np.ndarray, *, frame: pd.DataFrame | None = None, loss_model: LossModel | None = None,
    threshold: float = 0.5, band: float = 0.95, n_draws: int = 500, seed: int = 0,
) -> TaskEstimate:
    """The label-free estimate of `target`'s task: binary `estimate_performance(predictions,
    threshold, band, n_draws, seed)` unchanged; multiclass `estimate_multiclass_performance`;
    regression `estimate_regression_performance`, which needs the batch's `frame` and the
    champion's `loss_model`."""
    if target.type == BINARY:
        return estimate_performance(predictions, threshold=threshold, band=band, n_draws=n_draws, seed=seed)
    if target.type == MULTICLASS:
        return estimate_multiclass_performance(predictions, band=band, n_draws=n_draws, seed=seed)
    if target.type == REGRESSION:
        if loss_model is None or frame is None:
            raise ValueError("a regression estimate needs the batch's frame and the champion's loss model (fit_loss_model)")
        return estimate_regression_performance(loss_model, frame, predictions, band=band, n_draws=n_draws, seed=seed)
    raise ValueError(f"unknown task {target.type!r}")


def check_task_estimate(
    target: TargetSpec, estimate: TaskEstimate, labels: np.ndarray, predictions: np.ndarray, *,
    threshold: float = 0.5, tolerance: float = 0.02,
) -> TaskEstimateCheck:
    """Judge `estimate` against the (encoded) labels of the same rows: binary `check_estimate`
    unchanged; multiclass and regression as `check_multiclass_estimate` / `check_regression_estimate`
    (for regression `tolerance` is a share of the estimate, otherwise in the metric's units)."""
    if target.type == BINARY:
        return check_estimate(estimate, labels, predictions, threshold=threshold, tolerance=tolerance)
    if target.type == MULTICLASS:
        return check_multiclass_estimate(estimate, labels, predictions, tolerance=tolerance)
    if target.type == REGRESSION:
        return check_regression_estimate(estimate, labels, predictions, tolerance=tolerance)
    raise ValueError(f"unknown task {target.type!r}")


def _probabilities(probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or not len(p):
        raise ValueError(f"expected class probabilities of shape (rows >= 1, classes >= 2), got {p.shape}")
    p = class_probabilities(p, p.shape[1])
    if np.abs(p.sum(axis=1) - 1).max() > 1e-3:
        raise ValueError("each row of class probabilities must sum to 1")
    return p  # not renormalised: dividing by sums a hair off 1 would break ties between rows


def _mean_and_interval(values: np.ndarray, band: float) -> tuple[float, float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan, math.nan
    return (float(values.mean()), *band_interval(values, band))


def _row_nanmean(values: np.ndarray) -> np.ndarray:
    counts = (~np.isnan(values)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, np.nansum(values, axis=1) / counts, np.nan)
