"""Batch and label contracts: coercion of CSV text, per-row quarantine with reasons, schema breaks."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrain_assets.core.ingestion.contracts import (
    FUTURE_TOLERANCE,
    quarantine_records,
    repeated_id_reasons,
    row_fingerprints,
    set_aside,
    set_aside_repeats,
    undeclared_columns,
    validate_batch,
    validate_labels,
)
from retrain_assets.core.spec import load_spec, parse_spec

SPECS = Path(__file__).resolve().parents[1] / "data" / "specs"


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPECS / "loan_default.yaml")


GOOD_ROW = {
    "application_id": "a0",
    "applied_at": "2025-01-01 10:00:00",
    "email": "someone@example.com",
    "age": "42",
    "income": "50000.5",
    "loan_amount": "12000",
    "credit_score": "700",
    "employment_years": "3.5",
    "debt_to_income": "0.3",
    "home_ownership": "RENT",
    "purpose": "car",
    "region": "north",
    "sex": "F",
}


def text_batch(n: int = 3, **bad_values) -> pd.DataFrame:
    """`n` clean rows as read from CSV (all text, NaN for empty); row 1 gets `bad_values`."""
    rows = [{**GOOD_ROW, "application_id": f"a{i}"} for i in range(n)]
    rows[1].update(bad_values)
    return pd.DataFrame(rows, dtype=object).fillna(np.nan)


def test_clean_text_batch_keeps_all_rows_and_coerces_dtypes(spec):
    result = validate_batch(text_batch(3, age="42.0"), spec)
    assert len(result.valid) == 3 and result.quarantined.empty and not result.schema_errors
    assert result.bad_row_share == 0.0
    assert str(result.valid["age"].dtype) == "Int64"
    assert str(result.valid["credit_score"].dtype) == "Int64"
    assert result.valid["applied_at"].dtype == "datetime64[ns]"
    assert result.valid["income"].dtype == "float64"
    assert result.valid["age"].tolist() == [42, 42, 42]  # "42.0" accepted for an int column


def test_nullable_column_accepts_empty_value(spec):
    result = validate_batch(text_batch(3, income=np.nan), spec)
    assert len(result.valid) == 3
    assert result.valid["income"].isna().sum() == 1


@pytest.mark.parametrize(
    "column, value",
    [
        ("age", "42.5"),  # not integral
        ("credit_score", "900"),  # out of range
        ("home_ownership", "BOAT"),  # unknown category
        ("loan_amount", np.nan),  # null in a non-nullable column
        ("application_id", np.nan),  # null id
        ("debt_to_income", "inf"),  # not finite
        ("income", "abc"),  # not a number
        ("applied_at", "yesterday"),  # not a timestamp
    ],
)
def test_bad_value_quarantines_only_its_row_with_reason_naming_column(spec, column, value):
    result = validate_batch(text_batch(3, **{column: value}), spec)
    assert not result.schema_errors
    assert result.valid["application_id"].tolist() == ["a0", "a2"]
    assert result.quarantined.index.tolist() == [1]
    assert result.quarantined["reason"].iloc[0].startswith(f"{column}:")
    assert result.bad_row_share == pytest.approx(1 / 3)


INT_SPEC = {"name": "toy", "id": "rid", "event_time": "ts", "target": {"name": "y", "classes": [0, 1]},
            "columns": {"rid": {"type": "int"}, "ts": {"type": "timestamp"}, "n": {"type": "int", "min": 0}}}


def test_an_int_beyond_64_bits_is_quarantined_not_a_crash():
    """Int columns without a declared max: a value Int64 storage cannot hold is a bad row."""
    batch = pd.DataFrame({"rid": ["1", "2", "3", "-1e19", "-9223372036854775808"], "ts": "2025-01-01",
                          "n": ["1e30", "99999999999999999999", "inf", "7", "7"]})
    result = validate_batch(batch, parse_spec(INT_SPEC))
    assert result.quarantined["reason"].tolist() == [
        "n: not a whole number within 64 bits (got 1e+30)", "n: not a whole number within 64 bits (got 1e+20)",
        "n: finite (got inf)", "rid: not a whole number within 64 bits (got -1e+19)"]
    assert result.valid["rid"].tolist() == [-(2**63)] and str(result.valid["rid"].dtype) == "Int64"


def test_quarantined_rows_keep_their_original_text(spec):
    result = validate_batch(text_batch(3, age="42.5"), spec)
    assert result.quarantined["age"].iloc[0] == "42.5"


def test_duplicate_id_quarantines_both_rows(spec):
    batch = text_batch(4, application_id="a2")
    result = validate_batch(batch, spec)
    assert result.valid["application_id"].tolist() == ["a0", "a3"]
    assert sorted(result.quarantined.index) == [1, 2]
    assert all(r.startswith("application_id:") for r in result.quarantined["reason"])


def test_missing_required_column_quarantines_every_row(spec):
    batch = text_batch(3).drop(columns=["credit_score"])
    result = validate_batch(batch, spec)
    assert result.schema_errors and "credit_score" in result.schema_errors[0]
    assert len(result.quarantined) == 3 and result.bad_row_share == 1.0
    assert result.valid.empty
    assert list(result.valid.columns) == spec.column_names
    assert str(result.valid["age"].dtype) == "Int64"


def test_extra_undeclared_columns_are_dropped(spec):
    result = validate_batch(text_batch(2).assign(surprise="x"), spec)
    assert len(result.valid) == 2
    assert list(result.valid.columns) == spec.column_names


def test_event_time_outside_partition_window_is_quarantined(spec):
    batch = text_batch(3, applied_at="2025-01-02 00:00:00")  # the window's end is exclusive
    window = (pd.Timestamp("2025-01-01"), pd.Timestamp("2025-01-02"))
    result = validate_batch(batch, spec, window=window)
    assert result.valid["application_id"].tolist() == ["a0", "a2"]
    assert result.quarantined["application_id"].tolist() == ["a1"]
    assert "applied_at" in result.quarantined["reason"].iloc[0]
    assert result.quarantined["applied_at"].iloc[0] == "2025-01-02 00:00:00"  # as it arrived


def test_event_time_in_the_future_is_quarantined_beyond_the_tolerance(spec):
    now = pd.Timestamp("2025-01-01 06:00:00")
    batch = text_batch(3, applied_at="2025-01-02 07:00:00")  # 25 h after `now`
    batch.loc[2, "applied_at"] = "2025-01-02 05:00:00"  # 23 h: clock skew, accepted
    result = validate_batch(batch, spec, now=now)
    assert result.valid["application_id"].tolist() == ["a0", "a2"]
    [reason] = result.quarantined["reason"]
    assert reason == (f"applied_at: in the future, more than {FUTURE_TOLERANCE.days} day after ingestion at 2025-01-01 "
                      "06:00 UTC — check the export's clock and time zone (got 2025-01-02 07:00:00)")


def test_a_row_both_in_the_future_and_outside_the_window_gets_both_reasons(spec):
    window = (pd.Timestamp("2025-01-01"), pd.Timestamp("2025-01-02"))
    result = validate_batch(text_batch(3, applied_at="2030-01-01 00:00:00"), spec, window, now=pd.Timestamp("2025-01-01 12:00"))
    [reason] = result.quarantined["reason"]
    assert reason.startswith("applied_at: in the future") and "; applied_at: outside partition [2025-01-01" in reason
    assert "deliver the row in the file of its own partition (got 2030-01-01 00:00:00)" in reason


def test_a_time_with_an_offset_is_quoted_as_delivered_next_to_its_utc_time(spec, tmp_path):
    batch = text_batch(3)
    batch["applied_at"] = ["2025-01-01T10:00:00+01:00", "2025-01-01T00:30:00+01:00", "2025-01-01T23:30:00+01:00"]
    window = (pd.Timestamp("2025-01-01"), pd.Timestamp("2025-01-02"))
    result = validate_batch(batch, spec, window)
    [reason] = result.quarantined["reason"]  # 00:30 at +01:00 is 23:30 UTC the day before
    assert reason.endswith("deliver the row in the file of its own partition "
                           "(got 2024-12-31 23:30:00 UTC, delivered as 2025-01-01T00:30:00+01:00)")
    assert result.valid["applied_at"].tolist() == [pd.Timestamp("2025-01-01 09:00"), pd.Timestamp("2025-01-01 22:30")]
    # check-batch (DuckDB) converts the offset the same way and gives the same reason
    from retrain_assets.core.ingestion import large_batch as lb

    path = tmp_path / "2025-01-01.csv"
    batch.to_csv(path, index=False)
    with lb.connect("256MB", 1) as con:
        got = lb.validate_large_batch(con, path, spec, tmp_path / "out", window=window)
    assert (got.n_valid, pd.read_parquet(got.quarantine_path)["reason"].tolist()) == (2, [reason])


def test_a_redelivered_row_is_counted_and_a_changed_one_quarantined(spec):
    first = validate_batch(text_batch(3), spec)
    seen = {key: ("2025-01-01.csv (this partition)", p)
            for key, p in zip(first.valid["application_id"], row_fingerprints(first.valid, spec))}
    again = text_batch(4, income="50001")  # a0 and a2 unchanged, a1 changed, a3 new
    result, redelivered = set_aside_repeats(validate_batch(again, spec), again,
                                            row_fingerprints(validate_batch(again, spec).valid, spec), seen, "application_id")
    assert redelivered == 2 and result.valid["application_id"].tolist() == ["a3"]
    [reason] = result.quarantined["reason"]
    assert reason.startswith("application_id: id already ingested with other values — drop the repeated row")
    assert reason.endswith("(got a1, first ingested from 2025-01-01.csv (this partition))")
    assert result.quarantined["income"].tolist() == ["50001"]  # as it arrived


def test_row_fingerprints_survive_the_warehouse_round_trip(spec):
    import duckdb

    valid = validate_batch(text_batch(3, income=np.nan), spec).valid
    with duckdb.connect() as con:
        con.register("valid", valid)
        stored = con.execute("create table t as select * from valid; select * from t").df()
    assert row_fingerprints(stored, spec).tolist() == row_fingerprints(valid, spec).tolist()
    assert row_fingerprints(valid, spec).nunique() == 3


def test_set_aside_moves_rows_with_a_reason_and_keeps_their_delivered_values(spec):
    batch = text_batch(3, age="042")
    result = set_aside(validate_batch(batch, spec), batch, pd.Series(["", "why", ""]))
    assert result.valid["application_id"].tolist() == ["a0", "a2"]
    assert result.quarantined["age"].tolist() == ["042"] and result.quarantined["reason"].tolist() == ["why"]
    unchanged = validate_batch(batch, spec)
    assert set_aside(unchanged, batch, pd.Series("", index=unchanged.valid.index)) is unchanged


def test_repeated_id_reasons_name_where_the_id_was_first_ingested():
    reasons = repeated_id_reasons(pd.Series(["a", "b", "c"]), {"b": "partition 2025-01-01 (x.csv)"}, "id")
    assert reasons.tolist() == ["", "id: id already ingested — drop the repeated row, or give it an id of its own if it "
                                    "is another record (got b, first ingested from partition 2025-01-01 (x.csv))", ""]
    assert repeated_id_reasons(pd.Series([1, 2], dtype="Int64"), {2: "x.csv"}, "id").ne("").tolist() == [False, True]


def test_undeclared_columns_are_named(spec):
    assert undeclared_columns(text_batch(2).assign(note="x", score_v2=1), spec) == ["note", "score_v2"]
    assert undeclared_columns(text_batch(2), spec) == []


def test_bad_row_share_counts_window_and_contract_rejections(spec):
    batch = text_batch(4, applied_at="2025-02-01 00:00:00")
    batch.loc[3, "age"] = "7"  # below min 18
    result = validate_batch(batch, spec, window=(pd.Timestamp("2025-01-01"), pd.Timestamp("2025-01-02")))
    assert len(result.valid) == 2
    assert result.bad_row_share == 0.5


@pytest.fixture(scope="module")
def int_id_spec():
    return load_spec(SPECS / "rainfall.yaml")  # id day_index: int; target rain: [0, 1]


def test_validate_labels_rejects_label_outside_classes_and_casts_int_ids(int_id_spec):
    labels = pd.DataFrame({"day_index": ["1", "2", "3"], "rain": ["0", "1", "2"]})
    result = validate_labels(labels, int_id_spec)
    assert result.valid["day_index"].tolist() == [1, 2]
    assert str(result.valid["day_index"].dtype) == "Int64"
    assert result.quarantined.index.tolist() == [2]
    assert result.quarantined["reason"].iloc[0].startswith("rain:")


def test_non_numeric_label_quarantines_only_its_row(int_id_spec):
    labels = pd.DataFrame({"day_index": ["1", "2", "3"], "rain": ["0", "yes", "1"]})
    result = validate_labels(labels, int_id_spec)
    assert result.quarantined.index.tolist() == [1]
    assert result.valid["day_index"].tolist() == [1, 3]


def test_a_label_id_that_is_no_storable_int_is_rejected_not_a_crash(int_id_spec):
    labels = pd.DataFrame({"day_index": ["1", "1e30", "1.5", "inf"], "rain": ["0", "1", "1", "0"]})
    result = validate_labels(labels, int_id_spec)
    assert result.valid["day_index"].tolist() == [1]
    assert result.quarantined["reason"].tolist() == ["day_index: not a whole number within 64 bits (got 1e+30)",
                                                     "day_index: integral (got 1.5)", "day_index: finite (got inf)"]


def test_label_file_without_id_column_is_a_schema_error(int_id_spec):
    result = validate_labels(pd.DataFrame({"rain": ["0", "1"]}), int_id_spec)
    assert result.schema_errors and "day_index" in result.schema_errors[0]
    assert len(result.quarantined) == 2


def test_bool_column_accepts_csv_text():
    spec = parse_spec(
        {
            "name": "toy",
            "id": "rid",
            "event_time": "ts",
            "target": {"name": "y", "classes": [0, 1]},
            "columns": {"rid": {"type": "int"}, "ts": {"type": "timestamp"}, "flag": {"type": "bool"}},
        }
    )
    batch = pd.DataFrame({"rid": ["1", "2"], "ts": ["2025-01-01", "2025-01-01"], "flag": ["True", "false"]})
    result = validate_batch(batch, spec)
    assert result.quarantined.empty
    assert result.valid["flag"].tolist() == [True, False]


def test_quarantine_records_keep_original_row_and_one_based_row_numbers(spec):
    result = validate_batch(text_batch(3, credit_score="900"), spec)
    records = quarantine_records(result.quarantined, "batches/2025-01-01.csv")
    assert records.columns.tolist() == ["source_file", "row_number", "reason", "row_json"]
    assert records["row_number"].tolist() == [2]
    assert records["source_file"].iloc[0] == "batches/2025-01-01.csv"
    assert records["reason"].iloc[0].startswith("credit_score:")
    row = json.loads(records["row_json"].iloc[0])
    assert row == {**GOOD_ROW, "application_id": "a1", "credit_score": "900"}
