"""The clauses that weigh a retrain's value: data growth from the learning curve, and drift's impact."""

import math

import pytest

from retrain_assets.core.policy.definition import Policy, with_overrides
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, decide_retrain
from retrain_assets.core.policy.triggers import TriggerThresholds
from retrain_assets.core.policy.value import drift_impact, growth_clause
from retrain_assets.core.spec import TargetSpec

AUC = performance_rules(Policy())
MAE = performance_rules(Policy(), TargetSpec(name="y", type="regression"))
T = TriggerThresholds()
NAN = math.nan


def est(value: float) -> tuple[float, float, float]:
    """A label-free estimate without a band."""
    return value, NAN, NAN


# --- data growth -------------------------------------------------------------------------------

def test_growth_holds_once_rows_grew_enough_and_the_curve_promises_enough():
    # 0.02 per doubling; 1.5x rows -> 0.02 * log2(1.5) = 0.0117 >= 0.005
    grown = growth_clause(1500, 1000, 0.02, 0.8, AUC, T)
    assert grown.holds and grown.ratio == 1.5 and grown.expected_gain == pytest.approx(0.02 * math.log2(1.5))
    assert "1.50x" in grown.text and "1000 -> 1500 rows" in grown.text
    assert not growth_clause(1400, 1000, 0.02, 0.8, AUC, T).holds  # below growth_min_ratio


def test_a_flat_learning_curve_never_fires():
    assert not growth_clause(4000, 1000, 0.002, 0.8, AUC, T).holds   # 0.002 * 2 = 0.004 < 0.005
    assert not growth_clause(4000, 1000, -0.01, 0.8, AUC, T).holds
    assert growth_clause(4000, 1000, 0.003, 0.8, AUC, T).holds       # 0.006 >= 0.005


def test_unknown_curve_or_rows_never_fire():
    for rows, gain in ((None, 0.05), (0, 0.05), (1000, None), (1000, NAN)):
        clause = growth_clause(5000, rows, gain, 0.8, AUC, T)
        assert not clause.holds and math.isnan(clause.ratio)


def test_error_metric_gain_is_a_share_of_the_champions_value():
    # MAE 10: needs 0.5 % of 10 = 0.05 of MAE per the growth; 0.04 per doubling x 1 doubling = 0.04 < 0.05
    assert not growth_clause(2000, 1000, 0.04, 10.0, MAE, T).holds
    assert growth_clause(2000, 1000, 0.06, 10.0, MAE, T).holds
    assert not growth_clause(2000, 1000, 0.06, None, MAE, T).holds  # no value to scale by


# --- drift impact -------------------------------------------------------------------------------

def test_an_estimate_that_holds_up_means_no_impact_and_one_that_drops_means_impact():
    calm = drift_impact([est(0.795), est(0.80)], [], 0.80, AUC, T)
    assert calm.hurts is False and "does not hurt" in calm.text and "estimated ROC AUC" in calm.text
    hurt = drift_impact([est(0.77), est(0.78)], [], 0.80, AUC, T)
    assert hurt.hurts is True and hurt.worse_by == pytest.approx(0.025)


def test_an_estimate_needs_its_band_clear_of_the_baseline_as_labels_need_their_interval():
    # 0.03 worse on the point estimate, but each batch's band reaches past the baseline: the
    # combined half width sqrt(2 * 0.05^2) / 2 = 0.035 > 0.03, no evidence of harm
    wide = drift_impact([(0.77, 0.72, 0.82), (0.77, 0.72, 0.82)], [], 0.80, AUC, T)
    assert wide.hurts is False and "estimated ROC AUC 0.770 [0.735, 0.805]" in wide.text
    tight = drift_impact([(0.77, 0.75, 0.79), (0.77, 0.75, 0.79)], [], 0.80, AUC, T)
    assert tight.hurts is True


def test_realized_values_decide_over_estimates_and_need_their_interval_clear_of_the_baseline():
    # the estimate says fine, labels say worse by 0.05 with a tight interval: hurts
    tight = drift_impact([est(0.80)], [(0.75, 0.73, 0.77)], 0.80, AUC, T)
    assert tight.hurts is True and "realized ROC AUC 0.750" in tight.text
    # same drop, but the interval reaches the baseline (a noisy small batch): no evidence of harm
    wide = drift_impact([est(0.70)], [(0.75, 0.65, 0.85)], 0.80, AUC, T)
    assert wide.hurts is False
    # two batches' intervals combine: the mean's half width is sqrt(h1^2 + h2^2) / 2
    both = drift_impact([], [(0.75, 0.69, 0.81), (0.75, 0.69, 0.81)], 0.80, AUC, T)
    assert both.hurts is True  # each alone (half width 0.06) reaches 0.80, their mean (0.042) does not
    assert drift_impact([], [(0.75, 0.69, 0.81)], 0.80, AUC, T).hurts is False


def test_impact_is_unknown_without_a_baseline_or_any_value():
    assert drift_impact([est(0.7)], [], None, AUC, T).hurts is None
    assert drift_impact([est(NAN)], [(NAN, NAN, NAN)], 0.8, AUC, T).hurts is None


def test_error_metric_impact_is_worse_when_higher():
    assert drift_impact([est(10.5)], [], 10.0, MAE, T).hurts is True      # 5 % worse > 1 %
    assert drift_impact([est(10.05)], [], 10.0, MAE, T).hurts is False    # 0.5 % worse
    assert drift_impact([est(9.0)], [], 10.0, MAE, T).hurts is False      # better


# --- in decide_retrain --------------------------------------------------------------------------

POLICY = Policy(min_partitions_first_model=3, max_model_age_partitions=30, min_new_labeled_rows=100, cooldown_partitions=0,
                drift_window_batches=3, drift_min_batches=2)


def drifted(day: int, estimated: float = NAN, realized=(NAN, NAN, NAN), labeled: int = 60) -> BatchSignal:
    return BatchSignal(f"2025-01-{day:02d}", "1", True, 0.6, n_labeled=labeled, estimated_performance=estimated,
                       realized_performance=realized[0], realized_performance_low=realized[1], realized_performance_high=realized[2])


def history(signals, **changes) -> PolicyHistory:
    base = dict(labeled_partitions=[f"2025-01-{d:02d}" for d in range(1, 9)], signals=signals, champion_version="1",
                champion_holdout_roc_auc=0.80, champion_baseline_performance=0.80, last_trained_through="2025-01-05",
                new_labeled_rows=500)
    return PolicyHistory(**{**base, **changes})


def test_drift_that_does_not_hurt_holds_and_says_so():
    decision = decide_retrain(history([drifted(6, 0.80, (0.80, 0.77, 0.83)), drifted(7, 0.79, (0.79, 0.76, 0.82))]), POLICY)
    assert not decision.retrain and decision.suppressed_by == "no_impact" and decision.trigger == "drift"
    assert decision.reason.startswith("drift in 2/2 batches, but it does not hurt the model: realized ROC AUC 0.795")


def test_drift_that_hurts_triggers_with_its_evidence():
    # 0.03 worse: within the performance clause's 0.05 drop, beyond the impact margin's 0.01
    decision = decide_retrain(history([drifted(6, 0.78, (0.77, 0.76, 0.78)), drifted(7, 0.78, (0.77, 0.76, 0.78))]), POLICY)
    assert decision.retrain and decision.trigger == "drift"
    assert "realized ROC AUC 0.770" in decision.reason and "hurts" in decision.reason
    assert decision.numbers["drift_impact"] == pytest.approx(0.03)


def test_raw_drift_triggers_when_impact_is_not_required():
    raw = with_overrides(POLICY, {"drift_needs_impact": "false"})
    signals = [drifted(6, 0.80, (0.80, 0.77, 0.83)), drifted(7, 0.80, (0.80, 0.77, 0.83))]
    assert decide_retrain(history(signals), raw).retrain
    assert not decide_retrain(history(signals), POLICY).retrain


def test_a_harmless_estimate_holds_before_labels_arrive():
    decision = decide_retrain(history([drifted(6, 0.80, labeled=0), drifted(7, 0.80, labeled=0)]), POLICY)
    assert decision.suppressed_by == "no_impact"
    waiting = decide_retrain(history([drifted(6, 0.77, labeled=0), drifted(7, 0.77, labeled=0)]), POLICY)
    assert waiting.suppressed_by == "awaiting_drift_labels"


def test_data_growth_fires_for_a_young_model_and_goes_through_the_guards():
    young = dict(window_labeled_rows=1600, champion_training_rows=800, champion_learning_gain=0.03)
    decision = decide_retrain(history([], **young), POLICY)
    assert decision.retrain and decision.trigger == "data_growth" and decision.numbers["growth_ratio"] == 2.0
    assert decision.numbers["expected_gain"] == pytest.approx(0.03)
    trial = decide_retrain(history([], trial_version="2", **young), POLICY)
    assert not trial.retrain and trial.suppressed_by == "trial_running" and trial.trigger == "data_growth"
    flat = decide_retrain(history([], **{**young, "champion_learning_gain": 0.001}), POLICY)
    assert not flat.retrain and math.isclose(flat.numbers["expected_gain"], 0.001)


def test_trigger_thresholds_are_validated():
    with pytest.raises(ValueError, match="growth_min_ratio"):
        with_overrides(Policy(), {"growth_min_ratio": 1.0})
    with pytest.raises(ValueError, match="impact_margin"):
        with_overrides(Policy(), {"impact_margin": -0.1})
    assert Policy.from_mapping({"triggers": {"drift_needs_impact": False}}).triggers.drift_needs_impact is False


def test_the_performance_clause_needs_a_drop_clear_of_the_realized_interval():
    def labeled(day, realized):
        return BatchSignal(f"2025-01-{day:02d}", "1", False, 0.0, n_labeled=30, realized_performance=realized[0],
                           realized_performance_low=realized[1], realized_performance_high=realized[2])
    # 0.06 below the champion's 0.80 (past the 0.05 drop), but three batches of 30 rows: +-0.12 each
    noisy = decide_retrain(history([labeled(d, (0.74, 0.62, 0.86)) for d in (6, 7, 8)]), POLICY)
    assert not noisy.retrain and noisy.numbers["realized_half_width"] == pytest.approx(0.12 / math.sqrt(3))
    # the same drop measured tightly fires, and says how sure it is
    tight = decide_retrain(history([labeled(d, (0.74, 0.72, 0.76)) for d in (6, 7, 8)]), POLICY)
    assert tight.retrain and tight.trigger == "performance" and "realized ROC AUC 0.740 ±0.0115" in tight.reason
    # below the SLO (0.65) by more than the interval: fires however small the drop from promotion
    slo = decide_retrain(history([labeled(d, (0.55, 0.50, 0.60)) for d in (6, 7, 8)], champion_baseline_performance=0.56,
                                 champion_holdout_roc_auc=0.56), POLICY)
    assert slo.retrain and "below the SLO 0.650" in slo.reason
