"""A run whose worker is killed under a real `dagster-daemon` (the default run launcher, the repo's
dagster.yaml: the dataset's `loan_default__warehouse` pool at 1, run monitoring, one run retry),
killed together with its code server. Nothing of Dagster's own can then see that the worker died:
before the dataset's `loan_default__dead_run_sensor`, the run stayed STARTED for ever, its pool
slot stayed taken and the next partition's run never got past it. Now the run is marked failed
with the reason, run again, and the partition behind it completes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml

from retrain_assets.pipeline.shared.runs import run_worker
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets_tests.conftest import LOAN_SPEC, REPO, read_table
from retrain_assets_tests.daemon_backfill import BIN, DATASET, land_batches

TIMEOUT = 240.0


def instance_yaml() -> str:
    """The repo's instance settings, with the daemon's polls shortened so the test takes seconds."""
    config = yaml.safe_load((REPO / ".dagster_home" / "dagster.yaml").read_text())
    config["run_monitoring"].update(poll_interval_seconds=2, free_slots_after_run_end_seconds=2)
    return yaml.safe_dump(config)


def wait_for(what: str, check, timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {timeout:.0f} s; daemon log:\n{log.read_text()[-4000:]}")


def kill_with_its_code_server(pid: int) -> None:
    """SIGKILL a run worker's code server (its parent, which would otherwise report the run failed),
    then the worker and every process under it: what a `kill -9` of `dagster dev`'s process group,
    the OOM killer or a host restart leaves behind."""
    worker = psutil.Process(pid)
    for member in [worker.parent(), worker, *worker.children(recursive=True)]:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Deployment:
    """A code server of our own (so that it can be killed and restarted at once, as a supervisor
    would) and a `dagster-daemon` loading it; the repo's instance settings."""

    def __init__(self, tmp: Path):
        self.tmp, self.home, self.data, self.port = tmp, tmp / "home", tmp / "data", free_port()
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text(instance_yaml())
        (tmp / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
            "host": "localhost", "port": self.port, "location_name": "retrain_assets"}}]}))
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "RETRAIN_ASSETS_DATA_DIR": str(self.data),
                    "RETRAIN_ASSETS_SPEC": str(LOAN_SPEC), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
                    "PYTHONWARNINGS": "ignore"}
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.log = tmp / "daemon.log"
        self.processes: list[subprocess.Popen] = []

    def start_code_server(self) -> None:
        with open(self.tmp / "code-server.log", "a") as out:
            self.processes.append(subprocess.Popen(
                [BIN / "dagster", "api", "grpc", "-m", "retrain_assets.definitions", "--host", "localhost", "-p", str(self.port)],
                cwd=REPO, env=self.env, stdout=out, stderr=out, start_new_session=True))
        wait_for("the code server", lambda: subprocess.run(
            [BIN / "dagster", "api", "grpc-health-check", "-p", str(self.port)], capture_output=True).returncode == 0, 60, self.log)

    def start_daemon(self) -> None:
        with open(self.log, "w") as out:
            self.processes.append(subprocess.Popen([BIN / "dagster-daemon", "run", "-w", str(self.tmp / "workspace.yaml")],
                                                   cwd=REPO, env=self.env, stdout=subprocess.DEVNULL, stderr=out,
                                                   start_new_session=True))

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)


@pytest.fixture
def deployment(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))  # the instance yaml reads it
    deployment = Deployment(tmp_path)
    instance = dg.DagsterInstance.from_config(str(deployment.home))
    instance.event_log_storage.set_concurrency_slots(Namespace(DATASET).pool, 1)
    deployment.start_code_server()
    deployment.start_daemon()
    try:
        yield deployment, instance
    finally:
        deployment.stop()
        instance.dispose()


def test_a_run_whose_worker_is_killed_is_failed_retried_and_frees_the_warehouse(deployment):
    deployment, instance = deployment
    data, log = deployment.data, deployment.log
    land_batches(data, 2)  # two partitions: two ingestion runs, one warehouse slot

    def a_step_in_progress():
        for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            started = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
            worker = run_worker(instance, run)
            if started and worker:
                return run, worker[0]
        return None

    victim, pid = wait_for("an ingestion step in progress", a_step_in_progress, TIMEOUT, log)
    kill_with_its_code_server(pid)
    deployment.start_code_server()  # its supervisor restarts it; the dead run's worker stays dead

    def finished(run_id: str):
        run = instance.get_run_by_id(run_id)
        return run if run.is_finished else None

    dead = wait_for("the killed run marked failed", lambda: finished(victim.run_id), TIMEOUT, log)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    failure = instance.get_records_for_run(victim.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert f"worker process (pid {pid}) is gone" in failure[-1].event_log_entry.dagster_event.message

    def all_partitions_ingested():
        runs = instance.get_runs()
        retries = [r for r in runs if r.tags.get("dagster/parent_run_id") == victim.run_id]
        done = [r for r in runs if r.is_finished]
        return (retries, runs) if retries and len(done) == len(runs) else None

    retries, runs = wait_for("the retry and the other partition's run finished", all_partitions_ingested, TIMEOUT, log)
    assert [r.status for r in retries] == [dg.DagsterRunStatus.SUCCESS]
    assert {r.status for r in runs if r.run_id != victim.run_id} == {dg.DagsterRunStatus.SUCCESS}
    # The ingestion runs' partitions (the sensors may meanwhile start an unpartitioned policy run).
    raw_batches = Namespace(DATASET).key("raw_batches")
    partitions = {r.tags.get("dagster/partition") for r in runs if raw_batches in (r.asset_selection or ())}
    assert len(partitions) == 2, [(r.job_name, r.asset_selection, r.tags.get("dagster/partition")) for r in runs]
    rows = read_table(data / "warehouse" / f"{DATASET}.duckdb",
                      "select strftime(partition_start, '%Y-%m-%d') as p, count(*) as n, count(distinct application_id) as ids "
                      "from raw_batches group by 1 order by 1")
    assert rows["p"].tolist() == sorted(partitions)
    assert (rows["n"] == rows["ids"]).all()  # every row once, the killed run's partition included


SLOW_RUN = """
import sys, time
import dagster as dg
import pandas as pd
from retrain_assets.pipeline.shared.io_manager import WarehouseIOManager

@dg.asset(key_prefix=["loan_default"])
def slow() -> pd.DataFrame:
    print("STEP RUNNING", flush=True)
    time.sleep(600)
    return pd.DataFrame({"x": [1]})

dg.materialize([slow], instance=dg.DagsterInstance.get(), tags={"retrain_assets/dataset": "loan_default"},
               resources={"io_manager": WarehouseIOManager(database=sys.argv[1], schema="main")})
"""

# Another code location's run on the same instance, over two key prefixes (its own IO manager).
FOREIGN_RUN = """
import time
import dagster as dg

@dg.asset(key_prefix=["team_a"])
def first() -> None:
    print("STEP RUNNING", flush=True)
    time.sleep(600)

@dg.asset(key_prefix=["team_b"], deps=[first])
def second() -> None:
    pass

dg.Definitions(assets=[first, second]).resolve_implicit_global_asset_job_def().execute_in_process(
    instance=dg.DagsterInstance.get(), asset_selection=[first.key, second.key])
"""


def started_and_killed(script: str, *args: str) -> None:
    """Run `script` in its own process until its step runs, then SIGKILL it."""
    child = subprocess.Popen([sys.executable, "-c", script, *args], env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "STEP RUNNING"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)


def test_an_in_process_run_whose_process_died_is_failed_and_requested_again(tmp_path, monkeypatch):
    """A run executed in process (the demo, the CLI) has no launcher that could notice its death:
    killed, it stayed STARTED and, as a model job, would have held every later retrain. On an
    instance without run retries the sensor also requests the same assets again, once. Each
    dataset's sensor looks after its own runs (every run of ours carries its dataset's tag)."""
    from retrain_assets.pipeline.shared.runs import HOST_TAG, RECOVERS_TAG, build_recovery

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    started_and_killed(SLOW_RUN, str(tmp_path / "warehouse.duckdb"))
    # ...while a run of another code location over two key prefixes is left STARTED too: it names
    # no dataset of ours, and must not stop the sensor from recovering the dataset's run.
    started_and_killed(FOREIGN_RUN)
    with dg.DagsterInstance.get() as instance:
        run, foreign = instance.get_runs()[::-1]
        assert {key.path[0] for key in foreign.asset_selection} == {"team_a", "team_b"}
        assert foreign.status == dg.DagsterRunStatus.STARTED
        assert run.status == dg.DagsterRunStatus.STARTED and run.tags[HOST_TAG] == socket.gethostname()
        # Another dataset's sensor leaves the run alone: each dataset recovers its own runs.
        [other] = build_recovery("rainfall").sensors
        assert not other(dg.build_sensor_context(instance=instance)).run_requests
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        [sensor] = build_recovery("loan_default").sensors
        result = sensor(dg.build_sensor_context(instance=instance))
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        [request] = result.run_requests
        assert request.asset_selection == [dg.AssetKey(["loan_default", "slow"])] and request.tags[RECOVERS_TAG] == run.run_id
        # Once: the next tick finds nothing to do.
        assert not sensor(dg.build_sensor_context(instance=instance)).run_requests
        assert instance.get_run_by_id(foreign.run_id).status == dg.DagsterRunStatus.STARTED  # not ours to judge
