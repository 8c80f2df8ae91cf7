"""The production instance profile on a real PostgreSQL server: deploy/production/dagster.yaml,
copied byte for byte into a DAGSTER_HOME, loads Postgres storage and the queued run coordinator
with its limits; the real Definitions ingest, train and register against it, with MLflow tracking
and registry in a second database of the same server. The embedded default stays untouched."""

import shutil
import time
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import psycopg2
import pytest
import yaml
from mlflow import MlflowClient

from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries
from retrain_assets.pipeline import build_definitions
from retrain_assets.apps.replay import PipelineDriver
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import REPO, write_short_scenario
from retrain_assets_tests.postgres_server import running_postgres

PRODUCTION_YAML = REPO / "deploy" / "production" / "dagster.yaml"
EMBEDDED_YAML = REPO / ".dagster_home" / "dagster.yaml"
CORRUPT_DAY = "2025-01-04"  # day 3 of the short scenario
DAYS = 5  # labels arrive two days late: days 0-2 are labeled by day 4 (day 3 is blocked)
NS = Namespace("loan_default")


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    with running_postgres(tmp_path_factory.mktemp("pg")) as server:
        server.create_database("dagster")
        server.create_database("mlflow")
        yield server


@pytest.fixture(scope="module")
def instance(pg, tmp_path_factory):
    """The production profile, as deployed: DAGSTER_HOME holds a copy of the file, the DAGSTER_PG_*
    variables name the server, MLFLOW_TRACKING_URI its MLflow database."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copyfile(PRODUCTION_YAML, home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as env:
        for key, value in {**pg.env("dagster"), "DAGSTER_HOME": str(home), "MLFLOW_TRACKING_URI": pg.url("mlflow")}.items():
            env.setenv(key, value)
        with dg.DagsterInstance.get() as loaded:
            yield loaded


@pytest.fixture(scope="module")
def pipeline(instance, tmp_path_factory):
    """The first days of the short scenario landed at once, then one daemon-like tick: ingestion
    runs per partition, labeled batches by automation, the policy decision and the first retrain."""
    folder = tmp_path_factory.mktemp("pipeline")
    scenario_path = write_short_scenario(folder, days=DAYS)
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    spec["policy"]["min_partitions_first_model"] = 3
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    scenario = load_scenario(scenario_path)
    # Artifacts outside the data folder, as on a shared volume.
    settings = ProjectSettings(data_dir=folder / "data", spec_path=scenario.spec_path,
                               artifact_root=str(folder / "shared" / "mlflow-artifacts"))
    driver = PipelineDriver(build_definitions(settings), instance, settings.landing_dir)
    deliveries = list(scenario_deliveries(scenario))
    driver.start(deliveries[0].as_of.to_pydatetime())
    for delivery in deliveries:
        driver.deliver(delivery)
    started = time.perf_counter()
    outcomes = driver.tick(deliveries[-1].as_of.to_pydatetime())
    return SimpleNamespace(outcomes=outcomes, settings=settings, seconds=time.perf_counter() - started)


def test_production_profile_loads_postgres_storage_and_the_queued_coordinator(instance, pg):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 4
    assert {(limit["key"], limit["limit"]) for limit in queue.tag_concurrency_limits} == {
        ("retrain_assets/model_job_dataset", 1), ("dagster/backfill", 2)}
    assert queue.tag_concurrency_limits[0]["value"] == {"applyLimitPerUniqueValue": True}  # one model job per dataset
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert instance.run_monitoring_enabled and instance.run_retries_enabled and instance.run_retries_max_retries == 1
    # Every connection field came from the environment; the URL carries the server's real password.
    assert instance.run_storage.postgres_url == pg.url("dagster")


def test_the_limited_jobs_carry_the_tag_the_limit_names(tmp_path, short_scenario_path):
    limits = yaml.safe_load(PRODUCTION_YAML.read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
    key = limits[0]["key"]
    defs = build_definitions(ProjectSettings(data_dir=tmp_path / "data", spec_path=tmp_path / "spec.yaml"))
    tagged = {name: defs.resolve_job_def(NS.name(name)).run_tags.get(key) for name in ("retrain_job", "rollout_job", "policy_job")}
    assert tagged == {"retrain_job": NS.dataset, "rollout_job": NS.dataset, "policy_job": None}


def test_real_definitions_ingest_train_and_register_on_postgres(pipeline, instance, pg):
    ingested = {o.partition_key for o in pipeline.outcomes if "raw_batches" in o.materializations or
                "raw_batches_match_contract" in o.checks}
    assert len(ingested) == DAYS
    blocked = [o.partition_key for o in pipeline.outcomes if not o.checks.get("raw_batches_match_contract", (True, ""))[0]]
    assert blocked == [CORRUPT_DAY]
    retrain = [o for o in pipeline.outcomes if "candidate_model" in o.materializations]
    assert len(retrain) == 1 and retrain[0].success, [o.error for o in pipeline.outcomes if not o.success]
    assert retrain[0].materializations["deployed_model"]["action"] == "initial"
    # The runs and their events are rows in PostgreSQL, read with a plain client.
    with closing(psycopg2.connect(pg.url("dagster", driver=""))) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from runs")
        assert cur.fetchone()[0] == len(pipeline.outcomes)
        cur.execute("select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'"
                    " and asset_key = %s", [NS.key("raw_batches").to_string()])
        assert cur.fetchone()[0] == DAYS  # the blocked batch too (empty; its blocking check failed)
        cur.execute("select count(*) from runs where pipeline_name = %s and status = 'SUCCESS'", [NS.name("retrain_job")])
        assert cur.fetchone()[0] == 1
    assert CORRUPT_DAY not in instance.get_materialized_partitions(NS.key("labeled_batches"))
    print(f"{len(pipeline.outcomes)} runs on the production profile in {pipeline.seconds:.1f} s")


def test_the_registry_lives_in_postgres_and_the_artifacts_where_configured(pipeline, pg):
    uri = pg.url("mlflow")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # a fresh client, nothing cached
    champion = client.get_model_version_by_alias("loan_default", "champion")
    candidate = next(o.materializations["candidate_model"] for o in pipeline.outcomes if "candidate_model" in o.materializations)
    assert str(champion.version) == str(candidate["model_version"]) == "1"
    assert champion.tags["promotion_gate"] == "passed" and len(champion.tags["artifact_sha256"]) == 64
    run = client.get_run(champion.run_id)
    assert run.data.tags["dagster_run_id"] == champion.tags["dagster_run_id"]
    artifacts = Path(pipeline.settings.artifact_root)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location == artifacts.as_uri()
    model = client.get_logged_model(champion.source.removeprefix("models:/"))
    assert model.artifact_location.startswith(artifacts.as_uri())
    requirements = (Path(model.artifact_location.removeprefix("file://")) / "requirements.txt").read_text()
    assert "scikit-learn==" in requirements and "pandas==" in requirements
    assert not any((pipeline.settings.mlflow_dir / "artifacts").iterdir())  # nothing in the embedded folder
    assert not (pipeline.settings.mlflow_dir / "mlflow.db").exists()  # nor in the embedded SQLite store


def test_the_embedded_default_is_unchanged():
    embedded = yaml.safe_load(EMBEDDED_YAML.read_text())
    assert "storage" not in embedded and "run_coordinator" not in embedded
    assert "postgres" not in EMBEDDED_YAML.read_text()
    assert embedded["event_log_storage"]["class"] == "ConsolidatedSqliteEventLogStorage"
    production = yaml.safe_load(PRODUCTION_YAML.read_text())
    # The same pool limit, monitoring and retries in both profiles: only storage and the queue differ
    # (the queue lets runs start while another run's step holds the slot: a run buffer).
    assert production["concurrency"]["pools"]["default_limit"] == embedded["concurrency"]["pools"]["default_limit"] == 1
    assert production["concurrency"]["pools"]["op_granularity_run_buffer"] == \
        production["concurrency"]["runs"]["max_concurrent_runs"] - 1
    assert production["run_monitoring"] == embedded["run_monitoring"]
    assert production["run_retries"] == embedded["run_retries"]



def test_the_server_is_stopped_when_the_body_fails(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with running_postgres(tmp_path) as server:
            psycopg2.connect(server.url(driver="")).close()
            1 / 0
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(server.url(driver=""), connect_timeout=2)


def test_missing_binaries_name_the_make_target(monkeypatch):
    from retrain_assets_tests import postgres_server

    monkeypatch.setattr(postgres_server.glob, "glob", lambda pattern: [])
    monkeypatch.setenv("PATH", "")
    with pytest.raises(postgres_server.PostgresUnavailable, match="make services"):
        postgres_server.find_binaries()
