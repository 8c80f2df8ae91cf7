"""Fast scoring of validated request rows: the fitted pipeline replayed with numpy (`RowScorer`),
used only where it reproduces scikit-learn. Pure: no web framework or registry here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.training.modeling import feature_frame


class RowScorer:
    """Positive-class probabilities for validated request rows (dicts), for one fitted pipeline.

    sklearn's per-call overhead (frame checks, column selection) is milliseconds for a one-row
    frame, most of a single-row request. For the pipeline `core.training.modeling.build_pipeline`
    makes (median impute + scale, most-frequent impute + one-hot with declared categories, then
    logistic regression or gradient boosting) the preprocessing is replayed with numpy from the fitted
    parameters; a logistic model is a dot product, gradient boosting gets the array. The fast
    path is used only if it reproduces sklearn on probe rows (to 1e-9); otherwise, and for any
    other pipeline, every call goes through sklearn.
    """

    def __init__(self, pipeline, spec: DatasetSpec):
        self.pipeline, self.spec = pipeline, spec
        self.fast = False
        try:
            self._compile()
            probe = self._probe_rows()
            self.fast = bool(np.max(np.abs(self._fast(probe) - self._sklearn(probe))) <= 1e-9)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            self.fast = False

    def score(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Probability of the positive class for each row."""
        return self._fast(rows) if self.fast else self._sklearn(rows)

    def _sklearn(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return self.pipeline.predict_proba(feature_frame(pd.DataFrame.from_records(rows), self.spec))[:, 1]

    def _compile(self) -> None:
        features, self.classifier = self.pipeline.named_steps["features"], self.pipeline.named_steps["model"]
        numeric, categorical = features.named_transformers_["numeric"], features.named_transformers_["categorical"]
        self.numeric, self.categorical = list(self.spec.numeric_features), list(self.spec.categorical_features)
        self.median = numeric.named_steps["impute"].statistics_.astype(float)
        self.mean, self.scale = numeric.named_steps["scale"].mean_, numeric.named_steps["scale"].scale_
        encoder = categorical.named_steps["onehot"]
        if encoder.handle_unknown != "ignore" or [t[0] for t in features.transformers_ if t[0] != "remainder"] != ["numeric", "categorical"]:
            raise ValueError("not the pipeline shape the fast path reproduces")
        # None is not sklearn's missing marker in an object column: it reaches the encoder as an unknown category.
        self.lookup = [{str(v): i for i, v in enumerate(c)} for c in encoder.categories_]
        self.width = len(self.numeric) + sum(len(c) for c in self.lookup)
        self.linear = hasattr(self.classifier, "coef_")

    def _fast(self, rows: list[dict[str, Any]]) -> np.ndarray:
        x = np.zeros((len(rows), self.width))
        values = np.array([[np.nan if r.get(n) is None else float(r[n]) for n in self.numeric] for r in rows], dtype=float)
        values = np.where(np.isnan(values), self.median, values)
        x[:, :len(self.numeric)] = (values - self.mean) / self.scale
        offset = len(self.numeric)
        for name, lookup in zip(self.categorical, self.lookup):
            for i, row in enumerate(rows):
                k = lookup.get(str(row.get(name))) if row.get(name) is not None else None
                if k is not None:
                    x[i, offset + k] = 1.0
            offset += len(lookup)
        if self.linear:
            return 1.0 / (1.0 + np.exp(-(x @ self.classifier.coef_[0] + self.classifier.intercept_[0])))
        return self.classifier.predict_proba(x)[:, 1]

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
