"""The catalog's vocabulary: the DuckDB types, the storage kinds, `ColumnDoc` / `TableDoc` / `Join`, and the
columns many tables share (the spec's batch columns, the partition key, the row id, the run ids).

Types are the ones DuckDB reports in `information_schema.columns`: they follow from the pandas dtypes the assets
write (a pandas `datetime64[ns]` column becomes TIMESTAMP_NS, `datetime64[us]` TIMESTAMP; both hold naive UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

from retrain_assets.core.spec import ColumnSpec, DatasetSpec
from retrain_assets.core.tasks import label_dtype

VARCHAR, DOUBLE, BIGINT, BOOLEAN = "VARCHAR", "DOUBLE", "BIGINT", "BOOLEAN"
TIMESTAMP, TIMESTAMP_NS = "TIMESTAMP", "TIMESTAMP_NS"
PARTITION = "partition_start"

# Spec column type -> DuckDB type of the column in the batch tables (the contract's pandas dtypes:
# float64, nullable Int64, nullable boolean, text, datetime64[ns]).
BATCH_TYPES = {"float": DOUBLE, "int": BIGINT, "bool": BOOLEAN, "category": VARCHAR, "string": VARCHAR,
               "timestamp": TIMESTAMP_NS}
# ... and in the prediction log, where every logged number is a float64 (`core.deployment.serving.typed_log`).
LOG_TYPES = {**BATCH_TYPES, "int": DOUBLE}

PARTITIONED = "partitioned"  # one slice per partition (`partition_start`), replaced when the partition re-runs
HISTORY = "history"  # rewritten whole on each run: every earlier row, plus the run's new ones
REPLACED = "replaced"  # rewritten whole on each run with the current content only


@dataclass(frozen=True)
class ColumnDoc:
    """One column: its name, DuckDB type and meaning."""

    name: str
    type: str
    description: str


@dataclass(frozen=True)
class TableDoc:
    """One warehouse table: what a row is, who writes it, how it is stored, and its columns."""

    name: str
    stage: str  # the pipeline stage that writes it (the asset's `stage` tag in Dagster)
    written_by: str  # the asset (or multi-asset step) that writes it
    row: str  # what one row is
    description: str
    storage: str  # PARTITIONED, HISTORY or REPLACED
    columns: tuple[ColumnDoc, ...]
    spec_columns: tuple[str, ...] = ()  # columns that come from the dataset spec

    @property
    def grain(self) -> str:
        """How the table is written, in words."""
        if self.storage == PARTITIONED:
            return f"partitioned by `{PARTITION}`: a run of a partition replaces that partition's rows, in one transaction"
        if self.storage == HISTORY:
            return "history: every run rewrites the table with all earlier rows kept, plus its new rows"
        return "replaced: every run rewrites the table with the current content only"


@dataclass(frozen=True)
class Join:
    """How two tables relate: `left` and `right` are `table.column` (or an expression)."""

    left: str
    right: str
    meaning: str


# -- spec-derived and shared columns -----------------------------------------------------------


def batch_columns(spec: DatasetSpec, types: dict[str, str] = BATCH_TYPES, skip: tuple[str, ...] = ()) -> list[ColumnDoc]:
    """The spec's columns, in spec order, as the batch tables store them (PII as pseudonyms)."""
    pii = set(spec.pii_columns)
    return [ColumnDoc(c.name, VARCHAR if c.name in pii else types[c.type], spec_column_description(c, spec))
            for c in spec.columns if c.name not in skip]


def spec_column_description(col: ColumnSpec, spec: DatasetSpec) -> str:
    """What a spec column is: its role in the pipeline, its declared description and its contract."""
    roles = []
    if col.name == spec.id_column:
        roles.append("Row id (unique: a row enters the warehouse once).")
    elif col.name == spec.event_time_column:
        roles.append("Event time of the row (naive UTC); it lies inside the row's partition.")
    elif col.name in spec.pii_columns:
        roles.append("PII: stored as a pseudonym, `pii_` + 32 hex characters (a keyed hash: equal values get equal "
                     "pseudonyms); the clear value never leaves the landing zone. Not a model input.")
    elif col.name == spec.sensitive_attribute:
        roles.append("Sensitive attribute: not a model input; the evaluation measures fairness gaps across it.")
    else:
        kind = ("numeric" if col.name in spec.numeric_features else "categorical" if col.name in spec.categorical_features
                else col.type)
        roles.append(f"Model input ({kind} feature).")
    if col.name in spec.segment_columns:
        roles.append("Segment: the evaluation reports metrics per value.")
    declared = col.description.strip()
    if declared:
        roles.insert(0, declared.rstrip(".") + ".")
    return " ".join(roles + [_contract(col)]).strip()


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _contract(col: ColumnSpec) -> str:
    parts = []
    if col.categories:
        parts.append("one of " + ", ".join(col.categories))
    if col.min is not None and col.max is not None:
        parts.append(f"from {_number(col.min)} to {_number(col.max)}")
    elif col.min is not None:
        parts.append(f"at least {_number(col.min)}")
    elif col.max is not None:
        parts.append(f"at most {_number(col.max)}")
    parts.append("may be null" if col.nullable else "never null")
    return f"Declared `{col.type}`: " + "; ".join(parts) + "."


def label_id_type(spec: DatasetSpec) -> str:
    """Type of the id in the label tables: integer ids stay integers, any other id is text."""
    return BIGINT if spec.column(spec.id_column).type == "int" else VARCHAR


def target_type(spec: DatasetSpec) -> str:
    """Type of the resolved label (`core.tasks.label_dtype`): a number for regression, else typed like
    the declared classes."""
    return {bool: BOOLEAN, "int64": BIGINT, "float64": DOUBLE}.get(label_dtype(spec.target), VARCHAR)


def partition_column(what: str = "batch") -> ColumnDoc:
    """The partition key column, `what` naming the thing partitioned (a batch, a request, ...)."""
    return ColumnDoc(PARTITION, TIMESTAMP, f"Start of the {what}'s partition (naive UTC midnight of its day, week or "
                                           "month); the warehouse partition key.")


def row_id_column(spec: DatasetSpec, type_: str, what: str) -> ColumnDoc:
    """The spec's row id column, typed `type_`, with `what` the row is about."""
    return ColumnDoc(spec.id_column, type_, f"Row id ({spec.id_column}) {what}.")


SOURCE_FILE = ColumnDoc("source_file", VARCHAR, "Name of the landing-zone file the row came from.")
RUN_ID = ColumnDoc("dagster_run_id", VARCHAR, "Dagster run that wrote the row (open it in the Dagster UI).")
MLFLOW_RUN_ID = ColumnDoc("mlflow_run_id", VARCHAR, "MLflow run of the model's training (its parameters, metrics, "
                                                    "artifacts and evaluation report).")
VERSION_NOTE = "an MLflow registered-model version, as text: \"1\", \"2\", ..."
