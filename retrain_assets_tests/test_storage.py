"""The warehouse IO manager writes each output in one transaction: a write that fails half-way
(here: an insert DuckDB refuses after the old rows were deleted) leaves the old rows in place."""

import dagster as dg
import duckdb
import pandas as pd
import pytest

from retrain_assets.pipeline.shared.io_manager import WarehouseIOManager, connect_retrying
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

    # Same tables, values their columns cannot hold: DuckDB refuses the insert after the delete ran.
    frames.update(history=pd.DataFrame({"a": ["nine"]}), daily=pd.DataFrame({"x": ["nine"]}))
    result = dg.materialize(assets, resources=resources, partition_key="2025-01-02", raise_on_error=False)
    assert not result.success
    # Upstream's DuckDBPandasIOManager deletes in one autocommitted statement and inserts in
    # another: here it would have left both tables empty.
    assert read_table(tmp_path / "warehouse.duckdb", "select a from history order by a")["a"].tolist() == [1, 2, 3]
    assert read_table(tmp_path / "warehouse.duckdb", "select x from daily order by x")["x"].tolist() == [1.0, 2.0]


def test_a_table_written_by_an_older_version_takes_the_new_columns(tmp_path):
    """An upgrade that adds a column to a table (e.g. the task-neutral performance columns) writes into
    a warehouse made by the previous version: the column is added, old rows keep NULL there."""
    database = str(tmp_path / "warehouse.duckdb")
    frames = {"history": pd.DataFrame({"a": [1, 2]}), "daily": pd.DataFrame({"x": [1.0]})}
    assets = history_and_partitioned(frames)
    resources = {"io_manager": WarehouseIOManager(database=database, schema="main")}
    assert dg.materialize(assets, resources=resources, partition_key="2025-01-01").success
    frames.update(history=pd.DataFrame({"a": [1, 2, 3], "new metric": [0.1, 0.2, 0.3]}),
                  daily=pd.DataFrame({"new metric": [0.5], "x": [2.0]}))  # another column order too
    assert dg.materialize(assets, resources=resources, partition_key="2025-01-02").success
    daily = read_table(tmp_path / "warehouse.duckdb", 'select day, x, "new metric" from daily order by day')
    assert daily["x"].tolist() == [1.0, 2.0] and daily["new metric"].isna().tolist() == [True, False]
    history = read_table(tmp_path / "warehouse.duckdb", 'select * from history order by a')
    assert history["new metric"].tolist() == [0.1, 0.2, 0.3]


def test_partitions_are_replaced_and_loaded_by_their_time_window(tmp_path):
    database = str(tmp_path / "warehouse.duckdb")
    days = {"2025-01-01": [1.0, 2.0], "2025-01-02": [3.0], "2025-01-03": []}

    @dg.asset(partitions_def=PARTITIONS, metadata={"partition_expr": "day"})
    def daily(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"x": days[context.partition_key], "day": pd.Timestamp(context.partition_key)})

    @dg.asset(partitions_def=PARTITIONS, metadata={"partition_expr": "day"})
    def doubled(daily: pd.DataFrame) -> pd.DataFrame:  # one partition's rows in
        return daily.assign(x=daily["x"] * 2)

    @dg.asset
    def everything(daily: pd.DataFrame) -> pd.DataFrame:  # every partition's rows in
        return daily

    resources = {"io_manager": WarehouseIOManager(database=database, schema="main")}
    for key in days:
        assert dg.materialize([daily], resources=resources, partition_key=key).success
    days["2025-01-01"] = [5.0]  # the partition delivered again: its rows replaced, the others kept
    result = dg.materialize([daily], resources=resources, partition_key="2025-01-01")
    assert read_table(tmp_path / "warehouse.duckdb", "select x from daily order by x")["x"].tolist() == [3.0, 5.0]
    metadata = result.asset_materializations_for_node("daily")[0].metadata
    assert metadata["dagster/partition_row_count"].value == 1 and metadata["dagster/storage_kind"].value == "duckdb"
    assert metadata["Query"].value.endswith("day >= '2025-01-01 00:00:00' AND day < '2025-01-02 00:00:00'")

    loaded = dg.materialize([daily, doubled], resources=resources, partition_key="2025-01-02", selection=[doubled])
    assert loaded.output_for_node("doubled")["x"].tolist() == [6.0]
    # an empty frame empties its partition; the table is still there
    days["2025-01-02"] = []
    assert dg.materialize([daily], resources=resources, partition_key="2025-01-02").success
    result = dg.materialize([daily, everything], resources=resources, selection=[everything])
    assert result.output_for_node("everything")["x"].tolist() == [5.0]
    assert result.asset_materializations_for_node("everything")[0].metadata["dagster/row_count"].value == 1


def test_an_empty_frame_creates_no_table(tmp_path):
    @dg.asset
    def nothing() -> pd.DataFrame:
        return pd.DataFrame({"a": []})

    database = tmp_path / "warehouse.duckdb"
    assert dg.materialize([nothing], resources={"io_manager": WarehouseIOManager(database=str(database), schema="main")}).success
    assert read_table(database, "select count(*) n from information_schema.tables where table_name = 'nothing'")["n"][0] == 0


def test_one_connection_per_run_serves_the_runs_connections_and_lets_go_after(tmp_path):
    """With `one_connection_per_run` (the replay driver's runs) the run holds the file from its
    start: a read-only connection asked for during the run is served from it (DuckDB would refuse
    to open the file read-only beside it), and the file is released when the run ends."""
    database = str(tmp_path / "warehouse.duckdb")
    seen = []

    @dg.asset
    def first() -> pd.DataFrame:
        return pd.DataFrame({"a": [1, 2]})

    @dg.asset(deps=[first])
    def second() -> None:
        with pytest.raises(duckdb.ConnectionException):
            duckdb.connect(database, read_only=True)
        with connect_retrying(database, read_only=True, timeout_seconds=1.0) as conn:
            seen.append(conn.execute("select count(*) from first").fetchone()[0])

    io_manager = WarehouseIOManager(database=database, schema="main", one_connection_per_run=True)
    assert dg.materialize([first, second], resources={"io_manager": io_manager}).success
    assert seen == [2]
    assert read_table(tmp_path / "warehouse.duckdb", "select count(*) as n from first")["n"].tolist() == [2]
