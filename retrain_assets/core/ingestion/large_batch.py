"""The batch contract and the drift statistics of a batch too large for pandas, computed by DuckDB
over Parquet (or CSV) with a bounded memory budget.

`validate_large_batch` applies the same rules as `contracts.validate_batch`, with the same
row-level reasons, and writes the valid rows and the quarantined rows (as they arrived, plus
`reason` and the 1-based `row_number`) to two Parquet files via COPY. `large_batch_drift` reads the
valid file back: category counts and out-of-distribution rows are aggregated in SQL, and each
numeric feature is fetched one column at a time as a numpy array and run through `drift.py`'s
own per-feature code; the verdicts then come from `drift.py`'s `drift_table`.

Mirrored exactly (tested against the pandas path): missing columns (blocking schema errors), CSV
text in `contracts.MISSING_TEXT` read as null, text that cannot be cast (coerce_dtype + dtype
reasons; the checks of a column with cast failures are skipped for the uncastable rows, whose
duplicates are judged among all rows, as pandera's first pass does), not_nullable (id and event
time never null), finite, integral, whole numbers within 64 bits (`contracts.INT_RANGE`), in_range
/ >= / <=, isin, duplicate ids within the batch (every copy, nulls are not duplicates), event time
in the future / outside the partition (only for rows that passed the contract, with pandas'
timestamp text; text with a UTC offset is converted to UTC and quoted as delivered too), the
refusal of a compressed file or a header naming a column twice (the landing zone's
LandingFileError), the float text of values (Python `str(float)`), and every drift statistic: PSI
and Jensen-Shannon from the exact bin and category counts, chi-square, KS (the exact statistic,
scipy's asymptotic p-value), Wasserstein-1, missing and out-of-distribution shares (the numeric
statistics by `feature_drift`'s own code on the same values, so the same floats).

Not mirrored exactly (by design or because pandas' behaviour depends on the data):
- text is cast by DuckDB's rules: timestamps must be ISO 8601 (pandas infers one format from the
  data, and blocks a batch that mixes formats); numbers follow DuckDB's parser (" 42 ", "1e1",
  "inf", "nan" agree with Python's float()); bool text accepts the spellings of
  `contracts.BOOL_TEXT`.
- a column whose stored type cannot be cast at all (e.g. a timestamp where a number is declared)
  is a blocking schema error here, with its own message.
- timestamps are held to the microsecond (DuckDB's TIMESTAMP); a non-text value in a string
  column is written as DuckDB writes it (booleans as True/False, floats as Python does).
- the text for a null is "None" for a string/category column read from a Parquet VARCHAR column
  and "nan" otherwise, which is what pandera prints for frames read by `read_landing_file`.
- valid rows keep the source order only as far as DuckDB preserves insertion order.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from retrain_assets.core.ingestion.contracts import (
    BOOL_TEXT,
    FUTURE_TOLERANCE,
    INT_RANGE_CHECK,
    INT_RANGE_FLOAT,
    MISSING_TEXT,
    ZONED_TIME,
    batch_schema,
)
from retrain_assets.core.monitoring.drift import (
    DriftThresholds,
    ReferenceProfile,
    categorical_drift_row,
    dataset_drift,
    drift_table,
    numeric_feature_drift,
)
from retrain_assets.core.ingestion.landing import csv_header, refuse_compressed, refuse_repeated_columns
from retrain_assets.core.policy.batches import block_reason
from retrain_assets.core.spec import ColumnSpec, DatasetSpec

SQL_TYPES = {"float": "DOUBLE", "int": "DOUBLE", "bool": "BOOLEAN", "category": "VARCHAR", "string": "VARCHAR",
             "timestamp": "TIMESTAMP"}
OUTPUT_TYPES = {**SQL_TYPES, "int": "BIGINT"}
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "UHUGEINT", "FLOAT", "DOUBLE")
_TIMES = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE", "TIMESTAMP WITH TIME ZONE")
ROW = "__row"  # the source row number (0-based) carried through every phase

Progress = Callable[[str], None]


@dataclass
class BatchContract:
    """What `validate_large_batch` found and wrote.

    `rule_counts` counts the rows breaking each rule (a row may break several); `schema_errors`
    are batch-level breaks, which quarantine every row.
    """

    n_rows: int
    n_valid: int
    n_quarantined: int
    schema_errors: list[str]
    rule_counts: dict[str, int]
    valid_path: Path
    quarantine_path: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def bad_row_share(self) -> float:
        return self.n_quarantined / self.n_rows if self.n_rows else 0.0

    def blocked(self, max_bad_row_share: float) -> bool:
        """Blocked by the policy's rule (`core.policy.batches.block_reason`), as the ingestion check is."""
        return bool(block_reason(self.schema_errors, self.bad_row_share, max_bad_row_share))


def connect(memory_limit: str = "1GB", threads: int = 2, temp_directory: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection held to `memory_limit`; larger intermediates spill to `temp_directory`."""
    con = duckdb.connect(config={"memory_limit": memory_limit, "threads": threads})
    # Text with a UTC offset is converted to UTC, as pandas does; naive text is read as UTC.
    con.execute("SET TimeZone = 'UTC'")
    if temp_directory is not None:
        con.execute(f"SET temp_directory = {_lit(str(temp_directory))}")
    # Only on the rows of failing checks: Python's str(float) (DuckDB's own cast prints 0.1 + 0.2 as 0.3).
    con.execute("CREATE OR REPLACE TEMP MACRO pyfloat(x) AS CASE WHEN regexp_matches(format('{}', x), '[.en]') "
                "THEN format('{}', x) ELSE format('{}', x) || '.0' END")
    return con


# --------------------------------------------------------------------------------------------
# The contract


@dataclass(frozen=True)
class _Column:
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


def validate_large_batch(
    con: duckdb.DuckDBPyConnection,
    path: str | Path,
    spec: DatasetSpec,
    out_dir: str | Path,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    now: pd.Timestamp | None = None,
    progress: Progress | None = None,
) -> BatchContract:
    """Apply the batch contract in SQL; write `<stem>.valid.parquet` and `<stem>.quarantine.parquet`
    to `out_dir` (each atomically). rows in = valid + quarantined, always."""
    say = progress or (lambda _: None)
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = path.name.split(".")[0]
    valid_path, quarantine_path = out_dir / f"{stem}.valid.parquet", out_dir / f"{stem}.quarantine.parquet"
    from_parquet = path.suffix.lower() == ".parquet"
    refuse_compressed(path)  # the same refusals as a landing file, with the same messages
    if not from_parquet:
        refuse_repeated_columns(path, csv_header(path))
    staged = None if from_parquet else _stage_csv(con, path, out_dir)
    try:
        return _validate(con, path, staged or path, from_parquet, spec, valid_path, quarantine_path, window, now, say)
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)


def _validate(con, path: Path, parquet: Path, from_parquet: bool, spec: DatasetSpec, valid_path: Path, quarantine_path: Path,
              window, now, say: Progress) -> BatchContract:
    clock, seconds = time.perf_counter(), {}

    def lap(phase: str) -> None:
        nonlocal clock
        seconds[phase] = time.perf_counter() - clock
        clock = time.perf_counter()

    source = f"read_parquet({_lit(str(parquet))}, file_row_number = true)"
    con.execute(f"CREATE OR REPLACE TEMP VIEW src AS SELECT * EXCLUDE (file_row_number), file_row_number AS {ROW} FROM {source}")
    stored = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE src)").fetchall())
    n_rows = int(con.execute("SELECT count(*) FROM src").fetchall()[0][0])
    say(f"read {path.name}: {n_rows:,} rows, {len(stored) - 1} columns")

    schema = batch_schema(spec)
    columns: list[_Column] = []
    schema_errors = [f"required column '{c.name}' is missing" for c in spec.columns if c.name not in stored]
    for col in spec.columns:
        if col.name in stored:
            column = _column(col, stored[col.name], str(schema.columns[col.name].dtype), from_parquet)
            if column is None:
                schema_errors.append(f"column '{col.name}' has type {stored[col.name]}, which cannot be cast to "
                                     f"{SQL_TYPES[col.type]} — export it as {SQL_TYPES[col.type]} or as text")
            else:
                columns.append(column)
    raw_columns = [_ident(c) for c in stored if c != ROW]

    if schema_errors:
        reason = "; ".join(f"schema: {e}" for e in schema_errors)
        empty = ", ".join(f"NULL::{OUTPUT_TYPES[c.type]} AS {_ident(c.name)}" for c in spec.columns)
        n_valid = _copy(con, f"SELECT {empty} WHERE false", valid_path)
        n_bad = _copy(con, f"SELECT {', '.join(raw_columns)}, {_lit(reason)} AS reason, {ROW} + 1 AS row_number "
                           f"FROM src ORDER BY {ROW}", quarantine_path)
        lap("contract")
        say(f"blocked: {'; '.join(schema_errors)}")
        return BatchContract(n_rows, n_valid, n_bad, schema_errors, {f"schema: {e}": n_rows for e in schema_errors},
                             valid_path, quarantine_path, seconds)

    typed = ", ".join(f"{c.typed} AS {_ident('__v_' + c.spec.name)}, {c.bad_cast} AS {_ident('__b_' + c.spec.name)}"
                      for c in columns)
    con.execute(f"CREATE OR REPLACE TEMP VIEW typed AS SELECT src.*, {typed} FROM src")
    castable = [c for c in columns if c.bad_cast != "false"]
    failing: set[str] = set()
    if castable:
        counts = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {_ident('__b_' + c.spec.name)})" for c in castable)
                             + " FROM typed").fetchall()[0]
        failing = {c.spec.name for c, n in zip(castable, counts) if n}
    unc = " OR ".join(_ident("__b_" + n) for n in sorted(failing)) or "false"
    lap("types")

    id_col = next(c for c in columns if c.spec.name == spec.id_column)
    id_v = _ident("__v_" + id_col.spec.name)
    con.execute(f"CREATE OR REPLACE TEMP TABLE dups AS SELECT {id_v} AS __id, count(*) AS __n_all, "
                f"count(*) FILTER (WHERE NOT ({unc})) AS __n_ok FROM typed WHERE {id_v} IS NOT NULL GROUP BY {id_v} "
                "HAVING count(*) > 1")
    con.execute(f"CREATE OR REPLACE TEMP VIEW checked AS SELECT typed.*, ({unc}) AS __unc, coalesce(__n_all, 0) AS __n_all, "
                f"coalesce(__n_ok, 0) AS __n_ok FROM typed LEFT JOIN dups ON {id_v} = dups.__id")
    lap("duplicates")

    rules = _rules(columns, spec, failing)
    keys = [key for key, _, _ in rules]
    any_break = " OR ".join(f"({pred})" for _, pred, _ in rules)
    rule_ids = "list_filter([" + ", ".join(f"CASE WHEN {pred} THEN {i} END" for i, (_, pred, _) in enumerate(rules)) \
               + "], lambda x: x IS NOT NULL)"
    con.execute(f"CREATE OR REPLACE TEMP TABLE bad AS SELECT {ROW}, 0 AS __stage, {rule_ids} AS __rules "
                f"FROM checked WHERE {any_break}")
    say(f"contract checked: {_count(con, 'bad'):,} rows break a rule")
    lap("rules")

    window_text = "NULL"
    if (window is not None or now is not None) and columns:
        text_times = stored[spec.event_time_column] == "VARCHAR"
        window_text = _window_rows(con, spec, window, now, len(keys), text_times)
        keys += [f"{spec.event_time_column}: in the future", f"{spec.event_time_column}: outside partition"]
    lap("event time")

    # each rule gives a list of pieces (a cast failure gives two) or NULL
    contract_text = "array_to_string(list_sort(flatten(list_filter([" + ", ".join(t for _, _, t in rules) \
                    + "], lambda x: x IS NOT NULL))), '; ')"
    outputs = ", ".join(f"CAST({_ident('__v_' + c.spec.name)} AS {OUTPUT_TYPES[c.spec.type]}) AS {_ident(c.spec.name)}"
                        for c in columns)
    n_valid = _copy(con, f"SELECT {outputs} FROM typed ANTI JOIN bad USING ({ROW})", valid_path)
    say(f"wrote {n_valid:,} valid rows to {valid_path}")
    n_bad = _copy(con, f"SELECT {', '.join('checked.' + c for c in raw_columns)}, CASE WHEN __stage = 0 THEN {contract_text} "
                       f"ELSE {window_text} END AS reason, {ROW} + 1 AS row_number FROM checked JOIN bad USING ({ROW}) "
                       f"ORDER BY {ROW}", quarantine_path)
    say(f"wrote {n_bad:,} quarantined rows to {quarantine_path}")
    lap("write")
    if n_valid + n_bad != n_rows:
        raise RuntimeError(f"{path.name}: {n_rows} rows in but {n_valid} valid + {n_bad} quarantined; nothing was dropped "
                           "on purpose — report this as a bug with the file")
    rule_counts = {keys[i]: int(n) for i, n in con.execute(
        "SELECT r, count(*) FROM (SELECT unnest(__rules) AS r FROM bad) GROUP BY r ORDER BY r").fetchall()}
    con.execute("DROP TABLE bad; DROP TABLE dups")
    return BatchContract(n_rows, n_valid, n_bad, [], rule_counts, valid_path, quarantine_path, seconds)


def _stage_csv(con: duckdb.DuckDBPyConnection, path: Path, out_dir: Path) -> Path:
    """A CSV batch staged as all-text Parquet, `MISSING_TEXT` as null: DuckDB's CSV
    reader has no row numbers, and COPY keeps the file's row order."""
    names = [d[0] for d in con.execute(f"DESCRIBE SELECT * FROM read_csv({_lit(str(path))}, all_varchar = true, header = true)").fetchall()]
    na = ", ".join(_lit(t) for t in sorted(MISSING_TEXT))
    cols = ", ".join(f"CASE WHEN {_ident(n)} IN ({na}) THEN NULL ELSE {_ident(n)} END AS {_ident(n)}" for n in names)
    staged = out_dir / f".{path.stem}.staged-{os.getpid()}.parquet"
    con.execute(f"COPY (SELECT {cols} FROM read_csv({_lit(str(path))}, all_varchar = true, header = true)) TO "
                f"{_lit(str(staged))} (FORMAT parquet)")
    return staged


def _column(col: ColumnSpec, stored: str, dtype: str, from_parquet: bool) -> _Column | None:
    """The SQL of one declared column stored as `stored`, or None when it cannot be cast at all."""
    raw = _ident(col.name)
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
        return _Column(col, raw, typed, bad, raw if text else f"pyfloat({raw})", f"pyfloat({typed})", null_text, dtype)
    if col.type == "bool":
        if base == "BOOLEAN":
            typed, bad, raw_text = raw, "false", raw
        elif text:
            cases = " ".join(f"WHEN {_lit(k)} THEN {str(v).upper()}" for k, v in BOOL_TEXT.items())
            typed = f"CASE lower(trim({raw})) {cases} END"
            bad, raw_text = f"({raw} IS NOT NULL AND {typed} IS NULL)", raw
        elif numeric:
            x = f"CAST({raw} AS DOUBLE)"
            typed = f"CASE WHEN {x} = 1 THEN true WHEN {x} = 0 THEN false END"
            bad, raw_text = f"({raw} IS NOT NULL AND NOT isnan({x}) AND {typed} IS NULL)", f"pyfloat({x})"
        else:
            return None
        return _Column(col, raw, typed, bad, raw_text, f"CASE WHEN {typed} THEN 'True' ELSE 'False' END", null_text, dtype)
    if col.type in ("category", "string"):
        if text:
            typed = raw
        elif base in ("FLOAT", "DOUBLE"):
            typed = f"CASE WHEN isnan({raw}) THEN NULL ELSE pyfloat({raw}) END"
        elif base == "BOOLEAN":
            typed = f"CASE WHEN {raw} THEN 'True' WHEN NOT {raw} THEN 'False' END"
        else:
            typed = f"CAST({raw} AS VARCHAR)"
        return _Column(col, raw, typed, "false", typed, typed, null_text, dtype)
    if base in _TIMES:
        return _Column(col, raw, f"CAST({raw} AS TIMESTAMP)", "false", f"CAST({raw} AS VARCHAR)", "'?'", null_text, dtype)
    if text:
        typed = f"CAST(TRY_CAST({raw} AS TIMESTAMPTZ) AS TIMESTAMP)"
        return _Column(col, raw, typed, f"({raw} IS NOT NULL AND {typed} IS NULL)", raw, "'?'", null_text, dtype)
    return None


def _rules(columns: list[_Column], spec: DatasetSpec, failing: set[str]) -> list[tuple[str, str, str]]:
    """(rule key, SQL predicate, SQL reason pieces) per rule, in the order of the pandera schema.

    A row whose value in some column cannot be cast ("uncastable", `__unc`) is judged as pandera's
    first pass judges it: the checks of columns with cast failures do not run, and duplicates
    count every row; the other rows as its second pass, among the castable rows only."""
    checks = batch_schema(spec).columns
    rules = []
    for c in columns:
        name, v = c.spec.name, _ident("__v_" + c.spec.name)
        gate = " AND NOT __unc" if name in failing else ""

        def piece(text: str, got: str) -> str:
            return f"{_lit(f'{name}: {text} (got ')} || {got} || ')'"

        if c.bad_cast != "false":
            b = _ident("__b_" + name)
            both = f"CASE WHEN {b} THEN [{piece(f'coerce_dtype({c.dtype!r})', c.raw_text)}, " \
                   f"{piece(f'dtype({c.dtype!r})', c.raw_text)}] END"
            rules.append((f"{name}: coerce_dtype({c.dtype!r})", b, both))
        if not c.spec.nullable or name in (spec.id_column, spec.event_time_column):
            pred = f"({v} IS NULL AND NOT coalesce({_ident('__b_' + name)}, false){gate})"
            rules.append((f"{name}: not_nullable", pred, f"CASE WHEN {pred} THEN [{piece('not_nullable', c.null_text)}] END"))
        for check in checks[name].checks:
            pred = _check_sql(check.name, c.spec, v)
            if pred is None:
                raise ValueError(f"column '{name}': check {check.name!r} has no SQL form in core.large_batch")
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


def _check_sql(check: str, col: ColumnSpec, v: str) -> str | None:
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
        return f"{v} NOT IN ({', '.join(_lit(c) for c in col.categories or ())})"
    return None


def _window_rows(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, window, now, first_id: int, text_times: bool) -> str:
    """Add the contract-valid rows whose event time is in the future or outside the window to `bad`;
    return the SQL of their reason. The timestamp text is pandas' for the valid rows' series:
    dates only when every time is midnight, else seconds, milliseconds or microseconds as needed;
    text with a UTC offset is quoted too, after the UTC time."""
    ts = _ident("__v_" + spec.event_time_column)
    midnight, seconds, millis = con.execute(
        f"SELECT coalesce(bool_and({ts} = date_trunc('day', {ts})), true), coalesce(bool_and(epoch_us({ts}) % 1000000 = 0), true), "
        f"coalesce(bool_and(epoch_us({ts}) % 1000 = 0), true) FROM typed ANTI JOIN bad USING ({ROW})").fetchall()[0]
    fmt = "%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M:%S" + ("" if seconds else ".%g" if millis else ".%f")
    got = f"' (got ' || strftime({ts}, {_lit(fmt)}) || ')'"
    if text_times:
        raw = _ident(spec.event_time_column)
        zoned = f"regexp_matches(trim({raw}), {_lit(ZONED_TIME.pattern)})"
        got = (f"CASE WHEN {zoned} THEN ' (got ' || strftime({ts}, {_lit(fmt)}) || ' UTC, delivered as ' || {raw} || ')' "
               f"ELSE {got} END")
    name, parts, preds = spec.event_time_column, [], []
    if now is not None:
        future = f"{ts} > {_ts(now + FUTURE_TOLERANCE)}"
        text = (f"{name}: in the future, more than {FUTURE_TOLERANCE.days} day after ingestion at {now:%Y-%m-%d %H:%M} UTC "
                "— check the export's clock and time zone")
        parts.append(f"CASE WHEN {future} THEN {_lit(text)} || {got} END")
        preds.append((future, first_id))
    if window is not None:
        outside = f"({ts} < {_ts(window[0])} OR {ts} >= {_ts(window[1])})"
        text = f"{name}: outside partition [{window[0]}, {window[1]}) — deliver the row in the file of its own partition"
        parts.append(f"CASE WHEN {outside} THEN {_lit(text)} || {got} END")
        preds.append((outside, first_id + 1))
    ids = "list_filter([" + ", ".join(f"CASE WHEN {p} THEN {i} END" for p, i in preds) + "], lambda x: x IS NOT NULL)"
    con.execute(f"INSERT INTO bad SELECT {ROW}, 1, {ids} FROM typed ANTI JOIN bad USING ({ROW}) "
                f"WHERE {' OR '.join(p for p, _ in preds)}")
    return "concat_ws('; ', " + ", ".join(parts) + ")"


# --------------------------------------------------------------------------------------------
# Drift


def large_batch_drift(
    con: duckdb.DuckDBPyConnection,
    valid_path: str | Path,
    profile: ReferenceProfile,
    thresholds: DriftThresholds = DriftThresholds(),
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, dict]:
    """`feature_drift` and `dataset_drift` (plus n_rows and ood_share, as in the drift report) of
    the rows in `valid_path` against `profile`.

    One SQL scan counts the rows and the out-of-distribution rows (a row-wise OR across columns),
    and one grouped count per categorical feature gives its category counts. Each numeric
    feature is fetched, one column at a time, as a float64 array (8 bytes a row, null as NaN) and
    handed to `drift.numeric_feature_drift`, the very code `feature_drift` runs on that column,
    so its row (missing and bin counts, PSI, Jensen-Shannon, KS, Wasserstein) is the same floats.
    Exact Wasserstein needs the batch's order statistics (where its ECDF crosses the reference's
    between two reference values), which SQL only gets by sorting or joining the whole column: at
    10M rows the SQL merge took 6-17 s a column, the fetch and numpy sort under a second, and the
    sorted array also gives the bin counts (as 140 FILTERed counts in SQL they took 20 s)."""
    say = progress or (lambda _: None)
    rel = f"read_parquet({_lit(str(valid_path))})"
    stored = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()}
    absent = [c for c in [*profile.numeric, *profile.categorical] if c not in stored]
    if absent:
        raise KeyError(f"batch lacks profiled columns {absent}")
    ood = []
    for name, prof in profile.numeric.items():
        if prof.n:
            x = f"CAST({_ident(name)} AS DOUBLE)"
            ood.append(f"coalesce({x} < {prof.min!r} OR {x} > {prof.max!r}, false)")
    for name, prof in profile.categorical.items():
        seen = ", ".join(_lit(k) for k in prof.counts) or "NULL"
        ood.append(f"coalesce(CAST({_ident(name)} AS VARCHAR) NOT IN ({seen}), false)")
    n_rows, n_ood = (int(v) for v in con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {' OR '.join(ood) or 'false'}) FROM {rel}").fetchall()[0])
    say(f"drift: counted {n_rows:,} valid rows, {n_ood:,} out of distribution")

    rows = []
    for name, prof in profile.numeric.items():
        column = con.execute(f"SELECT coalesce(CAST({_ident(name)} AS DOUBLE), 'NaN'::DOUBLE) AS x FROM {rel}").fetchnumpy()["x"]
        rows.append(numeric_feature_drift(prof, np.asarray(column, dtype=np.float64), n_rows))
        del column  # one column at a time: peak ~4 x 8 bytes a row with the sort's copies
        say(f"drift: {name} done")
    for name, prof in profile.categorical.items():
        found = con.execute(f"SELECT CAST({_ident(name)} AS VARCHAR), count(*) FROM {rel} WHERE {_ident(name)} IS NOT NULL "
                            "GROUP BY 1").fetchall()
        counts = {str(k): int(n) for k, n in found}
        rows.append(categorical_drift_row(prof, n_rows, counts, n_rows - sum(counts.values())))
    say(f"drift: {len(profile.categorical)} categorical features counted")
    features = drift_table(rows, thresholds)
    summary = {"n_rows": n_rows, **dataset_drift(features, thresholds), "ood_share": n_ood / n_rows if n_rows else math.nan}
    return features, summary


# --------------------------------------------------------------------------------------------
# SQL helpers


def _copy(con: duckdb.DuckDBPyConnection, query: str, target: Path) -> int:
    """COPY `query` to a temp file beside `target` and rename it over `target`; the row count."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        found = con.execute(f"COPY ({query}) TO {_lit(str(tmp))} (FORMAT parquet)").fetchall()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return int(found[0][0])


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ts(value: pd.Timestamp) -> str:
    return f"TIMESTAMP {_lit(pd.Timestamp(value).isoformat(sep=' '))}"
