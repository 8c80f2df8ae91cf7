"""The uncertainty of a batch's realized primary metric: its labeled rows are a sample, so the
realized value comes with a two-sided 90 % percentile bootstrap interval
(`drift_report.realized_performance_low` / `_high`), which the drift clause's impact test
(`core.policy.value.drift_impact`) weighs. The drift report and the backtest both call
`realized_interval`, so the pipeline and the backtest decide on the same numbers.

The interval comes from the project's one bootstrap (`evaluation.task_bootstrap.task_paired_bootstrap`:
the same strata, metric definitions and draws as the gate's): the champion is paired with a
perfect predictor of the labels, whose metric is the same constant in every resample (both
classes are in every stratified resample), so the interval of the difference shifted by that
constant is the interval of the champion's metric.
"""

from __future__ import annotations

import math

import numpy as np

from retrain_assets.core.evaluation.task_bootstrap import TASK_BOOTSTRAP_METRICS, task_paired_bootstrap
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import MULTICLASS, REGRESSION

# The level `core.policy.value.drift_impact` reads the bounds at (its z of 1.645).
REALIZED_CONFIDENCE = 0.90
# The drift report runs for every batch and again whenever its labels change, so the interval must
# cost milliseconds. With 200 resamples each bound's Monte Carlo standard error is about 5 % of the
# interval's width (0.15 sigma for a normal statistic), plenty for a test that asks whether the
# interval lies wholly on one side of a baseline; the gate's one-off model comparison takes 2,000.
REALIZED_RESAMPLES = 200


def realized_interval(target: TargetSpec, metric: str, labels, predictions, seed: int = 0) -> tuple[float, float]:
    """The two-sided `REALIZED_CONFIDENCE` percentile bootstrap interval (low, high) of `metric`
    of the champion's `predictions` on a batch's labeled rows, `labels` encoded
    (`core.tasks.encode_labels`), predictions in the task's shape (binary the positive-class
    score, multiclass (rows, classes) probabilities, regression values). Deterministic in `seed`.

    Resampling follows the gate's bootstrap: binary and multiclass within each class (each class
    keeps its count), regression rows with replacement. (NaN, NaN) where the realized value is
    undefined or has no bootstrap: no rows, one class only (binary, multiclass), fewer than two
    rows or, for R², constant labels (regression), a metric the task's bootstrap does not know."""
    nan = (math.nan, math.nan)
    task = target.type
    y = np.asarray(labels, dtype=float if task == REGRESSION else np.int64)
    if metric not in TASK_BOOTSTRAP_METRICS[task] or len(y) < 2 or (metric == "r2" and np.ptp(y) == 0):
        return nan
    if task != REGRESSION and len(np.unique(y)) < 2:
        return nan
    predictions = np.asarray(predictions, dtype=float)
    if task == MULTICLASS:
        perfect = np.eye(predictions.shape[1])[y]  # one-hot: probability 1 on the true class
    else:
        perfect = y.astype(float)
    ci = task_paired_bootstrap(target, y, predictions, perfect, n_resamples=REALIZED_RESAMPLES, confidence=REALIZED_CONFIDENCE,
                               seed=seed, metrics=(metric,))[metric]
    return ci.lower + ci.champion, ci.upper + ci.champion
