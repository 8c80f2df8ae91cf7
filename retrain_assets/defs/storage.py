"""The warehouse IO manager: dagster-duckdb's pandas IO manager, with each output written in one
transaction, and every step that uses it holding the warehouse's writer lock.

Transactions: upstream deletes the partition (or, for a history table, every row) and inserts the
new rows as two autocommitted statements: a process killed between them would lose the table's
content. Here a crash at any point leaves either the old rows or the new ones.

The writer lock: a step reads tables (a history it appends to, the partitions it joins) and then
writes; two steps doing that at once would lose one's rows. Dagster's `warehouse` pool serializes
them only on an instance configured with its limit, and a dead run can hold its slot; so the IO
manager itself takes an exclusive lock on `<warehouse>.lock` from before a step starts until after
it ends (for the whole run under the in-process executor, which sets resources up once per run).
It is an OS file lock: the kernel releases it when its process dies, however it dies."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pydantic import Field, PrivateAttr

from dagster._core.storage.db_io_manager import DbIOManager
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager

from retrain_assets.defs.runs import host_tags


class TransactionalDuckDbClient(DuckDbClient):
    """DuckDbClient whose connection runs everything between connect and close as one transaction."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice):
        with DuckDbClient.connect(context, table_slice) as conn:
            conn.execute("begin transaction")
            try:
                yield conn
            except BaseException:
                conn.execute("rollback")
                conn.close()  # upstream's connect skips its close when the body raises
                raise
            conn.execute("commit")

    @staticmethod
    def delete_table_slice(context, table_slice, connection) -> None:
        # A failed statement aborts a DuckDB transaction, so ask first instead of catching the
        # "table does not exist" error the way upstream does.
        exists = connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [table_slice.schema, table_slice.table],
        ).fetchone()[0]
        if exists:
            DuckDbClient.delete_table_slice(context, table_slice, connection)


LOCK_PROGRESS_SECONDS = 30.0


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


class WarehouseIOManager(DuckDBPandasIOManager):
    """Pandas DataFrames <-> DuckDB tables (partitioned by `partition_expr`), written atomically;
    a step using it holds the warehouse writer lock from its start to its end."""

    lock_timeout_seconds: float = Field(default=6 * 3600.0, description=(
        "How long a step waits for the warehouse writer lock held by another step before it fails."))
    _held: ExitStack = PrivateAttr(default_factory=ExitStack)

    def setup_for_execution(self, context) -> None:
        holder = f"pid {os.getpid()} on {socket.gethostname()}, run {context.run_id or 'none'}"
        self._held.enter_context(warehouse_writer_lock(self.database, holder, self.lock_timeout_seconds, context.log))
        tags = host_tags(context.dagster_run)
        if tags and context.instance is not None:
            context.instance.add_run_tags(context.run_id, tags)

    def teardown_after_execution(self, context) -> None:
        self._held.close()

    def create_io_manager(self, context) -> DbIOManager:
        # As upstream's create_io_manager, with the transactional client.
        return DbIOManager(db_client=TransactionalDuckDbClient(), database=self.database, schema=self.schema_,
                           type_handlers=self.type_handlers(), default_load_type=self.default_load_type(),
                           io_manager_name="DuckDBIOManager")


# Every asset that writes the warehouse runs in this Dagster concurrency pool. DuckDB allows one
# writing process per file; with the pool's limit at 1 (dagster.yaml: concurrency.pools) steps of
# concurrent runs take turns instead of fighting over the file lock.
WAREHOUSE_POOL = "warehouse"
