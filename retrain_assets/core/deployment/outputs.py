"""What one model's output for one request row becomes, per task: the fields of the service's
answer and of the prediction-log record (see `core.tasks` for the prediction shapes).

- binary: `score` (probability of the positive class) and `label` (the class at the operating
  threshold);
- multiclass: `label` (the most probable class), `score` (its probability) and `probabilities`
  (every declared class -> its probability); the log keeps `predicted_label` and
  `class_probabilities` (a list in `target.classes` order);
- regression: `prediction` (the predicted value) and, when the version carries one, `interval`
  (`low`, `high`, `level`: a split-conformal interval from its holdout residuals, see
  `core.evaluation.task_metrics.conformal_half_width`); the log keeps the prediction as `score`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, class_texts, scores

# The regression interval's coverage, and the model-version tag holding its half width.
INTERVAL_LEVEL = 0.9
INTERVAL_TAG = "prediction_interval_half_width"

# Log columns beyond the common ones (`core.deployment.serving.LOG_COLUMN_TYPES`), per task.
TASK_LOG_COLUMNS: dict[str, dict[str, str]] = {MULTICLASS: {"predicted_label": "string", "class_probabilities": "object"}}


def answer_fields(output: Any, spec: DatasetSpec, half_width: float | None = None) -> dict[str, Any]:
    """The answer's fields for one row from its model output (a float, or a probability row for
    multiclass); `half_width` (regression, optional) adds the interval."""
    target = spec.target
    if target.type == BINARY:
        score = float(output)
        negative = next(c for c in target.classes if c != target.positive)
        label = target.positive if score >= spec.policy.promotion.operating_threshold else negative
        return {"score": score, "label": label}
    if target.type == MULTICLASS:
        proba = np.asarray(output, dtype=float)
        top = int(proba.argmax())
        return {"label": target.classes[top], "score": float(proba[top]),
                "probabilities": {text: float(p) for text, p in zip(class_texts(target), proba)}}
    value = float(output)
    if half_width is None or not np.isfinite(half_width):
        return {"prediction": value}
    return {"prediction": value, "interval": {"low": value - half_width, "high": value + half_width, "level": INTERVAL_LEVEL}}


def log_fields(output: Any, spec: DatasetSpec) -> dict[str, Any]:
    """The prediction-log fields of one row's model output (`score` for every task)."""
    score = float(scores(np.asarray(output, dtype=float)[None], spec.target)[0])
    if spec.target.type == MULTICLASS:
        proba = np.asarray(output, dtype=float)
        return {"score": score, "predicted_label": class_texts(spec.target)[int(proba.argmax())],
                "class_probabilities": [float(p) for p in proba]}
    return {"score": score}


def score_meaning(spec: DatasetSpec) -> str:
    """What the logged `score` holds for the spec's task, for the catalog."""
    if spec.target.type == BINARY:
        return f"Probability of the positive class ({spec.target.positive!r})."
    if spec.target.type == MULTICLASS:
        return "Probability of the predicted (most probable) class."
    return f"The predicted value of {spec.target.name}."
