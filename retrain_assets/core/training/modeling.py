"""Training: spec-driven features inside one scikit-learn Pipeline, so serving cannot skew from
training, plus the time-ordered split, the content hash that versions a training set and the
code version that says which code trained a model.
The model search over families and hyperparameters is in `core.training.selection`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version as package_version
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.spec import DatasetSpec, TargetSpec
from retrain_assets.core.sql_text import ident
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION, class_texts, encode_labels, predicted_classes
from retrain_assets.core.training.families import (
    TASK_DEFAULT_PARAMS,
    default_family,
    estimator_family,
    family_params,
    make_estimator,
)


def feature_frame(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The model's input columns with plain numpy dtypes (nullable ints become floats with NaN)."""
    missing = [c for c in spec.feature_columns if c not in df.columns]
    if missing:
        raise KeyError(f"feature columns missing from the frame: {missing}")
    out = pd.DataFrame(index=df.index)
    for name in spec.numeric_features:
        out[name] = pd.to_numeric(df[name], errors="coerce").astype("float64")
    for name in spec.categorical_features:
        out[name] = df[name].astype("object").where(df[name].notna(), None)
    return out


def target_vector(df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """The rows' labels as the model takes them (`core.tasks.encode_labels`): binary 1 for the
    positive class else 0, multiclass the class index, regression the number."""
    return encode_labels(df[spec.target.name], spec.target)


# The binary families' defaults; every task's are in `core.training.families.TASK_DEFAULT_PARAMS`.
DEFAULT_PARAMS = TASK_DEFAULT_PARAMS[BINARY]


def build_pipeline(spec: DatasetSpec, seed: int, family: str | None = None, params: dict | None = None) -> Pipeline:
    """Preprocessing (impute, scale, one-hot with declared categories) + an estimator of `family`.

    The estimator follows the spec's task (`core.training.families.make_estimator`): a classifier
    for binary and multiclass, a regressor for regression; `family` defaults to the task's first
    (logistic regression, or ridge for regression), `params` to its `TASK_DEFAULT_PARAMS`. The
    preprocessing is the same for every task and family (`build_pipeline(spec, seed)[:-1]`).
    """
    estimator = make_estimator(spec.target, family or default_family(spec.target), params, seed)
    transformers = []
    if spec.numeric_features:
        transformers.append(
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), spec.numeric_features)
        )
    if spec.categorical_features:
        categories = [list(spec.column(c).categories) if spec.column(c).categories else "auto" for c in spec.categorical_features]
        declared = {"categories": categories} if all(c != "auto" for c in categories) else {}
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, **declared)
        transformers.append(
            ("categorical", Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", encoder)]), spec.categorical_features)
        )
    return Pipeline([("features", ColumnTransformer(transformers, remainder="drop")), ("model", estimator)])


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline with what it was trained on.

    `train_positive_rate` is the binary share of positive labels (NaN for the other tasks);
    `label_summary` describes the training labels for every task (`label_summary`);
    `train_label_mean` is the mean training label (regression: the baseline a model's skill is
    measured against; binary: the positive rate; multiclass: NaN, its baseline is the class shares).
    """

    pipeline: Pipeline
    params: dict
    n_train_rows: int
    train_positive_rate: float
    task: str = BINARY
    label_summary: dict = field(default_factory=dict)
    train_label_mean: float = float("nan")


def require_both_classes(y: np.ndarray) -> None:
    """Fail loudly when labeled rows hold a single class (no classifier can be fitted)."""
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"training window has {len(y)} rows but only one class ({int(y[0]) if len(y) else 'none'}); "
            "wait for more labeled partitions or widen policy.training_window_partitions"
        )


def require_trainable(y: np.ndarray, target: TargetSpec) -> None:
    """Fail loudly when encoded labels cannot train the task's model: a binary or multiclass window
    with fewer than two classes, a regression window whose label is constant (or empty)."""
    if target.type == BINARY:
        return require_both_classes(y)
    advice = "wait for more labeled partitions or widen policy.training_window_partitions"
    if target.type == MULTICLASS and len(np.unique(y)) < 2:
        shown = repr(class_texts(target)[int(y[0])]) if len(y) else "none"
        raise ValueError(f"training window has {len(y)} rows but only one class ({shown}) of {class_texts(target)}; {advice}")
    if target.type == REGRESSION and (len(y) == 0 or np.ptp(y) == 0):
        shown = f"{y[0]:g}" if len(y) else "none"
        raise ValueError(f"training window has {len(y)} rows but a constant label ({shown}): a regression model "
                         f"learns nothing from it; {advice}")


def label_summary(y: np.ndarray, target: TargetSpec) -> dict:
    """What encoded training labels look like: `n` rows and binary `positive_rate`; multiclass
    `class_shares` (every declared class, as text, 0 when absent); regression `mean`, `std`
    (population, ddof 0), `min`, `max`."""
    n = len(y)
    if target.type == BINARY:
        return {"n": n, "positive_rate": float(y.mean()) if n else float("nan")}
    if target.type == MULTICLASS:
        counts = np.bincount(np.asarray(y, dtype=int), minlength=len(target.classes))
        return {"n": n, "class_shares": {c: float(k / n) if n else float("nan") for c, k in zip(class_texts(target), counts)}}
    if not n:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"n": n, "mean": float(np.mean(y)), "std": float(np.std(y)), "min": float(np.min(y)), "max": float(np.max(y))}


def train_model(train: pd.DataFrame, spec: DatasetSpec, seed: int, family: str | None = None,
                params: dict | None = None) -> TrainedModel:
    """Fit the spec's pipeline of `family` (default: the task's first) on labeled rows; fails loudly
    when the labels cannot train the task (`require_trainable`)."""
    family = family or default_family(spec.target)
    y = target_vector(train, spec)
    require_trainable(y, spec.target)
    pipeline = build_pipeline(spec, seed, family, params)
    pipeline.fit(feature_frame(train, spec), y)
    used = {"model_family": family, **family_params(spec.target, family, params), "seed": seed}
    summary = label_summary(y, spec.target)
    task = spec.target.type
    return TrainedModel(pipeline=pipeline, params=used, n_train_rows=len(train),
                        train_positive_rate=summary["positive_rate"] if task == BINARY else float("nan"), task=task,
                        label_summary=summary, train_label_mean=float(np.mean(y)) if task != MULTICLASS else float("nan"))


def model_family(pipeline: Pipeline) -> str:
    """The family name (a `TASK_DEFAULT_PARAMS` key) of a fitted or unfitted pipeline's estimator."""
    return estimator_family(pipeline.steps[-1][1])


def predict_scores(model, df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Probability of the positive class for each row."""
    return model.predict_proba(feature_frame(df, spec))[:, 1]


def align_probabilities(proba: np.ndarray, fitted_classes: np.ndarray, n_classes: int) -> np.ndarray:
    """A classifier's `predict_proba` as (rows, n_classes): the classifier was fitted on encoded
    class indices and its `classes_` are the ones its training rows held; a declared class it
    never saw gets probability 0."""
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(fitted_classes, dtype=int)] = proba
    return out


def estimator_outputs(estimator, features, target: TargetSpec) -> np.ndarray:
    """A fitted estimator's (or pipeline's) predictions for `features` in the task's shape: binary
    the positive-class probability; multiclass (rows, k) probabilities in `target.classes` order
    (`align_probabilities`); regression the predicted values."""
    if target.type == BINARY:
        return estimator.predict_proba(features)[:, 1]
    if target.type == MULTICLASS:
        return align_probabilities(estimator.predict_proba(features), estimator.classes_, len(target.classes))
    return np.asarray(estimator.predict(features), dtype=float)


def predict_outputs(model, df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """A fitted pipeline's predictions of `df`'s rows in the task's shape (`core.tasks`): binary
    the positive-class probability (as `predict_scores`); multiclass (rows, k) probabilities in
    `target.classes` order, 0 for a class the training window lacked; regression the values."""
    return estimator_outputs(model, feature_frame(df, spec), spec.target)


def predict_labels(model, df: pd.DataFrame, spec: DatasetSpec, threshold: float = 0.5) -> np.ndarray:
    """The predicted label of each row: binary the positive class where the score is at or above
    `threshold` else the other class; multiclass the most probable declared class
    (`core.tasks.predicted_classes`); regression the predicted value."""
    target, outputs = spec.target, predict_outputs(model, df, spec)
    if target.type == REGRESSION:
        return outputs
    if target.type == MULTICLASS:
        return predicted_classes(outputs, target)
    negative = next(c for c in target.classes if c != target.positive)
    return np.asarray([negative, target.positive], dtype=object)[(outputs >= threshold).astype(int)]


def split_holdout(window: pd.DataFrame, holdout_share: float) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Split a training window by time: the newest partitions (at least one) are held out.

    Returns (train, holdout, holdout partition keys). Whole partitions move together so that no
    day is partly trained on and partly evaluated on.
    """
    partitions = sorted(window[PARTITION_COLUMN].unique())
    if len(partitions) < 2:
        raise ValueError(f"need at least two labeled partitions to hold one out, got {len(partitions)}")
    n_holdout = min(len(partitions) - 1, max(1, round(len(partitions) * holdout_share)))
    holdout_keys = partitions[-n_holdout:]
    is_holdout = window[PARTITION_COLUMN].isin(holdout_keys)
    return window[~is_holdout], window[is_holdout], [pd.Timestamp(k).strftime("%Y-%m-%d") for k in holdout_keys]


# From this many rows `content_hash` lets DuckDB hash the rows (0.13 s for a million, where pandas took
# 1.9 s); below, pandas is quicker (DuckDB's connection alone costs about 20 ms).
DUCKDB_HASH_ROWS = 100_000


def content_hash(df: pd.DataFrame) -> str:
    """A SHA-256 of a frame's column names and values, independent of row and column order. Row
    hashes are combined order-free: sorted (pandas' `hash_pandas_object`), or from
    `DUCKDB_HASH_ROWS` rows on summed (DuckDB's `hash` of each row, its columns in name order;
    stable for a DuckDB version). A frame DuckDB cannot scan (an object column mixing types) is
    hashed with pandas."""
    columns = sorted(df.columns)
    digest = hashlib.sha256("|".join(map(str, columns)).encode())
    if len(df) >= DUCKDB_HASH_ROWS and columns:
        try:
            with duckdb.connect() as con:
                con.register("frame", df)
                total, rows = con.execute(f"SELECT sum(hash({', '.join(ident(str(c)) for c in columns)})::HUGEINT), count(*) "
                                          "FROM frame").fetchone()
            digest.update(f"duckdb:{total}:{rows}".encode())
            return digest.hexdigest()
        except duckdb.Error:
            pass
    digest.update(np.sort(pd.util.hash_pandas_object(df[columns], index=False).to_numpy()).tobytes())
    return digest.hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus a hash of the source that is running (every module of the imported
    `retrain_assets` package): any code change, committed or not, installed or editable, gives a
    new code version, so a model trained by older code is never reused."""
    return f"{package_version('retrain-assets')}+{source_hash(Path(__file__).resolve().parents[2])}"


def source_hash(package_dir: Path) -> str:
    """sha256 over the package's `.py` files (relative path and bytes, in path order), 12 hex digits."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
