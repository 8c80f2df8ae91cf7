"""The real rainfall data (first three years, shipped as a fixture) runs through the pipeline as
monthly batches with nothing but its spec file: ingested clean, labeled late, a model deployed."""

import json
import math

import dagster as dg
import pandas as pd

from retrain_assets.core.offline.scenario import history_deliveries, read_history
from retrain_assets.core.spec import load_spec
from retrain_assets.apps.demo import replay
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import RAINFALL_SAMPLE, RAINFALL_SPEC, read_table

BATCHES = 14


def test_rainfall_history_replays_as_monthly_batches(tmp_path):
    spec = load_spec(RAINFALL_SPEC)
    history = read_history(RAINFALL_SAMPLE, spec)
    settings = ProjectSettings(data_dir=tmp_path, spec_path=RAINFALL_SPEC)
    deliveries = list(history_deliveries(history, spec, start_date="1970-01-01", label_delay_batches=1))[:BATCHES]
    instance = dg.DagsterInstance.ephemeral()
    summary = replay(deliveries, settings, instance, label=lambda d: str(d.step), echo=lambda line: None)

    assert summary.blocked_partitions == []
    assert sum(r.quarantined for r in summary.rows) == 0
    expected_rows = sum(len(f) for d in deliveries for name, f in d.files.items() if name.startswith("batches/"))
    raw = read_table(settings.warehouse_path, "select count(*) as n, count(distinct partition_start) as p from raw_batches")
    assert (int(raw["n"].iloc[0]), int(raw["p"].iloc[0])) == (expected_rows, BATCHES)
    assert read_table(settings.warehouse_path, "select min(partition_start) as s from raw_batches")["s"].iloc[0] == pd.Timestamp("1970-01-01")
    labeled = instance.get_materialized_partitions(dg.AssetKey([spec.name, "labeled_batches"]))
    assert len(labeled) == BATCHES - 1  # the last month's labels are still on their way
    assert summary.deployments == ["1"]
    deployed = read_table(settings.warehouse_path, "select * from deployed_model")
    assert deployed["holdout_roc_auc"].iloc[0] >= spec.policy.min_roc_auc
    # Once a champion serves, every month's rows are also live requests, logged and ingested.
    logged = read_table(settings.warehouse_path, "select count(*) as n, count(distinct entity_id) as ids from prediction_logs")
    assert int(logged["n"].iloc[0]) == int(logged["ids"].iloc[0]) > 0
    # The challenger's learning curve (what the data-growth clause reads), measured at training time.
    candidate = read_table(settings.warehouse_path, "select * from candidate_model")
    trained = read_table(settings.warehouse_path, "select count(*) as n from labeled_batches where partition_start <= "
                         f"'{max([candidate['trained_through'].iloc[0], *candidate['holdout_partitions'].iloc[0].split(',')])}'")
    assert int(candidate["training_rows"].iloc[0]) == int(trained["n"].iloc[0]) > int(candidate["train_rows"].iloc[0])
    curve = json.loads(candidate["learning_curve"].iloc[0])
    assert curve["metric"] == "roc_auc" and len(curve["values"]) == 3 and curve["rows"][0] < curve["rows"][1] < curve["rows"][2]
    assert math.isfinite(candidate["learning_gain"].iloc[0])
