"""Run-level safety that must not depend on optional instance settings: one model job at a time,
and recovery of runs whose worker process died.

Dagster's default run launcher cannot tell whether a run's worker still lives, so a run whose
worker was killed (`kill -9`, out of memory, the host's `dagster dev` killed) stays STARTED for
ever: its pool slots stay taken, it is never retried, and (being a model job) it would hold every
later retrain. The same holds for a run executed in process (the demo, the CLI) whose process
died. `dead_run_sensor` finds such runs on this host, marks them failed with the reason, and has
them run again once: through Dagster's run retries where the instance enables them, else by
requesting the same assets and partition itself.
"""

from __future__ import annotations

import json
import socket

import dagster as dg
import psutil

from retrain_assets.pipeline.shared.namespace import DATASET_TAG, Namespace, dataset_of_run

# On every run of the two jobs that move the registry aliases (retrain_job, rollout_job).
MODEL_JOB_TAG = "retrain_assets/model_job"
# Also on every model-job run: its dataset, so a run queue can allow one model job per dataset
# (deploy/production/dagster.yaml: applyLimitPerUniqueValue).
MODEL_JOB_DATASET_TAG = "retrain_assets/model_job_dataset"
RECOVERS_TAG = "retrain_assets/recovers"
HOST_TAG = "retrain_assets/host"
GRPC_INFO_TAG = ".dagster/grpc_info"  # set by the default run launcher: where the run's code server is
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def model_jobs_in_progress(instance: dg.DagsterInstance, dataset: str,
                           exclude_run_id: str | None = None) -> list[dg.DagsterRun]:
    """Runs of `dataset`'s model jobs queued or in progress, oldest first (`exclude_run_id` left
    out). Each dataset has its own registry entry: another dataset's retrain never holds this one."""
    runs = instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS, tags={MODEL_JOB_TAG: ["retrain", "rollout"],
                                                                        DATASET_TAG: dataset}))
    return [run for run in reversed(runs) if run.run_id != exclude_run_id]


def refuse_if_model_job_running(context: dg.AssetExecutionContext) -> None:
    """Fail this step when an older model-job run is still running: two runs moving the registry
    aliases at once (a backfill, a manual run and the sensor's) would train, judge or promote twice."""
    mine = context.instance.get_run_record_by_id(context.run_id)
    for run in model_jobs_in_progress(context.instance, dataset_of_run(context.run), exclude_run_id=context.run_id):
        other = context.instance.get_run_record_by_id(run.run_id)
        if other is not None and mine is not None and other.create_timestamp < mine.create_timestamp \
                and run.status != dg.DagsterRunStatus.QUEUED:
            raise dg.Failure(f"{run.job_name} run {run.run_id} ({run.status.value}) is still moving the model registry; "
                             "one model job at a time: this run stops here, the policy re-decides once that run ends")


def this_host_tag() -> dict[str, str]:
    """The tag that says a run executes in a process of this host, so that `dead_run_sensor` knows
    whose processes to look at."""
    return {HOST_TAG: socket.gethostname()}


def host_tags(run: dg.DagsterRun | None) -> dict[str, str]:
    """The tag to add to a run that no launcher placed and nobody tagged at creation (an in-process
    run of the CLI): `this_host_tag`."""
    if run is None or GRPC_INFO_TAG in run.tags or HOST_TAG in run.tags:
        return {}
    return this_host_tag()


def runs_here(run: dg.DagsterRun) -> bool:
    """Whether a run's orchestrating process runs on this host: launched through a local code
    server (the default run launcher), or in process here (HOST_TAG)."""
    if GRPC_INFO_TAG not in run.tags:
        return run.tags.get(HOST_TAG) == socket.gethostname()
    try:
        grpc = json.loads(run.tags[GRPC_INFO_TAG])
    except ValueError:
        return False
    return "socket" in grpc or grpc.get("host") in LOCAL_HOSTS | {socket.gethostname()}


def run_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[int, float] | None:
    """(pid, when it was reported) of the process orchestrating a run on this host, else None
    (another host, or nothing reported yet). That process reports its pid in an engine event
    ("Started process for run", or "Executing steps ..." for a run executed in process); a
    resumed run reports a newer one."""
    if not runs_here(run):
        return None
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, ascending=False).records
    found = None
    for record in records:
        event = record.event_log_entry.dagster_event
        pid = event.engine_event_data.metadata.get("pid") if event and event.engine_event_data else None
        if pid is None or event.step_key is not None:  # a step's subprocess: its orchestrator watches it
            continue
        found = (int(pid.value), record.event_log_entry.timestamp)
        if (event.message or "").startswith("Started process for run"):
            break  # the newest worker of a launched run
    return found


def worker_alive(pid: int, reported_at: float) -> bool:
    """Whether process `pid` exists and is the one reported at `reported_at` (a process started
    after that is a reused pid, and the worker is gone)."""
    try:
        return psutil.Process(pid).create_time() <= reported_at + 1.0
    except psutil.NoSuchProcess:
        return False


def planned_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.AssetKey]:
    """The assets a run was to materialize: its asset selection, else what it planned (a job's run)."""
    if run.asset_selection:
        return sorted(run.asset_selection)
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    return sorted({r.event_log_entry.dagster_event.asset_key for r in records if r.event_log_entry.dagster_event})


def belongs_to(run: dg.DagsterRun, dataset: str) -> bool:
    """Whether `run` is one of `dataset`'s runs. A run over several key prefixes (another code
    location's on a shared instance, or one our resources refuse) is none of ours: telling so must
    not stop the sensor, or one such run would leave every dead run of every dataset unrecovered."""
    try:
        return dataset_of_run(run) == dataset
    except dg.DagsterInvariantViolationError:
        return False


def rerun_request(run: dg.DagsterRun, assets: list[dg.AssetKey]) -> dg.RunRequest:
    """The same assets and partition as a dead run, once (tagged with the run it recovers)."""
    tags = {k: v for k, v in run.tags.items() if not k.startswith((".dagster", "dagster/"))}
    return dg.RunRequest(run_key=f"recover:{run.run_id}", asset_selection=assets,
                         partition_key=run.tags.get("dagster/partition"), tags={**tags, RECOVERS_TAG: run.run_id})


def build_recovery(dataset: str) -> dg.Definitions:
    """The dead-run sensor of `dataset`'s runs (re-run assets share a partitions definition only
    within one dataset)."""
    ns = Namespace(dataset)

    @dg.sensor(name=ns.name("dead_run_sensor"), target=ns.selection(), minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING)
    def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Runs of the dataset left STARTED by a dead worker on this host: marked failed with the
        reason, then retried once (by the instance's run retries, or here when the instance has none)."""
        instance = context.instance
        if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
            return dg.SensorResult(skip_reason=dg.SkipReason(
                f"{type(instance.run_launcher).__name__} runs workers elsewhere: run monitoring checks them"))
        requests, started = [], instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        for run in started:
            if not belongs_to(run, dataset):
                continue
            worker = run_worker(instance, run)
            if worker is None or worker_alive(*worker):
                continue
            retried = instance.run_retries_enabled
            instance.report_run_failed(run, f"the run's worker process (pid {worker[0]}) is gone: it was killed or ran "
                                            f"out of memory; {'run retries re-run it' if retried else 'dead_run_sensor re-runs it once'}")
            context.log.warning(f"run {run.run_id} ({run.job_name}): worker pid {worker[0]} is gone; marked failed")
            assets = [] if retried or RECOVERS_TAG in run.tags else planned_assets(instance, run)
            if assets:
                requests.append(rerun_request(run, assets))
        skip = None if requests else dg.SkipReason(f"{len(started)} started runs, none with a dead worker on this host")
        return dg.SensorResult(run_requests=requests, skip_reason=skip)

    return dg.Definitions(sensors=[dead_run_sensor])
