"""What a drift report measures on every row of a batch, however the batch was read: the feature
table, the row count, the out-of-distribution share and the segment summary (`BatchMeasures`).

`measure_frame` measures a pandas frame (the pipeline's `drift_report`, `retrain-assets drift` on
CSV); `columnar_drift.compare_parquet` measures two Parquet files a column at a time. The report
(`batch_report.build_drift_report`) takes either, and its other sections read rows of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from retrain_assets.core.monitoring.drift import feature_drift, out_of_distribution_share
from retrain_assets.core.monitoring.profile import ReferenceProfile
from retrain_assets.core.monitoring.segment_drift import segment_drift, segment_summary
from retrain_assets.core.monitoring.values import as_categories
from retrain_assets.core.policy.definition import DriftThresholds


@dataclass
class BatchMeasures:
    """The feature table (`drift.feature_drift`), the batch's row count, its out-of-distribution
    share and its segment summary keys (`segment_drift.segment_summary`)."""

    features: pd.DataFrame
    n_rows: int
    ood_share: float
    segments: dict[str, Any]


def measure_frame(profile: ReferenceProfile, current: pd.DataFrame, categorical: list[str],
                  thresholds: DriftThresholds) -> BatchMeasures:
    """`BatchMeasures` of a frame against the profile; the `categorical` text columns are counted
    as pandas categoricals, converted once for the three measures (`values.as_categories`)."""
    counted = as_categories(current, categorical)
    return BatchMeasures(feature_drift(profile, counted, thresholds), len(current), out_of_distribution_share(profile, counted),
                         segment_summary(segment_drift(profile, counted, thresholds)))
