"""Policy overrides and validation, and the retrain decision."""

import pytest

from retrain_assets.core.policy import Policy, decide_retrain


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
        ({"retrain_after_new_partitions": 0}, "retrain_after_new_partitions"),
    ],
)
def test_from_mapping_rejects_out_of_range_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        Policy.from_mapping(overrides)


def test_from_mapping_rejects_roc_auc_slo_above_one():
    with pytest.raises(ValueError, match="min_roc_auc"):
        Policy.from_mapping({"min_roc_auc": 1.5})


def test_first_model_waits_for_enough_labeled_partitions():
    policy = Policy(min_partitions_first_model=7)
    waiting = decide_retrain(days(1, 6), None, policy)
    assert not waiting.retrain
    assert "6/7" in waiting.reason
    ready = decide_retrain(days(1, 7), None, policy)
    assert ready.retrain
    assert ready.reason.startswith("first model")


def test_model_is_fresh_until_enough_new_partitions_are_labeled():
    policy = Policy(retrain_after_new_partitions=3)
    fresh = decide_retrain(days(1, 12), "2025-01-10", policy)  # 11, 12 are new
    assert not fresh.retrain
    assert "fresh" in fresh.reason and "2/3" in fresh.reason
    stale = decide_retrain(days(1, 13), "2025-01-10", policy)
    assert stale.retrain
    assert "stale" in stale.reason and "2025-01-10" in stale.reason


def test_duplicate_labeled_partitions_count_once():
    first = Policy(min_partitions_first_model=3)
    assert not decide_retrain(["2025-01-01", "2025-01-01", "2025-01-02", "2025-01-02"], None, first).retrain
    again = Policy(retrain_after_new_partitions=2)
    assert not decide_retrain(["2025-01-01", "2025-01-02", "2025-01-02"], "2025-01-01", again).retrain
