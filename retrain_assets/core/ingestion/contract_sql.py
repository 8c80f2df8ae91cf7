"""The batch contract's rules as DuckDB SQL over the source view: how each declared column is cast
from its stored type, and each pandera check of `contracts.batch_schema` as a predicate and the
text of its reason. `large_batch.validate_large_batch` runs them."""

from __future__ import annotations

from dataclasses import dataclass

from retrain_assets.core.ingestion.contracts import batch_schema
from retrain_assets.core.ingestion.rules import BOOL_TEXT, INT_RANGE_CHECK, INT_RANGE_FLOAT
from retrain_assets.core.spec import ColumnSpec, DatasetSpec
from retrain_assets.core.sql_text import ident, lit

SQL_TYPES = {"float": "DOUBLE", "int": "DOUBLE", "bool": "BOOLEAN", "category": "VARCHAR", "string": "VARCHAR",
             "timestamp": "TIMESTAMP"}
OUTPUT_TYPES = {**SQL_TYPES, "int": "BIGINT"}
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "UHUGEINT", "FLOAT", "DOUBLE")
_TIMES = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE", "TIMESTAMP WITH TIME ZONE")


def typed_value(name: str) -> str:
    """The SQL column holding column `name`'s cast value (null where absent or uncastable)."""
    return ident("__v_" + name)


def cast_failed(name: str) -> str:
    """The SQL boolean column telling that column `name`'s present value failed to cast."""
    return ident("__b_" + name)


@dataclass(frozen=True)
class DeclaredColumn:
    """One declared column as SQL over the source view: the typed value, whether a present value
    failed to cast, and the texts the reasons quote."""

    spec: ColumnSpec
    raw: str  # quoted source column
    typed: str
    bad_cast: str  # SQL boolean; 'false' when the stored type always casts
    raw_text: str
    value_text: str
    null_text: str
    dtype: str  # pandera's name of the coerced dtype


def declared_column(col: ColumnSpec, stored: str, dtype: str, from_parquet: bool) -> DeclaredColumn | None:
    """The SQL of one declared column stored as `stored`, or None when it cannot be cast at all."""
    raw = ident(col.name)
    base = stored.split("(")[0]
    numeric = base in _NUMERIC or base == "DECIMAL"
    text = base == "VARCHAR"
    null_text = "'None'" if from_parquet and text and col.type in ("category", "string") else "'nan'"
    if col.type in ("float", "int"):
        if numeric or base == "BOOLEAN":
            value, bad = f"CAST({raw} AS DOUBLE)", "false"
        elif text:
            value, bad = f"TRY_CAST({raw} AS DOUBLE)", f"({raw} IS NOT NULL AND TRY_CAST({raw} AS DOUBLE) IS NULL)"
        else:
            return None
        typed = f"CASE WHEN isnan({value}) THEN NULL ELSE {value} END"
        return DeclaredColumn(col, raw, typed, bad, raw if text else f"pyfloat({raw})", f"pyfloat({typed})", null_text, dtype)
    if col.type == "bool":
        if base == "BOOLEAN":
            typed, bad, raw_text = raw, "false", raw
        elif text:
            cases = " ".join(f"WHEN {lit(k)} THEN {str(v).upper()}" for k, v in BOOL_TEXT.items())
            typed = f"CASE lower(trim({raw})) {cases} END"
            bad, raw_text = f"({raw} IS NOT NULL AND {typed} IS NULL)", raw
        elif numeric:
            x = f"CAST({raw} AS DOUBLE)"
            typed = f"CASE WHEN {x} = 1 THEN true WHEN {x} = 0 THEN false END"
            bad, raw_text = f"({raw} IS NOT NULL AND NOT isnan({x}) AND {typed} IS NULL)", f"pyfloat({x})"
        else:
            return None
        return DeclaredColumn(col, raw, typed, bad, raw_text, f"CASE WHEN {typed} THEN 'True' ELSE 'False' END", null_text, dtype)
    if col.type in ("category", "string"):
        if text:
            typed = raw
        elif base in ("FLOAT", "DOUBLE"):
            typed = f"CASE WHEN isnan({raw}) THEN NULL ELSE pyfloat({raw}) END"
        elif base == "BOOLEAN":
            typed = f"CASE WHEN {raw} THEN 'True' WHEN NOT {raw} THEN 'False' END"
        else:
            typed = f"CAST({raw} AS VARCHAR)"
        return DeclaredColumn(col, raw, typed, "false", typed, typed, null_text, dtype)
    if base in _TIMES:
        return DeclaredColumn(col, raw, f"CAST({raw} AS TIMESTAMP)", "false", f"CAST({raw} AS VARCHAR)", "'?'", null_text, dtype)
    if text:
        typed = f"CAST(TRY_CAST({raw} AS TIMESTAMPTZ) AS TIMESTAMP)"
        return DeclaredColumn(col, raw, typed, f"({raw} IS NOT NULL AND {typed} IS NULL)", raw, "'?'", null_text, dtype)
    return None


def contract_rules(columns: list[DeclaredColumn], spec: DatasetSpec, failing: set[str]) -> list[tuple[str, str, str]]:
    """(rule key, SQL predicate, SQL reason pieces) per rule, in the order of the pandera schema.

    A row whose value in some column cannot be cast ("uncastable", `__unc`) is judged as pandera's
    first pass judges it: the checks of columns with cast failures do not run, and duplicates
    count every row; the other rows as its second pass, among the castable rows only."""
    checks = batch_schema(spec).columns
    rules = []
    for c in columns:
        name, v = c.spec.name, typed_value(c.spec.name)
        gate = " AND NOT __unc" if name in failing else ""

        def piece(text: str, got: str) -> str:
            return f"{lit(f'{name}: {text} (got ')} || {got} || ')'"

        if c.bad_cast != "false":
            b = cast_failed(name)
            both = f"CASE WHEN {b} THEN [{piece(f'coerce_dtype({c.dtype!r})', c.raw_text)}, " \
                   f"{piece(f'dtype({c.dtype!r})', c.raw_text)}] END"
            rules.append((f"{name}: coerce_dtype({c.dtype!r})", b, both))
        if not c.spec.nullable or name in (spec.id_column, spec.event_time_column):
            pred = f"({v} IS NULL AND NOT coalesce({cast_failed(name)}, false){gate})"
            rules.append((f"{name}: not_nullable", pred, f"CASE WHEN {pred} THEN [{piece('not_nullable', c.null_text)}] END"))
        for check in checks[name].checks:
            pred = check_predicate(check.name, c.spec, v)
            if pred is None:
                raise ValueError(f"column '{name}': check {check.name!r} has no SQL form in core.ingestion.contract_sql")
            pred = f"(coalesce({pred}, false){gate})"
            text = check.error or check.name
            rules.append((f"{name}: {text}", pred, f"CASE WHEN {pred} THEN [{piece(text, c.value_text)}] END"))
        if name == spec.id_column:
            if name in failing:  # pandera's first pass skips the checks of a column with cast failures
                pred = "(NOT __unc AND __n_ok > 1)"
            else:
                pred = "(CASE WHEN __unc THEN __n_all > 1 ELSE __n_ok > 1 END)"
            rules.append((f"{name}: field_uniqueness", pred, f"CASE WHEN {pred} THEN [{piece('field_uniqueness', c.value_text)}] END"))
    return rules


def check_predicate(check: str, col: ColumnSpec, v: str) -> str | None:
    """The SQL predicate true where value `v` breaks pandera check `check` of `col`; None when it has no SQL form."""
    if check == "finite":
        return f"isinf({v})"
    if check == "integral":
        return f"(NOT isinf({v}) AND {v} <> trunc({v}))"
    if check == INT_RANGE_CHECK:
        low, end = INT_RANGE_FLOAT
        return f"(NOT isinf({v}) AND ({v} < {low!r} OR {v} >= {end!r}))"
    if check == "in_range":
        return f"({v} < {col.min!r} OR {v} > {col.max!r})"
    if check == "greater_than_or_equal_to":
        return f"{v} < {col.min!r}"
    if check == "less_than_or_equal_to":
        return f"{v} > {col.max!r}"
    if check == "isin":
        return f"{v} NOT IN ({', '.join(lit(c) for c in col.categories or ())})"
    return None
