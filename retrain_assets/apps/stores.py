"""What the read-only commands open: the analysts' snapshot or the warehouse, and the one error
they raise when a store is missing or unreadable, with what to run."""

from __future__ import annotations

from pathlib import Path

from retrain_assets.settings import ProjectSettings

SETUP_HINT = ("run `make demo` to try the built-in scenario, or point --data-dir and --spec (RETRAIN_ASSETS_DATA_DIR, "
              "RETRAIN_ASSETS_SPEC) at the stores of your pipeline")


class StoreError(RuntimeError):
    """A store is missing or cannot be read; `hint` says what to run."""

    def __init__(self, message: str, hint: str = SETUP_HINT):
        super().__init__(message)
        self.hint = hint


def readable_database(settings: ProjectSettings) -> Path:
    """The database the read-only commands read: the analysts' snapshot when there is one (a running
    pipeline holds the warehouse's write lock), else the warehouse itself."""
    return settings.snapshot_path if settings.snapshot_path.exists() else settings.warehouse_path
