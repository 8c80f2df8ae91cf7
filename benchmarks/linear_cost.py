"""Does day 365 cost what day 1 cost? Ingest, drift-check and publish a year of daily partitions.

The built-in scenario runs through the real Definitions on a persistent instance. A short warm-up
replay (sensors and automation, like `make demo`) trains and promotes a champion. Then every day of
the year is delivered and handled by the same runs the pipeline launches for it: ingestion, and
the label join for the batch whose labels arrived, then the drift report against the champion;
the landing sensor's tick that notices the day's files (it sees the whole landing zone); and the
analysts' snapshot of the two partitions those runs changed (`<dataset>/analyst_snapshot` of the
labeled day and of the new day, which declarative automation requests after them: the pipeline
runs each with that partition's other automated steps, here each is its own run so that it is
timed apart). The champion stays fixed, so every day does the same work; only the history behind it grows.
Each run's wall time and this process's CPU time (all threads, DuckDB's included: steady when
other programs load the machine, which wall time is not) are recorded. This machine's speed
drifts by up to a third over minutes (a shared VM), so before every partition the benchmark also
times a calibration workload that cannot depend on the history: the contract and the drift report
of the first timed batch, in memory, against the same champion. The baseline is the benchmark's own first partitions: the
ratio is the median of the last `--window` partitions over the median of the first `--window`,
raw and normalized by the calibration's medians over the same partitions. For the snapshot it also
gives the publish's own seconds and the warehouse rows it read (DuckDB's profile, the asset's
`rows_scanned`): O(new data) means that count does not grow with the history.

    .venv/bin/python benchmarks/linear_cost.py [--days 365] [--rows-per-day 1000] [--window 15]
"""

import argparse
import cProfile
import dataclasses
import os
import statistics
import tempfile
import time
import warnings
from itertools import islice
from typing import Iterator
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402
import pandas as pd  # noqa: E402

from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries  # noqa: E402
from retrain_assets.pipeline import build_definitions  # noqa: E402
from retrain_assets.pipeline.shared.namespace import Namespace  # noqa: E402
from retrain_assets.apps.demo import open_instance, replay  # noqa: E402
from retrain_assets.apps.replay import PipelineDriver  # noqa: E402
from retrain_assets.settings import ProjectSettings  # noqa: E402

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "loan_default.yaml"
WARM_UP_DAYS = 14  # the default policy trains the first model once 7 partitions are labeled
INGEST, DRIFT = ("raw_batches", "quarantine"), ("drift_report",)
LABELS = ("labels", "rejected_labels", "review_decisions", "labeled_batches", "review_queue")
SNAPSHOT = "analyst_snapshot"


@dataclasses.dataclass
class Costs:
    """What one timed partition cost, per figure (seconds unless named otherwise)."""

    calibration: float
    sensor_tick: float
    ingest_drift: float  # the ingestion and drift-report runs, wall
    ingest_drift_cpu: float
    label_join: float
    snapshot: float  # the two analyst_snapshot runs, wall
    snapshot_cpu: float
    publish: float  # the two publishes' own seconds (the asset's `seconds`: no Dagster run around it)
    rows_scanned: int  # warehouse rows the two publishes read
    rows_written: int  # rows they wrote to Parquet


def calibration(defs: dg.Definitions, settings: ProjectSettings, champion: str, delivery):
    """A workload whose cost cannot depend on the history: `delivery`'s batch through the contract
    and the drift report against the champion, all in memory."""
    from retrain_assets.core.ingestion.contracts import validate_batch
    from retrain_assets.core.training.modeling import predict_scores
    from retrain_assets.core.monitoring.batch_report import build_drift_report
    from retrain_assets.core.spec import load_spec
    from retrain_assets.pipeline.shared.lookups import latest_reference

    spec = load_spec(settings.spec_path)
    # The deployment-wide resources open a dataset's stores per run; outside a run, bind the dataset.
    profile, _ = latest_reference(defs.resources["warehouse"].for_dataset(settings.dataset), champion)
    model = defs.resources["model_registry"].for_dataset(settings.dataset).load(champion)
    batch = next(frame for relative, frame in delivery.files.items() if relative.startswith("batches/"))

    def run() -> None:
        for _ in range(5):  # ~0.4 s at 1,000 rows: long enough to time steadily
            valid = validate_batch(batch.astype(str), spec).valid
            build_drift_report(profile, valid, spec, spec.policy.drift, scores=predict_scores(model, valid, spec))

    return run


class Bench:
    """The timed part: the driver, the landing sensor's cursor, and one partition at a time."""

    def __init__(self, settings: ProjectSettings, instance: dg.DagsterInstance, champion: str, label_delay_days: int):
        self.defs = build_definitions(settings)
        self.settings, self.instance, self.champion, self.label_delay = settings, instance, champion, label_delay_days
        self.ns = Namespace(settings.dataset)
        self.driver = PipelineDriver(self.defs, instance, settings.landing_dir, console_log_level="CRITICAL",
                                     dataset=settings.dataset)
        self.sensor = self.defs.resolve_sensor_def(self.ns.name("landing_zone_sensor"))
        self.cursor, self.calibrate = None, None

    def run(self, partition: str, assets: tuple[str, ...], what: str):
        """One run of `assets` of `partition`, with the tags the pipeline's runs carry; (outcome, wall, CPU)."""
        t, c = time.perf_counter(), time.process_time()
        outcome = self.driver.execute("benchmark", self.driver.asset_job, partition, self.ns.keys(*assets), self.ns.tags)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if not outcome.success:
            raise SystemExit(f"partition {partition}, {what}: {outcome.error}")
        return outcome, wall, cpu

    def tick(self, day: str) -> float:
        """The landing sensor's tick, as the daemon makes it; its duration."""
        ts = time.perf_counter()
        tick = self.sensor(dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=self.defs,
                                                   sensor_name=self.sensor.name))
        self.cursor = tick.cursor
        elapsed = time.perf_counter() - ts
        if day not in {r.partition_key for r in tick.run_requests or []}:
            raise SystemExit(f"partition {day}: the landing sensor did not request its ingestion")
        return elapsed

    def partition(self, delivery, profile: Path | None) -> tuple[str, Costs]:
        """Deliver a day and handle it; its partition key and what each part cost."""
        self.driver.deliver(delivery)
        day = f"{delivery.as_of - pd.Timedelta(days=1):%Y-%m-%d}"
        labeled_day = f"{delivery.as_of - pd.Timedelta(days=1 + self.label_delay):%Y-%m-%d}"
        if self.calibrate is None:
            self.calibrate = calibration(self.defs, self.settings, self.champion, delivery)
        tc = time.perf_counter()
        self.calibrate()
        calibrated = time.perf_counter() - tc
        sensor_tick = self.tick(day)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        _, ingest_wall, ingest_cpu = self.run(day, INGEST, "ingestion")
        _, label_wall, _ = self.run(labeled_day, LABELS, "label join")
        drifted, drift_wall, drift_cpu = self.run(day, DRIFT, "drift report")
        # What the automation publishes after these runs: the partitions whose tables they wrote.
        published = [self.run(key, (SNAPSHOT,), "analyst snapshot") for key in (labeled_day, day)]
        if profiler:
            profiler.disable()
            profile.parent.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(profile)
        if "drift_report" not in drifted.materializations or \
                str(drifted.materializations["drift_report"].get("champion_version")) != self.champion:
            raise SystemExit(f"partition {day}: no drift report against champion v{self.champion}")
        meta = [outcome.materializations.get(SNAPSHOT) for outcome, _, _ in published]
        if not all(meta):
            raise SystemExit(f"partition {day}: the analyst snapshot was not published")
        if any("rows_scanned" not in m for m in meta):
            raise SystemExit(f"partition {day}: the publish did not say how many warehouse rows it read (DuckDB gave no profile)")
        return day, Costs(calibrated, sensor_tick, ingest_wall + drift_wall, ingest_cpu + drift_cpu, label_wall,
                          sum(wall for _, wall, _ in published), sum(cpu for _, _, cpu in published),
                          sum(float(m["seconds"]) for m in meta), sum(int(m["rows_scanned"]) for m in meta),
                          sum(int(m["rows_written"]) for m in meta))


def counts(settings: ProjectSettings) -> tuple[int, int, int]:
    """Rows and partitions of raw_batches in the warehouse, and the rows the analysts' snapshot shows of it."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        rows, partitions = conn.execute("select count(*), count(distinct partition_start) from raw_batches").fetchone()
    with duckdb.connect(str(settings.snapshot_path), read_only=True) as conn:
        published = conn.execute("select count(*) from raw_batches").fetchone()[0]
    return rows, partitions, published


def report(costs: list[Costs], history: tuple[int, int, int], args: argparse.Namespace) -> None:
    """The first and last windows' medians of every figure, and their ratios."""
    w, days = args.window, args.days

    def medians(field: str) -> tuple[float, float]:
        values = [getattr(c, field) for c in costs]
        return statistics.median(values[:w]), statistics.median(values[-w:])

    (first, last), (cpu_first, cpu_last) = medians("ingest_drift"), medians("ingest_drift_cpu")
    cal_first, cal_last = medians("calibration")
    speed = cal_last / cal_first
    print(f"history at the end: {history[0]} rows in {history[1]} partitions of raw_batches "
          f"({history[2]} rows of it in the analysts' snapshot)")
    print(f"ingest + drift-check, median of partitions 1-{w}: {first:.3f} s; of {days - w + 1}-{days}: {last:.3f} s")
    print(f"ratio last/first: {last / first:.2f}x wall (target <= 1.2x); CPU time {cpu_first:.3f} s -> {cpu_last:.3f} s: "
          f"{cpu_last / cpu_first:.2f}x")
    print(f"calibration workload (same work every time) {cal_first:.3f} s -> {cal_last:.3f} s: machine speed {speed:.2f}x;"
          f" ingest + drift-check normalized by it: {(last / first) / speed:.2f}x")
    lab_first, lab_last = medians("label_join")
    print(f"label join (not in the target), median first {lab_first:.3f} s, last {lab_last:.3f} s: {lab_last / lab_first:.2f}x")
    sen_first, sen_last = medians("sensor_tick")
    print(f"landing sensor tick, median first {sen_first:.3f} s, last {sen_last:.3f} s: {sen_last / sen_first:.2f}x")
    (snap_first, snap_last), (snap_cpu_first, snap_cpu_last) = medians("snapshot"), medians("snapshot_cpu")
    (pub_first, pub_last), (scan_first, scan_last) = medians("publish"), medians("rows_scanned")
    written_first, written_last = medians("rows_written")
    print(f"analyst snapshot (2 runs: the labeled day's and the new day's partition), median first {snap_first:.3f} s, "
          f"last {snap_last:.3f} s: {snap_last / snap_first:.2f}x wall (target <= 1.2x), normalized {(snap_last / snap_first) / speed:.2f}x; "
          f"CPU {snap_cpu_first:.3f} s -> {snap_cpu_last:.3f} s: {snap_cpu_last / snap_cpu_first:.2f}x")
    print(f"  the publishes alone (asset metadata `seconds`) {pub_first:.3f} s -> {pub_last:.3f} s: {pub_last / pub_first:.2f}x; "
          f"warehouse rows read {scan_first:.0f} -> {scan_last:.0f} ({scan_last / scan_first:.2f}x), "
          f"rows written {written_first:.0f} -> {written_last:.0f}")
    print(f"partition 1 alone: {costs[0].ingest_drift:.3f} s (snapshot {costs[0].snapshot:.3f} s); "
          f"partition {days} alone: {costs[-1].ingest_drift:.3f} s (snapshot {costs[-1].snapshot:.3f} s)")
    print(f"reproduce: .venv/bin/python benchmarks/linear_cost.py --days {days} --rows-per-day {args.rows_per_day} --window {w}")


def warm_up(scenario, tmp: Path) -> tuple[ProjectSettings, dg.DagsterInstance, Iterator, str]:
    """A persistent instance and data folder in `tmp`, and the warm-up replay of the scenario's first
    WARM_UP_DAYS deliveries (sensors and automation, like `make demo`), which trains and promotes a
    champion: the settings, the instance, the deliveries after the warm-up, the champion's version."""
    settings = ProjectSettings(data_dir=tmp / "data", spec_path=scenario.spec_path)
    instance = open_instance(tmp / "dagster_home")
    deliveries = scenario_deliveries(scenario)
    started = time.perf_counter()
    summary = replay(islice(deliveries, WARM_UP_DAYS), settings, instance, label=lambda d: "", echo=lambda _: None,
                     console_log_level="CRITICAL")
    champion = summary.rows[-1].champion.lstrip("v")
    if champion == "-":
        raise SystemExit(f"no champion after the {WARM_UP_DAYS}-day warm-up: the benchmark needs one to drift-check")
    print(f"warm-up: {WARM_UP_DAYS} days, {summary.runs} runs, champion v{champion} ({time.perf_counter() - started:.0f} s)", flush=True)
    return settings, instance, deliveries, champion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="partitions in the timed year")
    parser.add_argument("--rows-per-day", type=int, default=1000)
    parser.add_argument("--window", type=int, default=15, help="partitions in each median (first vs last)")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the first and last partitions' runs here")
    args = parser.parse_args()
    base = load_scenario(SCENARIO)
    # No incidents: a blocked or leaky day would do different work from the others.
    scenario = dataclasses.replace(base, days=WARM_UP_DAYS + args.days, rows_per_day=args.rows_per_day, incidents={})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        settings, instance, deliveries, champion = warm_up(scenario, Path(tmp))
        bench = Bench(settings, instance, champion, scenario.label_delay_days)
        costs: list[Costs] = []
        for n, delivery in enumerate(deliveries, start=1):
            profiled = args.profile and n in (1, 2, args.days - 1, args.days)
            day, cost = bench.partition(delivery, args.profile / f"partition-{n}.pstats" if profiled else None)
            costs.append(cost)
            if n % 30 == 0 or n == args.days:
                print(f"partition {n:3d} ({day}): ingest+drift {cost.ingest_drift:.2f} s wall, {cost.ingest_drift_cpu:.2f} s CPU; "
                      f"label join {cost.label_join:.2f} s; sensor tick {cost.sensor_tick:.3f} s; snapshot {cost.snapshot:.2f} s "
                      f"(publish {cost.publish:.3f} s, {cost.rows_scanned} rows read); calibration {cost.calibration:.3f} s "
                      f"({time.perf_counter() - started:.0f} s in)", flush=True)
        history = counts(settings)
    if history[2] != history[0]:
        raise SystemExit(f"the analysts' snapshot shows {history[2]} rows of raw_batches, the warehouse holds {history[0]}")
    report(costs, history, args)


if __name__ == "__main__":
    main()
