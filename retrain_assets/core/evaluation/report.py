"""Champion vs challenger on the same time-held-out window, as one report.

`build_evaluation_report` turns both models' scores into one JSON-able report: metrics per model,
paired bootstrap intervals of the challenger - champion differences, calibration bins, per-slice
metrics and fairness gaps. `gate.promotion_gate` applies the policy to that report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.bootstrap import paired_bootstrap
from retrain_assets.core.evaluation.metrics import (
    FAIRNESS_GAPS,
    calibration_bins,
    classification_metrics,
    fairness_gaps,
    group_metrics,
)
from retrain_assets.core.evaluation.task_bootstrap import fairness_gap_increase as task_fairness_gap_increase
from retrain_assets.core.evaluation.task_bootstrap import task_paired_bootstrap
from retrain_assets.core.evaluation.task_metrics import GROUP_METRICS, fairness_gap, task_calibration, task_metrics
from retrain_assets.core.evaluation.task_metrics import group_metrics as task_group_metrics
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.roles import CHALLENGER, CHAMPION
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION


def fairness_gap_increase(y_true: np.ndarray, challenger_scores: np.ndarray, champion_scores: np.ndarray, sensitive: pd.Series,
                          threshold: float, n_resamples: int, confidence: float, seed: int,
                          max_cells: int = 4_000_000) -> dict[str, dict[str, float]]:
    """How much each fairness gap grows from champion to challenger, with a paired bootstrap interval.

    Returns {gap name: {increase, lower, upper}}; a gap is left out when a group has no positive
    row (equal opportunity is undefined) or there is a single group.
    """
    y_true = np.asarray(y_true, dtype=int)
    groups = sensitive.astype(str).to_numpy()
    names = np.unique(groups)
    if len(names) < 2:
        return {}
    members = np.stack([groups == g for g in names])                       # (groups, n)
    predictions = {role: (np.asarray(s) >= threshold) for role, s in ((CHALLENGER, challenger_scores), (CHAMPION, champion_scores))}

    def gaps(weights: np.ndarray) -> dict[str, np.ndarray]:
        """Gaps of both models under row weights (B, n): resample counts, or ones for the sample."""
        out = {}
        for role, predicted in predictions.items():
            rows = weights[:, None, :] * members[None, :, :]                 # (B, groups, n)
            selection = (rows * predicted).sum(-1) / np.maximum(rows.sum(-1), 1)
            positives = rows * (y_true == 1)
            tpr = (positives * predicted).sum(-1) / np.maximum(positives.sum(-1), 1)
            out[f"{role}/demographic_parity_difference"] = selection.max(1) - selection.min(1)
            out[f"{role}/equal_opportunity_difference"] = tpr.max(1) - tpr.min(1)
        return out

    point = gaps(np.ones((1, len(y_true))))
    rng = np.random.default_rng(seed)
    chunk = max(1, max_cells // (len(y_true) * len(names)))
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        counts = np.stack([np.bincount(row, minlength=len(y_true)) for row in rng.integers(0, len(y_true), (size, len(y_true)))])
        for key, values in gaps(counts).items():
            draws[key].append(values)
    alpha = (1 - confidence) / 2
    result = {}
    has_positives = all((y_true[groups == g] == 1).any() for g in names)
    for gap in FAIRNESS_GAPS:
        if gap == "equal_opportunity_difference" and not has_positives:
            continue
        increase = np.concatenate(draws[f"{CHALLENGER}/{gap}"]) - np.concatenate(draws[f"{CHAMPION}/{gap}"])
        result[gap] = {"increase": float(point[f"{CHALLENGER}/{gap}"][0] - point[f"{CHAMPION}/{gap}"][0]),
                       "lower": float(np.quantile(increase, alpha)), "upper": float(np.quantile(increase, 1 - alpha))}
    return result


@dataclass(frozen=True)
class ScoredModel:
    """One model's version, family, held-out scores and measured inference cost."""

    version: str
    family: str
    scores: np.ndarray
    cost: dict[str, float]


def build_evaluation_report(
    holdout: pd.DataFrame,
    y_true: np.ndarray,
    challenger: ScoredModel,
    champion: ScoredModel | None,
    segments: list[str],
    sensitive_attribute: str | None,
    policy: Policy,
    holdout_partitions: list[str],
    *,
    target: TargetSpec | None = None,
    baseline: float | None = None,
) -> dict:
    """The evaluation as a JSON-able dict (no gate yet; see `promotion_gate`).

    Both models are scored on the same rows; the differences are challenger - champion with a
    paired bootstrap interval at `policy.promotion.confidence_level`. `target` None is binary
    (`y_true` 0/1, scores the positive-class probabilities); multiclass and regression take the
    task's labels and prediction shapes (`core.tasks`) and are built by `task_report`; regression
    needs `baseline`, the training window's mean label.
    """
    if target is not None and target.type != BINARY:
        return task_report(holdout, y_true, challenger, champion, segments, sensitive_attribute, policy,
                           holdout_partitions, target=target, baseline=baseline)
    promotion = policy.promotion
    primary = performance_rules(policy, target).metric
    slice_columns = ["value", "n_rows", "positive_rate", "roc_auc", "accuracy"]
    slice_columns += [primary] if primary not in slice_columns else []
    threshold = promotion.operating_threshold
    scored = {CHALLENGER: challenger, **({CHAMPION: champion} if champion is not None else {})}
    models, calibration, slices, fairness = {}, {}, [], []
    for role, model in scored.items():
        metrics = classification_metrics(y_true, model.scores, threshold)
        if sensitive_attribute:
            metrics.update(fairness_gaps(y_true, model.scores, holdout[sensitive_attribute], threshold))
        models[role] = {"model_version": model.version, "model_family": model.family, **metrics, **model.cost}
        calibration[role] = calibration_bins(y_true, model.scores)
        for column in segments:
            table = group_metrics(y_true, model.scores, holdout[column], threshold)
            if primary not in table:  # a primary metric other than ROC AUC: the slices compare it
                groups = holdout[column].astype(str).to_numpy()
                y, scores = np.asarray(y_true), np.asarray(model.scores)
                table[primary] = [classification_metrics(y[groups == value], scores[groups == value], threshold)[primary]
                                  for value in table["value"]]
            slices += [{"column": column, "role": role, **row} for row in table[slice_columns].to_dict("records")]
        if sensitive_attribute:
            table = group_metrics(y_true, model.scores, holdout[sensitive_attribute], threshold)
            fairness += [{"attribute": sensitive_attribute, "group": row.pop("value"), "role": role, **row} for row in
                         table[["value", "n_rows", "selection_rate", "true_positive_rate"]].to_dict("records")]
    differences, fairness_changes = [], {}
    if champion is not None and len(np.unique(y_true)) == 2:  # one class: AUC undefined, the gate says so
        if sensitive_attribute:
            fairness_changes = fairness_gap_increase(y_true, challenger.scores, champion.scores, holdout[sensitive_attribute],
                                                     threshold, promotion.bootstrap_resamples, promotion.confidence_level,
                                                     policy.random_seed)
        cis = paired_bootstrap(y_true, challenger.scores, champion.scores, n_resamples=promotion.bootstrap_resamples,
                               confidence=promotion.confidence_level, seed=policy.random_seed, threshold=threshold)
        differences = [ci.to_dict() for ci in cis.values()]
    return {
        **_header(challenger, champion, holdout_partitions, len(y_true)),
        "comparison": promotion.comparison,
        "confidence": promotion.confidence_level,
        "slice_margin": promotion.max_slice_roc_auc_regression,
        **_results(models, differences, calibration, slices, fairness, fairness_changes),
        **({"primary_metric": primary} if primary != "roc_auc" else {}),
    }


def _header(challenger: ScoredModel, champion: ScoredModel | None, holdout_partitions: list[str], n_rows: int) -> dict:
    """The report's first keys: title, holdout, row count and both versions."""
    return {
        "title": f"Evaluation of version {challenger.version}" + (f" vs champion {champion.version}" if champion else " (first model)"),
        "holdout_partitions": list(holdout_partitions),
        "n_rows": int(n_rows),
        "challenger_version": challenger.version,
        "champion_version": champion.version if champion else None,
    }


def _results(models: dict, differences: list, calibration: dict, slices: list, fairness: list, fairness_changes: dict) -> dict:
    """The report's measured parts, in the order the report shows them."""
    return {"models": models, "differences": differences, "calibration": calibration, "slices": slices,
            "fairness": fairness, "fairness_changes": fairness_changes}


def task_report(holdout: pd.DataFrame, y_true: np.ndarray, challenger: ScoredModel, champion: ScoredModel | None,
                segments: list[str], sensitive_attribute: str | None, policy: Policy, holdout_partitions: list[str], *,
                target: TargetSpec, baseline: float | None) -> dict:
    """The multiclass or regression evaluation: `task_metrics` per model (plus the task's fairness
    gap), `differences` from `task_paired_bootstrap` on the task's metrics, calibration per task,
    slices (`task_metrics.GROUP_METRICS`) and fairness groups per task, and the `primary_metric`
    the gate compares. `slice_margin` is the absolute slice margin, None when it is relative to
    the champion's slice value (see `core.policy.performance`)."""
    if target.type == REGRESSION and baseline is None:
        raise ValueError("a regression evaluation needs the baseline (the training window's mean label)")
    promotion, rules = policy.promotion, performance_rules(policy, target)
    y = np.asarray(y_true, dtype=float if target.type == REGRESSION else int)
    scored = {CHALLENGER: challenger, **({CHAMPION: champion} if champion is not None else {})}
    models, calibration, slices, fairness = {}, {}, [], []
    fairness_column = "accuracy" if target.type == MULTICLASS else "mae"
    for role, model in scored.items():
        metrics = task_metrics(target, y, model.scores, baseline=baseline)
        if sensitive_attribute:
            metrics.update(fairness_gap(target, y, model.scores, holdout[sensitive_attribute]))
        models[role] = {"model_version": model.version, "model_family": model.family, **metrics, **model.cost}
        calibration[role] = task_calibration(target, y, model.scores)
        for column in segments:
            table = task_group_metrics(target, y, model.scores, holdout[column])
            slices += [{"column": column, "role": role, **row} for row in table.to_dict("records")]
        if sensitive_attribute:
            table = task_group_metrics(target, y, model.scores, holdout[sensitive_attribute])
            fairness += [{"attribute": sensitive_attribute, "group": row.pop("value"), "role": role, **row} for row in
                         table[["value", "n_rows", fairness_column]].to_dict("records")]
    differences, fairness_changes = [], {}
    comparable = len(np.unique(y)) >= 2  # multiclass: one class leaves macro AUC undefined; regression: R² needs spread
    if champion is not None and comparable:
        if sensitive_attribute:
            fairness_changes = task_fairness_gap_increase(target, y, challenger.scores, champion.scores,
                                                          holdout[sensitive_attribute], promotion.bootstrap_resamples,
                                                          promotion.confidence_level, policy.random_seed)
        cis = task_paired_bootstrap(target, y, challenger.scores, champion.scores, n_resamples=promotion.bootstrap_resamples,
                                    confidence=promotion.confidence_level, seed=policy.random_seed)
        differences = [ci.to_dict() for ci in cis.values()]
    return {
        **_header(challenger, champion, holdout_partitions, len(y)),
        "task": target.type,
        "primary_metric": rules.metric,
        "baseline": baseline,
        "comparison": promotion.comparison,
        "confidence": promotion.confidence_level,
        "slice_margin": rules.slice_value,
        "slice_metrics": [m for m in GROUP_METRICS[target.type] if m != "n_rows"],
        **_results(models, differences, calibration, slices, fairness, fairness_changes),
    }
