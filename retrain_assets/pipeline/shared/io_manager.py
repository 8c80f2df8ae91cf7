"""The warehouse IO manager: pandas DataFrames <-> DuckDB tables, each output written in one
transaction, and every step that uses it holding the warehouse's writer lock.

Tables: as dagster-duckdb-pandas' DuckDBPandasIOManager lays them out (table = the asset key's last
part; schema = the asset's `schema` metadata, else the IO manager's, else the key prefix, else
`public`; a partitioned asset's partition is the rows whose `partition_expr` column lies in its time
window), and with the same output metadata. It is our own small IO manager rather than a subclass
because upstream offers no public hook for the one thing we change:

Transactions: upstream deletes the partition (or, for a history table, every row) and inserts the
new rows as two autocommitted statements: a process killed between them would lose the table's
content. Here a crash at any point leaves either the old rows or the new ones.

The writer lock: a step reads tables (a history it appends to, the partitions it joins) and then
writes; two steps doing that at once would lose one's rows. Dagster's `warehouse` pool serializes
them only on an instance configured with its limit, and a dead run can hold its slot; so the IO
manager itself takes an exclusive lock on `<warehouse>.lock` from before a step starts until after
it ends (for the whole run under the in-process executor, which sets resources up once per run).
It is an OS file lock: the kernel releases it when its process dies, however it dies.

One connection per run (opt-in, `one_connection_per_run`): opening a DuckDB file costs ~15-25 ms
(a new database instance: threads, catalog), and a run opens it for every input, output and query.
Runs executed in process one at a time (the replay driver) let the IO manager open the file once,
after it took the writer lock, and serve every connection this process makes to that file until
the run ends from that one (`connect_retrying`). Off by default: while it is held no other process
can open the file, so a long step of a deployed pipeline would keep its sensors and readers out."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field, PrivateAttr

from retrain_assets.core.sql_text import ident, lit
from retrain_assets.pipeline.shared.namespace import dataset_of_run, fill_dataset
from retrain_assets.pipeline.shared.runs import host_tags

DUCKDB_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# A write connection waits this long for a reader (the snapshot publisher, a sensor) to let go of
# DuckDB's own file lock; writers never wait on each other there (they hold the writer lock).
WRITE_CONNECT_SECONDS = 100.0
LOCK_PROGRESS_SECONDS = 30.0


# Files a WarehouseIOManager with one_connection_per_run holds open for its run, by resolved path.
_HELD_CONNECTIONS: dict[str, duckdb.DuckDBPyConnection] = {}
_HELD_LOCK = threading.Lock()


@contextmanager
def connect_retrying(database: str, read_only: bool, timeout_seconds: float, config: dict | None = None):
    """A short-lived DuckDB connection. DuckDB refuses to open a file another process holds
    (IOException) at once: retry every 0.2 s until `timeout_seconds`, then raise.

    While this process holds the file for a run (`held_connection`), the connection is a cursor on
    that one instead, whatever `read_only` asks: DuckDB opens a file in one mode per process, and
    the holder is the run that took the writer lock."""
    with _HELD_LOCK:
        held = _HELD_CONNECTIONS.get(str(Path(database).resolve()))
        cursor = held.cursor() if held is not None else None
    if cursor is not None:
        try:
            yield cursor
        finally:
            cursor.close()
        return
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            conn = duckdb.connect(database, read_only=read_only, config=config or {})
            break
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def held_connection(database: str, config: dict | None = None):
    """Open `database` for writing and serve every `connect_retrying` of this process to it from
    that connection until the block ends. Only for a holder of the writer lock."""
    key = str(Path(database).resolve())
    with connect_retrying(database, read_only=False, timeout_seconds=WRITE_CONNECT_SECONDS, config=config) as conn:
        with _HELD_LOCK:
            if key in _HELD_CONNECTIONS:
                raise RuntimeError(f"{database} is already held open by this process")
            _HELD_CONNECTIONS[key] = conn
        try:
            yield conn
        finally:
            with _HELD_LOCK:
                del _HELD_CONNECTIONS[key]


class WarehouseLockTimeout(TimeoutError):
    """The warehouse writer lock stayed held by another process for longer than allowed."""


def lock_path(database: str | Path) -> Path:
    """The writer lock file beside a warehouse file."""
    database = Path(database)
    return database.with_name(f"{database.name}.lock")


@contextmanager
def warehouse_writer_lock(database: str | Path, holder: str, timeout_seconds: float, log=None):
    """Hold the warehouse's exclusive writer lock for the block; `holder` is written into the lock
    file so that a waiting step can say whom it waits for. Waits up to `timeout_seconds`, logging
    the holder every LOCK_PROGRESS_SECONDS, then raises WarehouseLockTimeout."""
    path = lock_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = last_note = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > timeout_seconds:
                    raise WarehouseLockTimeout(
                        f"the warehouse {database} has been locked by {current_holder(database)} for over "
                        f"{timeout_seconds:.0f} s; if that process is stuck, stop it (the lock is freed when it exits)") from None
                if log is not None and time.monotonic() - last_note >= LOCK_PROGRESS_SECONDS:
                    log.info(f"waiting {waited:.0f} s for the warehouse writer lock, held by {current_holder(database)}")
                    last_note = time.monotonic()
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        if log is not None:
            log.debug(f"warehouse writer lock acquired by {holder}")
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def current_holder(database: str | Path) -> str:
    """Who holds the writer lock, as its holder wrote it ("unknown" between acquire and write)."""
    try:
        return lock_path(database).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Pandas DataFrames <-> DuckDB tables (partitioned by `partition_expr`), written atomically;
    a step using it holds the warehouse writer lock from its start to its end."""

    database: str = Field(description="Path to the DuckDB database (`{dataset}`: the run's dataset, one file each).")
    connection_config: dict[str, Any] = Field(
        description="DuckDB connection configuration options. See https://duckdb.org/docs/sql/configuration.html",
        default={})
    schema_: str | None = Field(default=None, alias="schema", description="Name of the schema to use.")
    lock_timeout_seconds: float = Field(default=6 * 3600.0, description=(
        "How long a step waits for the warehouse writer lock held by another step before it fails."))
    one_connection_per_run: bool = Field(default=False, description=(
        "Open the warehouse once per run, after taking the writer lock, and serve every connection this "
        "process makes to it during the run from that one (for runs executed in process one at a time). "
        "Other processes cannot open the file while a run holds it."))
    _held: ExitStack = PrivateAttr(default_factory=ExitStack)
    _database: str = PrivateAttr(default="")

    def setup_for_execution(self, context) -> None:
        self._database = fill_dataset(self.database, dataset_of_run(context.run), "the warehouse database")
        holder = f"pid {os.getpid()} on {socket.gethostname()}, run {context.run_id or 'none'}"
        self._held.enter_context(warehouse_writer_lock(self._database, holder, self.lock_timeout_seconds, context.log))
        if self.one_connection_per_run:
            try:
                self._held.enter_context(held_connection(self._database, self._connection_config()))
            except BaseException:
                self._held.close()
                raise
        tags = host_tags(context.run)
        if tags and context.instance is not None:
            context.instance.add_run_tags(context.run_id, tags)

    def teardown_after_execution(self, context) -> None:
        self._held.close()

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        """Replace the output's partition (or the whole table) with `obj`, in one transaction. An
        empty frame deletes the rows and, as upstream, creates no table when there is none."""
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{type(self).__name__} stores pandas DataFrames; {context.asset_key.to_user_string()} "
                            f"returned {type(obj).__name__}: annotate it `-> None` or give it another IO manager")
        table = self._table(context, context)
        where = self._where(context, context)
        with self._connect() as conn:
            conn.execute("begin transaction")
            try:
                conn.execute(f"create schema if not exists {table.split('.')[0]}")
                if self._exists(conn, table):
                    conn.execute(f"delete from {table}" + (f" where {where}" if where else ""))
                    if not obj.empty:
                        add_missing_columns(conn, table, obj)
                        conn.execute(f"insert into {table} by name select * from obj")
                elif not obj.empty:
                    conn.execute(f"create table {table} as select * from obj")
            except BaseException:
                conn.execute("rollback")
                raise
            conn.execute("commit")
        if obj.empty:
            context.log.warning("Skipping DuckDB write for empty DataFrame. An empty table will not be created.")
        rows = "dagster/partition_row_count" if context.has_partition_key else "dagster/row_count"
        context.add_output_metadata({
            rows: obj.shape[0], "dagster/storage_kind": "duckdb",
            "dataframe_columns": dg.MetadataValue.table_schema(dg.TableSchema(
                columns=[dg.TableColumn(name=str(name), type=str(dtype)) for name, dtype in obj.dtypes.items()])),
            "Query": self._select(context, table, where), "dagster/table_name": f"{self._database}.{table}",
        })

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        """The upstream asset's rows: the requested partitions' for a partitioned one."""
        upstream = context.upstream_output
        if context.has_asset_partitions and not context.asset_partition_keys:
            return pd.DataFrame()
        table = self._table(context, upstream)
        with self._connect() as conn:
            return conn.execute(self._select(context, table, self._where(context, upstream))).fetchdf()

    def _table(self, context: dg.InputContext | dg.OutputContext, output: dg.OutputContext) -> str:
        """`schema.table` of an asset (schema: its metadata, ours, its key prefix, `public`)."""
        if not context.has_asset_key:
            raise dg.DagsterInvariantViolationError(f"{type(self).__name__} stores assets only, not op outputs")
        path = context.asset_key.path
        schema = (output.definition_metadata or {}).get("schema") or self.schema_ or (path[-2] if len(path) > 1 else "public")
        return f"{schema}.{path[-1]}"

    @staticmethod
    def _where(context: dg.InputContext | dg.OutputContext, output: dg.OutputContext) -> str:
        """The SQL condition selecting the context's partitions ("" when unpartitioned)."""
        if not context.has_asset_partitions:
            return ""
        expr = (output.definition_metadata or {}).get("partition_expr")
        if expr is None:
            raise ValueError(f"Asset '{context.asset_key}' has partitions, but no 'partition_expr' metadata value, so we "
                             "don't know what column it's partitioned on. To specify a column, set this metadata value. "
                             'E.g. @asset(metadata={"partition_expr": "your_partition_column"}).')
        partitions = context.asset_partitions_def
        if isinstance(partitions, dg.TimeWindowPartitionsDefinition):
            start, end = (moment.strftime(DUCKDB_DATETIME_FORMAT) for moment in context.asset_partitions_time_window)
            return f"{expr} >= '{start}' AND {expr} < '{end}'"
        if isinstance(partitions, dg.MultiPartitionsDefinition):
            raise NotImplementedError("WarehouseIOManager does not store multi-partitioned assets")
        keys = ", ".join(lit(key) for key in context.asset_partition_keys)
        return f"{expr} in ({keys})"

    @staticmethod
    def _select(context: dg.InputContext | dg.OutputContext, table: str, where: str) -> str:
        """The query reading the rows (shown as the output's `Query` metadata, as upstream's)."""
        columns = (context.definition_metadata or {}).get("columns")
        return f"SELECT {', '.join(columns) if columns else '*'} FROM {table}" + (f" WHERE\n{where}" if where else "")

    @staticmethod
    def _exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
        # Asked, not caught: a failed statement aborts a DuckDB transaction.
        schema, name = table.split(".")
        return conn.execute("select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                            [schema, name]).fetchone()[0] > 0

    def _connect(self):
        return connect_retrying(self._database, read_only=False, timeout_seconds=WRITE_CONNECT_SECONDS,
                                config=self._connection_config())

    def _connection_config(self) -> dict[str, Any]:
        return {"custom_user_agent": "dagster", **self.connection_config}


def add_missing_columns(conn, table: str, frame: pd.DataFrame) -> list[str]:
    """Add to `table` the columns of `frame` it lacks (typed as DuckDB reads them), so that a table
    written by an older version takes the rows of this one: its old rows keep NULL there, nothing is
    rewritten. Returns the added column names."""
    conn.register("_incoming_frame", frame)
    try:
        incoming = conn.execute("describe select * from _incoming_frame").fetchall()
    finally:
        conn.unregister("_incoming_frame")
    have = {row[0] for row in conn.execute(f"describe {table}").fetchall()}
    added = []
    for name, column_type, *_ in incoming:
        if name not in have:
            conn.execute(f"alter table {table} add column {ident(name)} {column_type}")
            added.append(name)
    return added
