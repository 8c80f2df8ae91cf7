"""Per-row novelty: a shifted cluster is flagged, rows of the training distribution about 1 %, the
Mahalanobis part against scipy and the forest part against scikit-learn, missing values and
categories, pickling; the sampled fit and the sampled batch share within their stated bounds."""

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import mahalanobis
from scipy.stats import binomtest
from sklearn.ensemble import IsolationForest

from retrain_assets.core.monitoring.novelty import (
    EXPECTED_FALSE_NOVEL_SHARE,
    fit_novelty_model,
    novelty_check,
    novelty_share_interval,
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


@pytest.mark.parametrize("chunk", [1, 64, 125, 250, 251])
def test_scoring_in_chunks_matches_scikit_learn_across_chunk_boundaries(monkeypatch, chunk):
    """The forest walk scores `SCORE_CHUNK_ROWS` rows at a time (memory stays flat on big batches):
    a batch split over chunks (one row each, several with a partial one, exactly two, one whole)
    scores as scikit-learn scores it whole, also at values on and next to the split thresholds
    (the walk compares float32 thresholds rounded down)."""
    scaled = (TRAIN[NUMERIC].to_numpy(float) - TRAIN[NUMERIC].median().to_numpy()) / MODEL.scales
    codes = TRAIN["kind"].map({"x": 0, "y": 1, "z": 2}).to_numpy(float)
    forest = IsolationForest(n_estimators=novelty.N_TREES, random_state=0).fit(np.column_stack([scaled, codes]))
    batch = rows(250, 5)
    matrix = np.column_stack([(batch[NUMERIC].to_numpy(float) - TRAIN[NUMERIC].median().to_numpy()) / MODEL.scales,
                              batch["kind"].map({"x": 0, "y": 1, "z": 2})])
    split = MODEL.forest.threshold[(MODEL.forest.left >= 0) & (MODEL.forest.feature == 0)][:80]
    near = np.concatenate([split, split.astype(np.float32), np.nextafter(split.astype(np.float32), np.float32(np.inf)),
                           np.nextafter(split.astype(np.float32), np.float32(-np.inf))])
    matrix[:len(near), 0] = near[:len(matrix)]
    monkeypatch.setattr(novelty, "SCORE_CHUNK_ROWS", chunk)
    np.testing.assert_allclose(MODEL.forest.score(matrix), -forest.score_samples(matrix), rtol=1e-12)
    assert MODEL.forest.score(matrix[:0]).shape == (0,)
    assert "_walk" not in pickle.loads(pickle.dumps(MODEL.forest)).__dict__  # derived once per process, not stored


def _old_ranks(values) -> list[str]:
    """The category ranks as they were computed value by value (the reference)."""
    return list(pd.Series(_old_texts(values)).value_counts(sort=True).index)


def _old_texts(values) -> list[str]:
    return ["\x00missing" if pd.isna(value) else str(value) for value in np.asarray(values)]


@pytest.mark.parametrize("values", [
    pd.Series(["b", "a", None, "b", np.nan, "c", pd.NA, "a", "b"], dtype=object),
    pd.Series(pd.Categorical(["lo", "hi", None, "hi", "mid"], categories=["mid", "hi", "lo", "unused"])),
    pd.Series(pd.Categorical([3, 1, 1, None, 2])),   # int categories with a missing one read as 3.0, 1.0, ...
    pd.Series(pd.Categorical([3, 1, 1, 2])),
    pd.Series([3, 1, 1, 2, 7, 7, 7]),
    pd.Series([3.0, np.nan, 1.5, -0.0, 0.0, 1.5]),
    pd.Series([True, False, True]),
    np.array([1, 1.0, True, "1", None, 2.5, "x", np.nan, "x"], dtype=object),  # `_Records`: what a request sends
    pd.Series(np.random.default_rng(0).choice(["p", "q", "r", "s"], 500)),
    pd.Series([], dtype=object),
])
def test_category_ranks_and_codes_are_the_value_by_value_ones(values):
    ranks = novelty._category_ranks(values)
    assert ranks == _old_ranks(values)
    index, texts = novelty._category_index(values)
    assert [texts[i] for i in index] == _old_texts(values)
    seen = {c: i for i, c in enumerate(_old_ranks(values)[::2])}  # half the categories seen in training
    model = novelty.NoveltyModel([], ["c"], np.zeros(0), np.zeros(0), {"c": list(seen)}, np.zeros(0), np.zeros((0, 0)),
                                 None, 1.0, 1.0, 1)
    codes = novelty._forest_matrix(model, np.zeros((len(values), 0)), {"c": values})[:, 0]
    np.testing.assert_array_equal(codes, [seen.get(text, len(seen)) for text in _old_texts(values)])


def test_training_rows_up_to_the_cap_fit_every_row_and_above_it_a_seeded_sample(monkeypatch):
    monkeypatch.setattr(novelty, "FIT_ROWS", len(TRAIN))
    same = fit_novelty_model(TRAIN, NUMERIC, CATEGORICAL, seed=0)
    assert (same.distance_threshold, same.forest_threshold) == (MODEL.distance_threshold, MODEL.forest_threshold)
    np.testing.assert_array_equal(same.forest.threshold, MODEL.forest.threshold)
    monkeypatch.setattr(novelty, "FIT_ROWS", 1000)
    sampled = fit_novelty_model(TRAIN, NUMERIC, CATEGORICAL, seed=3)
    sample = TRAIN.take(np.sort(np.random.default_rng(3).choice(len(TRAIN), 1000, replace=False)))
    monkeypatch.setattr(novelty, "FIT_ROWS", len(TRAIN))
    direct = fit_novelty_model(sample, NUMERIC, CATEGORICAL, seed=3)
    assert sampled.n_rows == len(TRAIN) and direct.n_rows == 1000
    assert (sampled.distance_threshold, sampled.forest_threshold) == (direct.distance_threshold, direct.forest_threshold)
    np.testing.assert_array_equal(score_rows(sampled, TRAIN)[0], score_rows(direct, TRAIN)[0])


def test_thresholds_from_a_sample_are_exceeded_by_new_rows_within_the_stated_error(monkeypatch):
    """Each threshold is the 0.995 quantile of k = FIT_ROWS sampled rows: new rows of the same
    distribution exceed it 0.5 % of the time, give or take sqrt(0.005 * 0.995 / k) (here 3 of
    those, with the held-out rows' own sampling error)."""
    monkeypatch.setattr(novelty, "FIT_ROWS", 5000)
    model = fit_novelty_model(rows(20000, 11), NUMERIC, CATEGORICAL, seed=0)
    distance, isolation = novelty._raw_scores(model, rows(50000, 12))
    bound = 3 * math.sqrt(0.005 * 0.995 * (1 / 5000 + 1 / 50000))
    assert abs((distance > model.distance_threshold).mean() - 0.005) <= bound
    assert abs((isolation > model.forest_threshold).mean() - 0.005) <= bound


def test_a_big_batch_is_scored_on_a_seeded_sample_within_the_stated_bound():
    """A batch with 30 % shifted (novel) rows: its share from 1,000 sampled rows is within the 95 %
    interval's reach of the whole batch's share, for about 95 % of seeds; the same seed gives the
    same numbers, and the examples are sampled novel rows (positions in the batch without ids)."""
    batch = pd.concat([rows(7000, 13), rows(3000, 14, shift=6.0)], ignore_index=True)
    whole = novelty_summary(MODEL, batch, "id", max_rows=len(batch))
    assert whole == novelty_summary(MODEL, batch, "id", max_rows=len(batch), seed=9)  # not sampled: seed unused
    assert 0.29 <= whole["novelty_share"] <= 0.33
    covered = 0
    for seed in range(40):
        sampled = novelty_summary(MODEL, batch, max_rows=1000, seed=seed)
        assert abs(sampled["novelty_share"] - whole["novelty_share"]) <= 3 * math.sqrt(0.3 * 0.7 / 1000)
        low, high = novelty_share_interval(sampled["novelty_share"], 1000)
        covered += low <= whole["novelty_share"] <= high
    assert covered >= 34  # 95 % of 40 is 38; 34 or fewer happens with probability under 2 %
    again = novelty_summary(MODEL, batch, max_rows=1000, seed=0)
    assert again == novelty_summary(MODEL, batch, max_rows=1000, seed=0) != novelty_summary(MODEL, batch, max_rows=1000, seed=1)
    assert all(int(i) >= 7000 for i in again["novelty_examples"].split(", "))


@pytest.mark.parametrize("k, n", [(0, 20), (3, 20), (300, 1000), (20000, 20000), (140, 20000)])
def test_the_share_interval_is_scipys_wilson_interval(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    np.testing.assert_allclose(novelty_share_interval(k / n, n), (expected.low, expected.high), rtol=1e-9, atol=1e-12)
    assert all(math.isnan(v) for v in novelty_share_interval(float("nan"), n) + novelty_share_interval(0.1, 0))
