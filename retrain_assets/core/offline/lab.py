"""What every policy of a backtest shares, computed once per process: the model trained on each
window (`train_window`, as `training_set` + `candidate_model` do), the evaluation of a challenger
against a champion, reference profiles, drift reports and scores. `Lab` caches them, so the
policies and sweep variants replayed in one process train each window once; `training_windows`
and `train_windows_in_order` let a caller train them ahead, e.g. in parallel.

Every task: predictions are `predict_outputs` (binary the positive-class probability, as before;
multiclass class probabilities; regression values), evaluations and gates take the spec's target
(regression: the challenger's training-label mean is the baseline), and a batch's signal carries
the task's primary metric (`performance_rules(policy, target).metric`), estimated without labels
(binary: the drift report's; multiclass: one-vs-rest CBPE; regression: direct loss estimation
with a loss model fitted on the champion's holdout rows) and realized on the labeled rows. For
binary the signal's `*_roc_auc` fields are ROC AUC as before; for the other tasks they hold the
primary metric in its own units (`core.offline.backtest` orients them for the retrain policy)."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.report import ScoredModel, build_evaluation_report
from retrain_assets.core.evaluation.metrics import inference_cost
from retrain_assets.core.evaluation.task_metrics import task_metrics
from retrain_assets.core.monitoring.batch_report import build_drift_report
from retrain_assets.core.monitoring.error_stream import batch_error_stream, reference_errors
from retrain_assets.core.monitoring.loss_estimation import LossModel, fit_loss_model
from retrain_assets.core.monitoring.output_rules import output_rule_summary
from retrain_assets.core.monitoring.novelty import NoveltyModel, fit_for_spec
from retrain_assets.core.monitoring.profile import ReferenceProfile, build_reference_profile
from retrain_assets.core.monitoring.realized import realized_interval
from retrain_assets.core.monitoring.task_drift import task_label_drift, task_prediction_drift
from retrain_assets.core.monitoring.task_estimation import estimate_task_performance
from retrain_assets.core.offline.timeline import Step, Timeline
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.policy.retrain import BatchSignal
from retrain_assets.core.policy.signals import signal_from_summary
from retrain_assets.core.policy.window import training_window
from retrain_assets.core.tasks import BINARY, MULTICLASS
from retrain_assets.core.training.learning_curve import learning_curve
from retrain_assets.core.training.modeling import feature_frame, model_family, predict_outputs, split_holdout, target_vector
from retrain_assets.core.training.selection import select_model
from retrain_assets.core.spec import DatasetSpec, TargetSpec


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
    label_mean: float = float("nan")  # mean training label: a regression evaluation's baseline
    # What the data-growth clause reads, as candidate_model records them: the window's rows (held-out
    # tail included) and the learning curve's gain per doubling (`core.training.learning_curve`).
    training_rows: int = 0
    learning_gain: float = float("nan")

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
        window = tuple(training_window(labeled, policy.training_window_partitions))
        if len(labeled) >= policy.min_partitions_first_model and (not windows or windows[-1] != window):
            windows.append(window)
    return windows


def window_rows(timeline: Timeline, window: tuple[str, ...]) -> pd.DataFrame:
    """The labeled rows of a training window, in `training_set`'s order (partition, then id)."""
    return pd.concat([timeline.labeled_rows[p] for p in window], ignore_index=True)


def train_window(rows: pd.DataFrame, window: tuple[str, ...], spec: DatasetSpec, policy: Policy, base: Policy,
                 shortened: bool = False) -> Model:
    """The model search on a window's rows minus the held-out tail, and its learning curve, as
    `training_set` + `candidate_model` do (the curve's seconds count as training). The model is
    named after the window's last partition (plus its first when a change `shortened` it, and a tag
    when its training settings differ from `base`'s, so sweep variants never share a name)."""
    started = time.perf_counter()
    train, holdout, _ = split_holdout(rows, policy.holdout_share)
    selection = select_model(train, spec, policy.random_seed, policy.model_families, policy.cv_folds)
    curve = learning_curve(train, spec, selection, policy.random_seed, policy.cv_folds,
                           metric=performance_rules(policy, spec.target).metric)
    seconds = time.perf_counter() - started
    # What every evaluation of this challenger needs, computed once, right after training: its
    # latency and size (the gate's SLOs) and its scores on its own holdout.
    cost = inference_cost(selection.model.pipeline, feature_frame(holdout, spec))
    holdout_scores = predict_outputs(selection.model.pipeline, holdout, spec)
    settings = training_settings(policy)
    tag = "" if settings == training_settings(base) else "~" + hashlib.sha1(repr(settings).encode()).hexdigest()[:6]
    name = f"{window[-1]} from {window[0]}" if shortened else window[-1]
    return Model(name + tag, selection.model.pipeline, model_family(selection.model.pipeline), window,
                 settings, seconds, selection.note, cost, holdout_scores, selection.model.train_label_mean, len(rows),
                 curve.gain_per_doubling)


def report_key(challenger: Model, champion: Model | None, policy: Policy) -> tuple:
    """What an evaluation report depends on."""
    return challenger.key, champion.key if champion else None, policy.promotion, policy.random_seed


def evaluate_models(challenger: Model, champion: Model | None, holdout: pd.DataFrame, holdout_keys: list[str],
                    spec: DatasetSpec, policy: Policy) -> tuple[dict, float]:
    """`build_evaluation_report` of challenger vs champion on the challenger's holdout, and the
    seconds it took (the gate is applied by the caller). Multiclass and regression reports take
    the spec's target; regression's baseline is the challenger's training-label mean."""
    started = time.perf_counter()
    scored = [ScoredModel(challenger.key, challenger.family, challenger.holdout_scores, challenger.cost)]
    if champion is not None:
        scored.append(ScoredModel(champion.key, champion.family, predict_outputs(champion.pipeline, holdout, spec), champion.cost))
    task = {} if spec.target.type == BINARY else {"target": spec.target, "baseline": challenger.label_mean}
    report = build_evaluation_report(holdout, target_vector(holdout, spec), scored[0], scored[1] if champion else None,
                                     list(spec.segment_columns), spec.sensitive_attribute, policy, holdout_keys, **task)
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
        self._loss_models: dict[str, LossModel | None] = {}
        self._novelty: dict[tuple, NoveltyModel] = {}
        self.monitoring: dict[tuple, dict] = {}  # per signal key: the task's label / prediction drift numbers
        for model in models:  # trained elsewhere, e.g. in other processes
            self._models[(model.window, model.settings)] = model

    def train(self, labeled: list[str], policy: Policy, window_from: str = "") -> Model:
        """The model for the newest `training_window_partitions` of `labeled` from `window_from`
        on (`core.policy.window`; trained once)."""
        window = tuple(training_window(labeled, policy.training_window_partitions, window_from))
        key = (window, training_settings(policy))
        if key not in self._models:
            shortened = window != tuple(training_window(labeled, policy.training_window_partitions))
            self._models[key] = train_window(window_rows(self.timeline, window), window, self.spec, policy, self.base, shortened)
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
            task = {} if self.spec.target.type == BINARY else {"target": self.spec.target}
            self._profiles[key] = build_reference_profile(
                train, self.spec.numeric_features, self.spec.categorical_features, scores=predict_outputs(model.pipeline, train, self.spec),
                labels=target_vector(train, self.spec), thresholds=policy.drift, created_from=model.key,
                segments=self.spec.segment_columns, **task)
            # The champion's held-out errors, the error stream's reference (as the pipeline's reference_profile).
            holdout = self.frames(model)[1]
            if len(holdout):
                outputs = (model.holdout_scores if model.holdout_scores is not None
                           else predict_outputs(model.pipeline, holdout, self.spec))
                self._profiles[key] = replace(self._profiles[key], reference_errors=reference_errors(
                    self.spec.target.type, target_vector(holdout, self.spec), outputs))
        return self._profiles[key]

    def novelty(self, model: Model, policy: Policy) -> NoveltyModel:
        """The champion's novelty model, fitted on its training rows as the pipeline fits it (`fit_for_spec`)."""
        key = (model.key, policy.random_seed)
        if key not in self._novelty:
            self._novelty[key] = fit_for_spec(self.frames(model)[0], self.spec, policy.random_seed)
        return self._novelty[key]

    def signal(self, model: Model, step: Step, labeled: bool, policy: Policy) -> BatchSignal:
        """The drift report of a clean batch against `model`'s reference, as the policy reads it.
        The domain classifier is left out: no retrain clause reads it. Multiclass and regression:
        `task_signal`."""
        key = signal_key(model, step, labeled, policy)
        if key not in self._signals and self.spec.target.type != BINARY:
            self._signals[key] = self.task_signal(model, step, labeled, policy, key)
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
                metric=performance_rules(policy, self.spec.target).metric, triggers=policy.triggers,
                novelty_model=self.novelty(model, policy),
            ).summary
            self._signals[key] = signal_from_summary(step.partition, model.key, summary)
        return self._signals[key]

    def monitored(self, model: Model, step: Step, labeled: bool, policy: Policy) -> dict:
        """The task's label and prediction drift numbers of a signal computed before (empty for binary)."""
        return self.monitoring.get(signal_key(model, step, labeled, policy), {})

    def task_signal(self, model: Model, step: Step, labeled: bool, policy: Policy, key: tuple) -> BatchSignal:
        """A multiclass or regression batch's signal: the feature drift verdict of the drift
        report, the primary metric estimated on every batch row and realized on the labeled rows
        (`estimated_performance`, `realized_performance`), and in `monitoring` the
        task's label and prediction drift."""
        spec, rules = self.spec, performance_rules(policy, self.spec.target)
        profile = self.profile(model, policy)
        summary = build_drift_report(profile, step.batch, spec, policy.drift, seed=policy.random_seed,
                                     novelty_model=self.novelty(model, policy)).summary
        outputs = self._score(model, step, step.batch)
        summary.update(output_rule_summary(spec, step.batch, outputs))  # the report above was made without the outputs
        estimated = self._estimate(model, step, outputs, rules.metric, policy) if len(step.batch) else (math.nan,) * 3
        rows = self.timeline.labeled_rows[step.partition] if labeled else None
        realized, interval = math.nan, (math.nan, math.nan)
        numbers = {"prediction_drift_p_value": math.nan, "label_drift_p_value": math.nan}
        if len(outputs):
            numbers["prediction_drift_p_value"] = drift_p_value(task_prediction_drift(profile, outputs, spec.target))
        if rows is not None and len(rows):
            position = pd.Series(np.arange(len(step.batch)), index=step.batch[spec.id_column].to_numpy())
            y = target_vector(rows, spec)
            labeled_outputs = outputs[position.loc[rows[spec.id_column].to_numpy()].to_numpy()]
            realized = task_performance(spec.target, rules.metric, y, labeled_outputs)
            interval = realized_interval(spec.target, rules.metric, y, labeled_outputs, policy.random_seed)
            numbers["label_drift_p_value"] = drift_p_value(task_label_drift(profile, y, spec.target))
            summary.update(batch_error_stream(spec.target.type, y, labeled_outputs, profile.reference_errors, policy.triggers))
        self.monitoring[key] = numbers
        return signal_from_summary(step.partition, model.key, summary, n_labeled=0 if rows is None else len(rows),
                                   estimated_performance=estimated[0], realized_performance=realized,
                                   realized_performance_low=interval[0], realized_performance_high=interval[1],
                                   estimated_performance_low=estimated[1], estimated_performance_high=estimated[2])

    def _estimate(self, model: Model, step: Step, outputs: np.ndarray, metric: str, policy: Policy) -> tuple[float, float, float]:
        """The label-free estimate of `metric` on the batch and its band (NaN when the task's estimate lacks it:
        e.g. log loss or R²). Regression fits the champion's loss model on its holdout rows once
        (too few holdout rows for one: NaN, the clause then reads realized values only)."""
        loss_model = None
        if self.spec.target.type != MULTICLASS:
            if model.key not in self._loss_models:
                holdout = self.frames(model)[1]
                try:
                    self._loss_models[model.key] = fit_loss_model(holdout, model.holdout_scores, target_vector(holdout, self.spec),
                                                                  self.spec, policy.random_seed)
                except ValueError:  # fewer rows than the loss model's folds need
                    self._loss_models[model.key] = None
            loss_model = self._loss_models[model.key]
            if loss_model is None:
                return (math.nan,) * 3
        estimate = estimate_task_performance(self.spec.target, outputs, frame=step.batch, loss_model=loss_model,
                                             seed=policy.random_seed)
        return tuple(float(getattr(estimate, name, math.nan)) for name in (metric, f"{metric}_low", f"{metric}_high"))

    def scores(self, model: Model, step: Step) -> np.ndarray:
        """The model's answers to the step's requests."""
        return self._score(model, step, step.requests)

    def _score(self, model: Model, step: Step, rows: pd.DataFrame) -> np.ndarray:
        """Scores of the step's requests or of its clean batch (one computation when they are the same rows)."""
        key = (model.key, step.index, rows is step.requests)
        if key not in self._scores:
            self._scores[key] = predict_outputs(model.pipeline, rows, self.spec) if len(rows) else empty_outputs(self.spec.target)
        return self._scores[key]


def signal_key(model: Model, step: Step, labeled: bool, policy: Policy) -> tuple:
    """What a batch's signal depends on."""
    return model.key, step.partition, labeled, policy.drift, policy.random_seed, _detector(policy)


def _detector(policy: Policy) -> tuple:
    """The error-stream detector settings a signal's `error_alarm` depends on."""
    t = policy.triggers
    return t.error_detector, t.error_delta, t.error_ph_threshold


def task_performance(target: TargetSpec, metric: str, y: np.ndarray, outputs: np.ndarray) -> float:
    """`metric` of a multiclass or regression model's `outputs` against encoded labels `y` (NaN
    without rows, or where the metric is undefined, e.g. macro ROC AUC with one class)."""
    if not len(y):
        return math.nan
    return float(task_metrics(target, y, outputs, baseline=math.nan).get(metric, math.nan))


def drift_p_value(numbers: dict) -> float:
    """The p-value of a task drift test: chi-square for class shares, Kolmogorov-Smirnov for numbers."""
    return float(numbers.get("chi2_p_value", numbers.get("ks_p_value", math.nan)))


def empty_outputs(target: TargetSpec) -> np.ndarray:
    """A model's outputs for no rows, in the task's shape."""
    return np.zeros((0, len(target.classes))) if target.type == MULTICLASS else np.array([])
