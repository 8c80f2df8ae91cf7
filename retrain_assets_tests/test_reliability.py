"""Reliability against the real stores: re-runs are idempotent, a run killed with SIGKILL at a
random point inside each stage leaves every store consistent and the stage completes when run
again, and concurrent partition runs (multiprocess executor, `loan_default__warehouse` pool) neither corrupt
nor deadlock the warehouse while analysts read the snapshot.

`make test` kills each stage once; `make check-reliability` sets RETRAIN_ASSETS_CRASH_TRIALS=6
(24 kills) and runs the marked slow tests too.
"""

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from retrain_assets.core.files import write_atomically
from retrain_assets.core.offline.scenario import generate_day, load_scenario, scenario_deliveries
from retrain_assets.pipeline import build_definitions
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.registry import CHECKSUM_TAG, ModelRegistry
from retrain_assets.pipeline.shared.snapshots import partitioned_tables, publish_all
from retrain_assets.apps.demo import replay
from retrain_assets.apps.replay import PipelineDriver
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import REPO, write_short_scenario
from retrain_assets_tests.daemon_backfill import pool_step_spans

TRIALS = int(os.environ.get("RETRAIN_ASSETS_CRASH_TRIALS", "1"))
REPORT = os.environ.get("RETRAIN_ASSETS_RELIABILITY_REPORT")  # where trial outcomes are appended, if set
BASE_DAYS = 6  # replayed before the tests: a champion exists; then one more day, labelled, untrained
# Quick mode's kill point per stage: (log lines after the marker, longest extra delay in seconds).
# Calibrated runs print 33, 18, 7 and 21 lines; registration is one long pause after its marker.
QUICK_KILL = {"ingestion": (12, 0.05), "training": (6, 0.3), "registration": (0, 1.0), "promotion": (8, 0.05)}
MODEL = "loan_default"  # the dataset, and its registered model's name
NS = Namespace(MODEL)
# Columns that record when or by which run a row was written: a re-run may change them and
# nothing else (the table's data is compared with them left out).
BOOKKEEPING = {"quarantined_at", "computed_at", "dagster_run_id", "ingested_at"}
# Stage -> the console line after which the kill timer starts (Dagster's DEBUG event lines).
MARKERS = {"ingestion": "ingest_batches - STEP_START", "training": "candidate_model - STEP_START",
           "registration": "registering the", "promotion": "deployed_model - STEP_START"}


def report(line: str) -> None:
    print(line)
    if REPORT:
        with open(REPORT, "a") as fh:
            fh.write(line + "\n")


@dataclass
class Stores:
    root: Path
    settings: ProjectSettings
    home: Path
    staged: Path  # the next day's files, delivered by the ingestion stage

    def env(self) -> dict[str, str]:
        # mlflow.set_tracking_uri (called in this process by earlier runs) exports MLFLOW_TRACKING_URI,
        # which would point every child at the first store it saw.
        inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        return {**inherited, "RETRAIN_ASSETS_DATA_DIR": str(self.settings.data_dir),
                "RETRAIN_ASSETS_SPEC": str(self.settings.spec_path), "DAGSTER_HOME": str(self.home),
                "PYTHONPATH": str(REPO)}

    def copy(self, target: Path) -> "Stores":
        shutil.copytree(self.root, target, symlinks=True)
        relative = lambda p: target / p.relative_to(self.root)  # noqa: E731
        settings = ProjectSettings(data_dir=relative(self.settings.data_dir), spec_path=relative(self.settings.spec_path))
        # The snapshot's catalogs name their Parquet folders by absolute path: the copy publishes its own.
        shutil.rmtree(settings.snapshot_path.parent, ignore_errors=True)
        publish_snapshot(settings)
        return Stores(target, settings, relative(self.home), relative(self.staged))


def publish_snapshot(settings: ProjectSettings) -> None:
    """Publish the dataset's whole analyst snapshot from its warehouse (what its two snapshot assets
    keep up to date, partition by partition)."""
    publish_all(settings.warehouse_path, settings.snapshot_path.parent, settings.dataset, partitioned_tables(settings.spec))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Stores:
    """The short scenario replayed for BASE_DAYS days on an on-disk instance (the repo's
    dagster.yaml: warehouse pool, run monitoring) with the next day's files staged."""
    root = tmp_path_factory.mktemp("reliability")
    scenario_path = write_short_scenario(root, days=BASE_DAYS + 3)
    # Every retrain passes the gate and is promoted directly: each run moves the aliases.
    spec = yaml.safe_load((root / "spec.yaml").read_text())
    spec["policy"].update(min_partitions_first_model=2, min_roc_auc=0.5, rollout={"mode": "direct"}, promotion={
        "non_inferiority_margin": 1.0, "max_calibration_error": 1.0, "max_latency_ms_per_1000_rows": 1e6,
        "max_slice_roc_auc_regression": 1.0, "max_fairness_gap": 1.0, "max_fairness_gap_increase": 1.0})
    (root / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    scenario = load_scenario(scenario_path)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    settings = ProjectSettings(data_dir=root / "data", spec_path=scenario.spec_path)
    instance = instance_at(home)
    try:
        deliveries = list(scenario_deliveries(scenario))
        summary = replay(deliveries[:BASE_DAYS], settings, instance, label=lambda d: f"{d.as_of:%Y-%m-%d}", echo=lambda _: None)
        assert summary.deployments, "the base replay must end with a champion"
        # One more day ingested and labelled, not trained on: the training stage has new data.
        defs = build_definitions(settings)
        driver = PipelineDriver(defs, instance, settings.landing_dir)
        driver.deliver(deliveries[BASE_DAYS])
        assert all(o.success for o in driver.tick_sensor("landing_zone_sensor"))
        job = defs.resolve_implicit_global_asset_job_def()
        for relative in deliveries[BASE_DAYS].files:
            if relative.startswith("labels/"):
                assert job.execute_in_process(instance=instance, partition_key=Path(relative).name[:10],
                                              asset_selection=NS.keys("labeled_batches", "review_queue")).success
        staged = root / "staged"
        for relative, frame in deliveries[BASE_DAYS + 1].files.items():
            write_atomically(frame, staged / relative)
    finally:
        instance.dispose()
    return Stores(root, settings, home, staged)


def table_fingerprints(database: Path, ignore: set[str] = frozenset()) -> dict[str, tuple[int, str]]:
    """Every table's row count and a hash of its rows (sorted; `ignore` columns left out)."""
    out = {}
    with duckdb.connect(str(database), read_only=True) as conn:
        for (table,) in conn.execute("select table_name from information_schema.tables where table_schema = 'main'").fetchall():
            frame = conn.execute(f'select * from "{table}"').df()
            frame = frame.drop(columns=[c for c in frame.columns if c in ignore])
            rows = sorted(frame.astype(str).agg("\x1f".join, axis=1)) if len(frame.columns) else []
            out[table] = (len(frame), hashlib.sha256("\x1e".join(rows).encode()).hexdigest())
    return out


def registry_state(stores: Stores) -> tuple[list[str], dict[str, str]]:
    client = MlflowClient(tracking_uri=stores.settings.default_tracking_uri, registry_uri=stores.settings.default_tracking_uri)
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    return versions, aliases


def run_stage(stores: Stores, stage: str, argument: str = "", kill_at_line: int | None = None,
              extra_delay: float = 0.0) -> tuple[str, list[float]]:
    """Run a stage in its own process. With `kill_at_line`, SIGKILL it `extra_delay` seconds after
    the stage printed that many lines past its marker, unless the stage is done by then. Kill
    points are counted in the stage's own progress (its log lines), not in seconds, so they land
    inside the stage however busy the machine is. Returns ('killed'|'ok'|'failed', the times of
    the lines from the marker on, relative to it, ending with the stage's end or the kill)."""
    process = subprocess.Popen([sys.executable, "-m", "retrain_assets_tests.reliability_child", stage, argument],
                               env=stores.env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    marker = MARKERS.get(stage.removesuffix("-retry"))
    trigger, tail, counted, done = threading.Event(), [], [], threading.Event()

    def read() -> None:
        for line in process.stderr:
            tail.append(line)
            del tail[:-40]
            if line.startswith("CHILD DONE"):
                counted.append(time.monotonic())
                done.set()
                trigger.set()
            elif counted or (marker and marker in line):
                counted.append(time.monotonic())
                if kill_at_line is not None and len(counted) > kill_at_line:
                    trigger.set()
        trigger.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if kill_at_line is not None and trigger.wait(timeout=600):
        time.sleep(extra_delay)
        if not done.is_set():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return "killed", [t - counted[0] for t in counted] + [time.monotonic() - counted[0]]
    code = process.wait(timeout=600)
    reader.join(timeout=10)
    assert code in (0, 1), "".join(tail)
    return ("ok" if code == 0 else "failed"), [t - counted[0] for t in counted]


def instance_at(home: Path) -> dg.DagsterInstance:
    """The persistent instance in `home`, without changing this process's DAGSTER_HOME."""
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        return dg.DagsterInstance.get()
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = previous


def without_limits(stores: Stores) -> None:
    """The copied instance without the project's limits: no pool limit, no run monitoring, no run
    retries (its event log storage is kept: it holds the history the retrain reads)."""
    path = stores.home / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    for key in ("concurrency", "run_monitoring", "run_retries"):
        config.pop(key, None)
    path.write_text(yaml.safe_dump(config))


def mark_dead_runs_failed(stores: Stores) -> None:
    """What the daemon's run monitoring does for a run whose worker died: mark it failed and free
    the pool slots it held."""
    instance = instance_at(stores.home)
    try:
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            instance.report_run_failed(run)
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    finally:
        instance.dispose()


def assert_consistent(stores: Stores, before: dict[str, tuple[int, str]]) -> None:
    """No half-written table (every table opens and reads; the history tables kept every earlier
    row), a readable snapshot, and every alias pointing at a registered model whose artifacts
    match their checksum."""
    with duckdb.connect(str(stores.settings.warehouse_path)) as conn:  # read-write: replays the WAL
        conn.execute("checkpoint")
    after = table_fingerprints(stores.settings.warehouse_path)
    for table in ("deployed_model", "candidate_model", "evaluation_report", "raw_batches"):
        assert after[table][0] >= before[table][0], f"{table} lost rows"
    if stores.settings.snapshot_path.exists():
        with duckdb.connect(str(stores.settings.snapshot_path), read_only=True) as conn:
            assert conn.execute("select count(*) from deployed_model").fetchone()[0] >= 1
    versions, aliases = registry_state(stores)
    registry = ModelRegistry(tracking_uri=stores.settings.default_tracking_uri, model_name=MODEL, experiment_name="unused",
                             artifact_location=str(stores.settings.mlflow_dir / "artifacts"))
    assert "champion" in aliases
    for alias, version in aliases.items():
        assert version in versions, f"alias {alias} -> missing v{version}"
        assert CHECKSUM_TAG in registry.version_tags(version), f"alias {alias} -> v{version} never finished registering"
        registry.load_verified(version)


def assert_history_matches_registry(stores: Stores) -> None:
    last = duckdb.connect(str(stores.settings.warehouse_path), read_only=True).execute(
        "select champion_version, canary_version, shadow_version from deployed_model order by deployed_at desc limit 1").fetchone()
    _, aliases = registry_state(stores)
    assert tuple(last) == (aliases.get("champion", ""), aliases.get("canary", ""), aliases.get("shadow", ""))


def test_rerunning_a_retrain_on_the_same_data_changes_nothing(base, tmp_path):
    stores = base.copy(tmp_path / "stores")
    assert run_stage(stores, "promotion")[0] == "ok"
    tables, registry = table_fingerprints(stores.settings.warehouse_path), registry_state(stores)
    assert run_stage(stores, "promotion")[0] == "ok"
    # Same data version, code and policy: no new model version, evaluation or deployment row.
    assert registry_state(stores) == registry
    assert table_fingerprints(stores.settings.warehouse_path) == tables


def test_the_same_file_twice_and_a_rematerialized_partition_leave_the_same_warehouse(base, tmp_path):
    stores = base.copy(tmp_path / "stores")
    defs = build_definitions(stores.settings)
    instance = instance_at(stores.home)
    driver = PipelineDriver(defs, instance, stores.settings.landing_dir)
    day = sorted(stores.staged.glob("batches/*"))[0]
    shutil.copy(day, stores.settings.landing_dir / "batches" / day.name)
    [outcome] = driver.tick_sensor("landing_zone_sensor")
    assert outcome.success
    once = table_fingerprints(stores.settings.warehouse_path)
    once_data = table_fingerprints(stores.settings.warehouse_path, BOOKKEEPING)
    shutil.copy(day, stores.settings.landing_dir / "batches" / f"{day.stem}__resent{day.suffix}")
    assert driver.tick_sensor("landing_zone_sensor") == []  # same content under another name: nothing to do
    assert table_fingerprints(stores.settings.warehouse_path) == once
    job = defs.resolve_implicit_global_asset_job_def()
    for _ in range(2):
        assert job.execute_in_process(instance=instance, partition_key=day.name[:10],
                                      asset_selection=NS.keys("raw_batches", "quarantine")).success
        assert table_fingerprints(stores.settings.warehouse_path, BOOKKEEPING) == once_data
    instance.dispose()


@pytest.mark.parametrize("stage", list(MARKERS))
def test_a_run_killed_inside_a_stage_leaves_consistent_stores_and_completes_when_rerun(base, tmp_path, stage):
    if TRIALS > 1:
        # One unkilled run first: proves the stage completes and times each of its log lines.
        calibration = base.copy(tmp_path / "calibration")
        argument = str(calibration.staged) if stage == "ingestion" else ""
        status, times = run_stage(calibration, stage, argument)
        assert status == "ok" and len(times) > 1
        gaps = [b - a for a, b in zip(times, times[1:])]
    rng = random.Random(f"{stage}-{TRIALS}")
    killed = 0
    for trial in range(TRIALS):
        stores = base.copy(tmp_path / f"trial{trial}")
        before = table_fingerprints(stores.settings.warehouse_path)
        argument = str(stores.staged) if stage == "ingestion" else ""
        if TRIALS > 1:
            # A kill point uniform in the calibration run's time: a line (weighted by the time until
            # the next one) and a delay within that gap.
            kill_at = rng.choices(range(len(gaps)), weights=gaps)[0]
            delay = rng.uniform(0, gaps[kill_at])
        else:  # quick mode (make test): a point well inside the stage, no calibration run
            kill_at, delay = QUICK_KILL[stage][0], rng.uniform(0, QUICK_KILL[stage][1])
        status, seen = run_stage(stores, stage, argument, kill_at_line=kill_at, extra_delay=delay)
        at = f"{seen[-1]:.2f}s"
        report(f"{stage} trial {trial}: kill planned after line {kill_at} + {delay:.2f}s -> {status} at {at}")
        killed += status == "killed"
        mark_dead_runs_failed(stores)
        assert_consistent(stores, before)
        retry = ("ingestion-retry", str(stores.staged)) if stage == "ingestion" else (stage, "")
        assert run_stage(stores, *retry)[0] == "ok", f"{stage}: the re-run after a kill at {at} failed"
        assert_consistent(stores, before)
        if stage == "promotion":
            assert_history_matches_registry(stores)
        versions, _ = registry_state(stores)
        assert len(versions) <= len(registry_state(base)[0]) + 2  # at most one orphan from a kill mid-registration
    report(f"{stage}: {killed}/{TRIALS} runs killed inside the stage, stores consistent after each kill and after "
           "the re-run, every re-run completed")
    assert killed >= max(1, TRIALS // 2)


def test_concurrent_partition_runs_keep_the_warehouse_whole_while_analysts_read(base, tmp_path):
    """Three partitions ingested by three runs at once, each with the multiprocess executor, on an
    instance with no dagster.yaml at all (the own-data recipe's `mkdir -p $DAGSTER_HOME && dagster
    dev`: no pool limit, no run monitoring; a fresh event log): every run succeeds, every row lands once, no two
    warehouse steps ever overlap (the IO manager's writer lock, not the instance's pool, serializes
    them), and an analyst republishing and querying the snapshot throughout never sees an error."""
    stores = base.copy(tmp_path / "stores")
    (stores.home / "dagster.yaml").unlink()
    scenario = load_scenario(stores.root / "scenario.yaml")
    expected = {}
    for day in range(BASE_DAYS + 3, BASE_DAYS + 6):
        batch, _ = generate_day(scenario, day)
        key = f"{scenario.start_date + pd.Timedelta(days=day):%Y-%m-%d}"
        write_atomically(batch, stores.settings.landing_dir / "batches" / f"{key}.csv")
        expected[key] = len(batch)

    stop, reads, errors = threading.Event(), [], []

    def analyst() -> None:
        while not stop.is_set():
            try:
                publish_snapshot(stores.settings)
                with duckdb.connect(str(stores.settings.snapshot_path), read_only=True) as conn:
                    reads.append(conn.execute("select count(*) from raw_batches").fetchone()[0])
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(exc))
            time.sleep(0.1)
    reader = threading.Thread(target=analyst, daemon=True)
    reader.start()
    runs = [subprocess.Popen([sys.executable, "-m", "retrain_assets_tests.reliability_child", "partition", key],
                             env=stores.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for key in expected]
    outputs = [run.communicate(timeout=600)[1] for run in runs]
    stop.set()
    reader.join(timeout=60)
    assert [run.returncode for run in runs] == [0] * len(runs), outputs[0][-3000:]
    assert not errors and len(reads) > 3 and reads == sorted(reads)  # the snapshot only ever grew

    counts = dict(duckdb.connect(str(stores.settings.warehouse_path), read_only=True).execute(
        "select strftime(partition_start, '%Y-%m-%d'), count(*) from raw_batches group by 1").fetchall())
    assert {key: counts.get(key) for key in expected} == expected
    instance = instance_at(stores.home)
    succeeded = [run for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": list(expected)}))
                 if run.status == dg.DagsterRunStatus.SUCCESS]
    steps = sorted(pool_step_spans(instance, [run.run_id for run in succeeded]))
    instance.dispose()
    assert len(succeeded) == len(expected)
    assert len(steps) == len(expected)
    overlaps = [(a, b) for a, b in zip(steps, steps[1:]) if b[0] < a[1]]
    assert not overlaps, f"warehouse steps of concurrent runs overlapped: {overlaps}"


def test_a_retrain_that_died_before_its_evaluation_leaves_the_policy_free_to_retrain(base, tmp_path):
    """A retrain_job run killed during its evaluation step (kill -9 of `dagster dev`) had already
    moved training_set's window: the policy then held with "only 0 new labeled rows" for good. A
    retrain counts once its challenger is evaluated: until then the new labels still count."""
    from retrain_assets.pipeline.shared.lookups import gather_history

    stores = base.copy(tmp_path / "stores")
    defs = build_definitions(stores.settings)
    instance = instance_at(stores.home)
    try:
        registry, warehouse = (defs.resources[name].for_dataset(MODEL) for name in ("model_registry", "warehouse"))
        before = gather_history(instance, NS, registry, warehouse)
        assert before.new_labeled_rows > 0
        # training_set and candidate_model done; the evaluation never ran (the run died there).
        assert run_stage(stores, "training")[0] == "ok"
        after = gather_history(instance, NS, registry, warehouse)
    finally:
        instance.dispose()
    assert (after.last_trained_through, after.new_labeled_rows) == (before.last_trained_through, before.new_labeled_rows)


def test_two_retrains_started_together_train_one_model(base, tmp_path):
    """Two retrain_job runs at once on an instance without run or pool limits: their steps take
    turns on the warehouse, and the later run's `candidate_model` refuses to train while the other
    is still running (or, started after it ended, reuses its model), so one model is registered,
    not two, and the deployment history agrees with the registry."""
    stores = base.copy(tmp_path / "stores")
    without_limits(stores)
    versions_before, _ = registry_state(stores)
    runs = [subprocess.Popen([sys.executable, "-m", "retrain_assets_tests.reliability_child", "promotion"],
                             env=stores.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[1] for run in runs]
    # Each run either completes or, while the other still moves the registry, refuses to train.
    for run, output in zip(runs, outputs):
        assert run.returncode == 0 or "one model job at a time" in output, output[-3000:]
    assert 0 in [run.returncode for run in runs], outputs[0][-3000:]
    versions, _ = registry_state(stores)
    assert len(versions) == len(versions_before) + 1
    assert_history_matches_registry(stores)


def test_a_code_change_gives_a_new_code_version(tmp_path):
    """The code version (part of what decides that a model may be reused) changes with any edit of
    the running package, committed or not, in a checkout or not: it used to be `git rev-parse` of
    the working directory (blind to uncommitted edits) or `0.1.0+unknown` outside a checkout."""
    copy = tmp_path / "retrain_assets"
    shutil.copytree(REPO / "retrain_assets", copy, ignore=shutil.ignore_patterns("__pycache__"))
    script = "from retrain_assets.core.training.modeling import code_version; print(code_version())"

    def version() -> str:
        env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              check=True).stdout.strip()

    first = version()
    assert version() == first  # stable for the same source
    selection = copy / "core" / "training" / "selection.py"
    selection.write_text(selection.read_text() + "\n# an edit\n")
    assert version() != first


def test_the_demo_instance_config_is_the_repository_one():
    """The demo writes INSTANCE_YAML when an instance has no dagster.yaml: it must carry the same
    pool, run-monitoring and retry settings as the shipped `.dagster_home/dagster.yaml`."""
    from retrain_assets.apps.demo import INSTANCE_YAML

    shipped = (REPO / ".dagster_home" / "dagster.yaml").read_text()
    assert shipped[shipped.index("telemetry:"):] == INSTANCE_YAML


def test_a_registry_that_moved_without_a_history_row_is_noticed():
    from retrain_assets.core.deployment.rollout import DeploymentState
    from retrain_assets.core.policy.rollout import registry_drift as _registry_drift

    history = pd.DataFrame([{"deployed_at": pd.Timestamp("2025-01-01"), "champion_version": "1", "canary_version": "2",
                             "shadow_version": ""},
                            {"deployed_at": pd.Timestamp("2025-01-02"), "champion_version": "2", "canary_version": "",
                             "shadow_version": ""}])
    assert _registry_drift(history, DeploymentState(champion="2")) == ""
    assert _registry_drift(history, DeploymentState(champion="3", previous="2")) == "champion recorded v2, registry v3"
    assert _registry_drift(pd.DataFrame(), DeploymentState(champion="3")) == ""
