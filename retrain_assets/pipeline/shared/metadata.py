"""Materialization and check metadata as people read it in the Dagster UI: the links to the
reports and the verdict first, numbers rounded to four significant digits."""

from __future__ import annotations

import math
from typing import Any, Mapping

import dagster as dg
import pandas as pd

SIGNIFICANT_DIGITS = 4
# Keys that say what the step concluded: shown right after the report links.
VERDICT_KEYS = ("verdict", "status", "decision", "retrain", "trigger", "reason", "action", "passed", "blocked")


def for_people(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata` with report links (path and URL values) first, then the verdict keys, then the
    rest in their order; plain floats rounded to `SIGNIFICANT_DIGITS` significant digits (NaN and
    integers kept, so a value keeps its type and Dagster's plots stay continuous)."""
    links = {k: v for k, v in metadata.items() if isinstance(v, (dg.UrlMetadataValue, dg.PathMetadataValue))}
    verdict = {k: metadata[k] for k in VERDICT_KEYS if k in metadata and k not in links}
    rest = {k: v for k, v in metadata.items() if k not in links and k not in verdict}
    return {k: rounded(v) for k, v in {**links, **verdict, **rest}.items()}


def rounded(value: Any) -> Any:
    """A float (or a Dagster float value) to `SIGNIFICANT_DIGITS` significant digits; anything else as it is."""
    if isinstance(value, dg.FloatMetadataValue):
        return dg.MetadataValue.float(rounded(value.value)) if value.value is not None else value
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def drifted_features_metadata(features: pd.DataFrame, top: int = 8) -> dict[str, Any]:
    """A drift report's feature verdicts (`core.monitoring.drift.feature_drift`) for its
    materialization: `reported_only_features`, the count detected but not drifted (a certain shift
    below the moderate band: reported, not counted), and `top_drifted_features`, a table of the
    first `top` (drifted, then detected, then by drift_score) with their severity."""
    listed = features.sort_values(["drifted", "detected", "drift_score"], ascending=[False, False, False]).head(top)
    columns = ["feature", "drifted", "detected", "severity", "test", "drift_score", "threshold", "psi", "p_value_adjusted"]
    return {"reported_only_features": int((features["detected"] & ~features["drifted"]).sum()),
            "top_drifted_features": dg.MetadataValue.md(listed[columns].to_markdown(index=False, floatfmt=".4g"))}
