"""The learning curve measured at training time: how much the chosen configuration's
cross-validated metric still rises with more training rows. The retrain policy's data-growth
clause (`core.policy.value.growth_clause`) reads its `gain_per_doubling`: a model whose curve still
rises retrains as labeled data grows; one whose curve is flat does not.

Cheap on purpose: only the configuration the search chose, on the search's own time-ordered folds
(`selection.time_ordered_folds`), at two extra sizes (a quarter and a half of each fold's training
rows); the full size reuses the search's fold scores when they are of the same metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.task_metrics import task_metrics
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import higher_is_better
from retrain_assets.core.training.modeling import build_pipeline, estimator_outputs, feature_frame, target_vector
from retrain_assets.core.training.selection import Selection, time_ordered_folds

# Shares of each fold's training rows the curve is measured at (1.0: the search's own fit).
FRACTIONS = (0.25, 0.5, 1.0)
# A subsample smaller than this is not scored: its value would be noise, not a point of the curve.
MIN_SUBSAMPLE_ROWS = 20


@dataclass(frozen=True)
class LearningCurve:
    """The chosen configuration's `metric` (`values`, mean over the folds) at mean training sizes
    `rows`, smallest first, and `gain_per_doubling`: the least-squares slope of the values against
    log2(rows), oriented so positive means more rows help (negated for a lower-is-better metric).
    NaN (and empty points) when the curve could not be measured."""

    rows: tuple[int, ...]
    values: tuple[float, ...]
    metric: str
    gain_per_doubling: float

    def to_json(self) -> str:
        """The points as JSON text (`candidate_model.learning_curve`)."""
        return json.dumps({"metric": self.metric, "rows": list(self.rows),
                           "values": [None if math.isnan(v) else v for v in self.values]})


def learning_curve(train: pd.DataFrame, spec: DatasetSpec, selection: Selection, seed: int, n_folds: int,
                   metric: str | None = None, fractions: tuple[float, ...] = FRACTIONS) -> LearningCurve:
    """The learning curve of `selection.chosen` on `train` (the rows `select_model(train, spec,
    seed, ..., n_folds)` searched): on each time-ordered fold, fit the chosen configuration on a
    seeded random subsample (without replacement) of each fraction of the fold's training rows
    and score `metric` (None: the search's) on the fold's validation rows with the task's metric
    helpers (`evaluation.task_metrics.task_metrics`). The full fraction reuses the search's fold
    score when it is of `metric`. A fold counts only when every fraction scored on it (a
    subsample under `MIN_SUBSAMPLE_ROWS` rows or, for classification, with one class does not);
    values and rows are means over the counted folds. No search (too few partitions) or no
    counted fold: NaN."""
    chosen = selection.chosen
    metric = metric or (chosen.metric if chosen else None)
    nan = LearningCurve((), (), metric or "", float("nan"))
    if chosen is None:
        return nan
    target = spec.target
    y, features = target_vector(train, spec), feature_frame(train, spec)
    folds = time_ordered_folds(train[PARTITION_COLUMN].reset_index(drop=True), n_folds)
    rng = np.random.default_rng(seed)
    per_fold: list[list[tuple[int, float]]] = []
    for index, (fit_rows, valid_rows) in enumerate(folds):
        points = []
        for fraction in fractions:
            size = int(round(fraction * len(fit_rows)))
            rows = fit_rows if size >= len(fit_rows) else np.sort(rng.choice(fit_rows, size=size, replace=False))
            if fraction >= 1.0 and metric == chosen.metric and not math.isnan(chosen.fold_scores[index]):
                points.append((len(rows), float(chosen.fold_scores[index])))
                continue
            if len(rows) < MIN_SUBSAMPLE_ROWS or (target.is_classification and len(np.unique(y[rows])) < 2):
                points.append((len(rows), float("nan")))
                continue
            model = build_pipeline(spec, seed, chosen.family, chosen.params).fit(features.iloc[rows], y[rows])
            outputs = estimator_outputs(model, features.iloc[valid_rows], target)
            scored = task_metrics(target, y[valid_rows], outputs, baseline=float(np.mean(y[rows])))
            points.append((len(rows), float(scored.get(metric, float("nan")))))
        if not any(math.isnan(value) for _, value in points):
            per_fold.append(points)
    if not per_fold:
        return nan
    sizes = np.mean([[n for n, _ in points] for points in per_fold], axis=0)
    values = np.mean([[v for _, v in points] for points in per_fold], axis=0)
    return LearningCurve(tuple(int(round(n)) for n in sizes), tuple(float(v) for v in values), metric,
                         gain_per_doubling(sizes, values, higher_is_better(metric)))


def gain_per_doubling(rows, values, higher: bool = True) -> float:
    """Least-squares slope of `values` against log2(`rows`), negated when lower is better (so
    positive: more rows help); NaN with fewer than two distinct sizes."""
    x, v = np.log2(np.asarray(rows, dtype=float)), np.asarray(values, dtype=float)
    spread = float(np.sum((x - x.mean()) ** 2)) if len(x) else 0.0
    if len(x) < 2 or spread == 0.0:
        return float("nan")
    slope = float(np.sum((x - x.mean()) * (v - v.mean())) / spread)
    return slope if higher else -slope
