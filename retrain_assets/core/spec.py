"""Dataset spec: the YAML file that declares a dataset, so no stage hard-codes one.

Ingestion, contracts and features all read the spec; the format is documented in README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retrain_assets.core.policy import Policy

COLUMN_TYPES = ("float", "int", "bool", "category", "string", "timestamp")
GRANULARITIES = ("daily", "weekly", "monthly")


class SpecError(ValueError):
    """The dataset spec file is invalid; the message says which key to fix."""


@dataclass(frozen=True)
class ColumnSpec:
    """One declared column: type, allowed values and nullability."""

    name: str
    type: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    description: str = ""


@dataclass(frozen=True)
class TargetSpec:
    """The label column and its classes; `positive` is the class scored by the model."""

    name: str
    classes: tuple[Any, ...]
    positive: Any


@dataclass(frozen=True)
class PartitionSpec:
    """How batches are cut in time: `daily`, `weekly` or `monthly` from `start_date`."""

    granularity: str = "daily"
    start_date: str = "2025-01-01"


@dataclass(frozen=True)
class DatasetSpec:
    """A declared tabular classification dataset."""

    name: str
    id_column: str
    event_time_column: str
    target: TargetSpec
    columns: tuple[ColumnSpec, ...]
    partitions: PartitionSpec = field(default_factory=PartitionSpec)
    pii_columns: tuple[str, ...] = ()
    segment_columns: tuple[str, ...] = ()
    sensitive_attribute: str | None = None
    policy: Policy = field(default_factory=Policy)
    description: str = ""

    def column(self, name: str) -> ColumnSpec:
        """Return the declared column called `name`."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        """Columns a batch file must carry (the target arrives separately, in label files)."""
        return [c.name for c in self.columns]

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs: every column except id, event time, PII and the sensitive attribute.

        The sensitive attribute is kept out of the model on purpose; it is still stored so that
        fairness gaps can be measured across it.
        """
        excluded = {self.id_column, self.event_time_column, *self.pii_columns}
        if self.sensitive_attribute:
            excluded.add(self.sensitive_attribute)
        return [c.name for c in self.columns if c.name not in excluded]

    @property
    def numeric_features(self) -> list[str]:
        """Feature columns treated as numbers (float, int, bool)."""
        return [n for n in self.feature_columns if self.column(n).type in ("float", "int", "bool")]

    @property
    def categorical_features(self) -> list[str]:
        """Feature columns treated as categories (category, string)."""
        return [n for n in self.feature_columns if self.column(n).type in ("category", "string")]


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a dataset spec YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"dataset spec not found: {path}")
    with path.open() as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    try:
        return parse_spec(raw)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_spec(raw: dict[str, Any]) -> DatasetSpec:
    """Build a DatasetSpec from the parsed YAML mapping, with errors naming the bad key."""
    for key in ("name", "id", "event_time", "target", "columns"):
        if key not in raw:
            raise SpecError(f"missing required key '{key}'")
    columns = tuple(_parse_column(name, body or {}) for name, body in raw["columns"].items())
    names = {c.name for c in columns}

    target_raw = raw["target"]
    if not isinstance(target_raw, dict) or "name" not in target_raw or "classes" not in target_raw:
        raise SpecError("'target' needs 'name' and 'classes'")
    classes = tuple(target_raw["classes"])
    if len(classes) != 2:
        raise SpecError(f"target.classes must list exactly two classes (binary), got {list(classes)}")
    positive = target_raw.get("positive", classes[-1])
    if positive not in classes:
        raise SpecError(f"target.positive {positive!r} is not one of target.classes {list(classes)}")
    target = TargetSpec(name=str(target_raw["name"]), classes=classes, positive=positive)
    if target.name in names:
        raise SpecError(f"target '{target.name}' must not be listed under columns: labels arrive in label files")

    for role in ("id", "event_time"):
        if raw[role] not in names:
            raise SpecError(f"'{role}' names column '{raw[role]}', which is not declared under columns")
    event_time = raw["event_time"]
    if _column_type(columns, event_time) != "timestamp":
        raise SpecError(f"event_time column '{event_time}' must have type: timestamp")

    pii = tuple(raw.get("pii", []) or [])
    segments = tuple(raw.get("segments", []) or [])
    sensitive = raw.get("sensitive_attribute")
    for label, listed in (("pii", pii), ("segments", segments), ("sensitive_attribute", (sensitive,) if sensitive else ())):
        unknown = [c for c in listed if c not in names]
        if unknown:
            raise SpecError(f"'{label}' names undeclared columns {unknown}")

    part_raw = raw.get("partitions", {}) or {}
    partitions = PartitionSpec(
        granularity=str(part_raw.get("granularity", "daily")),
        start_date=str(part_raw.get("start_date", "2025-01-01")),
    )
    if partitions.granularity not in GRANULARITIES:
        raise SpecError(f"partitions.granularity must be one of {GRANULARITIES}, got '{partitions.granularity}'")

    try:
        policy = Policy.from_mapping(raw.get("policy", {}) or {})
    except (TypeError, ValueError) as exc:
        raise SpecError(f"policy: {exc}") from None

    spec = DatasetSpec(
        name=str(raw["name"]),
        id_column=str(raw["id"]),
        event_time_column=str(event_time),
        target=target,
        columns=columns,
        partitions=partitions,
        pii_columns=pii,
        segment_columns=segments,
        sensitive_attribute=sensitive,
        policy=policy,
        description=str(raw.get("description", "")),
    )
    if not spec.feature_columns:
        raise SpecError("no feature columns left after removing id, event_time, pii and sensitive_attribute")
    return spec


def _column_type(columns: tuple[ColumnSpec, ...], name: str) -> str:
    return next(c.type for c in columns if c.name == name)


def _parse_column(name: str, body: dict[str, Any]) -> ColumnSpec:
    col_type = body.get("type")
    if col_type not in COLUMN_TYPES:
        raise SpecError(f"columns.{name}.type must be one of {COLUMN_TYPES}, got {col_type!r}")
    unknown = set(body) - {"type", "nullable", "min", "max", "categories", "description"}
    if unknown:
        raise SpecError(f"columns.{name}: unknown keys {sorted(unknown)}")
    categories = body.get("categories")
    if col_type == "category" and not categories:
        raise SpecError(f"columns.{name}: type category needs a 'categories' list")
    return ColumnSpec(
        name=str(name),
        type=col_type,
        nullable=bool(body.get("nullable", False)),
        min=body.get("min"),
        max=body.get("max"),
        categories=tuple(str(c) for c in categories) if categories else None,
        description=str(body.get("description", "")),
    )
