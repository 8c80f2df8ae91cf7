"""Holdout metrics and the champion/challenger promotion gate."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from retrain_assets.core.evaluation import GateResult, classification_metrics, promotion_gate
from retrain_assets.core.policy import Policy


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    metrics = classification_metrics(y, scores)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, scores))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, scores >= 0.5))
    assert metrics["log_loss"] == pytest.approx(log_loss(y, scores))
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, scores))
    assert metrics["n_rows"] == 200
    assert metrics["positive_rate"] == pytest.approx(y.mean())


def test_accuracy_uses_the_threshold():
    y = np.array([0, 1, 1])
    scores = np.array([0.2, 0.4, 0.9])
    assert classification_metrics(y, scores)["accuracy"] == pytest.approx(2 / 3)
    assert classification_metrics(y, scores, threshold=0.3)["accuracy"] == 1.0


def test_roc_auc_is_nan_with_one_class():
    metrics = classification_metrics(np.zeros(5, dtype=int), np.linspace(0.1, 0.9, 5))
    assert math.isnan(metrics["roc_auc"])
    assert math.isfinite(metrics["log_loss"])  # still defined thanks to labels=[0, 1]


def test_empty_input_raises():
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(np.array([], dtype=int), np.array([]))


POLICY = Policy(min_roc_auc=0.65, max_roc_auc_regression=0.02)


@pytest.mark.parametrize("auc, passed", [(0.70, True), (0.65, True), (0.64, False)])
def test_first_model_is_judged_on_the_slo_alone(auc, passed):
    result = promotion_gate({"roc_auc": auc}, None, POLICY)
    assert result.passed is passed
    assert any("no champion" in c for c in result.criteria)


def test_non_inferiority_passes_at_the_margin_and_fails_just_beyond():
    champion = {"roc_auc": 0.80}
    at_floor = champion["roc_auc"] - POLICY.max_roc_auc_regression
    assert promotion_gate({"roc_auc": at_floor}, champion, POLICY).passed
    assert promotion_gate({"roc_auc": 0.78}, champion, POLICY).passed  # trails by exactly the margin
    below = promotion_gate({"roc_auc": at_floor - 1e-6}, champion, POLICY)
    assert not below.passed
    assert "non-inferiority" in below.criteria[-1] and "FAIL" in below.criteria[-1]


def test_slo_failure_blocks_promotion_even_when_beating_the_champion():
    result = promotion_gate({"roc_auc": 0.60}, {"roc_auc": 0.55}, POLICY)
    assert not result.passed
    assert "FAIL" in result.criteria[0]


def test_undefined_auc_fails_with_a_message():
    result = promotion_gate({"roc_auc": float("nan")}, {"roc_auc": 0.8}, POLICY)
    assert not result.passed
    assert "undefined" in result.criteria[0]


def test_summary_starts_with_the_verdict():
    assert promotion_gate({"roc_auc": 0.9}, {"roc_auc": 0.8}, POLICY).summary.startswith("PROMOTE: ")
    assert promotion_gate({"roc_auc": 0.7}, {"roc_auc": 0.8}, POLICY).summary.startswith("KEEP CHAMPION: ")
    assert GateResult(False, ["a", "b"]).summary == "KEEP CHAMPION: a; b"
