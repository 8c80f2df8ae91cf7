"""Training: spec-driven features inside one scikit-learn Pipeline, so serving cannot skew from
training, plus the time-ordered split and the content hash that versions a training set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from retrain_assets.core.spec import DatasetSpec

PARTITION_COLUMN = "partition_start"


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
    """1 where the row's label is the spec's positive class, else 0."""
    return (df[spec.target.name] == spec.target.positive).to_numpy(dtype=int)


def build_pipeline(spec: DatasetSpec, seed: int) -> Pipeline:
    """Preprocessing (impute, scale, one-hot with declared categories) + logistic regression."""
    transformers = []
    if spec.numeric_features:
        transformers.append(
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), spec.numeric_features)
        )
    if spec.categorical_features:
        categories = [list(spec.column(c).categories) if spec.column(c).categories else "auto" for c in spec.categorical_features]
        if all(c != "auto" for c in categories):
            encoder = OneHotEncoder(categories=categories, handle_unknown="ignore")
        else:
            encoder = OneHotEncoder(handle_unknown="ignore")
        transformers.append(
            ("categorical", Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", encoder)]), spec.categorical_features)
        )
    return Pipeline(
        [
            ("features", ColumnTransformer(transformers, remainder="drop")),
            ("model", LogisticRegression(C=1.0, max_iter=1000, random_state=seed)),
        ]
    )


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline with what it was trained on."""

    pipeline: Pipeline
    params: dict
    n_train_rows: int
    train_positive_rate: float


def train_model(train: pd.DataFrame, spec: DatasetSpec, seed: int) -> TrainedModel:
    """Fit the spec's pipeline on labeled rows; fails loudly when a class is missing."""
    y = target_vector(train, spec)
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"training window has {len(y)} rows but only one class ({int(y[0]) if len(y) else 'none'}); "
            "wait for more labeled partitions or widen policy.training_window_partitions"
        )
    pipeline = build_pipeline(spec, seed)
    pipeline.fit(feature_frame(train, spec), y)
    params = {"model_family": "logistic_regression", "C": 1.0, "max_iter": 1000, "seed": seed}
    return TrainedModel(pipeline=pipeline, params=params, n_train_rows=len(train), train_positive_rate=float(y.mean()))


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
