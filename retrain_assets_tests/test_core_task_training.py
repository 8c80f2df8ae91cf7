"""Training per task: families, prediction shapes, the search's task metric, regression spread and
the fast row scorer, on a seeded synthetic frame, against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.metrics import log_loss, mean_absolute_error, roc_auc_score, root_mean_squared_error
from threadpoolctl import threadpool_limits

from retrain_assets.core.deployment.scoring import RowScorer
from retrain_assets.core.policy.definition import TASK_FAMILIES
from retrain_assets.core.spec import parse_spec
from retrain_assets.core.training.families import TASK_DEFAULT_PARAMS, TASK_SEARCH_SPACE
from retrain_assets.core.training.modeling import (
    build_pipeline,
    feature_frame,
    model_family,
    predict_labels,
    predict_outputs,
    target_vector,
    train_model,
)
from retrain_assets.core.training.selection import Trial, fold_metrics, select_model, time_ordered_folds
from retrain_assets.core.training.uncertainty import bootstrap_ensemble, prediction_spread, uncertainty_members

CLASSES = ["sun", "rain", "fog", "snow"]  # "snow" never occurs in the frame
TARGETS = {"binary": {"name": "y", "classes": [0, 1]},
           "multiclass": {"name": "y", "type": "multiclass", "classes": CLASSES},
           "regression": {"name": "y", "type": "regression"}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Gradient boosting's OpenMP threads only contend on a small shared machine: these fits are tiny."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


FEATURES = {"x1": {"type": "float"}, "x2": {"type": "float"}, "region": {"type": "category", "categories": ["n", "s", "e"]}}


def task_spec(task: str, features: tuple[str, ...] = ("x1", "x2", "region")):
    return parse_spec({"name": "demo", "id": "id", "event_time": "at", "target": TARGETS[task],
                       "columns": {"id": {"type": "int"}, "at": {"type": "timestamp"}, **{f: FEATURES[f] for f in features}}})


def frame(task: str, n_partitions: int = 8, rows: int = 40, seed: int = 0) -> pd.DataFrame:
    """Rows over `n_partitions` days; the label depends on x1, x2 and the region (with noise)."""
    rng = np.random.default_rng(seed)
    n = n_partitions * rows
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    region = rng.choice(["n", "s", "e"], size=n)
    signal = 1.5 * x1 - x2 + pd.Series(region).map({"n": 0.0, "s": 1.0, "e": -1.0}).to_numpy()
    if task == "binary":
        y = (signal + rng.normal(size=n) > 0).astype(int)
    elif task == "multiclass":
        scores = np.column_stack([signal, -signal, 0.8 * x2]) + rng.gumbel(size=(n, 3))
        y = np.asarray(CLASSES[:3], dtype=object)[scores.argmax(axis=1)]
    else:
        y = 10.0 + 3.0 * signal + rng.normal(scale=0.5, size=n)
    x1[rng.uniform(size=n) < 0.1] = np.nan
    return pd.DataFrame({"id": np.arange(n), "at": pd.Timestamp("2025-01-01"), "x1": x1, "x2": x2, "region": region, "y": y,
                         "partition_start": np.repeat(pd.date_range("2025-01-01", periods=n_partitions), rows)})


CASES = [(task, family) for task, families in TASK_FAMILIES.items() for family in families]


@pytest.mark.parametrize("task, family", CASES)
def test_each_family_fits_and_predicts_in_the_task_shape(task, family):
    spec, df = task_spec(task), frame(task)
    model = train_model(df, spec, seed=7, family=family)
    assert model_family(model.pipeline) == family and model.params["model_family"] == family
    assert model.task == task and model.n_train_rows == len(df)
    outputs = predict_outputs(model.pipeline, df, spec)
    y = target_vector(df, spec)
    if task == "multiclass":
        assert outputs.shape == (len(df), 4)
        np.testing.assert_allclose(outputs.sum(axis=1), 1.0)
        assert (outputs[:, 3] == 0).all()  # "snow" never in training: its column is there, with 0
        assert set(predict_labels(model.pipeline, df, spec)) <= set(CLASSES[:3])
        assert (predict_labels(model.pipeline, df, spec) == df["y"]).mean() > 0.6
    elif task == "binary":
        assert outputs.shape == (len(df),) and roc_auc_score(y, outputs) > 0.8
        assert set(predict_labels(model.pipeline, df, spec)) == {0, 1}
    else:
        assert outputs.shape == (len(df),) and mean_absolute_error(y, outputs) < 0.5 * np.std(y)
        np.testing.assert_array_equal(predict_labels(model.pipeline, df, spec), outputs)
    again = predict_outputs(train_model(df, spec, seed=7, family=family).pipeline, df, spec)
    np.testing.assert_array_equal(outputs, again)


def test_estimators_per_task():
    boosting = build_pipeline(task_spec("regression"), 0, "hist_gradient_boosting")[-1]
    assert isinstance(boosting, HistGradientBoostingRegressor) and boosting.loss == "squared_error"
    assert not boosting.early_stopping
    assert isinstance(build_pipeline(task_spec("multiclass"), 0, "hist_gradient_boosting")[-1], HistGradientBoostingClassifier)
    assert isinstance(build_pipeline(task_spec("regression"), 0)[-1], Ridge)  # the task's first family by default
    assert build_pipeline(task_spec("regression"), 0, "ridge", {"alpha": 10.0})[-1].alpha == 10.0
    assert TASK_DEFAULT_PARAMS["binary"]["logistic_regression"] == {"C": 1.0}
    for task, families in TASK_FAMILIES.items():
        assert tuple(TASK_DEFAULT_PARAMS[task]) == tuple(TASK_SEARCH_SPACE[task]) == families


def test_multiclass_logistic_is_multinomial():
    spec, df = task_spec("multiclass"), frame("multiclass")
    pipeline = train_model(df, spec, seed=7, family="logistic_regression").pipeline
    x = pipeline[:-1].transform(feature_frame(df, spec))
    model = pipeline[-1]
    assert model.coef_.shape[0] == 3
    np.testing.assert_allclose(model.predict_proba(x), softmax(x @ model.coef_.T + model.intercept_, axis=1), atol=1e-12)


def test_multiclass_columns_follow_the_declared_order_with_absent_classes_zero():
    """Without "rain" (declared second) the model knows classes 0 and 2: its two columns land there."""
    spec = task_spec("multiclass")
    df = frame("multiclass")
    df = df[df["y"] != "rain"]
    for family in TASK_FAMILIES["multiclass"]:
        pipeline = train_model(df, spec, seed=7, family=family).pipeline
        np.testing.assert_array_equal(pipeline.classes_, [0, 2])
        outputs = predict_outputs(pipeline, df, spec)
        proba = pipeline.predict_proba(feature_frame(df, spec))
        np.testing.assert_array_equal(outputs[:, [0, 2]], proba)
        assert (outputs[:, [1, 3]] == 0).all()
        labels = predict_labels(pipeline, df, spec)
        np.testing.assert_array_equal(labels, np.where(proba[:, 1] > proba[:, 0], "fog", "sun"))


def test_label_summaries_per_task():
    spec, df = task_spec("multiclass"), frame("multiclass")
    model = train_model(df, spec, seed=7)
    shares = df["y"].value_counts(normalize=True)
    assert model.label_summary["class_shares"] == pytest.approx({c: shares.get(c, 0.0) for c in CLASSES})
    assert np.isnan(model.train_positive_rate) and np.isnan(model.train_label_mean)
    spec, df = task_spec("regression"), frame("regression")
    model = train_model(df, spec, seed=7)
    assert model.train_label_mean == pytest.approx(df["y"].mean())
    assert (model.label_summary["mean"], model.label_summary["std"]) == pytest.approx((df["y"].mean(), df["y"].std(ddof=0)))
    spec, df = task_spec("binary"), frame("binary")
    model = train_model(df, spec, seed=7)
    assert model.train_positive_rate == model.train_label_mean == pytest.approx(df["y"].mean())


def test_untrainable_windows_and_unknown_families_fail_loudly():
    df = frame("multiclass")
    with pytest.raises(ValueError, match=r"only one class \('fog'\).*training_window_partitions"):
        train_model(df[df["y"] == "fog"], task_spec("multiclass"), seed=7)
    with pytest.raises(ValueError, match=r"constant label \(4\)"):
        train_model(frame("regression").assign(y=4.0), task_spec("regression"), seed=7)
    with pytest.raises(ValueError, match=r"unknown model family 'ridge' for a binary target; known: \['hist_gradient_boosting', "
                                         r"'logistic_regression'\]"):
        train_model(frame("binary"), task_spec("binary"), seed=7, family="ridge")
    with pytest.raises(ValueError, match="unknown model families .*'logistic_regression'.* for a regression target"):
        select_model(frame("regression"), task_spec("regression"), 7, ("logistic_regression",), 3)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_fold_scores_are_sklearns_metrics_of_each_fold(task):
    spec, df = task_spec(task), frame(task)
    selection = select_model(df, spec, seed=7, families=TASK_FAMILIES[task], n_folds=3)
    y = target_vector(df, spec)
    folds = time_ordered_folds(df["partition_start"], 3)
    checked = [t for t in selection.trials if t.params == TASK_SEARCH_SPACE[task][t.family][0]]  # one per family
    assert len(checked) == 2
    for trial in checked:
        for k, (fit_rows, valid_rows) in enumerate(folds):
            pipeline = build_pipeline(spec, 7, trial.family, trial.params).fit(feature_frame(df.iloc[fit_rows], spec), y[fit_rows])
            outputs = predict_outputs(pipeline, df.iloc[valid_rows], spec)
            if task == "multiclass":
                expected = (roc_auc_score(y[valid_rows], outputs[:, :3], multi_class="ovr", average="macro"),
                            log_loss(y[valid_rows], outputs, labels=[0, 1, 2, 3]))
            else:
                expected = (mean_absolute_error(y[valid_rows], outputs), root_mean_squared_error(y[valid_rows], outputs))
            assert (trial.fold_scores[k], trial.fold_second_scores[k]) == pytest.approx(expected, rel=1e-9)
    assert {t.metric for t in selection.trials} == {"macro_roc_auc" if task == "multiclass" else "mae"}


def test_regression_search_picks_the_lowest_mae():
    """A label driven by an interaction: gradient boosting must win on MAE (lower is better)."""
    spec, df = task_spec("regression"), frame("regression")
    df = df.assign(y=np.where((df["x2"] > 0) ^ (df["region"] == "s"), 5.0, -5.0) + df["x2"])
    selection = select_model(df, spec, seed=7, families=TASK_FAMILIES["regression"], n_folds=3)
    assert len(selection.trials) == sum(len(TASK_SEARCH_SPACE["regression"][f]) for f in TASK_FAMILIES["regression"])
    assert selection.chosen.mean_score == min(t.mean_score for t in selection.trials)
    assert selection.chosen.family == "hist_gradient_boosting"
    assert selection.chosen.mean_score < min(t.mean_score for t in selection.trials if t.family == "ridge") - 1
    assert "mean MAE" in selection.note and selection.model.params["model_family"] == "hist_gradient_boosting"
    assert selection.search_space(("ridge",)) == {"ridge": [{"alpha": 0.1}, {"alpha": 1.0}, {"alpha": 10.0}]}
    assert "fold_roc_auc" not in selection.chosen.to_dict() and selection.chosen.to_dict()["metric"] == "mae"
    with pytest.raises(AttributeError, match="use fold_scores"):
        selection.chosen.mean_roc_auc


def test_a_binary_trial_keeps_its_roc_auc_names():
    trial = Trial("logistic_regression", {"C": 1.0}, [0.7, float("nan"), 0.9], [0.5, 0.6, 0.4])
    assert trial.fold_roc_auc == trial.fold_scores and trial.fold_log_loss == [0.5, 0.6, 0.4]
    assert trial.mean_roc_auc == trial.mean_score == pytest.approx(0.8)
    assert trial.std_roc_auc == trial.std_score == pytest.approx(0.1)


def test_fold_metrics_binary_matches_sklearn():
    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 2, 50), rng.uniform(size=50)
    assert fold_metrics(y, p, task_spec("binary").target) == pytest.approx((roc_auc_score(y, p), log_loss(y, p)))


def test_regression_spread_is_the_std_of_the_fold_models():
    spec, df = task_spec("regression"), frame("regression")
    selection = select_model(df, spec, seed=7, families=("ridge", "hist_gradient_boosting"), n_folds=3)
    members = uncertainty_members(selection, df, spec, seed=7)
    assert members == selection.fold_models and len(members) == 3
    assert all(model_family(m) == selection.chosen.family for m in members)
    expected = np.std(np.stack([m.predict(feature_frame(df, spec)) for m in members]), axis=0)
    np.testing.assert_allclose(prediction_spread(members, df, spec), expected, rtol=1e-12)
    # far outside the training data the members disagree more than on it
    far = df.assign(x1=df["x1"] * 50, x2=df["x2"] * 50)
    assert np.median(prediction_spread(members, far, spec)) > np.median(prediction_spread(members, df, spec))
    with pytest.raises(ValueError, match="probabilities"):
        prediction_spread(members, df, task_spec("binary"))


def test_without_a_search_the_spread_comes_from_a_seeded_bootstrap():
    spec, df = task_spec("regression"), frame("regression", n_partitions=2)
    selection = select_model(df, spec, seed=7, families=("ridge",), n_folds=3)
    assert selection.fold_models == ()
    members = uncertainty_members(selection, df, spec, seed=7, n_members=4)
    again = bootstrap_ensemble(df, spec, 7, "ridge", {"alpha": 0.1}, n_members=4)
    assert len(members) == 4 and [m[-1].alpha for m in members] == [0.1] * 4
    for a, b in zip(members, again):
        np.testing.assert_array_equal(a[-1].coef_, b[-1].coef_)
    spread = prediction_spread(members, df, spec)
    assert spread.shape == (len(df),) and (spread > 0).all()


def request_rows(df: pd.DataFrame) -> list[dict]:
    rows = df[["x1", "x2", "region"]].astype(object).where(df[["x1", "x2", "region"]].notna(), None).to_dict("records")
    rows[0]["region"], rows[1]["region"] = None, "w"  # a missing and an unknown category
    return rows


@pytest.mark.parametrize("task, family", CASES)
def test_the_fast_row_scorer_reproduces_sklearn_per_task(task, family):
    spec, df = task_spec(task), frame(task)
    if task == "regression":
        df = df.assign(y=df["y"] * 1000.0)  # values far from 1: the tolerance scales with them
    pipeline = train_model(df, spec, seed=7, family=family).pipeline
    scorer = RowScorer(pipeline, spec)
    rows = request_rows(df.iloc[:40])
    expected = predict_outputs(pipeline, pd.DataFrame.from_records(rows), spec)
    assert scorer.fast
    predicted = scorer.predict(rows)
    assert predicted.shape == expected.shape
    np.testing.assert_allclose(predicted, expected, rtol=1e-9, atol=1e-9)
    if task == "binary":
        np.testing.assert_array_equal(scorer.score(rows), predicted)
    else:
        with pytest.raises(ValueError, match="use predict"):
            scorer.score(rows)


def test_the_fast_row_scorer_maps_a_two_class_multiclass_model():
    spec, df = task_spec("multiclass"), frame("multiclass")
    pipeline = train_model(df[df["y"] != "sun"], spec, seed=7, family="logistic_regression").pipeline
    scorer = RowScorer(pipeline, spec)
    rows = request_rows(df.iloc[:40])
    assert scorer.fast and pipeline[-1].coef_.shape[0] == 1
    predicted = scorer.predict(rows)
    np.testing.assert_allclose(predicted, predict_outputs(pipeline, pd.DataFrame.from_records(rows), spec), rtol=0, atol=1e-9)
    assert (predicted[:, [0, 3]] == 0).all()


@pytest.mark.parametrize("features", [("x1", "x2"), ("region",)])
@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_the_fast_row_scorer_serves_numeric_only_and_categorical_only_specs(task, features):
    spec, df = task_spec(task, features), frame(task)
    pipeline = train_model(df, spec, seed=7).pipeline
    scorer = RowScorer(pipeline, spec)
    rows = [{k: v for k, v in row.items() if k in features} for row in request_rows(df.iloc[:40])]
    assert scorer.fast
    np.testing.assert_allclose(scorer.predict(rows), predict_outputs(pipeline, pd.DataFrame.from_records(rows), spec),
                               rtol=1e-9, atol=1e-9)
