"""The warehouse resource on real DuckDB files: snapshots replaced atomically, lock handling, history tables."""

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from retrain_assets.pipeline.shared.snapshots import publish_history
from retrain_assets.pipeline.shared.warehouse import Warehouse


@pytest.fixture
def warehouse(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute("create table t as select 1 as x")
    return Warehouse(database=str(database), snapshot_path=str(tmp_path / "snap" / "warehouse.duckdb"),
                     reports_dir=str(tmp_path / "reports"))


def publish(warehouse: Warehouse, timeout_seconds: float = 120.0):
    """The analysts' snapshot of the warehouse's unpartitioned tables, as `analyst_snapshot_history` publishes it."""
    return publish_history(warehouse.database, Path(warehouse.snapshot_path).parent, "demo", (), timeout_seconds)


def test_snapshot_readers_keep_a_consistent_view_across_publishes(warehouse):
    publish(warehouse)
    catalog = Path(warehouse.snapshot_path).parent / "demo.duckdb"
    reader = duckdb.connect(str(catalog), read_only=True)
    assert reader.execute("select count(*) from t").fetchone()[0] == 1
    with duckdb.connect(warehouse.database) as writer:
        writer.execute("insert into t values (2)")
    publish(warehouse)
    # The table's file is replaced by a rename: an analyst connecting now (another process) sees
    # the new rows, and the reader's next query does too, never a half-written file.
    fresh = subprocess.run([sys.executable, "-c", (
        "import duckdb; print(duckdb.connect(%r, read_only=True).execute('select count(*) from t').fetchone()[0])"
    ) % str(catalog)], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "2"
    assert reader.execute("select count(*) from t").fetchone()[0] == 2
    reader.close()


def test_snapshot_publish_waits_for_the_writer_lock_then_fails_clearly(warehouse, tmp_path):
    publish(warehouse)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, time; c = duckdb.connect(%r); c.execute('select 1'); print('locked', flush=True); time.sleep(5)"
    ) % warehouse.database], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(duckdb.IOException):
            publish(warehouse, timeout_seconds=0.5)
        assert time.monotonic() - started >= 0.5
    finally:
        holder.kill()
    assert not list((tmp_path / "snap").rglob(".*.tmp"))
    holder.wait()
    assert publish(warehouse).dataset == "demo"  # lock released: publishing works again


def test_with_history_appends_to_an_existing_table(warehouse):
    assert warehouse.with_history("absent", pd.DataFrame({"x": [5]}))["x"].tolist() == [5]
    assert warehouse.with_history("t", pd.DataFrame({"x": [5]}))["x"].tolist() == [1, 5]


def test_steps_of_one_dagster_run_share_one_mlflow_run(tmp_path):
    import dagster as dg
    import mlflow
    from mlflow import MlflowClient

    from retrain_assets.pipeline.shared.registry import ModelRegistry

    registry = ModelRegistry(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_location=str(tmp_path / "artifacts"),
                             experiment_name="e", model_name="m")

    @dg.asset
    def first(context: dg.AssetExecutionContext, model_registry: ModelRegistry) -> None:
        with model_registry.tracking_run(context, tags={"data_version": "d1"}):
            mlflow.log_param("first", 1)
            with mlflow.start_run(run_name="trial-1", nested=True):
                mlflow.log_metric("auc", 0.5)

    @dg.asset(deps=[first])
    def second(context: dg.AssetExecutionContext, model_registry: ModelRegistry) -> None:
        with model_registry.tracking_run(context):
            mlflow.log_param("second", 2)

    @dg.asset(deps=[second])
    def failing(context: dg.AssetExecutionContext, model_registry: ModelRegistry) -> None:
        with model_registry.tracking_run(context):
            raise RuntimeError("boom")

    result = dg.materialize([first, second, failing], resources={"model_registry": registry}, raise_on_error=False)
    assert not result.success and mlflow.active_run() is None
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    [run] = [r for r in runs if r.data.tags.get("dagster_run_id") == result.run_id]
    [trial] = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
    assert len(runs) == 2 and trial.info.run_name == "trial-1" and trial.data.metrics == {"auc": 0.5}
    assert run.data.params == {"first": "1", "second": "2"} and run.data.tags["data_version"] == "d1"
    assert run.info.run_name == result.dagster_run.job_name and run.info.status == "FAILED"  # the last step raised


def test_the_registered_model_lists_its_aliases_and_a_training_run_is_named_for_what_it_made(tmp_path):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    from retrain_assets.pipeline.shared.registry import ModelRegistry

    registry = ModelRegistry(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_location=str(tmp_path / "artifacts"),
                             experiment_name="e", model_name="m")
    registry._ensure_experiment()
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_experiment("e")
    x = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    for _ in range(3):
        with mlflow.start_run():
            version, run_id = registry.log_and_register(LogisticRegression().fit(x, [0, 0, 1, 1]), x.head(2))
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    assert client.get_registered_model("m").description.endswith("- none yet")
    registry.name_run(run_id, "m v3 (performance retrain)")
    assert client.get_run(run_id).info.run_name == "m v3 (performance retrain)"

    registry.promote("1")
    registry.promote("2")
    registry.start_trial("3", "canary", 0.2)
    lines = client.get_registered_model("m").description.splitlines()
    assert [line.split(" (")[0] for line in lines[1:]] == ["- champion: v2", "- canary: v3", "- previous: v1"]
    assert "answering 20% of the entities" in lines[2]
    registry.rollback_to_previous()  # ends the trial, v1 serves again, no previous left
    assert client.get_registered_model("m").description.splitlines()[1:] == [
        "- champion: v1 (answers every request not routed to a canary)"]


def test_the_window_start_reads_from_decisions_older_warehouses_lack(warehouse):
    from retrain_assets.pipeline.shared.lookups import latest_window_from

    assert latest_window_from(warehouse) == ""
    with duckdb.connect(warehouse.database) as conn:  # written before window_from existed
        conn.execute("create table retrain_decisions as select timestamp '2025-01-01' as decided_at, true as retrain")
    assert latest_window_from(warehouse) == ""
    with duckdb.connect(warehouse.database) as conn:  # the column added, the old row NULL (as the IO manager upgrades)
        conn.execute("alter table retrain_decisions add column window_from varchar")
    assert latest_window_from(warehouse) == ""
    with duckdb.connect(warehouse.database) as conn:
        conn.execute("insert into retrain_decisions values (timestamp '2025-01-02', true, '2025-01-02')")
    assert latest_window_from(warehouse) == "2025-01-02"
