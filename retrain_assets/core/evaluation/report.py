"""Champion vs challenger on the same time-held-out window, and the promotion gate that reads it.

`build_evaluation_report` turns both models' scores into one JSON-able report: metrics per model,
paired bootstrap intervals of the challenger - champion differences, calibration bins, per-slice
metrics and fairness gaps. `promotion_gate` applies the policy to that report and says, per
criterion and with the numbers, what passed and what did not.
"""

from __future__ import annotations

import io
import math
import pickle
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, demographic_parity_difference, equal_opportunity_difference
from sklearn.metrics import roc_auc_score

from retrain_assets.core.evaluation.bootstrap import batch_average_precision, batch_roc_auc, paired_bootstrap
from retrain_assets.core.policy.definition import Policy

CALIBRATION_BINS = 10
CHALLENGER, CHAMPION = "challenger", "champion"


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Ranking (ROC AUC, PR AUC), probabilistic (log loss, Brier, ECE) and thresholded metrics
    (accuracy, F1, precision, recall at `threshold`) of positive-class scores.

    ROC AUC and PR AUC are NaN when the window holds one class only (undefined, not 0.5).
    """
    y_true = np.asarray(y_true, dtype=int)
    scores = np.clip(np.asarray(scores, dtype=float), 1e-15, 1 - 1e-15)
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty window")
    both_classes = len(np.unique(y_true)) == 2
    predicted = scores >= threshold
    # Computed in numpy (the rank metrics by the bootstrap's exact kernels), equal to scikit-learn's
    # (tested): scikit-learn's input checks cost milliseconds per call, and a backtest calls this
    # thousands of times.
    positive = y_true == 1
    tp = float(np.sum(predicted & positive))
    fp = float(np.sum(predicted & ~positive))
    fn = float(np.sum(~predicted & positive))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "roc_auc": float(batch_roc_auc(y_true, scores[None, :])[0]) if both_classes else float("nan"),
        "pr_auc": float(batch_average_precision(y_true, scores[None, :])[0]) if both_classes else float("nan"),
        "log_loss": float(-np.mean(np.where(positive, np.log(scores), np.log1p(-scores)))),
        "brier": float(np.mean((scores - y_true) ** 2)),
        "ece": expected_calibration_error(y_true, scores),
        "accuracy": float(np.mean(predicted == positive)),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "precision": precision,
        "recall": recall,
        "threshold": float(threshold),
        "n_rows": float(len(y_true)),
        "positive_rate": float(y_true.mean()),
    }


def calibration_bins(y_true: np.ndarray, scores: np.ndarray, n_bins: int = CALIBRATION_BINS) -> dict[str, list[float]]:
    """Mean score, observed positive rate and row count of each non-empty equal-width score bin."""
    y_true = np.asarray(y_true, dtype=float)
    scores = np.asarray(scores, dtype=float)
    bins = np.minimum((scores * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    filled = count > 0
    mean_predicted = np.bincount(bins, weights=scores, minlength=n_bins)[filled] / count[filled]
    fraction_positive = np.bincount(bins, weights=y_true, minlength=n_bins)[filled] / count[filled]
    return {"mean_predicted": mean_predicted.tolist(), "fraction_positive": fraction_positive.tolist(),
            "count": count[filled].astype(float).tolist()}


def expected_calibration_error(y_true: np.ndarray, scores: np.ndarray, n_bins: int = CALIBRATION_BINS) -> float:
    """Row-weighted mean gap between mean score and observed positive rate over equal-width bins."""
    bins = calibration_bins(y_true, scores, n_bins)
    count = np.asarray(bins["count"])
    gaps = np.abs(np.asarray(bins["mean_predicted"]) - np.asarray(bins["fraction_positive"]))
    return float((count * gaps).sum() / count.sum())


def _auc_or_nan(y_true, scores) -> float:
    return float(roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else float("nan")


def _true_positive_rate(y_true, y_pred) -> float:
    positives = np.asarray(y_true) == 1
    return float(np.asarray(y_pred)[positives].mean()) if positives.any() else float("nan")


def group_metrics(y_true: np.ndarray, scores: np.ndarray, groups: pd.Series, threshold: float) -> pd.DataFrame:
    """Per value of `groups`: rows, positive rate, ROC AUC, accuracy, selection rate and TPR."""
    y_true = np.asarray(y_true, dtype=int)
    scores = np.asarray(scores, dtype=float)
    frame = MetricFrame(
        metrics={
            "n_rows": lambda y, s: float(len(y)),
            "positive_rate": lambda y, s: float(np.mean(y)),
            "roc_auc": _auc_or_nan,
            "accuracy": lambda y, s: float(np.mean(y == (s >= threshold))),
            "selection_rate": lambda y, s: float(np.mean(s >= threshold)),
            "true_positive_rate": lambda y, s: _true_positive_rate(y, s >= threshold),
        },
        y_true=y_true,
        y_pred=scores,
        sensitive_features=groups.astype(str).to_numpy(),
    )
    return frame.by_group.reset_index(names="value").astype({"value": str})


def fairness_gaps(y_true: np.ndarray, scores: np.ndarray, sensitive: pd.Series, threshold: float) -> dict[str, float]:
    """Demographic-parity difference (spread of the positive-prediction rate across groups) and
    equal-opportunity difference (spread of the true-positive rate), both from fairlearn."""
    y_true = np.asarray(y_true, dtype=int)
    predicted = (np.asarray(scores) >= threshold).astype(int)
    groups = sensitive.astype(str).to_numpy()
    has_positives = all((y_true[groups == g] == 1).any() for g in np.unique(groups))
    return {
        "demographic_parity_difference": float(demographic_parity_difference(y_true, predicted, sensitive_features=groups)),
        "equal_opportunity_difference": float(equal_opportunity_difference(y_true, predicted, sensitive_features=groups))
        if has_positives else float("nan"),
    }


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
    predictions = {role: (np.asarray(s) >= threshold) for role, s in (("challenger", challenger_scores), ("champion", champion_scores))}

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
    for gap in _GAPS:
        if gap == "equal_opportunity_difference" and not has_positives:
            continue
        increase = np.concatenate(draws[f"challenger/{gap}"]) - np.concatenate(draws[f"champion/{gap}"])
        result[gap] = {"increase": float(point[f"challenger/{gap}"][0] - point[f"champion/{gap}"][0]),
                       "lower": float(np.quantile(increase, alpha)), "upper": float(np.quantile(increase, 1 - alpha))}
    return result


def inference_cost(model, features: pd.DataFrame, repeats: int = 3) -> dict[str, float]:
    """Time to score one batch of 1,000 rows (best of `repeats`; the given rows, repeated or cut
    to 1,000) and the model's serialized (pickle) size."""
    if features.empty:
        raise ValueError("need at least one row to time the model")
    batch = features.iloc[np.arange(1000) % len(features)]
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict_proba(batch)
        best = min(best, time.perf_counter() - started)
    buffer = io.BytesIO()
    pickle.dump(model, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    return {"latency_ms_per_1000_rows": best * 1000.0,
            "model_size_bytes": float(buffer.tell())}


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


@dataclass(frozen=True)
class Criterion:
    """One gate criterion: a short name, whether it passed, and the sentence with the numbers."""

    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class GateResult:
    """The promotion decision with one plain-words criterion per check."""

    passed: bool
    criteria: list[Criterion]

    @property
    def summary(self) -> str:
        verdict = "PROMOTE" if self.passed else "KEEP CHAMPION"
        return f"{verdict}: " + "; ".join(f"{c.detail} ({'pass' if c.passed else 'FAIL'})" for c in self.criteria)

    @property
    def headline(self) -> str:
        """The verdict and only what failed: what a person scanning the UI needs first."""
        failed = [c for c in self.criteria if not c.passed]
        if not failed:
            return f"PROMOTE: all {len(self.criteria)} criteria passed"
        return (f"KEEP CHAMPION: {len(failed)} of {len(self.criteria)} criteria failed: "
                + "; ".join(f"{c.name}: {c.detail}" for c in failed))

    def to_dict(self) -> dict:
        return {"passed": self.passed, "summary": self.summary, "criteria": [c.to_dict() for c in self.criteria]}


def promotion_gate(report: dict, policy: Policy) -> GateResult:
    """Apply the policy to an evaluation report.

    Absolute SLOs (every model): ROC AUC, calibration error, latency, fairness gaps. Against a
    champion: superiority or non-inferiority on the bootstrap interval of the ROC AUC
    difference, no segment slice regressing beyond the margin, no fairness gap growing beyond
    the margin. Without a champion (the first model) only the SLOs apply.
    """
    promotion = policy.promotion
    challenger = report["models"][CHALLENGER]
    auc = challenger["roc_auc"]
    if _missing(auc):
        return GateResult(False, [Criterion("slo_roc_auc", False,
                                            "challenger ROC AUC is undefined on the holdout (one class only): collect more labels")])
    criteria = [
        _at_least("slo_roc_auc", "ROC AUC", auc, policy.min_roc_auc),
        _calibration_slo(challenger, promotion.max_calibration_error, promotion.min_calibration_rows),
        _at_most("slo_latency", "latency per 1,000 rows (ms)", challenger["latency_ms_per_1000_rows"],
                 promotion.max_latency_ms_per_1000_rows, digits=1),
    ]
    criteria += _fairness_slo(challenger, promotion.max_fairness_gap)
    champion = report["models"].get(CHAMPION)
    if champion is None:
        criteria.append(Criterion("champion", True, "no champion yet: judged on the absolute SLOs alone"))
    else:
        criteria.append(_comparison(report, policy))
        criteria.append(_slices(report, policy))
        criteria += _fairness_vs_champion(report.get("fairness_changes", {}), promotion.max_fairness_gap_increase,
                                          promotion.confidence_level)
    return GateResult(all(c.passed for c in criteria), criteria)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _at_least(name: str, label: str, value: float, floor: float, digits: int = 3) -> Criterion:
    ok = value >= floor
    return Criterion(name, ok, f"{label} {value:.{digits}f} {'>=' if ok else '<'} SLO {floor:.{digits}f}")


def _at_most(name: str, label: str, value: float, ceiling: float, digits: int = 3) -> Criterion:
    ok = value <= ceiling
    return Criterion(name, ok, f"{label} {value:.{digits}f} {'<=' if ok else '>'} SLO {ceiling:.{digits}f}")


def _calibration_slo(challenger: dict, ceiling: float, min_rows: int) -> Criterion:
    if challenger["n_rows"] < min_rows:
        return Criterion("slo_calibration", True, f"expected calibration error {challenger['ece']:.3f} not judged: "
                                                  f"{challenger['n_rows']:.0f} held-out rows, needs {min_rows}")
    return _at_most("slo_calibration", "expected calibration error", challenger["ece"], ceiling)


_GAPS = {"demographic_parity_difference": "demographic-parity gap", "equal_opportunity_difference": "equal-opportunity gap"}


def _fairness_slo(challenger: dict, ceiling: float) -> list[Criterion]:
    present = [key for key in _GAPS if key in challenger]
    if not present:
        return [Criterion("slo_fairness", True, "no sensitive attribute declared: fairness not measured")]
    out = []
    for key in present:
        if _missing(challenger[key]):
            out.append(Criterion(f"slo_{key}", True, f"{_GAPS[key]} undefined (a group without positives): not judged"))
        else:
            out.append(_at_most(f"slo_{key}", _GAPS[key], challenger[key], ceiling))
    return out


def _comparison(report: dict, policy: Policy) -> Criterion:
    promotion = policy.promotion
    ci = next(d for d in report["differences"] if d["metric"] == "roc_auc")
    level = f"{promotion.confidence_level:.0%} CI"
    interval = f"ROC AUC difference {ci['difference']:+.4f} [{level} {ci['lower']:+.4f}, {ci['upper']:+.4f}]"
    if promotion.comparison == "superiority":
        ok = ci["lower"] > 0
        return Criterion("superiority", ok, f"superiority: {interval}; lower bound {'>' if ok else '<='} 0")
    floor = -promotion.non_inferiority_margin
    ok = ci["lower"] > floor
    return Criterion("non_inferiority", ok,
                     f"non-inferiority: {interval}; lower bound {'>' if ok else '<='} -{promotion.non_inferiority_margin:.3f} (margin)")


def _slices(report: dict, policy: Policy) -> Criterion:
    promotion = policy.promotion
    if not report["slices"]:
        return Criterion("slices", True, "no segment columns declared: slices not compared")
    table = pd.DataFrame(report["slices"]).pivot_table(index=["column", "value"], columns="role",
                                                       values=["roc_auc", "n_rows"], aggfunc="first", dropna=False)
    comparable = table[(table[("n_rows", CHALLENGER)] >= promotion.min_slice_rows)
                       & table[("roc_auc", CHALLENGER)].notna() & table[("roc_auc", CHAMPION)].notna()]
    skipped = len(table) - len(comparable)
    if comparable.empty:
        return Criterion("slices", True, f"no slice has {promotion.min_slice_rows}+ rows with both classes: slices not compared")
    delta = comparable[("roc_auc", CHALLENGER)] - comparable[("roc_auc", CHAMPION)]
    worst = delta.idxmin()
    regressed = delta[delta < -promotion.max_slice_roc_auc_regression]
    ok = regressed.empty
    worst_text = (f"{worst[0]}={worst[1]} {comparable.loc[worst, ('roc_auc', CHALLENGER)]:.3f} vs "
                  f"{comparable.loc[worst, ('roc_auc', CHAMPION)]:.3f} ({delta[worst]:+.3f})")
    head = (f"slices: {len(regressed)} of {len(comparable)} regress by more than {promotion.max_slice_roc_auc_regression:.3f} "
            f"ROC AUC; worst {worst_text}")
    return Criterion("slices", ok, head + (f"; {skipped} slices too small to judge" if skipped else ""))


def _fairness_vs_champion(changes: dict, margin: float, confidence: float) -> list[Criterion]:
    """A gap fails when it grew by more than the margin and the growth is significant (the
    interval's lower bound is above 0): a noisy gap on small groups does not block on its own."""
    out = []
    for key, label in _GAPS.items():
        if key not in changes:
            continue
        change = changes[key]
        worse = change["increase"] > margin and change["lower"] > 0
        out.append(Criterion(f"{key}_vs_champion", not worse,
                             f"{label} change {change['increase']:+.3f} [{confidence:.0%} CI {change['lower']:+.3f}, "
                             f"{change['upper']:+.3f}] vs margin +{margin:.3f}"
                             + (": grew significantly beyond the margin" if worse else "")))
    return out
