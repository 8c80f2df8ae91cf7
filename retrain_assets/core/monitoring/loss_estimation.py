"""Regression: direct loss estimation (like NannyML's DLE). `fit_loss_model` fits, on reference
rows the champion did not train on (its holdout: on its own training rows the errors are
optimistic), two gradient-boosting models of the champion's error from the features (the
spec's preprocessing) and the prediction: one of the absolute error, one of the squared error
(Poisson loss: non-negative targets, mean-calibrated). Estimated MAE is the mean predicted
absolute error, estimated RMSE the root of the mean predicted squared error. The band is the
sampling error of the batch's realised metrics, by a multiplicative residual bootstrap: each
row's absolute error is its predicted absolute error times a ratio |e| / predicted |e| drawn
from the reference (out-of-fold predictions), so heteroscedastic and heavy-tailed errors keep
their shape; the band is the estimate plus the central `band` interval of the simulated
metrics around their mean.

The estimate is blind to concept drift by construction (it trusts the reference's error model);
`check_regression_estimate` turns a realised metric outside the band into `reliable=False`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import KFold, cross_val_predict
from threadpoolctl import threadpool_limits

from retrain_assets.core.monitoring.estimation import _outside
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.training.modeling import build_pipeline, feature_frame

# Label-free error draws are simulated in blocks of about this many cells (draws x rows).
_BLOCK_CELLS = 1_000_000
# Reference error ratios kept in a loss model (evenly spaced order statistics above this).
_MAX_RATIOS = 5_000
_FOLDS = 5


@dataclass
class LossModel:
    """The champion's error modelled on reference data (`fit_loss_model`); picklable.

    `ratios` are the sorted reference |error| / out-of-fold predicted |error| (at most
    `_MAX_RATIOS` evenly spaced order statistics); `reference_mae` / `reference_rmse` are the
    champion's realised metrics on the reference rows."""

    spec: DatasetSpec
    preprocess: Any
    absolute: HistGradientBoostingRegressor
    squared: HistGradientBoostingRegressor
    ratios: np.ndarray
    n_reference: int
    reference_mae: float
    reference_rmse: float


@dataclass(frozen=True)
class RegressionEstimate:
    """Estimated MAE and RMSE of a batch (label units), each with its central `band` interval."""

    mae: float
    mae_low: float
    mae_high: float
    rmse: float
    rmse_low: float
    rmse_high: float
    n_rows: int
    band: float


@dataclass(frozen=True)
class RegressionEstimateCheck:
    """A regression estimate judged against labels: `reliable` is False when MAE or RMSE left the band."""

    reliable: bool
    realized_mae: float
    realized_rmse: float
    reason: str


def fit_loss_model(
    reference_frame: pd.DataFrame, reference_predictions: np.ndarray, reference_labels: np.ndarray, spec: DatasetSpec, seed: int
) -> LossModel:
    """Fit the models of the champion's absolute and squared error on reference rows (see the
    module doc; use rows the champion did not train on). Deterministic in `seed`."""
    pred = _values(reference_predictions, "reference predictions")
    y = _values(reference_labels, "reference labels")
    if len(pred) != len(y) or len(y) != len(reference_frame):
        raise ValueError(f"{len(reference_frame)} reference rows, {len(pred)} predictions and {len(y)} labels")
    if len(y) < 2 * _FOLDS:
        raise ValueError(f"a loss model needs at least {2 * _FOLDS} reference rows, got {len(y)}")
    preprocess = build_pipeline(spec, seed)[:-1]
    x = np.column_stack([preprocess.fit_transform(feature_frame(reference_frame, spec)), pred])
    error = np.abs(y - pred)
    folds = KFold(_FOLDS, shuffle=True, random_state=seed)
    # One OpenMP thread, as in `multivariate.py`: busy-waiting threads slow these small fits 10x
    # or more on a host shared with other processes; the result does not depend on it.
    with threadpool_limits(limits=1, user_api="openmp"):
        absolute = _loss_regressor(seed, error).fit(x, error)
        squared = _loss_regressor(seed, error).fit(x, error**2)
        out_of_fold = np.maximum(cross_val_predict(_loss_regressor(seed, error), x, error, cv=folds), 0.0)
    floor = max(float(error.mean()) * 1e-6, 1e-12)
    ratios = np.sort(error / np.maximum(out_of_fold, floor))
    if len(ratios) > _MAX_RATIOS:
        ratios = ratios[np.round(np.linspace(0, len(ratios) - 1, _MAX_RATIOS)).astype(np.int64)]
    return LossModel(spec=spec, preprocess=preprocess, absolute=absolute, squared=squared, ratios=ratios, n_reference=len(y),
                     reference_mae=float(error.mean()), reference_rmse=float(np.sqrt((error**2).mean())))


def estimate_regression_performance(
    loss_model: LossModel, frame: pd.DataFrame, predictions: np.ndarray, band: float = 0.95, n_draws: int = 500, seed: int = 0
) -> RegressionEstimate:
    """Estimated MAE and RMSE of the champion's `predictions` on `frame` without labels, with the
    bootstrap band of the module doc. Deterministic in `seed`."""
    pred = _values(predictions, "predictions")
    if len(pred) != len(frame) or not len(pred):
        raise ValueError(f"{len(frame)} rows and {len(pred)} predictions: need one prediction per row, at least one row")
    require_band(band, n_draws)
    x = np.column_stack([loss_model.preprocess.transform(feature_frame(frame, loss_model.spec)), pred])
    with threadpool_limits(limits=1, user_api="openmp"):
        absolute = np.maximum(loss_model.absolute.predict(x), 0.0)
        squared = np.maximum(loss_model.squared.predict(x), 0.0)
    rng = np.random.default_rng(seed)
    maes, rmses = np.empty(n_draws), np.empty(n_draws)
    block = max(1, _BLOCK_CELLS // len(pred))
    for start in range(0, n_draws, block):
        stop = min(start + block, n_draws)
        errors = absolute * loss_model.ratios[rng.integers(0, len(loss_model.ratios), (stop - start, len(pred)))]
        maes[start:stop] = errors.mean(axis=1)
        rmses[start:stop] = np.sqrt((errors**2).mean(axis=1))
    mae, rmse = float(absolute.mean()), float(np.sqrt(squared.mean()))
    mae_low, mae_high = band_interval(maes - maes.mean() + mae, band)
    rmse_low, rmse_high = band_interval(rmses - rmses.mean() + rmse, band)
    return RegressionEstimate(mae, max(mae_low, 0.0), mae_high, rmse, max(rmse_low, 0.0), rmse_high, len(pred), band)


def check_regression_estimate(
    estimate: RegressionEstimate, labels: np.ndarray, predictions: np.ndarray, tolerance: float = 0.02
) -> RegressionEstimateCheck:
    """Realised MAE or RMSE outside [low - t, high + t], t = `tolerance` times the estimate (a
    share, since errors are in the label's units), makes the estimate unreliable."""
    y, pred = _values(labels, "labels"), _values(predictions, "predictions")
    if len(y) != len(pred):
        raise ValueError(f"{len(y)} labels for {len(pred)} predictions")
    if len(pred) != estimate.n_rows:
        raise ValueError(f"the estimate was made on {estimate.n_rows} rows, not on these {len(pred)}: its band does not apply")
    error = np.abs(y - pred)
    mae, rmse = float(error.mean()), float(np.sqrt((error**2).mean()))
    problems = [
        _outside("MAE", mae, estimate.mae_low, estimate.mae_high, tolerance * estimate.mae),
        _outside("RMSE", rmse, estimate.rmse_low, estimate.rmse_high, tolerance * estimate.rmse),
    ]
    problems = [p for p in problems if p]
    if problems:
        reason = "; ".join(problems) + ": the champion's errors no longer behave as on the reference (concept drift?)"
    else:
        reason = f"realised MAE {mae:.4g} vs estimated {estimate.mae:.4g}, RMSE {rmse:.4g} vs estimated {estimate.rmse:.4g}: within the band"
    return RegressionEstimateCheck(not problems, mae, rmse, reason)


def _loss_regressor(seed: int, error: np.ndarray) -> HistGradientBoostingRegressor:
    """Gradient boosting of a non-negative loss; Poisson unless every error is zero."""
    return HistGradientBoostingRegressor(
        loss="poisson" if error.sum() > 0 else "squared_error", learning_rate=0.1, max_iter=200, max_leaf_nodes=15,
        min_samples_leaf=20, l2_regularization=1.0, early_stopping=False, random_state=seed,
    )


def _values(values: Any, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} must be finite numbers")
    return x


def require_band(band: float, n_draws: int) -> None:
    """Refuse a band outside (0, 1) or fewer than one draw."""
    if not 0 < band < 1:
        raise ValueError(f"band must be in (0, 1), got {band}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")


def band_interval(values: np.ndarray, band: float) -> tuple[float, float]:
    """The central `band` interval (percentiles) of `values`."""
    tail = (1 - band) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
