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
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.roles import CHALLENGER, CHAMPION



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
) -> dict:
    """The evaluation as a JSON-able dict (no gate yet; see `promotion_gate`).

    Both models are scored on the same rows; the differences are challenger - champion with a
    paired, stratified bootstrap interval at `policy.promotion.confidence_level`.
    """
    promotion = policy.promotion
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
            slices += [{"column": column, "role": role, **row} for row in
                       table[["value", "n_rows", "positive_rate", "roc_auc", "accuracy"]].to_dict("records")]
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
        "title": f"Evaluation of version {challenger.version}" + (f" vs champion {champion.version}" if champion else " (first model)"),
        "holdout_partitions": list(holdout_partitions),
        "n_rows": int(len(y_true)),
        "challenger_version": challenger.version,
        "champion_version": champion.version if champion else None,
        "comparison": promotion.comparison,
        "confidence": promotion.confidence_level,
        "slice_margin": promotion.max_slice_roc_auc_regression,
        "models": models,
        "differences": differences,
        "calibration": calibration,
        "slices": slices,
        "fairness": fairness,
        "fairness_changes": fairness_changes,
    }
