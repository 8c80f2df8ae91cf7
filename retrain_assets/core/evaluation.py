"""Model evaluation on a held-out window and the promotion gate that reads it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from retrain_assets.core.policy import Policy


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC AUC, accuracy at `threshold`, log loss and Brier score of positive-class scores.

    ROC AUC is NaN when the window holds one class only (it is undefined, not 0.5).
    """
    y_true = np.asarray(y_true, dtype=int)
    scores = np.clip(np.asarray(scores, dtype=float), 1e-15, 1 - 1e-15)
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty window")
    both_classes = len(np.unique(y_true)) == 2
    return {
        "roc_auc": float(roc_auc_score(y_true, scores)) if both_classes else float("nan"),
        "accuracy": float(accuracy_score(y_true, scores >= threshold)),
        "log_loss": float(log_loss(y_true, scores, labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, scores)),
        "n_rows": float(len(y_true)),
        "positive_rate": float(y_true.mean()),
    }


@dataclass(frozen=True)
class GateResult:
    """The promotion decision with one plain-words line per criterion."""

    passed: bool
    criteria: list[str]

    @property
    def summary(self) -> str:
        verdict = "PROMOTE" if self.passed else "KEEP CHAMPION"
        return f"{verdict}: " + "; ".join(self.criteria)


def promotion_gate(challenger: dict[str, float], champion: dict[str, float] | None, policy: Policy) -> GateResult:
    """Absolute SLO on ROC AUC, then non-inferiority against the champion on the same window.

    Without a champion (the first model) only the absolute SLO applies.
    """
    criteria: list[str] = []
    passed = True
    auc = challenger["roc_auc"]
    if np.isnan(auc):
        return GateResult(False, ["challenger ROC AUC is undefined on the holdout (one class only): collect more labels"])
    ok = auc >= policy.min_roc_auc
    passed &= ok
    criteria.append(f"SLO ROC AUC {auc:.3f} {'>=' if ok else '<'} {policy.min_roc_auc:.3f} ({'pass' if ok else 'FAIL'})")
    if champion is None:
        criteria.append("no champion yet: judged on the SLO alone")
        return GateResult(bool(passed), criteria)
    floor = champion["roc_auc"] - policy.max_roc_auc_regression
    ok = auc >= floor
    passed &= ok
    criteria.append(
        f"non-inferiority: challenger {auc:.3f} vs champion {champion['roc_auc']:.3f} "
        f"(floor {floor:.3f}, margin {policy.max_roc_auc_regression:.3f}) ({'pass' if ok else 'FAIL'})"
    )
    return GateResult(bool(passed), criteria)
