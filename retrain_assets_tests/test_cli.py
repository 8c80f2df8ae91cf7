"""`retrain-assets drift` on two files: the same report as the pipeline, as JSON and HTML."""

import json

import pandas as pd

from retrain_assets.cli import main
from retrain_assets_tests.conftest import LOAN_SPEC


def write_days(scenario, days, path):
    from retrain_assets.core.scenario import generate_day

    pd.concat([generate_day(scenario, d)[0] for d in days]).to_csv(path, index=False)
    return path


def run_drift(tmp_path, scenario, current_days):
    reference = write_days(scenario, range(0, 7), tmp_path / "reference.csv")
    current = write_days(scenario, current_days, tmp_path / "current.csv")
    out = tmp_path / "out"
    code = main(["drift", "--reference", str(reference), "--current", str(current), "--spec", str(LOAN_SPEC), "--out", str(out)])
    return code, out


def test_drift_cli_flags_the_shifted_columns(tmp_path, scenario, capsys):
    code, out = run_drift(tmp_path, scenario, range(20, 23))  # covariate shift: income, credit score, region mix
    assert code == 0
    report = json.loads((out / "drift_report.json").read_text())
    assert report["summary"]["dataset_drifted"] is True
    assert {f["feature"] for f in report["features"] if f["drifted"]} == {"income", "credit_score", "region"}
    assert (out / "drift_report.html").read_text().count("<svg") == 9
    assert "3/9 features drifted" in capsys.readouterr().out


def test_drift_cli_is_quiet_on_the_same_distribution(tmp_path, scenario):
    code, out = run_drift(tmp_path, scenario, range(8, 11))
    assert code == 0
    summary = json.loads((out / "drift_report.json").read_text())["summary"]
    assert summary["dataset_drifted"] is False and summary["n_drifted"] == 0


def test_drift_cli_rejects_a_file_that_breaks_the_contract(tmp_path, scenario, capsys):
    reference = write_days(scenario, range(0, 3), tmp_path / "reference.csv")
    broken = tmp_path / "broken.csv"
    pd.read_csv(reference).drop(columns=["income"]).to_csv(broken, index=False)
    code = main(["drift", "--reference", str(reference), "--current", str(broken), "--spec", str(LOAN_SPEC), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "required column 'income' is missing" in capsys.readouterr().err


def test_an_unreadable_review_file_does_not_break_the_review_listing(tmp_path):
    from retrain_assets.reviewing import decided_item_ids

    reviews = tmp_path / "reviews"
    reviews.mkdir()
    (reviews / "2025-01-02__review_a.csv").write_text("item_id,action\n2025-01-02:a1,accept\n")
    (reviews / "2025-01-03__review_b.csv").write_bytes(b"item_id,action\n\xff\xfe\x00broken,accept\n")
    assert decided_item_ids(tmp_path) == {"2025-01-02:a1"}
