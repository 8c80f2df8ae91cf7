"""The DuckDB warehouse resource: short-lived, retried read connections and the analysts' snapshot."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from retrain_assets.pipeline.shared.io_manager import connect_retrying
from retrain_assets.settings import DEFAULT_REPORTS_URL


class Warehouse(dg.ConfigurableResource):
    """Read access to the DuckDB warehouse, and publication of the analysts' snapshot.

    DuckDB allows one writing process per file, so connections here are short-lived and retried
    while another process holds the lock.
    """

    database: str = Field(description="Path of the warehouse DuckDB file written by the IO manager.")
    snapshot_path: str = Field(description="Path of the read-only snapshot analysts query.")
    reports_dir: str = Field(description="Folder for the HTML reports linked from asset metadata.")
    reports_url: str = Field(default=DEFAULT_REPORTS_URL,
                             description="Where `reports_dir` is served (`make ui` starts that server), for clickable links.")
    lock_timeout_seconds: float = Field(default=30.0, description="How long to retry while another process holds the lock.")

    def report_links(self, path: Path | str, name: str = "html_report") -> dict[str, dg.MetadataValue]:
        """Metadata for a report under `reports_dir`: its file path and its served URL (a link in the UI)."""
        relative = Path(path).resolve().relative_to(Path(self.reports_dir).resolve())
        return {name: dg.MetadataValue.path(str(path)),
                f"{name}_url": dg.MetadataValue.url(f"{self.reports_url.rstrip('/')}/{quote(relative.as_posix())}")}

    def connect(self, read_only: bool = True):
        """A short-lived connection, retried while another process holds the file."""
        return connect_retrying(self.database, read_only, self.lock_timeout_seconds)

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run a read-only query. A table that does not exist yet (nothing was ever written to
        it) reads as an empty result, as does an absent warehouse file."""
        if not Path(self.database).exists():
            return pd.DataFrame()
        with self.connect() as conn:
            try:
                return conn.execute(sql, params or []).df()
            except duckdb.CatalogException:
                return pd.DataFrame()

    def has_table(self, table: str) -> bool:
        """Whether `main.<table>` exists."""
        found = self.query(
            "select count(*) as n from information_schema.tables where table_schema = 'main' and table_name = ?", [table]
        )
        return bool(len(found)) and int(found["n"].iloc[0]) > 0

    def with_history(self, table: str, new_rows: pd.DataFrame) -> pd.DataFrame:
        """`new_rows` appended to what `table` already holds: model-level tables keep their history."""
        history = self.query(f'select * from "{table}"')
        return pd.concat([history, new_rows], ignore_index=True) if len(history) else new_rows.reset_index(drop=True)

    def publish_snapshot(self) -> Path:
        """Copy the warehouse into a new file and rename it over the snapshot (atomic for readers)."""
        target = Path(self.snapshot_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            # Through the warehouse's own connection: DuckDB opens a file once per process, and
            # this reuses an instance the process may already hold.
            with connect_retrying(self.database, read_only=False, timeout_seconds=self.lock_timeout_seconds) as conn:
                source = conn.execute("select current_database()").fetchone()[0]
                conn.execute(f"attach '{tmp}' as snapshot_tmp")
                conn.execute(f'copy from database "{source}" to snapshot_tmp')
                conn.execute("detach snapshot_tmp")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)
        return target
