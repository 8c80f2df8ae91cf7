"""When a batch is blocked: the one rule (core.policy.batches) and the words of the contract check."""

import pytest

from retrain_assets.core.policy.batches import block_reason, contract_verdict


@pytest.mark.parametrize("errors, share, blocked", [
    ([], 0.0, False), ([], 0.2, False), ([], 0.21, True), (["required column 'age' is missing"], 0.0, True),
])
def test_block_reason_is_schema_errors_or_too_many_bad_rows(errors, share, blocked):
    assert bool(block_reason(errors, share, 0.2)) is blocked


def test_a_schema_error_blocks_and_names_the_error():
    passed, verdict = contract_verdict(["required column 'age' is missing"], 0, 10, {}, {}, {}, 0.2)
    assert not passed and verdict == "BLOCKED: a file cannot be read or breaks the schema — required column 'age' is missing"


def test_too_many_bad_rows_block_with_the_files_and_the_fix():
    passed, verdict = contract_verdict([], 3, 10, {"a.csv": 3}, {}, {}, 0.2)
    assert not passed
    assert verdict.startswith("BLOCKED: 30.0% of rows break the contract (limit 20%); quarantined rows by file: a.csv 3.")


def test_a_passing_batch_reports_quarantine_redeliveries_and_dropped_columns():
    passed, verdict = contract_verdict([], 1, 10, {"a.csv": 1}, {"a.csv": 0, "b.csv": 2}, {"b.csv": ["extra"]}, 0.2)
    assert passed and verdict.startswith("passed: 1 of 10 rows quarantined (10.0%) from a.csv 1")
    assert "; 2 rows redelivered unchanged (b.csv 2)" in verdict and "undeclared columns dropped: b.csv: extra" in verdict
