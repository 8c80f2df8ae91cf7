"""The retrain decision: whether the history of batches since the last training calls for a new
model now, which clause fired, and what held it back. Pure: the pipeline gathers the history."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.error_stream import error_stream_clause
from retrain_assets.core.policy.novelty import novelty_clause
from retrain_assets.core.policy.output_rules import output_rules_clause
from retrain_assets.core.policy.performance import PerformanceRules, performance_rules
from retrain_assets.core.policy.value import drift_impact, growth_clause, mean_with_interval
from retrain_assets.core.policy.window import CHANGE_TRIGGERS, change_window_from
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import format_metric


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
    # The primary metric's values (`drift_report.estimated_performance` / `realized_performance`);
    # NaN: the ROC AUC fields stand for them (a binary history recorded before they existed).
    estimated_performance: float = float("nan")
    realized_performance: float = float("nan")
    # The realized value's two-sided 90 % interval (NaN: none computed).
    realized_performance_low: float = float("nan")
    realized_performance_high: float = float("nan")
    # The estimate's band (`drift_report.estimated_performance_low` / `_high`; NaN: none).
    estimated_performance_low: float = float("nan")
    estimated_performance_high: float = float("nan")
    # The error stream of the batch's labelled rows (`drift_report.error_alarm` 1/0, NaN: no labels
    # or a champion profiled without held-out errors; `error_stream_shift`: their mean rise).
    error_alarm: float = float("nan")
    error_stream_shift: float = float("nan")
    # Drift per segment (`drift_report.drifted_segments` / `max_segment_drift_share`; 0 / NaN: none
    # tested); they count for the drift clause when `policy.drift.segment_drift` is on.
    drifted_segments: int = 0
    max_segment_drift_share: float = float("nan")
    # Share of the batch's rows the champion's novelty model flags (`drift_report.novelty_share`;
    # NaN: a champion profiled before novelty models existed).
    novelty_share: float = float("nan")
    # Share of rows breaking a spec output rule (`drift_report.rule_violation_share`; NaN: no rules).
    rule_violation_share: float = float("nan")


@dataclass(frozen=True)
class PolicyHistory:
    """Everything the retrain decision reads, gathered by the pipeline (no I/O in the policy).

    `last_trained_through` is the newest partition of the last training window (None: never
    trained); `past_triggers` lists (partition, trigger) of earlier retrain decisions, oldest first;
    `trial_version` is the challenger on live trial (canary or shadow), if any;
    `champion_baseline_performance` is the champion's held-out value of the primary metric at
    promotion (None: `champion_holdout_roc_auc` stands for it, as in a binary history); `target`
    names the task whose primary metric the performance clause compares (None: binary).
    The data-growth clause reads `window_labeled_rows` (the labeled rows a training would use now:
    those of the newest `training_window_partitions` labeled partitions), `champion_training_rows`
    (the rows of the champion's training window, counted alike) and `champion_learning_gain` (its
    learning curve's gain of the primary metric per doubling of rows, positive: better; None:
    unknown, the clause never holds). `window_from` is the start the last retrain's window kept
    (`core.policy.window`; "": none): `window_labeled_rows` counts no partition before it.
    """

    labeled_partitions: list[str]
    signals: list[BatchSignal] = field(default_factory=list)
    champion_version: str | None = None
    champion_holdout_roc_auc: float | None = None
    last_trained_through: str | None = None
    new_labeled_rows: int = 0
    past_triggers: list[tuple[str, str]] = field(default_factory=list)
    trial_version: str | None = None
    champion_baseline_performance: float | None = None
    target: TargetSpec | None = None
    window_labeled_rows: int = 0
    champion_training_rows: int | None = None
    champion_learning_gain: float | None = None
    window_from: str = ""


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain now, why (in words a person reads in the UI), and the numbers."""

    retrain: bool
    reason: str
    trigger: str = "none"          # first_model | performance | error_stream | drift | novelty | output_rules | data_growth | freshness | none
    # hysteresis | awaiting_drift_labels | no_impact | trial_running | min_new_labels | cooldown | budget | ""
    suppressed_by: str = ""
    numbers: dict = field(default_factory=dict)
    # The oldest partition a training may use ("": none): set anew by a retrain that evidence of
    # change fired (`core.policy.window`), else the one in force.
    window_from: str = ""


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


def decide_retrain(history: PolicyHistory, policy: Policy, target: TargetSpec | None = None) -> RetrainDecision:
    """Apply the retrain policy to the pipeline's history. Clauses, in order:

    first model -> performance -> error stream (`error_stream.error_stream_clause`) -> drift (k of
    n, with hysteresis, and by default only when it hurts: `value.drift_impact`) -> novelty (`novelty.novelty_clause`)
    -> output rules (`output_rules.output_rules_clause`) -> data growth (`value.growth_clause`) -> freshness;
    a firing clause is then subject to the guards: no live trial running (one rollout at a time: a new challenger
    would be judged against a champion whose successor is still on trial), minimum new labels,
    cooldown, budget. The performance clause compares the task's primary metric
    (`performance_rules(policy, target)`; target None: `history.target`, None: binary) in its own
    units: realized (else estimated) misses the SLO, or is worse than the champion's baseline by
    more than `drop`.
    """
    labeled = sorted(set(history.labeled_partitions))
    if history.last_trained_through is None:
        if len(labeled) >= policy.min_partitions_first_model:
            return RetrainDecision(True, f"first model: {len(labeled)} labeled partitions (need {policy.min_partitions_first_model})",
                                   "first_model", numbers={"labeled_partitions": len(labeled)})
        return RetrainDecision(False, f"waiting for labels: {len(labeled)}/{policy.min_partitions_first_model} partitions labeled",
                               numbers={"labeled_partitions": len(labeled)})

    signals = [s for s in history.signals if s.champion_version == history.champion_version]
    drift = drift_clause([_drifted(s, policy) for s in signals], policy)
    age = sum(p > history.last_trained_through for p in labeled)
    rules = performance_rules(policy, target if target is not None else history.target)
    numbers = {"drifted_batches": drift.drifted_batches, "window_batches": drift.window_batches, "model_age_partitions": age,
               **_performance_numbers(history, signals, rules, policy.drift_window_batches)}
    realized, estimated, baseline = numbers["realized_performance"], numbers["estimated_performance"], numbers["baseline_performance"]
    performance, source = (realized, "realized") if not math.isnan(realized) else (estimated, "estimated")

    recent = [r for r in map(_realized, signals) if not math.isnan(r[0])][-policy.drift_window_batches:]
    half = numbers["realized_half_width"] = mean_with_interval(recent)[1] if source == "realized" else 0.0
    fired: list[tuple[str, str]] = []
    held: list[tuple[str, tuple[str, str]]] = []  # (trigger, (guard, why)): clauses their own guard holds, in clause order
    if not math.isnan(performance):
        clause = performance_clause(rules, performance, None if math.isnan(baseline) else baseline, source, half)
        if clause:
            fired.append(("performance", clause))
    _weigh_clause("error_stream", error_stream_clause([s.error_alarm for s in signals], [s.error_stream_shift for s in signals],
                                                      policy.triggers), fired, numbers)
    _record_weighed("drift", _weigh_drift(history, signals, drift, None if math.isnan(baseline) else baseline, rules, policy,
                                          numbers), fired, held)
    _record_weighed("novelty", _weigh_novelty(signals, None if math.isnan(baseline) else baseline, rules, policy, numbers),
                    fired, held)
    _weigh_clause("output_rules", output_rules_clause([s.rule_violation_share for s in signals], policy.triggers), fired, numbers)
    growth = growth_clause(history.window_labeled_rows, history.champion_training_rows, history.champion_learning_gain,
                           None if math.isnan(baseline) else baseline, rules, policy.triggers)
    numbers.update(growth_ratio=growth.ratio, expected_gain=growth.expected_gain)
    if growth.holds:
        fired.append(("data_growth", growth.text))
    if age >= policy.max_model_age_partitions:
        fired.append(("freshness", f"model is stale: {age} partitions labeled after {history.last_trained_through}"))
    if not fired and held:
        trigger, (guard, why) = held[0]
        return RetrainDecision(False, why, trigger, guard, numbers)
    if not fired:
        return RetrainDecision(False, f"healthy: drift in {drift.drifted_batches}/{drift.window_batches} batches, {source} {rules.label} "
                                      f"{format_metric(performance, rules.metric)}, {age}/{policy.max_model_age_partitions} new labeled partitions", numbers=numbers)

    trigger, why = fired[0][0], "; ".join(text for _, text in fired)
    held_back = _guards(history, policy, labeled, trigger, why, numbers)
    if held_back is not None:
        return held_back
    window_from = history.window_from
    if trigger in CHANGE_TRIGGERS and policy.triggers.forget_on_change:
        newest = policy.triggers.change_window_partitions or policy.min_partitions_first_model
        window_from = change_window_from(labeled, newest, history.window_from)
        if window_from != history.window_from:
            why += f"; the window starts at {window_from}: older rows hold the regime the champion fails on"
    return RetrainDecision(True, why, trigger, numbers=numbers, window_from=window_from)


def _guards(history: PolicyHistory, policy: Policy, labeled: list[str], trigger: str, why: str,
            numbers: dict) -> RetrainDecision | None:
    """The decision that holds a firing clause (`trigger`, `why`) back: a live trial running, too
    few new labels, cooldown or a spent budget; None when no guard holds."""
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
    return None


def _weigh_novelty(signals: list[BatchSignal], baseline: float | None, rules: PerformanceRules, policy: Policy,
                   numbers: dict) -> tuple[str, tuple[str, str] | None]:
    """The novelty clause, weighed by its impact as drift is (`triggers.drift_needs_impact`): novel
    inputs retrain only when the champion serves its novelty window worse than at promotion
    (`value.drift_impact` on those batches); else (guard, why) holds it, as `no_impact`. The
    verdict as `_weigh_drift`'s: (why it fires, None), ("", (guard, why)) or ("", None)."""
    holds, text, values = novelty_clause([s.novelty_share for s in signals], policy.triggers)
    numbers.update(values)
    if not holds:
        return "", None
    if policy.triggers.drift_needs_impact:
        window = [s for s in signals if not math.isnan(s.novelty_share)][-policy.triggers.novelty_window_batches:]
        impact = drift_impact([_estimated(s) for s in window], [_realized(s) for s in window], baseline, rules, policy.triggers)
        if impact.hurts is not True:
            return "", ("no_impact", f"{text}, but they do not hurt the model: {impact.text}")
        text += f": {impact.text}"
    return text, None


def _weigh_clause(name: str, clause: tuple[bool, str, dict], fired: list[tuple[str, str]], numbers: dict) -> None:
    """Record a clause's (holds, why, numbers): its numbers into `numbers`, and (name, why) into `fired` when it holds."""
    holds, text, values = clause
    numbers.update(values)
    if holds:
        fired.append((name, text))


def _record_weighed(name: str, verdict: tuple[str, tuple[str, str] | None], fired: list[tuple[str, str]],
                    held: list[tuple[str, tuple[str, str]]]) -> None:
    """Record a weighed clause's verdict (why it fires, (guard, why) when a guard of its own holds
    it): (name, why) into `fired`, or (name, (guard, why)) into `held`."""
    text, holding = verdict
    if text:
        fired.append((name, text))
    if holding:
        held.append((name, holding))


def _weigh_drift(history: PolicyHistory, signals: list[BatchSignal], drift: DriftClause, baseline: float | None,
                 rules: PerformanceRules, policy: Policy, numbers: dict) -> tuple[str, tuple[str, str] | None]:
    """The drift clause's verdict once k of n batches drifted: (why it fires, "") or ("", (guard,
    why it holds)): hysteresis, no impact (by default drift must hurt: `value.drift_impact`),
    labels of the drifted batches still missing. Adds its numbers to `numbers`."""
    drifted = [s for s in signals[-policy.drift_window_batches:] if _drifted(s, policy)]
    drifted_labeled = sum(s.n_labeled for s in signals if _drifted(s, policy))
    numbers["drifted_labeled_rows"] = drifted_labeled
    if not drift.holds:
        return "", None
    in_window = f"{drift.drifted_batches}/{drift.window_batches}"
    impact = drift_impact([_estimated(s) for s in drifted], [_realized(s) for s in drifted], baseline, rules, policy.triggers)
    numbers["drift_impact"] = impact.worse_by
    weigh = policy.triggers.drift_needs_impact
    if _drift_disarmed(history, signals, policy):
        return "", ("hysteresis", f"drift in {in_window} batches, but the alarm is not re-armed since the last "
                                  f"drift retrain (needs a batch with drift share < {policy.drift_rearm_share})")
    if weigh and impact.hurts is False:
        return "", ("no_impact", f"drift in {in_window} batches, but it does not hurt the model: {impact.text}")
    if drifted_labeled < policy.min_new_labeled_rows:
        # Retraining before the drifted batches are labeled would train on the old regime only.
        return "", ("awaiting_drift_labels", f"drift in {in_window} batches; waiting for labels of the drifted "
                                             f"batches ({drifted_labeled}/{policy.min_new_labeled_rows} rows)")
    if weigh and impact.hurts is None:
        return "", ("no_impact", f"drift in {in_window} batches, but its impact is unknown: {impact.text}")
    return (f"dataset drift in {drift.drifted_batches} of the last {drift.window_batches} batches ({drifted_labeled} labeled "
            f"rows from drifted batches)" + (f": {impact.text}" if weigh else "")), None


def _performance_numbers(history: PolicyHistory, signals: list[BatchSignal], rules: PerformanceRules, window: int) -> dict:
    """The recent realized and estimated values (means over the newest `window` batches that have
    one) and the baseline, of the primary metric and, for binary's columns, of ROC AUC. The
    baseline is the champion's held-out value at promotion (NaN when unknown); a history without
    `champion_baseline_performance` falls back on `champion_holdout_roc_auc` when the metric is ROC AUC."""
    baseline = history.champion_baseline_performance
    if (baseline is None or math.isnan(baseline)) and rules.metric == "roc_auc":
        baseline = history.champion_holdout_roc_auc
    nan = float("nan")
    return {"realized_roc_auc": _recent_mean([s.realized_roc_auc for s in signals], window),
            "estimated_roc_auc": _recent_mean([s.estimated_roc_auc for s in signals], window),
            "baseline_roc_auc": history.champion_holdout_roc_auc if history.champion_holdout_roc_auc is not None else nan,
            "new_labeled_rows": history.new_labeled_rows,
            "realized_performance": _recent_mean([_performance(s.realized_performance, s.realized_roc_auc) for s in signals], window),
            "estimated_performance": _recent_mean([_performance(s.estimated_performance, s.estimated_roc_auc) for s in signals],
                                                  window),
            "baseline_performance": baseline if baseline is not None else nan}


def performance_clause(rules: PerformanceRules, performance: float, baseline: float | None, source: str,
                       half_width: float = 0.0) -> str:
    """Why the performance clause holds for `performance` (the `source` "realized" or "estimated"
    value of the primary metric) against the champion's `baseline` at promotion; "" when it does not.

    It holds when the value misses the SLO, or is worse than the baseline by more than
    `rules.drop(baseline)`: for binary ROC AUC exactly `value < min_roc_auc` and
    `value < baseline - max_roc_auc_drop` (the limit is formed first, so the numbers decide as they always did).
    A realized value with an interval (`half_width` > 0: the half width of the recent batches'
    combined 90 % interval) must also be clear of the SLO, or of the baseline, by more than that
    half width: a few small batches' noise is not evidence that the model got worse.
    """
    words = f"{source} {rules.label} {format_metric(performance, rules.metric)}" + (f" ±{half_width:.3g}" if half_width else "")
    if not rules.meets_slo(performance) and rules.worse_by(performance, rules.slo) > half_width:
        side = "below" if rules.higher_is_better else "above"
        return f"{words} {side} the SLO {format_metric(rules.slo, rules.metric)}"
    if baseline is None or math.isnan(baseline):
        return ""
    drop = rules.drop(baseline)
    limit = baseline - drop if rules.higher_is_better else baseline + drop
    if rules.worse_by(performance, limit) > 0 and rules.worse_by(performance, baseline) > half_width:
        if rules.higher_is_better:
            return f"{words} dropped more than {drop:.2f} below the champion's {format_metric(baseline, rules.metric)}"
        return f"{words} rose more than {drop:.4g} above the champion's {format_metric(baseline, rules.metric)}"
    return ""


def _performance(value: float, roc_auc: float) -> float:
    """A signal's primary-metric value; a history recorded before the task-neutral columns has ROC AUC only."""
    return roc_auc if math.isnan(value) else value


def _realized(signal: BatchSignal) -> tuple[float, float, float]:
    """A signal's realized primary-metric value and its 90 % interval (NaN bounds: none)."""
    value = _performance(signal.realized_performance, signal.realized_roc_auc)
    return value, signal.realized_performance_low, signal.realized_performance_high


def _estimated(signal: BatchSignal) -> tuple[float, float, float]:
    """A signal's label-free estimate of the primary metric and its band (NaN bounds: none)."""
    value = _performance(signal.estimated_performance, signal.estimated_roc_auc)
    return value, signal.estimated_performance_low, signal.estimated_performance_high


def _recent_mean(values: list[float], n: int) -> float:
    present = [v for v in values if not math.isnan(v)][-n:]
    return sum(present) / len(present) if present else float("nan")


def _drift_disarmed(history: PolicyHistory, signals: list[BatchSignal], policy: Policy) -> bool:
    """After a drift-triggered retrain the drift clause stays quiet until a calm batch re-arms it."""
    drift_triggers = [p for p, trigger in history.past_triggers if trigger == "drift"]
    if not drift_triggers or (history.past_triggers and history.past_triggers[-1][1] != "drift"):
        return False
    after = [s for s in history.signals if s.partition > drift_triggers[-1]]
    return not any(policy.drift.batch_drift_share(s.drift_share, s.max_segment_drift_share) < policy.drift_rearm_share for s in after)


def _drifted(signal: BatchSignal, policy: Policy) -> bool:
    """Whether a batch counts as drifted for the drift clause (dataset drift, or a drifted segment
    with `policy.drift.segment_drift`)."""
    return policy.drift.batch_drifted(signal.dataset_drifted, signal.drifted_segments)
