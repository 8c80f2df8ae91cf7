"""The columnar path of `retrain-assets drift` (`core.ingestion.columnar`, `core.monitoring.columnar_drift`):
the same contract verdicts and reasons as pandera, and the same statistics as the frame path."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from retrain_assets.apps.cli.main import main
from retrain_assets.core.ingestion.columnar import ParquetColumns
from retrain_assets.core.ingestion.contracts import batch_schema, validate_batch
from retrain_assets.core.ingestion.rules import ColumnRule, column_rules, value_checks
from retrain_assets.core.monitoring.columnar_drift import compare_parquet
from retrain_assets.core.monitoring.drift import feature_drift, out_of_distribution_share
from retrain_assets.core.monitoring.profile import build_reference_profile
from retrain_assets.core.spec import load_spec
from retrain_assets_tests.conftest import LOAN_SPEC

NO_SEGMENTS = {"segments": []}


@pytest.fixture(scope="module")
def spec():
    return load_spec(LOAN_SPEC, NO_SEGMENTS)


def _days(scenario, days):
    from retrain_assets.core.offline.scenario import generate_day

    return pd.concat([generate_day(scenario, d)[0] for d in days], ignore_index=True)


def _broken(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that break each kind of feature rule (ids and times stay valid)."""
    frame = frame.copy()
    frame.loc[0, "age"] = 17  # in_range
    frame.loc[1, "credit_score"] = 700.5  # integral
    frame.loc[2, "loan_amount"] = np.inf  # finite and in_range
    frame.loc[3, "debt_to_income"] = np.nan  # not_nullable
    frame.loc[4, "region"] = "mars"  # isin
    frame.loc[5, "home_ownership"] = None  # not_nullable (text)
    frame.loc[6, ["age", "region"]] = [150, "venus"]  # two columns at once
    return frame


def test_value_checks_are_the_pandera_schemas_checks(spec):
    rules = [*column_rules(spec), ColumnRule("n", "int", True), ColumnRule("m", "int", True, min=0),
             ColumnRule("k", "float", True, max=2.5), ColumnRule("b", "int", True, min=-(2**63), max=2**63 - 1)]
    for rule in rules:
        schema = batch_schema(spec) if rule.name in spec.column_names else None
        if schema is None:
            from retrain_assets.core.ingestion.contracts import _column_checks
            pandera = [(c.name, c.error or c.name) for c in _column_checks(rule)]
        else:
            pandera = [(c.name, c.error or c.name) for c in schema.columns[rule.name].checks]
        assert value_checks(rule) == pandera, rule.name


def test_the_contract_of_the_feature_columns_matches_pandera(tmp_path, spec, scenario):
    frame = _broken(_days(scenario, range(0, 2)))
    path = tmp_path / "batch.parquet"
    frame.to_parquet(path, index=False)
    pandera = validate_batch(pd.read_parquet(path), spec)
    reader = ParquetColumns(path, spec.categorical_features)
    compared = compare_parquet(reader, reader, spec, spec.policy.drift, 100, 100)
    contract = compared.current_contract
    assert contract.n_rows == len(frame) and contract.n_quarantined == len(pandera.quarantined) == 7
    np.testing.assert_array_equal(np.flatnonzero(~contract.valid), pandera.quarantined.index.to_numpy())
    assert contract.first_reason == pandera.quarantined["reason"].iloc[0] == "age: in_range(18, 100) (got 17.0)"
    assert contract.rule_counts["age: in_range(18, 100)"] == 2
    row_6 = validate_batch(pd.read_parquet(path).iloc[6:7], spec).quarantined["reason"].iloc[0]
    assert row_6 == "age: in_range(18, 100) (got 150.0); region: isin(['north', 'south', 'east', 'west']) (got venus)"


def test_statistics_equal_the_frame_paths(tmp_path, spec, scenario):
    reference, current = _days(scenario, range(0, 5)), _broken(_days(scenario, range(20, 23)))
    reference.to_parquet(tmp_path / "r.parquet", index=False)
    current.to_parquet(tmp_path / "c.parquet", index=False)
    readers = [ParquetColumns(tmp_path / f"{s}.parquet", spec.categorical_features) for s in "rc"]
    compared = compare_parquet(*readers, spec, spec.policy.drift, 1000, 100, seed=0)
    ref_valid = validate_batch(reference, spec).valid
    cur_valid = validate_batch(current, spec).valid
    profile = build_reference_profile(ref_valid, spec.numeric_features, spec.categorical_features, thresholds=spec.policy.drift)
    expected = feature_drift(profile, cur_valid, spec.policy.drift)
    pd.testing.assert_frame_equal(compared.measures.features, expected)
    assert compared.profile.numeric.keys() == profile.numeric.keys()
    for name, prof in profile.numeric.items():
        np.testing.assert_array_equal(compared.profile.numeric[name].sorted_values, prof.sorted_values)
    assert {n: p.counts for n, p in compared.profile.categorical.items()} == {n: p.counts for n, p in profile.categorical.items()}
    assert compared.measures.ood_share == out_of_distribution_share(profile, cur_valid)
    assert compared.measures.n_rows == len(cur_valid) and len(compared.current_rows) == 100
    assert compared.current_rows["application_id"].isin(cur_valid["application_id"]).all()


def _write_spec(tmp_path):
    import yaml

    raw = yaml.safe_load(LOAN_SPEC.read_text())
    raw["segments"] = []
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_cli_gives_the_same_verdict_on_parquet_as_on_csv(tmp_path, scenario, capsys):
    spec_path = _write_spec(tmp_path)
    reference, current = _days(scenario, range(0, 7)), _broken(_days(scenario, range(20, 23)))
    for kind in ("csv", "parquet"):
        for name, frame in (("reference", reference), ("current", current)):
            getattr(frame, f"to_{kind}")(tmp_path / f"{name}.{kind}", index=False)
        assert main(["drift", "--reference", str(tmp_path / f"reference.{kind}"), "--current", str(tmp_path / f"current.{kind}"),
                     "--spec", str(spec_path), "--out", str(tmp_path / kind)]) == 0
    out = capsys.readouterr().out
    assert out.count("current: 7 of 426 rows break the contract and are left out (first reason: age: in_range(18, 100) (got 17.0))") == 2
    csv, parquet = (json.loads((tmp_path / k / "drift_report.json").read_text()) for k in ("csv", "parquet"))
    assert {f["feature"] for f in parquet["features"] if f["drifted"]} == {"income", "credit_score", "region"}
    for got, want in zip(parquet["features"], csv["features"]):
        assert got["feature"] == want["feature"] and got["drifted"] == want["drifted"] and got["detected"] == want["detected"]
        assert got["ks_statistic"] == pytest.approx(want["ks_statistic"], nan_ok=True)
    assert parquet["summary"]["ood_share"] == pytest.approx(csv["summary"]["ood_share"])
    assert parquet["summary"]["multivariate_auc"] > 0.5 and 0 <= parquet["summary"]["novelty_share"] < 0.05
    assert (tmp_path / "parquet" / "drift_report.html").read_text().count("<svg") == 9


def test_the_console_script_flushes_everything_before_it_exits_at_once(tmp_path, scenario):
    """`retrain-assets drift` ends its process without the interpreter's teardown (`main.console`):
    what it printed to a pipe must arrive whole, with its exit code."""
    spec_path = _write_spec(tmp_path)
    for name, days in (("reference", range(0, 3)), ("current", range(20, 22))):
        _days(scenario, days).to_parquet(tmp_path / f"{name}.parquet", index=False)
    command = [sys.executable, "-m", "retrain_assets.apps.cli", "drift", "--reference", str(tmp_path / "reference.parquet"),
               "--current", str(tmp_path / "current.parquet"), "--spec", str(spec_path), "--out", str(tmp_path / "o")]
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a user's shell runs it
    summary = subprocess.run(command, capture_output=True, text=True, timeout=120, env=buffered)
    assert summary.returncode == 0, summary.stderr
    assert "features drifted" in summary.stdout and summary.stdout.endswith("drift_report.html\n")
    report = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120, env=buffered)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout) == json.loads((tmp_path / "o" / "drift_report.json").read_text())
    missing = subprocess.run([sys.executable, "-m", "retrain_assets.apps.cli", "drift", "--reference", str(tmp_path / "nope.parquet"),
                              "--current", str(tmp_path / "current.parquet"), "--spec", str(spec_path)],
                             capture_output=True, text=True, timeout=120, env=buffered)
    assert missing.returncode == 2 and "no reference file at" in missing.stderr


def test_a_missing_column_is_an_error_and_text_numbers_take_the_pandas_path(tmp_path, scenario, capsys):
    spec_path = _write_spec(tmp_path)
    reference = _days(scenario, range(0, 3))
    reference.to_parquet(tmp_path / "r.parquet", index=False)
    reference.drop(columns=["income"]).to_parquet(tmp_path / "broken.parquet", index=False)
    args = ["drift", "--reference", str(tmp_path / "r.parquet"), "--spec", str(spec_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--current", str(tmp_path / "broken.parquet")]) == 2
    assert "current file" in (err := capsys.readouterr().err) and "required column 'income' is missing" in err
    reference.astype({"income": str}).to_parquet(tmp_path / "text.parquet", index=False)
    assert main([*args, "--current", str(tmp_path / "text.parquet")]) == 0
    assert "0/9 features drifted" in capsys.readouterr().out


def test_segments_equal_the_frame_paths(tmp_path, scenario):
    spec = load_spec(LOAN_SPEC)  # segments: [region]
    assert tuple(spec.segment_columns) == ("region",)
    reference, current = _days(scenario, range(0, 5)), _broken(_days(scenario, range(20, 23)))
    reference.to_parquet(tmp_path / "r.parquet", index=False)
    current.to_parquet(tmp_path / "c.parquet", index=False)
    readers = [ParquetColumns(tmp_path / f"{s}.parquet", spec.categorical_features) for s in "rc"]
    compared = compare_parquet(*readers, spec, spec.policy.drift, 1000, 100, seed=0)
    ref_valid, cur_valid = validate_batch(reference, spec).valid, validate_batch(current, spec).valid
    profile = build_reference_profile(ref_valid, spec.numeric_features, spec.categorical_features, thresholds=spec.policy.drift,
                                      segments=spec.segment_columns)
    from retrain_assets.core.monitoring.segment_drift import segment_drift, segment_summary

    expected = segment_summary(segment_drift(profile, cur_valid, spec.policy.drift))
    assert expected["segment_drift_json"]  # the slices are big enough to be tested
    for key, value in expected.items():
        assert compared.measures.segments[key] == value, key
    assert list(compared.profile.segments["region"]) == list(profile.segments["region"])
    for value, prof in profile.segments["region"].items():
        got = compared.profile.segments["region"][value]
        assert got.n_rows == prof.n_rows and list(got.numeric) == list(prof.numeric) and "region" not in got.categorical
        for name, numeric in prof.numeric.items():
            np.testing.assert_array_equal(got.numeric[name].sorted_values, numeric.sorted_values)
