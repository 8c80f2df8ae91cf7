"""A backfill through a real `dagster-daemon`: historic batch files land at once, the landing
sensor requests one ingestion run per partition and the queued run coordinator launches them
`max_concurrent_runs` at a time. Used by benchmarks/parallel_backfill.py and the scale tests."""

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import duckdb
import yaml

from retrain_assets.pipeline.shared.namespace import Namespace

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "data" / "scenarios" / "loan_default.yaml"
BIN = Path(sys.executable).parent
DATASET = "loan_default"  # the code location serves every declared dataset; the batches land for this one
OTHER_SENSORS = ("retrain_sensor", "rollout_sensor", "automation_condition_sensor")  # automation: drift, the snapshot


class BackfillError(RuntimeError):
    """The backfill did not finish, or a run failed."""


def instance_yaml(max_concurrent_runs: int, storage: str) -> str:
    """The production profile (or the embedded one, with a queued run coordinator) at this many runs."""
    if storage == "postgres":
        config = yaml.safe_load((REPO / "deploy" / "production" / "dagster.yaml").read_text())
    else:
        config = yaml.safe_load((REPO / ".dagster_home" / "dagster.yaml").read_text())
        config["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    config["concurrency"].setdefault("runs", {})["max_concurrent_runs"] = max_concurrent_runs
    # As in the production profile: all the runs may start while one run's step holds the slot.
    config["concurrency"]["pools"]["op_granularity_run_buffer"] = max_concurrent_runs - 1
    return yaml.safe_dump(config)


def land_batches(data_dir: Path, partitions: int) -> None:
    """The scenario's first `partitions` batch files (no incidents), as historic exports land."""
    from retrain_assets.core.files import write_atomically
    from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries

    scenario = dataclasses.replace(load_scenario(SCENARIO), incidents={})
    for delivery in islice(scenario_deliveries(scenario), partitions):
        for relative, frame in delivery.files.items():
            if relative.startswith("batches/"):
                write_atomically(frame, data_dir / "landing" / DATASET / relative)


def run_backfill(tmp: Path, partitions: int, workers: int, timeout: float, pg_env: dict[str, str]) -> dict:
    """Backfill through a real daemon; returns the span, the runs' peak overlap and a table hash."""
    import dagster as dg

    home, data = tmp / f"home-{workers}", tmp / f"data-{workers}"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(workers, "postgres" if pg_env else "sqlite"))
    land_batches(data, partitions)
    env = {**os.environ, **pg_env, "DAGSTER_HOME": str(home), "RETRAIN_ASSETS_DATA_DIR": str(data),
           "RETRAIN_ASSETS_SPEC": str(REPO / "data" / "specs" / "loan_default.yaml"),
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore"}
    with _instance(home, pg_env) as instance:
        # The pool's row is created by the first claim; runs starting together would race to create it.
        instance.event_log_storage.set_concurrency_slots(Namespace(DATASET).pool, 1)
    for sensor in OTHER_SENSORS:
        subprocess.run([BIN / "dagster", "sensor", "stop", Namespace(DATASET).name(sensor), "-w", "workspace.yaml"], cwd=REPO,
                       env=env, check=True, stdout=subprocess.DEVNULL)
    with open(tmp / f"daemon-{workers}.log", "w") as log:
        daemon = subprocess.Popen([BIN / "dagster-daemon", "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        with _instance(home, pg_env) as instance:
            deadline = time.monotonic() + timeout
            while True:
                records = instance.get_run_records()
                done = [r for r in records if r.dagster_run.is_finished]
                if len(done) >= partitions and len(done) == len(records):
                    break
                if time.monotonic() > deadline:
                    raise BackfillError(f"{workers} workers: {len(done)}/{partitions} runs finished after {timeout:.0f} s; "
                                        f"see {tmp / f'daemon-{workers}.log'}")
                time.sleep(1)
            failed = [r.dagster_run.run_id for r in done if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
            if failed:
                raise BackfillError(f"{workers} workers: runs failed: {failed}")
            spans = [(r.start_time, r.end_time) for r in done]
            steps = sorted(pool_step_spans(instance, [r.dagster_run.run_id for r in done]))
            phases = _phase_means(instance, [r.dagster_run.run_id for r in done])
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    with duckdb.connect(str(data / "warehouse" / f"{DATASET}.duckdb"), read_only=True) as conn:
        # `email` is pseudonymized with a key of each data dir's own (development mode): left out.
        rows = conn.execute("select * exclude (source_file, email) from raw_batches order by application_id").fetchall()
    overlapping, latest_end = 0, float("-inf")
    for step_start, step_end in steps:  # sorted by start: a step overlaps if it starts before an earlier one ended
        overlapping += step_start < latest_end
        latest_end = max(latest_end, step_end)
    return {"runs": len(done), "seconds": end - start, "overlap": overlap, "overlapping_steps": overlapping, "phases": phases,
            "table": hashlib.sha256(repr(rows).encode()).hexdigest()[:16], "rows": len(rows)}


@contextmanager
def _instance(home: Path, pg_env: dict[str, str]):
    """The instance in `home`; its yaml reads the DAGSTER_PG_* variables when it loads, so they are
    set while it is open and this process's environment is restored after."""
    import dagster as dg

    saved = dict(os.environ)
    os.environ.update(pg_env)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        os.environ.clear()
        os.environ.update(saved)


def pool_step_spans(instance, run_ids: list[str]) -> list[tuple[float, float]]:
    """(start, end) of every warehouse-pool step of the runs, from their event logs."""
    import dagster as dg

    spans = []
    for run_id in run_ids:
        started = {}
        for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
                                                         dg.DagsterEventType.STEP_FAILURE}):
            step = entry.dagster_event.step_key
            if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                started[step] = entry.timestamp
            elif step in started:
                spans.append((started.pop(step), entry.timestamp))
    return spans


def _phase_means(instance, run_ids: list[str]) -> dict[str, float]:
    """Mean seconds per run: launching its process, from its start to its step's start (code,
    resources, waiting for the pool), the step itself, and the end of the run."""
    import dagster as dg

    marks = {dg.DagsterEventType.PIPELINE_STARTING: "starting", dg.DagsterEventType.PIPELINE_START: "start",
             dg.DagsterEventType.STEP_START: "step", dg.DagsterEventType.STEP_SUCCESS: "stepped",
             dg.DagsterEventType.PIPELINE_SUCCESS: "end"}
    totals = dict.fromkeys(("launch", "to step", "step", "after step"), 0.0)
    for run_id in run_ids:
        at = {marks[e.dagster_event.event_type]: e.timestamp for e in instance.all_logs(run_id, of_type=set(marks))}
        totals["launch"] += at["start"] - at["starting"]
        totals["to step"] += at["step"] - at["start"]
        totals["step"] += at["stepped"] - at["step"]
        totals["after step"] += at["end"] - at["stepped"]
    return {k: v / len(run_ids) for k, v in totals.items()}
