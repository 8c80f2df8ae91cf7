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
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from retrain_assets.core.evaluation.bootstrap import paired_bootstrap
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.roles import CANARY, CHAMPION, SHADOW

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
    """What live traffic says about the challenger on trial: promote, roll back or wait, and why."""

    decision: str
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)


def analyse_canary(y: Any, challenger_scores: Any, champion_scores: Any, partitions_elapsed: int, policy: Policy,
                   offline_difference: float | None = None, offline_lower: float | None = None,
                   live_partitions: int | None = None) -> CanaryVerdict:
    """Compare the challenger with the champion on the same labelled live requests.

    `partitions_elapsed` is the trial's age (`TrialClock.elapsed`), `live_partitions` how many
    partitions logged traffic for it. Rules, with the promotion gate's statistics (paired
    stratified bootstrap of the ROC AUC difference challenger - champion), in order:
      - too few labelled rows or positives: wait, or roll back once `max_live_partitions` passed
        (the trial expired: too little traffic, or none, reached it);
      - upper bound below 0 (significantly worse live): roll back;
      - upper bound below the offline interval's lower bound `offline_lower` (live contradicts the
        offline evaluation: the gain measured offline does not exist on live traffic, the mark of
        target leakage or training/serving skew): roll back;
      - lower bound above -margin (above 0 under `superiority`): promote;
      - otherwise wait for more labels, and roll back once `max_live_partitions` passed.
    """
    rollout, gate = policy.rollout, policy.promotion
    y = np.asarray(y, dtype=int)
    n, positives = int(len(y)), int(y.sum()) if len(y) else 0
    numbers: dict[str, float] = {"live_rows": n, "live_positives": positives, "partitions_elapsed": partitions_elapsed}
    if offline_difference is not None:
        numbers["offline_roc_auc_difference"] = float(offline_difference)
    if offline_lower is not None:
        numbers["offline_roc_auc_difference_lower"] = float(offline_lower)
    if live_partitions is not None:
        numbers["live_partitions"] = live_partitions
    expired = partitions_elapsed >= rollout.max_live_partitions
    if n < rollout.min_live_labeled_rows or positives < rollout.min_live_positives or positives == n:
        if expired:
            traffic = ("" if live_partitions is None else "; no live traffic was logged for it" if not live_partitions
                       else f"; live traffic logged in {_partitions(live_partitions)}")
            return CanaryVerdict(ROLLBACK, f"expired: only {n} labelled live rows and {positives} positives (need "
                                           f"{rollout.min_live_labeled_rows} and {rollout.min_live_positives}) in "
                                           f"{_partitions(partitions_elapsed)} since the trial started{traffic}: not enough "
                                           "live evidence", numbers)
        need = f"{n}/{rollout.min_live_labeled_rows} labelled live rows, {positives}/{rollout.min_live_positives} positives"
        return CanaryVerdict(WAIT, f"waiting for labels: {need}", numbers)

    ci = paired_bootstrap(y, np.asarray(challenger_scores, float), np.asarray(champion_scores, float),
                          n_resamples=gate.bootstrap_resamples, confidence=gate.confidence_level, seed=policy.random_seed,
                          threshold=gate.operating_threshold, metrics=("roc_auc",))["roc_auc"]
    numbers.update({"live_challenger_roc_auc": ci.challenger, "live_champion_roc_auc": ci.champion,
                    "live_roc_auc_difference": ci.difference, "live_roc_auc_difference_lower": ci.lower,
                    "live_roc_auc_difference_upper": ci.upper})
    bound = 0.0 if gate.comparison == "superiority" else -gate.non_inferiority_margin
    interval = f"live ROC AUC {ci.challenger:.3f} vs {ci.champion:.3f}, difference {ci.difference:+.4f} [{ci.lower:+.4f}, {ci.upper:+.4f}] on {n} rows"
    offline = f"; offline it was {offline_difference:+.4f}" if offline_difference is not None else ""
    if ci.upper < 0:
        return CanaryVerdict(ROLLBACK, f"{interval}: significantly worse than the champion on live traffic{offline}", numbers)
    if offline_lower is not None and ci.upper < offline_lower:
        return CanaryVerdict(ROLLBACK, f"{interval}: live contradicts the offline evaluation (offline difference at least "
                                       f"{offline_lower:+.4f}): leakage or training/serving skew suspected", numbers)
    if ci.lower > bound:
        return CanaryVerdict(PROMOTE, f"{interval}: lower bound above {bound:+.3f}{offline}", numbers)
    if expired:
        return CanaryVerdict(ROLLBACK, f"{interval}: not shown non-inferior within {rollout.max_live_partitions} partitions{offline}", numbers)
    return CanaryVerdict(WAIT, f"{interval}: not conclusive yet (lower bound must exceed {bound:+.3f})", numbers)


def _partitions(n: int) -> str:
    return f"{n} partition{'' if n == 1 else 's'}"
