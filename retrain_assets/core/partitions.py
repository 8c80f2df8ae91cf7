"""Time partitions as the pure core sees them: the column every partitioned table carries, and the
arithmetic of partition keys at the spec's granularity (daily, weekly or monthly)."""

from __future__ import annotations

import pandas as pd

PARTITION_COLUMN = "partition_start"
PERIODS = {"daily": pd.DateOffset(days=1), "weekly": pd.DateOffset(weeks=1), "monthly": pd.DateOffset(months=1)}


def partition_bounds(start: pd.Timestamp, granularity: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of the partition that starts at `start`."""
    return start, start + PERIODS[granularity]


def next_partition(partition: str, granularity: str, steps: int = 1) -> str:
    """The key of the partition `steps` after `partition` ("YYYY-MM-DD" at every granularity)."""
    start = pd.Timestamp(partition)
    for _ in range(steps):
        start = partition_bounds(start, granularity)[1]
    return f"{start:%Y-%m-%d}"
