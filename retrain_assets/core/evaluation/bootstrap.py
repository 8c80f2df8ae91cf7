"""Paired, stratified bootstrap confidence intervals for challenger-minus-champion metric differences.

Both models are scored on the same labelled rows; each resample draws positives and negatives
separately with replacement (keeping their counts, like pROC's default), so every resample has
both classes, and applies the same rows to both models, so the interval reflects the correlation
between their errors. Everything is vectorised: a chunk of resamples is one (chunk, n) index
matrix, and the rank metrics (ROC AUC, average precision) come from one integer sort per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from retrain_assets.core.tasks import higher_is_better

BOOTSTRAP_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy")
HIGHER_IS_BETTER: dict[str, bool] = {m: higher_is_better(m) for m in BOOTSTRAP_METRICS}
LOG_LOSS_EPS = 1e-15


@dataclass(frozen=True)
class DifferenceCI:
    """Bootstrap interval of `challenger - champion` for one metric.

    `challenger`, `champion` and `difference` are computed on the full sample; `lower`/`upper` is
    the percentile interval of the resampled differences at level `confidence`. `p_not_better` is
    the share of resamples in which the challenger is not better (difference <= 0 when higher is
    better, >= 0 otherwise): a one-sided bootstrap p-value for the challenger's superiority.
    """

    metric: str
    challenger: float
    champion: float
    difference: float
    lower: float
    upper: float
    confidence: float
    higher_is_better: bool
    p_not_better: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (Python floats, bools and the metric name)."""
        names = ("challenger", "champion", "difference", "lower", "upper", "confidence")
        out: dict[str, Any] = {"metric": self.metric, **{k: float(getattr(self, k)) for k in names}}
        return {**out, "higher_is_better": bool(self.higher_is_better), "p_not_better": float(self.p_not_better)}


# --------------------------------------------------------------------------------------------
# Row-wise rank metrics


def batch_roc_auc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC of 2-D arrays (B, n) (ties count one half, like sklearn); NaN for rows with one class.

    `y` may also be one label vector (n,) shared by every row of `scores`.
    """
    keys, n_pos = _rank_keys(y, scores)
    return _sorted_key_metrics(keys, n_pos)[0]


def batch_average_precision(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row-wise average precision identical to sklearn.metrics.average_precision_score, including tied scores.

    Tied scores form one threshold. NaN where a row has no positive. `y` may also be one label
    vector (n,) shared by every row of `scores`.
    """
    keys, n_pos = _rank_keys(y, scores)
    return _sorted_key_metrics(keys, n_pos)[1]


def _rank_keys(y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer sort keys `2 * dense_rank(score) + label` per row, and the positives per row."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D array (rows, n), got shape {s.shape}")
    labels = np.broadcast_to(_binary(y, "y"), s.shape)
    if s.shape[1] == 0:
        raise ValueError("rows must not be empty")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    order = np.argsort(s, axis=1)
    sorted_s = np.take_along_axis(s, order, axis=1)
    # dense rank of each score within its row, scattered back to the original positions
    dense = np.zeros(s.shape, dtype=np.int64)
    dense[:, 1:] = np.cumsum(sorted_s[:, 1:] != sorted_s[:, :-1], axis=1)
    ranks = np.empty_like(dense)
    np.put_along_axis(ranks, order, dense, axis=1)
    return 2 * ranks + labels, labels.sum(axis=1)


def _sorted_key_metrics(keys: np.ndarray, n_pos: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision per row from keys `2 * score_rank + label` (sorted in place).

    `n_pos` is the number of positives per row (or one count for all rows). After sorting, tied
    negatives precede tied positives, so the positions of the positives count the pairs with
    pos >= neg. Each position's tie group starts at index `start` with `below` positives
    (and `start - below` negatives) strictly below it, which gives
    - the pairs with pos > neg, sum over positives of (start - below); AUC is the mean of the
      two pair counts over n_pos * n_neg (ties count one half);
    - AP, the mean over positives of the precision at their group's threshold,
      (n_pos - below) / (n - start): tied rows share one threshold, as in sklearn.
    """
    keys.sort(axis=1)
    rows, n = keys.shape
    n_pos = np.broadcast_to(np.asarray(n_pos, dtype=np.int64), (rows,))
    pairs = n_pos * (n - n_pos)
    labels = keys & 1
    position = np.arange(n, dtype=keys.dtype)
    at_least = np.einsum("ij,j->i", labels, position, dtype=np.int64) - n_pos * (n_pos - 1) // 2

    # Group starts: keys differing in more than the label bit have different scores. `start` and
    # the positives before it never decrease along a row, so a running maximum of their values at
    # group starts spreads them over each group. Buffers are reused to limit memory traffic.
    start = np.empty_like(keys)
    start[:, 0] = 0
    np.bitwise_xor(keys[:, 1:], keys[:, :-1], out=start[:, 1:])
    new_group = start > 1
    np.multiply(new_group, position, out=start)
    np.maximum.accumulate(start, axis=1, out=start)
    below = np.cumsum(labels, axis=1, dtype=keys.dtype)
    below -= labels
    below *= new_group
    np.maximum.accumulate(below, axis=1, out=below)
    strictly = np.einsum("ij,ij->i", labels, start, dtype=np.int64) - np.einsum("ij,ij->i", labels, below, dtype=np.int64)

    np.subtract(n_pos[:, None].astype(keys.dtype), below, out=below)  # positives at or above the threshold
    np.subtract(n, start, out=start)  # rows at or above the threshold
    precision = below / start
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (at_least + strictly) / (2.0 * pairs)
        ap = np.einsum("ij,ij->i", labels, precision) / n_pos
    return np.where(pairs > 0, auc, np.nan), np.where(n_pos > 0, ap, np.nan)


# --------------------------------------------------------------------------------------------
# Paired bootstrap


def paired_bootstrap(
    y_true: Any,
    challenger_scores: Any,
    champion_scores: Any,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
    metrics: tuple[str, ...] = BOOTSTRAP_METRICS,
    max_cells: int = 4_000_000,
) -> dict[str, DifferenceCI]:
    """Percentile intervals of challenger-minus-champion for each metric, by metric name.

    `y_true` is 0/1 and the scores are positive-class probabilities (finite; within [0, 1] when
    log_loss or brier is requested). Resamples are paired (the same rows for both models) and
    stratified by class. Log loss clips probabilities to [1e-15, 1 - 1e-15]; accuracy predicts
    positive when `score >= threshold`. At most `max_cells` resampled rows (about 35 bytes each
    at the peak) are held at once: chunks of max(1, max_cells // n) resamples. The result depends
    only on the inputs and `seed`, not on `max_cells`: each resample consumes one uniform draw per
    row, in order.
    """
    y = _binary(y_true, "y_true")
    chal = np.asarray(challenger_scores, dtype=np.float64)
    champ = np.asarray(champion_scores, dtype=np.float64)
    metrics = tuple(dict.fromkeys(metrics))
    _validate(y, chal, champ, n_resamples, confidence, metrics, max_cells)
    n_resamples, max_cells = int(n_resamples), int(max_cells)

    # Reorder rows positives first: resample column j < n_pos then draws a positive, the rest a negative.
    class_order = np.concatenate([np.flatnonzero(y == 1), np.flatnonzero(y == 0)])
    y, chal, champ = y[class_order], chal[class_order], champ[class_order]
    n, n_pos = len(y), int(y.sum())
    counts = np.where(np.arange(n) < n_pos, n_pos, n - n_pos).astype(np.float64)
    offsets = np.where(np.arange(n) < n_pos, 0, n_pos)

    rank_metrics = [m for m in metrics if m in ("roc_auc", "pr_auc")]
    mean_metrics = [m for m in metrics if m not in rank_metrics]
    full: dict[str, tuple[float, float]] = {}
    keys: dict[str, np.ndarray] = {}
    if rank_metrics:
        for name, s in (("challenger", chal), ("champion", champ)):
            k = _rank_keys(y, s[None, :])[0][0]
            keys[name] = k.astype(np.int32) if 2 * n < np.iinfo(np.int32).max else k
        chal_auc, chal_ap = _sorted_key_metrics(keys["challenger"][None, :].copy(), n_pos)
        champ_auc, champ_ap = _sorted_key_metrics(keys["champion"][None, :].copy(), n_pos)
        full["roc_auc"] = float(chal_auc[0]), float(champ_auc[0])
        full["pr_auc"] = float(chal_ap[0]), float(champ_ap[0])
    # Mean-type metrics: the resampled difference of means is the mean of per-row differences.
    row_diff: dict[str, np.ndarray] = {}
    for m in mean_metrics:
        a, b = _row_losses(m, y, chal, threshold), _row_losses(m, y, champ, threshold)
        full[m] = float(a.mean()), float(b.mean())
        row_diff[m] = a - b

    diffs = {m: np.empty(n_resamples) for m in metrics}
    for lo, idx in resample_chunks(np.random.default_rng(seed), n_resamples, max_cells, counts, offsets):
        size = len(idx)
        if rank_metrics:
            auc_c, ap_c = _sorted_key_metrics(keys["challenger"][idx], n_pos)
            auc_h, ap_h = _sorted_key_metrics(keys["champion"][idx], n_pos)
            rank_diff = {"roc_auc": auc_c - auc_h, "pr_auc": ap_c - ap_h}
            for m in rank_metrics:
                diffs[m][lo : lo + size] = rank_diff[m]
        for m in mean_metrics:
            diffs[m][lo : lo + size] = row_diff[m][idx].mean(axis=1)

    return {m: difference_ci(m, full[m], diffs[m], confidence) for m in metrics}


def resample_chunks(rng: np.random.Generator, n_resamples: int, max_cells: int, counts: np.ndarray, offsets: np.ndarray):
    """Resampled row indices in chunks of at most `max_cells` cells: (first resample, index matrix).
    Column j of a resample draws uniformly from rows offsets[j] .. offsets[j] + counts[j] - 1 (one
    stratum), consuming one uniform draw per row in order, so the chunking never changes the draws."""
    n = len(counts)
    last = (counts - 1).astype(np.intp)
    chunk = max(1, max_cells // n)
    for lo in range(0, n_resamples, chunk):
        idx = (rng.random((min(chunk, n_resamples - lo), n)) * counts).astype(np.intp)
        np.minimum(idx, last, out=idx)  # guards against u * count rounding up to count
        idx += offsets
        yield lo, idx


def difference_ci(metric: str, full: tuple[float, float], diffs: np.ndarray, confidence: float) -> DifferenceCI:
    """The percentile interval of one metric's resampled differences, around its full-sample values."""
    alpha = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(diffs, [alpha, 1.0 - alpha])
    higher = higher_is_better(metric)
    not_better = diffs <= 0 if higher else diffs >= 0
    c, h = full
    return DifferenceCI(
        metric=metric, challenger=c, champion=h, difference=c - h, lower=float(lower), upper=float(upper),
        confidence=float(confidence), higher_is_better=higher, p_not_better=float(not_better.mean()),
    )  # fmt: skip


def _row_losses(metric: str, y: np.ndarray, p: np.ndarray, threshold: float) -> np.ndarray:
    """Per-row contribution of a mean-type metric."""
    if metric == "log_loss":
        q = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
        return -np.where(y == 1, np.log(q), np.log1p(-q))
    if metric == "brier":
        return (p - y) ** 2
    return ((p >= threshold) == (y == 1)).astype(np.float64)


def _binary(values: Any, name: str) -> np.ndarray:
    """0/1 labels as int64; bools and floats equal to 0.0/1.0 are accepted."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0/1 labels")
    return arr.astype(np.int64)


def _validate(
    y: np.ndarray, chal: np.ndarray, champ: np.ndarray, n_resamples: int, confidence: float, metrics: tuple[str, ...],
    max_cells: int,
) -> None:  # fmt: skip
    """Raise ValueError for inputs `paired_bootstrap` cannot use."""
    if y.ndim != 1 or chal.ndim != 1 or champ.ndim != 1:
        raise ValueError("y_true, challenger_scores and champion_scores must be 1-D")
    if not len(y) == len(chal) == len(champ):
        raise ValueError(f"lengths differ: y_true {len(y)}, challenger_scores {len(chal)}, champion_scores {len(champ)}")
    if len(y) == 0:
        raise ValueError("y_true is empty")
    if y.min() == y.max():
        raise ValueError(f"y_true has only one class ({int(y[0])}); the bootstrap needs both positives and negatives")
    check_resampling(n_resamples, confidence, max_cells)
    if not metrics:
        raise ValueError("metrics must not be empty")
    unknown = [m for m in metrics if m not in HIGHER_IS_BETTER]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(BOOTSTRAP_METRICS)}")
    if not (np.isfinite(chal).all() and np.isfinite(champ).all()):
        raise ValueError("scores must be finite")
    if {"log_loss", "brier"} & set(metrics) and (min(chal.min(), champ.min()) < 0.0 or max(chal.max(), champ.max()) > 1.0):
        raise ValueError("log_loss and brier need probabilities within [0, 1]")


def check_resampling(n_resamples: Any, confidence: float, max_cells: Any) -> None:
    """Raise ValueError for bootstrap settings no bootstrap can use (every task's shares this rule)."""
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 100:
        raise ValueError(f"n_resamples must be an integer >= 100, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence!r}")
    if int(max_cells) != max_cells or max_cells < 1:
        raise ValueError(f"max_cells must be a positive integer, got {max_cells!r}")
