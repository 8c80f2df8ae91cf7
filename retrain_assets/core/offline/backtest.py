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

`Lab` holds everything that does not depend on the policy (trainings by window, evaluations by
challenger and champion, reference profiles, drift reports, scores), so the policies and sweep
variants replayed in one process train each window once.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.bootstrap import batch_roc_auc
from retrain_assets.core.ingestion.contracts import repeated_id_reasons, set_aside, validate_batch
from retrain_assets.core.monitoring.profile import ReferenceProfile, build_reference_profile
from retrain_assets.core.evaluation.gate import promotion_gate
from retrain_assets.core.evaluation.metrics import inference_cost
from retrain_assets.core.evaluation.report import ScoredModel, build_evaluation_report
from retrain_assets.core.labeling.label_files import combine_label_files, normalize_annotations
from retrain_assets.core.labeling.resolution import resolve_labels
from retrain_assets.core.ingestion.landing import BATCHES, LABELS
from retrain_assets.core.partitions import partition_bounds
from retrain_assets.core.policy.batches import block_reason
from retrain_assets.core.training.modeling import feature_frame, model_family, predict_scores, split_holdout, target_vector
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.monitoring.batch_report import build_drift_report
from retrain_assets.core.policy.definition import Policy, with_overrides
from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, RetrainDecision, decide_retrain
from retrain_assets.core.offline.scenario import Delivery
from retrain_assets.core.training.selection import select_model
from retrain_assets.core.spec import DatasetSpec

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
# The timeline: what landed on each step, through the contracts and the label gates


@dataclass
class Step:
    """One batch of the history, as the pipeline saw it.

    requests: the rows live traffic sent that step (what the serving model is scored on);
    batch: the batch's contract-clean rows (None when the batch is blocked);
    labeled: partitions whose labels were delivered on this step.
    """

    index: int
    partition: str
    requests: pd.DataFrame
    batch: pd.DataFrame | None
    n_rows: int
    n_quarantined: int
    blocked: str = ""
    labeled: list[str] = field(default_factory=list)


@dataclass
class Timeline:
    """Every step, the labeled rows of each partition (clean batch rows joined with their resolved
    labels: what training and monitoring read), and each partition's resolved labels by id (what
    the served answers are judged against)."""

    spec: DatasetSpec
    steps: list[Step]
    labeled_rows: dict[str, pd.DataFrame]
    truth: dict[str, pd.Series]


def prepare_timeline(deliveries: Iterable[Delivery], spec: DatasetSpec, map_fn: Callable = map,
                     policy: Policy | None = None) -> Timeline:
    """Run each delivery's batch and label files through the contracts and the label gates.

    Batch files: `validate_batch` against the partition window, then the id check across
    partitions; a batch is blocked on a schema error or when more than `policy.max_bad_row_share`
    of its rows break the contract. Requests are validated with the batch contract too (the
    service refuses a row that breaks it). Label files: `normalize_annotations` + `resolve_labels`
    against the partition's requests, with every annotation of the partition delivered so far
    (gated labels stay out, as they do until a reviewer decides). The per-partition checks are
    independent, so `map_fn` may run them in parallel (e.g. a process pool's `map`). `policy`
    (default: the spec's) gives `max_bad_row_share` and the label gates.
    """
    policy = policy or spec.policy
    batches: list[tuple[Delivery, str, pd.DataFrame]] = []
    label_files: dict[str, list[tuple[int, str, pd.DataFrame, pd.Timestamp]]] = {}
    for delivery in deliveries:
        found = {k: v for k, v in delivery.files.items() if k.startswith(f"{BATCHES}/")}
        if len(found) != 1:
            raise ValueError(f"step {delivery.step}: expected one batch file, got {sorted(found) or 'none'}")
        name, frame = next(iter(found.items()))
        batches.append((delivery, name, frame))
        for label_name, label_frame in sorted(k for k in delivery.files.items() if k[0].startswith(f"{LABELS}/")):
            label_files.setdefault(label_name.split("/")[1][:10], []).append(
                (delivery.step, label_name, label_frame, pd.Timestamp(delivery.as_of)))
    if not batches:
        raise ValueError("the history holds no batch")
    landed = {name.split("/")[1][:10]: delivery.step for delivery, name, _ in batches}
    for key, files in label_files.items():
        if key not in landed:
            raise ValueError(f"{files[0][1]}: labels for partition {key}, whose batch is not in the history")
        if files[0][0] < landed[key]:
            raise ValueError(f"{files[0][1]}: labels for partition {key} delivered before its batch; a backtest must "
                             "never see a label before the rows it labels")
    tasks = [(spec, policy, name, frame, delivery.requests, label_files.get(name.split("/")[1][:10], []))
             for delivery, name, frame in batches]
    checked = list(map_fn(_check_partition, tasks))

    steps: list[Step] = []
    first_seen: dict = {}
    clean: dict[str, pd.DataFrame] = {}
    resolutions: dict[int, list[tuple[str, pd.DataFrame]]] = {}
    truth: dict[str, pd.Series] = {}
    for (delivery, name, frame), (key, result, requests, resolved) in zip(batches, checked):
        result = set_aside(result, frame, repeated_id_reasons(result.valid[spec.id_column], first_seen, spec.id_column))
        first_seen.update(dict.fromkeys(result.valid[spec.id_column], key))
        blocked = block_reason(result.schema_errors, result.bad_row_share, policy.max_bad_row_share)
        start = pd.Timestamp(key)
        valid = result.valid.assign(**{PARTITION_COLUMN: start}).reset_index(drop=True)
        if not blocked:
            clean[key] = valid
        steps.append(Step(delivery.step, key, valid if requests is None else requests, None if blocked else valid,
                          result.n_rows, len(result.quarantined), blocked))
        for step_index, labels in resolved:
            resolutions.setdefault(step_index, []).append((key, labels))
            truth[key] = pd.Series(labels[spec.target.name].to_numpy(), index=labels[spec.id_column].to_numpy())
    labeled_rows: dict[str, pd.DataFrame] = {}
    for step in steps:
        for key, labels in resolutions.get(step.index, []):
            if key not in clean:
                continue
            rows = clean[key].merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column, how="inner")
            if len(rows):
                labeled_rows[key] = rows.sort_values(spec.id_column, kind="stable").reset_index(drop=True)
                step.labeled.append(key)
    return Timeline(spec, steps, labeled_rows, truth)


def _check_partition(task) -> tuple[str, object, pd.DataFrame | None, list[tuple[int, pd.DataFrame]]]:
    """One partition's contract result, its validated requests (None: the batch's rows are the
    requests) and its resolved labels after each label delivery, by the step that delivered them."""
    spec, policy, name, frame, requests, label_files = task
    start = pd.Timestamp(name.split("/")[1][:10])
    result = validate_batch(frame, spec, partition_bounds(start, spec.partitions.granularity))
    if requests is not None and not requests.equals(frame):
        requests = validate_batch(requests, spec).valid.assign(**{PARTITION_COLUMN: start}).reset_index(drop=True)
    else:
        requests = None
    seen = result.valid if requests is None else requests
    resolved, delivered_so_far = [], []
    for step_index, label_name, label_frame, delivered in label_files:
        delivered_so_far.append(normalize_annotations(label_frame, spec, delivered, label_name)[0])
        every = combine_label_files(delivered_so_far, spec)[0]
        labels = resolve_labels(every, seen[[spec.id_column, spec.event_time_column]], spec, policy.labels).labels
        resolved.append((step_index, labels))
    return f"{start:%Y-%m-%d}", result, requests, resolved


# --------------------------------------------------------------------------------------------
# What every policy shares: models, evaluations, profiles, drift reports and scores


@dataclass
class Model:
    """A model trained on one window (its rows are the timeline's), and how long the search took."""

    key: str
    pipeline: object
    family: str
    window: tuple[str, ...]
    settings: tuple
    train_seconds: float
    note: str
    cost: dict = field(default_factory=dict)
    holdout_scores: np.ndarray | None = None

    @property
    def holdout_share(self) -> float:
        return self.settings[1]  # see training_settings

    @property
    def trained_through(self) -> str:
        return self.window[-1]


def training_settings(policy: Policy) -> tuple:
    """The policy fields a training depends on (besides its window)."""
    return (policy.training_window_partitions, policy.holdout_share, policy.random_seed, policy.model_families, policy.cv_folds)


def training_windows(timeline: Timeline, policy: Policy) -> list[tuple[str, ...]]:
    """Every distinct window a policy could train on: the newest labeled partitions after each step,
    from the step on which the first model may be trained."""
    labeled: list[str] = []
    windows: list[tuple[str, ...]] = []
    for step in timeline.steps:
        labeled += [p for p in step.labeled if p not in labeled]
        window = tuple(sorted(labeled)[-policy.training_window_partitions:])
        if len(labeled) >= policy.min_partitions_first_model and (not windows or windows[-1] != window):
            windows.append(window)
    return windows


def window_rows(timeline: Timeline, window: tuple[str, ...]) -> pd.DataFrame:
    """The labeled rows of a training window, in `training_set`'s order (partition, then id)."""
    return pd.concat([timeline.labeled_rows[p] for p in window], ignore_index=True)


def train_window(rows: pd.DataFrame, window: tuple[str, ...], spec: DatasetSpec, policy: Policy, base: Policy) -> Model:
    """The model search on a window's rows minus the held-out tail, as `training_set` +
    `candidate_model` do. The model is named after the window's last partition (plus a tag when its
    training settings differ from `base`'s, so sweep variants never share a name)."""
    started = time.perf_counter()
    train, holdout, _ = split_holdout(rows, policy.holdout_share)
    selection = select_model(train, spec, policy.random_seed, policy.model_families, policy.cv_folds)
    seconds = time.perf_counter() - started
    # What every evaluation of this challenger needs, computed once, right after training: its
    # latency and size (the gate's SLOs) and its scores on its own holdout.
    cost = inference_cost(selection.model.pipeline, feature_frame(holdout, spec))
    holdout_scores = predict_scores(selection.model.pipeline, holdout, spec)
    settings = training_settings(policy)
    tag = "" if settings == training_settings(base) else "~" + hashlib.sha1(repr(settings).encode()).hexdigest()[:6]
    return Model(window[-1] + tag, selection.model.pipeline, model_family(selection.model.pipeline), window,
                 settings, seconds, selection.note, cost, holdout_scores)


def report_key(challenger: Model, champion: Model | None, policy: Policy) -> tuple:
    """What an evaluation report depends on."""
    return challenger.key, champion.key if champion else None, policy.promotion, policy.random_seed


def evaluate_models(challenger: Model, champion: Model | None, holdout: pd.DataFrame, holdout_keys: list[str],
                    spec: DatasetSpec, policy: Policy) -> tuple[dict, float]:
    """`build_evaluation_report` of challenger vs champion on the challenger's holdout, and the
    seconds it took (the gate is applied by the caller)."""
    started = time.perf_counter()
    scored = [ScoredModel(challenger.key, challenger.family, challenger.holdout_scores, challenger.cost)]
    if champion is not None:
        scored.append(ScoredModel(champion.key, champion.family, predict_scores(champion.pipeline, holdout, spec), champion.cost))
    report = build_evaluation_report(holdout, target_vector(holdout, spec), scored[0], scored[1] if champion else None,
                                     list(spec.segment_columns), spec.sensitive_attribute, policy, holdout_keys)
    return report, time.perf_counter() - started


def train_windows_in_order(rows: list[pd.DataFrame], windows: list[tuple[str, ...]], spec: DatasetSpec, policy: Policy,
                           base: Policy) -> tuple[list[Model], dict[tuple, tuple[dict, float]]]:
    """Train consecutive windows, and evaluate each model against the one before it: the champion
    it meets when the policy retrains on every batch and the previous challenger was promoted (the
    common case). Those reports are what `Lab` would compute, done ahead, e.g. in parallel."""
    models, reports = [], {}
    for frame, window in zip(rows, windows):
        model = train_window(frame, window, spec, policy, base)
        champion = models[-1] if models else None
        if champion is not None:
            _, holdout, holdout_keys = split_holdout(frame, policy.holdout_share)
            reports[report_key(model, champion, policy)] = evaluate_models(model, champion, holdout, holdout_keys, spec, policy)
        models.append(model)
    return models, reports


class Lab:
    """Caches of everything a replay computes that does not depend on the policy's decisions."""

    def __init__(self, timeline: Timeline, base: Policy, models: Iterable[Model] = (),
                 reports: dict[tuple, tuple[dict, float]] | None = None):
        self.timeline = timeline
        self.spec = timeline.spec
        self.base = base
        self.step_of = {s.partition: s for s in timeline.steps}
        self._models: dict[tuple, Model] = {}
        self._frames: dict[tuple, tuple[pd.DataFrame, pd.DataFrame, list[str]]] = {}
        self._reports: dict[tuple, tuple[dict, float]] = dict(reports or {})
        self._profiles: dict[tuple, ReferenceProfile] = {}
        self._signals: dict[tuple, BatchSignal] = {}
        self._scores: dict[tuple[str, int], np.ndarray] = {}
        for model in models:  # trained elsewhere, e.g. in other processes
            self._models[(model.window, model.settings)] = model

    def train(self, labeled: list[str], policy: Policy) -> Model:
        """The model for the newest `training_window_partitions` of `labeled` (trained once)."""
        window = tuple(sorted(labeled)[-policy.training_window_partitions:])
        key = (window, training_settings(policy))
        if key not in self._models:
            self._models[key] = train_window(window_rows(self.timeline, window), window, self.spec, policy, self.base)
        return self._models[key]

    def frames(self, model: Model) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """The model's training rows, held-out rows and held-out partition keys."""
        key = (model.window, model.holdout_share)
        if key not in self._frames:
            self._frames[key] = split_holdout(window_rows(self.timeline, model.window), model.holdout_share)
        return self._frames[key]

    def evaluate(self, challenger: Model, champion: Model | None, policy: Policy) -> tuple[dict, float]:
        """The evaluation report of challenger vs champion on the challenger's holdout (and the
        seconds it took); the gate is applied by the caller."""
        key = report_key(challenger, champion, policy)
        if key not in self._reports:
            _, holdout, holdout_keys = self.frames(challenger)
            self._reports[key] = evaluate_models(challenger, champion, holdout, holdout_keys, self.spec, policy)
        return self._reports[key]

    def profile(self, model: Model, policy: Policy) -> ReferenceProfile:
        """The champion's reference profile: its training rows, its scores on them, their labels."""
        key = (model.key, policy.drift)
        if key not in self._profiles:
            train = self.frames(model)[0]
            self._profiles[key] = build_reference_profile(
                train, self.spec.numeric_features, self.spec.categorical_features, scores=predict_scores(model.pipeline, train, self.spec),
                labels=target_vector(train, self.spec), thresholds=policy.drift, created_from=model.key)
        return self._profiles[key]

    def signal(self, model: Model, step: Step, labeled: bool, policy: Policy) -> BatchSignal:
        """The drift report of a clean batch against `model`'s reference, as the policy reads it.
        The domain classifier is left out: no retrain clause reads it."""
        key = (model.key, step.partition, labeled, policy.drift, policy.random_seed)
        if key not in self._signals:
            rows = self.timeline.labeled_rows[step.partition] if labeled else None
            scores, labeled_scores = self._score(model, step, step.batch), None
            if rows is not None:  # labeled rows are batch rows: their scores are the batch's, by id
                position = pd.Series(np.arange(len(step.batch)), index=step.batch[self.spec.id_column].to_numpy())
                labeled_scores = scores[position.loc[rows[self.spec.id_column].to_numpy()].to_numpy()]
            summary = build_drift_report(
                self.profile(model, policy), step.batch, self.spec, policy.drift,
                scores=scores if len(step.batch) else None, labeled_scores=labeled_scores,
                labels=target_vector(rows, self.spec) if rows is not None else None, seed=policy.random_seed,
            ).summary
            self._signals[key] = BatchSignal(step.partition, model.key, bool(summary["dataset_drifted"]), float(summary["drift_share"]),
                                             float(summary["estimated_roc_auc"]), float(summary["realized_roc_auc"]),
                                             int(summary["n_labeled"]))
        return self._signals[key]

    def scores(self, model: Model, step: Step) -> np.ndarray:
        """The model's answers to the step's requests."""
        return self._score(model, step, step.requests)

    def _score(self, model: Model, step: Step, rows: pd.DataFrame) -> np.ndarray:
        """Scores of the step's requests or of its clean batch (one computation when they are the same rows)."""
        key = (model.key, step.index, rows is step.requests)
        if key not in self._scores:
            self._scores[key] = predict_scores(model.pipeline, rows, self.spec) if len(rows) else np.array([])
        return self._scores[key]


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
    for step in timeline.steps:
        if champion is not None:
            out.serving[step.index] = champion.key
            out.scores[step.index] = lab.scores(champion, step)
        if policy.reads_drift and champion is not None and step.batch is not None:
            signals[step.partition] = lab.signal(champion, step, step.partition in labeled, rules)
        for partition in step.labeled:
            if partition not in labeled:
                labeled.append(partition)
            if policy.reads_drift and champion is not None:
                signals[partition] = lab.signal(champion, lab.step_of[partition], True, rules)
        new_rows = sum(len(timeline.labeled_rows[p]) for p in labeled if trained_through is None or p > trained_through)
        history = PolicyHistory(
            labeled_partitions=list(labeled), signals=[signals[p] for p in sorted(signals)],
            champion_version=champion.key if champion else None, champion_holdout_roc_auc=baseline,
            last_trained_through=trained_through, new_labeled_rows=new_rows, past_triggers=list(triggers))
        decision = _decide(policy, history, step.index, last_retrain_step, champion is not None)
        out.decisions[step.index] = decision
        if decision.retrain:
            known = sorted(set(labeled) | set(signals))
            triggers.append((known[-1], decision.trigger))
            last_retrain_step = step.index
            model = lab.train(labeled, rules)
            trained_through = model.trained_through
            report, eval_seconds = lab.evaluate(model, champion, rules)
            gate = promotion_gate(report, rules)
            out.retrains.append(Retrain(step.index, step.partition, decision.trigger, decision.reason, model.key, model.family, gate.passed,
                                        gate.headline, model.train_seconds, eval_seconds))
            if gate.passed:
                champion, baseline = model, float(report["models"]["challenger"]["roc_auc"])
        if progress:
            progress(1)
    out.drift = signals
    return out


def _decide(policy: BacktestPolicy, history: PolicyHistory, step: int, last_retrain_step: int | None,
            has_champion: bool) -> RetrainDecision:
    """The pipeline's `decide_retrain` for `drift`; the baselines share its first-model rule and
    then retrain on their own schedule, whenever new labeled partitions exist."""
    if policy.kind == "drift" or history.last_trained_through is None:
        return decide_retrain(history, policy.policy)
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


# --------------------------------------------------------------------------------------------
# Judging a replay


def served_metrics(timeline: Timeline, replay: PolicyReplay) -> pd.DataFrame:
    """One row per served step: step, partition, model, and the 0/1 labels `y` and `scores` of the
    step's requests that got a resolved label."""
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
            y, scores = (truth.to_numpy()[found[known]] == spec.target.positive).astype(int), scores[known]
        rows.append({"step": step.index, "partition": step.partition, "model": replay.serving[step.index], "y": y, "scores": scores})
    return pd.DataFrame(rows, columns=["step", "partition", "model", "y", "scores"])


def pooled_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """ROC AUC (NaN with one class) and accuracy at `threshold` of pooled rows."""
    if len(y) == 0:
        return math.nan, math.nan
    auc = float(batch_roc_auc(y, scores[None, :])[0]) if 0 < y.sum() < len(y) else math.nan
    return auc, float(np.mean((scores >= threshold) == (y == 1)))
