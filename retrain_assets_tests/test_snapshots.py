"""The incremental analyst snapshot (pipeline/shared/snapshots.py) on real DuckDB files: warehouses
built with plain DuckDB, published to Parquet, read through the catalogs as analysts and the apps do."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from retrain_assets.core.catalog.model import PARTITIONED
from retrain_assets.pipeline.shared import snapshot_catalogs
from retrain_assets.pipeline.shared import snapshots as snapshots_module
from retrain_assets.pipeline.shared.snapshots import (ANALYSTS_CATALOG, Partition, partitioned_tables, publish_all,
                                                      publish_history, publish_partition)

# `quarantine` is partitioned but never written here: a partitioned table absent from the warehouse.
TABLES = frozenset({"raw_batches", "quarantine"})
FIRST_DAY = pd.Timestamp("2025-01-01")


def day(n: int) -> Partition:
    """Day n's partition, as Dagster's daily partitions define it."""
    start = FIRST_DAY + pd.Timedelta(days=n)
    return Partition(f"{start:%Y-%m-%d}", start.to_pydatetime(), (start + pd.Timedelta(days=1)).to_pydatetime())


def build_warehouse(path: Path, days: int, rows_per_day: int = 4, row_group_size: int | None = None) -> Path:
    """A warehouse as the IO manager leaves it: `raw_batches` partitioned by day, `deployed_model` a
    history, `training_set` unpartitioned but carrying a partition column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as conn:
        conn.execute(f"attach '{path}' as w" + (f" (row_group_size {row_group_size})" if row_group_size else ""))
        conn.execute("create table w.raw_batches as select timestamp_ns '2025-01-01' + to_days((i // $1)::int) as partition_start, "
                     "i as id, i / 10 as x, 'a' as segment from range($2) t(i)", [rows_per_day, days * rows_per_day])
        conn.execute("create table w.deployed_model as select timestamp '2025-01-02' + to_days(i::int) as deployed_at, "
                     "(i + 1)::varchar as champion_version, 'promote' as action from range(3) t(i)")
        conn.execute("create table w.training_set as select * from w.raw_batches where partition_start < '2025-01-03'")
    return path


def execute(database: Path, *statements: str, row_group_size: int | None = None) -> None:
    """Write to the warehouse (a DuckDB file does not keep its row group size: give it again)."""
    with duckdb.connect() as conn:
        conn.execute(f"attach '{database}' as w" + (f" (row_group_size {row_group_size})" if row_group_size else ""))
        conn.execute("use w")
        for statement in statements:
            conn.execute(statement)


def query(database: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql).df()


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the snapshots folder, with what changes when it is rewritten (inode, mtime)."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def warehouse(tmp_path) -> Path:
    return build_warehouse(tmp_path / "warehouse" / "loan_default.duckdb", days=5)


@pytest.fixture
def snapshots(tmp_path) -> Path:
    return tmp_path / "snapshots"


def test_publish_all_lays_out_one_file_per_partition_and_one_per_unpartitioned_table(warehouse, snapshots):
    result = publish_all(warehouse, snapshots, "loan_default", TABLES)
    folder = snapshots / "loan_default"
    assert sorted(p.name for p in (folder / "raw_batches").glob("*.parquet")) == [f"2025-01-0{d}.parquet" for d in range(1, 6)]
    assert [p.name for p in (folder / "deployed_model").glob("*")] == ["all.parquet"]
    assert [p.name for p in (folder / "training_set").glob("*")] == ["all.parquet"]  # whole, despite its partition column
    assert not (folder / "quarantine").exists()
    assert result.rows_written == 20 + 3 + 8 and len(result.written) == 7 and result.bytes_written > 0
    assert set(result.catalogs) == {"loan_default.duckdb", ANALYSTS_CATALOG}
    assert not list(snapshots.rglob("*.tmp"))


def test_publishing_a_partition_rewrites_only_its_files(warehouse, snapshots):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    before = files(snapshots)
    execute(warehouse, "delete from raw_batches where partition_start = '2025-01-03'",
            "insert into raw_batches select timestamp_ns '2025-01-03', 100 + i, 0.5, 'b' from range(6) t(i)")
    result = publish_partition(warehouse, snapshots, "loan_default", day(2), TABLES)
    after = files(snapshots)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {"loan_default/raw_batches/2025-01-03.parquet"}  # same schema: not even the manifest
    assert result.written == ("raw_batches/2025-01-03.parquet",) and result.rows_written == 6 and not result.catalogs
    assert query(snapshots / "loan_default.duckdb", "select count(*) as n from raw_batches where segment = 'b'")["n"][0] == 6


def test_republishing_a_partition_is_idempotent(warehouse, snapshots):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    sql = "select * from raw_batches order by id"
    first = query(snapshots / "loan_default.duckdb", sql)
    for _ in range(2):
        publish_partition(warehouse, snapshots, "loan_default", day(1), TABLES)
    pd.testing.assert_frame_equal(query(snapshots / "loan_default.duckdb", sql), first)
    assert not list(snapshots.rglob("*.tmp"))


def test_rows_deleted_from_the_warehouse_disappear_from_the_snapshot(warehouse, snapshots):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    catalog = snapshots / "loan_default.duckdb"
    execute(warehouse, "delete from raw_batches where partition_start = '2025-01-02' and id % 2 = 0")
    publish_partition(warehouse, snapshots, "loan_default", day(1), TABLES)
    assert query(catalog, "select count(*) as n from raw_batches where partition_start = '2025-01-02'")["n"][0] == 2
    execute(warehouse, "delete from raw_batches where partition_start = '2025-01-02'")
    result = publish_partition(warehouse, snapshots, "loan_default", day(1), TABLES)
    assert result.deleted == ("raw_batches/2025-01-02.parquet",) and result.rows_written == 0
    assert query(catalog, "select count(*) as n from raw_batches where partition_start = '2025-01-02'")["n"][0] == 0


def test_a_table_without_files_has_no_view_and_a_new_table_gets_one(warehouse, snapshots):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    execute(warehouse, "delete from raw_batches")
    for n in range(5):
        publish_partition(warehouse, snapshots, "loan_default", day(n), TABLES)
    views = "select table_name from information_schema.tables order by 1"
    assert list(query(snapshots / "loan_default.duckdb", views)["table_name"]) == ["deployed_model", "training_set"]
    execute(warehouse, "create table quarantine as select timestamp '2025-01-04' as partition_start, 'bad' as reason")
    publish_partition(warehouse, snapshots, "loan_default", day(3), TABLES)
    assert query(snapshots / "loan_default.duckdb", "select reason from quarantine")["reason"].tolist() == ["bad"]


def test_unpartitioned_tables_are_rewritten_only_when_they_changed(warehouse, snapshots):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    assert not {p for p in publish_partition(warehouse, snapshots, "loan_default", day(0), TABLES).written if "all" in p}
    execute(warehouse, "update deployed_model set action = 'rollback' where champion_version = '2'")  # same row count
    result = publish_partition(warehouse, snapshots, "loan_default", day(0), TABLES)
    assert "deployed_model/all.parquet" in result.written and "training_set/all.parquet" not in result.written
    assert query(snapshots / "loan_default.duckdb", "select action from deployed_model where champion_version = '2'")["action"][0] == "rollback"
    execute(warehouse, "drop table training_set")
    result = publish_partition(warehouse, snapshots, "loan_default", day(0), TABLES)
    assert result.deleted == ("training_set/all.parquet",) and "loan_default.duckdb" in result.catalogs


def test_publish_history_touches_only_the_unpartitioned_tables(warehouse, snapshots):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    before = files(snapshots)
    execute(warehouse, "insert into deployed_model values (timestamp '2025-01-09', '4', 'promote')",
            "delete from raw_batches where partition_start = '2025-01-01'")  # a partition's change waits for its publish
    result = publish_history(warehouse, snapshots, "loan_default", TABLES)
    changed = {name for name, stamp in files(snapshots).items() if before.get(name) != stamp}
    assert result.written == ("deployed_model/all.parquet",) and result.rows_written == 4
    assert changed == {"loan_default/deployed_model/all.parquet", "loan_default/manifest.json"}
    assert not publish_history(warehouse, snapshots, "loan_default", TABLES).written


def test_a_new_column_is_queryable_and_older_partitions_read_it_as_null(warehouse, snapshots):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    execute(warehouse, "alter table raw_batches add column score double",
            "update raw_batches set score = 0.9 where partition_start = '2025-01-05'")
    result = publish_partition(warehouse, snapshots, "loan_default", day(4), TABLES)
    assert set(result.catalogs) == {"loan_default.duckdb", ANALYSTS_CATALOG}  # a new file schema
    for catalog, table in ((snapshots / "loan_default.duckdb", "raw_batches"), (snapshots / ANALYSTS_CATALOG, "loan_default.raw_batches")):
        scores = query(catalog, f"select partition_start::date::varchar as day, max(score) as score from {table} group by 1 order by 1")
        assert scores["score"].isna().tolist() == [True] * 4 + [False], catalog
    # The same new schema again is no change for the catalogs.
    assert not publish_partition(warehouse, snapshots, "loan_default", day(4), TABLES).catalogs


def test_the_dataset_catalog_answers_as_the_warehouse_does(warehouse, snapshots):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    execute(warehouse, "insert into raw_batches select timestamp_ns '2025-01-06', 1000 + i, i, 'c' from range(3) t(i)")
    publish_partition(warehouse, snapshots, "loan_default", day(5), TABLES)
    sql = ("select r.partition_start, r.segment, count(*) as n, sum(r.x) as x, any_value(d.champion_version) as champion "
           "from raw_batches r left join deployed_model d on d.deployed_at::date = r.partition_start::date "
           "group by all order by all")
    catalog = snapshots / "loan_default.duckdb"
    pd.testing.assert_frame_equal(query(catalog, sql), query(warehouse, sql))
    columns = "select table_name, column_name, data_type from information_schema.columns order by all"
    pd.testing.assert_frame_equal(query(catalog, columns), query(warehouse, columns))


def test_the_readers_open_the_catalog_as_they_opened_the_snapshot(warehouse, snapshots):
    """Warehouse.query (status, check-batch) and the review app read unqualified table names read-only."""
    from retrain_assets.apps.review import _query
    from retrain_assets.pipeline.shared.warehouse import Warehouse

    publish_all(warehouse, snapshots, "loan_default", TABLES)
    catalog = snapshots / "loan_default.duckdb"
    reader = Warehouse(database=str(catalog), snapshot_path=str(catalog), reports_dir=str(snapshots))
    assert reader.has_table("raw_batches") and not reader.has_table("quarantine")
    assert len(reader.query("select * from deployed_model order by deployed_at")) == 3
    assert reader.query("select * from quarantine").empty  # as the warehouse: no table yet reads as empty
    assert _query(catalog, "select count(*) as n from raw_batches")["n"][0] == 20


def test_two_datasets_are_queryable_side_by_side(tmp_path, warehouse, snapshots):
    rainfall = build_warehouse(tmp_path / "warehouse" / "rainfall.duckdb", days=2, rows_per_day=3)
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    publish_all(rainfall, snapshots, "rainfall", TABLES)
    both = query(snapshots / ANALYSTS_CATALOG, "select 'loan_default' as dataset, count(*) as n from loan_default.raw_batches "
                                               "union all select 'rainfall', count(*) from rainfall.raw_batches order by 1")
    assert both["n"].tolist() == [20, 6]
    assert query(snapshots / "rainfall.duckdb", "select count(*) as n from raw_batches")["n"][0] == 6
    schemas = query(snapshots / ANALYSTS_CATALOG, "select distinct table_schema from information_schema.tables order by 1")
    assert schemas["table_schema"].tolist() == ["loan_default", "rainfall"]


def publish_growing_dataset(warehouse: Path, snapshots: Path, dataset: str, days: int) -> None:
    """Before each partition's publish a new table appears, so every publish rewrites both catalogs."""
    for n in range(days):
        execute(warehouse, f"create table extra_{n} as select {n} as n")
        publish_partition(warehouse, snapshots, dataset, day(n), TABLES)


def check_every_view(snapshots: Path, datasets: dict[str, int]) -> None:
    views = query(snapshots / ANALYSTS_CATALOG, "select table_schema, table_name from information_schema.tables")
    for dataset, days in datasets.items():
        expected = {"raw_batches", "deployed_model", "training_set"} | {f"extra_{n}" for n in range(days)}
        assert set(views[views["table_schema"] == dataset]["table_name"]) == expected, dataset
        own = query(snapshots / f"{dataset}.duckdb", "select table_name from information_schema.tables")
        assert set(own["table_name"]) == expected
        counts = query(snapshots / ANALYSTS_CATALOG, f"select count(*) as n from {dataset}.raw_batches")
        assert counts["n"][0] == days * 4
    assert not list(snapshots.rglob("*.tmp"))


def test_a_dataset_publishing_meanwhile_keeps_its_views_in_the_analysts_catalog(tmp_path, snapshots, monkeypatch):
    """The lost update the lock prevents, forced: loan_default reads every dataset's tables, then
    rainfall publishes all its partitions, then loan_default writes analysts.duckdb. Without the lock
    loan_default's stale file wins; with it, rainfall waits for the lock (loan_default gives up
    waiting after 1 s) and rewrites the file after."""
    datasets = {"loan_default": 1, "rainfall": 4}
    warehouses = {name: build_warehouse(tmp_path / f"{name}.duckdb", days=days) for name, days in datasets.items()}
    loan_default_read, rainfall_done = threading.Event(), threading.Event()
    write_catalog = snapshot_catalogs._write_catalog

    def slow_write(path: Path, schemas: dict) -> None:
        if path.name == ANALYSTS_CATALOG and threading.current_thread().name == "loan_default":
            loan_default_read.set()
            rainfall_done.wait(timeout=1.0)
        write_catalog(path, schemas)

    monkeypatch.setattr(snapshot_catalogs, "_write_catalog", slow_write)
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            if name == "rainfall":
                assert loan_default_read.wait(timeout=30)
            publish_growing_dataset(warehouses[name], snapshots, name, datasets[name])
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)
        finally:
            if name == "rainfall":
                rainfall_done.set()

    threads = [threading.Thread(target=run, args=(name,), name=name) for name in datasets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    check_every_view(snapshots, datasets)


def test_concurrent_publishes_of_two_datasets_in_processes_lose_no_view(tmp_path, snapshots):
    datasets = {"loan_default": 5, "rainfall": 5}
    warehouses = {name: build_warehouse(tmp_path / f"{name}.duckdb", days=days) for name, days in datasets.items()}
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=publish_growing_dataset, args=(warehouses[name], snapshots, name, days))
                 for name, days in datasets.items()]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [process.exitcode for process in processes] == [0, 0]
    check_every_view(snapshots, datasets)


def test_the_cost_of_a_partition_does_not_grow_with_the_warehouse(tmp_path):
    """Rows read and written, counted by DuckDB, for the same change in a 10- and a 100-partition warehouse."""
    results = []
    for days in (10, 100):
        warehouse = build_warehouse(tmp_path / f"w{days}.duckdb", days=days, rows_per_day=2048, row_group_size=2048)
        snapshots = tmp_path / f"snapshots{days}"
        publish_all(warehouse, snapshots, "loan_default", TABLES)
        execute(warehouse, "begin", "create temp table redo as select * replace (-x as x) from raw_batches "
                "where partition_start = '2025-01-06'", "delete from raw_batches where partition_start = '2025-01-06'",
                "insert into raw_batches select * from redo", "commit", row_group_size=2048)  # as the IO manager rewrites
        results.append(publish_partition(warehouse, snapshots, "loan_default", day(5), TABLES))
    small, large = results
    assert small.written == large.written == ("raw_batches/2025-01-06.parquet",)
    assert small.rows_written == large.rows_written == 2048
    assert small.rows_scanned is not None and small.rows_scanned == large.rows_scanned
    assert large.rows_scanned < 100 * 2048 / 10  # the partition's row groups and the small model tables, not the batches


def test_an_aware_time_window_selects_the_same_rows_as_a_naive_one(warehouse, snapshots):
    """Dagster's time windows are timezone-aware UTC; the partition column holds naive UTC."""
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    aware = Partition("2025-01-02", datetime(2025, 1, 2, tzinfo=timezone.utc), datetime(2025, 1, 3, tzinfo=timezone.utc))
    assert publish_partition(warehouse, snapshots, "loan_default", aware, TABLES).rows_written == 4


def test_metadata_is_plain_values(warehouse, snapshots):
    metadata = publish_all(warehouse, snapshots, "loan_default", TABLES).metadata()
    assert metadata["files_written"] == 7 and metadata["rows_written"] == 31 and metadata["rows_scanned"] > 0
    assert metadata["tables_written"] == "deployed_model, raw_batches, training_set"
    assert all(isinstance(value, (str, int, float)) for value in metadata.values())


def test_publish_all_removes_files_of_partitions_and_tables_gone_since(warehouse, snapshots):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    execute(warehouse, "delete from raw_batches where partition_start >= '2025-01-04'", "drop table training_set")
    result = publish_all(warehouse, snapshots, "loan_default", TABLES)
    assert set(result.deleted) == {"raw_batches/2025-01-04.parquet", "raw_batches/2025-01-05.parquet", "training_set/all.parquet"}
    views = query(snapshots / "loan_default.duckdb", "select table_name from information_schema.tables")
    assert set(views["table_name"]) == {"raw_batches", "deployed_model"}


def test_the_first_publish_of_a_partition_publishes_everything(warehouse, snapshots):
    """A partition alone would make a partial snapshot, which the readers would then prefer to the warehouse."""
    result = publish_partition(warehouse, snapshots, "loan_default", day(0), TABLES)
    assert len(result.written) == 7
    assert query(snapshots / "loan_default.duckdb", "select count(*) as n from raw_batches")["n"][0] == 20


def test_a_failed_publish_all_leaves_no_manifest_so_the_next_publish_redoes_it(warehouse, snapshots, monkeypatch):
    publish_all(warehouse, snapshots, "loan_default", TABLES)
    parquet_columns, calls = snapshots_module._parquet_columns, []

    def failing(conn, path):
        calls.append(path)
        if len(calls) == 4:
            raise OSError("disk full")
        return parquet_columns(conn, path)

    monkeypatch.setattr(snapshots_module, "_parquet_columns", failing)
    with pytest.raises(OSError, match="disk full"):
        publish_all(warehouse, snapshots, "loan_default", TABLES)
    assert not (snapshots / "loan_default" / "manifest.json").exists() and not list(snapshots.rglob("*.tmp"))
    monkeypatch.undo()
    assert len(publish_partition(warehouse, snapshots, "loan_default", day(0), TABLES).written) == 7


def test_publish_all_reads_partitions_of_any_length_from_the_rows(tmp_path, snapshots):
    """Monthly partitions: each partition's file holds its month, whatever the granularity."""
    warehouse = tmp_path / "monthly.duckdb"
    execute(warehouse, "create table raw_batches as select date_trunc('month', timestamp '2025-01-01' + to_days(i::int)) "
                       "as partition_start, i as id from range(90) t(i)")
    publish_all(warehouse, snapshots, "monthly", TABLES)
    counts = {path.stem: duckdb.sql(f"select count(*) from '{path}'").fetchall()[0][0]
              for path in (snapshots / "monthly" / "raw_batches").glob("*.parquet")}
    assert counts == {"2025-01-01": 31, "2025-02-01": 28, "2025-03-01": 31}
    march = Partition("2025-03-01", datetime(2025, 3, 1), datetime(2025, 4, 1))
    execute(warehouse, "delete from raw_batches where id = 89")
    assert publish_partition(warehouse, snapshots, "monthly", march, TABLES).rows_written == 30


def test_a_missing_warehouse_fails_loudly(tmp_path, snapshots):
    with pytest.raises(FileNotFoundError, match="no warehouse"):
        publish_partition(tmp_path / "absent.duckdb", snapshots, "loan_default", day(0), TABLES)


def test_partitioned_tables_are_the_catalogs_partitioned_ones():
    from retrain_assets.core.catalog import tables
    from retrain_assets.core.spec import load_spec

    spec = load_spec(Path(__file__).parents[1] / "data" / "specs" / "loan_default.yaml")
    found = partitioned_tables(spec)
    assert {"raw_batches", "labeled_batches", "drift_report", "prediction_logs"} <= found
    assert not {"training_set", "suspect_labels", "labeling_requests", "deployed_model"} & found
    assert found == {t.name for t in tables(spec) if t.storage == PARTITIONED}
