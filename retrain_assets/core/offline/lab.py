"""What every policy of a backtest shares, computed once per process: the model trained on each
window (`train_window`, as `training_set` + `candidate_model` do), the evaluation of a challenger
against a champion, reference profiles, drift reports and scores. `Lab` caches them, so the
policies and sweep variants replayed in one process train each window once; `training_windows`
and `train_windows_in_order` let a caller train them ahead, e.g. in parallel."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.report import ScoredModel, build_evaluation_report
from retrain_assets.core.evaluation.metrics import inference_cost
from retrain_assets.core.monitoring.batch_report import build_drift_report
from retrain_assets.core.monitoring.profile import ReferenceProfile, build_reference_profile
from retrain_assets.core.offline.timeline import Step, Timeline
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.retrain import BatchSignal
from retrain_assets.core.training.modeling import feature_frame, model_family, predict_scores, split_holdout, target_vector
from retrain_assets.core.training.selection import select_model
from retrain_assets.core.spec import DatasetSpec


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
