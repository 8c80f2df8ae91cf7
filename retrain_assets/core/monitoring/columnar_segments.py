"""Drift per segment on the columnar path (`columnar_drift`): each value of the spec's segment
columns is a slice of both files' valid rows, and each feature's column job compares its slices
too, with the same rules as the frame path (`profile.segment_profiles`, `segment_drift`): a value
is profiled when the reference holds at least `segment_min_rows` rows of it and tested when the
batch does too; the segment column itself is left out of its own slices; a missing segment value
belongs to no slice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrain_assets.core.monitoring.drift import drift_table
from retrain_assets.core.monitoring.profile import ReferenceProfile
from retrain_assets.core.monitoring.segment_drift import SEGMENT_COLUMNS, segment_row
from retrain_assets.core.monitoring.values import first_seen
from retrain_assets.core.policy.definition import DriftThresholds


def kept(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`values` at the valid rows (itself when every row is valid)."""
    return values if valid.all() else values[valid]


@dataclass(frozen=True)
class Slice:
    """The rows of one segment value in each file, as masks over that file's compared (valid) rows."""

    column: str
    value: str
    reference: np.ndarray
    current: np.ndarray

    @property
    def n_reference(self) -> int:
        return int(self.reference.sum())

    @property
    def n_current(self) -> int:
        return int(self.current.sum())


def segment_slices(reference, current, segments: list[str], valid: tuple[np.ndarray, np.ndarray],
                   thresholds: DriftThresholds) -> list[Slice]:
    """The profiled slices of each segment column (the values with at least `segment_min_rows`
    reference rows, in the order the reference first shows them)."""
    slices = []
    for column in segments:
        (ref_codes, ref_keys), (cur_codes, cur_keys) = reference.codes(column), current.codes(column)
        ref_codes, cur_codes = kept(ref_codes, valid[0]), kept(cur_codes, valid[1])
        cur_code_of = {key: i for i, key in enumerate(cur_keys)}
        for code in first_seen(ref_codes, len(ref_keys)):
            rows = ref_codes == code
            if rows.sum() >= thresholds.segment_min_rows:
                key = ref_keys[code]
                slices.append(Slice(column, key, rows, cur_codes == cur_code_of.get(key, -2)))
    return slices


def assemble(slices: list[Slice], columns: list, numeric: set[str], thresholds: DriftThresholds
             ) -> tuple[dict[str, dict[str, ReferenceProfile]], pd.DataFrame]:
    """The reference's segment profiles and the `segment_drift` table from every column job's
    per-slice (profile, drift row) pairs (`columns[i].slices[j]`, None for a slice of its own column)."""
    profiles: dict[str, dict[str, ReferenceProfile]] = {}
    rows = []
    for j, piece in enumerate(slices):
        compared = [(c.name, c.slices[j]) for c in columns if c.slices[j] is not None]
        profile = ReferenceProfile(numeric={n: p for n, (p, _) in compared if n in numeric},
                                   categorical={n: p for n, (p, _) in compared if n not in numeric}, n_rows=piece.n_reference)
        profiles.setdefault(piece.column, {})[piece.value] = profile
        if min(piece.n_current, piece.n_reference) >= thresholds.segment_min_rows:
            table = drift_table([row for _, (_, row) in compared], thresholds)
            rows.append(segment_row(piece.column, piece.value, table, piece.n_current, piece.n_reference, thresholds))
    return profiles, pd.DataFrame(rows, columns=list(SEGMENT_COLUMNS))
