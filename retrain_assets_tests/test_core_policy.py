"""Policy overrides and validation, and the retrain decision."""

import pytest

import math

from retrain_assets.core.policy.definition import DriftThresholds, Policy, PromotionThresholds
from retrain_assets.core.policy.triggers import TriggerThresholds
from retrain_assets.core.policy.retrain import BatchSignal, DriftClause, PolicyHistory, decide_retrain, drift_clause


def days(first: int, last: int) -> list[str]:
    """Sortable daily partition keys 2025-01-<first> .. 2025-01-<last>."""
    return [f"2025-01-{d:02d}" for d in range(first, last + 1)]


def test_from_mapping_overrides_and_keeps_defaults():
    policy = Policy.from_mapping({"min_roc_auc": 0.7, "training_window_partitions": "14"})
    assert policy.min_roc_auc == 0.7
    assert policy.training_window_partitions == 14 and isinstance(policy.training_window_partitions, int)
    assert policy.holdout_share == Policy().holdout_share


def test_from_mapping_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown policy keys \['min_auc'\]"):
        Policy.from_mapping({"min_auc": 0.7})


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"max_bad_row_share": 1.5}, "max_bad_row_share"),
        ({"max_bad_row_share": -0.1}, "max_bad_row_share"),
        ({"holdout_share": 0.0}, "holdout_share"),
        ({"holdout_share": 1.0}, "holdout_share"),
        ({"training_window_partitions": 1}, "training_window_partitions"),
        ({"min_partitions_first_model": 1}, "min_partitions_first_model"),
        ({"max_model_age_partitions": 0}, "max_model_age_partitions"),
        ({"drift_min_batches": 4}, "drift_min_batches"),
    ],
)
def test_from_mapping_rejects_out_of_range_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        Policy.from_mapping(overrides)


def test_from_mapping_rejects_roc_auc_slo_above_one():
    with pytest.raises(ValueError, match="min_roc_auc"):
        Policy.from_mapping({"min_roc_auc": 1.5})


def test_nested_drift_thresholds_are_overridable_and_checked():
    policy = Policy.from_mapping({"drift": {"dataset_drift_share": 0.25}})
    assert policy.drift == DriftThresholds(dataset_drift_share=0.25)
    with pytest.raises(ValueError, match=r"unknown policy.drift keys \['share'\]"):
        Policy.from_mapping({"drift": {"share": 0.2}})


def test_promotion_thresholds_and_model_search_are_overridable_and_checked():
    policy = Policy.from_mapping({"promotion": {"comparison": "superiority", "bootstrap_resamples": "5000",
                                                "non_inferiority_margin": 0.02},
                                  "model_families": "logistic_regression", "cv_folds": 4})
    assert policy.promotion == PromotionThresholds(comparison="superiority", bootstrap_resamples=5000, non_inferiority_margin=0.02)
    assert policy.model_families == ("logistic_regression",) and policy.cv_folds == 4
    assert Policy.from_mapping({"model_families": ["hist_gradient_boosting"]}).model_families == ("hist_gradient_boosting",)
    with pytest.raises(ValueError, match=r"unknown policy.promotion keys \['margin'\]"):
        Policy.from_mapping({"promotion": {"margin": 0.1}})
    with pytest.raises(ValueError, match="comparison must be one of"):
        Policy.from_mapping({"promotion": {"comparison": "better"}})
    with pytest.raises(ValueError, match="bootstrap_resamples must be at least 1000"):
        Policy.from_mapping({"promotion": {"bootstrap_resamples": 200}})
    with pytest.raises(ValueError, match=r"unknown: \['xgboost'\]"):
        Policy.from_mapping({"model_families": ["xgboost"]})
    with pytest.raises(ValueError, match="cv_folds must be at least 2"):
        Policy.from_mapping({"cv_folds": 1})


# --- decide_retrain: one test per clause and guard -------------------------------------------------

POLICY = Policy(min_partitions_first_model=3, max_model_age_partitions=10, min_new_labeled_rows=100,
                cooldown_partitions=3, max_retrains_per_window=2, budget_window_partitions=10, max_roc_auc_drop=0.05,
                min_roc_auc=0.65, drift_window_batches=3, drift_min_batches=2, drift_rearm_share=0.2,
                # the k-of-n mechanics on raw drift; the impact test has its own tests below
                triggers=TriggerThresholds(drift_needs_impact=False))


def signal(day: int, drifted: bool = False, share: float | None = None, realized: float = math.nan,
           estimated: float = math.nan, labeled: int = 0, champion: str = "1") -> BatchSignal:
    return BatchSignal(f"2025-01-{day:02d}", champion, drifted, share if share is not None else (0.5 if drifted else 0.0),
                       estimated, realized, labeled)


def history(signals=(), labeled=days(1, 5), trained_through="2025-01-05", new_rows=500, triggers=(), baseline=0.85):
    return PolicyHistory(labeled_partitions=list(labeled), signals=list(signals), champion_version="1",
                         champion_holdout_roc_auc=baseline, last_trained_through=trained_through,
                         new_labeled_rows=new_rows, past_triggers=list(triggers))


def test_first_model_waits_for_enough_labeled_partitions():
    waiting = decide_retrain(PolicyHistory(labeled_partitions=days(1, 2)), POLICY)
    assert not waiting.retrain and waiting.reason == "waiting for labels: 2/3 partitions labeled"
    first = decide_retrain(PolicyHistory(labeled_partitions=days(1, 3) + ["2025-01-02"]), POLICY)
    assert first.retrain and first.trigger == "first_model"


def test_healthy_champion_is_kept():
    decision = decide_retrain(history([signal(6, realized=0.84), signal(7, realized=0.86)]), POLICY)
    assert not decision.retrain and decision.trigger == "none" and decision.reason.startswith("healthy")


def test_drift_in_k_of_last_n_batches_triggers_once_drifted_batches_are_labeled():
    one = decide_retrain(history([signal(6), signal(7), signal(8, drifted=True, labeled=150)]), POLICY)
    assert not one.retrain  # one drifted batch of the last three is not enough
    waiting = decide_retrain(history([signal(6), signal(7, drifted=True), signal(8, drifted=True)]), POLICY)
    assert not waiting.retrain and waiting.suppressed_by == "awaiting_drift_labels"
    two = decide_retrain(history([signal(6), signal(7, drifted=True, labeled=60), signal(8, drifted=True, labeled=60)]), POLICY)
    assert two.retrain and two.trigger == "drift" and two.numbers["drifted_labeled_rows"] == 120


@pytest.mark.parametrize("verdicts, expected", [
    ([], DriftClause(0, 0, False)),                                   # no batch scored against the champion yet
    ([True], DriftClause(1, 1, False)),                               # one drifted batch is not enough
    ([True, True], DriftClause(2, 2, True)),                          # a short history can already hold
    ([True, False, False, True], DriftClause(1, 3, False)),           # only the last n count: the oldest drift fell out
    ([True, False, True], DriftClause(2, 3, True)),                   # k of n need not be consecutive
    ([True, True, True, False, False], DriftClause(1, 3, False)),
])
def test_drift_clause_counts_drifted_batches_among_the_last_n(verdicts, expected):
    assert drift_clause(verdicts, POLICY) == expected


def test_drift_clause_follows_k_and_n_of_the_policy():
    strict = Policy(drift_window_batches=5, drift_min_batches=4)
    assert drift_clause([True, True, True, False, True], strict) == DriftClause(4, 5, True)
    assert drift_clause([True, True, True, True, False, True], strict) == DriftClause(4, 5, True)
    assert drift_clause([True, True, False, False, True, True], strict) == DriftClause(3, 5, False)
    assert drift_clause([True], Policy(drift_window_batches=1, drift_min_batches=1)) == DriftClause(1, 1, True)


def test_decision_numbers_are_the_drift_clause():
    signals = [signal(6, drifted=True), signal(7), signal(8, drifted=True), signal(9, drifted=True)]
    clause = drift_clause([s.dataset_drifted for s in signals], POLICY)
    numbers = decide_retrain(history(signals), POLICY).numbers
    assert (numbers["drifted_batches"], numbers["window_batches"]) == (clause.drifted_batches, clause.window_batches) == (2, 3)


def test_signals_scored_against_an_older_champion_do_not_count():
    old = [signal(6, drifted=True, labeled=200, champion="0"), signal(7, drifted=True, labeled=200, champion="0")]
    assert not decide_retrain(history(old), POLICY).retrain


def test_realized_performance_below_slo_or_dropped_triggers():
    below_slo = decide_retrain(history([signal(6, realized=0.60), signal(7, realized=0.62)]), POLICY)
    assert below_slo.retrain and below_slo.trigger == "performance" and "below the SLO" in below_slo.reason
    dropped = decide_retrain(history([signal(6, realized=0.78), signal(7, realized=0.77)], baseline=0.85), POLICY)
    assert dropped.retrain and "dropped more than 0.05" in dropped.reason
    within = decide_retrain(history([signal(6, realized=0.81), signal(7, realized=0.82)], baseline=0.85), POLICY)
    assert not within.retrain


def test_estimated_performance_is_used_only_without_realized():
    estimated_only = decide_retrain(history([signal(6, estimated=0.70), signal(7, estimated=0.70)]), POLICY)
    assert estimated_only.retrain and "estimated ROC AUC" in estimated_only.reason
    realized_wins = decide_retrain(history([signal(6, estimated=0.70, realized=0.86), signal(7, estimated=0.70, realized=0.85)]), POLICY)
    assert not realized_wins.retrain


def test_freshness_triggers_after_max_model_age_partitions():
    fresh = decide_retrain(history(labeled=days(1, 14)), POLICY)
    stale = decide_retrain(history(labeled=days(1, 15)), POLICY)
    assert not fresh.retrain and fresh.numbers["model_age_partitions"] == 9
    assert stale.retrain and stale.trigger == "freshness"


def test_min_new_labels_guard():
    decision = decide_retrain(history([signal(6, realized=0.6), signal(7, realized=0.6)], new_rows=99), POLICY)
    assert not decision.retrain and decision.suppressed_by == "min_new_labels" and decision.trigger == "performance"


def test_cooldown_guard_counts_batches_since_the_last_trigger():
    low = [signal(6, realized=0.6), signal(7, realized=0.6), signal(8, realized=0.6)]
    cooling = decide_retrain(history(low, triggers=[("2025-01-06", "performance")]), POLICY)
    assert not cooling.retrain and cooling.suppressed_by == "cooldown"
    cooled = decide_retrain(history(low, triggers=[("2025-01-05", "performance")]), POLICY)
    assert cooled.retrain


def test_budget_guard_limits_retrains_per_window():
    low = [signal(d, realized=0.6) for d in range(6, 16)]
    spent = decide_retrain(history(low, labeled=days(1, 15), triggers=[("2025-01-08", "drift"), ("2025-01-11", "performance")]), POLICY)
    assert not spent.retrain and spent.suppressed_by == "budget"
    old_spend = decide_retrain(history(low, labeled=days(1, 15), triggers=[("2025-01-02", "drift"), ("2025-01-11", "performance")]), POLICY)
    assert old_spend.retrain


def test_hysteresis_keeps_drift_quiet_until_a_calm_batch_rearms_it():
    drifting = [signal(6, drifted=True, labeled=200), signal(7, drifted=True, labeled=200), signal(8, drifted=True, labeled=200)]
    after_drift_retrain = [("2025-01-02", "drift")]
    held = decide_retrain(history(drifting, triggers=after_drift_retrain), POLICY)
    assert not held.retrain and held.suppressed_by == "hysteresis"
    calm_then_drift = [signal(6, share=0.1, labeled=200), signal(7, drifted=True, labeled=200), signal(8, drifted=True, labeled=200)]
    rearmed = decide_retrain(history(calm_then_drift, triggers=after_drift_retrain), POLICY)
    assert rearmed.retrain and rearmed.trigger == "drift"


def test_hysteresis_does_not_hide_other_clauses():
    drifting = [signal(6, drifted=True, labeled=200), signal(7, drifted=True, labeled=200)]
    stale = decide_retrain(history(drifting, labeled=days(1, 15), triggers=[("2025-01-02", "drift")]), POLICY)
    assert stale.retrain and stale.trigger == "freshness"


# --- policy.performance: the primary metric and its thresholds per task -----------------------

def test_binary_performance_rules_resolve_to_the_existing_numbers():
    from retrain_assets.core.policy.performance import performance_rules

    policy = Policy()
    rules = performance_rules(policy)
    assert (rules.metric, rules.label, rules.higher_is_better, rules.slo, rules.min_skill) == ("roc_auc", "ROC AUC", True,
                                                                                               policy.min_roc_auc, None)
    assert rules.margin(0.9) == policy.promotion.non_inferiority_margin
    assert rules.slice_margin(0.7) == policy.promotion.max_slice_roc_auc_regression
    assert rules.drop(0.8) == policy.max_roc_auc_drop
    assert rules.worse_by(0.80, 0.85) == pytest.approx(0.05) and not rules.meets_slo(0.6)


def test_error_metric_rules_are_relative_to_the_value_compared_against():
    from retrain_assets.core.policy.performance import performance_rules
    from retrain_assets.core.spec import TargetSpec

    regression, multiclass = TargetSpec(name="y", type="regression"), TargetSpec(name="y", classes=("a", "b", "c"), type="multiclass")
    rules = performance_rules(Policy(), regression)
    assert (rules.metric, rules.higher_is_better, rules.slo, rules.min_skill) == ("mae", False, None, 0.1)
    assert rules.margin(50.0) == pytest.approx(1.0)                   # relative_margin 2 % of the champion's MAE
    assert rules.slice_margin(20.0) == pytest.approx(1.0)              # max_slice_roc_auc_regression as a share: 5 %
    assert rules.drop(10.0) == pytest.approx(0.5)                      # max_roc_auc_drop as a share: 5 %
    assert rules.worse_by(11.0, 10.0) == 1.0 and rules.meets_slo(1e9)
    assert performance_rules(Policy(), multiclass).slo == Policy().min_roc_auc
    stated = Policy.from_mapping({"performance": {"primary_metric": "rmse", "min_value": "3.5", "non_inferiority_margin": 0.2,
                                                  "max_slice_regression": 0.4, "max_drop": 0.3}})
    rules = performance_rules(stated, regression)
    assert (rules.metric, rules.slo, rules.margin(100.0), rules.slice_margin(100.0), rules.drop(100.0)) == ("rmse", 3.5, 0.2, 0.4, 0.3)
    assert not rules.meets_slo(3.6) and rules.meets_slo(3.4)           # an error metric's SLO is a ceiling
    with pytest.raises(ValueError, match="macro_roc_auc"):
        performance_rules(stated, multiclass)


def test_the_primary_metric_must_fit_the_task_when_the_spec_is_parsed():
    from retrain_assets.core.policy.definition import with_overrides
    from retrain_assets.core.spec import SpecError, parse_spec

    raw = {"name": "demo", "id": "id", "event_time": "at", "target": {"name": "y", "type": "regression"},
           "columns": {"id": {"type": "int"}, "at": {"type": "timestamp"}, "x": {"type": "float"}},
           "policy": {"performance": {"primary_metric": "r2"}}}
    assert parse_spec(raw).policy.performance.primary_metric == "r2"
    raw["policy"]["performance"]["primary_metric"] = "ece"
    with pytest.raises(SpecError, match=r"'ece' is not a metric a regression target's gate can compare; use one of \['mae'"):
        parse_spec(raw)
    assert with_overrides(Policy(), {"performance.primary_metric": "log_loss"}).performance.primary_metric == "log_loss"
    assert with_overrides(Policy(), {"primary_metric": "null"}).performance.primary_metric is None
    with pytest.raises(ValueError, match="performance.relative_margin must not be negative"):
        Policy.from_mapping({"performance": {"relative_margin": -0.1}})
