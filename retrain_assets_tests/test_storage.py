"""The warehouse IO manager writes each output in one transaction: a write that fails half-way
(here: an insert DuckDB refuses after the old rows were deleted) leaves the old rows in place."""

import dagster as dg
import pandas as pd

from retrain_assets.defs.storage import WarehouseIOManager
from retrain_assets_tests.conftest import read_table

PARTITIONS = dg.DailyPartitionsDefinition(start_date="2025-01-01")


def history_and_partitioned(frames: dict[str, pd.DataFrame]):
    @dg.asset
    def history() -> pd.DataFrame:
        return frames["history"]

    @dg.asset(partitions_def=PARTITIONS, metadata={"partition_expr": "day"})
    def daily(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return frames["daily"].assign(day=pd.Timestamp(context.partition_key))

    return history, daily


def test_a_failed_write_keeps_the_previous_rows(tmp_path):
    database = str(tmp_path / "warehouse.duckdb")
    frames = {"history": pd.DataFrame({"a": [1, 2, 3]}), "daily": pd.DataFrame({"x": [1.0, 2.0]})}
    assets = history_and_partitioned(frames)
    resources = {"io_manager": WarehouseIOManager(database=database, schema="main")}
    assert dg.materialize(assets, resources=resources, partition_key="2025-01-02").success

    # Same tables, one column too many: DuckDB refuses the insert after the delete ran.
    frames.update(history=pd.DataFrame({"a": [9], "b": [9]}), daily=pd.DataFrame({"x": [9.0], "y": [9.0]}))
    result = dg.materialize(assets, resources=resources, partition_key="2025-01-02", raise_on_error=False)
    assert not result.success
    # Upstream's DuckDBPandasIOManager deletes in one autocommitted statement and inserts in
    # another: here it would have left both tables empty.
    assert read_table(tmp_path / "warehouse.duckdb", "select a from history order by a")["a"].tolist() == [1, 2, 3]
    assert read_table(tmp_path / "warehouse.duckdb", "select x from daily order by x")["x"].tolist() == [1.0, 2.0]
