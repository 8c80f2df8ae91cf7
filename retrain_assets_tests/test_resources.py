"""The warehouse resource on real DuckDB files: atomic snapshots, lock handling, history tables."""

import subprocess
import sys
import time

import duckdb
import pandas as pd
import pytest

from retrain_assets.defs.resources import Warehouse


@pytest.fixture
def warehouse(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute("create table t as select 1 as x")
    return Warehouse(database=str(database), snapshot_path=str(tmp_path / "snap" / "warehouse.duckdb"),
                     reports_dir=str(tmp_path / "reports"))


def test_snapshot_readers_keep_a_consistent_view_across_publishes(warehouse):
    warehouse.publish_snapshot()
    reader = duckdb.connect(warehouse.snapshot_path, read_only=True)
    with duckdb.connect(warehouse.database) as writer:
        writer.execute("insert into t values (2)")
    warehouse.publish_snapshot()
    # The open reader still sees the snapshot it opened; an analyst connecting now (another
    # process: DuckDB caches open databases per process) sees the new one.
    assert reader.execute("select count(*) from t").fetchone()[0] == 1
    fresh = subprocess.run([sys.executable, "-c", (
        "import duckdb; print(duckdb.connect(%r, read_only=True).execute('select count(*) from t').fetchone()[0])"
    ) % warehouse.snapshot_path], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "2"
    reader.close()


def test_snapshot_publish_waits_for_the_writer_lock_then_fails_clearly(warehouse, tmp_path):
    impatient = warehouse.model_copy(update={"lock_timeout_seconds": 0.5})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, time; c = duckdb.connect(%r); c.execute('select 1'); print('locked', flush=True); time.sleep(5)"
    ) % warehouse.database], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(duckdb.IOException):
            impatient.publish_snapshot()
        assert time.monotonic() - started >= 0.5
    finally:
        holder.kill()
    assert not list((tmp_path / "snap").glob(".*.tmp"))
    warehouse.publish_snapshot()  # lock released: publishing works again


def test_with_history_appends_to_an_existing_table(warehouse):
    assert warehouse.with_history("absent", pd.DataFrame({"x": [5]}))["x"].tolist() == [5]
    assert warehouse.with_history("t", pd.DataFrame({"x": [5]}))["x"].tolist() == [1, 5]
