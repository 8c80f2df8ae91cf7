"""The task a dataset's target defines: binary, multiclass or regression.

Every stage asks this module what its task means instead of assuming a binary probability: how
labels are encoded for a model, which label values the task's contract accepts, which metrics it
reports and which one is primary (the one the promotion gate, the canary, the performance clause
and the backtest compare).

Predictions travel between the stages in one shape per task:
- binary: a 1-D array, the probability of `target.positive` (the `score` column);
- multiclass: a 2-D array (rows, classes), the probability of each class in `target.classes`
  order; the predicted class is the most probable one;
- regression: a 1-D array, the predicted value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the spec validates targets with this module's rules: no import back at run time
    from retrain_assets.core.spec import TargetSpec

TASK_TYPES = ("binary", "multiclass", "regression")
BINARY, MULTICLASS, REGRESSION = TASK_TYPES


@dataclass(frozen=True)
class Metric:
    """A metric a task reports: its name (the key in reports and the column stem in tables), the
    words people read, and its direction."""

    name: str
    label: str
    higher_is_better: bool
    doc: str


_METRICS = (
    Metric("roc_auc", "ROC AUC", True, "Area under the ROC curve of the positive-class scores."),
    Metric("pr_auc", "PR AUC", True, "Average precision of the positive-class scores."),
    Metric("log_loss", "log loss", False, "Cross-entropy of the predicted probabilities of the true class."),
    Metric("brier", "Brier score", False, "Mean squared error of the positive-class scores."),
    Metric("ece", "expected calibration error", False, "Row-weighted gap between confidence and accuracy over 10 bins "
                                                       "(binary: positive-class score; multiclass: top-label confidence)."),
    Metric("accuracy", "accuracy", True, "Share of rows whose predicted class is the label."),
    Metric("f1", "F1", True, "F1 of the positive class at the operating threshold."),
    Metric("macro_roc_auc", "macro ROC AUC", True, "Unweighted mean over the classes of one-vs-rest ROC AUC."),
    Metric("macro_f1", "macro F1", True, "Unweighted mean over the classes of F1."),
    Metric("mae", "MAE", False, "Mean absolute error, in the label's units."),
    Metric("rmse", "RMSE", False, "Root mean squared error, in the label's units."),
    Metric("r2", "R²", True, "Coefficient of determination (1 - squared error / variance of the labels)."),
)
METRICS: dict[str, Metric] = {m.name: m for m in _METRICS}

# What each task reports, primary metric first.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    BINARY: ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "accuracy", "f1"),
    MULTICLASS: ("macro_roc_auc", "log_loss", "macro_f1", "accuracy", "ece"),
    REGRESSION: ("mae", "rmse", "r2"),
}
PRIMARY_METRICS: dict[str, str] = {task: names[0] for task, names in TASK_METRICS.items()}
# The metrics a task's paired bootstrap compares (`evaluation.task_bootstrap.TASK_BOOTSTRAP_METRICS`):
# the ones that can be a primary metric. ECE and binary F1 are reported but not compared.
COMPARABLE_METRICS: dict[str, tuple[str, ...]] = {
    task: tuple(m for m in names if m not in ("ece", "f1")) for task, names in TASK_METRICS.items()
}


def primary_metric_problem(metric: str | None, task: str) -> str | None:
    """Why `performance.primary_metric` cannot be the primary metric of `task`; None when it can."""
    if metric is None or metric in COMPARABLE_METRICS[task]:
        return None
    return (f"policy.performance.primary_metric {metric!r} is not a metric a {task} target's gate can compare; "
            f"use one of {list(COMPARABLE_METRICS[task])} (or leave it empty for {PRIMARY_METRICS[task]})")


# Metrics in the label's own units (any scale): shown with four significant digits, not three decimals.
UNIT_METRICS = ("mae", "rmse")


def format_metric(value: float, metric: str, digits: int = 3, sign: str = "") -> str:
    """A metric's value as reasons and tables print it: `digits` decimals for a score, four
    significant digits for a metric in the label's units; `sign` "+" shows the sign."""
    return f"{value:{sign}.4g}" if metric in UNIT_METRICS else f"{value:{sign}.{digits}f}"


def primary_metric(target: TargetSpec) -> str:
    """The metric the task's decisions compare (binary ROC AUC, multiclass macro ROC AUC, regression MAE)."""
    return PRIMARY_METRICS[target.type]


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better."""
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    return METRICS[metric].higher_is_better


def class_texts(target: TargetSpec) -> list[str]:
    """The declared classes as the text label files carry them (empty for regression)."""
    return [str(c) for c in target.classes]


def encode_labels(labels: Any, target: TargetSpec) -> np.ndarray:
    """Labels as a model takes them: binary 1 for the positive class else 0; multiclass the index
    of the class in `target.classes`; regression the number (float).

    Raises ValueError naming the first value the task's contract refuses (see `label_problem`).
    """
    values = pd.Series(labels, dtype=object) if not isinstance(labels, pd.Series) else labels
    if target.type == BINARY:
        return (values == target.positive).to_numpy(dtype=int)
    if target.type == MULTICLASS:
        index = {text: i for i, text in enumerate(class_texts(target))}
        codes = values.map(lambda v: index.get(str(v), -1)).to_numpy(dtype=int)
        if (codes < 0).any():
            bad = values.iloc[int(np.flatnonzero(codes < 0)[0])]
            raise ValueError(label_problem(bad, target))
        return codes
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    invalid = ~np.isfinite(numbers)
    if invalid.any():
        raise ValueError(label_problem(values.iloc[int(np.flatnonzero(invalid)[0])], target))
    return numbers


def label_problem(value: Any, target: TargetSpec) -> str | None:
    """Why a delivered label breaks the task's label contract, in words that say what to fix; None
    when it is valid. Classification: one of the declared classes (compared as text). Regression: a
    finite number within [target.min, target.max] where those are declared."""
    if target.is_classification:
        classes = class_texts(target)
        if str(value) in classes:
            return None
        return (f"{target.name}: {_shown(value)} is not one of the declared classes {classes}: correct the label file, "
                f"or declare the class under target.classes in the spec")
    number = label_number(value)
    if number is None:
        return f"{target.name}: {_shown(value)} is not a number: a regression label must be a finite number"
    if target.min is not None and number < target.min:
        return (f"{target.name}: {number:g} is below the declared minimum {target.min:g} (target.min): correct the "
                f"label file, or widen target.min in the spec")
    if target.max is not None and number > target.max:
        return (f"{target.name}: {number:g} is above the declared maximum {target.max:g} (target.max): correct the "
                f"label file, or widen target.max in the spec")
    return None


def _shown(value: Any) -> str:
    """A delivered value as a person reads it: text quoted, numbers plain (numpy scalars unwrapped)."""
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value) if isinstance(value, str) else str(value)


def label_number(value: Any) -> float | None:
    """A regression label as a finite float, or None when it is not one (text, NaN, infinity, a bool)."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def label_dtype(target: TargetSpec) -> Any:
    """The dtype resolved labels are stored with: float for regression, else one that holds every class."""
    if target.type == REGRESSION:
        return "float64"
    classes = target.classes
    if all(isinstance(c, bool) for c in classes):
        return bool
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "int64"
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        return "float64"
    return object


def scores(predictions: Any, target: TargetSpec) -> np.ndarray:
    """The predictions in one number per row (the `score` the prediction log, the review queue and the
    labeling requests keep): binary P(positive), multiclass the top class's probability, regression
    the predicted value."""
    values = np.asarray(predictions, dtype=float)
    return values.max(axis=1) if target.type == MULTICLASS else values


def predicted_classes(probabilities: np.ndarray, target: TargetSpec) -> np.ndarray:
    """Multiclass: the most probable class of each row (ties: the earlier class in `target.classes`)."""
    proba = np.asarray(probabilities, dtype=float)
    if proba.ndim != 2 or proba.shape[1] != len(target.classes):
        raise ValueError(f"expected probabilities of shape (rows, {len(target.classes)}), got {proba.shape}")
    return np.asarray(target.classes, dtype=object)[proba.argmax(axis=1)]

