"""A short scenario through the real Definitions, ticked like the daemon: sensors -> runs ->
models registered, evaluated and promoted; the corrupt batch quarantined and blocked."""

from types import SimpleNamespace

import dagster as dg
import pandas as pd
import pytest
from mlflow import MlflowClient

from retrain_assets.core.scenario import load_scenario, scenario_deliveries
from retrain_assets.demo import replay
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import read_table, write_short_scenario

CORRUPT_DAY, BAD_ROWS_DAY = "2025-01-04", "2025-01-06"  # days 3 and 5 of the short scenario
SHIFT_DAY = "2025-01-11"  # day 10: covariate shift starts


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("short")
    scenario = load_scenario(write_short_scenario(folder))
    settings = ProjectSettings(data_dir=folder / "data", spec_path=scenario.spec_path)
    instance = dg.DagsterInstance.ephemeral()
    lines: list[str] = []
    summary = replay(scenario_deliveries(scenario), settings, instance,
                     label=lambda d: f"{d.as_of - pd.Timedelta(days=1):%Y-%m-%d}", echo=lines.append)
    return SimpleNamespace(summary=summary, settings=settings, instance=instance, scenario=scenario, lines=lines)


def wh(run, sql: str) -> pd.DataFrame:
    return read_table(run.settings.warehouse_path, sql)


def registry(run) -> MlflowClient:
    return MlflowClient(tracking_uri=run.settings.default_tracking_uri, registry_uri=run.settings.default_tracking_uri)


def test_every_day_is_a_table_row(run):
    assert len(run.summary.rows) == run.scenario.days
    assert run.lines[0].startswith("step")
    assert len(run.lines) == run.scenario.days + 1


def test_models_are_trained_registered_and_promoted(run):
    deployments = run.summary.deployments
    assert len(deployments) >= 2, run.lines
    client = registry(run)
    assert str(client.get_model_version_by_alias("loan_default", "champion").version) == deployments[-1]
    assert str(client.get_model_version_by_alias("loan_default", "previous").version) == deployments[-2]
    history = wh(run, "select * from deployed_model order by deployed_at")
    assert history["champion_version"].tolist() == deployments
    assert history["action"].tolist() == ["initial"] + ["promote"] * (len(deployments) - 1)
    assert history["previous_version"].tolist()[1:] == deployments[:-1]


def test_model_version_carries_lineage(run):
    client = registry(run)
    version = client.get_model_version_by_alias("loan_default", "champion")
    candidates = wh(run, "select * from candidate_model")
    assert candidates["model_version"].tolist() == [str(v) for v in range(1, len(candidates) + 1)]
    training = candidates.set_index("model_version").loc[str(version.version)]
    assert version.tags["data_version"] == training["data_version"]
    assert len(version.tags["data_version"]) == 64
    mlflow_run = client.get_run(version.run_id)
    assert mlflow_run.data.tags["dagster_run_id"] == version.tags["dagster_run_id"]
    assert run.instance.get_run_by_id(version.tags["dagster_run_id"]).job_name == "retrain_job"
    assert "holdout_roc_auc" in mlflow_run.data.metrics
    assert mlflow_run.data.params["seed"] == "7"


def test_corrupt_batch_is_quarantined_and_blocked(run):
    assert run.summary.blocked_partitions == [CORRUPT_DAY]
    quarantined = wh(run, f"select * from quarantine where partition_start = '{CORRUPT_DAY}'")
    raw = wh(run, f"select count(*) as n from raw_batches where partition_start = '{CORRUPT_DAY}'")
    assert len(quarantined) > 0 and int(raw["n"].iloc[0]) == 0
    assert quarantined["reason"].str.contains("schema: required column").all()
    assert quarantined["row_json"].str.contains("_v2").all()  # the renamed column is kept verbatim
    # Its labels arrived, but nothing downstream was built from the blocked batch.
    labels = wh(run, f"select count(*) as n from labels where partition_start = '{CORRUPT_DAY}'")
    assert int(labels["n"].iloc[0]) > 0
    labeled = wh(run, f"select count(*) as n from labeled_batches where partition_start = '{CORRUPT_DAY}'")
    assert int(labeled["n"].iloc[0]) == 0
    assert CORRUPT_DAY not in run.instance.get_materialized_partitions(dg.AssetKey("labeled_batches"))


def test_bad_rows_are_quarantined_but_the_batch_passes(run):
    assert BAD_ROWS_DAY not in run.summary.blocked_partitions
    quarantined = wh(run, f"select reason from quarantine where partition_start = '{BAD_ROWS_DAY}'")
    assert 0 < len(quarantined) < 20
    reasons = " ".join(quarantined["reason"])
    assert "field_uniqueness" in reasons and "isin" in reasons and "not_nullable" in reasons
    row = next(r for r in run.summary.rows if r.label == BAD_ROWS_DAY)
    raw = wh(run, f"select count(*) as n from raw_batches where partition_start = '{BAD_ROWS_DAY}'")
    assert int(raw["n"].iloc[0]) == row.rows_in - row.quarantined
    assert row.quarantined == len(quarantined)


def test_training_uses_only_labeled_contract_clean_rows(run):
    training = wh(run, "select * from training_set")
    assert CORRUPT_DAY not in set(training["partition_start"].dt.strftime("%Y-%m-%d"))
    assert training["application_id"].is_unique
    assert training["defaulted"].isin([0, 1]).all()


def test_evaluation_report_compares_on_the_same_holdout(run):
    report = wh(run, "select * from evaluation_report")
    latest = report[report["evaluated_at"] == report["evaluated_at"].max()].set_index("role")
    assert set(latest.index) == {"challenger", "champion"}
    assert latest.loc["challenger", "holdout_partitions"] == latest.loc["champion", "holdout_partitions"]
    assert latest.loc["challenger", "n_rows"] == latest.loc["champion", "n_rows"]
    first = report[report["evaluated_at"] == report["evaluated_at"].min()]
    assert first["role"].tolist() == ["challenger"] and "no champion yet" in first["gate_summary"].iloc[0]


def test_snapshot_is_published_with_every_table(run):
    snapshot = run.settings.snapshot_path
    tables = read_table(snapshot, "select table_name from information_schema.tables")["table_name"]
    assert {"raw_batches", "quarantine", "labeled_batches", "evaluation_report", "deployed_model"} <= set(tables)
    assert read_table(snapshot, "select count(*) as n from deployed_model")["n"].iloc[0] == len(run.summary.deployments)
    assert not list(snapshot.parent.glob(".*.tmp"))


def test_each_batch_is_reported_against_the_champion_of_its_day(run):
    report = wh(run, "select * from drift_report")
    assert (report.groupby("partition_start").size() == len(run.scenario.spec.feature_columns)).all()
    assert set(report["champion_version"]) <= set(run.summary.deployments)
    for key in report["partition_start"].dt.strftime("%Y-%m-%d").unique():
        page = run.settings.reports_dir / "drift" / f"{key}.html"
        assert page.exists() and page.read_text().count("<svg") == len(run.scenario.spec.feature_columns)
    per_batch = report.drop_duplicates("partition_start").set_index(report.drop_duplicates("partition_start")["partition_start"].dt.strftime("%Y-%m-%d"))
    stable, shifted = per_batch[per_batch.index < SHIFT_DAY], per_batch[per_batch.index >= SHIFT_DAY]
    assert len(stable) >= 2 and not stable["dataset_drifted"].any()  # no false alarm before the shift
    assert shifted["dataset_drifted"].iloc[0]  # the shift is caught on its first batch
    # Labeled batches carry realized performance next to the label-free estimate.
    labeled = per_batch[per_batch["n_labeled"] > 0]
    assert len(labeled) and labeled["realized_roc_auc"].notna().all() and labeled["estimated_roc_auc"].notna().all()


def test_every_retrain_decision_is_recorded_and_acted_on_once(run):
    decisions = wh(run, "select * from retrain_decisions order by decided_at")
    assert decisions["trigger"].iloc[decisions["retrain"].to_numpy().argmax()] == "first_model"
    assert {"reason", "suppressed_by", "model_age_partitions", "drifted_batches"} <= set(decisions.columns)
    retrain_runs = run.instance.get_runs(filters=dg.RunsFilter(job_name="retrain_job"))
    assert len(retrain_runs) == int(decisions["retrain"].sum())
    assert {r.tags["retrain_trigger"] for r in retrain_runs} <= {"first_model", "drift", "performance", "freshness"}
    held = decisions[~decisions["retrain"] & (decisions["suppressed_by"] != "")]
    assert (held["trigger"] != "none").all()


def test_drift_and_freshness_checks_run(run):
    drift_checks = [o.checks["drift_report_policy"] for o in run.summary.outcomes if "drift_report_policy" in o.checks]
    assert any(not passed for passed, _ in drift_checks) and any(passed for passed, _ in drift_checks)
    freshness = [o.checks["deployed_model_freshness"] for o in run.summary.outcomes if "deployed_model_freshness" in o.checks]
    assert freshness and all("partitions labeled since the last training window" in text or "no retrain" in text for _, text in freshness)
