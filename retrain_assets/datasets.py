"""The datasets of this deployment: one `defs.yaml` per dataset under the dg defs folder
(`retrain_assets/defs/<name>/defs.yaml`), each an instance of the `DatasetPipeline` component that
names a spec file and any overrides. Dagster loads them as components; the command line reads the
same files here, without Dagster, to know which datasets exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
DEFS_FOLDER = PACKAGE_DIR / "defs"
COMPONENT_TYPE = "retrain_assets.pipeline.DatasetPipeline"


class DatasetChoiceError(ValueError):
    """No dataset, or not one dataset, matches what the user asked for; the message lists the choices."""


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset declared in the defs folder: its spec file, overrides and shipped history."""

    defs_yaml: Path
    spec_path: Path
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)
    history: Path | None = None  # a shipped history the replay can use (`retrain-assets replay --dataset`)
    history_start_date: str | None = None

    @property
    def name(self) -> str:
        """The dataset's name: the spec's `name` (after overrides)."""
        return self.spec.name

    @cached_property
    def spec(self):
        """The spec file with the overrides merged over it (read once per entry)."""
        from retrain_assets.core.spec import load_spec

        return load_spec(self.spec_path, self.overrides)


def resolve_path(value: str | Path, root: Path = PROJECT_ROOT) -> Path:
    """A path from a defs.yaml: absolute as given, else relative to the project root."""
    path = Path(value)
    return path if path.is_absolute() else (root / path).resolve()


def read_entry(defs_yaml: Path, root: Path = PROJECT_ROOT) -> DatasetEntry | None:
    """The dataset a defs.yaml declares, or None when it declares another component type."""
    raw = yaml.safe_load(defs_yaml.read_text()) or {}
    if not isinstance(raw, dict) or raw.get("type") != COMPONENT_TYPE:
        return None
    attributes = raw.get("attributes") or {}
    if "spec" not in attributes:
        raise DatasetChoiceError(f"{defs_yaml}: attributes.spec is required (the dataset spec file)")
    history = attributes.get("history") or {}
    return DatasetEntry(defs_yaml=defs_yaml, spec_path=resolve_path(attributes["spec"], root),
                        overrides=dict(attributes.get("overrides") or {}),
                        history=resolve_path(history["path"], root) if history.get("path") else None,
                        history_start_date=str(history["start_date"]) if history.get("start_date") else None)


def declared_datasets(defs_folder: Path = DEFS_FOLDER, root: Path = PROJECT_ROOT) -> list[DatasetEntry]:
    """Every dataset declared under `defs_folder`, sorted by name."""
    entries = [entry for path in sorted(defs_folder.rglob("defs.yaml")) if (entry := read_entry(path, root))]
    return sorted(entries, key=lambda entry: entry.name)


def choose_dataset(entries: list[DatasetEntry], name: str | None) -> DatasetEntry:
    """The entry called `name`; without a name, the only one. Anything else raises with the choices."""
    names = [entry.name for entry in entries]
    if name is None:
        if len(entries) == 1:
            return entries[0]
        if not entries:
            raise DatasetChoiceError(f"no dataset is declared under {DEFS_FOLDER} (add one: docs/own-data.md)")
        raise DatasetChoiceError(f"this deployment has {len(entries)} datasets: pass --dataset with one of "
                                 f"{', '.join(names)}")
    for entry in entries:
        if entry.name == name:
            return entry
    raise DatasetChoiceError(f"no dataset {name!r} in this deployment; the datasets are: {', '.join(names) or 'none'}")
