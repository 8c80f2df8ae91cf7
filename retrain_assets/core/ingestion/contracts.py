"""Data contracts built from the dataset spec (pandera), and the split of a batch into
rows that honour the contract and rows to quarantine, each with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa

from retrain_assets.core.ingestion.rules import BOOL_TEXT, INT_RANGE_CHECK, INT_RANGE_FLOAT, INT_RANGE_TEXT, ColumnRule, column_rules
from retrain_assets.core.spec import DatasetSpec

PANDAS_DTYPES = {
    "float": "float64",
    # Validated as float so that "42.0" in a CSV is accepted; the `integral` check rejects 42.5,
    # and valid rows are cast to nullable Int64 afterwards.
    "int": "float64",
    "bool": "boolean",
    "category": str,
    "string": str,
    "timestamp": "datetime64[ns]",
}


# Event times up to this far past ingestion are clock skew, not the future.
FUTURE_TOLERANCE = pd.Timedelta(days=1)
# A time of day followed by a UTC offset or Z: such text is converted to UTC, so a reason quotes
# both the UTC time and the value as delivered.
ZONED_TIME = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*([zZ]|[+-]\d{2}(:?\d{2})?)$")

def _parse_bool_text(series: pd.Series) -> pd.Series:
    """CSV gives booleans as text; map the usual spellings, leave anything else for coercion to reject."""
    if series.dtype == object:
        return series.map(lambda v: BOOL_TEXT.get(v.strip().lower(), v) if isinstance(v, str) else v)
    return series


def _type_checks(column_type: str, bounded: bool = False) -> list[pa.Check]:
    """Numbers finite; ints whole and storable as Int64 (unless `bounded`: the declared range
    already keeps them inside, and says so itself)."""
    checks: list[pa.Check] = []
    if column_type in ("float", "int"):
        checks.append(pa.Check(lambda s: ~s.isin([np.inf, -np.inf]), element_wise=False, name="finite", ignore_na=True))
    if column_type == "int":
        checks.append(pa.Check(lambda s: s.isna() | (s == s.round()), name="integral", ignore_na=False))
        if not bounded:
            low, end = INT_RANGE_FLOAT  # infinity is left to `finite`
            checks.append(pa.Check(lambda s: s.isna() | np.isinf(s) | ((s >= low) & (s < end)), name=INT_RANGE_CHECK,
                                   error=INT_RANGE_TEXT, ignore_na=False))
    return checks


def _column_checks(col: ColumnRule) -> list[pa.Check]:
    checks = _type_checks(col.type, col.bounded)
    if col.min is not None and col.max is not None:
        checks.append(pa.Check.in_range(col.min, col.max))
    elif col.min is not None:
        checks.append(pa.Check.ge(col.min))
    elif col.max is not None:
        checks.append(pa.Check.le(col.max))
    if col.categories:
        checks.append(pa.Check.isin(list(col.categories)))
    return checks


def batch_schema(spec: DatasetSpec) -> pa.DataFrameSchema:
    """The raw-batch contract: declared columns, types (coerced), ranges, categories, unique id.

    Undeclared extra columns are dropped (`strict="filter"`); the target is not part of a batch.
    """
    columns = {
        rule.name: pa.Column(
            PANDAS_DTYPES[rule.type],
            checks=_column_checks(rule),
            nullable=rule.nullable,
            unique=rule.name == spec.id_column,
            coerce=True,
            parsers=[pa.Parser(_parse_bool_text)] if rule.type == "bool" else None,
            description=rule.description or None,
        )
        for rule in column_rules(spec)
    }
    return pa.DataFrameSchema(columns, strict="filter", name=f"{spec.name}_batch", report_duplicates="all")


def label_schema(spec: DatasetSpec) -> pa.DataFrameSchema:
    """The label-file contract: the row id and a target value from the declared classes."""
    id_col = spec.column(spec.id_column)
    return pa.DataFrameSchema(
        {
            spec.id_column: pa.Column(PANDAS_DTYPES[id_col.type], checks=_type_checks(id_col.type), nullable=False, coerce=True),
            spec.target.name: pa.Column(
                _class_dtype(spec.target.classes),
                checks=[pa.Check.isin(list(spec.target.classes))],
                nullable=False,
                coerce=True,
            ),
        },
        strict="filter",
        name=f"{spec.name}_labels",
    )


@dataclass
class ContractResult:
    """Outcome of validating one batch.

    `valid` holds the coerced rows that passed; `quarantined` holds the rejected rows exactly as
    they arrived plus a `reason` column; `schema_errors` lists batch-level breaks (e.g. a
    missing column), which send every row to quarantine.
    """

    valid: pd.DataFrame
    quarantined: pd.DataFrame
    schema_errors: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return len(self.valid) + len(self.quarantined)

    @property
    def bad_row_share(self) -> float:
        return len(self.quarantined) / self.n_rows if self.n_rows else 0.0


def validate_rows(df: pd.DataFrame, schema: pa.DataFrameSchema) -> ContractResult:
    """Validate lazily and split `df` into passing rows and quarantined rows with reasons.

    Rows whose values cannot be coerced to the declared type are set aside first and the rest is
    validated again, so that value checks (ranges, categories) always run on typed values.
    """
    return _validate(df.reset_index(drop=True), schema)


def _validate(df: pd.DataFrame, schema: pa.DataFrameSchema) -> ContractResult:
    try:
        return ContractResult(valid=schema.validate(df, lazy=True), quarantined=_empty_quarantine(df))
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    schema_level = cases[cases["index"].isna()]
    row_level = cases[cases["index"].notna()]
    columns_with_row_failures = set(row_level["column"].dropna())
    schema_errors = [
        _describe_schema_failure(row)
        for row in schema_level.itertuples()
        # a column-wide dtype failure is the echo of row-level coercion failures, not a separate break
        if row.check == "column_in_dataframe" or row.column not in columns_with_row_failures
    ]
    if schema_errors:
        quarantined = df.assign(reason="; ".join(f"schema: {e}" for e in schema_errors))
        return ContractResult(valid=df.iloc[0:0], quarantined=quarantined, schema_errors=schema_errors)

    reasons = (
        row_level.assign(index=row_level["index"].astype(int))
        .assign(reason=lambda f: f["column"].fillna("row").astype(str) + ": " + f["check"].astype(str)
                + " (got " + f["failure_case"].astype(str) + ")")
        .groupby("index")["reason"]
        .agg(lambda r: "; ".join(sorted(set(r))))
    )
    uncoercible = set(row_level.loc[row_level["check"].astype(str).str.startswith("coerce_dtype"), "index"].astype(int))
    if uncoercible and len(uncoercible) < len(df):
        rest = _validate(df.drop(index=sorted(uncoercible)), schema)
        first = df.loc[sorted(uncoercible)].assign(reason=reasons.reindex(sorted(uncoercible)).to_numpy())
        return ContractResult(valid=rest.valid, quarantined=pd.concat([first, rest.quarantined]).sort_index(),
                              schema_errors=rest.schema_errors)
    bad = df.index.isin(reasons.index)
    quarantined = df[bad].assign(reason=reasons.reindex(df.index[bad]).to_numpy())
    kept = df[~bad]
    return ContractResult(valid=schema.validate(kept, lazy=True), quarantined=quarantined)


def validate_batch(df: pd.DataFrame, spec: DatasetSpec, window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
                   now: pd.Timestamp | None = None) -> ContractResult:
    """Apply the batch contract, then require event times inside the partition `window` [start, end)
    and no later than `now` (naive UTC) + FUTURE_TOLERANCE."""
    result = validate_rows(df, batch_schema(spec))
    if result.schema_errors:
        result.valid = empty_batch(spec)
    for col in spec.columns:
        if col.type == "int" and col.name in result.valid:
            result.valid[col.name] = result.valid[col.name].astype("Int64")
    if result.valid.empty:
        return result
    ts, name = result.valid[spec.event_time_column], spec.event_time_column
    delivered = df[name].reset_index(drop=True).reindex(result.valid.index)
    zoned = delivered.map(lambda v: isinstance(v, str) and ZONED_TIME.search(v.strip()) is not None).astype(bool)
    got = " (got " + ts.astype(str) + ")"
    if zoned.any():
        got[zoned] = " (got " + ts[zoned].astype(str) + " UTC, delivered as " + delivered[zoned].astype(str) + ")"
    reasons = pd.Series("", index=result.valid.index, dtype=object)
    if now is not None:
        future = ts > now + FUTURE_TOLERANCE
        reasons[future] = (f"{name}: in the future, more than {FUTURE_TOLERANCE.days} day after ingestion at "
                           f"{now:%Y-%m-%d %H:%M} UTC — check the export's clock and time zone") + got[future]
    if window is not None:
        outside = (ts < window[0]) | (ts >= window[1])
        text = f"{name}: outside partition [{window[0]}, {window[1]}) — deliver the row in the file of its own partition"
        reasons[outside] = reasons[outside].map(lambda r: f"{r}; " if r else "") + text + got[outside]
    return set_aside(result, df, reasons)


def set_aside(result: ContractResult, original: pd.DataFrame, reasons: pd.Series) -> ContractResult:
    """Move the valid rows with a non-empty `reasons` entry (aligned with `result.valid`) to
    quarantine, reported with the values they arrived with in `original`."""
    reasons = reasons.reindex(result.valid.index).fillna("")
    bad = (reasons != "").to_numpy()
    if not bad.any():
        return result
    moved = original.reset_index(drop=True).loc[result.valid.index[bad]].assign(reason=reasons[bad].to_numpy())
    return ContractResult(valid=result.valid[~bad], quarantined=pd.concat([result.quarantined, moved]),
                          schema_errors=result.schema_errors)


def repeated_id_reasons(ids: pd.Series, first_seen: Mapping, id_column: str, changed: bool = False) -> pd.Series:
    """Per row, "" or why its id repeats one already ingested (`changed`: with other values);
    `first_seen` maps id -> where."""
    where = ids.map(first_seen)
    text = (f"{id_column}: id already ingested{' with other values' if changed else ''} — drop the repeated row, or "
            "give it an id of its own if it is another record (got ")
    return (text + ids.astype(str) + ", first ingested from " + where.astype(str) + ")").where(where.notna(), "")


def row_fingerprints(frame: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
    """Per row, a 64-bit hash of its declared columns' values, equal for equal values however they
    are typed (as the contract types them, or as the warehouse returns them): numbers as float64,
    booleans and text as text, times as datetime64[ns], every kind of null alike."""
    canonical = {}
    for col in spec.columns:
        values = frame[col.name]
        if col.type in ("float", "int"):
            canonical[col.name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif col.type == "timestamp":
            canonical[col.name] = pd.to_datetime(values).astype("datetime64[ns]")
        else:
            canonical[col.name] = values.map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    return pd.util.hash_pandas_object(pd.DataFrame(canonical, index=frame.index), index=False)


def set_aside_repeats(result: ContractResult, original: pd.DataFrame, fingerprints: pd.Series, seen: Mapping,
                      id_column: str) -> tuple[ContractResult, int]:
    """Split off the valid rows whose id was already ingested; `seen` maps id -> (where, fingerprint
    of the ingested row), `fingerprints` (from `row_fingerprints`) is aligned with `result.valid`.

    A row equal to the ingested one is an idempotent redelivery (the same export again, say with
    other line endings): dropped, neither stored twice nor quarantined, and counted (the returned
    int). A row with the same id and other values is a conflict: quarantined, naming where the id
    was first ingested."""
    ids = result.valid[id_column]
    found = [seen.get(key) for key in ids]
    same = pd.Series([f is not None and f[1] == p for f, p in zip(found, fingerprints.reindex(ids.index))], index=ids.index,
                     dtype=bool)
    conflicts = {key: f[0] for key, f, s in zip(ids, found, same) if f is not None and not s}
    result = set_aside(result, original, repeated_id_reasons(ids, conflicts, id_column, changed=True))
    kept = ~same.reindex(result.valid.index).to_numpy()
    return ContractResult(result.valid[kept], result.quarantined, result.schema_errors), int(same.sum())


def undeclared_columns(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """Columns of a delivered batch the spec does not declare (the contract drops them)."""
    return [str(c) for c in frame.columns if c not in spec.column_names]


def _class_dtype(classes: tuple) -> object:
    """Label files are read as text; coerce labels to the type the classes are declared with.

    Integer classes are coerced to float (an unparsable label fails alone, and "1.0" is accepted);
    `validate_labels` casts them back to Int64."""
    if all(isinstance(c, bool) for c in classes):
        return "boolean"
    if all(isinstance(c, int) for c in classes):
        return "float64"
    return str


def _empty_quarantine(df: pd.DataFrame) -> pd.DataFrame:
    return df.iloc[0:0].assign(reason=pd.Series(dtype=str))


def _describe_schema_failure(row) -> str:
    if row.check == "column_in_dataframe":
        return f"required column '{row.failure_case}' is missing"
    return f"column '{row.column}' fails {row.check} (got {row.failure_case})"


def empty_batch(spec: DatasetSpec) -> pd.DataFrame:
    """A zero-row frame with the contract's columns and dtypes (what a blocked batch stores)."""
    dtypes = {**PANDAS_DTYPES, "int": "Int64", "category": "object", "string": "object"}
    return pd.DataFrame({c.name: pd.Series(dtype=dtypes[c.type]) for c in spec.columns})


def validate_labels(df: pd.DataFrame, spec: DatasetSpec) -> ContractResult:
    """Apply the label contract; ids are cast like the batch ids so that the two join."""
    result = validate_rows(df, label_schema(spec))
    casts = {spec.target.name: "Int64"} if _class_dtype(spec.target.classes) == "float64" else {}
    if spec.column(spec.id_column).type == "int":
        casts[spec.id_column] = "Int64"
    for column, dtype in casts.items():
        if column in result.valid:
            result.valid[column] = result.valid[column].astype(dtype)
    return result


def quarantine_records(rejected: pd.DataFrame, source_file: str) -> pd.DataFrame:
    """Rejected rows in storable form: the original row as JSON (nothing lost) and the reason."""
    rows = rejected.drop(columns=["reason"])
    return pd.DataFrame(
        {
            "source_file": source_file,
            "row_number": rejected.index.to_numpy(dtype="int64") + 1,
            "reason": rejected["reason"].astype(str).to_numpy(),
            "row_json": [row.to_json(date_format="iso", default_handler=str) for _, row in rows.iterrows()],
        }
    )
