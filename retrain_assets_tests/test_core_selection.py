"""Model selection: time-ordered folds, the search over two families, determinism, the fallback."""

import numpy as np
import pandas as pd
import pytest

from retrain_assets.core.training.modeling import predict_scores, train_model
from retrain_assets.core.offline.scenario import generate_day
from retrain_assets.core.training.selection import SEARCH_SPACE, select_model, time_ordered_folds

FAMILIES = ("logistic_regression", "hist_gradient_boosting")


def labeled_days(scenario, days) -> pd.DataFrame:
    spec = scenario.spec
    frames = []
    for day in days:
        batch, labels = generate_day(scenario, day)
        frames.append(batch.merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column)
                      .assign(partition_start=scenario.start_date + pd.Timedelta(days=day)))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def window(scenario):
    return labeled_days(scenario, range(8))


def test_folds_validate_on_partitions_after_the_ones_they_train_on():
    partitions = pd.Series(np.repeat(pd.date_range("2025-01-01", periods=6), 3))
    folds = time_ordered_folds(partitions, 3)
    assert len(folds) == 3
    for train_rows, valid_rows in folds:
        assert partitions.iloc[train_rows].max() < partitions.iloc[valid_rows].min()
        # whole partitions move together
        assert set(partitions.iloc[valid_rows]) & set(partitions.iloc[train_rows]) == set()
        assert len(valid_rows) % 3 == 0 and len(train_rows) % 3 == 0
    assert [len(v) for _, v in folds] == [3, 3, 3]


def test_folds_shrink_with_few_partitions_and_vanish_below_three():
    assert len(time_ordered_folds(pd.Series(np.repeat(pd.date_range("2025-01-01", periods=3), 2)), 5)) == 2
    assert time_ordered_folds(pd.Series(np.repeat(pd.date_range("2025-01-01", periods=2), 2)), 3) == []


def test_search_scores_every_configuration_and_refits_the_best(scenario, window):
    selection = select_model(window, scenario.spec, seed=7, families=FAMILIES, n_folds=3)
    assert len(selection.trials) == sum(len(SEARCH_SPACE[f]) for f in FAMILIES)
    assert {t.family for t in selection.trials} == set(FAMILIES)
    assert all(len(t.fold_roc_auc) == 3 for t in selection.trials)
    best = max(t.mean_roc_auc for t in selection.trials)
    assert selection.chosen.mean_roc_auc == best
    assert selection.model.params["model_family"] == selection.chosen.family
    assert selection.model.n_train_rows == len(window)
    assert "chosen" in selection.note and "3 time-ordered folds" in selection.note


def test_the_same_data_and_seed_give_the_same_model(scenario, window):
    first = select_model(window, scenario.spec, seed=3, families=FAMILIES, n_folds=3)
    second = select_model(window, scenario.spec, seed=3, families=FAMILIES, n_folds=3)
    assert [t.to_dict() for t in first.trials] == [t.to_dict() for t in second.trials]
    np.testing.assert_array_equal(predict_scores(first.model.pipeline, window, scenario.spec),
                                  predict_scores(second.model.pipeline, window, scenario.spec))


def test_gradient_boosting_wins_when_the_signal_is_nonlinear(scenario, window):
    # Relabel by an interaction a linear model cannot represent: the search must notice.
    spec = scenario.spec
    rng = np.random.default_rng(0)
    xor = (window["credit_score"] > 680) ^ (window["debt_to_income"] > 0.35)
    noisy = np.where(rng.uniform(size=len(window)) < 0.1, ~xor, xor)
    relabeled = window.assign(**{spec.target.name: noisy.astype(int)})
    selection = select_model(relabeled, spec, seed=7, families=FAMILIES, n_folds=3)
    assert selection.chosen.family == "hist_gradient_boosting"
    linear = max(t.mean_roc_auc for t in selection.trials if t.family == "logistic_regression")
    assert selection.chosen.mean_roc_auc > linear + 0.2


def test_a_single_family_restricts_the_search(scenario, window):
    selection = select_model(window, scenario.spec, seed=7, families=("logistic_regression",), n_folds=2)
    assert {t.family for t in selection.trials} == {"logistic_regression"}
    assert selection.n_folds == 2


def test_too_few_partitions_fit_the_first_configuration_and_say_so(scenario):
    two_days = labeled_days(scenario, range(2))
    selection = select_model(two_days, scenario.spec, seed=7, families=FAMILIES, n_folds=3)
    assert selection.trials == [] and selection.chosen is None
    assert "search skipped" in selection.note
    reference = train_model(two_days, scenario.spec, seed=7, family="logistic_regression", params={"C": 0.1})
    np.testing.assert_allclose(predict_scores(selection.model.pipeline, two_days, scenario.spec),
                               predict_scores(reference.pipeline, two_days, scenario.spec))


def test_a_single_class_window_fails_loudly(scenario, window):
    only_negatives = window.assign(**{scenario.spec.target.name: 0})
    with pytest.raises(ValueError, match="only one class"):
        select_model(only_negatives, scenario.spec, seed=7, families=FAMILIES, n_folds=3)
