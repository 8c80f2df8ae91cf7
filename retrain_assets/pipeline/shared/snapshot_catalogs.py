"""The catalogs analysts open over the snapshot's Parquet files (pipeline/shared/snapshots.py):
DuckDB files holding only views, `read_parquet(<absolute folder>/*.parquet, union_by_name = true)`.

    <snapshots>/<dataset>.duckdb   a view per table of the dataset, in `main` (`ProjectSettings.snapshot_path`)
    <snapshots>/analysts.duckdb    a schema per dataset (`loan_default.raw_batches`, `rainfall.raw_batches`)

A view globs its folder at each query, so a new partition needs no new view; a catalog is rewritten
only when a table appears or goes, or the set of its files' schemas changes (a DuckDB before 1.5
fixes a view's columns when it is created). A rewrite is a new file renamed over the old one: a
reader sees the old catalog or the new one. analysts.duckdb is written under `.analysts.lock` by
whichever dataset changed, from every dataset's `<dataset>/catalog.json` as it reads them under that
lock, so two datasets publishing at once keep each other's views.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.sql_text import ident, lit

ANALYSTS_CATALOG = "analysts.duckdb"


def publish_catalogs(root: Path, dataset: str, tables: dict[str, list[str]], timeout_seconds: float) -> list[str]:
    """Rewrite `<dataset>.duckdb`, then analysts.duckdb, when the `tables` they hold views for
    (table -> its files' distinct schema digests) differ; the names of the files rewritten."""
    rewritten = []
    own, listed = root / f"{dataset}.duckdb", root / dataset / "catalog.json"
    if load_json(listed) != tables or not own.exists():
        _write_catalog(own, {"main": {table: root / dataset / table for table in tables}})
        write_text_atomically(json.dumps(tables, sort_keys=True), listed)
        rewritten.append(own.name)
    shared = root / ANALYSTS_CATALOG
    with file_lock(root / ".analysts.lock", timeout_seconds):
        if load_json(root / ".analysts.json").get(dataset) == tables and shared.exists():
            return rewritten
        # Every dataset as its catalog.json says now: one that publishes after this read finds its
        # entry differs, and rewrites the file in turn.
        datasets = {path.parent.name: load_json(path) for path in sorted(root.glob("*/catalog.json"))}
        _write_catalog(shared, {name: {table: root / name / table for table in views} for name, views in datasets.items() if views})
        write_text_atomically(json.dumps(datasets, sort_keys=True), root / ".analysts.json")
    return [*rewritten, shared.name]


def _write_catalog(path: Path, schemas: dict[str, dict[str, Path]]) -> None:
    """A new DuckDB file with a view per table (`read_parquet` over its folder, union_by_name, so
    files written before a new column read it as NULL), renamed over `path`."""
    tmp = temporary_beside(path)
    try:
        with duckdb.connect(str(tmp)) as conn:
            for schema, views in schemas.items():
                if schema != "main":
                    conn.execute(f"create schema {ident(schema)}")
                for view, folder in sorted(views.items()):
                    _create_view(conn, f"{ident(schema)}.{ident(view)}", folder)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)


def _create_view(conn: duckdb.DuckDBPyConnection, view: str, folder: Path) -> None:
    """The view over a table's folder. DuckDB reads the files' footers to create it: retried when a
    publisher replaced or removed a file meanwhile; none when the folder has no file any more
    (read_parquet fails on an empty glob; the publisher that emptied it rewrites the catalogs)."""
    for attempt in range(3):
        if not any(folder.glob("*.parquet")):
            return
        try:
            conn.execute(f"create view {view} as select * from read_parquet({lit(str(folder / '*.parquet'))}, "
                         "union_by_name = true)")
            return
        except duckdb.IOException:
            if attempt == 2:
                raise
            time.sleep(0.1)


@contextmanager
def file_lock(path: Path, timeout_seconds: float) -> Iterator[None]:
    """An exclusive OS lock on `path` (released by the kernel if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} has been held by another snapshot publisher for over {timeout_seconds:.0f} s") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def load_json(path: Path) -> dict:
    """A JSON object saved by the publisher; {} when absent or unreadable."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def temporary_beside(path: Path) -> Path:
    """A name beside `path`, unique to this thread, that no view's `*.parquet` glob matches."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
