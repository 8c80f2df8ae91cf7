"""Holdout metrics, the evaluation report and the statistically sound promotion gate."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from retrain_assets.core.evaluation.gate import Criterion, GateResult, promotion_gate
from retrain_assets.core.evaluation.metrics import (
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
    fairness_gaps,
    group_metrics,
    inference_cost,
)
from retrain_assets.core.evaluation.report import ScoredModel, build_evaluation_report, fairness_gap_increase
from retrain_assets.core.policy.definition import Policy, PromotionThresholds

COST = {"latency_ms_per_1000_rows": 5.0, "model_size_bytes": 1000.0}


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    metrics = classification_metrics(y, scores, threshold=0.5)
    predicted = scores >= 0.5
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, scores))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(y, scores))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert metrics["f1"] == pytest.approx(f1_score(y, predicted))
    assert metrics["precision"] == pytest.approx(precision_score(y, predicted))
    assert metrics["recall"] == pytest.approx(recall_score(y, predicted))
    assert metrics["log_loss"] == pytest.approx(log_loss(y, scores))
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, scores))
    assert metrics["n_rows"] == 200
    assert metrics["positive_rate"] == pytest.approx(y.mean())


@pytest.mark.parametrize("y, scores", [
    ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]),          # nothing predicted positive: precision and F1 are 0
    ([0, 0, 0, 0], [0.1, 0.6, 0.7, 0.2]),          # no positive at all: recall is 0
    ([1, 0, 1, 0], [1.0, 0.0, 0.0, 1.0]),          # certain and wrong: log loss at the clipping bound
    ([1, 1, 0], [0.5, 0.5, 0.5]),                  # exactly at the threshold counts as positive
])
def test_classification_metrics_match_sklearn_on_edge_cases(y, scores):
    y, scores = np.array(y), np.array(scores)
    metrics = classification_metrics(y, scores, threshold=0.5)
    predicted = scores >= 0.5
    clipped = np.clip(scores, 1e-15, 1 - 1e-15)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert metrics["f1"] == pytest.approx(f1_score(y, predicted, zero_division=0.0))
    assert metrics["precision"] == pytest.approx(precision_score(y, predicted, zero_division=0.0))
    assert metrics["recall"] == pytest.approx(recall_score(y, predicted, zero_division=0.0))
    assert metrics["log_loss"] == pytest.approx(log_loss(y, clipped, labels=[0, 1]), rel=1e-9)
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, clipped, pos_label=1), rel=1e-9)


def test_thresholded_metrics_use_the_operating_threshold():
    y = np.array([0, 1, 1])
    scores = np.array([0.2, 0.4, 0.9])
    assert classification_metrics(y, scores)["accuracy"] == pytest.approx(2 / 3)
    assert classification_metrics(y, scores, threshold=0.3)["accuracy"] == 1.0
    assert classification_metrics(y, scores, threshold=0.3)["recall"] == 1.0
    assert classification_metrics(y, scores, threshold=0.95)["f1"] == 0.0  # no positive prediction: 0, not an error


def test_ranking_metrics_are_nan_with_one_class():
    metrics = classification_metrics(np.zeros(5, dtype=int), np.linspace(0.1, 0.9, 5))
    assert math.isnan(metrics["roc_auc"]) and math.isnan(metrics["pr_auc"])
    assert math.isfinite(metrics["log_loss"])  # still defined thanks to labels=[0, 1]


def test_empty_input_raises():
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(np.array([], dtype=int), np.array([]))


def test_calibration_bins_and_ece_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0])
    scores = np.array([0.05, 0.15, 0.95, 0.85, 0.55, 0.55])
    bins = calibration_bins(y, scores)
    assert bins["count"] == [1, 1, 2, 1, 1]
    assert bins["mean_predicted"] == pytest.approx([0.05, 0.15, 0.55, 0.85, 0.95])
    assert bins["fraction_positive"] == pytest.approx([0, 0, 0.5, 1, 1])
    expected = (0.05 + 0.15 + 2 * 0.05 + 0.15 + 0.05) / 6
    assert expected_calibration_error(y, scores) == pytest.approx(expected)
    assert calibration_bins(np.array([1]), np.array([1.0]))["count"] == [1]  # a score of exactly 1 lands in the top bin


def test_ece_is_small_for_calibrated_scores_and_large_for_overconfident_ones():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=20_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.where(p > 0.5, 0.99, 0.01)) > 0.2


def test_group_metrics_and_fairness_gaps_by_hand():
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.9, 0.2, 0.1, 0.1])
    groups = pd.Series(["F"] * 4 + ["M"] * 4)
    table = group_metrics(y, scores, groups, threshold=0.5).set_index("value")
    assert table.loc["F", "selection_rate"] == 0.75 and table.loc["M", "selection_rate"] == 0.25
    assert table.loc["F", "true_positive_rate"] == 1.0 and table.loc["M", "true_positive_rate"] == 0.5
    assert table.loc["F", "n_rows"] == 4 and table.loc["M", "roc_auc"] == 1.0
    gaps = fairness_gaps(y, scores, groups, threshold=0.5)
    assert gaps == {"demographic_parity_difference": pytest.approx(0.5), "equal_opportunity_difference": pytest.approx(0.5)}


def test_equal_opportunity_is_undefined_when_a_group_has_no_positive():
    gaps = fairness_gaps(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.6, 0.2]), pd.Series(["F", "F", "M", "M"]), 0.5)
    assert math.isnan(gaps["equal_opportunity_difference"])
    assert gaps["demographic_parity_difference"] == pytest.approx(0.0)


class CountingModel(LogisticRegression):
    """Records the batch sizes it is asked to score."""

    calls: list[int] = []

    def predict_proba(self, rows):
        CountingModel.calls.append(len(rows))
        return super().predict_proba(rows)


def test_inference_cost_measures_a_real_model():
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    model = CountingModel().fit(x, (x["a"] > 0).astype(int))
    cost = inference_cost(model, x)
    assert CountingModel.calls == [1000, 1000, 1000]  # 50 rows repeated to a batch of 1,000
    assert 0 < cost["latency_ms_per_1000_rows"] < 1000
    assert cost["model_size_bytes"] > 100


# --- the gate on simulated champion/challenger pairs ------------------------------------------

def simulated_holdout(n: int, seed: int, challenger_noise: float, champion_noise: float, south_noise: float | None = None):
    """Rows with a latent risk z; y ~ Bernoulli(sigmoid(2z - 1.5)); each model sees z plus its own
    noise (less noise = better model). `south_noise` overrides the challenger's noise in one region."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(2 * z - 1.5)))).astype(int)
    holdout = pd.DataFrame({"region": rng.choice(["north", "south", "east", "west"], n), "sex": rng.choice(["F", "M"], n)})
    noise = np.full(n, challenger_noise)
    if south_noise is not None:
        noise[holdout["region"].to_numpy() == "south"] = south_noise

    def scores(sd):
        return 1 / (1 + np.exp(-(2 * (z + sd * rng.normal(size=n)) / np.sqrt(1 + sd**2) - 1.5)))

    challenger = ScoredModel("2", "logistic_regression", scores(noise), COST)
    champion = ScoredModel("1", "logistic_regression", scores(np.full(n, champion_noise)), COST)
    return holdout, y, challenger, champion


def report_for(holdout, y, challenger, champion, policy):
    return build_evaluation_report(holdout, y, challenger, champion, ["region"], "sex", policy, ["2025-01-20", "2025-01-21"])


SUPERIORITY = Policy(min_roc_auc=0.6, promotion=PromotionThresholds(comparison="superiority", bootstrap_resamples=1000))
NON_INFERIORITY = Policy(min_roc_auc=0.6, promotion=PromotionThresholds(bootstrap_resamples=1000))


def criterion(gate: GateResult, name: str) -> Criterion:
    return next(c for c in gate.criteria if c.name == name)


def test_a_clearly_better_challenger_is_promoted():
    holdout, y, challenger, champion = simulated_holdout(1500, seed=3, challenger_noise=0.3, champion_noise=1.2)
    report = report_for(holdout, y, challenger, champion, SUPERIORITY)
    gate = promotion_gate(report, SUPERIORITY)
    assert gate.passed, gate.summary
    ci = next(d for d in report["differences"] if d["metric"] == "roc_auc")
    assert ci["lower"] > 0.03
    assert "superiority: ROC AUC difference +" in criterion(gate, "superiority").detail
    assert gate.summary.startswith("PROMOTE: ")


def test_better_on_the_point_estimate_but_not_significantly_is_rejected_under_superiority():
    holdout, y, challenger, champion = simulated_holdout(1000, seed=5, challenger_noise=0.95, champion_noise=1.0)
    report = report_for(holdout, y, challenger, champion, SUPERIORITY)
    ci = next(d for d in report["differences"] if d["metric"] == "roc_auc")
    assert ci["difference"] > 0 and ci["lower"] < 0  # the situation under test
    gate = promotion_gate(report, SUPERIORITY)
    assert not gate.passed
    failed = [c.name for c in gate.criteria if not c.passed]
    assert failed == ["superiority"], gate.summary
    assert "lower bound <= 0" in criterion(gate, "superiority").detail
    assert gate.summary.startswith("KEEP CHAMPION: ")
    # The same evidence passes a non-inferiority gate with a wide enough margin.
    lenient = replace(NON_INFERIORITY, promotion=replace(NON_INFERIORITY.promotion, non_inferiority_margin=-ci["lower"] + 0.001))
    assert criterion(promotion_gate(report, lenient), "non_inferiority").passed


def test_a_challenger_that_regresses_on_a_slice_is_rejected():
    holdout, y, challenger, champion = simulated_holdout(2000, seed=11, challenger_noise=0.2, champion_noise=0.8, south_noise=1.6)
    report = report_for(holdout, y, challenger, champion, NON_INFERIORITY)
    gate = promotion_gate(report, NON_INFERIORITY)
    assert criterion(gate, "non_inferiority").passed  # better overall ...
    slices = criterion(gate, "slices")
    assert not slices.passed and not gate.passed  # ... but not in the south
    assert "worst region=south" in slices.detail and "1 of 4 regress" in slices.detail


def test_small_slices_are_not_judged():
    holdout, y, challenger, champion = simulated_holdout(300, seed=11, challenger_noise=0.3, champion_noise=0.8, south_noise=3.0)
    policy = replace(NON_INFERIORITY, promotion=replace(NON_INFERIORITY.promotion, min_slice_rows=1000))
    gate = promotion_gate(report_for(holdout, y, challenger, champion, policy), policy)
    assert criterion(gate, "slices").passed
    assert "slices not compared" in criterion(gate, "slices").detail


def test_a_worse_challenger_fails_non_inferiority_with_the_numbers():
    holdout, y, challenger, champion = simulated_holdout(1500, seed=2, challenger_noise=1.5, champion_noise=0.4)
    gate = promotion_gate(report_for(holdout, y, challenger, champion, NON_INFERIORITY), NON_INFERIORITY)
    detail = criterion(gate, "non_inferiority").detail
    assert not gate.passed and "lower bound <= -0.010 (margin)" in detail and "95% CI" in detail


def test_the_first_model_is_judged_on_absolute_slos_alone():
    holdout, y, challenger, _ = simulated_holdout(800, seed=4, challenger_noise=0.5, champion_noise=1.0)
    report = report_for(holdout, y, challenger, None, NON_INFERIORITY)
    assert report["champion_version"] is None and report["differences"] == []
    gate = promotion_gate(report, NON_INFERIORITY)
    assert gate.passed, gate.summary
    assert {c.name for c in gate.criteria} == {"slo_roc_auc", "slo_calibration", "slo_latency", "slo_demographic_parity_difference",
                                               "slo_equal_opportunity_difference", "champion"}
    strict = replace(NON_INFERIORITY, min_roc_auc=0.99)
    assert criterion(promotion_gate(report, strict), "slo_roc_auc").detail.endswith("< SLO 0.990")


def test_absolute_slos_on_calibration_latency_and_fairness_fail_with_numbers():
    holdout, y, challenger, _ = simulated_holdout(800, seed=4, challenger_noise=0.5, champion_noise=1.0)
    overconfident = replace(challenger, scores=np.where(challenger.scores > 0.5, 0.999, 0.001),
                            cost={"latency_ms_per_1000_rows": 450.0, "model_size_bytes": 1.0})
    report = report_for(holdout, y, overconfident, None, NON_INFERIORITY)
    gate = promotion_gate(report, NON_INFERIORITY)
    assert not criterion(gate, "slo_calibration").passed
    assert criterion(gate, "slo_latency").detail == "latency per 1,000 rows (ms) 450.0 > SLO 200.0"
    # A model that only ever flags one group breaks demographic parity.
    biased = replace(challenger, scores=np.where(holdout["sex"] == "F", 0.9, 0.1))
    gate = promotion_gate(report_for(holdout, y, biased, None, NON_INFERIORITY), NON_INFERIORITY)
    assert "demographic-parity gap 1.000 > SLO 0.250" == criterion(gate, "slo_demographic_parity_difference").detail


def test_calibration_is_not_judged_on_a_small_holdout():
    holdout, y, challenger, _ = simulated_holdout(200, seed=4, challenger_noise=0.5, champion_noise=1.0)
    overconfident = replace(challenger, scores=np.where(challenger.scores > 0.5, 0.999, 0.001))
    gate = promotion_gate(report_for(holdout, y, overconfident, None, NON_INFERIORITY), NON_INFERIORITY)
    assert criterion(gate, "slo_calibration").passed
    assert "not judged: 200 held-out rows, needs 500" in criterion(gate, "slo_calibration").detail


def test_a_fairness_gap_growing_beyond_the_margin_is_rejected():
    holdout, y, challenger, champion = simulated_holdout(2000, seed=8, challenger_noise=0.3, champion_noise=0.8)
    # Shift the challenger's scores up for one group only: more of it gets flagged.
    skewed = replace(challenger, scores=np.where(holdout["sex"] == "M", np.minimum(challenger.scores * 1.8, 0.999), challenger.scores))
    policy = replace(NON_INFERIORITY, promotion=replace(NON_INFERIORITY.promotion, max_fairness_gap=1.0, max_calibration_error=1.0))
    gate = promotion_gate(report_for(holdout, y, skewed, champion, policy), policy)
    dp = criterion(gate, "demographic_parity_difference_vs_champion")
    assert not dp.passed and "grew significantly beyond the margin" in dp.detail and "vs margin +0.100" in dp.detail


def test_a_noisy_fairness_gap_on_small_groups_does_not_block():
    # Same models, 300 rows: the equal-opportunity gap moves a lot between samples, but not significantly.
    holdout, y, challenger, champion = simulated_holdout(300, seed=5, challenger_noise=0.95, champion_noise=1.0)
    report = report_for(holdout, y, challenger, champion, NON_INFERIORITY)
    change = report["fairness_changes"]["equal_opportunity_difference"]
    assert change["lower"] < 0 < change["upper"]
    assert criterion(promotion_gate(report, NON_INFERIORITY), "equal_opportunity_difference_vs_champion").passed


def test_fairness_gap_increase_point_estimate_matches_fairlearn():
    holdout, y, challenger, champion = simulated_holdout(500, seed=6, challenger_noise=0.5, champion_noise=1.0)
    changes = fairness_gap_increase(y, challenger.scores, champion.scores, holdout["sex"], 0.5, 1000, 0.95, seed=0)
    for gap in ("demographic_parity_difference", "equal_opportunity_difference"):
        expected = (fairness_gaps(y, challenger.scores, holdout["sex"], 0.5)[gap]
                    - fairness_gaps(y, champion.scores, holdout["sex"], 0.5)[gap])
        assert changes[gap]["increase"] == pytest.approx(expected)
        assert changes[gap]["lower"] <= changes[gap]["increase"] <= changes[gap]["upper"]


def test_an_undefined_challenger_auc_fails_with_advice():
    holdout, y, challenger, champion = simulated_holdout(200, seed=1, challenger_noise=0.5, champion_noise=1.0)
    ones = np.zeros_like(y)
    report = build_evaluation_report(holdout, ones, challenger, None, ["region"], "sex", NON_INFERIORITY, [])
    gate = promotion_gate(report, NON_INFERIORITY)
    assert not gate.passed and "collect more labels" in gate.summary


def test_the_report_is_plain_json_with_slices_and_fairness_for_both_roles():
    import json

    holdout, y, challenger, champion = simulated_holdout(600, seed=9, challenger_noise=0.5, champion_noise=1.0)
    report = report_for(holdout, y, challenger, champion, NON_INFERIORITY)
    again = json.loads(json.dumps(report))
    assert promotion_gate(again, NON_INFERIORITY) == promotion_gate(report, NON_INFERIORITY)
    assert {(s["role"], s["value"]) for s in report["slices"]} == {(r, v) for r in ("challenger", "champion")
                                                                  for v in ("north", "south", "east", "west")}
    assert sum(s["n_rows"] for s in report["slices"] if s["role"] == "champion") == 600
    assert {f["group"] for f in report["fairness"]} == {"F", "M"}
    assert [d["metric"] for d in report["differences"]] == ["roc_auc", "pr_auc", "log_loss", "brier", "accuracy"]
    assert report["models"]["challenger"]["model_version"] == "2"
    assert set(report["calibration"]) == {"challenger", "champion"}


def test_gate_summary_lists_every_criterion():
    gate = GateResult(False, [Criterion("a", True, "first"), Criterion("b", False, "second")])
    assert gate.summary == "KEEP CHAMPION: first (pass); second (FAIL)"
    assert gate.to_dict()["criteria"][1] == {"name": "b", "passed": False, "detail": "second"}
    assert gate.headline == "KEEP CHAMPION: 1 of 2 criteria failed: b: second"
    assert GateResult(True, [Criterion("a", True, "first")]).headline == "PROMOTE: all 1 criteria passed"
