"""Which `drift_report` rows tell a partition's story. A partition keeps the rows of every champion
that scored it: re-running it (late labels) replaces only the rows of the champion scoring it now,
and a new champion adds its own, so the rows a past decision read stay as they were.

Two readings follow. Per partition over time (trends, `status`, the health page, the analysts'
views) the rows of the champion that served at the partition's data time: the first champion that
scored it, flagged `champion_served`. Per champion (the policy, the drift check) that champion's
rows: a decision's evidence is the rows of its `champion_version` up to its `partition`
(`decision_evidence`)."""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from retrain_assets.core.partitions import PARTITION_COLUMN

SERVED_COLUMN = "champion_served"


def served_condition(columns: Iterable[str]) -> str:
    """SQL condition keeping the rows of the champion that served at each partition's data time,
    given the columns `drift_report` has: rows written before the flag existed (NULL, or a table
    without the column) held one champion per partition, and count as served."""
    return f"coalesce({SERVED_COLUMN}, true)" if SERVED_COLUMN in set(columns) else "true"


def latest_scorings(columns: Iterable[str]) -> str:
    """A table expression for the `drift_report` rows of the champion that scored each partition
    last: one row-set per partition, as the table held before it kept every champion's rows (the
    policy's history reads it so, then keeps its champion's rows). `columns`: the table's."""
    if "computed_at" not in set(columns):
        return "drift_report"
    return (f"(select * from drift_report qualify champion_version = first_value(champion_version) over "
            f"(partition by {PARTITION_COLUMN} order by computed_at desc))")


def champion_served(own_flags: Iterable, other_champion_scored: bool) -> bool:
    """Whether the rows a champion writes for a partition are the serving champion's. A re-run keeps
    what its earlier rows said (`own_flags`: their flags; NULL, written before the flag, counts as
    served: one champion per partition then); a first scoring serves unless another champion scored
    the partition before it."""
    flags = [flag for flag in own_flags]
    if flags:
        return any(pd.isna(flag) or bool(flag) for flag in flags)
    return not other_champion_scored


def served_rows(report: pd.DataFrame) -> pd.DataFrame:
    """The rows of `drift_report` rows `report` that `served_condition` keeps (all without the flag)."""
    if SERVED_COLUMN not in report or report.empty:
        return report
    return report[report[SERVED_COLUMN].map(lambda flag: pd.isna(flag) or bool(flag))]


def decision_evidence(report: pd.DataFrame, champion_version: str, partition: str) -> pd.DataFrame:
    """The drift_report rows a retrain decision read: those of its champion (`champion_version`) for
    the partitions up to its data time (`partition`, `YYYY-MM-DD`), oldest first."""
    if report.empty or not champion_version:
        return report.iloc[0:0]
    stamps = pd.to_datetime(report[PARTITION_COLUMN])
    mine = (report["champion_version"].astype(str) == str(champion_version)) & (stamps <= pd.Timestamp(partition))
    return report[mine].sort_values([PARTITION_COLUMN, "feature"] if "feature" in report else [PARTITION_COLUMN])
