"""Training: spec-driven features inside one scikit-learn Pipeline, so serving cannot skew from
training, plus the time-ordered split, the content hash that versions a training set and the
code version that says which code trained a model.
The model search over families and hyperparameters is in `core.training.selection`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import encode_labels


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


DEFAULT_PARAMS = {
    "logistic_regression": {"C": 1.0},
    "hist_gradient_boosting": {"learning_rate": 0.1, "max_leaf_nodes": 15, "max_iter": 100, "l2_regularization": 1.0},
}


def build_pipeline(spec: DatasetSpec, seed: int, family: str = "logistic_regression", params: dict | None = None) -> Pipeline:
    """Preprocessing (impute, scale, one-hot with declared categories) + a classifier of `family`.

    `params` are the family's hyperparameters (defaults: `DEFAULT_PARAMS`). Gradient boosting
    runs without early stopping so that a fit depends on the data and the seed only.
    """
    if family not in DEFAULT_PARAMS:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(DEFAULT_PARAMS)}")
    params = {**DEFAULT_PARAMS[family], **(params or {})}
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
    if family == "logistic_regression":
        classifier = LogisticRegression(C=float(params["C"]), max_iter=1000, random_state=seed)
    else:
        classifier = HistGradientBoostingClassifier(
            learning_rate=float(params["learning_rate"]), max_leaf_nodes=int(params["max_leaf_nodes"]),
            max_iter=int(params["max_iter"]), l2_regularization=float(params["l2_regularization"]),
            early_stopping=False, random_state=seed,
        )
    return Pipeline([("features", ColumnTransformer(transformers, remainder="drop")), ("model", classifier)])


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline with what it was trained on."""

    pipeline: Pipeline
    params: dict
    n_train_rows: int
    train_positive_rate: float


def require_both_classes(y: np.ndarray) -> None:
    """Fail loudly when labeled rows hold a single class (no classifier can be fitted)."""
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"training window has {len(y)} rows but only one class ({int(y[0]) if len(y) else 'none'}); "
            "wait for more labeled partitions or widen policy.training_window_partitions"
        )


def train_model(train: pd.DataFrame, spec: DatasetSpec, seed: int, family: str = "logistic_regression",
                params: dict | None = None) -> TrainedModel:
    """Fit the spec's pipeline of `family` on labeled rows; fails loudly when a class is missing."""
    y = target_vector(train, spec)
    require_both_classes(y)
    pipeline = build_pipeline(spec, seed, family, params)
    pipeline.fit(feature_frame(train, spec), y)
    used = {"model_family": family, **DEFAULT_PARAMS[family], **(params or {}), "seed": seed}
    return TrainedModel(pipeline=pipeline, params=used, n_train_rows=len(train), train_positive_rate=float(y.mean()))


def model_family(pipeline: Pipeline) -> str:
    """The family name (a `DEFAULT_PARAMS` key) of a fitted or unfitted pipeline's classifier."""
    classifier = pipeline.steps[-1][1]
    return "hist_gradient_boosting" if isinstance(classifier, HistGradientBoostingClassifier) else "logistic_regression"


def predict_scores(model, df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Probability of the positive class for each row."""
    return model.predict_proba(feature_frame(df, spec))[:, 1]


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


def content_hash(df: pd.DataFrame) -> str:
    """A stable SHA-256 of a frame's columns and values, independent of row order."""
    ordered = df.reindex(sorted(df.columns), axis=1)
    row_hashes = np.sort(pd.util.hash_pandas_object(ordered, index=False).to_numpy())
    digest = hashlib.sha256()
    digest.update("|".join(ordered.columns).encode())
    digest.update(row_hashes.tobytes())
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
