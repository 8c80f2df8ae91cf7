"""The rollout state machine (`core.policy.rollout.next_steps`): every transition, pure, no Dagster."""

import pandas as pd
import pytest

from retrain_assets.core.deployment.rollout import DeploymentState
from retrain_assets.core.policy.definition import RolloutPolicy
from retrain_assets.core.policy.rollout import (Command, CommandRefused, RolloutFacts, Transition, next_steps,
                                                pending_verdict, registry_drift)

NOW = pd.Timestamp("2025-03-01 12:00", tz="UTC")
CANARY, SHADOW, DIRECT = RolloutPolicy(), RolloutPolicy(mode="shadow"), RolloutPolicy(mode="direct")
REQUIRED = RolloutPolicy(approval="required")


def evaluations(*rows) -> pd.DataFrame:
    """evaluation_report rows: (challenger, champion, day, gate passed)."""
    return pd.DataFrame([{"evaluated_at": pd.Timestamp("2025-01-01") + pd.Timedelta(days=day), "challenger_version": v,
                          "champion_version": champion, "gate_passed": passed, "gate_summary": f"gate of v{v}",
                          "diff_roc_auc": 0.02, "diff_roc_auc_lower": 0.01, "diff_roc_auc_upper": 0.03}
                         for v, champion, day, passed in rows])


def history(*rows) -> pd.DataFrame:
    """deployed_model rows: (action, candidate, champion, canary, shadow, analysis id), one a day."""
    return pd.DataFrame([{"deployed_at": pd.Timestamp("2025-01-01") + pd.Timedelta(days=i), "action": action,
                          "candidate_version": candidate, "champion_version": champion, "canary_version": canary,
                          "shadow_version": shadow, "analysis_id": analysis}
                         for i, (action, candidate, champion, canary, shadow, analysis) in enumerate(rows)])


def offline(beat: str) -> dict:
    return {"beat_version": beat, "roc_auc_difference": 0.02, "roc_auc_difference_lower": 0.01,
            "roc_auc_difference_upper": 0.03}


def verdict(decision: str, version: str = "2", mode: str = "canary", analysis_id: str = "a-1") -> dict:
    return {"analysis_id": analysis_id, "trial_version": version, "mode": mode, "decision": decision,
            "reason": f"live says {decision}", "live_roc_auc_difference": 0.01, "live_roc_auc_difference_lower": -0.005,
            "live_roc_auc_difference_upper": 0.025}


ONE_CHAMPION = history(("initial", "1", "1", "", "", ""))
V2_PASSED = evaluations(("1", "", 0, True), ("2", "1", 3, True))
ON_CANARY = history(("initial", "1", "1", "", "", ""), ("canary_start", "2", "1", "2", "", ""))


def steps(state, past, evaluated, rollout=CANARY, **facts):
    return next_steps(RolloutFacts(state, past, evaluated, newest_partition="2025-01-05", now=NOW, **facts), rollout)


def test_the_first_model_becomes_champion_at_once_even_under_canary():
    assert steps(DeploymentState(champion=None), pd.DataFrame(), evaluations(("1", "", 0, True))) == (
        Transition("initial", "1", "gate of v1", (("end_trial",), ("promote", "1")), details=offline("")),)


def test_a_first_model_that_failed_the_gate_changes_nothing():
    (step,) = steps(DeploymentState(champion=None), pd.DataFrame(), evaluations(("1", "", 0, False)))
    assert step == Transition("none", "", "nothing to do: the newest challenger did not pass the gate")


def test_direct_mode_promotes_the_challenger_and_ends_a_superseded_trial():
    assert steps(DeploymentState(champion="1", previous=None), ONE_CHAMPION, V2_PASSED, DIRECT) == (
        Transition("promote", "2", "gate of v2", (("end_trial",), ("promote", "2")), details=offline("1")),)
    (step,) = steps(DeploymentState(champion="1", canary="2", canary_share=0.2), ON_CANARY,
                    evaluations(("2", "1", 3, True), ("3", "1", 4, True)), DIRECT)
    assert step.moves == (("tag_version", "2", {"rollout": "superseded by v3"}), ("end_trial",), ("promote", "3"))


@pytest.mark.parametrize("rollout, action, share_words", [(CANARY, "canary_start", " for 20% of entities"),
                                                          (SHADOW, "shadow_start", "")])
def test_a_challenger_that_passed_the_gate_starts_its_live_trial(rollout, action, share_words):
    (step,) = steps(DeploymentState(champion="1"), ONE_CHAMPION, V2_PASSED, rollout)
    assert step == Transition(action, "2", f"passed the offline gate (gate of v2); on live trial as {rollout.mode}"
                                           f"{share_words}, decided within 7 partitions after 2025-01-05",
                              (("start_trial", "2", rollout.mode, 0.2, "2025-01-05"),), details=offline("1"))


def test_a_newer_challenger_replaces_the_running_trial():
    (step,) = steps(DeploymentState(champion="1", canary="2", canary_share=0.2), ON_CANARY,
                    evaluations(("2", "1", 3, True), ("3", "1", 4, True)))
    assert step.action == "canary_start" and step.reason.endswith("; replaces the trial of v2")
    assert step.moves == (("tag_version", "2", {"rollout": "superseded by v3"}),
                          ("start_trial", "3", "canary", 0.2, "2025-01-05"))


def test_a_promote_verdict_makes_the_trial_version_champion():
    (step,) = steps(DeploymentState(champion="1", canary="2", canary_share=0.2), ON_CANARY, V2_PASSED,
                    verdict=verdict("promote"))
    assert step == Transition("canary_promote", "2", "live says promote",
                              (("promote", "2"), ("end_trial",), ("tag_version", "2", {"rollout": "promoted"})),
                              analysis_id="a-1", details={"live_roc_auc_difference": 0.01,
                                                          "live_roc_auc_difference_lower": -0.005,
                                                          "live_roc_auc_difference_upper": 0.025})


def test_a_rollback_verdict_ends_the_trial_and_keeps_the_champion():
    on_shadow = history(("initial", "1", "1", "", "", ""), ("shadow_start", "2", "1", "", "2", ""))
    (step,) = steps(DeploymentState(champion="1", shadow="2"), on_shadow, V2_PASSED,
                    verdict=verdict("rollback", mode="shadow", analysis_id="a-7"))
    assert (step.action, step.candidate, step.analysis_id) == ("shadow_rollback", "2", "a-7")
    assert step.moves == (("end_trial",), ("tag_version", "2", {"rollout": "rolled_back",
                                                                "rollback_reason": "live says rollback"}))


def test_an_early_stop_verdict_is_recorded_as_its_own_action():
    early = {**verdict("rollback"), "numbers_json": '{"live_rows": 120.0, "early_stop": 1.0}'}
    (step,) = steps(DeploymentState(champion="1", canary="2", canary_share=0.2), ON_CANARY, V2_PASSED, verdict=early)
    assert (step.action, step.candidate, step.moves[0]) == ("canary_early_stop", "2", ("end_trial",))
    plain = {**verdict("rollback"), "numbers_json": '{"live_rows": 400.0}'}
    assert steps(DeploymentState(champion="1", canary="2", canary_share=0.2), ON_CANARY, V2_PASSED,
                 verdict=plain)[0].action == "canary_rollback"


def test_a_verdict_is_applied_once_and_only_while_its_version_is_on_trial():
    state = DeploymentState(champion="1", canary="2", canary_share=0.2)
    applied = history(("initial", "1", "1", "", "", ""), ("canary_start", "2", "1", "2", "", ""),
                      ("canary_rollback", "2", "1", "2", "", "a-1"))
    assert pending_verdict(applied, state, verdict("rollback")) is None
    assert pending_verdict(ON_CANARY, DeploymentState(champion="1"), verdict("rollback")) is None
    assert pending_verdict(ON_CANARY, state, verdict("rollback")) == verdict("rollback")
    (step,) = steps(state, ON_CANARY, V2_PASSED)  # no verdict yet: the trial runs on
    assert step == Transition("none", "", "nothing to do: v2 was already handled")


def test_under_required_approval_a_challenger_waits_once():
    (step,) = steps(DeploymentState(champion="1"), ONE_CHAMPION, V2_PASSED, REQUIRED)
    assert step.action == "awaiting_approval" and step.details == offline("1")
    assert "run `retrain-assets approve 2 --by <you> --why <reason>`" in step.reason
    assert step.moves == (("tag_version", "2", {"rollout": "awaiting_approval"}),)
    waiting = history(("initial", "1", "1", "", "", ""), ("awaiting_approval", "2", "1", "", "", ""))
    assert steps(DeploymentState(champion="1"), waiting, V2_PASSED, REQUIRED) == (
        Transition("none", "", "nothing to do: v2 awaits approval"),)
    # The first model waits too; an approval tag read from the registry lets it through.
    assert steps(DeploymentState(champion=None), pd.DataFrame(), evaluations(("1", "", 0, True)), REQUIRED)[0].action \
        == "awaiting_approval"
    assert steps(DeploymentState(champion="1"), waiting, V2_PASSED, REQUIRED, approved=True)[0].action == "canary_start"


def test_an_approval_is_recorded_and_the_approved_version_rolls_out_in_the_same_run():
    waiting = history(("initial", "1", "1", "", "", ""), ("awaiting_approval", "2", "1", "", "", ""))
    approve, start = steps(DeploymentState(champion="1"), waiting, V2_PASSED, REQUIRED,
                           command=Command("approve", " 2", "ana", "reviewed the report"))
    assert approve == Transition("approve", " 2", "approved by ana: reviewed the report",
                                 (("tag_version", "2", {"approved_by": "ana", "approved_at": NOW.isoformat(),
                                                        "approval_reason": "reviewed the report"}),), decided_by="ana")
    assert (start.action, start.candidate, start.decided_by) == ("canary_start", "2", "pipeline")


def test_an_approval_that_cannot_roll_out_is_refused():
    newer = evaluations(("1", "", 0, True), ("2", "1", 3, True), ("3", "1", 4, True))
    with pytest.raises(CommandRefused, match=r"superseded by v3 .*approve v3 instead"):
        steps(DeploymentState(champion="1"), ONE_CHAMPION, newer, REQUIRED, command=Command("approve", "2", "ana", "why not"))
    with pytest.raises(CommandRefused, match="v1 is already champion"):
        steps(DeploymentState(champion="1"), ONE_CHAMPION, newer, REQUIRED, command=Command("approve", "1", "ana", "why not"))


def test_a_manual_rollback_restores_previous_and_records_who_and_why():
    state = DeploymentState(champion="2", previous="1", canary="3", canary_share=0.2)
    past = history(("initial", "1", "1", "", "", ""), ("promote", "2", "2", "", "", ""),
                   ("canary_start", "3", "2", "3", "", ""))
    assert steps(state, past, V2_PASSED, command=Command("rollback", "", "bob", "declines doubled")) == (
        Transition("manual_rollback", "1", "v2 -> v1: declines doubled",
                   (("rollback_to_previous",), ("tag_version", "2", {"rolled_back_by": "bob",
                                                                     "rollback_reason": "declines doubled"})),
                   decided_by="bob"),)


@pytest.mark.parametrize("state, command, message", [
    (DeploymentState(champion="1"), Command("rollback", "", "bob", "why"), "no previous version to roll back to"),
    (DeploymentState(champion=None, previous="1"), Command("rollback", "", "bob", "why"), r"\(champion: none\)"),
    (DeploymentState(champion="2", previous="1"), Command("rollback", "", "", "why"), "needs an actor and a reason"),
    (DeploymentState(champion="2", previous="1"), Command("rollback", "", "bob", ""), "needs an actor and a reason"),
    (DeploymentState(champion="2", previous="1"), Command("undo", "", "bob", "why"), "unknown deployment command 'undo'"),
])
def test_a_command_that_cannot_be_carried_out_is_refused(state, command, message):
    with pytest.raises(CommandRefused, match=message):
        steps(state, ONE_CHAMPION, V2_PASSED, command=command)


def test_a_registry_that_moved_without_a_row_is_reconciled_first():
    # A run promoted v2 and stopped before its row: the history still says v2 is on canary.
    moved = DeploymentState(champion="2", previous="1")
    assert registry_drift(ON_CANARY, moved) == "champion recorded v1, registry v2, canary recorded v2, registry vnone"
    (step,) = steps(moved, ON_CANARY, V2_PASSED)
    assert step == Transition("reconciled", "2", "the registry changed without a history row (an interrupted run?): "
                                                 "champion recorded v1, registry v2, canary recorded v2, registry vnone "
                                                 "(nothing to do: v2 was already handled)")
    reconciled, rollback = steps(moved, ON_CANARY, V2_PASSED, command=Command("rollback", "", "bob", "why"))
    assert (reconciled.action, reconciled.moves, rollback.action) == ("reconciled", (), "manual_rollback")
    assert registry_drift(ONE_CHAMPION, DeploymentState(champion="1")) == ""
