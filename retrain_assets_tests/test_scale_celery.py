"""The same Definitions on a distributed executor: a backfill of four partitions through two real
dagster-celery workers (local Redis broker, PostgreSQL instance), checked against the in-process run of the same
partitions. Every warehouse-writing step holds the warehouse writer lock (and is in the dataset's
`loan_default__warehouse` pool, limit 1): the event log must show that no two of them ever
overlapped, across the concurrent runs of the backfill. The code location serves the dataset as its
defs.yaml declares it (the repository's loan_default spec); the in-process side uses the short
scenario's spec, which differs from it in retrain policy only, which no backfilled asset reads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pandas as pd
import pytest
import yaml

from retrain_assets.core.files import write_atomically
from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries
from retrain_assets.pipeline import build_definitions
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import REPO, read_table, write_short_scenario
from retrain_assets_tests.postgres_server import running_postgres
from retrain_assets_tests.redis_server import redis_server

pytest.importorskip("dagster_celery", reason="the Celery executor needs pip install 'retrain-assets[scale]'")

NS = Namespace("loan_default")  # the code location's dataset whose backfill this is
# A champion is trained on four days before the backfill (in process), so drift_report has a reference
# and resolve_labels a model to score with; the backfill takes the next four days (day 5 has bad rows).
SEED_PARTITIONS = ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-05"]  # 2025-01-04 is the corrupt batch
BACKFILL_PARTITIONS = ["2025-01-06", "2025-01-07", "2025-01-08", "2025-01-09"]
SCENARIO_DAYS = 11  # labels arrive two days late: day 10 delivers the labels of 2025-01-09
PARTITIONED = ["raw_batches", "quarantine", "labels", "rejected_labels", "review_decisions", "labeled_batches",
               "review_queue", "drift_report"]
EVERY_PARTITION = {"raw_batches", "labels", "labeled_batches", "drift_report"}  # the others hold exceptions only
# Wall-clock columns (when a step ran), not results.
CLOCK_COLUMNS = {"computed_at", "quarantined_at", "ingested_at", "first_seen_at"}
WORKERS = ("w1", "w2")
CELERY_YAML = REPO / "deploy" / "celery" / "celery.yaml"
BIN = Path(sys.executable).parent
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # run logs still reach the instance


def write_instance_yaml(path: Path) -> None:
    """The project's instance settings (the warehouse pool, limit 1) with runs and event logs in
    PostgreSQL. Not SQLite: its slot claims race across processes (SELECT ... FOR UPDATE is a no-op
    there), and two runs starting together both took the pool's one slot when this test used it."""
    config = yaml.safe_load((REPO / ".dagster_home" / "dagster.yaml").read_text())
    config.pop("event_log_storage")
    config["storage"] = yaml.safe_load((REPO / "deploy" / "production" / "dagster.yaml").read_text())["storage"]
    path.write_text(yaml.safe_dump(config))


def land(scenario, landing_dir: Path) -> None:
    for delivery in scenario_deliveries(scenario):
        for relative, frame in delivery.files.items():
            write_atomically(frame, landing_dir / relative)


def seed(settings: ProjectSettings) -> None:
    """Ingest the seed partitions and train the first champion, in process."""
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    for key in SEED_PARTITIONS:
        job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False, run_config=QUIET,
                               asset_selection=NS.keys(*(a for a in PARTITIONED if a != "drift_report")))
    assert defs.resolve_job_def(NS.name("retrain_job")).execute_in_process(instance=instance, run_config=QUIET).success


def backfill_in_process(settings: ProjectSettings) -> float:
    started = time.perf_counter()
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    for key in BACKFILL_PARTITIONS:
        job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False, run_config=QUIET,
                               asset_selection=NS.keys(*PARTITIONED))
    return time.perf_counter() - started


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A subprocess in its own process group, so it is killed with all its children."""
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def wait_for_workers(broker: str, names: set[str], logs: list[Path], timeout: float = 60.0) -> None:
    from dagster_celery.make_app import make_app

    app = make_app({"broker": broker, "backend": broker})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = {name.split("@")[0] for reply in app.control.ping(timeout=0.5) for name in reply}
        if names <= answered:
            return
        time.sleep(0.5)
    raise AssertionError(f"celery workers {sorted(names)} did not answer within {timeout:.0f} s:\n"
                         + "\n".join(log.read_text()[-1500:] for log in logs))


@pytest.fixture(scope="module")
def celery_run(tmp_path_factory):
    started = time.perf_counter()
    root = tmp_path_factory.mktemp("celery")
    scenario = load_scenario(write_short_scenario(root, days=SCENARIO_DAYS))
    celery = ProjectSettings(data_dir=root / "celery_data", spec_path=scenario.spec_path, executor="in_process")
    local = ProjectSettings(data_dir=root / "local_data", spec_path=scenario.spec_path, executor="in_process")
    home = root / "dagster_home"
    home.mkdir()
    write_instance_yaml(home / "dagster.yaml")
    processes: list[subprocess.Popen] = []  # workers and runs, each the leader of its process group
    with redis_server() as broker, running_postgres(root / "pg") as pg, pytest.MonkeyPatch.context() as patch:
        pg.create_database("dagster")
        # What the code location reads; the workers and the runs inherit it.
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name, value in dict(DAGSTER_HOME=str(home), RETRAIN_ASSETS_DATA_DIR=str(celery.data_dir),
                                RETRAIN_ASSETS_SPEC=str(scenario.spec_path), RETRAIN_ASSETS_EXECUTOR="celery",
                                RETRAIN_ASSETS_CELERY_BROKER=broker, RETRAIN_ASSETS_CELERY_BACKEND=broker).items():
            patch.setenv(name, value)
        for name, value in pg.env("dagster").items():
            patch.setenv(name, value)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONWARNINGS": "ignore"}
        with dg.DagsterInstance.get() as instance:  # create its tables now: processes starting together would race
            # ...and the pool's row, which Dagster creates on the first claim: two first claims at
            # once collide on its unique key (the setup step of docs/scale.md, `dagster instance concurrency set`).
            instance.event_log_storage.set_concurrency_slots(NS.pool, 1)
        try:
            land(scenario, celery.landing_dir)
            logs = [root / f"{name}.log" for name in WORKERS]
            for name, log in zip(WORKERS, logs):
                # One task at a time in the worker process itself (solo pool); -i imports the code location at
                # start, not on the first task.
                processes.append(spawn([str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                                        "-y", str(CELERY_YAML), "-n", name, "-i", "retrain_assets.definitions",
                                        "--", "--pool", "solo", "--without-mingle", "--without-gossip"], env, log))
            seed(celery)  # while the workers start
            shutil.copytree(celery.data_dir, local.data_dir)
            wait_for_workers(broker, set(WORKERS), logs)
            backfill_started = time.perf_counter()
            # The backfill: one run per partition, all at once, each from the CLI an operator would use.
            selection = ",".join(asset.to_user_string() for asset in NS.keys(*PARTITIONED))
            runs = [spawn([str(BIN / "dagster"), "asset", "materialize", "-m", "retrain_assets.definitions",
                           "--select", selection, "--partition", key, "--config-json", json.dumps(QUIET)],
                          env, root / f"run_{key}.log") for key in BACKFILL_PARTITIONS]
            processes += runs
            local_seconds = backfill_in_process(local)  # meanwhile, on its own copy of the stores
            for run, key in zip(runs, BACKFILL_PARTITIONS):
                assert run.wait(timeout=180) == 0, (root / f"run_{key}.log").read_text()[-3000:]
            celery_seconds = time.perf_counter() - backfill_started
            with dg.DagsterInstance.get() as instance:
                records = {run.tags["dagster/partition"]: (run, instance.all_logs(run.run_id)) for run in instance.get_runs()}
        finally:
            for process in processes:
                kill_group(process)
    seconds = dict(setup=backfill_started - started, celery_backfill=celery_seconds, in_process_backfill=local_seconds)
    yield SimpleNamespace(records=records, celery=celery, local=local, seconds=seconds)
    deadline = time.monotonic() + 10  # SIGKILL is delivered at once, but dying takes a moment
    while any(group_members(p.pid) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for p in processes for pid in group_members(p.pid)], "leftover worker or run processes"
    seconds["fixture_total"] = time.perf_counter() - started
    print("\ncelery scale test, seconds:", {k: round(v, 1) for k, v in seconds.items()})


def steps_of(records: list) -> dict[str, dict]:
    """step key -> start, end, the pid that ran it and the Celery worker that took its task."""
    steps: dict[str, dict] = {}
    for record in records:
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        step = steps.setdefault(event.step_key, {})
        if event.event_type == dg.DagsterEventType.STEP_START:
            step.update(start=record.timestamp, pid=event.pid)
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            step.update(end=record.timestamp, outcome=event.event_type)
        elif event.event_type == dg.DagsterEventType.ENGINE_EVENT and "Celery worker" in event.engine_event_data.metadata:
            step["worker"] = event.engine_event_data.metadata["Celery worker"].value
    return steps


def test_the_backfill_succeeds_one_run_per_partition(celery_run):
    assert sorted(celery_run.records) == BACKFILL_PARTITIONS
    for run, records in celery_run.records.values():
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") in BACKFILL_PARTITIONS
        assert set(steps_of(records)) == {NS.name(op) for op in ("ingest_batches", "ingest_labels", "resolve_labels", "drift_report")}


def test_every_step_ran_on_a_celery_worker(celery_run):
    used = set()
    for run, records in celery_run.records.values():
        orchestrator = next(r.dagster_event.pid for r in records if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.RUN_START)
        for key, step in steps_of(records).items():
            assert step["outcome"] == dg.DagsterEventType.STEP_SUCCESS, key
            assert step["worker"].split("@")[0] in WORKERS, step
            assert step["pid"] != orchestrator  # executed by the worker, not the run's own process
            used.add(step["worker"])
    # One task at a time (the pool), yet both workers took tasks: Celery distributed them.
    assert len(used) == 2, used


# The pool alone did not guarantee this here: in a fresh-clone run of 2026-12-02 two `ingest_batches`
# steps of different runs ran on the two workers at once with the pool at 1. Each step now holds the
# warehouse writer lock (pipeline/shared/io_manager.py) from before STEP_START to after STEP_SUCCESS.
def test_warehouse_steps_never_overlapped_across_concurrent_runs(celery_run):
    runs = [(min(r.timestamp for r in records), max(r.timestamp for r in records)) for _, records in celery_run.records.values()]
    # The four runs were in progress at the same time: without the pool their steps could overlap.
    assert max(start for start, _ in runs) < min(end for _, end in runs)
    steps = sorted((s["start"], s["end"], f"{partition}/{key}") for partition, (_, records) in celery_run.records.items()
                   for key, s in steps_of(records).items())
    assert len(steps) == 4 * len(BACKFILL_PARTITIONS)
    overlaps = [(a[2], b[2]) for a, b in zip(steps, steps[1:]) if b[0] < a[1]]
    assert not overlaps


@pytest.mark.parametrize("table", PARTITIONED)
def test_warehouse_tables_equal_the_in_process_run(celery_run, table):
    tables = {str(s.data_dir): set(read_table(s.warehouse_path, "select table_name from information_schema.tables")["table_name"])
              for s in (celery_run.celery, celery_run.local)}
    assert len({table in names for names in tables.values()}) == 1, tables
    if table not in tables[str(celery_run.local.data_dir)]:
        pytest.skip(f"no {table} rows in this scenario: an empty output writes no table")
    frames = []
    for settings in (celery_run.celery, celery_run.local):
        frame = read_table(settings.warehouse_path, f"select * from {table}")
        frame = frame.drop(columns=[c for c in frame.columns if c in CLOCK_COLUMNS])
        # Paths into the data dir differ between the two stores by their root only.
        frame = frame.replace(str(settings.data_dir), "<data>", regex=True)
        frames.append(frame.sort_values(list(frame.columns)).reset_index(drop=True))
    celery, local = frames
    if table in EVERY_PARTITION:
        assert set(BACKFILL_PARTITIONS) <= set(celery["partition_start"].dt.strftime("%Y-%m-%d"))
    pd.testing.assert_frame_equal(celery, local)
