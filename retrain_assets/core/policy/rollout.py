"""The rollout state machine: the step `deployed_model` takes next. Pure: the asset reads the facts
(registry aliases, deployment history, evaluations, the newest final canary verdict, an operator's
command), calls `next_steps` and applies the transitions it returns, in order.

A state is the registry's aliases (a champion, at most one challenger on live trial as canary or
shadow, `previous`); the events are a newly evaluated challenger, a final canary verdict
(`core.deployment.rollout.analyse_canary`), an operator's `approve` or `rollback`, and a registry
that moved without a history row. docs/serving.md has the table of transitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import pandas as pd

from retrain_assets.core.deployment.rollout import PROMOTE, DeploymentState
from retrain_assets.core.policy.definition import RolloutPolicy

COMMANDS = ("rollback", "approve")
APPROVED_BY_TAG = "approved_by"
# Deployment-history actions that are not a rollout step of their candidate.
NOT_ROLLOUT_STEPS = ("awaiting_approval", "approve")
LIVE_COLUMNS = ("live_roc_auc_difference", "live_roc_auc_difference_lower", "live_roc_auc_difference_upper")
# The task-neutral differences on the primary metric (`core.policy.performance`), carried into the
# history when the evaluation (offline) or the canary analysis (live) has them.
OFFLINE_PERFORMANCE_COLUMNS = ("performance_difference", "performance_difference_lower", "performance_difference_upper")
LIVE_PERFORMANCE_COLUMNS = tuple(f"live_{name}" for name in OFFLINE_PERFORMANCE_COLUMNS)


class CommandRefused(ValueError):
    """An operator's command that cannot be carried out; the message says why. Nothing was changed."""


@dataclass(frozen=True)
class Command:
    """An operator's command: `rollback`, or `approve` of `version`, with who (`actor`) and why
    (`reason`); an empty `name` lets the pipeline take its own steps."""

    name: str = ""
    version: str = ""
    actor: str = ""
    reason: str = ""


@dataclass(frozen=True)
class RolloutFacts:
    """What the deployment step knows before it decides.

    `history` is `deployed_model`, `evaluations` is `evaluation_report`, `verdict` the newest final
    (promote or roll back) `canary_analysis` row about the version on trial, applied or not,
    `approved` whether the newest evaluated challenger carries an approval tag, `newest_partition`
    the newest delivered data partition (a trial's clock starts after it), `now` the approval time.
    """

    state: DeploymentState
    history: pd.DataFrame
    evaluations: pd.DataFrame
    verdict: Mapping[str, Any] | None = None
    approved: bool = False
    newest_partition: str = ""
    command: Command = Command()
    now: pd.Timestamp | None = None


@dataclass(frozen=True)
class Transition:
    """One step: a history row (`action`, `candidate`, `reason`, `decided_by`, `analysis_id` and
    the further columns in `details`) and the registry moves that make it true, in order. A move is
    ("promote", version): it becomes champion, the old one `previous`; ("end_trial",): the canary or
    shadow stops; ("start_trial", version, mode, canary_share, started): it goes on live trial, its
    clock starting after partition `started`; ("rollback_to_previous",): `previous` is champion
    again; ("tag_version", version, tags). Action `none` records nothing."""

    action: str
    candidate: str
    reason: str
    moves: tuple[tuple, ...] = ()
    decided_by: str = "pipeline"
    analysis_id: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


def next_steps(facts: RolloutFacts, rollout: RolloutPolicy) -> tuple[Transition, ...]:
    """The transitions this run makes, in order; the last is what it ends with.

    First a `reconciled` row when the registry moved without a history row (a run stopped between
    moving an alias and recording it), then the operator's command (`manual_rollback` ends the run;
    `approve` is recorded and the run goes on), then the newest final canary verdict not applied yet
    (`<mode>_promote`, `<mode>_rollback`, or `<mode>_early_stop` for a rollback by the sequential early
    stop), else the newest evaluated challenger: nothing, or
    `awaiting_approval`, `initial`/`promote` (direct) or `<mode>_start`. Raises `CommandRefused`.
    """
    state, command = facts.state, facts.command
    earlier: list[Transition] = []
    drift = registry_drift(facts.history, state)
    if drift:
        earlier.append(Transition("reconciled", state.champion or "",
                                  f"the registry changed without a history row (an interrupted run?): {drift}"))
    if command.name not in ("", *COMMANDS):
        raise CommandRefused(f"unknown deployment command {command.name!r}; the commands are {', '.join(COMMANDS)}")
    if command.name and (not command.actor or not command.reason):
        raise CommandRefused(f"'{command.name}' needs an actor and a reason (both are recorded)")
    if command.name == "rollback":
        return (*earlier, _manual_rollback(state, command))
    if command.name == "approve":
        earlier.append(_approve(facts))
    verdict = pending_verdict(facts.history, state, facts.verdict)
    if verdict is not None:
        return (*earlier, _verdict_step(verdict))
    step = _step_for_newest_evaluation(facts, rollout)
    if step.action == "none" and earlier:  # an approval or a reconciliation is recorded even when nothing else happens
        return (*earlier[:-1], replace(earlier[-1], reason=f"{earlier[-1].reason} ({step.reason})"))
    return (*earlier, step)


def _manual_rollback(state: DeploymentState, command: Command) -> Transition:
    """`previous` becomes champion again and any trial ends; refused without a `previous`."""
    if state.previous is None or state.champion is None:
        raise CommandRefused("no previous version to roll back to: the registry has no 'previous' alias "
                             f"(champion: {state.champion or 'none'})")
    tags = {"rolled_back_by": command.actor, "rollback_reason": command.reason[:250]}
    return Transition("manual_rollback", state.previous, f"v{state.champion} -> v{state.previous}: {command.reason}",
                      (("rollback_to_previous",), ("tag_version", state.champion, tags)), decided_by=command.actor)


def _approve(facts: RolloutFacts) -> Transition:
    """Record the approver on the version this run then rolls out, or refuse with why
    (`approval_refusal`): nothing is recorded for an approval that would change nothing."""
    command = facts.command
    version = command.version.strip()
    refusal = approval_refusal(version, facts.evaluations, facts.history, facts.state)
    if refusal:
        raise CommandRefused(refusal)
    now = facts.now if facts.now is not None else pd.Timestamp.now(tz="UTC")
    tags = {APPROVED_BY_TAG: command.actor, "approved_at": now.isoformat(), "approval_reason": command.reason[:250]}
    # The row names the version as given, the tag the stripped one (as the command always did).
    return Transition("approve", command.version, f"approved by {command.actor}: {command.reason}",
                      (("tag_version", version, tags),), decided_by=command.actor)


def _verdict_step(verdict: Mapping[str, Any]) -> Transition:
    """Apply a final canary verdict: promote the version on trial, or end its trial."""
    trial, mode, reason = str(verdict["trial_version"]), str(verdict["mode"]), str(verdict["reason"])
    live = {k: float(verdict[k]) for k in LIVE_COLUMNS}
    live.update({k: float(verdict[k]) for k in LIVE_PERFORMANCE_COLUMNS if k in verdict})
    if verdict["decision"] == PROMOTE:
        moves = (("promote", trial), ("end_trial",), ("tag_version", trial, {"rollout": "promoted"}))
        return Transition(f"{mode}_promote", trial, reason, moves, analysis_id=str(verdict["analysis_id"]), details=live)
    moves = (("end_trial",), ("tag_version", trial, {"rollout": "rolled_back", "rollback_reason": reason[:250]}))
    # A rollback before the evidence was complete (`analyse_canary`'s sequential early stop) is named apart.
    stopped = float(json.loads(str(verdict.get("numbers_json") or "{}")).get("early_stop", 0.0)) == 1.0
    return Transition(f"{mode}_early_stop" if stopped else f"{mode}_rollback", trial, reason, moves,
                      analysis_id=str(verdict["analysis_id"]), details=live)


def _step_for_newest_evaluation(facts: RolloutFacts, rollout: RolloutPolicy) -> Transition:
    """What the newest evaluated challenger calls for: nothing, a wait for approval, a direct
    promotion (always for the first model) or the start of its live trial (replacing any trial)."""
    state, history = facts.state, facts.history
    evaluation = newest_evaluation(facts.evaluations)
    version, gate_passed = str(evaluation["challenger_version"]), bool(evaluation["gate_passed"])
    handled = handled_versions(history)
    approved = facts.approved or (facts.command.name == "approve" and facts.command.version.strip() == version)
    waiting = rollout.approval == "required" and gate_passed and not approved
    if not gate_passed or version in handled or version == state.champion or (waiting and awaits_approval(history, version)):
        return Transition("none", "", "nothing to do: " + (
            "the newest challenger did not pass the gate" if not gate_passed
            else f"v{version} awaits approval" if waiting and version not in handled else f"v{version} was already handled"))
    offline = {"beat_version": str(evaluation["champion_version"]), "roc_auc_difference": float(evaluation["diff_roc_auc"]),
               "roc_auc_difference_lower": float(evaluation["diff_roc_auc_lower"]),
               "roc_auc_difference_upper": float(evaluation["diff_roc_auc_upper"]),
               **{k: float(evaluation[k]) for k in OFFLINE_PERFORMANCE_COLUMNS if k in evaluation.index}}
    if waiting:
        return Transition("awaiting_approval", version, f"passed the offline gate ({evaluation['gate_summary']}); "
                          f"policy.rollout.approval is 'required': run `retrain-assets approve {version} --by <you> "
                          "--why <reason>`", (("tag_version", version, {"rollout": "awaiting_approval"}),), details=offline)
    superseded = state.challenger
    supersede = (("tag_version", superseded, {"rollout": f"superseded by v{version}"}),) if superseded else ()
    if state.champion is None or rollout.mode == "direct":
        return Transition("initial" if state.champion is None else "promote", version, str(evaluation["gate_summary"]),
                          (*supersede, ("end_trial",), ("promote", version)), details=offline)
    started = facts.newest_partition
    why = f"passed the offline gate ({evaluation['gate_summary']}); on live trial as {rollout.mode}"
    if rollout.mode == "canary":
        why += f" for {rollout.canary_share:.0%} of entities"
    if started:
        why += f", decided within {rollout.max_live_partitions} partitions after {started}"
    if superseded:
        why += f"; replaces the trial of v{superseded}"
    return Transition(f"{rollout.mode}_start", version, why,
                      (*supersede, ("start_trial", version, rollout.mode, rollout.canary_share, started)), details=offline)


def registry_drift(history: pd.DataFrame, state: DeploymentState) -> str:
    """How the registry's aliases differ from the newest history row ('' when they agree)."""
    if history.empty or "champion_version" not in history:
        return ""
    last = history.sort_values("deployed_at").iloc[-1]
    recorded = {"champion": last["champion_version"], "canary": last["canary_version"], "shadow": last["shadow_version"]}
    actual = {"champion": state.champion, "canary": state.canary, "shadow": state.shadow}
    return ", ".join(f"{role} recorded v{recorded[role] or 'none'}, registry v{actual[role] or 'none'}"
                     for role in recorded if str(recorded[role] or "") != str(actual[role] or ""))


def pending_verdict(history: pd.DataFrame, state: DeploymentState,
                    verdict: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """`verdict` (the newest final canary verdict about the version on trial) unless the history
    already applied it, or no version is on trial."""
    if state.challenger is None or verdict is None:
        return None
    applied = set(history["analysis_id"].astype(str)) if "analysis_id" in history else set()
    return None if str(verdict["analysis_id"]) in applied else verdict


def awaits_approval(history: pd.DataFrame, version: str) -> bool:
    """Whether the history already says `version` waits for an approval."""
    return "candidate_version" in history and bool(
        ((history["action"] == "awaiting_approval") & (history["candidate_version"].astype(str) == version)).any())


def handled_versions(history: pd.DataFrame) -> set[str]:
    """Versions a rollout step has already acted on (waiting for, or receiving, an approval is not one)."""
    if "candidate_version" not in history:
        return set()
    return set(history.loc[~history["action"].isin(NOT_ROLLOUT_STEPS), "candidate_version"].astype(str))


def newest_evaluation(evaluations: pd.DataFrame) -> pd.Series:
    """The newest row of `evaluation_report`: the only challenger that can roll out."""
    return evaluations.sort_values("evaluated_at").iloc[-1]


def approval_refusal(version: str, evaluations: pd.DataFrame, history: pd.DataFrame, state: DeploymentState) -> str | None:
    """Why approving `version` cannot roll it out, or None when it can.

    The deployment step acts on the newest evaluation only, so an approval is refused for a version
    without a passing evaluation, one already serving, one whose rollout already happened (a
    version rolls out once), and one superseded by a newer evaluated challenger (named, with what
    to do instead). `evaluations` is `evaluation_report`, `history` is `deployed_model`.
    """
    rows = evaluations[evaluations["challenger_version"].astype(str) == version] if version else evaluations.iloc[:0]
    if rows.empty:
        return f"cannot approve v{version or '?'}: no evaluation of it; approve a version listed in evaluation_report"
    own = newest_evaluation(rows)
    if not bool(own["gate_passed"]):
        return f"cannot approve v{version}: it failed the promotion gate ({own['gate_summary']})"
    if version in (state.champion, state.challenger):
        return f"v{version} is already {'champion' if version == state.champion else 'on live trial'}"
    handled = handled_versions(history)
    if version in handled:
        steps = history[(history["candidate_version"].astype(str) == version) & ~history["action"].isin(NOT_ROLLOUT_STEPS)]
        step = steps.sort_values("deployed_at").iloc[-1]
        return (f"cannot approve v{version}: its rollout already happened ({step['action']} at "
                f"{pd.Timestamp(step['deployed_at']):%Y-%m-%d %H:%M} UTC); a version rolls out once")
    newest = newest_evaluation(evaluations)
    new = str(newest["challenger_version"])
    if new == version:
        return None
    if not bool(newest["gate_passed"]):
        instead = f"v{new} failed the promotion gate, so nothing rolls out until a newer challenger passes it"
    elif new in handled or new in (state.champion, state.challenger):
        instead = f"v{new} has had its rollout; nothing waits for an approval"
    else:
        instead = f"approve v{new} instead (`retrain-assets approve {new}`), or leave it unapproved and wait for the next retrain"
    return (f"cannot approve v{version}: it is superseded by v{new} (evaluated {pd.Timestamp(newest['evaluated_at']):%Y-%m-%d %H:%M} "
            f"UTC), and only the newest evaluated challenger can roll out: {instead}")
