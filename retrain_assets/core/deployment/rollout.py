"""Live rollout: which model answers a request (deterministic canary routing), and whether live
traffic confirms a challenger (the canary analysis). Pure functions, no serving or Dagster code.

Every request is scored by the champion and, while a rollout runs, by the challenger too; the
canary answers only its share of entities, a shadow never answers. Both scores are logged, so
the live comparison is paired on the same requests, with the promotion gate's bootstrap.
A trial's age is data time: partitions delivered since it started, with or without traffic.
Which step the deployment takes on a verdict, an evaluation or a command is `core.policy.rollout`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Iterable

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.sequential import confidence_sequence, request_losses
from retrain_assets.core.evaluation.task_bootstrap import task_paired_bootstrap
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.roles import CANARY, CHAMPION, SHADOW
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION, encode_labels, format_metric

PROMOTE, ROLLBACK, WAIT = "promote", "rollback", "wait"


@dataclass(frozen=True)
class DeploymentState:
    """Which registry versions serve: the champion, at most one challenger on trial (`canary` or
    `shadow`) and the canary's traffic share."""

    champion: str | None
    canary: str | None = None
    shadow: str | None = None
    canary_share: float = 0.0
    previous: str | None = None

    @property
    def challenger(self) -> str | None:
        """The version on trial, canary or shadow."""
        return self.canary or self.shadow

    def describe(self) -> list[dict[str, Any]]:
        """One entry per serving role with its traffic share (what `GET /models` returns)."""
        roles = [{"role": CHAMPION, "version": self.champion, "traffic_share": 1.0 - (self.canary_share if self.canary else 0.0)}]
        if self.canary:
            roles.append({"role": CANARY, "version": self.canary, "traffic_share": self.canary_share})
        if self.shadow:
            roles.append({"role": SHADOW, "version": self.shadow, "traffic_share": 0.0})
        return [r for r in roles if r["version"]]


def entity_bucket(entity_id: Any, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, entity id): the same entity always lands in the same bucket."""
    digest = hashlib.blake2b(f"{salt}\x1f{entity_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def route(entity_id: Any, state: DeploymentState, salt: str) -> str:
    """The arm that answers for `entity_id`: `canary` for the canary's share of entities, else `champion`.

    The salt should name the canary version, so each rollout tries a different slice of entities.
    """
    if state.canary and entity_bucket(entity_id, salt) < state.canary_share:
        return CANARY
    return CHAMPION


@dataclass(frozen=True)
class TrialClock:
    """A live trial's age in data time (partitions, never wall-clock): `started` is the newest data
    partition when it started, `elapsed` the partitions delivered after it (a batch or a prediction
    log), `live` the partitions in which the trial scored requests, `latest` the newest delivered."""

    started: str | None = None
    elapsed: int = 0
    live: int = 0
    latest: str | None = None


def trial_clock(started: str | None, delivered: Iterable[str], logged: Iterable[str],
                trained_through: str | None = None) -> TrialClock:
    """The clock of a trial that started after partition `started`, from the partition keys
    delivered so far and those in which the trial scored requests (`logged`).

    Without a recorded start (a trial started by an older pipeline) it counts from the partition
    before its first logged request, else from the end of its training window (`trained_through`).
    """
    logged = sorted(set(logged))
    delivered = sorted(set(delivered) | set(logged))
    if not started:
        before = [p for p in delivered if logged and p < logged[0]]
        started = before[-1] if before else None if logged else trained_through
    after = [p for p in delivered if started is None or p > started]
    return TrialClock(started, len(after), len(logged), delivered[-1] if delivered else None)


@dataclass(frozen=True)
class CanaryVerdict:
    """What live traffic says about the challenger on trial: promote, roll back or wait, and why;
    `metric` is the primary metric compared (`core.policy.performance`)."""

    decision: str
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)
    metric: str = "roc_auc"


# The fewest labelled live rows each class present needs before a multiclass trial is judged (its
# one-vs-rest ROC AUC and the class-stratified bootstrap rest on them).
MIN_LIVE_CLASS_ROWS = 5


# The fewest bootstrap resamples beyond each end of a judged look's interval: a later look's level
# is far out in the tails, where 2,000 resamples leave a handful (`look_resamples`).
MIN_TAIL_RESAMPLES = 10


def look_confidence(confidence: float, look: int) -> float:
    """The two-sided level of the live interval at a trial's `look`-th judged look (1, 2, ...):
    alpha spending over the looks, alpha_k = alpha * 6 / (pi^2 k^2) with alpha = 1 - `confidence`
    (the sum over every look is alpha: sum 1/k^2 = pi^2/6). The interval misses the true
    difference at some look with probability at most alpha (the union bound, whatever the looks'
    correlation), so judging a trial after every batch keeps the stated error rate, for any number
    of looks; each end of the interval, hence a wrong promotion or a wrong rollback, at most
    alpha / 2. The first look spends 61 % of alpha (0.95: a 96.96 % interval), the second 15 %
    (99.24 %), the third 6.8 % (99.66 %): front-loaded, as labels arrive late and a trial is
    mostly judged first near its expiry (docs/policy.md has the simulation that chose it)."""
    alpha = 1.0 - confidence
    return 1.0 - alpha * 6.0 / (math.pi ** 2 * max(int(look), 1) ** 2)


def look_resamples(resamples: int, level: float) -> int:
    """Bootstrap resamples for an interval at `level`: `resamples`, or more so that
    `MIN_TAIL_RESAMPLES` fall beyond each end (look 1 at 0.95 keeps 2,000; look 7 takes 32,241)."""
    return max(int(resamples), math.ceil(2 * MIN_TAIL_RESAMPLES / (1.0 - level)))


def judged_look(history: pd.DataFrame, started: str | None, elapsed: int) -> int:
    """Which judged look of its trial an analysis at age `elapsed` (`TrialClock.elapsed`) is: 1 +
    the distinct ages (`partitions_elapsed`) below `elapsed` at which earlier analyses of the trial
    (`history`: the version's canary_analysis rows) were judged, i.e. computed the live interval
    (`live_performance_difference`, or binary's older `live_roc_auc_difference`, not NaN). Rows
    analysed at or before the trial's start partition `started` belong to an earlier trial of the
    version and are not counted (without a start, all are); a re-run at the same age is the same
    look. Deterministic in the stores: the same analysis always gets the same look."""
    if history is None or not len(history) or "partitions_elapsed" not in history:
        return 1
    judged = pd.Series(False, index=history.index)
    for column in ("live_performance_difference", "live_roc_auc_difference"):
        if column in history:
            judged |= pd.to_numeric(history[column], errors="coerce").notna()
    age = pd.to_numeric(history["partitions_elapsed"], errors="coerce")
    mine = judged & (age < elapsed)
    if started and "partition" in history:
        partition = history["partition"].fillna("").astype(str)
        mine &= (partition == "") | (partition > started)
    return 1 + int(age[mine].nunique())


def live_inputs(pairs: pd.DataFrame, target: TargetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, trial outputs, champion outputs) of the live pairs in the task's shapes (`core.tasks`):
    labels encoded by `encode_labels`; binary and regression outputs the logged `trial_score` /
    `champion_score`, multiclass the (rows, classes) `trial_probabilities` / `champion_probabilities`.
    Multiclass rows without a logged probability row of the declared width are left out."""
    y = encode_labels(pairs[target.name], target) if len(pairs) else np.zeros(0, dtype=float if target.type == REGRESSION else int)
    if target.type != MULTICLASS:
        return y, pairs["trial_score"].to_numpy(dtype=float), pairs["champion_score"].to_numpy(dtype=float)
    k = len(target.classes)

    def rows(column: str) -> list:
        return [None if v is None or (np.ndim(v) == 0) or len(v) != k else np.asarray(v, dtype=float) for v in pairs[column]]

    trial, champion = rows("trial_probabilities"), rows("champion_probabilities")
    keep = [t is not None and c is not None for t, c in zip(trial, champion)]
    pick = [i for i, ok in enumerate(keep) if ok]
    stack = (lambda p: np.vstack([p[i] for i in pick]) if pick else np.zeros((0, k)))
    return np.asarray(y)[pick], stack(trial), stack(champion)


def analyse_canary(y: Any, challenger_scores: Any, champion_scores: Any, partitions_elapsed: int, policy: Policy,
                   offline_difference: float | None = None, offline_lower: float | None = None,
                   live_partitions: int | None = None, target: TargetSpec | None = None,
                   offline_upper: float | None = None, look: int = 1) -> CanaryVerdict:
    """Compare the challenger with the champion on the same labelled live requests, on the task's
    primary metric (`performance_rules(policy, target)`; `target` None: binary).

    `y` and the outputs are in the task's shapes (`live_inputs`). `partitions_elapsed` is the
    trial's age (`TrialClock.elapsed`), `live_partitions` how many partitions logged traffic for it.
    The offline numbers are the evaluation's interval of the same difference. `look` is which
    judged look of the trial this is (`judged_look`: 1 + the earlier analyses that reached the
    rules below). Rules, with the promotion gate's statistics (`task_paired_bootstrap` of
    challenger - champion) at the look's level (`look_confidence`: alpha spending, so the looks
    together keep the error rate 1 - `promotion.confidence_level`), in order:
      - too little evidence (`_evidence`: binary `min_live_labeled_rows` rows and
        `min_live_positives` positives; multiclass the rows and `MIN_LIVE_CLASS_ROWS` of each class
        present, two classes at least; regression the rows): wait, or roll back once
        `max_live_partitions` passed (the trial expired: too little traffic, or none, reached it);
      - significantly worse live (upper bound below 0; for an error metric, lower bound above 0):
        roll back;
      - live contradicts the offline evaluation (the live interval lies wholly on the worse side of
        the offline interval's conservative bound: `offline_lower`, or `offline_upper` for an
        error metric): the gain measured offline does not exist on live traffic, the mark of target
        leakage or training/serving skew: roll back;
      - non-inferior: the conservative bound beyond -margin (+margin for an error metric; 0 under
        `superiority`; margin `performance_rules(...).margin(live champion value)`): promote;
      - otherwise wait for more labels, and roll back once `max_live_partitions` passed.
    Before there is enough evidence, a clearly worse canary is stopped early (`_early_stop`): the
    verdict is a rollback whose numbers carry `early_stop` 1.0 (`core.policy.rollout` records it
    as `<mode>_early_stop`).
    """
    rollout, rules = policy.rollout, performance_rules(policy, target)
    task = target.type if target is not None else BINARY
    y = np.asarray(y, dtype=float if task == REGRESSION else int)
    numbers, short = _evidence(y, task, rollout, rules.metric)
    numbers["partitions_elapsed"] = partitions_elapsed
    for name, value in (("difference", offline_difference), ("difference_lower", offline_lower),
                        ("difference_upper", offline_upper)):
        if value is not None and rules.metric == "roc_auc" and name != "difference_upper":
            numbers[f"offline_roc_auc_{name}"] = float(value)
        if value is not None:
            numbers[f"offline_performance_{name}"] = float(value)
    if live_partitions is not None:
        numbers["live_partitions"] = live_partitions
    expired = partitions_elapsed >= rollout.max_live_partitions
    if short:
        if expired:
            traffic = ("" if live_partitions is None else "; no live traffic was logged for it" if not live_partitions
                       else f"; live traffic logged in {_partitions(live_partitions)}")
            return CanaryVerdict(ROLLBACK, f"expired: only {short[1]} in {_partitions(partitions_elapsed)} since the trial "
                                           f"started{traffic}: not enough live evidence", numbers, rules.metric)
        stop = _early_stop(y, challenger_scores, champion_scores, task, rules.metric, policy, numbers)
        if stop:
            return CanaryVerdict(ROLLBACK, stop, numbers, rules.metric)
        return CanaryVerdict(WAIT, f"waiting for labels: {short[0]}", numbers, rules.metric)
    return _judge(y, challenger_scores, champion_scores, policy, rules, target, numbers, expired,
                  offline_difference, offline_lower if rules.higher_is_better else offline_upper, look)


def _early_stop(y: np.ndarray, challenger_scores, champion_scores, task: str, metric: str, policy: Policy,
                numbers: dict) -> str:
    """Why the trial stops early ("" when it does not): the always-valid confidence sequence
    (`core.evaluation.sequential`, level `promotion.confidence_level`, tightest near
    `min_live_labeled_rows`) of the mean paired per-request loss difference challenger - champion
    (`request_losses`: a proper per-row score, as the primary metric may have none) lies wholly
    above 0. It is checked at every analysis and holds at every sample size at once, so looking
    after every batch keeps the error rate: a canary no worse than the champion is stopped with
    probability at most 1 - confidence over the whole trial. Adds its numbers to `numbers`."""
    if not len(y):
        return ""
    confidence = policy.promotion.confidence_level
    difference = (request_losses(y, challenger_scores, task, metric) - request_losses(y, champion_scores, task, metric))
    cs = confidence_sequence(difference, confidence, planned_rows=policy.rollout.min_live_labeled_rows)
    numbers.update(live_loss_difference=cs.mean, live_loss_difference_lower=cs.lower, live_loss_difference_upper=cs.upper)
    if not cs.lower > 0:
        return ""
    numbers["early_stop"] = 1.0
    return (f"early stop: the canary's per-request loss exceeds the champion's by {cs.mean:+.4g} [{cs.lower:+.4g}, "
            f"{cs.upper:+.4g}] on {cs.n} labelled live rows (an always-valid {confidence:.0%} interval, checked at every "
            f"analysis): clearly worse before {policy.rollout.min_live_labeled_rows} rows were reached")


def _evidence(y: np.ndarray, task: str, rollout, metric: str) -> tuple[dict[str, float], tuple[str, str] | None]:
    """The evidence numbers, and None when there is enough, else (what is still missing, what the
    trial had: for the expiry reason)."""
    n, need = int(len(y)), rollout.min_live_labeled_rows
    if task == BINARY:
        positives = int(y.sum()) if n else 0
        numbers = {"live_rows": n, "live_positives": positives}
        if n >= need and positives >= rollout.min_live_positives and positives != n:
            return numbers, None
        return numbers, (f"{n}/{need} labelled live rows, {positives}/{rollout.min_live_positives} positives",
                         f"{n} labelled live rows and {positives} positives (need {need} and {rollout.min_live_positives})")
    if task == MULTICLASS:
        classes, counts = np.unique(y, return_counts=True)
        fewest = int(counts.min()) if n else 0
        numbers = {"live_rows": n, "live_classes": len(classes), "live_min_class_rows": fewest}
        if n >= need and len(classes) >= 2 and fewest >= MIN_LIVE_CLASS_ROWS:
            return numbers, None
        rule = f"{MIN_LIVE_CLASS_ROWS} of each class present, two classes at least"
        return numbers, (f"{n}/{need} labelled live rows, {len(classes)} classes present, the rarest with "
                         f"{fewest}/{MIN_LIVE_CLASS_ROWS} rows",
                         f"{n} labelled live rows in {len(classes)} classes, the rarest with {fewest} (need {need}, {rule})")
    numbers = {"live_rows": n}
    constant = metric == "r2" and n and np.ptp(y) == 0
    if n >= max(need, 2) and not constant:
        return numbers, None
    same = "; the labels are all equal, R² is undefined" if constant else ""
    return numbers, (f"{n}/{need} labelled live rows{same}", f"{n} labelled live rows (need {need}){same}")


def _judge(y, challenger_scores, champion_scores, policy: Policy, rules, target, numbers: dict,
           expired: bool, offline_difference: float | None, offline_bound: float | None, look: int) -> CanaryVerdict:
    """The verdict on enough live evidence (the rules after the evidence in `analyse_canary`), on
    the interval at the `look`-th judged look's level."""
    gate, metric, higher = policy.promotion, rules.metric, rules.higher_is_better
    level = look_confidence(gate.confidence_level, look)
    args = (y, np.asarray(challenger_scores, float), np.asarray(champion_scores, float))
    kwargs = dict(n_resamples=look_resamples(gate.bootstrap_resamples, level), confidence=level, seed=policy.random_seed,
                  threshold=gate.operating_threshold, metrics=(metric,))
    ci = task_paired_bootstrap(target, *args, **kwargs)[metric]
    numbers.update({"look": look, "look_confidence": level, "live_challenger_performance": ci.challenger,
                    "live_champion_performance": ci.champion, "live_performance_difference": ci.difference, "live_performance_difference_lower": ci.lower,
                    "live_performance_difference_upper": ci.upper})
    if metric == "roc_auc":  # binary's own columns keep their names
        numbers.update({"live_challenger_roc_auc": ci.challenger, "live_champion_roc_auc": ci.champion,
                        "live_roc_auc_difference": ci.difference, "live_roc_auc_difference_lower": ci.lower,
                        "live_roc_auc_difference_upper": ci.upper})

    def shown(value: float, sign: str = "", digits: int = 3) -> str:
        return format_metric(value, metric, digits, sign)

    interval = (f"live {rules.label} {shown(ci.challenger)} vs {shown(ci.champion)}, difference {shown(ci.difference, '+', 4)} "
                f"[{shown(ci.lower, '+', 4)}, {shown(ci.upper, '+', 4)}] (look {look}, {_percent(level)} interval) "
                f"on {len(y)} rows")
    offline = f"; offline it was {shown(offline_difference, '+', 4)}" if offline_difference is not None else ""
    margin = 0.0 if gate.comparison == "superiority" else rules.margin(ci.champion)
    bound = -margin if higher and margin else margin  # superiority: 0, never -0
    # The interval's end on the challenger's worse side (conservative) and on its better side.
    worst, best = (ci.lower, ci.upper) if higher else (ci.upper, ci.lower)
    better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
    verdict = partial(CanaryVerdict, numbers=numbers, metric=metric)
    if better(0.0, best):
        return verdict(ROLLBACK, f"{interval}: significantly worse than the champion on live traffic{offline}")
    if offline_bound is not None and better(offline_bound, best):
        side = "at least" if higher else "at most"
        return verdict(ROLLBACK, f"{interval}: live contradicts the offline evaluation (offline difference {side} "
                                 f"{shown(offline_bound, '+', 4)}): leakage or training/serving skew suspected")
    edge, word = ("lower", "above") if higher else ("upper", "below")
    if better(worst, bound):
        return verdict(PROMOTE, f"{interval}: {edge} bound {word} {shown(bound, '+')}{offline}")
    if expired:
        return verdict(ROLLBACK, f"{interval}: not shown non-inferior within {policy.rollout.max_live_partitions} "
                                 f"partitions{offline}")
    must = "exceed" if higher else "stay below"
    return verdict(WAIT, f"{interval}: not conclusive yet ({edge} bound must {must} {shown(bound, '+')})")


def _percent(level: float) -> str:
    """A level as people read it: 96.96 %, 99.24 %, 99.9 %."""
    return f"{100 * level:.2f}".rstrip("0").rstrip(".") + " %"


def _partitions(n: int) -> str:
    return f"{n} partition{'' if n == 1 else 's'}"
