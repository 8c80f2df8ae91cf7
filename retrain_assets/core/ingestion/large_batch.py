"""The batch contract of a batch too large for pandas, applied by DuckDB over Parquet (or CSV)
with a bounded memory budget (`retrain-assets check-batch`; its drift statistics are
`core.monitoring.large_batch_drift`).

`validate_large_batch` applies the same rules as `contracts.validate_batch` (as SQL, from
`contract_sql`), with the same row-level reasons, and writes the valid rows and the quarantined
rows (as they arrived, plus `reason` and the 1-based `row_number`) to two Parquet files via COPY.

Mirrored exactly (tested against the pandas path): missing columns (blocking schema errors), CSV
text in `rules.MISSING_TEXT` read as null, text that cannot be cast (coerce_dtype + dtype
reasons; the checks of a column with cast failures are skipped for the uncastable rows, whose
duplicates are judged among all rows, as pandera's first pass does), not_nullable (id and event
time never null), finite, integral, whole numbers within 64 bits (`rules.INT_RANGE`), in_range
/ >= / <=, isin, duplicate ids within the batch (every copy, nulls are not duplicates), event time
in the future / outside the partition (only for rows that passed the contract, with pandas'
timestamp text; text with a UTC offset is converted to UTC and quoted as delivered too), the
refusal of a compressed file or a header naming a column twice (the landing zone's
LandingFileError), the float text of values (Python `str(float)`).

Not mirrored exactly (by design or because pandas' behaviour depends on the data):
- text is cast by DuckDB's rules: timestamps must be ISO 8601 (pandas infers one format from the
  data, and blocks a batch that mixes formats); numbers follow DuckDB's parser (" 42 ", "1e1",
  "inf", "nan" agree with Python's float()); bool text accepts the spellings of
  `rules.BOOL_TEXT`.
- a column whose stored type cannot be cast at all (e.g. a timestamp where a number is declared)
  is a blocking schema error here, with its own message.
- timestamps are held to the microsecond (DuckDB's TIMESTAMP); a non-text value in a string
  column is written as DuckDB writes it (booleans as True/False, floats as Python does).
- the text for a null is "None" for a string/category column read from a Parquet VARCHAR column
  and "nan" otherwise, which is what pandera prints for frames read by `read_landing_file`.
- valid rows keep the source order only as far as DuckDB preserves insertion order.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from retrain_assets.core.ingestion.contract_sql import (
    OUTPUT_TYPES,
    SQL_TYPES,
    DeclaredColumn,
    cast_failed,
    contract_rules,
    declared_column,
    typed_value,
)
from retrain_assets.core.ingestion.contracts import FUTURE_TOLERANCE, ZONED_TIME, batch_schema
from retrain_assets.core.ingestion.rules import MISSING_TEXT
from retrain_assets.core.ingestion.duckdb_sql import Progress, copy_to_parquet, count_rows, timestamp_literal
from retrain_assets.core.ingestion.landing import csv_header, refuse_compressed, refuse_repeated_columns
from retrain_assets.core.policy.batches import block_reason
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.sql_text import ident, lit

ROW = "__row"  # the source row number (0-based) carried through every phase


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
        con.execute(f"SET temp_directory = {lit(str(temp_directory))}")
    # Only on the rows of failing checks: Python's str(float) (DuckDB's own cast prints 0.1 + 0.2 as 0.3).
    con.execute("CREATE OR REPLACE TEMP MACRO pyfloat(x) AS CASE WHEN regexp_matches(format('{}', x), '[.en]') "
                "THEN format('{}', x) ELSE format('{}', x) || '.0' END")
    return con


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


class _Laps:
    """The seconds of each phase, each timed from the end of the one before."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, phase: str) -> None:
        self.seconds[phase] = time.perf_counter() - self._clock
        self._clock = time.perf_counter()


def _validate(con, path: Path, parquet: Path, from_parquet: bool, spec: DatasetSpec, valid_path: Path, quarantine_path: Path,
              window, now, say: Progress) -> BatchContract:
    """The contract's phases over the Parquet file `parquet` (the batch `path`, or its staged copy)."""
    lap = _Laps()
    stored, n_rows = _read_source(con, parquet)
    say(f"read {path.name}: {n_rows:,} rows, {len(stored) - 1} columns")
    columns, schema_errors = _declared_columns(spec, stored, from_parquet)
    raw_columns = [ident(c) for c in stored if c != ROW]
    if schema_errors:
        n_valid, n_bad = _quarantine_every_row(con, spec, schema_errors, raw_columns, valid_path, quarantine_path)
        lap("contract")
        say(f"blocked: {'; '.join(schema_errors)}")
        return BatchContract(n_rows, n_valid, n_bad, schema_errors, {f"schema: {e}": n_rows for e in schema_errors},
                             valid_path, quarantine_path, lap.seconds)

    failing = _cast_failures(con, columns)
    lap("types")
    _count_duplicate_ids(con, spec, columns, failing)
    lap("duplicates")
    rules = contract_rules(columns, spec, failing)
    _record_rule_breaks(con, rules)
    say(f"contract checked: {count_rows(con, 'bad'):,} rows break a rule")
    lap("rules")
    keys = [key for key, _, _ in rules]
    window_text = "NULL"
    if (window is not None or now is not None) and columns:
        text_times = stored[spec.event_time_column] == "VARCHAR"
        window_text = _window_rows(con, spec, window, now, len(keys), text_times)
        keys += [f"{spec.event_time_column}: in the future", f"{spec.event_time_column}: outside partition"]
    lap("event time")
    n_valid, n_bad = _write_outputs(con, columns, rules, raw_columns, window_text, valid_path, quarantine_path, say)
    lap("write")
    if n_valid + n_bad != n_rows:
        raise RuntimeError(f"{path.name}: {n_rows} rows in but {n_valid} valid + {n_bad} quarantined; nothing was dropped "
                           "on purpose — report this as a bug with the file")
    rule_counts = {keys[i]: int(n) for i, n in con.execute(
        "SELECT r, count(*) FROM (SELECT unnest(__rules) AS r FROM bad) GROUP BY r ORDER BY r").fetchall()}
    con.execute("DROP TABLE bad; DROP TABLE dups")
    return BatchContract(n_rows, n_valid, n_bad, [], rule_counts, valid_path, quarantine_path, lap.seconds)


def _stage_csv(con: duckdb.DuckDBPyConnection, path: Path, out_dir: Path) -> Path:
    """A CSV batch staged as all-text Parquet, `MISSING_TEXT` as null: DuckDB's CSV
    reader has no row numbers, and COPY keeps the file's row order."""
    names = [d[0] for d in con.execute(f"DESCRIBE SELECT * FROM read_csv({lit(str(path))}, all_varchar = true, header = true)").fetchall()]
    na = ", ".join(lit(t) for t in sorted(MISSING_TEXT))
    cols = ", ".join(f"CASE WHEN {ident(n)} IN ({na}) THEN NULL ELSE {ident(n)} END AS {ident(n)}" for n in names)
    staged = out_dir / f".{path.stem}.staged-{os.getpid()}.parquet"
    con.execute(f"COPY (SELECT {cols} FROM read_csv({lit(str(path))}, all_varchar = true, header = true)) TO "
                f"{lit(str(staged))} (FORMAT parquet)")
    return staged


def _read_source(con: duckdb.DuckDBPyConnection, parquet: Path) -> tuple[dict[str, str], int]:
    """View `src` over `parquet` with the row number `ROW`; its stored column types and its row count."""
    source = f"read_parquet({lit(str(parquet))}, file_row_number = true)"
    con.execute(f"CREATE OR REPLACE TEMP VIEW src AS SELECT * EXCLUDE (file_row_number), file_row_number AS {ROW} FROM {source}")
    stored = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE src)").fetchall())
    return stored, count_rows(con, "src")


def _declared_columns(spec: DatasetSpec, stored: dict[str, str], from_parquet: bool) -> tuple[list[DeclaredColumn], list[str]]:
    """The SQL of each declared column found in the source, and the schema errors: columns missing
    or stored as a type that cannot be cast."""
    schema = batch_schema(spec)
    columns: list[DeclaredColumn] = []
    schema_errors = [f"required column '{c.name}' is missing" for c in spec.columns if c.name not in stored]
    for col in spec.columns:
        if col.name in stored:
            column = declared_column(col, stored[col.name], str(schema.columns[col.name].dtype), from_parquet)
            if column is None:
                schema_errors.append(f"column '{col.name}' has type {stored[col.name]}, which cannot be cast to "
                                     f"{SQL_TYPES[col.type]} — export it as {SQL_TYPES[col.type]} or as text")
            else:
                columns.append(column)
    return columns, schema_errors


def _quarantine_every_row(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, schema_errors: list[str], raw_columns: list[str],
                          valid_path: Path, quarantine_path: Path) -> tuple[int, int]:
    """A batch with schema errors: no valid rows, every row quarantined with the errors as its reason."""
    reason = "; ".join(f"schema: {e}" for e in schema_errors)
    empty = ", ".join(f"NULL::{OUTPUT_TYPES[c.type]} AS {ident(c.name)}" for c in spec.columns)
    n_valid = copy_to_parquet(con, f"SELECT {empty} WHERE false", valid_path)
    n_bad = copy_to_parquet(con, f"SELECT {', '.join(raw_columns)}, {lit(reason)} AS reason, {ROW} + 1 AS row_number "
                                 f"FROM src ORDER BY {ROW}", quarantine_path)
    return n_valid, n_bad


def _cast_failures(con: duckdb.DuckDBPyConnection, columns: list[DeclaredColumn]) -> set[str]:
    """View `typed` (the source plus each column's typed value and cast failure); the names of the
    columns where some present value failed to cast."""
    typed = ", ".join(f"{c.typed} AS {typed_value(c.spec.name)}, {c.bad_cast} AS {cast_failed(c.spec.name)}" for c in columns)
    con.execute(f"CREATE OR REPLACE TEMP VIEW typed AS SELECT src.*, {typed} FROM src")
    castable = [c for c in columns if c.bad_cast != "false"]
    if not castable:
        return set()
    counts = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {cast_failed(c.spec.name)})" for c in castable)
                         + " FROM typed").fetchall()[0]
    return {c.spec.name for c, n in zip(castable, counts) if n}


def _count_duplicate_ids(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, columns: list[DeclaredColumn], failing: set[str]) -> None:
    """Table `dups` (each repeated id's count among all rows and among the castable rows) and view
    `checked`: `typed` plus `__unc` (some value of the row failed to cast) and the id's counts."""
    unc = " OR ".join(cast_failed(n) for n in sorted(failing)) or "false"
    id_col = next(c for c in columns if c.spec.name == spec.id_column)
    id_v = typed_value(id_col.spec.name)
    con.execute(f"CREATE OR REPLACE TEMP TABLE dups AS SELECT {id_v} AS __id, count(*) AS __n_all, "
                f"count(*) FILTER (WHERE NOT ({unc})) AS __n_ok FROM typed WHERE {id_v} IS NOT NULL GROUP BY {id_v} "
                "HAVING count(*) > 1")
    con.execute(f"CREATE OR REPLACE TEMP VIEW checked AS SELECT typed.*, ({unc}) AS __unc, coalesce(__n_all, 0) AS __n_all, "
                f"coalesce(__n_ok, 0) AS __n_ok FROM typed LEFT JOIN dups ON {id_v} = dups.__id")


def _record_rule_breaks(con: duckdb.DuckDBPyConnection, rules: list[tuple[str, str, str]]) -> None:
    """Table `bad`: each row breaking a rule, with the indices of the rules it breaks (stage 0, the contract)."""
    any_break = " OR ".join(f"({pred})" for _, pred, _ in rules)
    rule_ids = "list_filter([" + ", ".join(f"CASE WHEN {pred} THEN {i} END" for i, (_, pred, _) in enumerate(rules)) \
               + "], lambda x: x IS NOT NULL)"
    con.execute(f"CREATE OR REPLACE TEMP TABLE bad AS SELECT {ROW}, 0 AS __stage, {rule_ids} AS __rules "
                f"FROM checked WHERE {any_break}")


def _write_outputs(con: duckdb.DuckDBPyConnection, columns: list[DeclaredColumn], rules: list[tuple[str, str, str]],
                   raw_columns: list[str], window_text: str, valid_path: Path, quarantine_path: Path,
                   say: Progress) -> tuple[int, int]:
    """COPY the rows not in `bad`, typed, to `valid_path` and the rows in it, as they arrived with their
    reason and row number, to `quarantine_path`; the two row counts."""
    # each rule gives a list of pieces (a cast failure gives two) or NULL
    contract_text = "array_to_string(list_sort(flatten(list_filter([" + ", ".join(t for _, _, t in rules) \
                    + "], lambda x: x IS NOT NULL))), '; ')"
    outputs = ", ".join(f"CAST({typed_value(c.spec.name)} AS {OUTPUT_TYPES[c.spec.type]}) AS {ident(c.spec.name)}"
                        for c in columns)
    n_valid = copy_to_parquet(con, f"SELECT {outputs} FROM typed ANTI JOIN bad USING ({ROW})", valid_path)
    say(f"wrote {n_valid:,} valid rows to {valid_path}")
    n_bad = copy_to_parquet(con, f"SELECT {', '.join('checked.' + c for c in raw_columns)}, CASE WHEN __stage = 0 "
                                 f"THEN {contract_text} ELSE {window_text} END AS reason, {ROW} + 1 AS row_number "
                                 f"FROM checked JOIN bad USING ({ROW}) ORDER BY {ROW}", quarantine_path)
    say(f"wrote {n_bad:,} quarantined rows to {quarantine_path}")
    return n_valid, n_bad


def _window_rows(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, window, now, first_id: int, text_times: bool) -> str:
    """Add the contract-valid rows whose event time is in the future or outside the window to `bad`;
    return the SQL of their reason. The timestamp text is pandas' for the valid rows' series:
    dates only when every time is midnight, else seconds, milliseconds or microseconds as needed;
    text with a UTC offset is quoted too, after the UTC time."""
    ts = typed_value(spec.event_time_column)
    midnight, seconds, millis = con.execute(
        f"SELECT coalesce(bool_and({ts} = date_trunc('day', {ts})), true), coalesce(bool_and(epoch_us({ts}) % 1000000 = 0), true), "
        f"coalesce(bool_and(epoch_us({ts}) % 1000 = 0), true) FROM typed ANTI JOIN bad USING ({ROW})").fetchall()[0]
    fmt = "%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M:%S" + ("" if seconds else ".%g" if millis else ".%f")
    got = f"' (got ' || strftime({ts}, {lit(fmt)}) || ')'"
    if text_times:
        raw = ident(spec.event_time_column)
        zoned = f"regexp_matches(trim({raw}), {lit(ZONED_TIME.pattern)})"
        got = (f"CASE WHEN {zoned} THEN ' (got ' || strftime({ts}, {lit(fmt)}) || ' UTC, delivered as ' || {raw} || ')' "
               f"ELSE {got} END")
    name, parts, preds = spec.event_time_column, [], []
    if now is not None:
        future = f"{ts} > {timestamp_literal(now + FUTURE_TOLERANCE)}"
        text = (f"{name}: in the future, more than {FUTURE_TOLERANCE.days} day after ingestion at {now:%Y-%m-%d %H:%M} UTC "
                "— check the export's clock and time zone")
        parts.append(f"CASE WHEN {future} THEN {lit(text)} || {got} END")
        preds.append((future, first_id))
    if window is not None:
        outside = f"({ts} < {timestamp_literal(window[0])} OR {ts} >= {timestamp_literal(window[1])})"
        text = f"{name}: outside partition [{window[0]}, {window[1]}) — deliver the row in the file of its own partition"
        parts.append(f"CASE WHEN {outside} THEN {lit(text)} || {got} END")
        preds.append((outside, first_id + 1))
    ids = "list_filter([" + ", ".join(f"CASE WHEN {p} THEN {i} END" for p, i in preds) + "], lambda x: x IS NOT NULL)"
    con.execute(f"INSERT INTO bad SELECT {ROW}, 1, {ids} FROM typed ANTI JOIN bad USING ({ROW}) "
                f"WHERE {' OR '.join(p for p, _ in preds)}")
    return "concat_ws('; ', " + ", ".join(parts) + ")"
