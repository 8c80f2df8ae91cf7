"""The warehouse IO manager: dagster-duckdb's pandas IO manager, with each output written in one
transaction. Upstream deletes the partition (or, for a history table, every row) and inserts the
new rows as two autocommitted statements: a process killed between them would lose the table's
content. Here a crash at any point leaves either the old rows or the new ones."""

from __future__ import annotations

from contextlib import contextmanager

from dagster._core.storage.db_io_manager import DbIOManager
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager


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


class WarehouseIOManager(DuckDBPandasIOManager):
    """Pandas DataFrames <-> DuckDB tables (partitioned by `partition_expr`), written atomically."""

    def create_io_manager(self, context) -> DbIOManager:
        # As upstream's create_io_manager, with the transactional client.
        return DbIOManager(db_client=TransactionalDuckDbClient(), database=self.database, schema=self.schema_,
                           type_handlers=self.type_handlers(), default_load_type=self.default_load_type(),
                           io_manager_name="DuckDBIOManager")


# Every asset that writes the warehouse runs in this Dagster concurrency pool. DuckDB allows one
# writing process per file; with the pool's limit at 1 (dagster.yaml: concurrency.pools) steps of
# concurrent runs take turns instead of fighting over the file lock.
WAREHOUSE_POOL = "warehouse"
