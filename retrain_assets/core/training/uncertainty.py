"""Regression uncertainty for active learning: how far an ensemble of models disagrees on a row.

A classifier's uncertainty is in its probabilities; a regressor gives one number, and
scikit-learn's `HistGradientBoostingRegressor` exposes neither per-tree predictions nor a
variance. The spread of a row is therefore the standard deviation of several models' predictions:

- **Fold ensemble** (preferred, free): `Selection.fold_models`, the chosen configuration fitted on
  each time-ordered fold's training rows by the model search, which fits them anyway. Each
  member ends at a different day and saw a different amount of data, so their disagreement
  mixes sampling variance with change over time; both mark rows whose label teaches the model
  most. Cost: one prediction per member and row; the members must be kept next to the champion
  (a few MB for gradient boosting) where the labeling stage can load them.
- **Bootstrap ensemble** (`bootstrap_ensemble`): the configuration refitted on row bootstrap
  samples of the training window, for a model trained without a search (fewer than three
  partitions) or whose fold models were not kept. Cost: `n_members` full fits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import REGRESSION
from retrain_assets.core.training.modeling import predict_outputs, train_model
from retrain_assets.core.training.selection import Selection


def prediction_spread(members, df: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """Per row of `df`, the standard deviation (population, ddof 0) of the predicted values of
    two or more fitted regression pipelines `members`; larger means less certain."""
    if spec.target.type != REGRESSION:
        raise ValueError(f"prediction_spread is for regression; a {spec.target.type} model's uncertainty is in its probabilities")
    if len(members) < 2:
        raise ValueError(f"a spread needs two or more ensemble members, got {len(members)}")
    return np.std(np.stack([predict_outputs(m, df, spec) for m in members]), axis=0)


def bootstrap_ensemble(train: pd.DataFrame, spec: DatasetSpec, seed: int, family: str | None = None,
                       params: dict | None = None, n_members: int = 5) -> tuple:
    """`n_members` pipelines of `family`/`params`, member m fitted with seed `seed + m` on a row
    bootstrap sample (drawn with numpy's generator seeded by `seed`) of `train`."""
    rng = np.random.default_rng(seed)
    return tuple(train_model(train.iloc[rng.integers(0, len(train), len(train))], spec, seed + m, family, params).pipeline
                 for m in range(n_members))


def uncertainty_members(selection: Selection, train: pd.DataFrame, spec: DatasetSpec, seed: int, n_members: int = 5) -> tuple:
    """The ensemble for `prediction_spread`: the search's fold models when it kept two or more,
    else a bootstrap ensemble of the chosen configuration on `train` (the selection's window)."""
    if len(selection.fold_models) >= 2:
        return selection.fold_models
    params = {k: v for k, v in selection.model.params.items() if k not in ("model_family", "seed")}
    return bootstrap_ensemble(train, spec, seed, selection.model.params["model_family"], params, n_members)
