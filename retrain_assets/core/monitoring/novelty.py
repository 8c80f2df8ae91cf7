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
(thresholds, a few vectors and the forest's `N_TREES` trees of at most 511 nodes as flat arrays,
under 1 MB pickled) and picklable; the forest is walked for every tree at once (`ForestArrays`),
so a served row is scored in about 0.1 ms (`score_records`), scikit-learn's tree-by-tree
`score_samples` took 15 ms.
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
# Rows scored per pass of the forest walk: its arrays hold trees x rows entries, so a million-row
# batch in one pass took 7.5 GB; 10,000 rows keep each array near 8 MB at the same speed.
SCORE_CHUNK_ROWS = 10_000
# How a model version carries its novelty model in MLflow: the pickle as an artifact of a run,
# with the run and the pickle's SHA-256 as version tags (the service checks it before unpickling).
NOVELTY_ARTIFACT, NOVELTY_TAG, NOVELTY_RUN_TAG = "novelty/novelty_model.pkl", "novelty_sha256", "novelty_run_id"
_MISSING = "\x00missing"


@dataclass
class ForestArrays:
    """A fitted `IsolationForest` as padded arrays, one row per tree (`from_forest`), so scoring a
    request's row costs one vectorised walk down every tree at once (scikit-learn's `score_samples`
    walks tree by tree: about 15 ms for one row with 100 trees, over the service's latency budget).
    `score` is scikit-learn's `-score_samples`: 2 ** -(mean path length / c(max_samples))."""

    # Every tree's nodes one after the other (tree i's node k at i x nodes + k):
    left: np.ndarray       # child node (flat id); -1 at a leaf
    right: np.ndarray
    feature: np.ndarray    # the column split on (0 at a leaf)
    threshold: np.ndarray  # go left when the value (as float32, as scikit-learn compares) <= threshold
    length: np.ndarray     # at a leaf: its depth + c(its training rows) - 1, scikit-learn's path length
    n_trees: int
    nodes: int             # nodes per tree, padded
    denominator: float     # trees x c(max_samples)
    depth: int

    @classmethod
    def from_forest(cls, forest: IsolationForest, n_features: int) -> ForestArrays:
        trees = [t.tree_ for t in forest.estimators_]
        nodes = max(t.node_count for t in trees)
        shape = (len(trees), nodes)
        left, right, feature = (np.full(shape, -1, dtype=np.int32) for _ in range(3))
        threshold, length = np.zeros(shape), np.zeros(shape)
        subsample = forest._max_features != n_features
        for i, (tree, features) in enumerate(zip(trees, forest.estimators_features_)):
            n = tree.node_count
            left[i, :n], right[i, :n] = tree.children_left, tree.children_right
            split = np.where(tree.feature >= 0, tree.feature, 0)
            feature[i, :n] = np.asarray(features)[split] if subsample else split
            threshold[i, :n] = tree.threshold
            length[i, :n] = forest._decision_path_lengths[i] + forest._average_path_length_per_tree[i] - 1.0
        offsets = (np.arange(len(trees)) * nodes)[:, None]
        left, right = (np.where(child >= 0, child + offsets, -1).ravel() for child in (left, right))
        return cls(left, right, np.where(left >= 0, feature.ravel(), 0), threshold.ravel(), length.ravel(), len(trees), nodes,
                   len(trees) * _average_path_length(forest._max_samples), int(max(t.max_depth for t in trees)))

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """Per row of `matrix`: the isolation score (higher: easier to isolate, more anomalous),
        `SCORE_CHUNK_ROWS` rows at a time so memory stays flat whatever the batch size."""
        return np.concatenate([self._score_chunk(matrix[start:start + SCORE_CHUNK_ROWS])
                               for start in range(0, len(matrix), SCORE_CHUNK_ROWS)] or [np.zeros(0)])

    def _score_chunk(self, matrix: np.ndarray) -> np.ndarray:
        values = matrix.astype(np.float32).astype(float)
        n, width = values.shape
        cells = np.tile(np.arange(n) * width, self.n_trees)          # each (tree, row) pair's row start in `values`
        node = np.repeat(np.arange(self.n_trees) * self.nodes, n)  # every pair starts at its tree's root
        values = values.ravel()
        for _ in range(self.depth):
            go_left = values[cells + self.feature[node]] <= self.threshold[node]
            child = np.where(go_left, self.left[node], self.right[node])
            node = np.where(child >= 0, child, node)  # a leaf stays where it is
        return 2.0 ** -(self.length[node].reshape(self.n_trees, n).sum(axis=0) / self.denominator)


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
    forest: ForestArrays
    distance_threshold: float
    forest_threshold: float
    n_rows: int
    quantile: float = QUANTILE


def fit_novelty_model(rows: pd.DataFrame, numeric: list[str], categorical: list[str], seed: int = 0,
                      quantile: float = QUANTILE) -> NoveltyModel:
    """The novelty model of `rows` (a model's training rows) over the given feature columns."""
    if not len(rows):
        raise ValueError("a novelty model needs training rows")
    values = _numbers(rows, numeric)
    medians = np.array([np.median(v[~np.isnan(v)]) if (~np.isnan(v)).any() else 0.0 for v in values.T])
    filled = np.where(np.isnan(values), medians, values)
    # Robust scale: the interquartile range; a column with most rows at one value: its standard deviation.
    spread = np.subtract(*np.percentile(filled, [75, 25], axis=0)) if len(numeric) else np.zeros(0)
    spread = np.where(spread > 0, spread, filled.std(axis=0))
    scales = np.where(spread > 0, spread, 1.0)
    categories = {c: list(pd.Series(_category_texts(rows[c])).value_counts(sort=True).index) for c in categorical}
    model = NoveltyModel(list(numeric), list(categorical), medians, scales, categories, np.zeros(len(numeric)),
                         np.zeros((len(numeric), len(numeric))), None, 1.0, 1.0, len(rows), quantile)
    scaled = (filled - medians) / scales
    if len(numeric):
        covariance = EmpiricalCovariance(assume_centered=False).fit(scaled)
        model.location = covariance.location_
        model.precision = pinvh(covariance.covariance_ + 1e-9 * np.eye(len(numeric)))
    matrix = _forest_matrix(model, scaled, rows)
    model.forest = ForestArrays.from_forest(IsolationForest(n_estimators=N_TREES, random_state=seed).fit(matrix), matrix.shape[1])
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


def score_records(model: NoveltyModel, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """`score_rows` of rows given as dicts (a request's rows: no DataFrame to build, which would cost
    more than the scoring); a key a row lacks reads as missing."""
    return score_rows(model, _Records(records))


class _Records:
    """Rows as dicts, read column by column as `score_rows` reads a DataFrame."""

    def __init__(self, records: list[dict]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, column: str) -> bool:
        return True

    def __getitem__(self, column: str) -> np.ndarray:
        return np.array([record.get(column) for record in self.records], dtype=object)


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
    words, metadata); it fails (an ERROR: an out-of-distribution burst, alerted on) when the
    batch's `novelty_share` exceeds `limit`
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
    values = _numbers(frame, model.numeric)
    values = np.where(np.isfinite(values), values, model.medians)
    scaled = (values - model.medians) / model.scales
    centered = scaled - model.location
    distance = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centered, model.precision, centered), 0.0))
    isolation = model.forest.score(_forest_matrix(model, scaled, frame))
    return distance, isolation


def _forest_matrix(model: NoveltyModel, scaled: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
    """Scaled numerics, then each categorical as its training-frequency rank (unseen: after the rarest)."""
    codes = []
    for column in model.categorical:
        rank = {c: i for i, c in enumerate(model.categories[column])}
        texts = _category_texts(frame[column]) if column in frame else [_MISSING] * len(frame)
        codes.append(np.array([rank.get(text, len(rank)) for text in texts], dtype=float))
    matrix = np.column_stack([scaled, *codes]) if codes else scaled
    return matrix if matrix.shape[1] else np.zeros((len(frame), 1))


def _category_texts(values) -> list[str]:
    """Categories as text; missing is a category of its own."""
    return [_MISSING if pd.isna(value) else str(value) for value in np.asarray(values)]


def _numbers(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The columns as a (rows, columns) float array: text that is no number, and a column the frame
    lacks, read as missing (NaN), as do infinities. A plain numeric column converts at once,
    others value by value."""
    out = np.full((len(frame), len(columns)), np.nan)
    for j, column in enumerate(columns):
        if column not in frame:
            continue
        values = np.asarray(frame[column])
        try:
            out[:, j] = values.astype(float)
        except (TypeError, ValueError):  # None, pd.NA or text among the values
            out[:, j] = [_number(value) for value in values]
    out[~np.isfinite(out)] = np.nan
    return out


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _average_path_length(n: int) -> float:
    """c(n): the mean path length of an unsuccessful binary-search-tree search among n points
    (scikit-learn's `_average_path_length`, the isolation score's normaliser)."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n


def _positive(value: float) -> float:
    return float(value) if value > 1e-12 else 1e-12
