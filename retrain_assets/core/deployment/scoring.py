"""Fast scoring of validated request rows: the fitted pipeline replayed with numpy (`RowScorer`),
used only where it reproduces scikit-learn. Pure: no web framework or registry here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY, REGRESSION
from retrain_assets.core.training.modeling import align_probabilities, estimator_outputs, predict_outputs


class RowScorer:
    """The task's predictions for validated request rows (dicts), for one fitted pipeline.

    sklearn's per-call overhead (frame checks, column selection) is milliseconds for a one-row
    frame, most of a single-row request. For the pipeline `core.training.modeling.build_pipeline`
    makes (median impute + scale, most-frequent impute + one-hot with declared categories, then
    the task's estimator; numeric features, categorical ones or both) the preprocessing is replayed
    with numpy from the fitted parameters; a
    linear model is a dot product (logistic: sigmoid, or softmax for a multinomial model; ridge:
    the value itself), gradient boosting gets the array. The fast path is used only if it
    reproduces sklearn on probe rows (to 1e-9, relative to the predictions' scale when that
    exceeds 1, as a regression's values may); otherwise, and for any other pipeline, every call
    goes through sklearn.
    """

    def __init__(self, pipeline, spec: DatasetSpec):
        self.pipeline, self.spec = pipeline, spec
        self.fast = False
        try:
            self._compile()
            probe = self._probe_rows()
            expected = self._sklearn(probe)
            tolerance = 1e-9 * max(1.0, float(np.max(np.abs(expected))))
            self.fast = bool(np.max(np.abs(self._fast(probe) - expected)) <= tolerance)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            self.fast = False

    def predict(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Each row's prediction in the task's shape (`core.training.modeling.predict_outputs`):
        binary the positive-class probability, multiclass (rows, k) class probabilities in
        `target.classes` order, regression the predicted value."""
        return self._fast(rows) if self.fast else self._sklearn(rows)

    def score(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Probability of the positive class for each row (binary targets; other tasks: `predict`)."""
        if self.spec.target.type != BINARY:
            raise ValueError(f"score is the positive-class probability of a binary target; this target is "
                             f"{self.spec.target.type}: use predict")
        return self.predict(rows)

    def _sklearn(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return predict_outputs(self.pipeline, pd.DataFrame.from_records(rows), self.spec)

    def _compile(self) -> None:
        features, self.estimator = self.pipeline.named_steps["features"], self.pipeline.named_steps["model"]
        self.numeric, self.categorical = list(self.spec.numeric_features), list(self.spec.categorical_features)
        expected = ["numeric"] * bool(self.numeric) + ["categorical"] * bool(self.categorical)
        if [t[0] for t in features.transformers_ if t[0] != "remainder"] != expected:
            raise ValueError("not the pipeline shape the fast path reproduces")
        self.median, self.mean, self.scale, self.lookup = np.zeros(0), np.zeros(0), np.ones(0), []
        if self.numeric:
            numeric = features.named_transformers_["numeric"]
            self.median = numeric.named_steps["impute"].statistics_.astype(float)
            self.mean, self.scale = numeric.named_steps["scale"].mean_, numeric.named_steps["scale"].scale_
        if self.categorical:
            encoder = features.named_transformers_["categorical"].named_steps["onehot"]
            if encoder.handle_unknown != "ignore":
                raise ValueError("not the pipeline shape the fast path reproduces")
            # None is not sklearn's missing marker in an object column: it reaches the encoder as an unknown category.
            self.lookup = [{str(v): i for i, v in enumerate(c)} for c in encoder.categories_]
        self.width = len(self.numeric) + sum(len(c) for c in self.lookup)
        self.linear = hasattr(self.estimator, "coef_")

    def _fast(self, rows: list[dict[str, Any]]) -> np.ndarray:
        x = np.zeros((len(rows), self.width))
        values = np.array([[np.nan if r.get(n) is None else float(r[n]) for n in self.numeric] for r in rows],
                          dtype=float).reshape(len(rows), len(self.numeric))
        values = np.where(np.isnan(values), self.median, values)
        x[:, :len(self.numeric)] = (values - self.mean) / self.scale
        offset = len(self.numeric)
        for name, lookup in zip(self.categorical, self.lookup):
            for i, row in enumerate(rows):
                k = lookup.get(str(row.get(name))) if row.get(name) is not None else None
                if k is not None:
                    x[i, offset + k] = 1.0
            offset += len(lookup)
        return self._estimate(x)

    def _estimate(self, x: np.ndarray) -> np.ndarray:
        """The estimator's task-shaped output for preprocessed rows, a dot product where it is linear."""
        estimator, target = self.estimator, self.spec.target
        if not self.linear:
            return estimator_outputs(estimator, x, target)
        if target.type == REGRESSION:
            return x @ estimator.coef_ + estimator.intercept_
        if estimator.coef_.shape[0] == 1:  # two classes: a logistic (sigmoid) model
            positive = 1.0 / (1.0 + np.exp(-(x @ estimator.coef_[0] + estimator.intercept_[0])))
            if target.type == BINARY:
                return positive
            proba = np.column_stack([1.0 - positive, positive])
        else:  # multinomial: softmax of the class scores
            z = x @ estimator.coef_.T + estimator.intercept_
            proba = np.exp(z - z.max(axis=1, keepdims=True))
            proba /= proba.sum(axis=1, keepdims=True)
        return align_probabilities(proba, estimator.classes_, len(target.classes))

    def _probe_rows(self) -> list[dict[str, Any]]:
        """Rows spread over the scaler's range and every declared category, with missing values."""
        rows = []
        for k in range(24):
            row: dict[str, Any] = {}
            for j, name in enumerate(self.numeric):
                row[name] = None if (k + j) % 7 == 3 else float(self.mean[j] + ((k * 5 + j) % 9 - 4) * 0.7 * self.scale[j])
            for j, (name, lookup) in enumerate(zip(self.categorical, self.lookup)):
                keys = list(lookup)
                row[name] = keys[(k + j) % len(keys)] if keys else None
            rows.append(row)
        return rows
