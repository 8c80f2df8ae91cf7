"""The DuckDB warehouse resource: short-lived, retried read connections, report links."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from retrain_assets.pipeline.shared.io_manager import connect_retrying
from retrain_assets.pipeline.shared.namespace import DatasetScopedResource
from retrain_assets.settings import DEFAULT_REPORTS_URL


class Warehouse(DatasetScopedResource):
    """Read access to a dataset's DuckDB warehouse, where its reports and analysts' snapshot go.

    DuckDB allows one writing process per file, so connections here are short-lived and retried
    while another process holds the lock. Paths may hold `{dataset}`: a run opens its dataset's.
    """

    database: str = Field(description="Path of the warehouse DuckDB file written by the IO manager "
                                      "(`{dataset}`: the run's dataset).")
    snapshot_path: str = Field(description="Path of the read-only snapshot analysts query (`{dataset}`: the run's dataset).")
    reports_dir: str = Field(description="Folder for the HTML reports linked from asset metadata (`{dataset}`: the run's dataset).")
    reports_url: str = Field(default=DEFAULT_REPORTS_URL,
                             description="Where `reports_dir` is served (`make ui` starts that server), for clickable links.")
    lock_timeout_seconds: float = Field(default=30.0, description="How long to retry while another process holds the lock.")

    @property
    def database_path(self) -> str:
        """The warehouse file of this store's dataset."""
        return self.filled(self.database, "database")

    @property
    def reports_path(self) -> str:
        """The reports folder of this store's dataset."""
        return self.filled(self.reports_dir, "reports_dir")

    @property
    def snapshot_file(self) -> str:
        return self.filled(self.snapshot_path, "snapshot_path")

    def report_links(self, path: Path | str, name: str = "html_report") -> dict[str, dg.MetadataValue]:
        """Metadata for a report under `reports_dir`: its file path and its served URL (a link in the UI)."""
        relative = Path(path).resolve().relative_to(Path(self.reports_path).resolve())
        base = self.filled(self.reports_url, "reports_url").rstrip("/")
        return {name: dg.MetadataValue.path(str(path)),
                f"{name}_url": dg.MetadataValue.url(f"{base}/{quote(relative.as_posix())}")}

    def connect(self, read_only: bool = True):
        """A short-lived connection, retried while another process holds the file."""
        return connect_retrying(self.database_path, read_only, self.lock_timeout_seconds)

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run a read-only query. A table that does not exist yet (nothing was ever written to
        it) reads as an empty result, as does an absent warehouse file."""
        if not Path(self.database_path).exists():
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
