"""The landing-zone resource: where batch and label files land, the restricted quarantine copy, the PII key."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from pydantic import Field

from retrain_assets.core.ingestion.landing import LandingFile, safe_file_name, scan
from retrain_assets.pipeline.shared.namespace import DatasetScopedResource
from retrain_assets.core.ingestion.privacy import GENERATE_KEY_HINT, PII_KEY_ENV, PiiKeyError, check_key, development_key


class LandingZone(DatasetScopedResource):
    """The raw layer: the folder where batch and label files land (see core.landing for the naming
    rules), the owner-only folder that keeps quarantined files as delivered, and the key that
    pseudonymizes PII before anything leaves this layer."""

    root: str = Field(description="Landing-zone folder with batches/ and labels/ inside (`{dataset}`: the run's dataset).")
    restricted_root: str = Field(description="Owner-only folder (0700) for raw copies of quarantined files "
                                             "(`{dataset}`: the run's dataset).")
    pii_key: str | None = Field(default=None, description=f"Pseudonymization key; set {PII_KEY_ENV} (read via dg.EnvVar).")
    production: bool = Field(default=False, description="Refuse to run without a configured PII key.")
    max_file_bytes: int = Field(default=1 << 30, description=(
        "Largest landing file read (default 1 GiB; a file is held in memory whole): a larger one is not read, "
        "its batch is blocked and the file stays in the landing zone."))

    @property
    def root_path(self) -> str:
        """The landing folder of this store's dataset."""
        return self.filled(self.root, "root")

    @property
    def restricted_path(self) -> str:
        return self.filled(self.restricted_root, "restricted_root")

    def files_in_window(self, kind: str, start: pd.Timestamp, end: pd.Timestamp) -> list[LandingFile]:
        """Files of `kind` whose name date falls in [start, end), oldest name first."""
        found, _ = scan(Path(self.root_path), kinds=(kind,), window=(start, end))
        return found

    def pii_key_bytes(self) -> bytes:
        """The pseudonymization key; in development a generated key under the restricted folder."""
        if self.pii_key:
            return check_key(self.pii_key)
        if self.production:
            raise PiiKeyError(f"{PII_KEY_ENV} is not set and RETRAIN_ASSETS_MODE=production: PII columns cannot be "
                              f"pseudonymized. Generate a key with {GENERATE_KEY_HINT}, keep it in your secret "
                              f"store and export it as {PII_KEY_ENV} for the Dagster code location.")
        return check_key(development_key(self._restricted() / "pii.key"))

    def keep_raw_copy(self, file: LandingFile, partition_key: str) -> str:
        """Copy a delivered file, byte for byte, into the restricted quarantine (owner-only); returns
        its path relative to the restricted folder. Idempotent: the name carries the content hash.
        A file over `max_file_bytes` is not copied ("" is returned): it stays in the landing zone."""
        if file.path.stat().st_size > self.max_file_bytes:
            return ""
        relative = Path("quarantine") / file.kind / partition_key / f"{file.sha256[:16]}__{safe_file_name(file.path.name)}"
        target = self._restricted() / relative
        if not target.resolve().is_relative_to(self._restricted().resolve()):  # belt and braces over safe_file_name
            raise ValueError(f"the raw copy of {file.path.name!r} would land outside {self.restricted_path}")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".copy.")  # 0600
            os.close(fd)
            try:
                shutil.copyfile(file.path, tmp)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return str(relative)

    def _restricted(self) -> Path:
        root = Path(self.restricted_path)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return root
