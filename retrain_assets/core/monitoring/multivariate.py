"""Multivariate drift: can a classifier tell the reference rows from the current batch?

Per-feature tests (KS, chi-squared, PSI) look at one marginal at a time, so they miss a change
that lives only in the joint distribution, e.g. two features that become correlated while each
keeps its own distribution. We detect joint drift with a *domain classifier* rather than with
PCA reconstruction error, because:

- it detects any change in the joint distribution that a flexible classifier can separate,
  including interactions and correlation changes that no single feature shows (PCA error only
  sees departures from the reference's *linear* subspace, and needs numbers on one scale);
- gradient-boosted trees take mixed numeric and categorical columns as they are, with missing
  values, without a linearity or scaling assumption;
- its cross-validated ROC AUC is an interpretable effect size: 0.5 means the two samples are
  indistinguishable, 1.0 means every row can be told apart. A threshold on it reads the same
  for every dataset, unlike a reconstruction error in arbitrary units.

Convention: label reference rows 0 and current rows 1, subsample both sides to the same size,
and report the mean out-of-fold ROC AUC over stratified folds. Drift is flagged when that mean
is strictly above the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrain_assets.core.monitoring.values import sample_positions

# Imported inside the functions that use them, not with the module (`retrain-assets drift` loads
# them on a thread while it reads columns: `apps.drift.REPORT_MODULES`).
DEFERRED_IMPORTS = ("sklearn.ensemble", "sklearn.model_selection", "sklearn.preprocessing", "threadpoolctl")
# Rows of the reference a profile keeps for the domain classifier (`reference_sample`).
REFERENCE_SAMPLE_ROWS = 5000
# HistGradientBoosting needs categorical codes below max_bins (255); rarer levels are pooled.
_MAX_CATEGORIES = 255


@dataclass(frozen=True)
class DomainClassifierResult:
    """Cross-validated ROC AUC of a reference-vs-current classifier and the drift verdict.

    `auc` is NaN (and `drifted` False) when either side is too small to cross-validate.
    `n_reference` / `n_current` are the rows actually used after balancing.
    """

    auc: float
    auc_std: float
    n_reference: int
    n_current: int
    drifted: bool
    threshold: float


def reference_sample(df: pd.DataFrame, columns: list[str], max_rows: int = REFERENCE_SAMPLE_ROWS, seed: int = 0) -> pd.DataFrame:
    """At most `max_rows` rows of `columns`, drawn without replacement, kept in original order.

    Deterministic in (`df`, `max_rows`, `seed`); this is the sample stored in a reference profile.
    """
    _require_columns(df, columns, "reference")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    rows = sample_positions(len(df), max_rows, np.random.default_rng(seed))
    return df[columns].iloc[rows].reset_index(drop=True)


def domain_classifier_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    threshold: float = 0.6,
    max_rows: int = 5000,
    folds: int = 5,
    seed: int = 0,
    max_iter: int = 100,
) -> DomainClassifierResult:
    """Train gradient-boosted trees to separate reference (0) from current (1) rows.

    Both sides are subsampled to the same size n = min(len(reference), len(current), max_rows).
    When n < 2 * folds, a test fold would hold one or two rows per class and its AUC would be
    noise, so the result is `auc=NaN, drifted=False`: too little data to judge, not "no drift".
    Deterministic in `seed`.
    """
    # Imported here: `reference_sample` needs only pandas, and `retrain-assets drift` loads scikit-learn while it reads files.
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from threadpoolctl import threadpool_limits

    columns = list(numeric) + list(categorical)
    if not columns:
        raise ValueError("no columns to compare: pass at least one numeric or categorical column")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    _require_columns(reference, columns, "reference")
    _require_columns(current, columns, "current")

    n = min(len(reference), len(current), max_rows)
    if n < 2 * folds:
        return DomainClassifierResult(math.nan, math.nan, n, n, False, threshold)

    rng = np.random.default_rng(seed)
    ref = reference[columns].iloc[sample_positions(len(reference), n, rng)]
    cur = current[columns].iloc[sample_positions(len(current), n, rng)]
    X = _encode(pd.concat([ref, cur], ignore_index=True), numeric, categorical)
    y = np.repeat([0, 1], n)

    model = HistGradientBoostingClassifier(
        max_iter=max_iter,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        categorical_features=np.array([False] * len(numeric) + [True] * len(categorical)),
        early_stopping=False,
        random_state=seed,
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # One OpenMP thread: at these sizes a fit takes ~0.1 s single-threaded, while OpenMP's
    # busy-waiting threads slow it 10x or more on a host whose cores are shared with other
    # processes (parallel Dagster steps, test workers). The result does not depend on it.
    with threadpool_limits(limits=1, user_api="openmp"):
        aucs = cross_val_score(model, X, y, cv=cv, scoring="roc_auc")
    auc = float(np.mean(aucs))
    return DomainClassifierResult(
        auc=auc,
        auc_std=float(np.std(aucs)),
        n_reference=n,
        n_current=n,
        drifted=bool(auc > threshold),
        threshold=threshold,
    )


def _encode(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> np.ndarray:
    """Numbers as float64 (NaN kept: the trees route missing values); categories as ordinal codes.

    The encoder sees both sides' rows but never the domain label, so fitting it before the
    cross-validation leaks nothing; a category that only appears in the current batch gets its
    own code, which is what lets the classifier notice it.
    """
    from sklearn.preprocessing import OrdinalEncoder

    parts = [frame[numeric].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")]
    if categorical:
        present = frame[categorical].notna()
        cats = frame[categorical].astype(str).where(present, np.nan)  # one type; missing stays NaN
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            max_categories=_MAX_CATEGORIES,
            dtype=np.float64,
        )
        parts.append(encoder.fit_transform(cats))
    return np.hstack(parts)


def _require_columns(df: pd.DataFrame, columns: list[str], side: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{side} frame lacks columns {missing}")
