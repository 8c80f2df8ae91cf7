"""Drift per segment: each value of the spec's `segments` columns, the batch's rows of it against
the reference's rows of it (`ReferenceProfile.segments`, built by `profile.segment_profiles`).

A shift confined to one segment (one region's applicants, one store) can be diluted below the
whole batch's verdict; judged on its own slice it is not. Each slice is judged as a batch is
(`drift.feature_drift` with Benjamini-Hochberg across the slice's features, then
`drift.dataset_drift`'s `dataset_drift_share` rule), without the segment column itself, and only
when the batch and the reference both hold at least `DriftThresholds.segment_min_rows` rows of it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from retrain_assets.core.monitoring.drift import dataset_drift, feature_drift
from retrain_assets.core.monitoring.profile import ReferenceProfile
from retrain_assets.core.monitoring.values import factorize
from retrain_assets.core.policy.drift_thresholds import DriftThresholds

SEGMENT_COLUMNS = ("segment", "value", "n_rows", "n_reference", "n_features", "n_drifted", "drift_share", "drifted",
                   "top_features")
TOP_FEATURES = 3  # the drifted features named per segment (largest scores first)


def segment_drift(profile: ReferenceProfile, df: pd.DataFrame, thresholds: DriftThresholds = DriftThresholds()) -> pd.DataFrame:
    """One row per tested segment value (`SEGMENT_COLUMNS`), in the profile's order: the slice's
    rows in the batch (`n_rows`) and the reference (`n_reference`), its tested and drifted
    features, drift share, verdict, and up to `TOP_FEATURES` drifted features (comma-separated).
    A value with fewer than `segment_min_rows` rows on either side is left out; a profile without
    segments (built before they existed, or a spec without `segments`) gives an empty table."""
    rows: list[dict[str, Any]] = []
    for column, values in (profile.segments or {}).items():
        if column not in df.columns:
            raise KeyError(f"batch lacks segment column {column!r}")
        codes, keys = factorize(df[column])
        for value, reference in values.items():
            index = np.flatnonzero(np.isin(codes, [i for i, k in enumerate(keys) if k == value]))
            if min(len(index), reference.n_rows) < thresholds.segment_min_rows:
                continue
            rows.append(segment_row(column, value, feature_drift(reference, df.iloc[index], thresholds), len(index),
                                    reference.n_rows, thresholds))
    return pd.DataFrame(rows, columns=list(SEGMENT_COLUMNS))


def segment_row(column: str, value: str, table: pd.DataFrame, n_rows: int, n_reference: int,
                thresholds: DriftThresholds) -> dict[str, Any]:
    """One tested segment value's row of `segment_drift` from its slice's feature table."""
    verdict = dataset_drift(table, thresholds)
    drifted = table[table["drifted"]]
    drifted = drifted.assign(strength=_strength(drifted)).sort_values("strength", ascending=False)
    return {"segment": column, "value": value, "n_rows": int(n_rows), "n_reference": int(n_reference),
            "n_features": verdict["n_features"], "n_drifted": verdict["n_drifted"],
            "drift_share": float(verdict["drift_share"]), "drifted": verdict["dataset_drifted"],
            "top_features": ", ".join(drifted["feature"].head(TOP_FEATURES))}


def segment_summary(table: pd.DataFrame) -> dict[str, Any]:
    """The batch summary's segment keys from `segment_drift`'s table: `segment_drift_json` (its
    rows as JSON, "" when none was tested), `max_segment_drift_share` (NaN: none tested) and
    `drifted_segments` (how many drifted)."""
    if table.empty:
        return {"segment_drift_json": "", "max_segment_drift_share": math.nan, "drifted_segments": 0}
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
               for row in table.to_dict(orient="records")]
    shares = table["drift_share"].dropna()
    return {"segment_drift_json": json.dumps(records, allow_nan=False, default=_plain),
            "max_segment_drift_share": float(shares.max()) if len(shares) else math.nan,
            "drifted_segments": int(table["drifted"].sum())}


def segments_from_json(text: str | None) -> pd.DataFrame:
    """`segment_drift`'s table back from a summary's `segment_drift_json` (empty for "" or None)."""
    if not text or (isinstance(text, float) and math.isnan(text)):
        return pd.DataFrame(columns=list(SEGMENT_COLUMNS))
    table = pd.DataFrame(json.loads(text), columns=list(SEGMENT_COLUMNS))
    table["drift_share"] = table["drift_share"].astype(float)
    return table


def segment_words(summary: dict[str, Any], counted: bool) -> str:
    """The drifted segments of a batch summary in words ("" when no segment was tested), e.g.
    "1 of 4 segments drifted (region=north: 2/2 features), counted as drift"; `counted`:
    `DriftThresholds.segment_drift` is on."""
    table = segments_from_json(summary.get("segment_drift_json"))
    if table.empty:
        return ""
    drifted = table[table["drifted"].astype(bool)]
    named = ", ".join(f"{r.segment}={r.value}: {r.n_drifted}/{r.n_features} features" for r in drifted.itertuples())
    return (f"{len(drifted)} of {len(table)} segments drifted" + (f" ({named})" if named else "")
            + (", counted as drift" if counted and len(drifted) else ""))


def _strength(table: pd.DataFrame) -> pd.Series:
    """How strongly each feature drifted, larger: stronger. A p-value test's score is the adjusted
    p-value (smaller: stronger), so it is negated; a distance or PSI is kept."""
    scores = table["drift_score"].astype(float)
    return scores.where(~table["test"].isin(["ks", "chi2"]), -scores)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {value!r}")
