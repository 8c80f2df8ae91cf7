"""The reference profile drift is measured against: the champion's training data summarised once.

`build_reference_profile` turns the reference rows into a compact, JSON-serialisable
`ReferenceProfile`: per numeric feature its moments, reference-quantile bins and a sorted
(sub)sample with prefix sums; per categorical feature its category counts; plus the champion's
score distribution and the label prior. Missing values and categories follow `values.py`.

Per task (`core.tasks`), the prediction and label parts differ:
- binary: `scores` profiles the positive-class score, `positive_rate` is the label prior;
- multiclass: `classes` (as text, in `target.classes` order), `label_counts` and
  `predicted_counts` (reference rows per true and per predicted class) and `mean_probabilities`
  (each class's mean predicted probability); `scores` is None;
- regression: `scores` profiles the predicted values and `label_values` the labels.
The JSON of a binary profile is what it always was (the task keys are written for the other
tasks only), so profiles stored before tasks existed load as binary.
`segments` (spec `segments`) holds per segment column and value a feature profile of that slice of
the reference (`segment_profiles`), what `segment_drift.py` compares a batch's slice with; the
`segments` key is written only when there are some, so older profiles load with none.
`reference_errors` (written only when stored) are the champion's held-out errors the error stream
(`error_stream.py`) feeds its detector first.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from retrain_assets.core.monitoring.values import (
    as_float_array,
    binary_labels,
    bin_counts_of,
    category_counts,
    factorize,
    numeric_values,
    prefix_sums_of,
    sample_of,
)
from retrain_assets.core.policy.definition import DriftThresholds
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION, class_texts


@dataclass(eq=False)
class NumericProfile:
    """Reference summary of one numeric feature.

    `std` is the population standard deviation (ddof=0) of the non-missing values. `bin_edges`
    are the unique interior `n_bins`-quantiles (linear interpolation) and `bin_counts` the
    reference counts of the len(bin_edges)+1 bins (-inf, e1], (e1, e2], ..., (ek, +inf).
    `sorted_values` are the sorted non-missing values, or, above `max_reference_sample`, that many
    evenly spaced order statistics (always including the smallest and the largest). `prefix_sums[k]`
    is the sum of the k smallest kept values (length len(sorted_values) + 1, prefix_sums[0] == 0).
    Above `sample_rows` non-missing values, the bins and the kept values come from a seeded sample
    of that many (`values.sample_of`); n, mean, std, min and max always from every value.
    """

    name: str
    n: int
    n_missing: int
    mean: float
    std: float
    min: float
    max: float
    bin_edges: np.ndarray
    bin_counts: np.ndarray
    sorted_values: np.ndarray
    prefix_sums: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericProfile):
            return NotImplemented
        scalars = ("mean", "std", "min", "max")
        return (
            (self.name, self.n, self.n_missing) == (other.name, other.n, other.n_missing)
            and all(_same_float(getattr(self, s), getattr(other, s)) for s in scalars)
            and all(
                np.array_equal(getattr(self, a), getattr(other, a), equal_nan=True)
                for a in ("bin_edges", "bin_counts", "sorted_values", "prefix_sums")
            )
        )


@dataclass
class CategoricalProfile:
    """Reference summary of one categorical feature: counts per category (as strings)."""

    name: str
    n: int
    n_missing: int
    counts: dict[str, int]


@dataclass
class ReferenceProfile:
    """What drift is measured against: the training window's features, predictions and labels
    (per task, see the module doc)."""

    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    n_rows: int
    scores: NumericProfile | None = None
    positive_rate: float | None = None
    created_from: str = ""
    task: str = BINARY
    classes: list[str] | None = None
    label_counts: list[int] | None = None
    predicted_counts: list[int] | None = None
    mean_probabilities: list[float] | None = None
    label_values: NumericProfile | None = None
    segments: dict[str, dict[str, ReferenceProfile]] | None = None
    # The champion's errors on its held-out rows, newest last (`error_stream.reference_errors`; None: not stored).
    reference_errors: list[float] | None = None

    def to_json(self) -> str:
        """Lossless JSON: floats are written with repr precision, NaN as null.

        `prefix_sums` are not stored; `from_json` recomputes them (bit-identical, same cumsum).
        """
        return json.dumps(self._payload(), allow_nan=False)

    def _payload(self) -> dict[str, Any]:
        payload = {
            "format": 1,
            "n_rows": self.n_rows,
            "created_from": self.created_from,
            "positive_rate": _float_or_none(self.positive_rate),
            "numeric": {k: _numeric_to_dict(p) for k, p in self.numeric.items()},
            "categorical": {
                k: {"name": p.name, "n": p.n, "n_missing": p.n_missing, "counts": p.counts} for k, p in self.categorical.items()
            },
            "scores": _numeric_to_dict(self.scores) if self.scores is not None else None,
        }
        if self.task != BINARY:
            payload.update(
                task=self.task,
                classes=self.classes,
                label_counts=self.label_counts,
                predicted_counts=self.predicted_counts,
                mean_probabilities=None if self.mean_probabilities is None else [_float_or_none(x) for x in self.mean_probabilities],
                label_values=_numeric_to_dict(self.label_values) if self.label_values is not None else None,
            )
        if self.reference_errors is not None:
            payload["reference_errors"] = [_float_or_none(x) for x in self.reference_errors]
        if self.segments:
            payload["segments"] = {c: {v: p._payload() for v, p in values.items()} for c, values in self.segments.items()}
        return payload

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        """Inverse of `to_json`."""
        return cls._from_payload(json.loads(text))

    @classmethod
    def _from_payload(cls, raw: dict[str, Any]) -> ReferenceProfile:
        if raw.get("format") != 1:
            raise ValueError(f"unsupported reference profile format {raw.get('format')!r}")
        rate = raw.get("positive_rate")
        return cls(
            numeric={k: _numeric_from_dict(d) for k, d in raw["numeric"].items()},
            categorical={
                k: CategoricalProfile(d["name"], int(d["n"]), int(d["n_missing"]), {str(c): int(v) for c, v in d["counts"].items()})
                for k, d in raw["categorical"].items()
            },
            n_rows=int(raw["n_rows"]),
            scores=_numeric_from_dict(raw["scores"]) if raw.get("scores") is not None else None,
            positive_rate=None if rate is None else float(rate),
            created_from=str(raw.get("created_from", "")),
            task=str(raw.get("task", BINARY)),
            classes=None if raw.get("classes") is None else [str(c) for c in raw["classes"]],
            label_counts=_ints_or_none(raw.get("label_counts")),
            predicted_counts=_ints_or_none(raw.get("predicted_counts")),
            mean_probabilities=None if raw.get("mean_probabilities") is None
            else [math.nan if x is None else float(x) for x in raw["mean_probabilities"]],
            label_values=_numeric_from_dict(raw["label_values"]) if raw.get("label_values") is not None else None,
            segments={c: {v: cls._from_payload(p) for v, p in values.items()} for c, values in raw["segments"].items()}
            if raw.get("segments") else None,
            reference_errors=None if raw.get("reference_errors") is None
            else [math.nan if x is None else float(x) for x in raw["reference_errors"]],
        )


def build_reference_profile(
    df: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    thresholds: DriftThresholds = DriftThresholds(),
    created_from: str = "",
    target: TargetSpec | None = None,
    segments: Sequence[str] = (),
) -> ReferenceProfile:
    """Profile the reference rows (usually the champion's training window).

    `scores` are the champion's predictions on these rows and `labels` their labels encoded as
    `core.tasks.encode_labels` does; either may be None. Binary (also when `target` is None):
    0/1 labels, and the label prior is the mean of the non-missing labels (None when there are
    none). Multiclass: (rows, k) probabilities and class indices; regression: predicted values
    and numeric labels (see the module doc for what is kept). `segments`: the spec's segment
    columns, profiled per value (`segment_profiles`).
    """
    missing = [c for c in [*numeric, *categorical] if c not in df.columns]
    if missing:
        raise KeyError(f"reference frame lacks columns {missing}")
    if target is not None and target.type != BINARY:
        base = build_reference_profile(df, numeric, categorical, None, None, thresholds, created_from, segments=segments)
        return _with_task_outputs(base, target, scores, labels, thresholds)
    positive_rate = None
    if labels is not None:
        y = binary_labels(labels)
        positive_rate = float(y.mean()) if len(y) else None
    return ReferenceProfile(
        numeric={c: numeric_profile(c, df[c], thresholds) for c in numeric},
        categorical={c: categorical_profile(c, df[c]) for c in categorical},
        n_rows=int(len(df)),
        scores=numeric_profile("score", scores, thresholds) if scores is not None else None,
        positive_rate=positive_rate,
        created_from=created_from,
        segments=segment_profiles(df, segments, numeric, categorical, thresholds) or None,
    )


def segment_profiles(df: pd.DataFrame, segments: Sequence[str], numeric: list[str], categorical: list[str],
                     thresholds: DriftThresholds = DriftThresholds()) -> dict[str, dict[str, ReferenceProfile]]:
    """Per segment column, per value (as text, `values.factorize`) with at least
    `thresholds.segment_min_rows` reference rows: the feature profile of those rows, without the
    segment column itself (constant in its slice). Missing segment values belong to no slice."""
    out: dict[str, dict[str, ReferenceProfile]] = {}
    for column in segments:
        if column not in df.columns:
            raise KeyError(f"reference frame lacks segment column {column!r}")
        codes, keys = factorize(df[column])
        num, cat = [c for c in numeric if c != column], [c for c in categorical if c != column]
        rows = {key: np.flatnonzero(np.isin(codes, [i for i, k in enumerate(keys) if k == key])) for key in dict.fromkeys(keys)}
        out[column] = {key: build_reference_profile(df.iloc[index], num, cat, thresholds=thresholds)
                       for key, index in rows.items() if len(index) >= thresholds.segment_min_rows}
    return out


def _with_task_outputs(
    profile: ReferenceProfile, target: TargetSpec, predictions: Any, labels: Any, thresholds: DriftThresholds
) -> ReferenceProfile:
    """A feature profile completed with a multiclass or regression target's prediction and label parts."""
    profile.task = target.type
    if target.type == REGRESSION:
        profile.scores = numeric_profile("prediction", predictions, thresholds) if predictions is not None else None
        profile.label_values = numeric_profile("label", labels, thresholds) if labels is not None else None
        return profile
    if target.type != MULTICLASS:
        raise ValueError(f"unknown task {target.type!r}")
    profile.classes = class_texts(target)
    k = len(profile.classes)
    if labels is not None:
        profile.label_counts = class_counts(labels, k)
    if predictions is not None:
        proba = class_probabilities(predictions, k)
        profile.predicted_counts = np.bincount(proba.argmax(axis=1), minlength=k).astype(int).tolist()
        means = proba.mean(axis=0) if len(proba) else np.full(k, math.nan)
        profile.mean_probabilities = [float(x) for x in means]
    return profile


def class_counts(labels: Any, k: int) -> list[int]:
    """Rows per class of multiclass labels given as class indices 0..k-1; missing labels are dropped."""
    y = as_float_array(labels if labels is not None else [])
    y = y[~np.isnan(y)]
    if not np.isin(y, np.arange(k)).all():
        raise ValueError(f"multiclass labels must be class indices 0..{k - 1} (core.tasks.encode_labels)")
    return np.bincount(y.astype(np.int64), minlength=k).astype(int).tolist()


def class_probabilities(predictions: Any, k: int) -> np.ndarray:
    """Multiclass predictions as a finite (rows, k) float array of probabilities."""
    proba = np.asarray(predictions, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != k:
        raise ValueError(f"expected class probabilities of shape (rows, {k}), got {proba.shape}")
    if not np.all(np.isfinite(proba)) or (proba.size and (proba.min() < 0 or proba.max() > 1)):
        raise ValueError("class probabilities must be finite and in [0, 1]")
    return proba


def numeric_profile(name: str, values: Any, thresholds: DriftThresholds = DriftThresholds()) -> NumericProfile:
    """Profile one numeric column (see `NumericProfile` for the conventions)."""
    finite, n_missing = numeric_values(values)
    full = np.sort(sample_of(finite, thresholds.sample_rows))
    n = len(finite)
    if n:
        edges = np.unique(np.quantile(full, np.arange(1, thresholds.n_bins) / thresholds.n_bins))
        every = full if len(full) == n else finite  # mean / std / min / max of every value
        mean, std, lo, hi = float(np.mean(every)), float(np.std(every)), float(every.min()), float(every.max())
    else:
        edges = np.empty(0)
        mean = std = lo = hi = math.nan
    if len(full) > thresholds.max_reference_sample:
        kept = full[np.round(np.linspace(0, len(full) - 1, thresholds.max_reference_sample)).astype(np.int64)]
    else:
        kept = full
    return NumericProfile(
        name=name,
        n=n,
        n_missing=n_missing,
        mean=mean,
        std=std,
        min=lo,
        max=hi,
        bin_edges=edges.astype(np.float64),
        bin_counts=bin_counts_of(full, edges),
        sorted_values=np.ascontiguousarray(kept, dtype=np.float64),
        prefix_sums=prefix_sums_of(kept),
    )


def categorical_profile(name: str, values: Any) -> CategoricalProfile:
    """Profile one categorical column: non-missing counts per category string."""
    counts, n_missing = category_counts(values)
    return CategoricalProfile(name=name, n=int(sum(counts.values())), n_missing=n_missing, counts=counts)


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _ints_or_none(values: list | None) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


def _float_or_none(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _numeric_to_dict(p: NumericProfile) -> dict[str, Any]:
    return {
        "name": p.name,
        "n": p.n,
        "n_missing": p.n_missing,
        "mean": _float_or_none(p.mean),
        "std": _float_or_none(p.std),
        "min": _float_or_none(p.min),
        "max": _float_or_none(p.max),
        "bin_edges": p.bin_edges.tolist(),
        "bin_counts": [int(c) for c in p.bin_counts],
        "sorted_values": p.sorted_values.tolist(),
    }


def _numeric_from_dict(d: dict[str, Any]) -> NumericProfile:
    def num(x: Any) -> float:
        return math.nan if x is None else float(x)

    kept = np.asarray(d["sorted_values"], dtype=np.float64)
    return NumericProfile(
        name=str(d["name"]),
        n=int(d["n"]),
        n_missing=int(d["n_missing"]),
        mean=num(d["mean"]),
        std=num(d["std"]),
        min=num(d["min"]),
        max=num(d["max"]),
        bin_edges=np.asarray(d["bin_edges"], dtype=np.float64),
        bin_counts=np.asarray(d["bin_counts"], dtype=np.int64),
        sorted_values=kept,
        prefix_sums=prefix_sums_of(kept),
    )
