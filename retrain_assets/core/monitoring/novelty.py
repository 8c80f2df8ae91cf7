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

Big inputs are sampled, seeded, so the same rows give the same numbers. More than `FIT_ROWS`
(20,000) training rows: the whole model (scaling, covariance, category ranks, forest, thresholds)
is fitted on a uniform sample of `FIT_ROWS` of them drawn with the seed; each threshold is then the
0.995 quantile of k = 20,000 rows, which new rows of the training distribution exceed 0.5 % of the
time give or take sqrt(0.005 x 0.995 / k) = 0.05 percentage points (one standard error), and a
category rarer than about 1 in 20,000 may read as unseen. Up to `FIT_ROWS` rows every row is used,
as before sampling existed. More than `SCORE_ROWS` (20,000) batch rows: `novelty_summary` scores a
seeded uniform sample of that many; its `novelty_share` is within 1.96 sqrt(p (1 - p) / 20,000) of
the batch's share p with 95 % probability (at most 0.7 percentage points; 0.14 at p = 1 %;
`novelty_share_interval`). A million-row fit then takes 0.3 s and a summary 0.15 s (they took 20 s
and 14 s scoring every row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from retrain_assets.core.monitoring.values import sample_positions

if TYPE_CHECKING:  # the spec is only read, never built, here
    from sklearn.ensemble import IsolationForest

    from retrain_assets.core.spec import DatasetSpec

# Imported inside the functions that use them, not with the module (`retrain-assets drift` loads
# them on a thread while it reads columns: `apps.drift.REPORT_MODULES`).
DEFERRED_IMPORTS = ("scipy.linalg", "scipy.stats", "sklearn.covariance", "sklearn.ensemble")
QUANTILE = 0.995
# Each of the two scores flags 0.5 % of training rows: the union about 1 % (the false-novel share
# of rows from the training distribution, which the novelty clause's default is a multiple of).
EXPECTED_FALSE_NOVEL_SHARE = 2 * (1 - QUANTILE)
N_TREES = 100
# Training rows above FIT_ROWS: the model is fitted on a seeded sample of FIT_ROWS of them (module
# doc). Above every training window of the built-in scenarios (the largest: demand's 21 days x 500 =
# 10,500 rows), so their models are fitted on every row; 50,000 would cost 0.2 s more per fit.
FIT_ROWS = 20_000
# Batch rows above SCORE_ROWS: `novelty_summary` scores a seeded sample of SCORE_ROWS of them.
SCORE_ROWS = 20_000
# Rows scored per pass of the forest walk: its arrays hold trees x rows entries, so a million-row
# batch in one pass took 7.5 GB; 2,000 rows keep each array near 1.6 MB, in cache: 3.9 us a row on
# the 2-core machine, against 5.6 us at 10,000 rows.
SCORE_CHUNK_ROWS = 2_000
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
        children, feature, threshold = self._walk_arrays()
        values = matrix.astype(np.float32)
        n, width = values.shape
        cells = np.tile(np.arange(n) * width, self.n_trees)          # each (tree, row) pair's row start in `values`
        node = np.repeat(np.arange(self.n_trees) * self.nodes, n)  # every pair starts at its tree's root
        values = values.ravel()
        for _ in range(self.depth):  # a leaf is its own child, so a pair that reached one stays there
            node = children[2 * node + (values[cells + feature[node]] <= threshold[node])]
        return 2.0 ** -(self.length[node].reshape(self.n_trees, n).sum(axis=0) / self.denominator)

    def _walk_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the walk reads, derived from the stored fields once per process (not pickled, so a
        model pickled before keeps loading): `children[2 k]` is node k's right child and
        `children[2 k + 1]` its left one (a leaf: itself), so a step is one gather; the thresholds as
        float32, each the largest float32 <= scikit-learn's float64 threshold, so a float32 value is
        <= it exactly when it is <= the float64 one (scikit-learn compares float32 values)."""
        if self.__dict__.get("_walk") is None:
            nodes = np.arange(len(self.left))
            children = np.empty(2 * len(nodes), dtype=np.intp)
            children[0::2] = np.where(self.left >= 0, self.right, nodes)  # value > threshold, or NaN: right
            children[1::2] = np.where(self.left >= 0, self.left, nodes)
            threshold = np.where(self.left >= 0, self.threshold, 0.0)
            with np.errstate(over="ignore"):
                rounded = threshold.astype(np.float32)
            above = rounded.astype(float) > threshold
            rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
            self.__dict__["_walk"] = (children, self.feature.astype(np.intp), rounded)
        return self.__dict__["_walk"]

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_walk"}


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
    """The novelty model of `rows` (a model's training rows) over the given feature columns; more
    than `FIT_ROWS` rows: of a uniform sample of `FIT_ROWS` of them drawn with `seed` (module doc)."""
    # Imported here: scoring needs only numpy, and `retrain-assets drift` loads scikit-learn while it reads files.
    from scipy.linalg import pinvh
    from sklearn.covariance import EmpiricalCovariance
    from sklearn.ensemble import IsolationForest

    if not len(rows):
        raise ValueError("a novelty model needs training rows")
    n_rows = len(rows)
    if n_rows > FIT_ROWS:  # the module doc: fitted on a seeded uniform sample, thresholds within a stated error
        rows = rows.take(sample_positions(n_rows, FIT_ROWS, np.random.default_rng(seed)))
    values = _numbers(rows, numeric)
    medians = np.array([np.median(v[~np.isnan(v)]) if (~np.isnan(v)).any() else 0.0 for v in values.T])
    filled = np.where(np.isnan(values), medians, values)
    # Robust scale: the interquartile range; a column with most rows at one value: its standard deviation.
    spread = np.subtract(*np.percentile(filled, [75, 25], axis=0)) if len(numeric) else np.zeros(0)
    spread = np.where(spread > 0, spread, filled.std(axis=0))
    scales = np.where(spread > 0, spread, 1.0)
    categories = {c: _category_ranks(rows[c]) for c in categorical}
    model = NoveltyModel(list(numeric), list(categorical), medians, scales, categories, np.zeros(len(numeric)),
                         np.zeros((len(numeric), len(numeric))), None, 1.0, 1.0, n_rows, quantile)
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


def novelty_summary(model: NoveltyModel | None, frame: pd.DataFrame, id_column: str | None = None, examples: int = 5,
                    max_rows: int | None = None, seed: int = 0) -> dict:
    """A batch's novelty numbers: `novelty_share` (share of novel rows), `novelty_score_p99` (99th
    percentile of the score; over 1: more than 1 % of rows are novel) and `novelty_examples` (the
    ids of the most novel rows, most novel first, comma-separated); NaN / "" without a model or rows.

    A frame of more than `max_rows` (default `SCORE_ROWS`, 20,000) rows is scored on a uniform
    sample of that many rows, drawn with `seed`, so the same frame gives the same numbers: the share
    is then within 1.96 * sqrt(p (1 - p) / 20,000) of the whole frame's share p with 95 %
    probability (at most 0.7 percentage points, at p = 30 %: 0.64, at p = 1 %: 0.14;
    `novelty_share_interval`), and the examples are the most novel sampled rows (without an id
    column: their positions in `frame`). A frame of at most `max_rows` rows is scored whole."""
    if model is None or not len(frame):
        return {"novelty_share": float("nan"), "novelty_score_p99": float("nan"), "novelty_examples": ""}
    max_rows = SCORE_ROWS if max_rows is None else max_rows
    positions = sample_positions(len(frame), max_rows, np.random.default_rng(seed))
    frame = frame.take(positions) if len(positions) < len(frame) else frame
    score, novel = score_rows(model, frame)
    order = np.argsort(-score, kind="stable")[:examples]
    ids = frame[id_column].to_numpy()[order] if id_column and id_column in frame else positions[order]
    return {"novelty_share": float(novel.mean()), "novelty_score_p99": float(np.quantile(score, 0.99)),
            "novelty_examples": ", ".join(str(i) for i, n in zip(ids, novel[order]) if n)}


def novelty_share_interval(share: float, n_scored: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a novel share measured on `n_scored` rows (a sampled batch:
    `min(rows, SCORE_ROWS)`); it holds the whole batch's share with probability about `confidence`
    (a little more: the sample is drawn without replacement). NaN share or no rows: (NaN, NaN)."""
    if n_scored <= 0 or np.isnan(share):
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    centre = (share + z * z / (2 * n_scored)) / (1 + z * z / n_scored)
    half = z / (1 + z * z / n_scored) * np.sqrt(share * (1 - share) / n_scored + z * z / (4 * n_scored * n_scored))
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


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
        if column not in frame:
            codes.append(np.full(len(frame), rank.get(_MISSING, len(rank)), dtype=float))
            continue
        index, texts = _category_index(frame[column])
        codes.append(np.array([rank.get(text, len(rank)) for text in texts], dtype=float)[index])
    matrix = np.column_stack([scaled, *codes]) if codes else scaled
    return matrix if matrix.shape[1] else np.zeros((len(frame), 1))


def _category_ranks(values) -> list[str]:
    """The categories of `values` (as text, `_category_index`), most frequent first; ties in order
    of first appearance (pandas' `value_counts`, on one integer per distinct text)."""
    index, texts = _category_index(values)
    ids = pd.factorize(np.array(texts, dtype=object))[0]  # one id per distinct text
    return [texts[np.flatnonzero(ids == i)[0]] for i in pd.Series(ids[index]).value_counts(sort=True).index]


def _category_index(values) -> tuple[np.ndarray, list[str]]:
    """Each value as an index into the returned texts: `str(value)`, missing (`pd.isna`) as a
    category of its own, as `str` reads each value of `np.asarray(values)`; without a Python loop
    over the values (`pd.factorize`, `str` only of the distinct ones). Floats are told apart by their
    bits (factorize holds -0.0 and 0.0 equal; `str` does not), an object column that is not all text
    is made text first (factorize holds 1, 1.0 and True equal)."""
    array = np.asarray(values)
    if array.dtype.kind == "f" and array.itemsize in (2, 4, 8):
        missing = np.isnan(array)
        codes, uniques = pd.factorize(np.where(missing, 0, array).astype(array.dtype).view(f"u{array.itemsize}"))
        codes, uniques = np.where(missing, -1, codes), uniques.view(array.dtype)
    else:
        if array.dtype == object and pd.api.types.infer_dtype(array, skipna=True) not in ("string", "empty"):
            array = np.where(pd.isna(array), None, array.astype(str)).astype(object)
        codes, uniques = pd.factorize(array, use_na_sentinel=True)
    texts = [str(value) for value in uniques] + [_MISSING]
    return np.where(codes >= 0, codes, len(texts) - 1), texts


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
