"""How much does a pipeline run cost beyond Dagster's own per-run floor?

Baseline: a trivial one-asset job executed in process on a persistent (SQLite) instance, the same
way the replay driver executes runs (the instance's databases kept open, the collector's thresholds
raised, as `replay` does). Subject: the built-in scenario replayed for N days through the real
Definitions. Prints seconds per run for both and their ratio.

    .venv/bin/python benchmarks/replay_overhead.py [--days 21]
"""

import argparse
import os
import tempfile
import time
import warnings
from itertools import islice
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402
import pandas as pd  # noqa: E402

from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries  # noqa: E402
from retrain_assets.apps.demo import open_instance, replay  # noqa: E402
from retrain_assets.apps.replay import fewer_garbage_collections, instance_databases_open  # noqa: E402
from retrain_assets.settings import ProjectSettings  # noqa: E402

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "loan_default.yaml"


@dg.asset
def trivial() -> int:
    return 1


def baseline_seconds_per_run(instance: dg.DagsterInstance, runs: int) -> float:
    job = dg.Definitions(assets=[trivial]).resolve_implicit_global_asset_job_def()
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    job.execute_in_process(instance=instance, run_config=quiet)  # warm-up
    with instance_databases_open(instance), fewer_garbage_collections():
        started = time.perf_counter()
        for _ in range(runs):
            job.execute_in_process(instance=instance, run_config=quiet)
        return (time.perf_counter() - started) / runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scenario = load_scenario(SCENARIO)
        settings = ProjectSettings(data_dir=tmp / "data", spec_path=scenario.spec_path)
        instance = open_instance(tmp / "dagster_home")
        summary = replay(islice(scenario_deliveries(scenario), args.days), settings, instance,
                         label=lambda d: f"{d.as_of - pd.Timedelta(days=1):%Y-%m-%d}", echo=lambda _: None,
                         console_log_level="CRITICAL")
        pipeline = summary.seconds / summary.runs
        base = baseline_seconds_per_run(instance, runs=30)
    print(f"replay of {args.days} days: {summary.runs} runs in {summary.seconds:.1f} s -> {pipeline:.3f} s/run")
    print(f"baseline trivial asset run on the same kind of instance: {base:.3f} s/run")
    print(f"ratio pipeline/baseline: {pipeline / base:.1f}x")
    print(f"reproduce: .venv/bin/python benchmarks/replay_overhead.py --days {args.days}")


if __name__ == "__main__":
    main()
