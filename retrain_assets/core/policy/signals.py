"""A batch's signal as the policy reads it, built from a drift report's summary: a `drift_report`
row in the pipeline, `build_drift_report(...).summary` in the backtest. One place for both, so a
number the policy reads is taken from the report alike on either path."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

from retrain_assets.core.policy.retrain import BatchSignal

_IDENTITY = ("partition", "champion_version")
# Every other BatchSignal field is read from the summary key of the same name.
SIGNAL_COLUMNS = tuple(f.name for f in fields(BatchSignal) if f.name not in _IDENTITY)


def signal_from_summary(partition: str, champion_version: str, summary: Mapping[str, Any], **given: Any) -> BatchSignal:
    """The signal of batch `partition` scored against `champion_version`: each field from the
    summary key of its name (a missing or empty value: the field's default, e.g. a warehouse written
    before the column existed), converted to the field's type; `given` values win over the summary's."""
    values: dict[str, Any] = {}
    for f in fields(BatchSignal):
        if f.name in _IDENTITY or f.name not in summary:
            continue
        value = summary[f.name]
        if _missing(value):
            continue
        values[f.name] = {"bool": bool, "int": int}.get(str(f.type), float)(value)
    return BatchSignal(partition, champion_version, **{**values, **given})


def _missing(value: Any) -> bool:
    """None, NaN and pandas' NA: the cell holds no value."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN is the one value unequal to itself
    except TypeError:  # pd.NA compares to NA, whose truth value is ambiguous
        return True
