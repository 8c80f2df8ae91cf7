"""What the automation does next, and when: the retrain policy (`policy.decide_retrain`) and the
live trial's verdict (`rollout.analyse_canary`) applied to the state of the stores, plus where
the policy's clock points (the partition at which a retrain or a trial expiry happens).

Nothing here restates a rule: "when" is found by asking `decide_retrain` about the history as it
grows, one labelled partition at a time. Pure: the `status` command gathers the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator


from retrain_assets.core.partitions import next_partition
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, RetrainDecision, decide_retrain
from retrain_assets.core.policy.window import training_window
from retrain_assets.core.deployment.rollout import MIN_LIVE_CLASS_ROWS, PROMOTE, ROLLBACK, CanaryVerdict, TrialClock


@dataclass(frozen=True)
class Trial:
    """The challenger on live trial and what the next rollout run would decide about it.

    `verdict` is `analyse_canary` on the live pairs logged so far; `clock` its age in partitions
    delivered since it started (`rollout.trial_clock`).
    """

    version: str
    mode: str
    share: float
    verdict: CanaryVerdict
    clock: TrialClock = TrialClock()


@dataclass(frozen=True)
class NextAction:
    """What happens next, in words, and the partition it waits for (None: on the next sensor tick).

    kind: approve | promote | rollback | trial | retrain | first_model | cooldown | budget | labels |
    hysteresis | watch (also drift held by `no_impact`, its reason shown). `command` is what a
    person runs when the next step is theirs.
    """

    kind: str
    text: str
    partition: str | None = None
    command: str = ""
    numbers: dict = field(default_factory=dict)


def known_partitions(history: PolicyHistory) -> list[str]:
    """Partitions the pipeline has seen: labelled or reported on (what `retrain_decisions` calls the partition)."""
    return sorted(set(history.labeled_partitions) | {s.partition for s in history.signals})


def grown_histories(history: PolicyHistory, granularity: str, rows_per_partition: int, drifted: bool = False,
                    landed: Iterable[str] = (), window_partitions: int | None = None) -> Iterator[tuple[str, int, PolicyHistory]]:
    """The history as labels keep arriving, one partition at a time, each with `rows_per_partition`
    labelled rows: first the partitions that landed (`landed`) or were reported on but are not
    labelled yet, then new partitions with a drift report that is calm (drift share 0), or fully
    drifted with `drifted`. A landed partition without a report gets a calm one with its labels
    (its drift report follows its labels). The training window's rows (`window_labeled_rows`, what
    the data-growth clause reads) grow by `rows_per_partition` per labelled partition while the
    window (none before `history.window_from`) holds fewer than `window_partitions` partitions;
    once it is full they stay as they are (a simple projection: the partition that leaves the
    window is taken to have as many rows as the one that enters). `window_partitions` None: they
    do not grow. Yields (partition, new partitions so far, history); endless."""
    labeled = set(history.labeled_partitions)
    window_rows = history.window_labeled_rows
    reported = {s.partition for s in history.signals}
    signals = list(history.signals)
    rows = history.new_labeled_rows
    pending = sorted((reported | set(landed)) - labeled)
    seen = sorted(set(known_partitions(history)) | set(landed))
    new = 0
    while pending or seen:
        if pending:
            partition = pending.pop(0)
            if partition in reported:
                signals = [replace(s, n_labeled=rows_per_partition) if s.partition == partition else s for s in signals]
            else:
                signals = sorted([*signals, BatchSignal(partition, str(history.champion_version), False, 0.0,
                                                        n_labeled=rows_per_partition)], key=lambda s: s.partition)
        else:
            new += 1
            partition = next_partition(seen[-1], granularity, new)
            signals.append(BatchSignal(partition, str(history.champion_version), drifted, 1.0 if drifted else 0.0,
                                       n_labeled=rows_per_partition))
        if window_partitions and len(training_window(labeled, window_partitions, history.window_from)) < window_partitions:
            window_rows += rows_per_partition
        labeled.add(partition)
        rows += rows_per_partition
        yield partition, new, replace(history, labeled_partitions=sorted(labeled), signals=signals, new_labeled_rows=rows,
                                      window_labeled_rows=window_rows)


def next_action(history: PolicyHistory, policy: Policy, granularity: str, trial: Trial | None = None,
                awaiting_approval: str | None = None, rows_per_partition: int = 0, landed: Iterable[str] = ()) -> NextAction:
    """What the automation does next, from the same rules the sensors apply, in this order: a
    version waiting for a person's approval; the trial on live traffic (promote, roll back, or how
    far it is from a verdict and when it expires); the retrain decision (now, or when it would
    fire and what holds it: cooldown, budget, missing labels, hysteresis).

    "At partition X" means once X's labels are in, assuming the batches that `landed` and every
    coming one are labelled in order with `rows_per_partition` rows and (unless said otherwise) do
    not drift.
    """
    landed = sorted(set(landed))
    if awaiting_approval:
        command = f"retrain-assets approve {awaiting_approval} --why '<reason>'"
        return NextAction("approve", f"approval required: v{awaiting_approval} passed the promotion gate and waits for a "
                                     f"person (policy.rollout.approval: required); run `{command}`", command=command)
    if trial is not None:
        history = replace(history, trial_version=trial.version)  # what the policy's one-rollout-at-a-time guard reads
    decision = decide_retrain(history, policy)
    seen = sorted(set(known_partitions(history)) | set(landed))
    if trial is not None:
        return _trial_action(trial, policy, granularity, decision, seen[-1] if seen else None)
    if decision.retrain:
        return NextAction("retrain", f"retrain now [{decision.trigger}]: {decision.reason}; the retrain sensor launches "
                                     "retrain_job on its next tick", numbers=dict(decision.numbers))

    def first(done, horizon: int, drifted: bool = False):
        return _first_grown(history, policy, granularity, rows_per_partition, horizon, done, drifted, landed)

    pending = len(set(seen) - set(history.labeled_partitions))
    horizon = pending + policy.max_model_age_partitions + policy.budget_window_partitions
    coming = first(lambda d: d.retrain, horizon)
    at = f"once partition {coming[0]} is labelled ({coming[2].trigger})" if coming else f"none within {horizon} partitions"
    when = coming[0] if coming else None
    numbers = {**decision.numbers, "rows_per_partition": rows_per_partition}
    if history.last_trained_through is None:
        need = policy.min_partitions_first_model - len(set(history.labeled_partitions))
        return NextAction("first_model", f"first model once {need} more partition{'s are' if need != 1 else ' is'} labelled "
                                         f"(policy.min_partitions_first_model = {policy.min_partitions_first_model}): {at}",
                          when, numbers=numbers)
    if decision.suppressed_by in ("cooldown", "budget"):
        lifted = first(lambda d: d.suppressed_by != decision.suppressed_by, horizon)
        until = f"until partition {lifted[0]}" if lifted else f"beyond the next {horizon} partitions"
        return NextAction(decision.suppressed_by, f"{decision.suppressed_by} {until}: {decision.reason}; next retrain {at}",
                          lifted[0] if lifted else when, numbers=numbers)
    if decision.suppressed_by in ("min_new_labels", "awaiting_drift_labels"):
        return NextAction("labels", f"waiting for labels: {decision.reason}; retrain {at}", when, numbers=numbers)
    if decision.suppressed_by == "hysteresis":
        return NextAction("hysteresis", f"{decision.reason}; next retrain {at}", when, numbers=numbers)
    drift = first(lambda d: d.retrain, pending + policy.drift_window_batches, drifted=True)
    clock = (f"model age {int(decision.numbers.get('model_age_partitions', 0))}/{policy.max_model_age_partitions} labelled "
             f"partitions since {history.last_trained_through} (policy.max_model_age_partitions)")
    if drift and drift[1] and drift[2].trigger == "drift":
        batches = "the next batch drifts" if drift[1] == 1 else f"the next {drift[1]} batches drift"
        later = f"or at the latest {at}" if coming else f"else no retrain within {horizon} partitions"
        text = (f"retrain when {batches} (drift in {policy.drift_min_batches} of the last {policy.drift_window_batches} "
                f"batches), once labelled, {later}")
    else:
        text = f"next retrain {at}"
    if decision.suppressed_by == "no_impact":  # drift that does not hurt (or not known to) holds like a healthy model
        text = f"{decision.reason}; {text}"
    return NextAction("watch", f"{text}: {clock}", when, numbers=numbers)


def _first_grown(history: PolicyHistory, policy: Policy, granularity: str, rows_per_partition: int, horizon: int,
                 done, drifted: bool = False, landed: Iterable[str] = ()) -> tuple[str, int, RetrainDecision] | None:
    """The first step of the grown history whose decision satisfies `done`, within `horizon` steps."""
    grown_ones = grown_histories(history, granularity, rows_per_partition, drifted, landed, policy.training_window_partitions)
    for step, (partition, new, grown) in enumerate(grown_ones, start=1):
        if step > horizon:
            return None
        decision = decide_retrain(grown, policy)
        if done(decision):
            return partition, new, decision
    return None


def _trial_action(trial: Trial, policy: Policy, granularity: str, decision: RetrainDecision, latest: str | None) -> NextAction:
    rollout, verdict = policy.rollout, trial.verdict
    numbers = dict(verdict.numbers)
    name = f"{trial.mode} v{trial.version}"
    if verdict.decision in (PROMOTE, ROLLBACK):
        verb = "promotes" if verdict.decision == PROMOTE else "rolls back"
        return NextAction(verdict.decision, f"the rollout sensor {verb} {name} on its next tick: {verdict.reason}", numbers=numbers)
    clock = trial.clock
    elapsed = int(numbers.get("partitions_elapsed", clock.elapsed))
    # Partitions still to come, counted from the newest one delivered (from its start before any).
    start = (clock.latest if elapsed else clock.started) or latest
    expires = next_partition(start, granularity, rollout.max_live_partitions - elapsed) if start else None
    expiry = (f"or it expires at partition {expires} → automatic rollback" if expires
              else f"or it expires after {rollout.max_live_partitions} partitions → automatic rollback")
    rows = int(numbers.get("live_rows", 0))
    short_rows = max(0, rollout.min_live_labeled_rows - rows)
    # Binary trials wait for positives, multiclass ones for rows of every class present, regression for rows only.
    if "live_positives" in numbers:
        short_other = max(0, rollout.min_live_positives - int(numbers["live_positives"]))
        other_words = f"{short_other} more positives"
    elif numbers.get("live_min_class_rows") is not None:
        short_other = max(0, MIN_LIVE_CLASS_ROWS - int(numbers["live_min_class_rows"]))
        other_words = f"{short_other} more rows of its rarest class"
    else:
        short_other, other_words = 0, ""
    if clock.elapsed and not clock.live:
        since = f" since it started (after partition {clock.started})" if clock.started else " since it started"
        text = (f"{name}: no live traffic in {elapsed} partition{'s' if elapsed != 1 else ''}{since}: is the prediction "
                f"service getting requests? Without them {expiry.removeprefix('or ')}")
    elif short_rows or short_other:
        need = " and ".join(part for part in (f"{short_rows} more labelled live rows" if short_rows else "",
                                              other_words if short_other else "") if part)
        text = f"{name} needs {need} to be judged, {expiry}"
    else:
        text = f"{name} is not conclusive yet ({verdict.reason}); more labels decide it, {expiry}"
    if decision.suppressed_by == "trial_running":
        text += f"; a {decision.trigger} retrain waits for the trial to end" + (f" (at partition {expires} at the latest)"
                                                                                  if expires else "")
    return NextAction("trial", text, expires, numbers={**numbers, "expires_at": expires or ""})
