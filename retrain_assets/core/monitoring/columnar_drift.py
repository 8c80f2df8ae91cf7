"""Drift between two Parquet files read a column at a time (`retrain-assets drift`): the
reference profile and every feature's statistics without a pandas frame of either file.

Each feature column is one job, and the caller runs the jobs with its `run` (a thread pool's
`map`: reading, sorting and counting release the GIL). A job reads the column from both files,
checks it against its contract rules (`core.ingestion.columnar`), and computes its reference
profile (`profile.numeric_profile`, `CategoricalProfile`), its drift row (`drift.numeric_feature_drift`
/ `drift.categorical_drift_row`, the pipeline's own code, sampled above
`DriftThresholds.sample_rows`), its out-of-distribution rows and its values at the sampled rows
that the multivariate check and the novelty model read. The jobs assume every row valid; when a
row of either file breaks the contract, every column is read and compared again without the
file's bad rows (a row is valid only when all its columns are).
Peak memory is a few columns per running job plus the row samples, whatever the row count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrain_assets.core.ingestion.columnar import ColumnarContract, ParquetColumns, check_codes, check_numbers, combine
from retrain_assets.core.ingestion.rules import column_rules
from retrain_assets.core.monitoring.columnar_segments import Slice, assemble, kept, segment_slices
from retrain_assets.core.monitoring.drift import categorical_drift_row, drift_table, numeric_feature_drift
from retrain_assets.core.monitoring.profile import CategoricalProfile, ReferenceProfile, numeric_profile
from retrain_assets.core.monitoring.measures import BatchMeasures
from retrain_assets.core.monitoring.segment_drift import segment_summary
from retrain_assets.core.monitoring.values import code_counts, first_seen, sample_positions
from retrain_assets.core.policy.definition import DriftThresholds
from retrain_assets.core.spec import DatasetSpec

Runner = Callable[[Callable, Iterable], Iterable]


@dataclass
class FileComparison:
    """The reference profile, what was measured on every valid row of the current file
    (`measures.BatchMeasures`), both files' contracts and the sampled valid rows of each."""

    profile: ReferenceProfile
    measures: BatchMeasures
    reference_contract: ColumnarContract
    current_contract: ColumnarContract
    reference_rows: pd.DataFrame
    current_rows: pd.DataFrame


def compare_parquet(reference: ParquetColumns, current: ParquetColumns, spec: DatasetSpec, thresholds: DriftThresholds,
                    reference_rows: int, current_rows: int, seed: int = 0, run: Runner = map) -> FileComparison:
    """Check both files' feature columns against the contract and compare their valid rows;
    `reference_rows` / `current_rows`: how many valid rows of each to keep as a seeded sample (the
    current sample also carries the id column, when the file has one).

    Each column is read once, checked and compared as if every row were valid; only when some row
    of a file breaks the contract is every column read and compared again without the bad rows."""
    numeric = set(spec.numeric_features)
    sizes = (reference_rows, current_rows)
    every = (np.ones(reference.n_rows, dtype=bool), np.ones(current.n_rows, dtype=bool))
    done, ood = _compare_columns(reference, current, spec, every, sizes, seed, thresholds, run, check=True)
    contracts = (combine(reference.n_rows, [d.checks[0] for d in done]), combine(current.n_rows, [d.checks[1] for d in done]))
    if any(c.n_quarantined for c in contracts):
        valid = (contracts[0].valid, contracts[1].valid)
        done, ood = _compare_columns(reference, current, spec, valid, sizes, seed, thresholds, run, check=False)
    n_valid = int(contracts[1].valid.sum())
    cur_sample = {d.name: d.current_values for d in done}
    if spec.id_column in current.types:
        cur_sample[spec.id_column] = current.values(spec.id_column)[contracts[1].valid][done[0].current_at]
    features = drift_table([d.row for d in done], thresholds)
    segments, table = assemble(done[0].slice_list, done, numeric, thresholds)
    profile = ReferenceProfile(numeric={d.name: d.profile for d in done if d.name in numeric},
                               categorical={d.name: d.profile for d in done if d.name not in numeric},
                               n_rows=int(contracts[0].valid.sum()), created_from=str(reference.path), segments=segments or None)
    measures = BatchMeasures(features, n_valid, float(ood.mean()) if n_valid else float("nan"), segment_summary(table))
    return FileComparison(profile, measures, *contracts, pd.DataFrame({d.name: d.reference_values for d in done}),
                          pd.DataFrame(cur_sample))


@dataclass
class _Column:
    """One feature compared: its contract checks (reference, current), reference profile, drift row,
    out-of-distribution current rows, and its values at the sampled rows of each file."""

    name: str
    checks: tuple
    profile: object
    row: dict
    outside: np.ndarray | None
    reference_values: np.ndarray
    current_values: np.ndarray
    current_at: np.ndarray
    slice_list: list[Slice]
    slices: list  # per slice: (profile, drift row) of this feature's rows in it; None for its own column's slices


def _compare_columns(reference, current, spec: DatasetSpec, valid, sizes, seed, thresholds, run,
                     check: bool) -> tuple[list[_Column], np.ndarray]:
    """Every column compared on the rows `valid` (per file), with `check` also checked; and the
    current rows out of distribution in some column (each column's mask is dropped once merged)."""
    rng = np.random.default_rng(seed)
    at = tuple(sample_positions(int(v.sum()), size, rng) for v, size in zip(valid, sizes))  # positions into the valid values
    rules = {r.name: r for r in column_rules(spec)}
    names, numeric = list(spec.numeric_features) + list(spec.categorical_features), set(spec.numeric_features)
    slices = segment_slices(reference, current, list(spec.segment_columns), valid, thresholds)

    def one(name: str) -> _Column:
        rule = rules[name]
        if name in numeric:
            ref, cur = reference.numbers(name), current.numbers(name)
            checks = (check_numbers(rule, ref), check_numbers(rule, cur)) if check else (None, None)
            return _numeric(name, checks, kept(ref, valid[0]), kept(cur, valid[1]), at, thresholds, slices)
        (ref, ref_keys), (cur, cur_keys) = reference.codes(name), current.codes(name)
        checks = (check_codes(rule, ref, ref_keys), check_codes(rule, cur, cur_keys)) if check else (None, None)
        return _categorical(name, checks, (kept(ref, valid[0]), ref_keys), (kept(cur, valid[1]), cur_keys), at, slices)

    done, ood = [], np.zeros(int(valid[1].sum()), dtype=bool)
    for column in run(one, names):
        ood |= column.outside
        column.outside = None
        done.append(column)
    return done, ood


def _numeric(name, checks, ref, cur, at, thresholds, slices) -> _Column:
    prof, row = _numeric_pair(name, ref, cur, thresholds)
    with np.errstate(invalid="ignore"):
        outside = (cur < prof.min) | (cur > prof.max) if prof.n else np.zeros(len(cur), dtype=bool)
    pieces = [None if s.column == name else _numeric_pair(name, ref[s.reference], cur[s.current], thresholds) for s in slices]
    return _Column(name, checks, prof, row, outside, ref[at[0]], cur[at[1]], at[1], slices, pieces)


def _numeric_pair(name, ref, cur, thresholds):
    prof = numeric_profile(name, ref, thresholds)
    return prof, numeric_feature_drift(prof, cur, len(cur), thresholds.sample_rows)


def _categorical(name, checks, reference, current, at, slices) -> _Column:
    (ref_codes, ref_keys), (cur_codes, cur_keys) = reference, current
    prof, row = _categorical_pair(name, ref_codes, ref_keys, cur_codes, cur_keys)
    unseen = np.array([k not in prof.counts for k in cur_keys] + [False], dtype=bool)
    pieces = [None if s.column == name else _categorical_pair(name, ref_codes[s.reference], ref_keys, cur_codes[s.current], cur_keys)
              for s in slices]
    return _Column(name, checks, prof, row, unseen[cur_codes], _texts(ref_codes[at[0]], ref_keys),
                   _texts(cur_codes[at[1]], cur_keys), at[1], slices, pieces)


def _categorical_pair(name, ref_codes, ref_keys, cur_codes, cur_keys):
    ref_counts, ref_missing = code_counts(ref_codes, ref_keys, first_seen(ref_codes, len(ref_keys)))
    cur_counts, cur_missing = code_counts(cur_codes, cur_keys, first_seen(cur_codes, len(cur_keys)))
    prof = CategoricalProfile(name=name, n=int(sum(ref_counts.values())), n_missing=ref_missing, counts=ref_counts)
    return prof, categorical_drift_row(prof, len(cur_codes), cur_counts, cur_missing)


def _texts(codes: np.ndarray, keys: list[str]) -> np.ndarray:
    """Codes as an object array of their texts (None where missing)."""
    table = np.array([*keys, None], dtype=object)
    return table[codes]  # -1 picks the trailing None
