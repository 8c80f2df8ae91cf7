"""The learning curve at training time: per-fraction values against scikit-learn's metrics, the
gain per doubling against scipy's least-squares slope, its orientation, and what it says on a
problem where more rows help vs one that saturates early."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import linregress
from sklearn.metrics import mean_absolute_error, roc_auc_score
from threadpoolctl import threadpool_limits

from retrain_assets.core.spec import parse_spec
from retrain_assets.core.training.learning_curve import FRACTIONS, gain_per_doubling, learning_curve
from retrain_assets.core.training.modeling import build_pipeline, feature_frame, target_vector
from retrain_assets.core.training.selection import select_model, time_ordered_folds

SEED = 11


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def spec_for(task: str, n_features: int):
    target = {"name": "y", "classes": [0, 1]} if task == "binary" else {"name": "y", "type": "regression"}
    columns = {"id": {"type": "int"}, "at": {"type": "timestamp"}, **{f"x{i}": {"type": "float"} for i in range(n_features)}}
    return parse_spec({"name": "curve", "id": "id", "event_time": "at", "target": target, "columns": columns})


def frame(task: str, n_features: int, noise: float, partitions: int = 8, rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """`partitions` days of `rows` rows; the label is a linear signal spread over `n_features`
    features plus `noise`."""
    rng = np.random.default_rng(seed)
    n = partitions * rows
    x = rng.normal(size=(n, n_features))
    signal = x @ np.linspace(1.0, 0.3, n_features) + noise * rng.normal(size=n)
    out = pd.DataFrame(x, columns=[f"x{i}" for i in range(n_features)])
    out["y"] = (signal > 0).astype(int) if task == "binary" else signal
    out["id"] = np.arange(n)
    out["partition_start"] = pd.Timestamp("2025-01-01") + pd.to_timedelta(np.repeat(np.arange(partitions), rows), unit="D")
    out["at"] = out["partition_start"]
    return out


def curve_of(task: str, train: pd.DataFrame, spec, families: tuple[str, ...]):
    selection = select_model(train, spec, SEED, families, 3)
    return selection, learning_curve(train, spec, selection, SEED, 3)


def test_values_are_scikit_learn_metrics_of_the_chosen_configuration_on_seeded_subsamples():
    spec = spec_for("binary", 12)
    train = frame("binary", 12, 1.0)
    selection, curve = curve_of("binary", train, spec, ("logistic_regression",))
    y, features = target_vector(train, spec), feature_frame(train, spec)
    rng = np.random.default_rng(SEED)
    per_fold = []
    for index, (fit_rows, valid_rows) in enumerate(time_ordered_folds(train["partition_start"], 3)):
        values = []
        for fraction in FRACTIONS[:-1]:
            rows = np.sort(rng.choice(fit_rows, size=int(round(fraction * len(fit_rows))), replace=False))
            model = build_pipeline(spec, SEED, selection.chosen.family, selection.chosen.params).fit(features.iloc[rows], y[rows])
            values.append(roc_auc_score(y[valid_rows], model.predict_proba(features.iloc[valid_rows])[:, 1]))
        full = build_pipeline(spec, SEED, selection.chosen.family, selection.chosen.params).fit(features.iloc[fit_rows], y[fit_rows])
        values.append(roc_auc_score(y[valid_rows], full.predict_proba(features.iloc[valid_rows])[:, 1]))
        assert values[-1] == pytest.approx(selection.chosen.fold_scores[index])  # the reused full-size score
        per_fold.append(values)
    assert curve.metric == "roc_auc"
    assert curve.rows == tuple(int(round(np.mean([f * n for n in (120, 240, 360)]))) for f in FRACTIONS)
    assert curve.values == pytest.approx(tuple(np.mean(per_fold, axis=0)), abs=1e-12)
    assert curve.gain_per_doubling == pytest.approx(linregress(np.log2(curve.rows), curve.values).slope)


def test_the_gain_is_positive_where_rows_help_and_near_zero_where_the_model_saturates():
    _, helps = curve_of("binary", frame("binary", 20, 0.5, rows=50), spec_for("binary", 20), ("logistic_regression",))
    # Three features, many rows: a quarter of a fold already fits the logistic model (values differ, barely).
    _, flat = curve_of("binary", frame("binary", 3, 1.0, rows=150), spec_for("binary", 3), ("logistic_regression",))
    assert len(set(flat.values)) == 3
    assert helps.gain_per_doubling > 0.01
    assert abs(flat.gain_per_doubling) < 0.002
    assert helps.gain_per_doubling > 3 * abs(flat.gain_per_doubling)


def test_a_lower_is_better_metric_is_oriented_so_that_falling_error_is_a_positive_gain():
    spec = spec_for("regression", 15)
    train = frame("regression", 15, 0.5, rows=40)
    selection, curve = curve_of("regression", train, spec, ("ridge",))
    assert curve.metric == "mae"
    assert curve.values[0] > curve.values[-1]  # MAE falls with rows
    assert curve.gain_per_doubling > 0
    assert curve.gain_per_doubling == pytest.approx(-linregress(np.log2(curve.rows), curve.values).slope)
    # The full-size point is the search's own mean fold MAE.
    fit_rows, valid_rows = time_ordered_folds(train["partition_start"], 3)[0]
    model = build_pipeline(spec, SEED, "ridge", selection.chosen.params).fit(feature_frame(train.iloc[fit_rows], spec),
                                                                             train["y"].iloc[fit_rows])
    assert selection.chosen.fold_scores[0] == pytest.approx(
        mean_absolute_error(train["y"].iloc[valid_rows], model.predict(feature_frame(train.iloc[valid_rows], spec))))
    assert curve.values[-1] == pytest.approx(selection.chosen.mean_score)


def test_another_metric_than_the_search_s_is_fitted_at_full_size_too():
    spec = spec_for("regression", 4)
    train = frame("regression", 4, 0.5, rows=40)
    selection = select_model(train, spec, SEED, ("ridge",), 3)
    curve = learning_curve(train, spec, selection, SEED, 3, metric="rmse")
    assert curve.metric == "rmse" and len(curve.values) == 3
    assert curve.values[-1] != pytest.approx(selection.chosen.mean_score)  # not the search's MAE


def test_unmeasurable_curves_are_nan():
    spec = spec_for("binary", 3)
    few = frame("binary", 3, 1.0, partitions=2)
    selection = select_model(few, spec, SEED, ("logistic_regression",), 3)  # search skipped: two partitions
    assert math.isnan(learning_curve(few, spec, selection, SEED, 3).gain_per_doubling)
    tiny = frame("binary", 3, 1.0, rows=12)  # a quarter of every fold is under MIN_SUBSAMPLE_ROWS
    selection = select_model(tiny, spec, SEED, ("logistic_regression",), 3)
    curve = learning_curve(tiny, spec, selection, SEED, 3)
    assert math.isnan(curve.gain_per_doubling) and curve.values == ()
    assert math.isnan(gain_per_doubling([100, 100], [0.7, 0.8]))
