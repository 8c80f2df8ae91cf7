"""Drive the real Definitions in process, the way the Dagster daemon would: tick the sensors and
the declarative-automation conditions, execute the runs they request against a persistent
instance (so `make ui` shows them), deduplicate run keys like the daemon does."""

from __future__ import annotations

import datetime as dt
import gc
import sqlite3
import warnings
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import dagster as dg

from retrain_assets.core.files import write_atomically
from retrain_assets.core.offline.scenario import Delivery
from retrain_assets.pipeline.alerts import tick_alerts
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.runs import this_host_tag

RUN_KEY_TAG, SENSOR_NAME_TAG = "dagster/run_key", "dagster/sensor_name"


@dataclass
class RunOutcome:
    """One executed run: who asked for it, what it materialized, which checks it evaluated."""

    requested_by: str
    partition_key: str | None
    success: bool
    materializations: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    error: str = ""

    @classmethod
    def from_result(cls, requested_by: str, partition_key: str | None, result: dg.ExecuteInProcessResult) -> "RunOutcome":
        outcome = cls(requested_by, partition_key, result.success)
        for event in result.get_asset_materialization_events():
            mat = event.step_materialization_data.materialization
            outcome.materializations[mat.asset_key.path[-1]] = {k: v.value for k, v in mat.metadata.items()}
        for evaluation in result.get_asset_check_evaluations():
            outcome.checks[evaluation.check_name] = (evaluation.passed, evaluation.description or "")
        if not result.success:
            outcome.error = "; ".join(event.message or "" for event in result.get_step_failure_events())
        return outcome


@contextmanager
def instance_databases_open(instance: dg.DagsterInstance) -> Iterator[None]:
    """Keep an idle connection to each SQLite database of a persistent instance for the block.

    Dagster's SQLite storages open and close a connection for every read and write, and SQLite
    checkpoints its write-ahead log into the database (and syncs it) whenever the last connection
    to a file closes: each of the ~30 events of a run paid that. With one more connection open,
    checkpoints come on SQLite's own schedule (every 1000 pages); every commit is still durable.
    Nothing happens for an instance without SQLite files (an ephemeral one).
    """
    root = Path(instance.root_directory)
    with ExitStack() as stack:
        for path in sorted([*root.glob("*.db"), *root.glob("*/*.db")]):
            conn = stack.enter_context(closing(sqlite3.connect(path)))
            conn.execute("select count(*) from sqlite_master").fetchall()  # opens the file and its log
        yield


@contextmanager
def fewer_garbage_collections(young: int = 10_000) -> Iterator[None]:
    """Collect garbage less often for the block (Python's thresholds are 700, 10, 10).

    A replay allocates millions of short-lived objects (events, SQL statements, frames): over 12
    days of the built-in scenario the collector ran ~3,400 young and 11 full collections, each full
    one ~0.15 s over the ~500 MB heap, 2.9 s of a 27 s replay; with these thresholds, 1.4 s and no
    full collection, at the same peak memory. The previous thresholds come back after the block.
    """
    previous = gc.get_threshold()
    gc.set_threshold(young, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


class PipelineDriver:
    """Ticks sensors and automation in process and executes what they request."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, landing_dir: Path, console_log_level: str = "WARNING",
                 dataset: str | None = None):
        self.defs = defs
        # The dataset whose sensors this drives (default: the one dataset `defs` holds).
        self.ns = Namespace(dataset or _only_dataset(defs))
        # Run logs always go to the instance (the UI shows them); this only sets what the console echoes.
        self.run_config = {"loggers": {"console": {"config": {"log_level": console_log_level}}}}
        self.instance = instance
        self.landing_dir = landing_dir
        self.cursors: dict[str, str | None] = {}
        self.automation_cursor = None
        self.asset_job = defs.resolve_implicit_global_asset_job_def()
        # Runs executed here are on this host from the start: dead_run_sensor knows whose they are.
        self.host_tags = this_host_tag()
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    def start(self, evaluation_time: dt.datetime) -> None:
        """First automation tick: like a daemon that was already running, history is 'handled'."""
        self.automation_cursor = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, asset_selection=self.ns.selection(), evaluation_time=evaluation_time
        ).cursor

    def deliver(self, delivery: Delivery) -> None:
        """Write a delivery's files into the landing zone (atomically, as a producer should)."""
        for relative, frame in delivery.files.items():
            write_atomically(frame, self.landing_dir / relative)

    def tick(self, evaluation_time: dt.datetime) -> list[RunOutcome]:
        """One daemon cycle: ingestion sensor, automation until quiet, the retrain sensor until it
        has nothing more to launch (decide, then act on the decision), the rollout sensor, and
        automation again (what those runs changed reaches the analysts' snapshot)."""
        outcomes = self.tick_sensor("landing_zone_sensor")
        outcomes += self.tick_automation(evaluation_time)
        for _ in range(4):
            launched = self.tick_sensor("retrain_sensor")
            if not launched:
                break
            outcomes += launched
        outcomes += self.tick_sensor("rollout_sensor")
        # A rollout's new champion is published to the analysts' snapshot like any other change.
        outcomes += self.tick_automation(evaluation_time)
        # Alerts last: they read the runs this tick ended, and launch none.
        tick_alerts(self.defs, self.instance, self.ns, self.cursors)
        return outcomes

    def tick_sensor(self, local: str) -> list[RunOutcome]:
        """Evaluate one of the dataset's sensors (its name without the dataset prefix) and execute its
        new run requests (run keys already used are skipped)."""
        name = self.ns.name(local)
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors.get(name), definitions=self.defs, sensor_name=name,
        )
        result = sensor(context)
        if isinstance(result, dg.SensorResult):
            self.cursors[name] = result.cursor if result.cursor is not None else self.cursors.get(name)
            requests = list(result.run_requests or [])
        else:
            requests = [r for r in (result if isinstance(result, list) else [result]) if isinstance(r, dg.RunRequest)]
        outcomes = []
        for request in requests:
            if request.run_key and self._run_key_used(name, request.run_key):
                continue
            tags = {**(request.tags or {}), SENSOR_NAME_TAG: name}
            if request.run_key:
                tags[RUN_KEY_TAG] = request.run_key
            job = self.defs.resolve_job_def(request.job_name) if request.job_name else (
                self.defs.resolve_job_def(sensor.job_name) if sensor.has_jobs and not sensor.asset_selection else self.asset_job
            )
            outcomes.append(self.execute(local, job, request.partition_key, request.asset_selection, tags))
        return outcomes

    def tick_automation(self, evaluation_time: dt.datetime) -> list[RunOutcome]:
        """Evaluate automation conditions (repeatedly, until nothing more is requested)."""
        outcomes: list[RunOutcome] = []
        for _ in range(10):
            result = dg.evaluate_automation_conditions(
                defs=self.defs, instance=self.instance, asset_selection=self.ns.selection(),
                cursor=self.automation_cursor, evaluation_time=evaluation_time,
            )
            self.automation_cursor = result.cursor
            by_partition: dict[str | None, list[dg.AssetKey]] = {}
            for key in self.defs.resolve_all_asset_keys():
                if key.path[0] != self.ns.dataset:
                    continue
                for partition in result.get_requested_partitions(key):
                    by_partition.setdefault(partition, []).append(key)
            if not by_partition:
                break
            for partition, keys in sorted(by_partition.items(), key=lambda kv: kv[0] or ""):
                tags = {SENSOR_NAME_TAG: self.ns.name("automation_condition_sensor"),
                        "retrain_assets/launched_by": "automation", **self.ns.tags}
                outcomes.append(self.execute("automation", self.asset_job, partition, keys, tags))
        return outcomes

    def _run_key_used(self, sensor_name: str, run_key: str) -> bool:
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_name}), limit=1)
        return bool(runs)

    def execute(self, requested_by, job, partition_key, asset_selection, tags) -> RunOutcome:
        """Execute one run in process on the instance; failures are returned, not raised."""
        result = job.execute_in_process(
            instance=self.instance,
            partition_key=partition_key,
            asset_selection=list(asset_selection) if asset_selection else None,
            tags={**tags, **self.host_tags},
            run_config=self.run_config,
            raise_on_error=False,
        )
        return RunOutcome.from_result(requested_by, partition_key, result)


def _only_dataset(defs: dg.Definitions) -> str:
    """The dataset prefix every asset of `defs` shares."""
    prefixes = {key.path[0] for key in defs.resolve_all_asset_keys()}
    if len(prefixes) != 1:
        raise ValueError(f"the definitions hold {len(prefixes)} datasets ({', '.join(sorted(prefixes))}): name the one to drive")
    return prefixes.pop()
