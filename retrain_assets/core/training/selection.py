"""Model selection: a small hyperparameter search over model families, scored by time-ordered
cross-validation on the training window, then a refit of the winner on the whole window.

Folds follow time: each fold trains on the oldest partitions and validates on the partitions
right after them (scikit-learn's `TimeSeriesSplit` over whole partitions), so a configuration is
never scored on days older than the ones it learned from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, mean_absolute_error, roc_auc_score, root_mean_squared_error
from sklearn.model_selection import TimeSeriesSplit
from sklearn.pipeline import Pipeline

from retrain_assets.core.evaluation.task_metrics import macro_roc_auc
from retrain_assets.core.spec import DatasetSpec, TargetSpec
from retrain_assets.core.tasks import BINARY, METRICS, MULTICLASS, REGRESSION, higher_is_better, primary_metric
from retrain_assets.core.training.families import TASK_SEARCH_SPACE
from retrain_assets.core.training.modeling import (
    PARTITION_COLUMN,
    TrainedModel,
    build_pipeline,
    estimator_outputs,
    feature_frame,
    require_trainable,
    target_vector,
    train_model,
)

# The binary grid; every task's is `core.training.families.TASK_SEARCH_SPACE`.
SEARCH_SPACE: dict[str, list[dict]] = TASK_SEARCH_SPACE[BINARY]
# The metric reported next to the primary one on every fold.
SECOND_METRICS: dict[str, str] = {BINARY: "log_loss", MULTICLASS: "log_loss", REGRESSION: "rmse"}


def _nan_mean_std(values: list[float]) -> tuple[float, float]:
    defined = [v for v in values if not np.isnan(v)]
    return (float(np.mean(defined)), float(np.std(defined))) if defined else (float("nan"), float("nan"))


@dataclass(frozen=True)
class Trial:
    """One configuration and its scores on the time-ordered folds: the task's primary `metric`
    (`core.tasks.primary_metric`) and `second_metric` per fold, NaN where a fold could not be
    scored. `mean_score`/`std_score` ignore NaN folds. For binary targets `fold_roc_auc`,
    `mean_roc_auc`, `std_roc_auc` and `fold_log_loss` name the same numbers."""

    family: str
    params: dict
    fold_scores: list[float]
    fold_second_scores: list[float]
    metric: str = "roc_auc"
    second_metric: str = "log_loss"

    @property
    def mean_score(self) -> float:
        return _nan_mean_std(self.fold_scores)[0]

    @property
    def std_score(self) -> float:
        return _nan_mean_std(self.fold_scores)[1]

    def _binary(self, name: str) -> None:
        if self.metric != "roc_auc":
            raise AttributeError(f"{name} is a binary trial's name; this trial scores {self.metric}: use fold_scores/mean_score")

    @property
    def fold_roc_auc(self) -> list[float]:
        self._binary("fold_roc_auc")
        return self.fold_scores

    @property
    def mean_roc_auc(self) -> float:
        self._binary("mean_roc_auc")
        return self.mean_score

    @property
    def std_roc_auc(self) -> float:
        self._binary("std_roc_auc")
        return self.std_score

    @property
    def fold_log_loss(self) -> list[float]:
        if self.second_metric != "log_loss":
            raise AttributeError(f"this trial's second metric is {self.second_metric}: use fold_second_scores")
        return self.fold_second_scores

    def to_dict(self) -> dict:
        out = {"family": self.family, "params": dict(self.params), "metric": self.metric, "fold_scores": list(self.fold_scores),
               "mean_score": self.mean_score, "std_score": self.std_score, "second_metric": self.second_metric,
               "fold_second_scores": list(self.fold_second_scores)}
        if self.metric == "roc_auc":
            out.update({"fold_roc_auc": list(self.fold_scores), "fold_log_loss": list(self.fold_second_scores),
                        "mean_roc_auc": self.mean_score, "std_roc_auc": self.std_score})
        return out


@dataclass(frozen=True)
class Selection:
    """The refitted winner, every trial in search order, and how the search was run.

    `fold_models` are the chosen configuration's fitted fold pipelines (oldest fold first; empty
    when no search ran): an ensemble the search fitted anyway, used for regression's uncertainty
    (`core.training.uncertainty`).
    """

    model: TrainedModel
    trials: list[Trial]
    chosen: Trial | None
    n_folds: int
    note: str
    task: str = BINARY
    fold_models: tuple[Pipeline, ...] = ()

    def search_space(self, families: tuple[str, ...]) -> dict[str, list[dict]]:
        return {family: TASK_SEARCH_SPACE[self.task][family] for family in families}


def time_ordered_folds(partitions: pd.Series, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row positions of (train, validation) per fold; whole partitions, validation after training.

    Uses fewer folds when there are too few partitions, and none below three partitions.
    """
    keys = np.sort(partitions.unique())
    n_folds = min(n_folds, len(keys) - 1)
    if n_folds < 2:
        return []
    positions = pd.Series(np.arange(len(partitions)), index=partitions.to_numpy())
    folds = []
    for train_keys, valid_keys in TimeSeriesSplit(n_splits=n_folds).split(keys):
        folds.append((np.sort(positions.loc[keys[train_keys]].to_numpy()), np.sort(positions.loc[keys[valid_keys]].to_numpy())))
    return folds


def fold_metrics(y: np.ndarray, outputs: np.ndarray, target: TargetSpec) -> tuple[float, float]:
    """The task's primary and second metric on one validation fold (encoded labels, task-shaped
    outputs): binary ROC AUC (NaN with one class) and log loss; multiclass macro one-vs-rest ROC AUC
    (`core.evaluation.task_metrics.macro_roc_auc`) and log loss over the declared classes; regression MAE and RMSE."""
    if target.type == BINARY:
        auc = float(roc_auc_score(y, outputs)) if len(np.unique(y)) == 2 else float("nan")
        return auc, float(log_loss(y, np.clip(outputs, 1e-15, 1 - 1e-15), labels=[0, 1]))
    if target.type == MULTICLASS:
        return macro_roc_auc(y, outputs), float(log_loss(y, outputs, labels=list(range(outputs.shape[1]))))
    return float(mean_absolute_error(y, outputs)), float(root_mean_squared_error(y, outputs))


def select_model(train: pd.DataFrame, spec: DatasetSpec, seed: int, families: tuple[str, ...], n_folds: int) -> Selection:
    """Score every configuration of `families` on time-ordered folds, refit the best on all of `train`.

    Folds are scored on the task's primary metric (`fold_metrics`); the best has the best mean
    over the folds (highest ROC AUC / macro ROC AUC, lowest MAE); ties keep the earlier
    configuration in the search-space order (simpler first). A classification fold whose training
    rows hold one class is NaN. Too few partitions for two folds: the first configuration is
    fitted without a search, and the note says so.
    """
    target = spec.target
    y = target_vector(train, spec)
    require_trainable(y, target)
    features = feature_frame(train, spec)
    folds = time_ordered_folds(train[PARTITION_COLUMN].reset_index(drop=True), n_folds)
    space = TASK_SEARCH_SPACE[target.type]
    unknown = [f for f in families if f not in space]
    if unknown:
        raise ValueError(f"unknown model families {unknown} for a {target.type} target; known: {sorted(space)}")
    candidates = [(family, params) for family in families for params in space[family]]
    if not folds:
        family, params = candidates[0]
        note = f"search skipped: {train[PARTITION_COLUMN].nunique()} training partitions, need 3 for two time-ordered folds"
        return Selection(train_model(train, spec, seed, family, params), [], None, 0, note, target.type)
    metric, second = primary_metric(target), SECOND_METRICS[target.type]
    # Every configuration shares the same preprocessing (imputation, scaling, one-hot), which
    # depends on the fold's rows only: fit it once per fold and train each estimator on its
    # output, exactly what each configuration's Pipeline.fit would compute, at a fraction of the cost.
    scores: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(candidates))}
    models: dict[int, list[Pipeline]] = {i: [] for i in range(len(candidates))}
    for fit_rows, valid_rows in folds:
        y_fit, y_valid = y[fit_rows], y[valid_rows]
        if target.is_classification and len(np.unique(y_fit)) < 2:
            for i in scores:
                scores[i].append((float("nan"), float("nan")))
            continue
        preprocessing = build_pipeline(spec, seed)[:-1]
        fit_features = preprocessing.fit_transform(features.iloc[fit_rows])
        valid_features = preprocessing.transform(features.iloc[valid_rows])
        for i, (family, params) in enumerate(candidates):
            estimator = build_pipeline(spec, seed, family, params)[-1].fit(fit_features, y_fit)
            scores[i].append(fold_metrics(y_valid, estimator_outputs(estimator, valid_features, target), target))
            models[i].append(Pipeline(preprocessing.steps + [("model", estimator)]))
    trials = [Trial(family, dict(params), [s[0] for s in scores[i]], [s[1] for s in scores[i]], metric, second)
              for i, (family, params) in enumerate(candidates)]
    scored = [t for t in trials if not np.isnan(t.mean_score)]
    if not scored:
        held = "both classes" if target.type == BINARY else "two or more classes"
        raise ValueError(f"no validation fold holds {held}: wait for more labeled partitions")
    best = max if higher_is_better(metric) else min  # both keep the first of equal scores
    chosen = best(scored, key=lambda t: t.mean_score)
    note = (f"{chosen.family} {chosen.params} chosen: mean {METRICS[metric].label} {chosen.mean_score:.4f} over {len(folds)} "
            f"time-ordered folds, best of {len(trials)} configurations")
    return Selection(train_model(train, spec, seed, chosen.family, chosen.params), trials, chosen, len(folds), note,
                     target.type, tuple(models[next(i for i, t in enumerate(trials) if t is chosen)]))
