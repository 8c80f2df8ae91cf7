"""Does day 365 cost what day 1 cost? Ingest and drift-check a year of daily partitions.

The built-in scenario runs through the real Definitions on a persistent instance. A short warm-up
replay (sensors and automation, like `make demo`) trains and promotes a champion. Then every day of
the year is delivered and handled by the same runs the pipeline launches for it: ingestion, and
the label join for the batch whose labels arrived, then the drift report against the champion;
and the landing sensor's tick that notices the day's files (it sees the whole landing zone).
The champion stays fixed, so every day does the same work; only the history behind it grows.
Each run's wall time and this process's CPU time (all threads, DuckDB's included: steady when
other programs load the machine, which wall time is not) are recorded. This machine's speed
drifts by up to a third over minutes (a shared VM), so before every partition the benchmark also
times a calibration workload that cannot depend on the history: the contract and the drift report
of the first timed batch, in memory, against the same champion. The baseline is the benchmark's own first partitions: the
ratio is the median of the last `--window` partitions over the median of the first `--window`,
raw and normalized by the calibration's medians over the same partitions.

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
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402
import pandas as pd  # noqa: E402

from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries  # noqa: E402
from retrain_assets.pipeline import build_definitions  # noqa: E402
from retrain_assets.apps.demo import open_instance, replay  # noqa: E402
from retrain_assets.apps.replay import PipelineDriver  # noqa: E402
from retrain_assets.settings import ProjectSettings  # noqa: E402

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "loan_default.yaml"
WARM_UP_DAYS = 14  # the default policy trains the first model once 7 partitions are labeled
INGEST_AND_DRIFT = [dg.AssetKey(k) for k in ("raw_batches", "quarantine", "drift_report")]
LABELS = [dg.AssetKey(k) for k in ("labels", "rejected_labels", "review_decisions", "labeled_batches", "review_queue")]


def calibration(defs: dg.Definitions, settings: ProjectSettings, champion: str, delivery):
    """A workload whose cost cannot depend on the history: `delivery`'s batch through the contract
    and the drift report against the champion, all in memory."""
    from retrain_assets.core.ingestion.contracts import validate_batch
    from retrain_assets.core.training.modeling import predict_scores
    from retrain_assets.core.monitoring.batch_report import build_drift_report
    from retrain_assets.core.spec import load_spec
    from retrain_assets.pipeline.shared.lookups import latest_reference

    spec = load_spec(settings.spec_path)
    profile, _ = latest_reference(defs.resources["warehouse"], champion)
    model = defs.resources["model_registry"].load(champion)
    batch = next(frame for relative, frame in delivery.files.items() if relative.startswith("batches/"))

    def run() -> None:
        for _ in range(5):  # ~0.4 s at 1,000 rows: long enough to time steadily
            valid = validate_batch(batch.astype(str), spec).valid
            build_drift_report(profile, valid, spec, spec.policy.drift, scores=predict_scores(model, valid, spec))

    return run


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
        tmp = Path(tmp)
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

        defs = build_definitions(settings)
        driver = PipelineDriver(defs, instance, settings.landing_dir, console_log_level="CRITICAL")
        timings, cpu_timings, label_timings, sensor_timings, calibrations = [], [], [], [], []
        calibrate = None
        sensor = defs.resolve_sensor_def("landing_zone_sensor")
        cursor = None
        for n, delivery in enumerate(deliveries, start=1):
            driver.deliver(delivery)
            day = f"{delivery.as_of - pd.Timedelta(days=1):%Y-%m-%d}"
            if calibrate is None:
                calibrate = calibration(defs, settings, champion, delivery)
            tc = time.perf_counter()
            calibrate()
            calibrations.append(time.perf_counter() - tc)
            ts = time.perf_counter()
            tick = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                                  sensor_name=sensor.name, resources=defs.resources))
            cursor = tick.cursor
            sensor_timings.append(time.perf_counter() - ts)
            if day not in {r.partition_key for r in tick.run_requests or []}:
                raise SystemExit(f"partition {day}: the landing sensor did not request its ingestion")
            profiler = cProfile.Profile() if args.profile and n in (1, 2, args.days - 1, args.days) else None
            if profiler:
                profiler.enable()
            t0, c0 = time.perf_counter(), time.process_time()
            ingested = driver.execute("benchmark", driver.asset_job, day, INGEST_AND_DRIFT[:2], {})
            labeled_day = f"{delivery.as_of - pd.Timedelta(days=1 + scenario.label_delay_days):%Y-%m-%d}"
            t1, c1 = time.perf_counter(), time.process_time()
            labeled = driver.execute("benchmark", driver.asset_job, labeled_day, LABELS, {})
            t2, c2 = time.perf_counter(), time.process_time()
            drifted = driver.execute("benchmark", driver.asset_job, day, INGEST_AND_DRIFT[2:], {})
            t3, c3 = time.perf_counter(), time.process_time()
            if profiler:
                profiler.disable()
                args.profile.mkdir(parents=True, exist_ok=True)
                profiler.dump_stats(args.profile / f"partition-{n}.pstats")
            for outcome in (ingested, labeled, drifted):
                if not outcome.success:
                    raise SystemExit(f"partition {day}: {outcome.error}")
            if "drift_report" not in drifted.materializations or \
                    str(drifted.materializations["drift_report"].get("champion_version")) != champion:
                raise SystemExit(f"partition {day}: no drift report against champion v{champion}")
            timings.append((t1 - t0) + (t3 - t2))
            cpu_timings.append((c1 - c0) + (c3 - c2))
            label_timings.append(t2 - t1)
            if n % 30 == 0 or n == args.days:
                print(f"partition {n:3d} ({day}): ingest+drift {timings[-1]:.2f} s wall, {cpu_timings[-1]:.2f} s CPU; "
                      f"label join {label_timings[-1]:.2f} s; sensor tick {sensor_timings[-1]:.3f} s", flush=True)
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
            history = conn.execute("select count(*), count(distinct partition_start) from raw_batches").fetchone()
    w = args.window
    first, last = statistics.median(timings[:w]), statistics.median(timings[-w:])
    cpu_first, cpu_last = statistics.median(cpu_timings[:w]), statistics.median(cpu_timings[-w:])
    cal_first, cal_last = statistics.median(calibrations[:w]), statistics.median(calibrations[-w:])
    lab_first, lab_last = statistics.median(label_timings[:w]), statistics.median(label_timings[-w:])
    print(f"history at the end: {history[0]} rows in {history[1]} partitions of raw_batches")
    print(f"ingest + drift-check, median of partitions 1-{w}: {first:.3f} s; of {args.days - w + 1}-{args.days}: {last:.3f} s")
    print(f"ratio last/first: {last / first:.2f}x wall (target <= 1.2x); CPU time {cpu_first:.3f} s -> {cpu_last:.3f} s: "
          f"{cpu_last / cpu_first:.2f}x")
    print(f"calibration workload (same work every time) {cal_first:.3f} s -> {cal_last:.3f} s: machine speed {cal_last / cal_first:.2f}x;"
          f" ingest + drift-check normalized by it: {(last / cal_last) / (first / cal_first):.2f}x")
    print(f"label join (not in the target), median first {lab_first:.3f} s, last {lab_last:.3f} s: {lab_last / lab_first:.2f}x")
    sen_first, sen_last = statistics.median(sensor_timings[:w]), statistics.median(sensor_timings[-w:])
    print(f"landing sensor tick, median first {sen_first:.3f} s, last {sen_last:.3f} s: {sen_last / sen_first:.2f}x")
    print(f"partition 1 alone: {timings[0]:.3f} s; partition {args.days} alone: {timings[-1]:.3f} s")
    print(f"reproduce: .venv/bin/python benchmarks/linear_cost.py --days {args.days} --rows-per-day {args.rows_per_day} "
          f"--window {args.window}")


if __name__ == "__main__":
    main()
