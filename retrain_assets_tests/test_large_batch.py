"""The DuckDB path for big batches (`core.ingestion.large_batch`, `core.monitoring.large_batch_drift`,
`retrain-assets check-batch`) against the pandas path (`validate_batch`, `feature_drift`,
`dataset_drift`) on small files."""

import dataclasses
import warnings

import duckdb
import numpy as np
import pandas as pd
import pytest

from retrain_assets.apps.cli.main import main
from retrain_assets.core.ingestion import contract_sql
from retrain_assets.core.ingestion import large_batch as lb
from retrain_assets.core.ingestion import rules
from retrain_assets.core.ingestion.contracts import validate_batch
from retrain_assets.core.monitoring.drift import FEATURE_COLUMNS, dataset_drift, feature_drift, out_of_distribution_share
from retrain_assets.core.monitoring.profile import build_reference_profile
from retrain_assets.core.monitoring.large_batch_drift import large_batch_drift
from retrain_assets.core.ingestion.landing import read_landing_file
from retrain_assets.core.offline.scenario import generate_day
from retrain_assets.core.spec import load_spec, parse_spec
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import LOAN_SPEC

WINDOW = (pd.Timestamp("2025-01-04"), pd.Timestamp("2025-01-06"))
NOW = pd.Timestamp("2025-01-04 12:00")
STATS = ["n_reference", "n_current", "missing_share", "psi", "ks_statistic", "ks_p_value", "wasserstein_norm", "jensen_shannon",
         "chi2_statistic", "chi2_p_value", "p_value", "p_value_adjusted", "drift_score", "threshold"]


@pytest.fixture(autouse=True)
def _quiet_pandera():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


@pytest.fixture(scope="module")
def spec():
    return load_spec(LOAN_SPEC)


@pytest.fixture(scope="module")
def profile(spec, scenario):
    reference = validate_batch(pd.concat([generate_day(scenario, d)[0] for d in range(4)]), spec).valid
    # A kept sample smaller than the batch, so that KS and Wasserstein go through the SQL merge.
    thresholds = dataclasses.replace(spec.policy.drift, max_reference_sample=60)
    return build_reference_profile(reference, spec.numeric_features, spec.categorical_features, thresholds=thresholds)


@pytest.fixture(scope="module")
def scenario():
    from retrain_assets.core.offline.scenario import load_scenario
    from retrain_assets_tests.conftest import LOAN_SCENARIO

    return load_scenario(LOAN_SCENARIO)


def broken_batch(scenario, drift: bool = False) -> pd.DataFrame:
    """Days 3 and 4 with nulls, out-of-range values, unknown categories, inf, non-integers,
    duplicate ids and event times outside the window / in the future."""
    b = pd.concat([generate_day(scenario, d)[0] for d in (3, 4)]).reset_index(drop=True)
    rng = np.random.default_rng(7)
    pick = lambda k: rng.choice(len(b), k, replace=False)  # noqa: E731
    b.loc[pick(6), "income"] = np.nan
    b.loc[pick(4), "loan_amount"] = np.nan
    b.loc[pick(4), "age"] = 150
    b.loc[pick(3), "credit_score"] = 700.5
    b.loc[pick(4), "home_ownership"] = "CASTLE"
    b.loc[pick(3), "region"] = None
    b.loc[pick(3), "debt_to_income"] = np.inf
    b.loc[pick(3), "application_id"] = b.loc[0, "application_id"]
    b.loc[pick(2), "applied_at"] = pd.NaT
    b.loc[pick(3), "applied_at"] = pd.Timestamp("2025-01-09 08:30:00")
    if drift:
        b["income"] *= 2.5
        b["credit_score"] = (b["credit_score"] - 80).clip(300, 850)
        b.loc[b.index % 2 == 0, "purpose"] = "business"
    return b


def both_paths(tmp_path, spec, frame, fmt="parquet", window=WINDOW, now=NOW, profile=None, thresholds=None):
    path = tmp_path / f"batch.{fmt}"
    frame.to_parquet(path) if fmt == "parquet" else frame.to_csv(path, index=False)
    expected = validate_batch(read_landing_file(path), spec, window=window, now=now)
    con = lb.connect("256MB", 2, tmp_path / "spill")
    got = lb.validate_large_batch(con, path, spec, tmp_path / "out", window=window, now=now)
    drift = None
    if profile is not None and not got.schema_errors:
        drift = large_batch_drift(con, got.valid_path, profile, thresholds or spec.policy.drift)
    con.close()
    return expected, got, drift


def assert_same_contract(expected, got):
    quarantined = pd.read_parquet(got.quarantine_path)
    assert got.n_rows == expected.n_rows == got.n_valid + got.n_quarantined
    assert (got.n_valid, got.n_quarantined) == (len(expected.valid), len(expected.quarantined))
    assert len(pd.read_parquet(got.valid_path)) == got.n_valid
    pandas_side = expected.quarantined.assign(row_number=expected.quarantined.index + 1).sort_values("row_number")
    assert quarantined["row_number"].tolist() == pandas_side["row_number"].tolist()
    assert quarantined["reason"].tolist() == pandas_side["reason"].tolist()


def assert_same_drift(features, summary, valid, profile, thresholds):
    expected = feature_drift(profile, valid, thresholds)
    assert list(features.columns) == FEATURE_COLUMNS
    np.testing.assert_allclose(features[STATS].to_numpy(float), expected[STATS].to_numpy(float), rtol=1e-9, atol=1e-12)
    exact = ["ks_statistic", "ks_p_value", "wasserstein_norm"]  # the same numpy code on the same values
    assert features[exact].equals(expected[exact])
    for col in ("feature", "kind", "psi_band", "test", "drifted"):
        assert features[col].tolist() == expected[col].tolist()
    assert {k: summary[k] for k in dataset_drift(expected, thresholds)} == dataset_drift(expected, thresholds)
    assert summary["ood_share"] == out_of_distribution_share(profile, valid)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("drifted", [False, True])
def test_sql_path_matches_the_pandas_path(tmp_path, spec, scenario, profile, fmt, drifted):
    expected, got, (features, summary) = both_paths(tmp_path, spec, broken_batch(scenario, drifted), fmt, profile=profile)
    assert_same_contract(expected, got)
    assert {"age: in_range(18, 100)", "application_id: field_uniqueness", "applied_at: outside partition",
            "debt_to_income: finite", "credit_score: integral", "region: not_nullable"} <= set(got.rule_counts)
    assert_same_drift(features, summary, expected.valid, profile, spec.policy.drift)
    assert summary["dataset_drifted"] is drifted


def test_distance_verdicts_match_on_a_drifted_batch(tmp_path, spec, scenario, profile):
    """With large_sample_rows below the batch size the Wasserstein / Jensen-Shannon tests decide."""
    thresholds = dataclasses.replace(spec.policy.drift, large_sample_rows=50)
    expected, got, (features, summary) = both_paths(tmp_path, spec, broken_batch(scenario, drift=True), profile=profile,
                                                    thresholds=thresholds)
    assert set(features["test"]) == {"wasserstein", "jensen_shannon"}
    assert features["drifted"].any()
    assert_same_drift(features, summary, expected.valid, profile, thresholds)


def test_uncastable_text_gets_pandera_reasons(tmp_path, spec, scenario):
    """Rows with text that is not a number are judged like pandera's first pass (the other checks
    of that column skipped, duplicates among all rows); the others like its second pass."""
    t = generate_day(scenario, 3)[0].reset_index(drop=True).astype(object)
    t.loc[1, "age"] = "abc"
    t.loc[2, "credit_score"], t.loc[2, "age"], t.loc[2, "sex"] = "x", 150, None
    t.loc[3, "income"], t.loc[4, "employment_years"] = "1e3", " 4 "
    t.loc[5, "application_id"], t.loc[5, "age"] = t.loc[6, "application_id"], "zz"
    t.loc[7, "loan_amount"] = "inf"
    for fmt in ("csv", "parquet"):
        frame = t if fmt == "csv" else t.astype(str).replace({"nan": None, "None": None})
        expected, got, _ = both_paths(tmp_path, spec, frame, fmt, window=None, now=None)
        assert_same_contract(expected, got)
        assert got.rule_counts["age: coerce_dtype('float64')"] == 2


def test_every_row_uncastable_and_timestamps_at_midnight(tmp_path, spec, scenario):
    b = generate_day(scenario, 3)[0].astype(object)
    b["age"] = "n/a-ish"
    expected, got, _ = both_paths(tmp_path, spec, b, "csv", window=None, now=None)
    assert_same_contract(expected, got)
    assert got.n_valid == 0
    midnight = generate_day(scenario, 3)[0]
    midnight["applied_at"] = midnight["applied_at"].dt.normalize()
    midnight.loc[0, "applied_at"] = pd.Timestamp("2025-01-09")
    expected, got, _ = both_paths(tmp_path, spec, midnight, now=NOW)
    assert_same_contract(expected, got)  # pandas writes dates only when every time is midnight
    assert "(got 2025-01-09)" in pd.read_parquet(got.quarantine_path)["reason"].iloc[0]


def test_missing_columns_block_the_batch(tmp_path, spec, scenario):
    expected, got, _ = both_paths(tmp_path, spec, generate_day(scenario, 3)[0].drop(columns=["age", "sex"]))
    # pandera lists missing columns in no stable order; the SQL path follows the spec
    assert got.schema_errors == ["required column 'age' is missing", "required column 'sex' is missing"]
    assert set(got.schema_errors) == set(expected.schema_errors)
    assert got.blocked(spec.policy.max_bad_row_share) and got.n_valid == 0 and got.n_quarantined == expected.n_rows
    assert pd.read_parquet(got.valid_path).columns.tolist() == spec.column_names


def test_a_column_of_the_wrong_stored_type_is_a_schema_error(tmp_path, spec, scenario):
    b = generate_day(scenario, 3)[0]
    b["income"] = pd.Timestamp("2025-01-01")
    path = tmp_path / "b.parquet"
    b.to_parquet(path)
    got = lb.validate_large_batch(lb.connect(), path, spec, tmp_path)
    assert got.schema_errors and "column 'income' has type TIMESTAMP" in got.schema_errors[0]


def test_mixed_timestamp_text_differs_by_design(tmp_path, spec, scenario):
    """pandas infers one timestamp format from the data and blocks a batch mixing two ISO forms;
    DuckDB casts each value, so the SQL path accepts them (documented in the module)."""
    b = generate_day(scenario, 3)[0].astype(str)
    b.loc[b.index[0], "applied_at"] = "2025-01-04"
    expected, got, _ = both_paths(tmp_path, spec, b, "csv", window=None, now=None)
    assert expected.schema_errors and not got.schema_errors and got.n_quarantined == 0


def test_bool_and_int_id_columns(tmp_path):
    spec = parse_spec({"name": "t", "id": "id", "event_time": "ts", "target": {"name": "y", "classes": [0, 1]},
                       "columns": {"id": {"type": "int"}, "ts": {"type": "timestamp"}, "a": {"type": "float", "min": 0},
                                   "b": {"type": "bool"}, "c": {"type": "category", "categories": ["x", "y"]},
                                   "d": {"type": "int", "max": 9, "nullable": True}}})
    frame = pd.DataFrame({"id": range(8), "ts": pd.Timestamp("2025-01-01 10:00:00.250"), "a": 1.0, "b": True, "c": "x", "d": 3.0})
    frame.loc[1, "id"], frame.loc[2, "a"], frame.loc[3, "d"], frame.loc[4, "d"] = 0, -0.5, 10, np.nan
    frame["b"] = frame["b"].astype(object)
    frame.loc[5, "b"] = None
    frame.loc[6, "ts"] = pd.Timestamp("2025-01-03")
    window = (pd.Timestamp("2025-01-01"), pd.Timestamp("2025-01-02"))
    for fmt in ("parquet", "csv"):
        expected, got, _ = both_paths(tmp_path, spec, frame, fmt, window=window, now=None)
        assert_same_contract(expected, got)
    types = dict(duckdb.sql(f"select column_name, column_type from (describe from '{got.valid_path}')").fetchall())
    assert types["id"] == types["d"] == "BIGINT" and got.n_valid == 2


def test_ints_beyond_64_bits_get_the_same_verdict_and_reason(tmp_path):
    spec = parse_spec({"name": "t", "id": "id", "event_time": "ts", "target": {"name": "y", "classes": [0, 1]},
                       "columns": {"id": {"type": "int"}, "ts": {"type": "timestamp"}, "n": {"type": "int", "min": 0}}})
    frame = pd.DataFrame({"id": ["1", "2", "3", "-1e19", "-9223372036854775808", "6"], "ts": "2025-01-01 10:00:00",
                          "n": ["1e30", "99999999999999999999", "inf", "7", "7", "9223372036854775807"]})
    for fmt in ("parquet", "csv"):
        expected, got, _ = both_paths(tmp_path, spec, frame, fmt, window=None, now=None)
        assert_same_contract(expected, got)
    assert got.rule_counts == {"n: not a whole number within 64 bits": 3, "n: finite": 1,
                               "id: not a whole number within 64 bits": 1}
    assert pd.read_parquet(got.valid_path)["id"].tolist() == [-(2**63)]


def test_bool_and_missing_text_come_from_the_contract(tmp_path):
    """check-batch builds its SQL from `rules.BOOL_TEXT` and `MISSING_TEXT` (no copies), and
    reads every spelling as the pandas path does."""
    assert contract_sql.BOOL_TEXT is rules.BOOL_TEXT and lb.MISSING_TEXT is rules.MISSING_TEXT
    spec = parse_spec({"name": "t", "id": "id", "event_time": "ts", "target": {"name": "y", "classes": [0, 1]},
                       "columns": {"id": {"type": "int"}, "ts": {"type": "timestamp"}, "b": {"type": "bool"},
                                   "x": {"type": "float", "nullable": True}}})
    missing, spellings = sorted(rules.MISSING_TEXT), [f" {t.upper()} " for t in rules.BOOL_TEXT] + ["maybe"]
    n = max(len(missing), len(spellings))
    frame = pd.DataFrame({"id": range(n), "ts": "2025-01-01", "b": (spellings * n)[:n], "x": (missing * n)[:n]})
    expected, got, _ = both_paths(tmp_path, spec, frame, "csv", window=None, now=None)
    assert_same_contract(expected, got)
    assert got.n_quarantined == 2 and pd.read_parquet(got.valid_path)["x"].isna().all()


def test_outputs_are_written_atomically(tmp_path, spec, scenario):
    expected, got, _ = both_paths(tmp_path, spec, broken_batch(scenario), "csv")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["batch.quarantine.parquet", "batch.valid.parquet"]
    quarantined = pd.read_parquet(got.quarantine_path)
    assert {"reason", "row_number", *spec.column_names} <= set(quarantined.columns)


def test_check_batch_cli(tmp_path, spec, scenario, profile, capsys):
    batch = tmp_path / "batch.parquet"
    generate_day(scenario, 3)[0].to_parquet(batch)
    reference = tmp_path / "profile.json"
    reference.write_text(profile.to_json())
    code = main(["check-batch", str(batch), "--spec", str(LOAN_SPEC), "--reference", str(reference), "--out", str(tmp_path / "o"),
                 "--memory-limit", "256MB"])
    out = capsys.readouterr().out
    assert code == 0
    assert "-> passed" in out and "features drifted" in out and "peak RSS" in out
    header = next(line.split() for line in out.splitlines() if line.split()[:2] == ["feature", "kind"])
    assert header[-3:] == ["detected", "severity", "drifted"]  # every feature's two verdicts beside the drift one
    assert (tmp_path / "o" / "batch.valid.parquet").exists()

    broken = tmp_path / "broken.parquet"
    b = generate_day(scenario, 3)[0]
    b.loc[b.index[: len(b) // 2], "age"] = 150
    b.to_parquet(broken)
    code = main(["check-batch", str(broken), "--spec", str(LOAN_SPEC), "--reference", str(reference), "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 1
    assert "BLOCKED" in captured.out and "age: in_range(18, 100)" in captured.out
    assert "batch blocked" in captured.err and "broken.quarantine.parquet" in captured.err


def test_check_batch_cli_reads_the_champion_profile(tmp_path, spec, scenario, profile, capsys):
    batch = tmp_path / "batch.parquet"
    generate_day(scenario, 3)[0].to_parquet(batch)
    args = ["check-batch", str(batch), "--spec", str(LOAN_SPEC), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "no warehouse" in capsys.readouterr().err
    database = ProjectSettings(data_dir=tmp_path / "data", spec_path=LOAN_SPEC).warehouse_path  # the dataset's own file
    database.parent.mkdir(parents=True)
    with duckdb.connect(str(database)) as con:
        con.execute("create table deployed_model as select timestamp '2025-01-02' as deployed_at, '3' as champion_version")
        # The columns monitoring.reference_profile writes (the row sample is read back too).
        sample = generate_day(scenario, 1)[0].head(5).to_json(orient="split", date_format="iso")
        con.execute("create table reference_profile as select '3' as model_version, timestamp '2025-01-02' as created_at, "
                    "? as profile_json, ? as sample_json", [profile.to_json(), sample])
    assert main(args) == 0
    assert "champion v3's reference profile" in capsys.readouterr().out
