"""The paired bootstrap of challenger - champion for every task, with `bootstrap.paired_bootstrap`'s
contract: a `DifferenceCI` per metric, deterministic in `seed`, resamples held `max_cells` rows at
a time, each resample consuming one uniform draw per row in order (so `max_cells` never changes
the result).

- binary: `paired_bootstrap` itself, unchanged;
- multiclass: resamples stratified by class (each class keeps its count, so every class present
  in the labels is in every resample and its one-vs-rest AUC is defined); macro ROC AUC from the
  binary kernels per class column, log loss, accuracy and macro F1;
- regression: plain paired resampling of rows; MAE, RMSE and R², differences in the metric's units.

`fairness_gap_increase` bootstraps the growth of a task's fairness gap the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.bootstrap import (
    BOOTSTRAP_METRICS,
    LOG_LOSS_EPS,
    DifferenceCI,
    _rank_keys,
    _sorted_key_metrics,
    check_resampling,
    difference_ci,
    paired_bootstrap,
    resample_chunks,
)
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION

# The metrics each task's bootstrap compares (the ones a gate can compare: ECE and binary F1 are not).
TASK_BOOTSTRAP_METRICS: dict[str, tuple[str, ...]] = {
    BINARY: BOOTSTRAP_METRICS,
    MULTICLASS: ("macro_roc_auc", "log_loss", "accuracy", "macro_f1"),
    REGRESSION: ("mae", "rmse", "r2"),
}


def task_paired_bootstrap(
    target: TargetSpec | None, y: Any, challenger: Any, champion: Any, *, n_resamples: int = 2000, confidence: float = 0.95,
    seed: int = 0, threshold: float = 0.5, metrics: tuple[str, ...] | None = None, max_cells: int = 4_000_000,
) -> dict[str, DifferenceCI]:  # fmt: skip
    """Percentile intervals of challenger - champion per metric name (default: the task's
    `TASK_BOOTSTRAP_METRICS`). `y` and the predictions are in the task's shapes (`core.tasks`):
    multiclass class indices and (rows, classes) probabilities, regression numbers. `threshold`
    is used by binary only; `target` None is binary."""
    task = target.type if target is not None else BINARY
    metrics = tuple(dict.fromkeys(metrics or TASK_BOOTSTRAP_METRICS[task]))
    if task == BINARY:
        return paired_bootstrap(y, challenger, champion, n_resamples=n_resamples, confidence=confidence, seed=seed,
                                threshold=threshold, metrics=metrics, max_cells=max_cells)
    unknown = [m for m in metrics if m not in TASK_BOOTSTRAP_METRICS[task]]
    if unknown:
        raise ValueError(f"unknown {task} metric(s) {unknown}; known: {list(TASK_BOOTSTRAP_METRICS[task])}")
    check_resampling(n_resamples, confidence, max_cells)
    run = _multiclass if task == MULTICLASS else _regression
    full, diffs = run(y, challenger, champion, metrics, int(n_resamples), np.random.default_rng(seed), int(max_cells))
    return {m: difference_ci(m, full[m], diffs[m], confidence) for m in metrics}


def _multiclass(y, chal, champ, metrics, n_resamples, rng, max_cells):
    """Full-sample values and resampled differences, resampling within each class."""
    y = np.asarray(y, dtype=np.int64)
    probabilities = {"chal": np.asarray(chal, dtype=float), "champ": np.asarray(champ, dtype=float)}
    for p in probabilities.values():
        if p.ndim != 2 or len(p) != len(y) or y.min() < 0 or y.max() >= p.shape[1] or not np.isfinite(p).all():
            raise ValueError(f"expected finite probabilities of shape ({len(y)}, classes) and class indices within them")
    order = np.argsort(y, kind="stable")
    y = y[order]
    probabilities = {k: p[order] for k, p in probabilities.items()}
    k, n = probabilities["chal"].shape[1], len(y)
    present, start, size = np.unique(y, return_index=True, return_counts=True)
    if len(present) < 2:
        raise ValueError("the labels hold one class only; the bootstrap needs two or more")
    counts = size[np.searchsorted(present, y)].astype(np.float64)
    offsets = start[np.searchsorted(present, y)]
    rows = np.arange(n)
    keys, predicted, row_diff, full = {}, {}, {}, {}
    for name, p in probabilities.items():
        keys[name] = [_rank_keys(y == c, p[None, :, c])[0][0] for c in present]
        predicted[name] = p.argmax(axis=1)
    losses = {name: {"log_loss": -np.log(np.clip(p[rows, y], LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)),
                     "accuracy": (predicted[name] == y).astype(float)} for name, p in probabilities.items()}
    for m in ("log_loss", "accuracy"):
        full[m] = float(losses["chal"][m].mean()), float(losses["champ"][m].mean())
        row_diff[m] = losses["chal"][m] - losses["champ"][m]

    def macro_auc(name: str, idx: np.ndarray) -> np.ndarray:
        return np.mean([_sorted_key_metrics(key[idx], int(c_size))[0] for key, c_size in zip(keys[name], size)], axis=0)

    def macro_f1(name: str, idx: np.ndarray) -> np.ndarray:
        labels, pred = y[idx], predicted[name][idx]
        scores = []
        for c in range(k):
            tp = ((labels == c) & (pred == c)).sum(axis=1)
            denominator = (labels == c).sum(axis=1) + (pred == c).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                scores.append(np.where(denominator > 0, 2 * tp / denominator, np.nan))
        return np.nanmean(np.stack(scores), axis=0)

    everything = rows[None, :]
    for m, fn in (("macro_roc_auc", macro_auc), ("macro_f1", macro_f1)):
        if m in metrics:
            full[m] = float(fn("chal", everything)[0]), float(fn("champ", everything)[0])
    diffs = {m: np.empty(n_resamples) for m in metrics}
    for lo, idx in resample_chunks(rng, n_resamples, max_cells, counts, offsets):
        for m in metrics:
            if m in row_diff:
                values = row_diff[m][idx].mean(axis=1)
            else:
                fn = macro_auc if m == "macro_roc_auc" else macro_f1
                values = fn("chal", idx) - fn("champ", idx)
            diffs[m][lo : lo + len(idx)] = values
    return full, diffs


def _regression(y, chal, champ, metrics, n_resamples, rng, max_cells):
    """Full-sample values and resampled differences, resampling rows with replacement (paired)."""
    y = np.asarray(y, dtype=float)
    predictions = [np.asarray(chal, dtype=float), np.asarray(champ, dtype=float)]
    if any(p.shape != y.shape for p in predictions) or y.ndim != 1 or len(y) < 2:
        raise ValueError("labels and both models' predictions must be 1-D of one length (at least 2 rows)")
    if not all(np.isfinite(a).all() for a in (y, *predictions)):
        raise ValueError("labels and predictions must be finite")
    if "r2" in metrics and np.ptp(y) == 0:
        raise ValueError("R² is undefined on constant labels")
    absolute = [np.abs(p - y) for p in predictions]
    squared = [(p - y) ** 2 for p in predictions]
    n = len(y)

    def values(idx: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        sse = [s[idx].mean(axis=1) for s in squared]
        out = {"mae": tuple(a[idx].mean(axis=1) for a in absolute), "rmse": tuple(np.sqrt(s) for s in sse)}
        if "r2" in metrics:
            labels = y[idx]
            variance = labels.var(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out["r2"] = tuple(1.0 - s / variance for s in sse)
        return out

    point = values(np.arange(n)[None, :])
    full = {m: (float(point[m][0][0]), float(point[m][1][0])) for m in metrics}
    diffs = {m: np.empty(n_resamples) for m in metrics}
    counts, offsets = np.full(n, float(n)), np.zeros(n, dtype=np.intp)
    for lo, idx in resample_chunks(rng, n_resamples, max_cells, counts, offsets):
        resampled = values(idx)
        for m in metrics:
            diffs[m][lo : lo + len(idx)] = resampled[m][0] - resampled[m][1]
    return full, diffs


def fairness_gap_increase(target: TargetSpec, y: Any, challenger: Any, champion: Any, sensitive: pd.Series,
                          n_resamples: int, confidence: float, seed: int,
                          max_cells: int = 4_000_000) -> dict[str, dict[str, float]]:
    """How much the task's fairness gap (`task_metrics.fairness_gap`) grows from champion to
    challenger, with a paired bootstrap interval: {gap name: {increase, lower, upper}}; empty with
    a single group. A group a resample leaves empty is left out of that resample's gap."""
    if target.type == BINARY:
        raise ValueError("binary fairness changes: use report.fairness_gap_increase")
    groups = sensitive.astype(str).to_numpy()
    names = np.unique(groups)
    if len(names) < 2:
        return {}
    y = np.asarray(y)
    members = np.stack([groups == g for g in names]).astype(float).T               # (n, groups)
    models = {"chal": challenger, "champ": champion}
    if target.type == MULTICLASS:  # per row: is the top class right; per row: the absolute error
        rows = {role: (np.asarray(p).argmax(axis=1) == y).astype(float) for role, p in models.items()}
        gap = "accuracy_difference"
    else:
        rows = {role: np.abs(np.asarray(p, dtype=float) - y.astype(float)) for role, p in models.items()}
        gap = "relative_mae_difference"

    def gaps(weights: np.ndarray) -> np.ndarray:
        """challenger gap - champion gap under row weights (B, n)."""
        out = []
        for value in rows.values():
            with np.errstate(invalid="ignore", divide="ignore"):
                by_group = (weights * value) @ members / (weights @ members)          # (B, groups); NaN when empty
                spread = np.nanmax(by_group, axis=1) - np.nanmin(by_group, axis=1)
                out.append(spread if target.type == MULTICLASS else spread / ((weights @ value) / weights.sum(axis=1)))
        return out[0] - out[1]

    n = len(y)
    increases = np.empty(n_resamples)
    counts, offsets = np.full(n, float(n)), np.zeros(n, dtype=np.intp)
    for lo, idx in resample_chunks(np.random.default_rng(seed), n_resamples, max_cells, counts, offsets):
        weights = np.bincount((idx + n * np.arange(len(idx))[:, None]).ravel(), minlength=len(idx) * n).reshape(len(idx), n)
        increases[lo : lo + len(idx)] = gaps(weights.astype(float))
    alpha = (1 - confidence) / 2
    lower, upper = np.nanquantile(increases, [alpha, 1 - alpha])
    return {gap: {"increase": float(gaps(np.ones((1, n)))[0]), "lower": float(lower), "upper": float(upper)}}
