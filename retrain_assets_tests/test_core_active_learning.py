"""Active learning: uncertainty, the diversity-guarded pick of rows to label, the model's embedding."""

import numpy as np
import pandas as pd
import pytest

from retrain_assets.core.labeling.active_learning import (
    default_min_distance,
    model_embedding,
    select_by_uncertainty,
    select_for_labeling,
    spread_from_members,
    uncertainty,
)
from retrain_assets.core.training.modeling import feature_frame, train_model
from retrain_assets.core.offline.scenario import generate_day


def test_uncertainty_peaks_at_one_half_and_vanishes_at_certainty():
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 0.9])
    assert uncertainty(p) == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.2])


def test_selection_picks_the_most_uncertain_rows_first():
    p = np.array([0.05, 0.48, 0.9, 0.6, 0.51, 0.2])
    embedding = np.arange(6, dtype=float).reshape(-1, 1) * 10  # far apart: the guard never fires
    assert select_for_labeling(p, embedding, 3).tolist() == [4, 1, 3]
    assert select_for_labeling(p, embedding, 3, min_distance=0).tolist() == [4, 1, 3]


def test_ties_are_broken_by_position():
    p = np.array([0.25, 0.75, 0.5, 0.25, 0.5])  # exactly representable: true ties
    assert select_for_labeling(p, np.eye(5), 5, min_distance=0).tolist() == [2, 4, 0, 1, 3]


def test_guard_skips_an_exact_duplicate_of_a_pick_and_still_fills_k():
    # rows 0 and 1 are the two most uncertain but identical; row 2 duplicates row 3
    embedding = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0], [-5.0, 5.0]])
    p = np.array([0.5, 0.5, 0.45, 0.4, 0.1])
    assert select_for_labeling(p, embedding, 3, min_distance=1.0).tolist() == [0, 2, 4]
    assert select_for_labeling(p, embedding, 3).tolist() == [0, 2, 4]  # the default guard too
    # only three distinct points: the fourth and fifth picks are the most uncertain leftovers, in order
    assert select_for_labeling(p, embedding, 5, min_distance=1.0).tolist() == [0, 2, 4, 1, 3]
    # without the guard the duplicate goes in
    assert select_for_labeling(p, embedding, 3, min_distance=0).tolist() == [0, 1, 2]


def test_guard_keeps_picks_apart_on_random_data():
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(500, 4))
    p = rng.uniform(size=500)
    picks = select_for_labeling(p, embedding, 20, min_distance=1.0)
    assert len(picks) == len(set(picks.tolist())) == 20
    gaps = np.linalg.norm(embedding[picks][:, None] - embedding[picks][None], axis=2)
    assert gaps[np.triu_indices(20, k=1)].min() >= 1.0


def test_default_min_distance_is_half_the_median_pairwise_distance():
    points = np.array([[0.0], [1.0], [3.0]])  # pairwise distances 1, 2, 3
    assert default_min_distance(points, np.arange(3)) == pytest.approx(1.0)
    assert default_min_distance(points, np.arange(1)) == 0.0


@pytest.mark.parametrize("k", [0, -3])
def test_non_positive_k_gives_no_rows(k):
    picks = select_for_labeling(np.array([0.5, 0.4]), np.zeros((2, 1)), k)
    assert picks.size == 0 and picks.dtype == np.intp


def test_empty_pool_gives_no_rows():
    assert select_for_labeling(np.array([]), np.zeros((0, 3)), 5).size == 0


def test_k_above_the_row_count_gives_every_row_once():
    p = np.array([0.1, 0.5, 0.9, 0.5])
    picks = select_for_labeling(p, np.zeros((4, 2)), 10)
    assert sorted(picks.tolist()) == [0, 1, 2, 3]
    assert picks[:2].tolist() == [1, 3]


def test_mismatched_embedding_is_refused():
    with pytest.raises(ValueError, match="embedding has 2 rows"):
        select_for_labeling(np.array([0.5, 0.4, 0.3]), np.zeros((2, 1)), 1)


def test_selection_is_deterministic():
    rng = np.random.default_rng(1)
    p, embedding = rng.uniform(size=300), rng.normal(size=(300, 5))
    first = select_for_labeling(p, embedding, 25)
    assert np.array_equal(first, select_for_labeling(p.copy(), embedding.copy(), 25))


def test_model_embedding_is_the_fitted_preprocessing_output(scenario):
    spec = scenario.spec
    frames = []
    for day in range(3):
        batch, labels = generate_day(scenario, day)
        frames.append(batch.merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column))
    labeled = pd.concat(frames, ignore_index=True)
    pipeline = train_model(labeled, spec, seed=7).pipeline
    features = feature_frame(labeled, spec)
    embedding = model_embedding(pipeline, features)
    assert embedding.shape[0] == len(labeled) and embedding.ndim == 2 and embedding.shape[1] > 0
    assert embedding.dtype == np.float64 and np.isfinite(embedding).all()
    # the classifier sees exactly this
    direct = pipeline[-1].predict_proba(embedding)[:, 1]
    assert direct == pytest.approx(pipeline.predict_proba(features)[:, 1])
    picks = select_for_labeling(direct, embedding, 15)
    assert len(set(picks.tolist())) == 15


# --- per task -----------------------------------------------------------------------------------------


def test_multiclass_uncertainty_is_the_margin_between_the_two_most_probable_classes():
    proba = np.array([[0.4, 0.4, 0.2], [1.0, 0.0, 0.0], [0.5, 0.2, 0.3], [0.1, 0.6, 0.3]])
    assert uncertainty(proba) == pytest.approx([1.0, 0.0, 0.8, 0.7])
    p = np.random.default_rng(0).uniform(size=50)
    assert uncertainty(np.column_stack([1 - p, p])) == pytest.approx(uncertainty(p))  # two classes: the binary formula
    embedding = np.arange(4, dtype=float).reshape(-1, 1) * 10
    assert select_for_labeling(proba, embedding, 2).tolist() == [0, 2]
    with pytest.raises(ValueError, match="two or more class columns"):
        uncertainty(np.ones((3, 1)))


def test_regression_uncertainty_is_the_members_spread():
    members = np.random.default_rng(1).normal(size=(5, 30))
    assert spread_from_members(members) == pytest.approx(np.std(members, axis=0))
    assert spread_from_members([[1.0, 2.0], [3.0, 2.0]]).tolist() == [1.0, 0.0]
    assert spread_from_members([[4.0, 5.0]]).tolist() == [0.0, 0.0]  # one member: no disagreement
    with pytest.raises(ValueError, match="members, rows"):
        spread_from_members(np.ones(3))
    spread = np.array([0.1, 3.0, 0.5, 2.0])
    embedding = np.arange(4, dtype=float).reshape(-1, 1) * 10
    assert select_by_uncertainty(spread, embedding, 3).tolist() == [1, 3, 2]
    assert select_by_uncertainty(spread, np.zeros((4, 1)), 2, min_distance=1.0).tolist() == [1, 3]  # guard, then top-up
