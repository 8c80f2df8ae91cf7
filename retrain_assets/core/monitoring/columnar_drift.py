"""Drift between two Parquet files read a column at a time (`retrain-assets drift`): the
reference profile and every feature's statistics without a pandas frame of either file.

Two passes over the feature columns, each a list of independent per-column jobs that the caller
runs with its `run` (a thread pool's `map`: reading, sorting and counting release the GIL):
1. the contract (`core.ingestion.columnar`): which rows of each file are valid;
2. per feature, the valid values of both files: the reference profile of the column
   (`profile.numeric_profile`, `CategoricalProfile`), its drift row (`drift.numeric_feature_drift`
   / `drift.categorical_drift_row`, the pipeline's own code, sampled above
   `DriftThresholds.sample_rows`), its out-of-distribution rows, and its values at the sampled
   rows that the multivariate check and the novelty model read.
Peak memory is a few columns per running job plus the row samples, whatever the row count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrain_assets.core.ingestion.columnar import NUMERIC_TYPES, ColumnarContract, ParquetColumns, check_codes, check_numbers, combine
from retrain_assets.core.ingestion.rules import column_rules
from retrain_assets.core.monitoring.drift import categorical_drift_row, dataset_drift, drift_table, numeric_feature_drift
from retrain_assets.core.monitoring.profile import CategoricalProfile, ReferenceProfile, numeric_profile
from retrain_assets.core.policy.definition import DriftThresholds
from retrain_assets.core.spec import DatasetSpec

Runner = Callable[[Callable, Iterable], Iterable]


@dataclass
class FileComparison:
    """The reference profile, the feature table and batch numbers (`summary`: n_rows, the
    `dataset_drift` keys, ood_share), both files' contracts and the sampled valid rows of each."""

    profile: ReferenceProfile
    features: pd.DataFrame
    summary: dict
    reference_contract: ColumnarContract
    current_contract: ColumnarContract
    reference_rows: pd.DataFrame
    current_rows: pd.DataFrame


def compare_parquet(reference: ParquetColumns, current: ParquetColumns, spec: DatasetSpec, thresholds: DriftThresholds,
                    reference_rows: int, current_rows: int, seed: int = 0, run: Runner = map) -> FileComparison:
    """Check both files' feature columns against the contract, then compare the valid rows;
    `reference_rows` / `current_rows`: how many valid rows of each to keep as a seeded sample (the
    current sample also carries the id column, when the file has one)."""
    rules = {r.name: r for r in column_rules(spec)}
    names = list(spec.numeric_features) + list(spec.categorical_features)
    jobs = [(side, rules[name]) for side in (reference, current) for name in names]
    checks = list(run(lambda job: _check(*job), jobs))
    ref_contract = combine(reference.n_rows, checks[:len(names)])
    cur_contract = combine(current.n_rows, checks[len(names):])
    rng = np.random.default_rng(seed)
    ref_at, cur_at = _sample(ref_contract.valid, reference_rows, rng), _sample(cur_contract.valid, current_rows, rng)
    n_valid = int(cur_contract.valid.sum())
    ood = np.zeros(n_valid, dtype=bool)
    numeric, categorical, rows, ref_sample, cur_sample = {}, {}, [], {}, {}

    def compare_one(name: str):
        job = (reference, current, ref_contract.valid, cur_contract.valid, ref_at, cur_at, thresholds)
        return _numeric(name, *job) if rules[name].type in NUMERIC_TYPES else _categorical(name, *job)

    for name, prof, row, outside, at_ref, at_cur in run(compare_one, names):
        (numeric if rules[name].type in NUMERIC_TYPES else categorical)[name] = prof
        rows.append(row)
        ood |= outside
        ref_sample[name], cur_sample[name] = at_ref, at_cur
    if spec.id_column in current.types:
        cur_sample[spec.id_column] = current.values(spec.id_column)[cur_contract.valid][cur_at]
    features = drift_table(rows, thresholds)
    profile = ReferenceProfile(numeric=numeric, categorical=categorical, n_rows=int(ref_contract.valid.sum()),
                               created_from=str(reference.path))
    summary = {"n_rows": n_valid, **dataset_drift(features, thresholds), "ood_share": float(ood.mean()) if n_valid else float("nan")}
    return FileComparison(profile, features, summary, ref_contract, cur_contract,
                          pd.DataFrame(ref_sample, columns=names), pd.DataFrame(cur_sample))


def _check(side: ParquetColumns, rule):
    if rule.type in NUMERIC_TYPES:
        return check_numbers(rule, side.numbers(rule.name))
    return check_codes(rule, *side.codes(rule.name))


def _sample(valid: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions among the valid rows (into the valid values) of a seeded sample of `size`."""
    n = int(valid.sum())
    return np.arange(n) if n <= size else np.sort(rng.choice(n, size=size, replace=False))


def _numeric(name, reference, current, ref_valid, cur_valid, ref_at, cur_at, thresholds):
    ref = reference.numbers(name)[ref_valid]
    cur = current.numbers(name)[cur_valid]
    prof = numeric_profile(name, ref, thresholds)
    row = numeric_feature_drift(prof, cur, len(cur), thresholds.sample_rows)
    with np.errstate(invalid="ignore"):
        outside = (cur < prof.min) | (cur > prof.max) if prof.n else np.zeros(len(cur), dtype=bool)
    return name, prof, row, outside, ref[ref_at], cur[cur_at]


def _categorical(name, reference, current, ref_valid, cur_valid, ref_at, cur_at, thresholds):
    ref_codes, ref_keys = reference.codes(name)
    cur_codes, cur_keys = current.codes(name)
    ref_codes, cur_codes = ref_codes[ref_valid], cur_codes[cur_valid]
    ref_counts, ref_missing = _counts(ref_codes, ref_keys)
    cur_counts, cur_missing = _counts(cur_codes, cur_keys)
    prof = CategoricalProfile(name=name, n=int(sum(ref_counts.values())), n_missing=ref_missing, counts=ref_counts)
    row = categorical_drift_row(prof, len(cur_codes), cur_counts, cur_missing)
    unseen = np.array([k not in ref_counts for k in cur_keys] + [False], dtype=bool)
    return name, prof, row, unseen[cur_codes], _texts(ref_codes[ref_at], ref_keys), _texts(cur_codes[cur_at], cur_keys)


def _counts(codes: np.ndarray, keys: list[str]) -> tuple[dict[str, int], int]:
    """Non-missing counts per text (in the order of first appearance among the counted rows) and the missing count."""
    counts = np.bincount(codes + 1, minlength=len(keys) + 1)
    first = np.full(len(keys) + 1, len(codes))
    first[codes[::-1] + 1] = np.arange(len(codes) - 1, -1, -1)  # the last write per code is its first row
    out: dict[str, int] = {}
    for k in (np.argsort(first[1:], kind="stable")[:int((counts[1:] > 0).sum())]).tolist():
        out[keys[k]] = out.get(keys[k], 0) + int(counts[k + 1])
    return out, int(counts[0])


def _texts(codes: np.ndarray, keys: list[str]) -> np.ndarray:
    """Codes as an object array of their texts (None where missing)."""
    table = np.array([*keys, None], dtype=object)
    return table[codes]  # -1 picks the trailing None
