"""One batch against the champion's reference: every drift statistic, the label-free performance
estimate and, once labels exist, realized performance. Used by the `drift_report` asset and by
`retrain-assets drift`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.task_metrics import task_metrics
from retrain_assets.core.monitoring.distances import jensen_shannon_counts
from retrain_assets.core.monitoring.error_stream import batch_error_stream
from retrain_assets.core.monitoring.drift import dataset_drift, label_drift
from retrain_assets.core.monitoring.loss_estimation import LossModel
from retrain_assets.core.monitoring.measures import BatchMeasures, measure_frame
from retrain_assets.core.monitoring.multivariate import domain_classifier_drift
from retrain_assets.core.monitoring.output_rules import output_rule_summary
from retrain_assets.core.monitoring.novelty import NoveltyModel, novelty_summary
from retrain_assets.core.monitoring.profile import ReferenceProfile
from retrain_assets.core.monitoring.realized import realized_interval
from retrain_assets.core.monitoring.task_drift import task_label_drift, task_prediction_drift
from retrain_assets.core.monitoring.task_estimation import check_task_estimate, estimate_task_performance
from retrain_assets.core.monitoring.values import sample_positions
from retrain_assets.core.policy.definition import DriftThresholds
from retrain_assets.core.policy.triggers import TriggerThresholds
from retrain_assets.core.spec import DatasetSpec, TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION, primary_metric

MIN_ROWS_MULTIVARIATE = 20
# A batch of more rows is scored on a seeded sample of this many (`scored_sample`): prediction drift,
# the label-free estimate and the output rules read distributions and shares, which a sample of
# 200,000 gives within 1.96 x sqrt(0.25 / 200,000) = 0.22 percentage points at 95 %; predicting a
# million rows took 2.2 s of a 12 s drift report (benchmarks/pipeline_drift.py).
SCORED_ROWS = 200_000
# Per-batch monitoring runs the domain classifier on every batch: 3 folds of 40 boosting rounds
# give the same verdicts as the 5x100 default on the built-in scenario at a quarter of the cost.
MULTIVARIATE_FOLDS, MULTIVARIATE_ROUNDS = 3, 40
# The task-neutral summary columns every task fills (after the binary ones, before `estimate_reliable`):
# the primary metric's name, its label-free estimate with the band, its realized value with its 90 %
# bootstrap interval (`realized.realized_interval`), the Jensen-Shannon distances and test p-values
# of label and prediction drift (`label_drift_p_value`, a binary column, is filled for every task
# too), and the per-task drift dicts as JSON.
TASK_COLUMNS = ("performance_metric", "estimated_performance", "estimated_performance_low", "estimated_performance_high",
                "realized_performance", "realized_performance_low", "realized_performance_high", "label_drift_distance",
                "prediction_drift_p_value", "prediction_drift_distance", "task_drift_json")


@dataclass
class DriftResult:
    """Per-feature statistics and verdicts (`features`) and the batch-level numbers (`summary`)."""

    features: pd.DataFrame
    summary: dict


def build_drift_report(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    spec: DatasetSpec,
    thresholds: DriftThresholds,
    reference_rows: pd.DataFrame | None = None,
    scores: np.ndarray | None = None,
    labeled_scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    seed: int = 0,
    *,
    labeled_rows: pd.DataFrame | None = None,
    loss_model: LossModel | None = None,
    metric: str | None = None,
    triggers: TriggerThresholds | None = None,
    novelty_model: NoveltyModel | None = None,
    measures: BatchMeasures | None = None,
    scored_rows: pd.DataFrame | None = None,
) -> DriftResult:
    """Compare `current` with the reference; every optional input adds its section.

    reference_rows: a row sample of the reference, for the multivariate (domain classifier) test.
    scores: the champion's predictions on every current row (or on `scored_rows`, a big batch's
    `scored_sample`) in the task's shape (`core.tasks`: binary the positive-class score) for prediction
    drift, the label-free estimate and the output rules (`output_rules.output_rule_summary`).
    labeled_scores / labels: the predictions and encoded labels (`core.tasks.encode_labels`) of
    the rows whose labels arrived (realized performance, label drift, and whether the estimate held).
    Regression: the estimate needs the champion's `loss_model` (`loss_estimation.fit_loss_model`)
    and the labeled rows' frame (`labeled_rows`) to judge it on them.
    metric: the primary metric (`core.policy.performance.performance_rules(policy, target).metric`;
    default the task's) that `estimated_performance` / `realized_performance` report.
    triggers: `policy.triggers`, whose error detector watches the labelled rows' errors after the
    champion's held-out ones (`error_stream.py`: `error_alarm`, `error_stream_shift`; NaN without
    labels or stored reference errors; None: the detector's defaults).
    novelty_model: the champion's (`core.monitoring.novelty`), for `novelty_share`,
    `novelty_score_p99` and `novelty_examples` (NaN / "" without one).
    The binary columns (`*_roc_auc`, `current_positive_rate`, ...) keep their numbers (NaN for the
    other tasks, except accuracy, which multiclass fills too); the task-neutral ones are in `TASK_COLUMNS`.
    measures: what was measured on every row of the batch (`measures.BatchMeasures`; default
    `measures.measure_frame` of `current`); given (`columnar_drift`), `current` is a row sample
    of the batch, which the other sections read.
    """
    target = spec.target
    measures = measures if measures is not None else measure_frame(profile, current, spec.categorical_features, thresholds)
    features = measures.features
    overall = dataset_drift(features, thresholds)
    summary: dict = {
        "n_rows": int(measures.n_rows),
        "n_features": int(overall["n_features"]),
        "n_drifted": int(overall["n_drifted"]),
        "drift_share": float(overall["drift_share"]),
        "dataset_drifted": bool(overall["dataset_drifted"]),
        "ood_share": float(measures.ood_share),
        **novelty_summary(novelty_model, current, spec.id_column),
        **measures.segments,
        "multivariate_auc": math.nan,
        "prediction_psi": math.nan,
        "prediction_ks_p_value": math.nan,
        "estimated_roc_auc": math.nan, "estimated_roc_auc_low": math.nan, "estimated_roc_auc_high": math.nan,
        "estimated_accuracy": math.nan,
        "realized_roc_auc": math.nan, "realized_accuracy": math.nan, "n_labeled": 0,
        "label_drift_p_value": math.nan, "current_positive_rate": math.nan,
        "performance_metric": metric or primary_metric(target),
        **dict.fromkeys(TASK_COLUMNS[1:-1], math.nan),
        "task_drift_json": "",
        "estimate_reliable": None,
    }
    if reference_rows is not None:
        summary["multivariate_auc"] = multivariate_auc(reference_rows, current, spec, seed)
    drift: dict = {}
    estimate = None
    if scores is not None and len(scores):
        estimate = _prediction_section(summary, drift, profile, target, scores, _scored(current, scored_rows), loss_model, seed)
    if labels is not None and len(labels):
        _label_section(summary, drift, profile, spec, labels, labeled_scores, labeled_rows, estimate, loss_model, seed)
    summary["task_drift_json"] = json.dumps(_plain(drift), allow_nan=False) if drift else ""
    summary.update(batch_error_stream(target.type, labels if labeled_scores is not None else None, labeled_scores,
                                      profile.reference_errors, triggers))
    summary.update(output_rule_summary(spec, _scored(current, scored_rows), scores))  # the spec's output rules on the scored rows
    return DriftResult(features=features, summary=summary)


def scored_sample(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The rows of a batch the champion scores for its report: all of them, or above `SCORED_ROWS` a
    seeded uniform sample of that many (in batch order)."""
    positions = sample_positions(len(frame), SCORED_ROWS, np.random.default_rng(seed))
    return frame if len(positions) == len(frame) else frame.take(positions)


def _scored(current: pd.DataFrame, scored_rows: pd.DataFrame | None) -> pd.DataFrame:
    return current if scored_rows is None else scored_rows


def multivariate_auc(reference_rows: pd.DataFrame, current: pd.DataFrame, spec: DatasetSpec, seed: int = 0) -> float:
    """The domain classifier's cross-validated ROC AUC of the batch's rows against the reference
    sample (`multivariate.domain_classifier_drift`, per-batch folds and rounds); NaN below
    MIN_ROWS_MULTIVARIATE current rows."""
    if len(current) < MIN_ROWS_MULTIVARIATE:
        return math.nan
    return float(domain_classifier_drift(reference_rows, current, spec.numeric_features, spec.categorical_features, seed=seed,
                                         folds=MULTIVARIATE_FOLDS, max_iter=MULTIVARIATE_ROUNDS).auc)


def _prediction_section(summary: dict, drift: dict, profile: ReferenceProfile, target: TargetSpec, scores, current: pd.DataFrame,
                        loss_model: LossModel | None, seed: int):
    """Prediction drift and the label-free estimate of the batch (into `summary`); returns the estimate (None: none made)."""
    has_reference = profile.scores is not None if target.type != MULTICLASS else profile.predicted_counts is not None
    if has_reference:
        moved = task_prediction_drift(profile, scores, target)
        drift["prediction"] = moved
        if target.type == BINARY:
            summary["prediction_psi"] = float(moved["psi"])
            summary["prediction_ks_p_value"] = float(moved["ks_p_value"])
        summary["prediction_drift_p_value"] = float(moved["chi2_p_value" if target.type == MULTICLASS else "ks_p_value"])
        summary["prediction_drift_distance"] = float(moved["jensen_shannon"])
    if target.type == REGRESSION and loss_model is None:
        return None  # a champion without a loss model (too few held-out rows) has no label-free estimate
    estimate = estimate_task_performance(target, _as_predictions(scores, target), frame=current, loss_model=loss_model, seed=seed)
    _put_estimate(summary, estimate, target)
    return estimate


def _label_section(summary: dict, drift: dict, profile: ReferenceProfile, spec: DatasetSpec, labels, labeled_scores,
                   labeled_rows: pd.DataFrame | None, estimate, loss_model: LossModel | None, seed: int) -> None:
    """Label drift, realized performance and the estimate's check on the batch's labeled rows (into `summary`)."""
    target = spec.target
    labels = np.asarray(labels, dtype=float if target.type == REGRESSION else int)
    summary["n_labeled"] = int(len(labels))
    if target.type == BINARY:
        if profile.positive_rate is not None:
            prior = label_drift(profile.positive_rate, labels)
            summary["label_drift_p_value"] = float(prior["p_value"])
            drift["label"] = prior
            reference, now = profile.positive_rate, float(labels.mean())
            summary["label_drift_distance"] = jensen_shannon_counts([1 - reference, reference], [1 - now, now])
        summary["current_positive_rate"] = float(labels.mean())
    elif (profile.label_counts if target.type == MULTICLASS else profile.label_values) is not None:
        moved = task_label_drift(profile, labels, target)
        drift["label"] = moved
        summary["label_drift_p_value"] = float(moved["chi2_p_value" if target.type == MULTICLASS else "ks_p_value"])
        summary["label_drift_distance"] = float(moved["jensen_shannon"])
    if labeled_scores is None:
        return
    predictions = _as_predictions(labeled_scores, target)
    realized = task_metrics(target, labels, predictions, baseline=math.nan)
    summary["realized_performance"] = float(realized.get(summary["performance_metric"], math.nan))
    if not math.isnan(summary["realized_performance"]):
        summary["realized_performance_low"], summary["realized_performance_high"] = realized_interval(
            target, summary["performance_metric"], labels, predictions, seed)
    if target.type == BINARY:
        summary["realized_roc_auc"], summary["realized_accuracy"] = realized["roc_auc"], realized["accuracy"]
    elif target.type == MULTICLASS:
        summary["realized_accuracy"] = realized["accuracy"]
    if estimate is None or (target.type == BINARY and math.isnan(realized["roc_auc"])):
        return
    # Not every row gets a label (gated, unlabeled): judge the estimate made on the labeled rows' predictions.
    if len(predictions) != estimate.n_rows:
        if target.type == REGRESSION and labeled_rows is None:
            return  # the loss model needs the labeled rows' features
        estimate = estimate_task_performance(target, predictions, frame=labeled_rows, loss_model=loss_model, seed=seed)
    summary["estimate_reliable"] = bool(check_task_estimate(target, estimate, labels, predictions).reliable)


def _put_estimate(summary: dict, estimate, target: TargetSpec) -> None:
    metric = summary["performance_metric"]
    summary.update(estimated_performance=float(getattr(estimate, metric, math.nan)),
                   estimated_performance_low=float(getattr(estimate, f"{metric}_low", math.nan)),
                   estimated_performance_high=float(getattr(estimate, f"{metric}_high", math.nan)))
    if target.type == BINARY:
        summary.update(estimated_roc_auc=estimate.roc_auc, estimated_roc_auc_low=estimate.roc_auc_low,
                       estimated_roc_auc_high=estimate.roc_auc_high, estimated_accuracy=estimate.accuracy)
    elif target.type == MULTICLASS:
        summary["estimated_accuracy"] = estimate.accuracy


def _as_predictions(values, target: TargetSpec) -> np.ndarray:
    """Predictions as floats: (rows, k) class probabilities for multiclass, else one value per row."""
    out = np.asarray(values, dtype=float)
    return out if target.type == MULTICLASS else out.ravel()


def _plain(value):
    """A drift dict's value as strict JSON takes it: NaN and infinities as null, numpy scalars unwrapped."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.number)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def finite_or_nan(value) -> float:
    """A float from a table cell; NaN for a missing one (None, NaN, pd.NA)."""
    return math.nan if value is None or pd.isna(value) else float(value)
