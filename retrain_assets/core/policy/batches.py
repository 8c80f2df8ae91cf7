"""When a batch is blocked: the one rule ingestion's contract check, the backtest and
`retrain-assets check-batch` apply."""

from __future__ import annotations

from typing import Sequence


def block_reason(schema_errors: Sequence[str], bad_row_share: float, max_bad_row_share: float) -> str:
    """Why a batch must not be used, in words ("" when it is usable): a file that cannot be read or
    breaks the schema, or more than `max_bad_row_share` (the policy's) of its rows breaking the contract."""
    if schema_errors:
        return "a file cannot be read or breaks the schema — " + "; ".join(schema_errors)
    if bad_row_share > max_bad_row_share:
        return f"{bad_row_share:.1%} of rows break the contract (limit {max_bad_row_share:.0%})"
    return ""
