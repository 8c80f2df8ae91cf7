"""Per-row out-of-distribution (novelty) scoring, fitted on a model's training rows.

`fit_novelty_model` learns two views of "what the training rows look like":
- Mahalanobis distance of the numeric features after robust scaling (median and interquartile
  range; a missing value is the training median, so it adds no distance). The covariance is
  scikit-learn's `EmpiricalCovariance` of the scaled rows: the robust part is the scaling.
  `MinCovDet` was not chosen because its half-sample support has zero variance in a tied column
  (integer counts, flags, a feature mostly at one value), which makes every other value of that
  column look infinitely far; it also costs far more on large windows.
- An `IsolationForest` (seeded, scikit-learn's default `N_TREES` trees) on the scaled numerics
  plus each categorical feature as an ordinal code: categories ranked by training frequency, most
  frequent first (missing is a category of its own), a category never seen in training ranked
  after the rarest. Ordinal codes keep one column per feature: one-hot columns would dilute the
  forest's uniformly drawn splits over many sparse columns. An unseen category raises a row's
  score (it shares the rarest categories' short paths); among several features it makes a row
  novel only now and then.

Each score's threshold is its `quantile` (0.995) on the training rows themselves. `score_rows`
gives one score per row, the larger of the two scores each divided by its threshold, and a row is
novel when that exceeds 1: at most 0.5 % + 0.5 % = 1 % of in-distribution rows are novel by
construction (between 0.5 % and 1 %, less when the two scores flag the same rows; on new rows of
the same distribution about 1 %: `EXPECTED_FALSE_NOVEL_SHARE`). A `NoveltyModel` is small
(thresholds, a few vectors and a forest of `N_TREES` trees on at most 256 rows each) and picklable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.linalg import pinvh
from sklearn.covariance import EmpiricalCovariance
from sklearn.ensemble import IsolationForest

if TYPE_CHECKING:  # the spec is only read, never built, here
    from retrain_assets.core.spec import DatasetSpec

QUANTILE = 0.995
# Each of the two scores flags 0.5 % of training rows: the union about 1 % (the false-novel share
# of rows from the training distribution, which the novelty clause's default is a multiple of).
EXPECTED_FALSE_NOVEL_SHARE = 2 * (1 - QUANTILE)
N_TREES = 100
# How a model version carries its novelty model in MLflow: the pickle as an artifact of a run,
# with the run and the pickle's SHA-256 as version tags (the service checks it before unpickling).
NOVELTY_ARTIFACT, NOVELTY_TAG, NOVELTY_RUN_TAG = "novelty/novelty_model.pkl", "novelty_sha256", "novelty_run_id"
_MISSING = "\x00missing"


@dataclass
class NoveltyModel:
    """What `score_rows` needs (see the module doc); fitted by `fit_novelty_model`."""

    numeric: list[str]
    categorical: list[str]
    medians: np.ndarray
    scales: np.ndarray
    categories: dict[str, list[str]]
    location: np.ndarray
    precision: np.ndarray
    forest: IsolationForest
    distance_threshold: float
    forest_threshold: float
    n_rows: int
    quantile: float = QUANTILE


def fit_novelty_model(rows: pd.DataFrame, numeric: list[str], categorical: list[str], seed: int = 0,
                      quantile: float = QUANTILE) -> NoveltyModel:
    """The novelty model of `rows` (a model's training rows) over the given feature columns."""
    if not len(rows):
        raise ValueError("a novelty model needs training rows")
    values = rows[list(numeric)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float).reshape(len(rows), len(numeric))
    values[~np.isfinite(values)] = np.nan
    medians = np.array([np.median(v[~np.isnan(v)]) if (~np.isnan(v)).any() else 0.0 for v in values.T])
    filled = np.where(np.isnan(values), medians, values)
    # Robust scale: the interquartile range; a column with most rows at one value: its standard deviation.
    spread = np.subtract(*np.percentile(filled, [75, 25], axis=0)) if len(numeric) else np.zeros(0)
    spread = np.where(spread > 0, spread, filled.std(axis=0))
    scales = np.where(spread > 0, spread, 1.0)
    categories = {c: list(_category_texts(rows[c]).value_counts(sort=True).index) for c in categorical}
    model = NoveltyModel(list(numeric), list(categorical), medians, scales, categories, np.zeros(len(numeric)),
                         np.zeros((len(numeric), len(numeric))), IsolationForest(n_estimators=N_TREES, random_state=seed),
                         1.0, 1.0, len(rows), quantile)
    scaled = (filled - medians) / scales
    if len(numeric):
        covariance = EmpiricalCovariance(assume_centered=False).fit(scaled)
        model.location = covariance.location_
        model.precision = pinvh(covariance.covariance_ + 1e-9 * np.eye(len(numeric)))
    model.forest.fit(_forest_matrix(model, scaled, rows))
    distance, isolation = _raw_scores(model, rows)
    model.distance_threshold = _positive(np.quantile(distance, quantile)) if len(numeric) else np.inf
    model.forest_threshold = _positive(np.quantile(isolation, quantile))
    return model


def fit_for_spec(rows: pd.DataFrame, spec: DatasetSpec, seed: int) -> NoveltyModel:
    """The one fit rule every caller uses: the spec's numeric and categorical features of a model's
    training rows (after its held-out tail is split off), seeded with the policy's seed."""
    return fit_novelty_model(rows, spec.numeric_features, spec.categorical_features, seed)


def score_rows(model: NoveltyModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `frame`: the novelty score (the larger of the Mahalanobis distance and the
    isolation score, each over its training threshold) and whether the row is novel (score > 1)."""
    if not len(frame):
        return np.zeros(0), np.zeros(0, dtype=bool)
    distance, isolation = _raw_scores(model, frame)
    score = np.maximum(distance / model.distance_threshold, isolation / model.forest_threshold)
    return score, score > 1.0


def novelty_summary(model: NoveltyModel | None, frame: pd.DataFrame, id_column: str | None = None, examples: int = 5) -> dict:
    """A batch's novelty numbers: `novelty_share` (share of novel rows), `novelty_score_p99` (99th
    percentile of the score; over 1: more than 1 % of rows are novel) and `novelty_examples` (the
    ids of the most novel rows, most novel first, comma-separated); NaN / "" without a model or rows."""
    if model is None or not len(frame):
        return {"novelty_share": float("nan"), "novelty_score_p99": float("nan"), "novelty_examples": ""}
    score, novel = score_rows(model, frame)
    order = np.argsort(-score, kind="stable")[:examples]
    ids = frame[id_column].to_numpy()[order] if id_column and id_column in frame else order
    return {"novelty_share": float(novel.mean()), "novelty_score_p99": float(np.quantile(score, 0.99)),
            "novelty_examples": ", ".join(str(i) for i, n in zip(ids, novel[order]) if n)}


def novelty_check(summary: dict | None, limit: float) -> tuple[bool, str, dict]:
    """The `drift_report_novelty` check on a batch's summary (None: no champion yet): (passed,
    words, metadata); it fails (a WARN) when the batch's `novelty_share` exceeds `limit`
    (`policy.triggers.max_novelty_share`). A champion without a novelty model passes."""
    share = float("nan") if summary is None else float(summary.get("novelty_share", float("nan")))
    if summary is None or np.isnan(share):
        return True, "no champion reference yet" if summary is None else "no novelty model for this champion", {}
    p99, examples = float(summary["novelty_score_p99"]), str(summary.get("novelty_examples") or "")
    words = (f"{share:.1%} of the batch's rows are novel (limit {limit:.1%}; about {EXPECTED_FALSE_NOVEL_SHARE:.0%} by chance), "
             f"99th-percentile score {p99:.3g}" + (f"; most novel: {examples}" if examples else ""))
    return share <= limit, words, {"novelty_share": share, "novelty_score_p99": p99, "novelty_examples": examples}


def _raw_scores(model: NoveltyModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Mahalanobis distance and isolation score (higher: more anomalous) per row."""
    values = frame.reindex(columns=model.numeric).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    values = values.reshape(len(frame), len(model.numeric))
    values = np.where(np.isfinite(values), values, model.medians)
    scaled = (values - model.medians) / model.scales
    centered = scaled - model.location
    distance = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centered, model.precision, centered), 0.0))
    isolation = -model.forest.score_samples(_forest_matrix(model, scaled, frame))
    return distance, isolation


def _forest_matrix(model: NoveltyModel, scaled: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
    """Scaled numerics, then each categorical as its training-frequency rank (unseen: after the rarest)."""
    codes = []
    for column in model.categorical:
        rank = {c: i for i, c in enumerate(model.categories[column])}
        texts = _category_texts(frame[column]) if column in frame else pd.Series([_MISSING] * len(frame))
        codes.append(texts.map(rank).fillna(len(rank)).to_numpy(dtype=float))
    matrix = np.column_stack([scaled, *codes]) if codes else scaled
    return matrix if matrix.shape[1] else np.zeros((len(frame), 1))


def _category_texts(values: pd.Series) -> pd.Series:
    """Categories as text; missing is a category of its own."""
    return pd.Series(np.where(values.isna(), _MISSING, values.astype(str)), index=values.index)


def _positive(value: float) -> float:
    return float(value) if value > 1e-12 else 1e-12
