"""Backtest: replay a history batch by batch under a retraining policy, test-then-train, with the
pipeline's own pure functions: the batch contract, label resolution, the drift report, the retrain
policy, the model search and the promotion gate.

Order of one step, as in the pipeline: the batch's requests are answered by the model serving at
that moment (so a batch is always scored before any model trained on it exists), the batch passes
the contract (a blocked batch is neither monitored nor trained on), the drift report compares it
with the champion's reference profile, the labels delivered on that step are resolved, the policy
decides, and a retrained challenger replaces the champion only when it passes the promotion gate;
it serves from the next step on. The live trial (canary or shadow) is not simulated: a challenger
that passes the gate is promoted directly.

Every task runs every policy: the gate is the task's (`promotion_gate(..., target=)`), the
champion's baseline is its holdout value of the task's primary metric, and the drift policy's
performance clause is the pipeline's own (`core.policy.retrain.decide_retrain` with the task).
Served answers are judged on the primary metric: ROC AUC for binary, macro
one-vs-rest ROC AUC for multiclass, MAE for regression (lower is better), unless
`policy.performance.primary_metric` names another.

The timeline (what landed on each step, through the contracts and label gates) is
`timeline.prepare_timeline`; `lab.Lab` holds everything that does not depend on the policy
(trainings by window, evaluations by challenger and champion, reference profiles, drift reports,
scores), so the policies and sweep variants replayed in one process train each window once. This
module holds the policies, the replay of one policy, and the judging of the answers it served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.bootstrap import batch_roc_auc
from retrain_assets.core.evaluation.gate import promotion_gate
from retrain_assets.core.offline.lab import Lab, Model, task_performance
from retrain_assets.core.offline.timeline import Timeline
from retrain_assets.core.policy.definition import Policy, with_overrides
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, RetrainDecision, decide_retrain
from retrain_assets.core.policy.window import training_window
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, encode_labels

POLICY_KINDS = ("static", "periodic", "drift", "every-batch")
ORACLE = "every-batch"


# --------------------------------------------------------------------------------------------
# Policies


@dataclass(frozen=True)
class BacktestPolicy:
    """One policy to replay: its kind, the period of `periodic`, the pipeline policy it trains and
    gates with, and the swept parameters that made it (shown in its name)."""

    kind: str
    policy: Policy
    every: int = 0
    params: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        base = f"periodic:{self.every}" if self.kind == "periodic" else self.kind
        return base + (f"[{', '.join(f'{k}={v}' for k, v in self.params)}]" if self.params else "")

    @property
    def reads_drift(self) -> bool:
        return self.kind == "drift"


def parse_policies(text: str, base: Policy, sweeps: dict[str, list[str]] | None = None) -> list[BacktestPolicy]:
    """`static,periodic:7,drift,every-batch` -> policies. Each combination of the `sweeps` values
    (parameter -> values; see `policy.policy_key`) makes one variant of the `drift` policy; the
    other policies keep `base`."""
    sweeps = sweeps or {}
    combos: list[tuple[tuple[str, str], ...]] = [()]
    for key, values in sweeps.items():
        if not values:
            raise ValueError(f"--sweep {key}= lists no values")
        combos = [(*combo, (key, str(v))) for combo in combos for v in values]
    policies: list[BacktestPolicy] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kind, _, arg = item.partition(":")
        if kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy {item!r}: use {', '.join(POLICY_KINDS)} (periodic:N retrains every N batches)")
        if kind == "periodic":
            if not arg.isdigit() or int(arg) < 1:
                raise ValueError(f"policy {item!r}: say how many batches apart, e.g. periodic:7")
            policies.append(BacktestPolicy(kind, base, every=int(arg)))
        elif arg:
            raise ValueError(f"policy {item!r} takes no argument")
        elif kind == "drift" and sweeps:
            policies += [BacktestPolicy(kind, with_overrides(base, dict(combo)), params=combo) for combo in combos]
        else:
            policies.append(BacktestPolicy(kind, base))
    if not policies:
        raise ValueError("no policy to replay: pass e.g. --policies static,periodic:7,drift,every-batch")
    if sweeps and not any(p.kind == "drift" for p in policies):
        raise ValueError("--sweep varies the drift policy: add 'drift' to --policies")
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policies repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return policies


# --------------------------------------------------------------------------------------------
# One policy's replay


@dataclass
class Retrain:
    """One training the policy asked for, and what the gate said."""

    step: int
    partition: str
    trigger: str
    reason: str
    model: str
    family: str
    promoted: bool
    gate: str
    train_seconds: float
    eval_seconds: float


@dataclass
class PolicyReplay:
    """What one policy did: the model serving each step, every decision, retrain and drift verdict."""

    policy: BacktestPolicy
    serving: dict[int, str] = field(default_factory=dict)
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    decisions: dict[int, RetrainDecision] = field(default_factory=dict)
    retrains: list[Retrain] = field(default_factory=list)
    drift: dict[str, BatchSignal] = field(default_factory=dict)
    monitoring: dict[str, dict] = field(default_factory=dict)  # multiclass / regression: label and prediction drift


def replay_policy(lab: Lab, policy: BacktestPolicy, progress: Callable[[int], None] | None = None) -> PolicyReplay:
    """Replay the timeline under one policy (see the module docstring for the order of a step)."""
    timeline, rules = lab.timeline, policy.policy
    out = PolicyReplay(policy)
    champion: Model | None = None
    baseline: float | None = None
    labeled: list[str] = []
    signals: dict[str, BatchSignal] = {}
    triggers: list[tuple[str, str]] = []
    trained_through: str | None = None
    last_retrain_step: int | None = None
    window_from = ""
    for step in timeline.steps:
        if champion is not None:
            out.serving[step.index] = champion.key
            out.scores[step.index] = lab.scores(champion, step)
        if policy.reads_drift and champion is not None and step.batch is not None:
            signals[step.partition] = lab.signal(champion, step, step.partition in labeled, rules)
            out.monitoring[step.partition] = lab.monitored(champion, step, step.partition in labeled, rules)
        for partition in step.labeled:
            if partition not in labeled:
                labeled.append(partition)
            if policy.reads_drift and champion is not None:
                signals[partition] = lab.signal(champion, lab.step_of[partition], True, rules)
                out.monitoring[partition] = lab.monitored(champion, lab.step_of[partition], True, rules)
        new_rows = sum(len(timeline.labeled_rows[p]) for p in labeled if trained_through is None or p > trained_through)
        window_rows = sum(len(timeline.labeled_rows[p]) for p in training_window(labeled, rules.training_window_partitions, window_from))
        history = PolicyHistory(
            labeled_partitions=list(labeled), signals=[signals[p] for p in sorted(signals)],
            champion_version=champion.key if champion else None,
            champion_holdout_roc_auc=baseline if primary_metric(rules, timeline.spec.target) == "roc_auc" else None,
            last_trained_through=trained_through, new_labeled_rows=new_rows, past_triggers=list(triggers),
            champion_baseline_performance=baseline, target=timeline.spec.target, window_labeled_rows=window_rows,
            champion_training_rows=champion.training_rows if champion else None,
            champion_learning_gain=None if champion is None or math.isnan(champion.learning_gain) else champion.learning_gain,
            window_from=window_from)
        decision = _decide(policy, history, step.index, last_retrain_step, champion is not None, timeline.spec.target)
        out.decisions[step.index] = decision
        if decision.retrain:
            known = sorted(set(labeled) | set(signals))
            triggers.append((known[-1], decision.trigger))
            last_retrain_step, window_from = step.index, decision.window_from
            model = lab.train(labeled, rules, window_from)
            trained_through = model.trained_through
            report, eval_seconds = lab.evaluate(model, champion, rules)
            gate = promotion_gate(report, rules, target=timeline.spec.target)
            out.retrains.append(Retrain(step.index, step.partition, decision.trigger, decision.reason, model.key, model.family, gate.passed,
                                        gate.headline, model.train_seconds, eval_seconds))
            if gate.passed:
                champion, baseline = model, float(report["models"]["challenger"][primary_metric(rules, timeline.spec.target)])
        if progress:
            progress(1)
    out.drift = signals
    return out


def _decide(policy: BacktestPolicy, history: PolicyHistory, step: int, last_retrain_step: int | None,
            has_champion: bool, target: TargetSpec | None = None) -> RetrainDecision:
    """The pipeline's `decide_retrain` for `drift`; the baselines share its
    first-model rule and then retrain on their own schedule, whenever new labeled partitions exist."""
    if policy.kind == "drift" or history.last_trained_through is None:
        return decide_retrain(history, policy.policy, target)
    fresh = any(p > history.last_trained_through for p in history.labeled_partitions)
    if not has_champion:
        return RetrainDecision(fresh, "no champion yet: the last challenger failed the gate", "first_model" if fresh else "none")
    if not fresh:
        return RetrainDecision(False, "no labeled partition since the last training")
    if policy.kind == ORACLE:
        return RetrainDecision(True, "new labels: retrain after every batch", "every_batch")
    if policy.kind == "periodic" and step - last_retrain_step >= policy.every:
        return RetrainDecision(True, f"{step - last_retrain_step} batches since the last retrain (every {policy.every})", "schedule")
    return RetrainDecision(False, "static: never retrains" if policy.kind == "static" else
                           f"{step - last_retrain_step}/{policy.every} batches since the last retrain")


def primary_metric(policy: Policy, target: TargetSpec | None) -> str:
    """The metric a backtest judges and the performance clause reads: binary keeps ROC AUC (the
    drift report's estimate is of ROC AUC); the other tasks `performance_rules(...).metric`."""
    return "roc_auc" if target is None or target.type == BINARY else performance_rules(policy, target).metric


# --------------------------------------------------------------------------------------------
# Judging a replay


def served_metrics(timeline: Timeline, replay: PolicyReplay) -> pd.DataFrame:
    """One row per served step: step, partition, model, and the labels `y` (encoded as
    `core.tasks.encode_labels`: binary 0/1) and `scores` (the task's outputs) of the step's
    requests that got a resolved label."""
    spec, rows = timeline.spec, []
    for step in timeline.steps:
        if step.index not in replay.serving:
            continue
        truth = timeline.truth.get(step.partition)
        scores = replay.scores[step.index]
        if truth is None or not len(step.requests):
            y, scores = np.array([], dtype=int), scores[:0]
        else:
            found = truth.index.get_indexer(step.requests[spec.id_column].to_numpy())
            known = found >= 0
            values = truth.to_numpy()[found[known]]
            y = (values == spec.target.positive).astype(int) if spec.target.type == BINARY else encode_labels(values, spec.target)
            scores = scores[known]
        rows.append({"step": step.index, "partition": step.partition, "model": replay.serving[step.index], "y": y, "scores": scores})
    return pd.DataFrame(rows, columns=["step", "partition", "model", "y", "scores"])


def pooled_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """ROC AUC (NaN with one class) and accuracy at `threshold` of pooled rows."""
    if len(y) == 0:
        return math.nan, math.nan
    auc = float(batch_roc_auc(y, scores[None, :])[0]) if 0 < y.sum() < len(y) else math.nan
    return auc, float(np.mean((scores >= threshold) == (y == 1)))


def outcome_metrics(target: TargetSpec | None, metric: str, y: np.ndarray, scores: np.ndarray,
                    threshold: float) -> tuple[float, float]:
    """The primary metric and accuracy of pooled served answers: binary `pooled_metrics` (ROC AUC
    and accuracy at `threshold`); multiclass `metric` and the top class's accuracy; regression
    `metric` and NaN (no accuracy)."""
    if target is None or target.type == BINARY:
        return pooled_metrics(y, scores, threshold)
    value = task_performance(target, metric, y, scores)
    accuracy = task_performance(target, "accuracy", y, scores) if target.type == MULTICLASS else math.nan
    return value, accuracy
