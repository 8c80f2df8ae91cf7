"""The batch contract of a Parquet file's feature columns, checked column by column with Arrow
and numpy (`retrain-assets drift`, `core.monitoring.columnar_drift`).

Only the columns a comparison needs are read, one at a time, so memory holds a few columns
whatever the row count, and no pandas frame of the file is ever built. The rules are
`rules.value_checks` plus not_nullable, with the reasons `contracts.validate_batch` writes
(tested equal on the same file): "<column>: <check> (got <value>)", a row's pieces sorted and
joined by "; ". Columns stored with the declared kind of type are checked here: numbers (or
booleans) for float / int / bool columns, text or dictionary-encoded text for category / string
columns; any other storage (numbers as text, ...) raises `NotColumnar`, and the caller takes the
pandas path (`contracts.validate_batch`), which parses text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from retrain_assets.core.ingestion.rules import INT_RANGE_FLOAT, ColumnRule, value_checks


class NotColumnar(ValueError):
    """The file or one of its columns needs the pandas path (not Parquet, or stored as another type)."""


class SchemaBroken(ValueError):
    """Batch-level breaks of the contract (a declared column is missing): no row is valid."""

    def __init__(self, path: Path, errors: list[str]):
        super().__init__("; ".join(errors))
        self.path, self.errors = path, errors


class ParquetColumns:
    """One Parquet file read a column at a time: numbers as float64 (null as NaN), text as codes
    into its distinct values (null as -1)."""

    def __init__(self, path: str | Path, text_columns: list[str]):
        if Path(path).suffix.lower() != ".parquet":
            raise NotColumnar(f"{path} is not a Parquet file")
        self.path = Path(path)
        self.text_columns = list(text_columns)
        file = pq.ParquetFile(path, read_dictionary=self.text_columns)
        self.metadata = file.metadata
        self.n_rows = int(self.metadata.num_rows)
        self.types = {f.name: f.type for f in file.schema_arrow}

    def require(self, numeric: list[str], text: list[str]) -> None:
        """Raise `SchemaBroken` when a column is missing, `NotColumnar` when one is stored as a type
        this path does not read (numbers as text, ...), before any column is read."""
        missing = [f"required column '{c}' is missing" for c in [*numeric, *text] if c not in self.types]
        if missing:
            raise SchemaBroken(self.path, missing)
        for name in numeric:
            kind = self.types[name]
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
                raise NotColumnar(f"column '{name}' is stored as {kind}, not as numbers")
        for name in text:
            kind = self.types[name]
            if not (pa.types.is_dictionary(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise NotColumnar(f"column '{name}' is stored as {kind}, not as text")

    def _read(self, name: str) -> pa.ChunkedArray:
        # A ParquetFile per read: one shared between threads stalls; the parsed footer is reused.
        file = pq.ParquetFile(self.path, metadata=self.metadata, read_dictionary=self.text_columns)
        return file.read(columns=[name], use_threads=False).column(0)

    def numbers(self, name: str) -> np.ndarray:
        """Column `name` (stored as numbers: `require`) as float64, null as NaN."""
        column = self._read(name)
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)

    def values(self, name: str) -> np.ndarray:
        """Column `name` as numpy values of any type (null as None or NaN)."""
        return self._read(name).to_numpy(zero_copy_only=False)

    def codes(self, name: str) -> tuple[np.ndarray, list[str]]:
        """Column `name` (stored as text: `require`) as int32 codes into its distinct texts (null: -1) and those texts."""
        column = self._read(name)
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        column = column.unify_dictionaries() if column.num_chunks > 1 else column
        chunks = column.chunks or [pa.array([], pa.dictionary(pa.int32(), pa.string()))]
        keys = chunks[0].dictionary.to_pylist()
        codes = np.concatenate([c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int32)
        return codes, [str(k) for k in keys]


@dataclass
class ColumnCheck:
    """One column's contract: which rows break it (None: none does), how many per rule, and the
    reason pieces of its first bad row (row, pieces)."""

    bad: np.ndarray | None
    rule_counts: dict[str, int] = field(default_factory=dict)
    first: tuple[int, list[str]] | None = None


def check_numbers(rule: ColumnRule, values: np.ndarray) -> ColumnCheck:
    """The rules of a float / int / bool column on its values (NaN: missing)."""
    missing = np.isnan(values)
    infinite = np.isinf(values)
    broken: list[tuple[str, np.ndarray]] = []
    if not rule.nullable:
        broken.append(("not_nullable", missing))
    with np.errstate(invalid="ignore"):
        for name, text in value_checks(rule):
            if name == "finite":
                broken.append((text, infinite))
            elif name == "integral":
                broken.append((text, ~infinite & ~missing & (values != np.trunc(values))))
            elif name == "int64_range":
                low, end = INT_RANGE_FLOAT
                broken.append((text, ~infinite & ((values < low) | (values >= end))))
            elif name in ("in_range", "greater_than_or_equal_to", "less_than_or_equal_to"):
                low = -np.inf if rule.min is None else rule.min
                high = np.inf if rule.max is None else rule.max
                broken.append((text, (values < low) | (values > high)))
            else:
                raise ValueError(f"column '{rule.name}': no numeric form of check {name!r}")
    return _collect(rule.name, broken, lambda row: "nan" if missing[row] else str(float(values[row])), len(values))


def check_codes(rule: ColumnRule, codes: np.ndarray, keys: list[str]) -> ColumnCheck:
    """The rules of a category / string column on its codes into `keys` (-1: missing)."""
    broken: list[tuple[str, np.ndarray]] = []
    if not rule.nullable:
        broken.append(("not_nullable", codes < 0))
    for name, text in value_checks(rule):
        if name != "isin":
            raise ValueError(f"column '{rule.name}': no text form of check {name!r}")
        unknown = np.array([k not in rule.categories for k in keys] + [False], dtype=bool)
        broken.append((text, unknown[codes]))  # code -1 picks the trailing False: null is not checked
    return _collect(rule.name, broken, lambda row: "None" if codes[row] < 0 else keys[codes[row]], len(codes))


def _collect(name: str, broken: list[tuple[str, np.ndarray]], got, n_rows: int) -> ColumnCheck:
    bad = np.zeros(n_rows, dtype=bool)
    counts = {}
    for text, rows in broken:
        counts[f"{name}: {text}"] = int(rows.sum())
        bad |= rows
    if not bad.any():
        return ColumnCheck(None, counts)
    row = int(np.argmax(bad))
    pieces = [f"{name}: {text} (got {got(row)})" for text, rows in broken if rows[row]]
    return ColumnCheck(bad, counts, (row, pieces))


@dataclass
class ColumnarContract:
    """The contract of the checked columns of one file: `valid` per row, the rows breaking each
    rule, and the reason of the first bad row (None: every row is valid)."""

    n_rows: int
    valid: np.ndarray
    rule_counts: dict[str, int]
    first_reason: str | None

    @property
    def n_quarantined(self) -> int:
        return int(self.n_rows - self.valid.sum())


def combine(n_rows: int, checks: list[ColumnCheck]) -> ColumnarContract:
    """One file's contract from its columns' checks: a row is valid when no column's rule breaks it;
    the first bad row's reason joins every column's pieces at that row, sorted."""
    bad = np.zeros(n_rows, dtype=bool)
    counts: dict[str, int] = {}
    for check in checks:
        if check.bad is not None:
            bad |= check.bad
        counts.update({k: v for k, v in check.rule_counts.items() if v})
    firsts = [c.first for c in checks if c.first is not None]
    reason = None
    if firsts:
        row = min(f[0] for f in firsts)  # a rule broken at the first bad row has it as its own first
        reason = "; ".join(sorted(p for r, pieces in firsts if r == row for p in pieces))
    return ColumnarContract(n_rows, ~bad, counts, reason)
