"""When a batch is blocked: the one rule ingestion's contract check, the backtest and
`retrain-assets check-batch` apply."""

from __future__ import annotations

from typing import Mapping, Sequence


def block_reason(schema_errors: Sequence[str], bad_row_share: float, max_bad_row_share: float) -> str:
    """Why a batch must not be used, in words ("" when it is usable): a file that cannot be read or
    breaks the schema, or more than `max_bad_row_share` (the policy's) of its rows breaking the contract."""
    if schema_errors:
        return "a file cannot be read or breaks the schema — " + "; ".join(schema_errors)
    if bad_row_share > max_bad_row_share:
        return f"{bad_row_share:.1%} of rows break the contract (limit {max_bad_row_share:.0%})"
    return ""


def contract_verdict(schema_errors: Sequence[str], n_quarantined: int, n_in: int, bad_files: Mapping[str, int],
                     redelivered: Mapping[str, int], undeclared: Mapping[str, Sequence[str]],
                     max_bad_row_share: float) -> tuple[bool, str]:
    """Whether a partition's batch passes its contract, and the check's description a person reads:
    what blocked it and how to fix it, or what was quarantined, redelivered or dropped."""
    bad_share = n_quarantined / n_in if n_in else 0.0
    blocked = block_reason(schema_errors, bad_share, max_bad_row_share)
    by_file = ", ".join(f"{name} {n}" for name, n in bad_files.items())
    if schema_errors:
        verdict = f"BLOCKED: {blocked}"
    elif blocked:
        verdict = (f"BLOCKED: {blocked}; quarantined rows by file: {by_file}. Fix those rows in the export and "
                   "deliver the file again; the quarantine table gives each row's reason.")
    else:
        verdict = f"passed: {n_quarantined} of {n_in} rows quarantined ({bad_share:.1%})" + (
            f" from {by_file}; the quarantine table gives each row's reason: to add those rows, deliver them "
            "corrected in a new file for the partition" if by_file else "")
    if n_redelivered := sum(redelivered.values()):
        verdict += (f"; {n_redelivered} rows redelivered unchanged (" + ", ".join(
            f"{name} {n}" for name, n in redelivered.items() if n) + "): counted, not stored twice")
    if undeclared:
        verdict += ("; undeclared columns dropped: " + "; ".join(f"{name}: {', '.join(cols)}" for name, cols in undeclared.items())
                    + " (declare them in the spec or stop exporting them)")
    return not blocked, verdict
