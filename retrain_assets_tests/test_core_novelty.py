"""Per-row novelty: a shifted cluster is flagged, rows of the training distribution about 1 %, the
Mahalanobis part against scipy and the forest part against scikit-learn, missing values and
categories, pickling."""

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import mahalanobis
from sklearn.ensemble import IsolationForest

from retrain_assets.core.monitoring.novelty import (
    EXPECTED_FALSE_NOVEL_SHARE,
    fit_novelty_model,
    novelty_check,
    novelty_summary,
    score_records,
    score_rows,
)
from retrain_assets.core.monitoring import novelty

NUMERIC, CATEGORICAL = ["a", "b", "n"], ["kind"]


def rows(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Two correlated normals (one shifted by `shift`), a small integer count and a category."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, n)
    return pd.DataFrame({"id": np.arange(n) + 1000 * seed, "a": a + shift, "b": 3 * (0.6 * a + 0.8 * rng.normal(0, 1, n)) + 1,
                         "n": rng.poisson(2, n), "kind": rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1])})


TRAIN = rows(4000, 0)
MODEL = fit_novelty_model(TRAIN, NUMERIC, CATEGORICAL, seed=0)


def test_rows_of_the_training_distribution_are_novel_about_one_percent_of_the_time():
    assert EXPECTED_FALSE_NOVEL_SHARE == pytest.approx(0.01)
    train_share = score_rows(MODEL, TRAIN)[1].mean()
    assert 0.005 <= train_share <= 0.01  # each score flags 0.5 % of the training rows; the union at most 1 %
    fresh = score_rows(MODEL, rows(20000, 1))[1].mean()
    assert 0.005 <= fresh <= 0.02


def test_a_shifted_cluster_is_flagged_and_the_rest_is_not():
    batch = pd.concat([rows(950, 2), rows(50, 3, shift=6.0)], ignore_index=True)
    score, novel = score_rows(MODEL, batch)
    assert novel[950:].all()
    assert novel[:950].mean() < 0.03
    summary = novelty_summary(MODEL, batch, "id")
    assert 0.05 <= summary["novelty_share"] < 0.08
    assert summary["novelty_score_p99"] > 1.0
    top = [int(i) for i in summary["novelty_examples"].split(", ")]
    assert len(top) == 5 and all(i >= 3000 for i in top)  # the shifted rows' ids


def test_the_distance_is_mahalanobis_of_the_robustly_scaled_numerics():
    scaled = (TRAIN[NUMERIC].to_numpy(float) - TRAIN[NUMERIC].median().to_numpy()) / MODEL.scales
    q75, q25 = np.percentile(TRAIN[NUMERIC].to_numpy(float), [75, 25], axis=0)
    np.testing.assert_allclose(MODEL.scales, q75 - q25)
    inverse = np.linalg.inv(np.cov(scaled, rowvar=False, ddof=0))
    batch = rows(30, 4)
    expected = [mahalanobis(r, scaled.mean(axis=0), inverse)
                for r in (batch[NUMERIC].to_numpy(float) - TRAIN[NUMERIC].median().to_numpy()) / MODEL.scales]
    distance, isolation = novelty._raw_scores(MODEL, batch)
    np.testing.assert_allclose(distance, expected, rtol=1e-6)
    assert MODEL.distance_threshold == np.quantile(novelty._raw_scores(MODEL, TRAIN)[0], 0.995)
    # The forest is scikit-learn's, seeded, on the scaled numerics and the category ranks.
    codes = TRAIN["kind"].map({"x": 0, "y": 1, "z": 2}).to_numpy(float)
    forest = IsolationForest(n_estimators=novelty.N_TREES, random_state=0).fit(np.column_stack([scaled, codes]))
    batch_scaled = (batch[NUMERIC].to_numpy(float) - TRAIN[NUMERIC].median().to_numpy()) / MODEL.scales
    expected_isolation = -forest.score_samples(np.column_stack([batch_scaled, batch["kind"].map({"x": 0, "y": 1, "z": 2})]))
    np.testing.assert_allclose(isolation, expected_isolation)
    score, novel = score_rows(MODEL, batch)
    np.testing.assert_allclose(score, np.maximum(distance / MODEL.distance_threshold, isolation / MODEL.forest_threshold))
    np.testing.assert_array_equal(novel, score > 1)


def test_missing_values_read_as_the_training_medians_and_missing_or_unseen_categories_are_scored():
    train = TRAIN.copy()
    train.loc[::10, "a"] = np.nan
    train.loc[::7, "kind"] = None
    model = fit_novelty_model(train, NUMERIC, CATEGORICAL, seed=0)
    assert model.medians[0] == train["a"].median()
    assert "\x00missing" in model.categories["kind"]
    at_median = pd.DataFrame({"a": [np.nan, model.medians[0]], "b": [np.nan, model.medians[1]], "n": [None, model.medians[2]],
                              "kind": [None, "x"]})
    distance, _ = novelty._raw_scores(model, at_median)
    assert distance[0] == distance[1]
    score, novel = score_rows(model, at_median.drop(columns=["kind"]))  # a column the batch lacks: missing
    assert np.isfinite(score).all() and not novel.any()
    unseen = rows(2000, 5).assign(kind="never seen")
    assert score_rows(model, unseen)[0].mean() > score_rows(model, rows(2000, 5))[0].mean()


def test_pickle_round_trip_seeding_and_edge_cases():
    batch = rows(200, 6)
    again = pickle.loads(pickle.dumps(MODEL))
    np.testing.assert_array_equal(score_rows(again, batch)[0], score_rows(MODEL, batch)[0])
    refit = fit_novelty_model(TRAIN, NUMERIC, CATEGORICAL, seed=0)
    np.testing.assert_array_equal(score_rows(refit, batch)[0], score_rows(MODEL, batch)[0])
    assert len(pickle.dumps(MODEL)) < 3_000_000
    categorical_only = fit_novelty_model(TRAIN, [], CATEGORICAL, seed=0)
    assert math.isinf(categorical_only.distance_threshold) and score_rows(categorical_only, batch)[0].shape == (200,)
    empty = score_rows(MODEL, batch.head(0))
    assert empty[0].shape == (0,) and empty[1].dtype == bool
    assert math.isnan(novelty_summary(None, batch)["novelty_share"])


def test_the_drift_report_check_warns_above_the_clauses_limit():
    batch = pd.concat([rows(900, 7), rows(100, 8, shift=6.0)], ignore_index=True)
    summary = novelty_summary(MODEL, batch, "id")
    passed, words, metadata = novelty_check(summary, 0.05)
    assert not passed and words.startswith(f"{summary['novelty_share']:.1%} of the batch's rows are novel (limit 5.0%")
    assert metadata["novelty_share"] == summary["novelty_share"] and metadata["novelty_examples"] in words
    assert novelty_check(novelty_summary(MODEL, rows(1000, 9), "id"), 0.05)[0]
    assert novelty_check(novelty_summary(None, batch), 0.05) == (True, "no novelty model for this champion", {})
    assert novelty_check(None, 0.05) == (True, "no champion reference yet", {})


def test_rows_as_dicts_score_as_the_frame_does():
    batch = rows(50, 10).astype(object)
    batch.loc[3, "a"], batch.loc[4, "kind"], batch.loc[5, "n"] = None, None, "not a number"
    records = batch.to_dict("records")
    del records[6]["b"]  # a key the row lacks: missing
    frame = batch.copy()
    frame.loc[6, "b"] = None
    np.testing.assert_array_equal(score_records(MODEL, records)[0], score_rows(MODEL, frame)[0])


def test_scoring_in_chunks_matches_scikit_learn_across_chunk_boundaries(monkeypatch):
    """The forest walk scores `SCORE_CHUNK_ROWS` rows at a time (memory stays flat on big batches):
    a batch split over several chunks, one of them partial, scores as scikit-learn scores it whole."""
    scaled = (TRAIN[NUMERIC].to_numpy(float) - TRAIN[NUMERIC].median().to_numpy()) / MODEL.scales
    codes = TRAIN["kind"].map({"x": 0, "y": 1, "z": 2}).to_numpy(float)
    forest = IsolationForest(n_estimators=novelty.N_TREES, random_state=0).fit(np.column_stack([scaled, codes]))
    batch = rows(250, 5)
    matrix = np.column_stack([(batch[NUMERIC].to_numpy(float) - TRAIN[NUMERIC].median().to_numpy()) / MODEL.scales,
                              batch["kind"].map({"x": 0, "y": 1, "z": 2})])
    monkeypatch.setattr(novelty, "SCORE_CHUNK_ROWS", 64)  # 250 rows: three whole chunks and a partial one
    np.testing.assert_allclose(MODEL.forest.score(matrix), -forest.score_samples(matrix))
    assert MODEL.forest.score(matrix[:0]).shape == (0,)
