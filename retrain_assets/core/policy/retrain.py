"""The retrain decision: whether the history of batches since the last training calls for a new
model now, which clause fired, and what held it back. Pure: the pipeline gathers the history."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from retrain_assets.core.policy.definition import Policy


@dataclass(frozen=True)
class BatchSignal:
    """What monitoring said about one batch, scored against `champion_version`."""

    partition: str
    champion_version: str
    dataset_drifted: bool
    drift_share: float
    estimated_roc_auc: float = float("nan")
    realized_roc_auc: float = float("nan")
    n_labeled: int = 0


@dataclass(frozen=True)
class PolicyHistory:
    """Everything the retrain decision reads, gathered by the pipeline (no I/O in the policy).

    `last_trained_through` is the newest partition of the last training window (None: never
    trained); `past_triggers` lists (partition, trigger) of earlier retrain decisions, oldest first;
    `trial_version` is the challenger on live trial (canary or shadow), if any.
    """

    labeled_partitions: list[str]
    signals: list[BatchSignal] = field(default_factory=list)
    champion_version: str | None = None
    champion_holdout_roc_auc: float | None = None
    last_trained_through: str | None = None
    new_labeled_rows: int = 0
    past_triggers: list[tuple[str, str]] = field(default_factory=list)
    trial_version: str | None = None


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain now, why (in words a person reads in the UI), and the numbers."""

    retrain: bool
    reason: str
    trigger: str = "none"          # first_model | performance | drift | freshness | none
    suppressed_by: str = ""        # hysteresis | awaiting_drift_labels | trial_running | min_new_labels | cooldown | budget | ""
    numbers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DriftClause:
    """The k-of-n drift clause on one champion's batches: `drifted_batches` of the last
    `window_batches` (at most `policy.drift_window_batches`) had dataset drift, and the clause
    `holds` when that is at least `policy.drift_min_batches`. Hysteresis and the wait for the
    drifted batches' labels are guards `decide_retrain` applies on top."""

    drifted_batches: int
    window_batches: int
    holds: bool


def drift_clause(dataset_drifted: Sequence[bool], policy: Policy) -> DriftClause:
    """The drift clause over the dataset-drift verdicts of the batches scored against the current
    champion, oldest first (the retrain decision and the `drift_report` check both ask it)."""
    recent = dataset_drifted[-policy.drift_window_batches:]
    drifted = sum(bool(verdict) for verdict in recent)
    return DriftClause(drifted, len(recent), drifted >= policy.drift_min_batches)


def decide_retrain(history: PolicyHistory, policy: Policy) -> RetrainDecision:
    """Apply the retrain policy to the pipeline's history. Clauses, in order:

    first model -> performance -> drift (k of n, with hysteresis) -> freshness; a firing clause is
    then subject to the guards: no live trial running (one rollout at a time: a new challenger
    would be judged against a champion whose successor is still on trial), minimum new labels,
    cooldown, budget.
    """
    labeled = sorted(set(history.labeled_partitions))
    if history.last_trained_through is None:
        if len(labeled) >= policy.min_partitions_first_model:
            return RetrainDecision(True, f"first model: {len(labeled)} labeled partitions (need {policy.min_partitions_first_model})",
                                   "first_model", numbers={"labeled_partitions": len(labeled)})
        return RetrainDecision(False, f"waiting for labels: {len(labeled)}/{policy.min_partitions_first_model} partitions labeled",
                               numbers={"labeled_partitions": len(labeled)})

    signals = [s for s in history.signals if s.champion_version == history.champion_version]
    drift = drift_clause([s.dataset_drifted for s in signals], policy)
    age = sum(p > history.last_trained_through for p in labeled)
    realized = _recent_mean([s.realized_roc_auc for s in signals], policy.drift_window_batches)
    estimated = _recent_mean([s.estimated_roc_auc for s in signals], policy.drift_window_batches)
    performance, source = (realized, "realized") if not math.isnan(realized) else (estimated, "estimated")
    baseline = history.champion_holdout_roc_auc
    numbers = {"drifted_batches": drift.drifted_batches, "window_batches": drift.window_batches, "model_age_partitions": age,
               "realized_roc_auc": realized, "estimated_roc_auc": estimated,
               "baseline_roc_auc": baseline if baseline is not None else float("nan"),
               "new_labeled_rows": history.new_labeled_rows}

    fired: list[tuple[str, str]] = []
    if not math.isnan(performance):
        if performance < policy.min_roc_auc:
            fired.append(("performance", f"{source} ROC AUC {performance:.3f} below the SLO {policy.min_roc_auc:.3f}"))
        elif baseline is not None and performance < baseline - policy.max_roc_auc_drop:
            fired.append(("performance", f"{source} ROC AUC {performance:.3f} dropped more than {policy.max_roc_auc_drop:.2f} "
                                         f"below the champion's {baseline:.3f}"))
    held: tuple[str, str] | None = None
    drifted_labeled = sum(s.n_labeled for s in signals if s.dataset_drifted)
    numbers["drifted_labeled_rows"] = drifted_labeled
    in_window = f"{drift.drifted_batches}/{drift.window_batches}"
    if drift.holds:
        if _drift_disarmed(history, signals, policy):
            held = ("hysteresis", f"drift in {in_window} batches, but the alarm is not re-armed since the last "
                                  f"drift retrain (needs a batch with drift share < {policy.drift_rearm_share})")
        elif drifted_labeled < policy.min_new_labeled_rows:
            # Retraining before the drifted batches are labeled would train on the old regime only.
            held = ("awaiting_drift_labels", f"drift in {in_window} batches; waiting for labels of the drifted "
                                             f"batches ({drifted_labeled}/{policy.min_new_labeled_rows} rows)")
        else:
            fired.append(("drift", f"dataset drift in {drift.drifted_batches} of the last {drift.window_batches} batches "
                                   f"({drifted_labeled} labeled rows from drifted batches)"))
    if age >= policy.max_model_age_partitions:
        fired.append(("freshness", f"model is stale: {age} partitions labeled after {history.last_trained_through}"))
    if not fired and held:
        return RetrainDecision(False, held[1], "drift", held[0], numbers)
    if not fired:
        return RetrainDecision(False, f"healthy: drift in {in_window} batches, {source} ROC AUC "
                                      f"{performance:.3f}, {age}/{policy.max_model_age_partitions} new labeled partitions", numbers=numbers)

    trigger, why = fired[0][0], "; ".join(text for _, text in fired)
    if history.trial_version:
        return RetrainDecision(False, f"{why} — but v{history.trial_version} is on live trial; one rollout at a time",
                               trigger, "trial_running", numbers)
    if history.new_labeled_rows < policy.min_new_labeled_rows:
        return RetrainDecision(False, f"{why} — but only {history.new_labeled_rows} new labeled rows "
                                      f"(need {policy.min_new_labeled_rows})", trigger, "min_new_labels", numbers)
    known = sorted(set(labeled) | {s.partition for s in history.signals})
    if history.past_triggers:
        since = sum(p > history.past_triggers[-1][0] for p in known)
        if since < policy.cooldown_partitions:
            return RetrainDecision(False, f"{why} — but in cooldown: {since}/{policy.cooldown_partitions} batches since the last retrain",
                                   trigger, "cooldown", numbers)
        window_start = known[-policy.budget_window_partitions] if len(known) >= policy.budget_window_partitions else ""
        used = sum(p >= window_start for p, _ in history.past_triggers)
        if used >= policy.max_retrains_per_window:
            return RetrainDecision(False, f"{why} — but the budget is spent: {used} retrains in the last "
                                          f"{policy.budget_window_partitions} batches", trigger, "budget", numbers)
    return RetrainDecision(True, why, trigger, numbers=numbers)


def _recent_mean(values: list[float], n: int) -> float:
    present = [v for v in values if not math.isnan(v)][-n:]
    return sum(present) / len(present) if present else float("nan")


def _drift_disarmed(history: PolicyHistory, signals: list[BatchSignal], policy: Policy) -> bool:
    """After a drift-triggered retrain the drift clause stays quiet until a calm batch re-arms it."""
    drift_triggers = [p for p, trigger in history.past_triggers if trigger == "drift"]
    if not drift_triggers or (history.past_triggers and history.past_triggers[-1][1] != "drift"):
        return False
    after = [s for s in history.signals if s.partition > drift_triggers[-1]]
    return not any(s.drift_share < policy.drift_rearm_share for s in after)
