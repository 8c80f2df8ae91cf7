"""Secrets and PII through the real Definitions: the key comes from the environment via dg.EnvVar,
production refuses to run without it, and neither it nor raw PII reaches the warehouse, run
config or any event the UI shows."""

import dagster as dg

from retrain_assets.core.files import write_atomically
from retrain_assets.core.ingestion.privacy import PII_KEY_ENV, check_key, pseudonym
from retrain_assets.core.offline.scenario import generate_day, load_scenario
from retrain_assets.pipeline import build_definitions
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import read_table

SECRET = "test-only-pii-key-" + "s3cr3t" * 6


def ingest(tmp_path, short_scenario_path, production: bool):
    scenario = load_scenario(short_scenario_path)
    settings = ProjectSettings(data_dir=tmp_path / "data", spec_path=scenario.spec_path, production=production)
    defs = build_definitions(settings)
    batch, _ = generate_day(scenario, 0)
    write_atomically(batch, settings.landing_dir / "batches" / "2025-01-01.csv")
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, partition_key="2025-01-01", raise_on_error=False,
        asset_selection=Namespace(settings.dataset).keys("raw_batches", "quarantine"))
    return settings, batch, instance, result


def test_production_mode_without_a_key_fails_with_what_to_do(tmp_path, short_scenario_path, monkeypatch):
    monkeypatch.delenv(PII_KEY_ENV, raising=False)
    settings, _, _, result = ingest(tmp_path, short_scenario_path, production=True)
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = str(failure.event_specific_data.error)
    assert f"{PII_KEY_ENV} is not set" in message and "token_urlsafe" in message
    assert not settings.warehouse_path.exists() or read_table(
        settings.warehouse_path, "select count(*) n from information_schema.tables where table_name = 'raw_batches'")["n"].iloc[0] == 0


def test_the_key_comes_from_the_environment_and_never_reaches_events(tmp_path, short_scenario_path, monkeypatch):
    monkeypatch.setenv(PII_KEY_ENV, SECRET)
    settings, batch, instance, result = ingest(tmp_path, short_scenario_path, production=True)
    assert result.success
    stored = read_table(settings.warehouse_path, "select application_id, email from raw_batches order by application_id")
    expected = batch.sort_values("application_id")["email"].map(lambda e: pseudonym(e, check_key(SECRET)))
    assert stored["email"].tolist() == expected.tolist()
    assert not (settings.restricted_dir / "pii.key").exists()  # no development key in production
    run = instance.get_run_by_id(result.run_id)
    text = repr(run.run_config) + "".join(repr(entry) for entry in instance.all_logs(result.run_id))
    assert SECRET not in text
    assert not any(email in text for email in batch["email"].head(20))
