"""Writing DuckDB SQL from Python for the large-batch path (`large_batch`, `contract_sql`,
`monitoring.large_batch_drift`): timestamp literals, an atomic COPY to Parquet, row counts
(quoting: `core.sql_text`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd

from retrain_assets.core.sql_text import lit

Progress = Callable[[str], None]  # called with one line of progress for the user (check-batch prints it)


def timestamp_literal(value: pd.Timestamp) -> str:
    """`value` as a SQL TIMESTAMP literal (microseconds, no time zone)."""
    return f"TIMESTAMP {lit(pd.Timestamp(value).isoformat(sep=' '))}"


def copy_to_parquet(con: duckdb.DuckDBPyConnection, query: str, target: Path) -> int:
    """COPY `query` to a temp file beside `target` and rename it over `target`; the row count."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        found = con.execute(f"COPY ({query}) TO {lit(str(tmp))} (FORMAT parquet)").fetchall()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return int(found[0][0])


def count_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """The number of rows in `table`."""
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
