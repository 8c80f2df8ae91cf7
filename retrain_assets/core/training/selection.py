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
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import TimeSeriesSplit

from retrain_assets.core.training.modeling import (
    PARTITION_COLUMN,
    TrainedModel,
    build_pipeline,
    feature_frame,
    require_both_classes,
    target_vector,
    train_model,
)
from retrain_assets.core.spec import DatasetSpec

SEARCH_SPACE: dict[str, list[dict]] = {
    "logistic_regression": [{"C": 0.1}, {"C": 1.0}, {"C": 10.0}],
    "hist_gradient_boosting": [
        {"learning_rate": 0.05, "max_leaf_nodes": 7, "max_iter": 150, "l2_regularization": 1.0},
        {"learning_rate": 0.1, "max_leaf_nodes": 15, "max_iter": 100, "l2_regularization": 1.0},
    ],
}


@dataclass(frozen=True)
class Trial:
    """One configuration and its scores on the time-ordered folds."""

    family: str
    params: dict
    fold_roc_auc: list[float]
    fold_log_loss: list[float]

    @property
    def mean_roc_auc(self) -> float:
        defined = [v for v in self.fold_roc_auc if not np.isnan(v)]
        return float(np.mean(defined)) if defined else float("nan")

    @property
    def std_roc_auc(self) -> float:
        defined = [v for v in self.fold_roc_auc if not np.isnan(v)]
        return float(np.std(defined)) if defined else float("nan")

    def to_dict(self) -> dict:
        return {"family": self.family, "params": dict(self.params), "fold_roc_auc": list(self.fold_roc_auc),
                "fold_log_loss": list(self.fold_log_loss), "mean_roc_auc": self.mean_roc_auc, "std_roc_auc": self.std_roc_auc}


@dataclass(frozen=True)
class Selection:
    """The refitted winner, every trial in search order, and how the search was run."""

    model: TrainedModel
    trials: list[Trial]
    chosen: Trial | None
    n_folds: int
    note: str

    def search_space(self, families: tuple[str, ...]) -> dict[str, list[dict]]:
        return {family: SEARCH_SPACE[family] for family in families}


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


def select_model(train: pd.DataFrame, spec: DatasetSpec, seed: int, families: tuple[str, ...], n_folds: int) -> Selection:
    """Score every configuration of `families` on time-ordered folds, refit the best on all of `train`.

    The best has the highest mean fold ROC AUC; ties keep the earlier configuration in
    `SEARCH_SPACE` order (simpler first). Too few partitions for two folds: the first configuration
    is fitted without a search, and the note says so.
    """
    y = target_vector(train, spec)
    require_both_classes(y)
    features = feature_frame(train, spec)
    folds = time_ordered_folds(train[PARTITION_COLUMN].reset_index(drop=True), n_folds)
    candidates = [(family, params) for family in families for params in SEARCH_SPACE[family]]
    if not folds:
        family, params = candidates[0]
        note = f"search skipped: {train[PARTITION_COLUMN].nunique()} training partitions, need 3 for two time-ordered folds"
        return Selection(train_model(train, spec, seed, family, params), [], None, 0, note)
    # Every configuration shares the same preprocessing (imputation, scaling, one-hot), which
    # depends on the fold's rows only: fit it once per fold and train each classifier on its
    # output, exactly what each configuration's Pipeline.fit would compute, at a fraction of the cost.
    aucs: dict[int, list[float]] = {i: [] for i in range(len(candidates))}
    losses: dict[int, list[float]] = {i: [] for i in range(len(candidates))}
    for fit_rows, valid_rows in folds:
        y_fit, y_valid = y[fit_rows], y[valid_rows]
        if len(np.unique(y_fit)) < 2:
            for i in aucs:
                aucs[i].append(float("nan"))
                losses[i].append(float("nan"))
            continue
        preprocessing = build_pipeline(spec, seed)[:-1]
        fit_features = preprocessing.fit_transform(features.iloc[fit_rows])
        valid_features = preprocessing.transform(features.iloc[valid_rows])
        for i, (family, params) in enumerate(candidates):
            classifier = build_pipeline(spec, seed, family, params)[-1].fit(fit_features, y_fit)
            scores = classifier.predict_proba(valid_features)[:, 1]
            aucs[i].append(float(roc_auc_score(y_valid, scores)) if len(np.unique(y_valid)) == 2 else float("nan"))
            losses[i].append(float(log_loss(y_valid, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1])))
    trials = [Trial(family, dict(params), aucs[i], losses[i]) for i, (family, params) in enumerate(candidates)]
    scored = [t for t in trials if not np.isnan(t.mean_roc_auc)]
    if not scored:
        raise ValueError("no validation fold holds both classes: wait for more labeled partitions")
    chosen = max(scored, key=lambda t: t.mean_roc_auc)  # max keeps the first of equal scores
    note = (f"{chosen.family} {chosen.params} chosen: mean ROC AUC {chosen.mean_roc_auc:.4f} over {len(folds)} "
            f"time-ordered folds, best of {len(trials)} configurations")
    return Selection(train_model(train, spec, seed, chosen.family, chosen.params), trials, chosen, len(folds), note)
