"""Training on scenario data, the time-ordered holdout split and the training-set content hash."""

import numpy as np
import pandas as pd
import pytest

from retrain_assets.core.training.modeling import content_hash, predict_scores, split_holdout, train_model
from retrain_assets.core.offline.scenario import generate_day

@pytest.fixture(scope="module")
def labeled(scenario):
    """Four days of generated rows joined with their labels, tagged with their partition."""
    spec = scenario.spec
    frames = []
    for day in range(4):
        batch, labels = generate_day(scenario, day)
        frames.append(
            batch.merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column).assign(
                partition_start=scenario.start_date + pd.Timedelta(days=day)
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_train_model_fits_and_scores_are_probabilities(scenario, labeled):
    spec = scenario.spec
    model = train_model(labeled, spec, seed=7)
    scores = predict_scores(model.pipeline, labeled, spec)
    assert scores.shape == (len(labeled),)
    assert np.all((scores >= 0) & (scores <= 1))
    assert model.n_train_rows == len(labeled)
    assert model.train_positive_rate == pytest.approx((labeled[spec.target.name] == 1).mean())
    # the generated labels carry signal: the model ranks positives above negatives on average
    y = labeled[spec.target.name].to_numpy()
    assert scores[y == 1].mean() > scores[y == 0].mean()


def test_training_is_reproducible_with_the_same_seed(scenario, labeled):
    spec = scenario.spec
    first = predict_scores(train_model(labeled, spec, seed=3).pipeline, labeled, spec)
    second = predict_scores(train_model(labeled, spec, seed=3).pipeline, labeled, spec)
    np.testing.assert_array_equal(first, second)


def test_model_ignores_excluded_columns(scenario, labeled):
    spec = scenario.spec
    model = train_model(labeled, spec, seed=7)
    changed = labeled.assign(sex="M", email="other@example.com", application_id="x")
    np.testing.assert_array_equal(
        predict_scores(model.pipeline, labeled, spec), predict_scores(model.pipeline, changed, spec)
    )


def test_train_model_refuses_a_single_class(scenario, labeled):
    spec = scenario.spec
    only_negatives = labeled[labeled[spec.target.name] == 0]
    with pytest.raises(ValueError, match="only one class") as info:
        train_model(only_negatives, spec, seed=7)
    assert "training_window_partitions" in str(info.value)


def window_of(n_partitions: int, rows_per_partition: int = 3) -> pd.DataFrame:
    starts = pd.date_range("2025-01-01", periods=n_partitions, freq="D")
    return pd.DataFrame(
        {
            "partition_start": np.repeat(starts, rows_per_partition),
            "x": np.arange(n_partitions * rows_per_partition),
        }
    ).sample(frac=1.0, random_state=0)  # row order must not matter


@pytest.mark.parametrize(
    "n_partitions, share, expected_holdout",
    [
        (8, 0.25, ["2025-01-07", "2025-01-08"]),
        (4, 0.01, ["2025-01-04"]),  # at least one
        (2, 0.9, ["2025-01-02"]),  # never all
        (3, 0.99, ["2025-01-02", "2025-01-03"]),
    ],
)
def test_split_holdout_holds_out_newest_whole_partitions(n_partitions, share, expected_holdout):
    window = window_of(n_partitions)
    train, holdout, keys = split_holdout(window, share)
    assert keys == expected_holdout
    assert sorted(holdout["partition_start"].dt.strftime("%Y-%m-%d").unique()) == expected_holdout
    assert train["partition_start"].max() < holdout["partition_start"].min()
    assert len(train) + len(holdout) == len(window)
    assert len(holdout) == 3 * len(expected_holdout)  # whole partitions move together


def test_split_holdout_needs_two_partitions():
    with pytest.raises(ValueError, match="at least two"):
        split_holdout(window_of(1), 0.25)


@pytest.fixture(params=["pandas", "duckdb"])
def hash_rows(request, monkeypatch):
    """Both ways `content_hash` combines row hashes: pandas below DUCKDB_HASH_ROWS, DuckDB from it on."""
    from retrain_assets.core.training import modeling

    if request.param == "duckdb":
        monkeypatch.setattr(modeling, "DUCKDB_HASH_ROWS", 1)
    return request.param


def test_content_hash_ignores_row_and_column_order(hash_rows):
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.5, 1.5, 2.5]})
    shuffled = df.iloc[[2, 0, 1]].reset_index(drop=True)[["c", "a", "b"]]
    assert content_hash(df) == content_hash(shuffled)


def test_content_hash_changes_with_a_value(hash_rows):
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    changed = df.copy()
    changed.loc[1, "b"] = "Y"
    assert content_hash(df) != content_hash(changed)
    assert content_hash(df) != content_hash(df.rename(columns={"b": "bb"}))
    assert content_hash(df) != content_hash(pd.concat([df, df.iloc[[0]]], ignore_index=True))  # a repeated row counts
