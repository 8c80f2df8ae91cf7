"""The prediction log of one dataset: what the service answered, buffered, then written as new
Parquet files into the dataset's landing zone (`landing/<dataset>/predictions`)."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from retrain_assets.core.files import write_atomically
from retrain_assets.core.ingestion.landing import PREDICTIONS

DEFAULT_MAX_PENDING_RECORDS = 100_000


class LogFullError(RuntimeError):
    """The prediction log's buffer is full: its records cannot be written (see `PredictionLog.last_error`)."""


class PredictionLog:
    """Append-only prediction log: records buffer in memory and are flushed as new Parquet files
    `predictions/<event date>__<server id>-<sequence>.parquet` (temp file + rename), never rewritten.
    The buffer holds at most `max_pending` records; `last_error` is the last failed flush ("" once
    one succeeds)."""

    def __init__(self, landing_dir: Path, server_id: str | None = None, max_pending: int = DEFAULT_MAX_PENDING_RECORDS):
        if max_pending < 1:
            raise ValueError(f"max_pending must be positive, not {max_pending}")
        self.folder = Path(landing_dir) / PREDICTIONS
        self.server_id = server_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_pending = max_pending
        self.last_error = ""
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Buffer records; raises LogFullError, buffering none of them, when they do not fit."""
        with self._lock:
            if len(self._buffer) + len(records) > self.max_pending:
                raise LogFullError(f"prediction log full: {len(self._buffer)} records not yet written to {self.folder} "
                                   f"(at most {self.max_pending}; last write error: {self.last_error or 'none yet'}); "
                                   "predictions resume once the log can be written")
            self._buffer.extend(records)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> list[Path]:
        """Write what is buffered, one file per event date; returns the files written. If a write
        fails, the records not yet written go back into the buffer (nothing is lost) and the error
        is raised."""
        with self._lock:
            records, self._buffer = self._buffer, []
        if not records:
            return []
        written, pending = [], pd.RangeIndex(len(records))
        try:
            frame = pd.DataFrame.from_records(records)
            for date, part in frame.groupby(frame["event_time"].dt.strftime("%Y-%m-%d"), sort=True):
                path = self.folder / f"{date}__{self.server_id}-{next(self._sequence):06d}.parquet"
                write_atomically(part.reset_index(drop=True), path)
                written.append(path)
                pending = pending.difference(part.index)
        except BaseException as exc:
            with self._lock:
                self._buffer[:0] = [records[i] for i in pending]
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_error = ""
        return written
