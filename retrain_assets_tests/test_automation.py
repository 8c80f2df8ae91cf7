"""Sensors against an ephemeral instance: the landing zone ingests each content once, ignores
files it cannot place (and keeps ticking), and the retrain policy waits for labels."""

import shutil

import dagster as dg
import pandas as pd
import pytest

from retrain_assets.core.files import write_atomically
from retrain_assets.core.offline.scenario import generate_day, load_scenario
from retrain_assets.pipeline import build_definitions
from retrain_assets.apps.replay import PipelineDriver
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import read_table


NS = Namespace("loan_default")  # the short scenario's spec is the loan spec


def sensor(defs, local: str) -> dg.SensorDefinition:
    """A sensor of the loan dataset by its local name. Sensors take no resources: they read the
    dataset's stores from the settings the definitions were built with."""
    return defs.resolve_sensor_def(NS.name(local))


@pytest.fixture
def pipeline(tmp_path, short_scenario_path):
    scenario = load_scenario(short_scenario_path)
    settings = ProjectSettings(data_dir=tmp_path / "data", spec_path=scenario.spec_path)
    defs = build_definitions(settings)
    driver = PipelineDriver(defs, dg.DagsterInstance.ephemeral(), settings.landing_dir)
    return scenario, settings, defs, driver


def raw_rows(settings, day: str) -> int:
    return int(read_table(settings.warehouse_path, f"select count(*) as n from raw_batches where partition_start = '{day}'")["n"].iloc[0])


def test_same_file_twice_ingests_once_and_new_file_reingests_partition(pipeline):
    scenario, settings, _, driver = pipeline
    batches = settings.landing_dir / "batches"
    first, _ = generate_day(scenario, 1)
    write_atomically(first, batches / "2025-01-02.csv")
    [outcome] = driver.tick_sensor("landing_zone_sensor")
    assert outcome.success and outcome.partition_key == "2025-01-02"
    assert raw_rows(settings, "2025-01-02") == len(first)

    shutil.copy(batches / "2025-01-02.csv", batches / "2025-01-02_resent.csv")
    assert driver.tick_sensor("landing_zone_sensor") == []
    assert raw_rows(settings, "2025-01-02") == len(first)

    late, _ = generate_day(scenario, 2)
    late["application_id"] = late["application_id"].str.replace("-0002-", "-0001-late-")
    late["applied_at"] = late["applied_at"] - pd.Timedelta(days=1)
    write_atomically(late, batches / "2025-01-02_late.csv")
    [outcome] = driver.tick_sensor("landing_zone_sensor")
    assert outcome.success
    # The partition is rebuilt from its distinct files: nothing doubled, nothing lost.
    assert raw_rows(settings, "2025-01-02") == len(first) + len(late)


def test_rematerializing_a_partition_is_idempotent(pipeline):
    scenario, settings, defs, driver = pipeline
    batch, _ = generate_day(scenario, 0)
    write_atomically(batch, settings.landing_dir / "batches" / "2025-01-01.csv")
    driver.tick_sensor("landing_zone_sensor")
    job = defs.resolve_implicit_global_asset_job_def()
    for _ in range(2):
        result = job.execute_in_process(instance=driver.instance, partition_key="2025-01-01",
                                        asset_selection=NS.keys("raw_batches", "quarantine"))
        assert result.success
    assert raw_rows(settings, "2025-01-01") == len(batch)


def test_landing_sensor_ignores_unplaceable_files_and_keeps_ticking(pipeline):
    _, settings, defs, driver = pipeline
    batches = settings.landing_dir / "batches"
    batches.mkdir(parents=True, exist_ok=True)
    (batches / "notes.txt").write_text("not a batch")
    (batches / "latest.csv").write_text("a,b\n1,2\n")
    (batches / "1999-01-01.csv").write_text("a,b\n1,2\n")  # before the dataset's first partition
    context = dg.build_sensor_context(instance=driver.instance, definitions=defs)
    result = sensor(defs, "landing_zone_sensor")(context)
    assert not result.run_requests
    assert "3 ignored" in result.skip_reason.skip_message


def test_landing_sensor_run_keys_name_partition_and_content(pipeline):
    scenario, settings, defs, driver = pipeline
    batch, labels = generate_day(scenario, 0)
    write_atomically(batch, settings.landing_dir / "batches" / "2025-01-01.csv")
    write_atomically(labels, settings.landing_dir / "labels" / "2025-01-01__delivered_2025-01-03.csv")
    context = dg.build_sensor_context(instance=driver.instance, definitions=defs)
    result = sensor(defs, "landing_zone_sensor")(context)
    keys = sorted(r.run_key for r in result.run_requests)
    assert [k.split(":")[:2] for k in keys] == [["batches", "2025-01-01"], ["labels", "2025-01-01"]]
    selections = {r.run_key.split(":")[0]: set(r.asset_selection) for r in result.run_requests}
    assert selections == {"batches": set(NS.keys("raw_batches", "quarantine")),
                          "labels": set(NS.keys("labels", "rejected_labels", "review_decisions"))}
    # A second tick with the returned cursor requests nothing new.
    again = dg.build_sensor_context(instance=driver.instance, definitions=defs, cursor=result.cursor)
    assert not sensor(defs, "landing_zone_sensor")(again).run_requests


def test_retrain_sensor_is_quiet_until_monitoring_data_exists(pipeline):
    _, _, defs, driver = pipeline
    context = dg.build_sensor_context(instance=driver.instance, definitions=defs)
    result = sensor(defs, "retrain_sensor")(context)
    assert not result.run_requests
    assert result.skip_reason.skip_message.startswith("no new monitoring data")


def test_labeled_batches_wait_for_labels_then_follow_automatically(pipeline):
    scenario, settings, _, driver = pipeline
    batch, labels = generate_day(scenario, 0)
    when = pd.Timestamp("2025-01-03").to_pydatetime()
    driver.start(when)
    write_atomically(batch, settings.landing_dir / "batches" / "2025-01-01.csv")
    driver.tick_sensor("landing_zone_sensor")
    before_labels = driver.tick_automation(when)  # no labels yet: nothing to join (the batch is only reported on)
    assert all("labeled_batches" not in o.materializations for o in before_labels)
    write_atomically(labels, settings.landing_dir / "labels" / "2025-01-01__delivered_2025-01-03.csv")
    driver.tick_sensor("landing_zone_sensor")
    [outcome] = driver.tick_automation(when)
    assert outcome.requested_by == "automation" and outcome.partition_key == "2025-01-01"
    # analyst_snapshot republishes the partition's tables in the same tick as the writers (pipeline/analysts.py).
    assert set(outcome.materializations) == {"labeled_batches", "review_queue", "drift_report", "analyst_snapshot"}
    assert outcome.materializations["labeled_batches"]["dagster/row_count"] == len(batch)
