"""Label-free performance estimation (CBPE-style) and its check once labels arrive, on simulated
scores and on the built-in scenario's covariate shift and concept drift."""

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from retrain_assets.core.monitoring import estimation
from retrain_assets.core.monitoring.estimation import PerformanceEstimate, check_estimate, estimate_performance, expected_accuracy
from retrain_assets.core.training.modeling import predict_scores, target_vector, train_model
from retrain_assets.core.offline.scenario import generate_day, load_scenario, phase_at

LOAN_SCENARIO = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "loan_default.yaml"


def calibrated_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels drawn from them, so the scores are calibrated by construction."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(1.5, 3.0, n)
    return scores, (rng.uniform(size=n) < scores).astype(int)


def test_expected_accuracy_is_the_formula():
    scores = np.array([0.9, 0.2, 0.5, 0.6])
    assert expected_accuracy(scores) == pytest.approx((0.9 + 0.8 + 0.5 + 0.6) / 4)
    assert expected_accuracy(scores, threshold=0.7) == pytest.approx((0.9 + 0.8 + 0.5 + 0.4) / 4)
    estimate = estimate_performance(scores, threshold=0.7, n_draws=50)
    assert estimate.accuracy == pytest.approx(0.65)
    assert (estimate.n_rows, estimate.band) == (4, 0.95)


def test_simulated_metrics_match_sklearn_draw_by_draw():
    scores = np.round(np.random.default_rng(1).beta(2, 5, 300), 2)  # many ties
    accuracies, aucs = estimation._simulate(scores, 0.3, 25, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    for k in range(25):  # the same stream, one draw at a time
        y = rng.random(len(scores)) < scores
        assert aucs[k] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
        assert accuracies[k] == pytest.approx(np.mean(y == (scores >= 0.3)), abs=1e-12)


def test_band_covers_the_realised_metrics_when_scores_are_calibrated():
    covered_acc = covered_auc = 0
    for seed in range(40):
        scores, y = calibrated_batch(800, seed)
        estimate = estimate_performance(scores, n_draws=300, seed=seed)
        assert estimate.accuracy_low <= estimate.accuracy <= estimate.accuracy_high
        assert estimate.roc_auc_low <= estimate.roc_auc <= estimate.roc_auc_high
        covered_acc += estimate.accuracy_low <= np.mean(y == (scores >= 0.5)) <= estimate.accuracy_high
        covered_auc += estimate.roc_auc_low <= roc_auc_score(y, scores) <= estimate.roc_auc_high
    assert covered_acc >= 34 and covered_auc >= 34  # nominal 95 %: 38 of 40


def test_estimate_is_deterministic_and_independent_of_blocking(monkeypatch):
    scores, _ = calibrated_batch(2000, seed=3)
    first = estimate_performance(scores, seed=5)
    assert estimate_performance(scores, seed=5) == first
    monkeypatch.setattr(estimation, "_BLOCK_CELLS", 7_000)  # 3 draws per block instead of 500
    assert estimate_performance(scores, seed=5) == first
    assert estimate_performance(scores, seed=6) != first


def test_one_sided_scores_and_invalid_input():
    estimate = estimate_performance(np.zeros(20), n_draws=20)
    assert estimate.accuracy == 1.0 and math.isnan(estimate.roc_auc)  # every draw is all-negative
    for bad in (np.array([]), np.array([0.2, 1.2]), np.array([0.2, np.nan])):
        with pytest.raises(ValueError):
            estimate_performance(bad)


def test_a_large_batch_is_estimated_in_well_under_five_seconds():
    scores, _ = calibrated_batch(100_000, seed=4)
    started = time.perf_counter()
    estimate = estimate_performance(scores, n_draws=500)
    assert time.perf_counter() - started < 5.0  # measured ~0.8 s on 2 cores
    assert estimate.roc_auc_high - estimate.roc_auc_low < 0.01


def test_check_estimate_accepts_calibrated_labels_and_flags_broken_ones():
    scores, y = calibrated_batch(1000, seed=8)
    estimate = estimate_performance(scores)
    ok = check_estimate(estimate, y, scores)
    assert ok.reliable and "within the band" in ok.reason
    assert ok.realized_roc_auc == pytest.approx(roc_auc_score(y, scores))
    # labels that no longer follow the scores: half of them drawn from the opposite probability
    flipped = np.where(np.arange(1000) % 2 == 0, y, (np.random.default_rng(9).uniform(size=1000) < 1 - scores).astype(int))
    broken = check_estimate(estimate, flipped, scores)
    assert not broken.reliable
    assert "ROC AUC" in broken.reason and "below the band" in broken.reason


def test_check_estimate_skips_an_undefined_auc_and_refuses_other_batches():
    scores = np.full(50, 0.02)  # all 50 labels negative is the likeliest outcome (36 %)
    estimate = estimate_performance(scores, n_draws=100)
    check = check_estimate(estimate, np.zeros(50, dtype=int), scores)
    assert check.reliable and math.isnan(check.realized_roc_auc) and "not judged" in check.reason
    with pytest.raises(ValueError, match="labels"):
        check_estimate(estimate, np.zeros(49, dtype=int), scores)
    with pytest.raises(ValueError, match="50 rows"):
        check_estimate(estimate, np.zeros(60, dtype=int), np.full(60, 0.02))


# --- the built-in scenario: champion trained on the stable period ------------------------------


def labeled_days(scenario, days: range) -> pd.DataFrame:
    spec = scenario.spec
    frames = []
    for day in days:
        batch, labels = generate_day(scenario, day)
        frames.append(
            batch.merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column).assign(
                partition_start=scenario.start_date + pd.Timedelta(days=day)
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(LOAN_SCENARIO)


@pytest.fixture(scope="module")
def champion(scenario):
    assert {phase_at(scenario, day)[0] for day in range(14)} == {"stable"}
    return train_model(labeled_days(scenario, range(14)), scenario.spec, seed=0).pipeline


def estimate_and_check(scenario, champion, days: range) -> tuple[PerformanceEstimate, object]:
    frame = labeled_days(scenario, days)
    scores = predict_scores(champion, frame, scenario.spec)
    estimate = estimate_performance(scores)
    return estimate, check_estimate(estimate, target_vector(frame, scenario.spec), scores)


def test_estimate_tracks_performance_under_covariate_shift(scenario, champion):
    assert {phase_at(scenario, day)[0] for day in range(19, 27)} == {"covariate_shift"}
    estimate, check = estimate_and_check(scenario, champion, range(19, 27))
    # measured: estimated AUC 0.823 [0.800, 0.844], realised 0.826; accuracy 0.744 vs 0.759
    assert check.reliable, check.reason
    assert abs(estimate.roc_auc - check.realized_roc_auc) < 0.02
    assert abs(estimate.accuracy - check.realized_accuracy) < 0.03


def test_concept_drift_makes_the_estimate_unreliable(scenario, champion):
    assert {phase_at(scenario, day)[0] for day in range(28, 42)} == {"concept_drift"}
    estimate, check = estimate_and_check(scenario, champion, range(28, 42))
    # measured: estimated AUC 0.827 [0.813, 0.843], realised 0.751; accuracy 0.748 vs 0.684
    assert not check.reliable
    assert check.realized_roc_auc < estimate.roc_auc_low - 0.02
    assert "below the band" in check.reason
