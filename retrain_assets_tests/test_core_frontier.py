"""The backtest's cost/accuracy frontier (`core.offline.frontier`): which policies it replays, and
the verdict on the default policy (beaten or not, the tolerance's edge, error metrics' orientation,
the oracle goal), computed by hand here."""

import math

import pytest

from retrain_assets.core.offline.backtest import BacktestPolicy, parse_policies
from retrain_assets.core.offline.frontier import (
    TOLERANCE_PERCENT,
    TOLERANCE_PP,
    FrontierPoint,
    default_sweep,
    frontier_policies,
    frontier_verdict,
    parse_periods,
    periodic_periods,
)
from retrain_assets.core.policy.definition import Policy, with_overrides


def points(default: float, schedules: dict[int, tuple[int, float]], oracle: tuple[int, float] = (40, 0.85)) -> list[FrontierPoint]:
    """A frontier: the default policy with 5 retrains and mean `default`, periodic:N -> (retrains, mean), the oracle."""
    out = [FrontierPoint("static", "static", 1, 0.70), FrontierPoint("policy (default)", "default", 5, default),
           FrontierPoint("oracle (every batch)", "oracle", *oracle),
           FrontierPoint("policy[max_model_age_partitions=3]", "policy", 9, 0.99, "3")]
    return out + [FrontierPoint(f"periodic:{n}", "periodic", r, m, str(n)) for n, (r, m) in schedules.items()]


def test_the_best_schedule_retraining_no_more_often_beats_the_default():
    verdict = frontier_verdict(points(0.80, {2: (20, 0.95), 7: (5, 0.81), 14: (3, 0.805)}), "roc_auc")
    assert verdict.schedule.name == "periodic:7"  # periodic:2 retrains more; the sweep variant is no schedule
    assert verdict.difference == pytest.approx(100 * (0.80 - 0.81))
    assert math.isnan(verdict.relative) and verdict.beaten is True
    assert "Default - periodic:7: -1.00 pp of ROC AUC" in verdict.lines()[2] and verdict.lines()[2].endswith("beaten (tolerance 0.05 pp).")


def test_a_default_better_than_every_cheaper_schedule_is_not_beaten():
    verdict = frontier_verdict(points(0.83, {7: (5, 0.81), 14: (3, 0.82)}), "roc_auc")
    assert verdict.schedule.name == "periodic:14" and verdict.difference == pytest.approx(1.0) and verdict.beaten is False
    assert "not beaten" in verdict.lines()[2]


def test_equal_means_pick_the_cheaper_schedule():
    assert frontier_verdict(points(0.80, {7: (5, 0.81), 14: (3, 0.81)}), "roc_auc").schedule.name == "periodic:14"


@pytest.mark.parametrize("schedule, beaten", [(0.8005, False), (0.80051, True), (0.8004, False)])
def test_the_tolerance_edge_on_a_bounded_metric(schedule, beaten):
    assert TOLERANCE_PP == 0.05
    verdict = frontier_verdict(points(0.80, {7: (5, schedule)}), "roc_auc")
    assert verdict.difference == pytest.approx(-100 * (schedule - 0.80)) and verdict.beaten is beaten


@pytest.mark.parametrize("default, schedule, difference, relative, beaten", [
    (10.0, 10.5, 0.5, 100 * 0.5 / 10.5, False),     # lower MAE: the default is better, positive
    (10.5, 10.0, -0.5, -5.0, True),                   # higher MAE: worse by 5 % of the schedule's value
    (10.005, 10.0, -0.005, -TOLERANCE_PERCENT, False),  # exactly at the 0.05 % tolerance: a tie
    (10.0051, 10.0, -0.0051, -0.051, True),
])
def test_an_error_metric_is_oriented_lower_is_better_and_compared_relative(default, schedule, difference, relative, beaten):
    frontier = points(default, {7: (5, schedule)}, oracle=(40, 9.9))
    verdict = frontier_verdict(frontier, "mae")
    assert verdict.difference == pytest.approx(difference) and verdict.relative == pytest.approx(relative)
    assert verdict.beaten is beaten
    assert verdict.oracle_gap == pytest.approx(9.9 - default) and verdict.oracle_relative == pytest.approx(100 * (9.9 - default) / 9.9)
    assert "MAE (" in verdict.lines()[2] and "% of periodic:7's" in verdict.lines()[2]


def test_a_bounded_lower_is_better_metric_is_in_points_with_the_sign_flipped():
    verdict = frontier_verdict(points(0.20, {7: (5, 0.21)}, oracle=(40, 0.19)), "brier")
    assert verdict.difference == pytest.approx(1.0) and verdict.beaten is False
    assert verdict.oracle_gap == pytest.approx(-1.0) and verdict.goal_met is True  # exactly 1 pp: within


@pytest.mark.parametrize("default, oracle, goal", [
    ((5, 0.845), (20, 0.85), True),    # 0.5 pp below with 25 % of the retrains
    ((5, 0.835), (20, 0.85), False),   # 1.5 pp below
    ((6, 0.85), (20, 0.85), False),    # 30 % of the retrains
    ((5, 0.86), (40, 0.85), True),     # above the oracle
])
def test_the_oracle_goal_needs_both_the_gap_and_the_share(default, oracle, goal):
    frontier = [FrontierPoint("policy (default)", "default", *default), FrontierPoint("oracle (every batch)", "oracle", *oracle)]
    verdict = frontier_verdict(frontier, "roc_auc")
    assert verdict.retrain_share == pytest.approx(default[0] / oracle[0])
    assert verdict.oracle_gap == pytest.approx(100 * (default[1] - oracle[1])) and verdict.goal_met is goal
    assert verdict.lines()[-1].endswith("met." if goal else "not met.") and ("not met" in verdict.lines()[-1]) is not goal


def test_no_schedule_as_cheap_as_the_default_means_no_comparison():
    verdict = frontier_verdict(points(0.80, {2: (20, 0.90)}), "roc_auc")
    assert verdict.schedule is None and verdict.beaten is None and math.isnan(verdict.difference)
    assert "No periodic schedule retrained at most 5 times" in verdict.lines()[1]
    assert verdict.as_json()["difference"] is None and verdict.as_json()["lines"] == verdict.lines()


def test_periods_and_the_default_sweep():
    assert periodic_periods(30) == [2, 3, 4, 5, 7, 10, 14, 21, 28]
    assert periodic_periods(10) == [2, 3, 4, 5, 7] and periodic_periods(10, [1, 5, 5, 3, 12]) == [3, 5]
    assert parse_periods("2, 3,5") == [2, 3, 5]
    with pytest.raises(ValueError, match="whole numbers"):
        parse_periods("2,x")
    assert default_sweep(with_overrides(Policy(), {"max_model_age_partitions": 6})) == {"max_model_age_partitions": ["3", "6", "12", "24"]}
    assert default_sweep(with_overrides(Policy(), {"max_model_age_partitions": 3})) == {"max_model_age_partitions": ["2", "3", "6", "12"]}
    assert default_sweep(with_overrides(Policy(), {"max_model_age_partitions": 1})) == {"max_model_age_partitions": ["1", "2", "4"]}


def test_frontier_policies_add_each_policy_once_and_replay_the_default_once():
    base = with_overrides(Policy(), {"max_model_age_partitions": 6})
    policies = frontier_policies(parse_policies("static,periodic:7,drift,every-batch", base), base, n_steps=12)
    assert [p.name for p in policies] == [
        "static", "periodic:2", "periodic:3", "periodic:4", "periodic:5", "periodic:7", "periodic:10", "drift",
        "drift[max_model_age_partitions=3]", "drift[max_model_age_partitions=12]", "drift[max_model_age_partitions=24]",
        "every-batch"]
    swept = frontier_policies([BacktestPolicy("static", base)], base, 12, [3], {"cooldown_partitions": ["1", "3"]})
    assert [p.name for p in swept] == ["static", "periodic:3", "drift", "drift[cooldown_partitions=1]", "every-batch"]
