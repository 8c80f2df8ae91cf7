"""The novelty clause: fires on a window of novel batches, quiet at the in-distribution rate or
without novelty numbers, subject to the guards, in its place among the clauses."""

import dataclasses
import math

import pytest

from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.novelty import novelty_clause
from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, decide_retrain
from retrain_assets.core.policy.signals import signal_from_summary
from retrain_assets.core.policy.triggers import TriggerThresholds

POLICY = Policy(min_partitions_first_model=3, max_model_age_partitions=10, min_new_labeled_rows=100, cooldown_partitions=3)
DEFAULTS = TriggerThresholds()


def signals(*shares: float, drifted: bool = False, realized: float = 0.82) -> list[BatchSignal]:
    """Batches with these novelty shares, served at `realized` ROC AUC ±0.01 (0.82: worse than the
    champion's 0.85 by more than the impact margin, not by the performance clause's 0.05)."""
    return [BatchSignal(f"2025-01-{6 + i:02d}", "1", drifted, 0.5 if drifted else 0.0, realized_roc_auc=realized,
                        realized_performance=realized, realized_performance_low=realized - 0.01,
                        realized_performance_high=realized + 0.01, n_labeled=100, novelty_share=share)
            for i, share in enumerate(shares)]


def history(batches, new_rows=500, triggers=(), trial=None) -> PolicyHistory:
    return PolicyHistory(labeled_partitions=[f"2025-01-{d:02d}" for d in range(1, 6)], signals=batches, champion_version="1",
                         champion_holdout_roc_auc=0.85, last_trained_through="2025-01-05", new_labeled_rows=new_rows,
                         past_triggers=list(triggers), trial_version=trial)


def test_the_clause_holds_when_the_window_mean_exceeds_the_limit():
    assert (DEFAULTS.novelty_window_batches, DEFAULTS.max_novelty_share) == (3, 0.05)
    holds, text, numbers = novelty_clause([0.01, 0.02, 0.09, 0.10], DEFAULTS)  # the newest 3: mean 0.07
    assert holds and "7.0% of the rows of the last 3 batches" in text
    assert numbers["novelty_window_share"] == pytest.approx(0.07)
    quiet = novelty_clause([0.30, 0.01, 0.012, 0.015], DEFAULTS)  # an old burst is out of the window
    assert not quiet[0] and quiet[1] == "" and quiet[2]["novelty_window_share"] == pytest.approx(0.037 / 3)
    # NaN (a champion profiled before novelty models) does not count; all NaN: quiet, NaN mean
    assert novelty_clause([math.nan, 0.2, math.nan], DEFAULTS)[0]
    none = novelty_clause([math.nan] * 3, DEFAULTS)
    assert not none[0] and math.isnan(none[2]["novelty_window_share"])
    assert not novelty_clause([], DEFAULTS)[0]
    strict = TriggerThresholds(novelty_window_batches=1, max_novelty_share=0.02)
    assert novelty_clause([0.2, 0.03], strict)[0] and not novelty_clause([0.2, 0.02], strict)[0]


def test_thresholds_are_validated():
    for bad in ({"novelty_window_batches": 0}, {"max_novelty_share": 1.0}, {"max_novelty_share": -0.1}):
        with pytest.raises(ValueError, match="novelty"):
            TriggerThresholds(**bad).validate()
    assert Policy.from_mapping({"triggers": {"max_novelty_share": 0.1}}).triggers.max_novelty_share == 0.1


def test_novel_inputs_the_model_still_serves_well_are_held_as_no_impact():
    held = decide_retrain(history(signals(0.01, 0.12, 0.15, 0.11, realized=0.85)), POLICY)
    assert not held.retrain and (held.trigger, held.suppressed_by) == ("novelty", "no_impact")
    assert held.reason.startswith("novel inputs: ") and "does not hurt" in held.reason
    unweighed = dataclasses.replace(POLICY, triggers=TriggerThresholds(drift_needs_impact=False))
    assert decide_retrain(history(signals(0.01, 0.12, 0.15, 0.11, realized=0.85)), unweighed).trigger == "novelty"


def test_decide_retrain_fires_novelty_and_is_quiet_at_the_chance_rate():
    fired = decide_retrain(history(signals(0.01, 0.12, 0.15, 0.11)), POLICY)
    assert fired.retrain and fired.trigger == "novelty" and "novel inputs" in fired.reason
    assert fired.numbers["novelty_window_share"] == pytest.approx(0.38 / 3)
    calm = decide_retrain(history(signals(0.01, 0.012, 0.008)), POLICY)
    assert not calm.retrain and calm.trigger == "none"
    old = decide_retrain(history(signals(math.nan, math.nan)), POLICY)  # a champion without a novelty model
    assert not old.retrain and math.isnan(old.numbers["novelty_window_share"])
    other_champion = [dataclasses.replace(s, champion_version="0") for s in signals(0.2, 0.2, 0.2)]
    assert not decide_retrain(history(other_champion), POLICY).retrain


def test_novelty_comes_after_drift_and_before_freshness():
    raw_drift = dataclasses.replace(POLICY, triggers=TriggerThresholds(drift_needs_impact=False))
    both = [dataclasses.replace(s, n_labeled=150) for s in signals(0.2, 0.2, 0.2, drifted=True)]
    decision = decide_retrain(history(both), raw_drift)
    assert decision.trigger == "drift" and "novel inputs" in decision.reason
    stale = PolicyHistory(**{**history(signals(0.2, 0.2, 0.2)).__dict__, "labeled_partitions": [f"2025-01-{d:02d}" for d in range(1, 17)]})
    assert decide_retrain(stale, POLICY).trigger == "novelty"


@pytest.mark.parametrize("change, guard", [({"trial": "2"}, "trial_running"), ({"new_rows": 10}, "min_new_labels"),
                                           ({"triggers": [("2025-01-07", "drift")]}, "cooldown")])
def test_the_guards_hold_a_novelty_retrain(change, guard):
    decision = decide_retrain(history(signals(0.2, 0.2, 0.2), **change), POLICY)
    assert not decision.retrain and decision.trigger == "novelty" and decision.suppressed_by == guard


def test_the_signal_reads_novelty_share_from_the_summary():
    assert signal_from_summary("2025-01-06", "1", {"dataset_drifted": False, "drift_share": 0.0,
                                                   "novelty_share": 0.25}).novelty_share == 0.25
    assert math.isnan(signal_from_summary("2025-01-06", "1", {"dataset_drifted": False, "drift_share": 0.0}).novelty_share)


def test_clauses_their_own_guard_holds_are_named_in_clause_order():
    """Drift and novelty both held as `no_impact` (served as at promotion): the decision names drift's,
    the earlier clause; without drift, novelty's."""
    both = decide_retrain(history(signals(0.2, 0.2, 0.2, drifted=True, realized=0.85)), POLICY)
    assert not both.retrain and (both.trigger, both.suppressed_by) == ("drift", "no_impact")
    assert both.reason.startswith("drift in 3/3 batches, but it does not hurt the model")
    novelty_only = decide_retrain(history(signals(0.2, 0.2, 0.2, realized=0.85)), POLICY)
    assert (novelty_only.trigger, novelty_only.suppressed_by) == ("novelty", "no_impact")
