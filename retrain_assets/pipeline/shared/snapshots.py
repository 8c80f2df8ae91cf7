"""The analysts' snapshot, published incrementally: Parquet files per dataset and table, so that a
publish costs what changed rather than the warehouse's size, and the catalogs of views analysts
open over them (pipeline/shared/snapshot_catalogs.py).

Under the snapshots folder (`<data dir>/snapshots`):
    <dataset>/<table>/<partition key>.parquet  one partition of a partitioned table
    <dataset>/<table>/all.parquet               an unpartitioned (history or replaced) table
    <dataset>/manifest.json                     each file's column schema, each unpartitioned table's fingerprint
    <dataset>/catalog.json                      the tables (and their file schemas) <dataset>.duckdb has views for
    <dataset>.duckdb                            a view per table in `main` (`ProjectSettings.snapshot_path`)
    analysts.duckdb                             a schema per dataset, a view per table (`loan_default.raw_batches`)

Cost: `publish_partition` exports one partition's rows of each partitioned table (DuckDB skips other
partitions' row groups by their min/max statistics), and rewrites an unpartitioned table only when
its fingerprint (row count, sum of the rows' hashes, columns) moved: one scan of the model-level
tables, no write. Each file is written beside its target and renamed over it.

One publisher per dataset at a time (`<dataset>/.lock`). The warehouse is read through a
short-lived read-only connection (`connect_retrying`, which waits while a writer holds the file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from pathlib import Path

import duckdb
import pandas as pd

from retrain_assets.core.catalog import tables as catalog_tables
from retrain_assets.core.catalog.model import PARTITIONED
from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.sql_text import ident, lit
from retrain_assets.pipeline.shared.io_manager import DUCKDB_DATETIME_FORMAT, connect_retrying
from retrain_assets.pipeline.shared.snapshot_catalogs import (ANALYSTS_CATALOG, file_lock, load_json, publish_catalogs,
                                                              temporary_beside)

__all__ = ["ANALYSTS_CATALOG", "Partition", "PublishResult", "partitioned_tables", "publish_all", "publish_history",
           "publish_partition"]

UNPARTITIONED = "all"  # the file name of an unpartitioned table
WAREHOUSE_SCHEMA = "main"  # where the IO manager writes (WarehouseIOManager(schema="main"))
END_OF_TIME = datetime(2262, 1, 1)  # the last partition's end in publish_all (TIMESTAMP_NS ends in 2262)


@dataclass(frozen=True)
class Partition:
    """One time partition: its key (the file's name) and its window [start, end) on PARTITION_COLUMN."""

    key: str
    start: datetime
    end: datetime

    def __post_init__(self):
        if not self.key or "/" in self.key or self.key.startswith(".") or self.key == UNPARTITIONED:
            raise ValueError(f"{self.key!r} cannot name a partition's file")

    def where(self) -> str:
        """The SQL condition selecting the partition's rows (the IO manager's)."""
        column = ident(PARTITION_COLUMN)
        return f"{column} >= '{_sql_time(self.start)}' and {column} < '{_sql_time(self.end)}'"


@dataclass(frozen=True)
class PublishResult:
    """What a publish did, for the publishing asset's metadata."""

    dataset: str
    written: tuple[str, ...]  # `<table>/<file>` (re)written under the dataset's folder
    deleted: tuple[str, ...]  # `<table>/<file>` removed: the partition (or table) has no rows any more
    rows_written: int
    bytes_written: int
    rows_scanned: int | None  # warehouse rows DuckDB read (its profiler); None when it does not say
    catalogs: tuple[str, ...]  # catalog files rewritten
    seconds: float

    def metadata(self) -> dict[str, str | int | float]:
        """Plain values, ready for `dg.MaterializeResult(metadata=...)`."""
        tables = sorted({path.split("/")[0] for path in self.written + self.deleted})
        return {"dataset": self.dataset, "tables_written": ", ".join(tables), "files_written": len(self.written),
                "files_deleted": len(self.deleted), "rows_written": self.rows_written, "bytes_written": self.bytes_written,
                "catalogs_rewritten": ", ".join(self.catalogs), "seconds": round(self.seconds, 3),
                **({} if self.rows_scanned is None else {"rows_scanned": self.rows_scanned})}


def partitioned_tables(spec: DatasetSpec) -> frozenset[str]:
    """The tables the IO manager writes partition by partition (`core.catalog`). Not every table with
    a PARTITION_COLUMN: `training_set`, `suspect_labels` and `labeling_requests` carry one but are
    rewritten whole, so a partition's slice of them can change without that partition re-running."""
    return frozenset(doc.name for doc in catalog_tables(spec) if doc.storage == PARTITIONED)


def publish_partition(database: Path | str, snapshots_dir: Path | str, dataset: str, partition: Partition,
                      partitioned: Collection[str], timeout_seconds: float = 120.0) -> PublishResult:
    """Publish one partition of every partitioned table of `dataset`'s warehouse (its file is removed
    when the partition has no rows any more), the unpartitioned tables that changed since the last
    publish, and the catalogs when their tables changed. Idempotent. The first publish of a dataset
    (no manifest yet, or a lost one) is `publish_all`'s: a partition alone would be a partial snapshot."""
    return _publish(database, snapshots_dir, dataset, partition, partitioned, timeout_seconds)


def publish_history(database: Path | str, snapshots_dir: Path | str, dataset: str, partitioned: Collection[str],
                    timeout_seconds: float = 120.0) -> PublishResult:
    """Publish only the unpartitioned tables that changed since the last publish (what runs of the
    model-level assets write), and the catalogs when their tables changed; a first publish as above."""
    return _publish(database, snapshots_dir, dataset, None, partitioned, timeout_seconds)


def _publish(database: Path | str, snapshots_dir: Path | str, dataset: str, partition: Partition | None,
             partitioned: Collection[str], timeout_seconds: float) -> PublishResult:
    if not (Path(snapshots_dir) / dataset / "manifest.json").exists():
        return publish_all(database, snapshots_dir, dataset, partitioned, timeout_seconds)
    started = time.monotonic()
    with _publishing(snapshots_dir, dataset, timeout_seconds) as publisher:
        with _read_warehouse(database, timeout_seconds) as conn:
            present = _warehouse_tables(conn)
            for table in sorted(partitioned) if partition is not None else ():
                publisher.remove(table, UNPARTITIONED)  # left from before the table was partitioned
                if table in present:
                    publisher.export(conn, table, partition.key, f"select * from {ident(table)} where {partition.where()}")
                else:
                    publisher.remove(table, partition.key)
            publisher.refresh_unpartitioned(conn, {t: c for t, c in present.items() if t not in partitioned})
    return publisher.result(time.monotonic() - started)


def publish_all(database: Path | str, snapshots_dir: Path | str, dataset: str, partitioned: Collection[str],
                timeout_seconds: float = 120.0) -> PublishResult:
    """Publish every partition and table of `dataset`'s warehouse and remove every other file of the
    dataset's folder (a first publish, a backfill, a repair). The partitions are those the rows name:
    each from its `PARTITION_COLUMN` value to the next one's (the same rows as its time window)."""
    started = time.monotonic()
    with _publishing(snapshots_dir, dataset, timeout_seconds, fresh=True) as publisher:
        with _read_warehouse(database, timeout_seconds) as conn:
            present = _warehouse_tables(conn)
            publisher.refresh_unpartitioned(conn, {t: c for t, c in present.items() if t not in partitioned}, force=True)
        for table in sorted(set(partitioned) & set(present)):
            with _read_warehouse(database, timeout_seconds) as conn:  # one per table: a writer waits for one table at most
                starts = conn.execute(f"select distinct {ident(PARTITION_COLUMN)} from {ident(table)} "
                                      f"where {ident(PARTITION_COLUMN)} is not null order by 1").fetchall()
                publisher.count_scanned(conn)
                firsts: dict[str, datetime] = {}
                for (start,) in starts:
                    firsts.setdefault(f"{start:%Y-%m-%d}", start)
                for (key, start), end in zip(firsts.items(), [*list(firsts.values())[1:], END_OF_TIME]):
                    publisher.export(conn, table, key, f"select * from {ident(table)} where {Partition(key, start, end).where()}")
        for path in sorted(set(publisher.folder.glob("*/*.parquet")) - {publisher.folder / f for f in publisher.written}):
            publisher.remove(path.parent.name, path.stem)  # left from tables or partitions gone since
    return publisher.result(time.monotonic() - started)


@contextmanager
def _publishing(snapshots_dir: Path | str, dataset: str, timeout_seconds: float, fresh: bool = False) -> Iterator["_Publisher"]:
    """A publisher holding the dataset's lock; on leaving, the manifest is saved, then the catalogs.
    After a failure the manifest still records each file as it was written or removed, but a
    `fresh` (publish_all) one is deleted instead, so that the next publish redoes it all."""
    publisher = _Publisher(snapshots_dir, dataset, timeout_seconds)
    with file_lock(publisher.folder / ".lock", timeout_seconds):
        publisher.load_manifest(fresh)
        try:
            yield publisher
        except BaseException:
            if fresh:
                (publisher.folder / "manifest.json").unlink(missing_ok=True)
            else:
                publisher.save_manifest()
            raise
        publisher.save_manifest()
        publisher.publish_catalogs()


class _Publisher:
    """One publish of one dataset: writes and removes files, records them in manifest.json (each file's
    schema, interned by digest; each unpartitioned table's fingerprint), rewrites the catalogs."""

    def __init__(self, snapshots_dir: Path | str, dataset: str, timeout_seconds: float):
        if f"{dataset}.duckdb" == ANALYSTS_CATALOG:
            raise ValueError(f"a dataset cannot be called {dataset!r}: its catalog would be {ANALYSTS_CATALOG}")
        self.root, self.dataset, self.timeout = Path(snapshots_dir).resolve(), dataset, timeout_seconds
        self.folder = self.root / dataset
        self.written, self.deleted, self.catalogs = [], [], []  # `<table>/<file>`, and the catalogs' names
        self.rows, self.bytes, self.scanned = 0, 0, 0  # scanned: None once DuckDB gave no profile

    def export(self, conn: duckdb.DuckDBPyConnection, table: str, name: str, select: str, keep_empty: bool = False) -> None:
        """Write `select`'s rows to `<table>/<name>.parquet` (or remove that file when there are none)."""
        target = self.folder / table / f"{name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_beside(target)
        try:
            rows = conn.execute(f"copy ({select}) to {lit(str(tmp))} (format parquet)").fetchone()[0]
            self.count_scanned(conn)
            if rows == 0 and not keep_empty:
                tmp.unlink(missing_ok=True)
                self.remove(table, name)
                return
            columns = _parquet_columns(conn, tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._note(table, name, columns)
        self.written.append(f"{table}/{target.name}")
        self.rows, self.bytes = self.rows + rows, self.bytes + target.stat().st_size

    def remove(self, table: str, name: str) -> None:
        path = self.folder / table / f"{name}.parquet"
        if path.exists():
            path.unlink()
            self.deleted.append(f"{table}/{path.name}")
        if self.files.get(table, {}).pop(name, None) is not None:
            self.dirty = True

    def refresh_unpartitioned(self, conn: duckdb.DuckDBPyConnection, present: dict[str, list], force: bool = False) -> None:
        """Rewrite each unpartitioned table whose fingerprint moved (every one with `force`); remove
        the files of those no longer in the warehouse."""
        for table, columns in sorted(present.items()):
            count, hashes = conn.execute(f"select count(*), coalesce(sum(hash(t)), 0)::varchar "
                                         f"from {ident(table)} as t").fetchone()
            self.count_scanned(conn)
            fingerprint = f"{count}:{hashes}:{_digest(columns)}"
            if force or fingerprint != self.fingerprints.get(table) or not (self.folder / table / "all.parquet").exists():
                for stale in set(self.files.get(table, {})) - {UNPARTITIONED}:
                    self.remove(table, stale)  # left from before the table was unpartitioned
                self.export(conn, table, UNPARTITIONED, f"select * from {ident(table)}", keep_empty=True)
                self.fingerprints[table] = fingerprint
                self.dirty = True
        for table in [t for t, files in self.files.items() if UNPARTITIONED in files and t not in present]:
            self.remove(table, UNPARTITIONED)
            self.fingerprints.pop(table, None)

    def count_scanned(self, conn: duckdb.DuckDBPyConnection) -> None:
        rows = _rows_scanned(conn)
        self.scanned = None if rows is None or self.scanned is None else self.scanned + rows

    def result(self, seconds: float) -> PublishResult:
        return PublishResult(self.dataset, tuple(self.written), tuple(self.deleted), self.rows, self.bytes, self.scanned,
                             tuple(self.catalogs), seconds)

    def _note(self, table: str, name: str, columns: list) -> None:
        digest = _digest(columns)
        self.schemas[digest] = columns
        names = self.files.setdefault(table, {})
        self.dirty, names[name] = self.dirty or names.get(name) != digest, digest

    def load_manifest(self, fresh: bool) -> None:
        """The saved manifest (empty when `fresh`)."""
        saved = {} if fresh else load_json(self.folder / "manifest.json")
        if not fresh and not saved:
            raise RuntimeError(f"{self.folder / 'manifest.json'} is unreadable: publish_all rebuilds {self.dataset}'s snapshot")
        self.schemas, self.files, self.fingerprints = saved.get("schemas", {}), saved.get("files", {}), saved.get("fingerprints", {})
        self.dirty = not saved

    def save_manifest(self) -> None:
        if self.dirty:
            files = {table: names for table, names in self.files.items() if names}
            used = {digest for names in files.values() for digest in names.values()}
            manifest = {"schemas": {d: c for d, c in self.schemas.items() if d in used}, "files": files,
                        "fingerprints": self.fingerprints}
            write_text_atomically(json.dumps(manifest, sort_keys=True), self.folder / "manifest.json")

    def publish_catalogs(self) -> None:
        """Rewrite the catalogs whose tables (and each table's distinct file schemas) changed."""
        tables = {table: sorted(set(files.values())) for table, files in sorted(self.files.items()) if files}
        self.catalogs += publish_catalogs(self.root, self.dataset, tables, self.timeout)


@contextmanager
def _read_warehouse(database: Path | str, timeout_seconds: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived read-only connection to the warehouse, profiling rows scanned when DuckDB can."""
    if not Path(database).exists():
        raise FileNotFoundError(f"no warehouse at {database}: nothing to publish before the pipeline wrote a table")
    with connect_retrying(str(database), read_only=True, timeout_seconds=timeout_seconds) as conn:
        try:
            conn.execute("set enable_profiling = 'no_output'")
        except duckdb.Error:
            pass  # an older DuckDB: rows_scanned is then None
        yield conn


def _warehouse_tables(conn: duckdb.DuckDBPyConnection) -> dict[str, list]:
    """Every table of the warehouse schema, with its [column, type] list."""
    rows = conn.execute("select table_name, column_name, data_type from duckdb_columns() where database_name = "
                        "current_database() and schema_name = ? and table_name in (select table_name from duckdb_tables() "
                        "where database_name = current_database() and schema_name = ?) order by table_name, column_index",
                        [WAREHOUSE_SCHEMA, WAREHOUSE_SCHEMA]).fetchall()
    return {table: [[column, kind] for _, column, kind in group] for table, group in groupby(rows, key=lambda row: row[0])}


def _rows_scanned(conn: duckdb.DuckDBPyConnection) -> int | None:
    """Rows the last statement's table scans read, from DuckDB's profiler (per scan, `rows_scanned` in
    DuckDB 2.0, `operator_rows_scanned` in 1.x); a profile without a scan is 0 (the min/max
    statistics proved no row qualifies); None when DuckDB gives no profile."""
    try:
        profile = conn.get_profiling_information()
    except duckdb.Error:
        return None
    counts = re.findall(r'"(?:operator_)?rows_scanned"\s*:\s*(\d+)', profile)
    return sum(map(int, counts)) if counts or '"operator' in profile or '"children"' in profile else None


def _parquet_columns(conn: duckdb.DuckDBPyConnection, path: Path) -> list[list[str]]:
    """A Parquet file's (column, DuckDB type) pairs, from its footer."""
    return [[row[0], row[1]] for row in conn.execute(f"describe select * from read_parquet({lit(str(path))})").fetchall()]


def _digest(columns: list) -> str:
    return hashlib.sha256(json.dumps([list(column) for column in columns]).encode()).hexdigest()[:16]


def _sql_time(moment: datetime) -> str:
    """Naive UTC, as the partition column holds it (Dagster's time windows are aware)."""
    moment = pd.Timestamp(moment)
    return (moment.tz_convert(None) if moment.tzinfo else moment).strftime(DUCKDB_DATETIME_FORMAT)
