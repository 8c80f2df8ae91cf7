"""Model families per task: which scikit-learn estimator a family name means for a target, its
default hyperparameters and the grid the model search tries.

The names are those of `core.policy.definition.TASK_FAMILIES`: binary and multiclass train
`logistic_regression` (multinomial when there are three or more classes) or
`hist_gradient_boosting` (a classifier); regression trains `ridge` or `hist_gradient_boosting`
(a regressor on squared error). Gradient boosting runs without early stopping so that a fit
depends on the data and the seed only.
"""

from __future__ import annotations

from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge

from retrain_assets.core.policy.definition import TASK_FAMILIES
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION

_BOOSTING_DEFAULT = {"learning_rate": 0.1, "max_leaf_nodes": 15, "max_iter": 100, "l2_regularization": 1.0}
_BOOSTING_GRID = [
    {"learning_rate": 0.05, "max_leaf_nodes": 7, "max_iter": 150, "l2_regularization": 1.0},
    {"learning_rate": 0.1, "max_leaf_nodes": 15, "max_iter": 100, "l2_regularization": 1.0},
]
_CLASSIFIER_DEFAULTS = {"logistic_regression": {"C": 1.0}, "hist_gradient_boosting": _BOOSTING_DEFAULT}
_CLASSIFIER_GRID = {"logistic_regression": [{"C": 0.1}, {"C": 1.0}, {"C": 10.0}], "hist_gradient_boosting": _BOOSTING_GRID}

# Each task's families with their default hyperparameters and search grid (simpler configurations first).
TASK_DEFAULT_PARAMS: dict[str, dict[str, dict]] = {
    BINARY: _CLASSIFIER_DEFAULTS,
    MULTICLASS: _CLASSIFIER_DEFAULTS,
    REGRESSION: {"ridge": {"alpha": 1.0}, "hist_gradient_boosting": _BOOSTING_DEFAULT},
}
TASK_SEARCH_SPACE: dict[str, dict[str, list[dict]]] = {
    BINARY: _CLASSIFIER_GRID,
    MULTICLASS: _CLASSIFIER_GRID,
    REGRESSION: {"ridge": [{"alpha": 0.1}, {"alpha": 1.0}, {"alpha": 10.0}], "hist_gradient_boosting": _BOOSTING_GRID},
}


def default_family(target: TargetSpec) -> str:
    """The task's first family (the simpler, linear one): binary/multiclass logistic regression, regression ridge."""
    return TASK_FAMILIES[target.type][0]


def family_params(target: TargetSpec, family: str, params: dict | None = None) -> dict:
    """`family`'s default hyperparameters for the target's task, overridden by `params`.

    Raises ValueError naming the task's families when `family` is not one of them.
    """
    families = TASK_DEFAULT_PARAMS[target.type]
    if family not in families:
        raise ValueError(f"unknown model family {family!r} for a {target.type} target; known: {sorted(families)}")
    return {**families[family], **(params or {})}


def make_estimator(target: TargetSpec, family: str, params: dict | None, seed: int):
    """An unfitted estimator of `family` for the target's task (hyperparameters via `family_params`)."""
    p = family_params(target, family, params)
    if family == "logistic_regression":
        return LogisticRegression(C=float(p["C"]), max_iter=1000, random_state=seed)
    if family == "ridge":
        return Ridge(alpha=float(p["alpha"]), random_state=seed)
    boosting = dict(learning_rate=float(p["learning_rate"]), max_leaf_nodes=int(p["max_leaf_nodes"]),
                    max_iter=int(p["max_iter"]), l2_regularization=float(p["l2_regularization"]),
                    early_stopping=False, random_state=seed)
    if target.type == REGRESSION:
        return HistGradientBoostingRegressor(loss="squared_error", **boosting)
    return HistGradientBoostingClassifier(**boosting)


def estimator_family(estimator) -> str:
    """The family name of an estimator `make_estimator` builds (fitted or not)."""
    if isinstance(estimator, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
        return "hist_gradient_boosting"
    if isinstance(estimator, Ridge):
        return "ridge"
    if isinstance(estimator, LogisticRegression):
        return "logistic_regression"
    raise ValueError(f"{type(estimator).__name__} is not an estimator of a known model family")
