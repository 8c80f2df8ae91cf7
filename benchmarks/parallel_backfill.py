"""Partitions are the unit of parallelism: the same backfill with 1, 2 and 4 runs at a time.

On the production profile (`deploy/production/dagster.yaml`, on a real PostgreSQL started here;
`--storage sqlite` for the embedded profile), a backfill as a user starts one: `--partitions`
days of historic batch files land at once, the landing sensor of a real `dagster-daemon` requests
one ingestion run per partition, and the queued run coordinator launches them
`max_concurrent_runs` at a time, each in its own process (retrain_assets_tests/daemon_backfill.py).
The other sensors are stopped, so the runs measured are the backfill's. Every warehouse-writing
step still takes its turn in the `warehouse` pool (limit 1): what runs in parallel is everything
else a run does. Throughput is partitions per second from the first run's start to the last
run's end; the baseline is one run at a time, in the same invocation. The warehouse tables of
every setting must be identical (nothing corrupted by the parallel runs), and no two
warehouse-pool steps may overlap in time.

    .venv/bin/python benchmarks/parallel_backfill.py [--partitions 24] [--workers 1,2,4] [--storage postgres]
"""

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the daemon backfill and the PostgreSQL starter live with the tests

from retrain_assets_tests.daemon_backfill import run_backfill  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=24)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated max_concurrent_runs settings")
    parser.add_argument("--storage", choices=("postgres", "sqlite"), default="postgres",
                        help="production profile on a PostgreSQL started here (default), or the embedded SQLite one")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it, to inspect the runs")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per backfill")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        tmp = Path(tmp)
        if args.keep:
            args.keep.mkdir(parents=True)
            tmp = args.keep
        server = None
        if args.storage == "postgres":
            from retrain_assets_tests.postgres_server import running_postgres

            server = stack.enter_context(running_postgres(tmp / "pg"))
        for workers in (int(w) for w in args.workers.split(",")):
            pg_env = {}
            if server is not None:
                server.create_database(f"dagster_{workers}")
                pg_env = server.env(f"dagster_{workers}")
            results[workers] = result = run_backfill(tmp, args.partitions, workers, args.timeout, pg_env)
            print(f"{workers} at a time: {result['runs']} runs in {result['seconds']:.1f} s -> "
                  f"{args.partitions / result['seconds']:.3f} partitions/s (peak {result['overlap']} runs at once; "
                  f"{result['overlapping_steps']} overlapping warehouse steps; raw_batches {result['rows']} rows, "
                  f"hash {result['table']})", flush=True)
            print("    mean seconds per run: " + ", ".join(f"{k} {v:.2f}" for k, v in result["phases"].items()), flush=True)
    base = min(results)
    for workers, result in results.items():
        print(f"speed-up {workers} vs {base}: {results[base]['seconds'] / result['seconds']:.2f}x")
    same = len({r["table"] for r in results.values()}) == 1
    apart = all(r["overlapping_steps"] == 0 for r in results.values())
    print(f"warehouse identical across settings: {same}; warehouse steps never overlapped: {apart}")
    print(f"reproduce: .venv/bin/python benchmarks/parallel_backfill.py --partitions {args.partitions} --workers {args.workers} "
          f"--storage {args.storage}")
    if not (same and apart):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
