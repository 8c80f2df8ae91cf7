"""An always-valid confidence sequence for the mean of a stream: an interval that holds at every
sample size at once, so it may be looked at after every batch (and acted on at any look) while
keeping its stated error rate. A fixed-n interval looked at after every batch does not: each look
is another chance to cross by luck, and the chances add up.

The sequence is the normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon (2021, "Time-
uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist.; eq. (14)) with the
running empirical variance in place of the variance proxy, the asymptotic confidence sequence of
Waudby-Smith, Arnold, Wu, Howard & Ramdas (2021, "Time-uniform central limit theory and
asymptotic confidence sequences"): with mean m_t, variance s_t² and V_t = t s_t² after t values,

    m_t ± sqrt((V_t + rho) (log((V_t + rho) / rho) + 2 log(1 / alpha))) / t,

a two-sided (1 - alpha) sequence (Ville's inequality on the mixture martingale). `rho` sets the
sample size at which it is tightest; `tuned_rho` puts that at a planned size. Asymptotic: valid as
the sample grows for losses with a finite variance (no bound on the values needed, so squared
errors of a regression are fine); `MIN_ROWS` keeps a handful of values from deciding anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Fewer values than this give no interval (the empirical variance is not yet a variance).
MIN_ROWS = 30


@dataclass(frozen=True)
class ConfidenceSequence:
    """The sequence at the newest of `n` values: their `mean` and the always-valid [`lower`,
    `upper`] at level `confidence` (NaN bounds: fewer than `MIN_ROWS` values)."""

    n: int
    mean: float
    lower: float
    upper: float
    confidence: float


def tuned_rho(planned_rows: int, variance: float, confidence: float) -> float:
    """The mixture's `rho` that makes the boundary tightest near `planned_rows` values of this
    `variance` (Waudby-Smith et al. 2021, eq. (22), in the variance's units)."""
    two_log = -2.0 * math.log(1.0 - confidence)
    return max(planned_rows, 1) * max(variance, 1e-12) / (two_log + math.log(two_log + 1.0))


def normal_mixture_radius(intrinsic_time: np.ndarray | float, rho: float, confidence: float) -> np.ndarray | float:
    """The boundary on |sum of centred values| at intrinsic time V (the summed variance), two-sided
    at level `confidence`: sqrt((V + rho) (log((V + rho) / rho) + 2 log(1 / alpha)))."""
    v = np.asarray(intrinsic_time, dtype=float)
    return np.sqrt((v + rho) * (np.log((v + rho) / rho) - 2.0 * math.log(1.0 - confidence)))


def confidence_sequence(values, confidence: float, planned_rows: int = 300) -> ConfidenceSequence:
    """The always-valid interval for the mean of `values` (in arrival order; only their count and
    moments matter here) at level `confidence`, tightest near `planned_rows` values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(len(x))
    if n < MIN_ROWS:
        return ConfidenceSequence(n, float(x.mean()) if n else math.nan, math.nan, math.nan, confidence)
    mean, variance = float(x.mean()), float(x.var(ddof=1))
    rho = tuned_rho(planned_rows, variance, confidence)
    radius = float(normal_mixture_radius(n * variance, rho, confidence)) / n
    return ConfidenceSequence(n, mean, mean - radius, mean + radius, confidence)


def request_losses(y, outputs, task: str, metric: str) -> np.ndarray:
    """Each request's loss in the task's terms, a proper per-row score whose mean the models are
    compared on (a rank metric such as ROC AUC has no per-row value): binary the Brier loss of the
    positive-class score, multiclass the multiclass Brier loss of the probability rows (`y` encoded
    class indices), regression the absolute error when the primary `metric` is MAE, else the
    squared error (RMSE, R²)."""
    out = np.asarray(outputs, dtype=float)
    if task == "multiclass":
        onehot = np.zeros_like(out)
        onehot[np.arange(len(out)), np.asarray(y, dtype=int)] = 1.0
        return ((out - onehot) ** 2).sum(axis=1)
    error = out.ravel() - np.asarray(y, dtype=float)
    return np.abs(error) if task == "regression" and metric == "mae" else error ** 2
