"""Dataset spec: the YAML file that declares a dataset, so no stage hard-codes one.

Ingestion, contracts and features all read the spec. Each field's metadata names its YAML key
(`key`), the value it takes (`type`) and what it means (`doc`): docs/configuration.md is
generated from them (`python -m retrain_assets.apps.docs`).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from retrain_assets.core.policy.definition import TASK_FAMILIES, Policy
from retrain_assets.core.spec_rules import NUMERIC_TYPES, RULE_KINDS, RuleCondition, rule_fields
from retrain_assets.core.tasks import TASK_TYPES, primary_metric_problem

COLUMN_TYPES = (*NUMERIC_TYPES, "category", "string", "timestamp")
GRANULARITIES = ("daily", "weekly", "monthly")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_EMAIL, _TEAM = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+"), re.compile(r"team:[A-Za-z0-9_.-]+")


def spec_field(key: str | None, value_type: str, doc: str, default: Any = MISSING, *, default_factory: Any = MISSING,
               default_doc: str = "") -> Any:
    """A spec field read from YAML key `key` (None: the field is the key of its mapping entry), taking
    a `value_type`, with its meaning; `default_doc` describes a default computed at parse time."""
    return field(default=default, default_factory=default_factory,
                 metadata={"key": key, "type": value_type, "doc": doc, "default_doc": default_doc})


class SpecError(ValueError):
    """The dataset spec file is invalid; the message says which key to fix."""


@dataclass(frozen=True)
class ColumnSpec:
    """One declared column: type, allowed values and nullability."""

    name: str = spec_field(None, "string", "The column's name, as in the batch files.")
    type: str = spec_field("type", "string", f"One of {', '.join(COLUMN_TYPES)}; values are coerced to it "
                                             "(CSV `42.0` is a valid int, `42.5` is not).")
    nullable: bool = spec_field("nullable", "bool", "Whether empty values are allowed (never for the id and "
                                                    "event-time columns).", False)
    min: float | None = spec_field("min", "number", "Smallest allowed value (numeric columns).", None)
    max: float | None = spec_field("max", "number", "Largest allowed value (numeric columns).", None)
    categories: tuple[str, ...] | None = spec_field("categories", "list of strings",
                                                    "The allowed values; required for type `category`.", None)
    description: str = spec_field("description", "string", "What the column holds, for people (the Dagster UI "
                                                            "and the analyst guide show it).", "")


@dataclass(frozen=True)
class TargetSpec:
    """The label column and the task it defines: binary (two classes, `positive` is the class the
    model scores), multiclass (three or more classes) or regression (a number, optionally within
    [min, max])."""

    name: str = spec_field("name", "string", "Name of the label column in label files (not listed under `columns`).")
    classes: tuple[Any, ...] = spec_field("classes", "list of values", "The classes: exactly two for `binary`, three or "
                                          "more for `multiclass`; not used by `regression`.", ())
    positive: Any = spec_field("positive", "one of `classes`", "Binary only: the class the model scores (the score is its "
                               "probability).", None, default_doc="binary: the last of `classes`")
    type: str = spec_field("type", "string", f"The task: one of {', '.join(TASK_TYPES)}.", "binary")
    min: float | None = spec_field("min", "number", "Regression only: the smallest valid label; a smaller one is "
                                   "quarantined.", None)
    max: float | None = spec_field("max", "number", "Regression only: the largest valid label; a larger one is "
                                   "quarantined.", None)

    @property
    def is_classification(self) -> bool:
        """Binary or multiclass: the label is one of `classes`."""
        return self.type != "regression"


@dataclass(frozen=True)
class PartitionSpec:
    """How batches are cut in time: `daily`, `weekly` or `monthly` from `start_date`."""

    granularity: str = spec_field("granularity", "string", f"One of {', '.join(GRANULARITIES)}: one batch (partition) "
                                                           "per period; weekly partitions start on Monday.", "daily")
    start_date: str = spec_field("start_date", "date (YYYY-MM-DD)", "First day of the first partition.", "2025-01-01")


@dataclass(frozen=True)
class OutputRule:
    """A rule the model's outputs must obey (`core.monitoring.output_rules` checks it per batch and
    per request; docs/monitoring.md#rules-on-outputs)."""

    name: str = spec_field(None, "string", "The rule's `name` (a list item's key): letters, digits and _, unique.")
    kind: str = spec_field("kind", "string", f"One of {', '.join(RULE_KINDS)}: the output within [min, max] (regression "
                           "value, binary score); the batch's share of rows predicted as `class` within [min, max]; "
                           "`when` a feature condition holds, the `output` condition must hold.")
    min: float | None = spec_field("min", "number", "range, class_share: the lowest allowed value or share.", None)
    max: float | None = spec_field("max", "number", "range, class_share: the highest allowed value or share.", None)
    class_value: Any = spec_field("class", "one of `target.classes`", "class_share: the predicted class counted (binary: "
                                  "positive at policy.promotion.operating_threshold; multiclass: the most probable).", None)
    when: RuleCondition | None = spec_field("when", "mapping", "relation: `{feature, op, value}`, op one of <, <=, >, >=, "
                                            "==, != (a row with the feature missing is not checked).", None)
    output: RuleCondition | None = spec_field("output", "mapping", "relation: `{op, value}` on the output (regression "
                                              "value, binary score; multiclass: the predicted class, == or !=).", None)


@dataclass(frozen=True)
class DatasetSpec:
    """A declared tabular dataset whose label arrives later: a classifier's or a regressor's."""

    name: str = spec_field("name", "string", "Dataset name; also the MLflow registered model name.")
    id_column: str = spec_field("id", "column name", "Column holding the unique row id (unique within a batch; "
                                                     "labels join on it).")
    event_time_column: str = spec_field("event_time", "column name", "Timestamp column (type `timestamp`); rows must "
                                                                     "fall inside their file's partition.")
    target: TargetSpec = spec_field("target", "mapping", "The label and its task (binary, multiclass or regression), "
                                    "delivered in label files, not in batches.")
    columns: tuple[ColumnSpec, ...] = spec_field("columns", "mapping of column name to column",
                                                 "Every column a batch file carries, in order.")
    partitions: PartitionSpec = spec_field("partitions", "mapping", "How batches are cut in time.",
                                           default_factory=PartitionSpec)
    pii_columns: tuple[str, ...] = spec_field("pii", "list of column names", "Columns never used as model inputs; "
                                              "pseudonymized with a keyed hash before they reach the warehouse.", ())
    segment_columns: tuple[str, ...] = spec_field("segments", "list of column names",
                                                  "Columns whose values the evaluation slices metrics by and drift is "
                                                  "measured per (policy.drift.segment_drift).", ())
    sensitive_attribute: str | None = spec_field("sensitive_attribute", "column name",
                                                 "Column fairness is measured across; never a model input.", None)
    policy: Policy = spec_field("policy", "mapping", "Overrides of the policy defaults (see the policy reference).",
                                default_factory=Policy)
    description: str = spec_field("description", "string", "What the dataset is, for people.", "")
    owners: tuple[str, ...] = spec_field("owners", "list of strings", "Who answers for the dataset's assets: e-mail "
                                         "addresses or `team:<name>`; the Dagster UI shows them on every asset.", ())
    output_rules: tuple[OutputRule, ...] = spec_field("output_rules", "list of rules", "Rules the model's outputs must "
                                                      "obey, counted per batch and per request (see below).", ())

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
        return [n for n in self.feature_columns if self.column(n).type in NUMERIC_TYPES]

    @property
    def categorical_features(self) -> list[str]:
        """Feature columns treated as categories (category, string)."""
        return [n for n in self.feature_columns if self.column(n).type in ("category", "string")]


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> DatasetSpec:
    """Read and validate a dataset spec YAML file, with `overrides` (a partial spec, e.g. from a
    dataset's defs.yaml) merged over it key by key."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"dataset spec not found: {path}")
    with path.open() as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    try:
        return parse_spec(merge_overrides(raw, overrides or {}))
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def merge_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`raw` with `overrides` merged in: mappings merge key by key, any other value replaces."""
    merged = dict(raw)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_spec(raw: dict[str, Any]) -> DatasetSpec:
    """Build a DatasetSpec from the parsed YAML mapping, with errors naming the bad key."""
    for key in ("name", "id", "event_time", "target", "columns"):
        if key not in raw:
            raise SpecError(f"missing required key '{key}'")
    if not _NAME.fullmatch(str(raw["name"])):
        raise SpecError(f"name {raw['name']!r} must start with a letter and hold only letters, digits and _ "
                        "(it prefixes the dataset's asset keys, jobs, tables and MLflow names)")
    columns = tuple(_parse_column(name, body or {}) for name, body in raw["columns"].items())
    names = {c.name for c in columns}

    target = _parse_target(raw["target"])
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
        granularity=str(part_raw.get("granularity", PartitionSpec.granularity)),
        start_date=str(part_raw.get("start_date", PartitionSpec.start_date)),
    )
    if partitions.granularity not in GRANULARITIES:
        raise SpecError(f"partitions.granularity must be one of {GRANULARITIES}, got '{partitions.granularity}'")

    try:
        policy = Policy.from_mapping(raw.get("policy", {}) or {})
    except (TypeError, ValueError) as exc:
        raise SpecError(f"policy: {exc}") from None
    policy = _task_families(policy, target, "model_families" in (raw.get("policy") or {}))
    _check_primary_metric(policy, target)

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
        owners=_owners(raw.get("owners") or ()),
        output_rules=_output_rules(raw.get("output_rules") or [], columns, target),
    )
    if not spec.feature_columns:
        raise SpecError("no feature columns left after removing id, event_time, pii and sensitive_attribute")
    return spec


def _parse_target(target_raw: Any) -> TargetSpec:
    """The `target` mapping, checked against its task's rules."""
    if not isinstance(target_raw, dict) or "name" not in target_raw:
        raise SpecError("'target' needs a 'name'")
    unknown = set(target_raw) - {"name", "type", "classes", "positive", "min", "max"}
    if unknown:
        raise SpecError(f"target: unknown keys {sorted(unknown)}")
    task = str(target_raw.get("type", "binary"))
    if task not in TASK_TYPES:
        raise SpecError(f"target.type must be one of {list(TASK_TYPES)}, got {task!r}")
    name = str(target_raw["name"])
    if task == "regression":
        for key in ("classes", "positive"):
            if key in target_raw:
                raise SpecError(f"target.{key} does not apply to a regression target (a number); remove it")
        low, high = _number_or_none(target_raw.get("min"), "target.min"), _number_or_none(target_raw.get("max"), "target.max")
        if low is not None and high is not None and not low < high:
            raise SpecError(f"target.min ({low}) must be below target.max ({high})")
        return TargetSpec(name=name, type=task, min=low, max=high)
    for key in ("min", "max"):
        if key in target_raw:
            raise SpecError(f"target.{key} applies to regression targets only; remove it or set type: regression")
    classes = tuple(target_raw.get("classes") or ())
    if len(set(map(str, classes))) != len(classes):
        raise SpecError(f"target.classes lists a class twice: {list(classes)}")
    if task == "binary":
        if len(classes) != 2:
            more = "; for three or more classes set target.type: multiclass" if len(classes) > 2 else ""
            raise SpecError(f"target.classes must list exactly two classes (binary), got {list(classes)}{more}")
        positive = target_raw.get("positive", classes[-1])
        if positive not in classes:
            raise SpecError(f"target.positive {positive!r} is not one of target.classes {list(classes)}")
        return TargetSpec(name=name, type=task, classes=classes, positive=positive)
    if len(classes) < 3:
        raise SpecError(f"a multiclass target needs three or more target.classes, got {list(classes)}"
                        + ("; for two classes set target.type: binary" if len(classes) == 2 else ""))
    if "positive" in target_raw:
        raise SpecError("target.positive applies to binary targets only: a multiclass model scores every class")
    return TargetSpec(name=name, type=task, classes=classes)


def _task_families(policy: Policy, target: TargetSpec, stated: bool) -> Policy:
    """The policy with its task's model families when the spec states none; stated ones must fit the task."""
    allowed = TASK_FAMILIES[target.type]
    if not stated:
        return replace(policy, model_families=allowed)
    wrong = [f for f in policy.model_families if f not in allowed]
    if wrong:
        raise SpecError(f"policy.model_families: {wrong} cannot train a {target.type} target; use some of {list(allowed)}")
    return policy


def _check_primary_metric(policy: Policy, target: TargetSpec) -> None:
    """`policy.performance.primary_metric` must be one the task's gate can compare."""
    problem = primary_metric_problem(policy.performance.primary_metric, target.type)
    if problem:
        raise SpecError(problem)


def _number_or_none(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise SpecError(f"{key} must be a number, got {value!r}")
    return float(value)


def _output_rules(raw: Any, columns: tuple[ColumnSpec, ...], target: TargetSpec) -> tuple[OutputRule, ...]:
    """`output_rules`: a list of rules, each checked against the columns and the task (errors name the rule)."""
    if not isinstance(raw, list):
        raise SpecError("output_rules must be a list of rules, each a mapping with a name and a kind")
    rules: list[OutputRule] = []
    for i, body in enumerate(raw):
        try:
            rules.append(OutputRule(**rule_fields(body, {c.name: c.type for c in columns}, target.type, target.classes)))
        except ValueError as exc:
            raise SpecError(f"output_rules[{i}]: {exc}") from None
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise SpecError(f"output_rules: each rule needs its own name, got {names}")
    return tuple(rules)


def _owners(raw: Any) -> tuple[str, ...]:
    """Owners as Dagster takes them: an e-mail address or `team:<name>` each."""
    values = [raw] if isinstance(raw, str) else list(raw)
    for owner in values:
        if not isinstance(owner, str) or not (_EMAIL.fullmatch(owner) or _TEAM.fullmatch(owner)):
            raise SpecError(f"owners: {owner!r} is neither an e-mail address nor `team:<name>` "
                            "(e.g. ml-platform@example.com or team:credit-risk)")
    return tuple(values)


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
