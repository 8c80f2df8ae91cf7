"""The training window and where evidence of change starts it (`core.policy.window`), and the
decisions that set and keep that start (`decide_retrain`)."""

import dataclasses
import math

from retrain_assets.core.policy.definition import Policy, with_overrides
from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, decide_retrain
from retrain_assets.core.policy.window import change_window_from, training_window

DAYS = [f"2025-01-{d:02d}" for d in range(1, 11)]
POLICY = Policy(min_partitions_first_model=3, training_window_partitions=6, max_model_age_partitions=30,
                min_new_labeled_rows=100, cooldown_partitions=0, drift_window_batches=3, drift_min_batches=2)


def test_the_window_is_the_newest_partitions_none_before_its_start_oldest_first():
    assert training_window(reversed(DAYS), 4) == DAYS[-4:]
    assert training_window(DAYS + DAYS[:2], 20) == DAYS  # duplicates count once
    assert training_window(DAYS, 6, "2025-01-08") == ["2025-01-08", "2025-01-09", "2025-01-10"]
    assert training_window(DAYS, 3, "2025-01-02") == DAYS[-3:]  # the start no longer binds
    assert training_window(DAYS, 0) == []


def test_a_change_starts_the_window_at_the_newest_partitions_never_earlier_than_the_start_in_force():
    assert change_window_from(DAYS, 3) == "2025-01-08"
    assert change_window_from(DAYS, 3, "2025-01-09") == "2025-01-09"
    assert change_window_from(DAYS[:2], 3) == "2025-01-01"
    assert change_window_from([], 3, "2025-01-04") == "2025-01-04"


def signal(day: int, realized: float) -> BatchSignal:
    return BatchSignal(f"2025-01-{day:02d}", "1", False, 0.0, n_labeled=100, realized_performance=realized,
                       realized_performance_low=realized - 0.02, realized_performance_high=realized + 0.02)


def history(realized: float, **changes) -> PolicyHistory:
    base = dict(labeled_partitions=DAYS, signals=[signal(d, realized) for d in (8, 9, 10)], champion_version="1",
                champion_holdout_roc_auc=0.80, champion_baseline_performance=0.80, last_trained_through="2025-01-05",
                new_labeled_rows=500)
    return PolicyHistory(**{**base, **changes})


def test_a_performance_retrain_forgets_the_regime_the_champion_fails_on():
    decision = decide_retrain(history(0.70), POLICY)
    assert decision.retrain and decision.trigger == "performance"
    assert decision.window_from == "2025-01-08"  # the newest min_partitions_first_model labeled partitions
    assert decision.reason.endswith("; the window starts at 2025-01-08: older rows hold the regime the champion fails on")


def test_other_retrains_keep_the_start_in_force_and_healthy_decisions_set_none():
    stale = with_overrides(POLICY, {"max_model_age_partitions": 3})
    kept = decide_retrain(history(0.80, window_from="2025-01-04"), stale)
    assert kept.retrain and kept.trigger == "freshness" and kept.window_from == "2025-01-04"
    assert "window starts" not in kept.reason
    healthy = decide_retrain(history(0.80, window_from="2025-01-04"), POLICY)
    assert not healthy.retrain and healthy.window_from == ""


def test_an_error_stream_retrain_starts_the_window_anew_too():
    alarms = [dataclasses.replace(signal(d, 0.80), error_alarm=1.0, error_stream_shift=0.05) for d in (8, 9, 10)]
    decision = decide_retrain(history(0.80, signals=alarms), POLICY)
    assert decision.retrain and decision.trigger == "error_stream" and decision.window_from == "2025-01-08"


def test_forgetting_can_be_turned_off():
    off = with_overrides(POLICY, {"forget_on_change": "false"})
    decision = decide_retrain(history(0.70), off)
    assert decision.retrain and decision.trigger == "performance" and decision.window_from == ""
    assert not math.isnan(decision.numbers["realized_performance"])


def test_a_seasonal_spec_keeps_a_full_cycle_when_the_window_starts_anew():
    seasonal = with_overrides(POLICY, {"change_window_partitions": 5})
    assert decide_retrain(history(0.70), seasonal).window_from == "2025-01-06"
