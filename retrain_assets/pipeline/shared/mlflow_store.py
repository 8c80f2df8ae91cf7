"""The MLflow store behind the registry resource: a client for a tracking URI (creating an
embedded SQLite store once, safely across processes) and the global tracking URI set for a block."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def tracking_uri_set(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set for a block. mlflow.set_tracking_uri also exports
    MLFLOW_TRACKING_URI, which `model_registry_for` reads as the user's choice: restore it after,
    or one store's URI leaks into every later run of the process (and its child processes)."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def store_client(tracking_uri: str):
    """An MLflow client for the tracking and registry URI (its SQLite store created first)."""
    from mlflow import MlflowClient

    create_sqlite_store_once(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def create_sqlite_store_once(tracking_uri: str) -> None:
    """Create an embedded SQLite store once, under a file lock: MLflow creates its schema on first
    use, and two processes doing it at once (two datasets' first runs) fail with "table already
    exists". A marker file next to the database says it was created completely."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    from mlflow import MlflowClient

    database = Path(tracking_uri.removeprefix("sqlite:///"))
    ready = database.with_name(f".{database.name}.ready")
    if ready.exists():
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f".{database.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)  # creates the schema
            ready.touch()
