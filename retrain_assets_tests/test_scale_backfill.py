"""Partitions are the unit of parallelism: a backfill through a real `dagster-daemon` on the
production profile (a real PostgreSQL) runs its partitions' runs at the same time, while the
dataset's warehouse pool (`loan_default__warehouse`) keeps their writing steps in turn, and the
warehouse comes out whole."""

import duckdb

from retrain_assets_tests.daemon_backfill import DATASET, land_batches, run_backfill
from retrain_assets_tests.postgres_server import running_postgres

PARTITIONS = 3


def test_a_backfill_runs_partitions_in_parallel_within_the_pool(tmp_path):
    with running_postgres(tmp_path / "pg") as server:
        server.create_database("dagster")
        result = run_backfill(tmp_path, PARTITIONS, workers=2, timeout=300, pg_env=server.env("dagster"))
    assert result["runs"] == PARTITIONS
    assert result["overlap"] == 2  # two runs in progress at once (max_concurrent_runs)
    assert result["overlapping_steps"] == 0  # ...but never two warehouse writers
    expected = tmp_path / "expected"
    land_batches(expected, PARTITIONS)
    landed = sum(len(duckdb.sql(f"select * from read_csv('{path}')").fetchall())
                 for path in (expected / "landing" / DATASET / "batches").iterdir())
    assert result["rows"] == landed  # every row of every partition, each once
