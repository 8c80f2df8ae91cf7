"""Partitions derived from the dataset spec."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from retrain_assets.core.spec import DatasetSpec


def partitions_for(spec: DatasetSpec) -> dg.TimeWindowPartitionsDefinition:
    """Time partitions at the spec's granularity; the current period is open (end_offset=1) so a
    batch landing today is ingested today."""
    start = spec.partitions.start_date
    if spec.partitions.granularity == "monthly":
        return dg.MonthlyPartitionsDefinition(start_date=start, end_offset=1)
    if spec.partitions.granularity == "weekly":
        return dg.WeeklyPartitionsDefinition(start_date=start, day_offset=1, end_offset=1)  # weeks start Monday
    return dg.DailyPartitionsDefinition(start_date=start, end_offset=1)


def partition_window(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The run's partition as naive UTC timestamps [start, end)."""
    window = context.partition_time_window
    return pd.Timestamp(window.start).tz_convert(None), pd.Timestamp(window.end).tz_convert(None)
