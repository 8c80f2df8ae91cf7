"""`retrain-assets`: run the demo scenario or replay a history table through the pipeline."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# Partitioned asset checks are a Dagster "preview" feature we rely on knowingly; keep the console readable.
warnings.filterwarnings("ignore", message=".*(preview|beta).*", category=Warning)

DEFAULT_SCENARIO = Path("data/scenarios/loan_default.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retrain-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="replay the built-in scenario day by day through the real Definitions")
    demo.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, help="scenario file (default: %(default)s)")
    demo.add_argument("--data-dir", type=Path, default=Path("data"), help="landing zone and stores (default: %(default)s)")
    demo.add_argument("--dagster-home", type=Path, default=Path(os.environ.get("DAGSTER_HOME", ".dagster_home")),
                      help="Dagster instance folder (default: $DAGSTER_HOME or .dagster_home)")
    demo.add_argument("--days", type=int, default=None, help="replay only the first N days")

    rep = sub.add_parser("replay", help="replay a history table (CSV/Parquet, rows in time order) as batches")
    rep.add_argument("--spec", type=Path, required=True, help="dataset spec file")
    rep.add_argument("--source", type=Path, required=True, help="CSV or Parquet file with the history, target included")
    rep.add_argument("--start-date", default=None, help="date of the first row when the file has no event-time column (one row per day)")
    rep.add_argument("--label-delay", type=int, default=1, help="labels of a batch arrive this many batches later (default: %(default)s)")
    rep.add_argument("--batches", type=int, default=None, help="replay only the first N batches")
    rep.add_argument("--data-dir", type=Path, default=None, help="stores for this replay (default: data/replays/<spec name>)")
    rep.add_argument("--dagster-home", type=Path, default=None, help="Dagster instance folder (default: <data dir>/dagster_home)")

    drift = sub.add_parser("drift", help="drift report of one file against another (JSON + HTML), no pipeline needed")
    drift.add_argument("--reference", type=Path, required=True, help="CSV/Parquet the model was trained on (the reference)")
    drift.add_argument("--current", type=Path, required=True, help="CSV/Parquet batch to check")
    drift.add_argument("--spec", type=Path, required=True, help="dataset spec file (columns, types, policy.drift thresholds)")
    drift.add_argument("--out", type=Path, default=Path("drift_report"), help="output folder (default: %(default)s)")

    check = sub.add_parser("check-batch", help="contract and drift of one large batch file in DuckDB (bounded memory), "
                                               "no pipeline needed")
    check.add_argument("path", type=Path, help="the batch, Parquet or CSV")
    check.add_argument("--spec", type=Path, default=Path(os.environ.get("RETRAIN_ASSETS_SPEC", "data/specs/loan_default.yaml")),
                       help="dataset spec (default: $RETRAIN_ASSETS_SPEC or %(default)s)")
    check.add_argument("--reference", type=Path, default=None,
                       help="reference profile JSON (ReferenceProfile.to_json); default: the champion's profile in the "
                            "warehouse's reference_profile table (read-only)")
    check.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RETRAIN_ASSETS_DATA_DIR", "data")),
                       help="where the warehouse is, for the default reference (default: $RETRAIN_ASSETS_DATA_DIR or %(default)s)")
    check.add_argument("--memory-limit", default="2GB", help="DuckDB memory_limit; larger work spills to --out (default: %(default)s)")
    check.add_argument("--threads", type=int, default=2, help="DuckDB threads (default: %(default)s)")
    check.add_argument("--window", nargs=2, metavar=("START", "END"), default=None,
                       help="partition window [START, END): rows with event times outside it are quarantined")
    check.add_argument("--out", type=Path, default=Path("check_batch"),
                       help="folder for <name>.valid.parquet and <name>.quarantine.parquet (default: %(default)s)")

    back = sub.add_parser("backtest", help="replay a history under several retraining policies (test-then-train) and compare "
                                           "accuracy against retraining cost")
    back.add_argument("--spec", type=Path, default=None, help="dataset spec file (with --data; a scenario names its own)")
    back.add_argument("--data", type=Path, nargs="+", default=None,
                      help="history table(s), CSV or Parquet, rows in time order, target included (read in the order given)")
    back.add_argument("--scenario", type=Path, default=None,
                      help=f"generate the history from a scenario file instead (default without --data: {DEFAULT_SCENARIO})")
    back.add_argument("--days", type=int, default=None,
                      help="with a scenario: generate this many days instead of the file's `days` (phases keep their start days)")
    back.add_argument("--start-date", default=None, help="date of the first row when the table has no event-time column (one row per day)")
    back.add_argument("--label-delay", type=int, default=1,
                      help="with --data: labels of a batch arrive this many batches later (default: %(default)s)")
    back.add_argument("--batches", type=int, default=None, help="replay only the first N batches")
    back.add_argument("--policies", default="static,periodic:7,drift,every-batch",
                      help="comma-separated: static, periodic:N (every N batches), drift (the pipeline's retrain policy), "
                           "every-batch (the oracle) (default: %(default)s)")
    back.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                      help="replay the drift policy once per value of a policy parameter (repeat for a grid), "
                           "e.g. psi_threshold=0.1,0.2,0.3 or cooldown_partitions=2,4")
    back.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="override a policy parameter for every policy, e.g. model_families=logistic_regression")
    back.add_argument("--window-batches", type=int, default=None,
                      help="batches pooled into one window for the worst-window metric and the plot "
                           "(default: 7 daily, 4 weekly, 12 monthly)")
    back.add_argument("--jobs", type=int, default=None, help="worker processes (default: 2, or 1 on a one-core machine)")
    back.add_argument("--out", type=Path, default=None, help="output folder (default: data/backtests/<dataset>)")
    back.add_argument("--no-progress", action="store_true", help="no progress bars")

    review = sub.add_parser("review", help="list, inspect and resolve gated and suspect labels (the human review queue)")
    review.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RETRAIN_ASSETS_DATA_DIR", "data")),
                        help="landing zone and stores (default: $RETRAIN_ASSETS_DATA_DIR or %(default)s)")
    review.add_argument("--spec", type=Path, default=Path(os.environ.get("RETRAIN_ASSETS_SPEC", "data/specs/loan_default.yaml")),
                        help="dataset spec (default: $RETRAIN_ASSETS_SPEC or %(default)s)")
    review_sub = review.add_subparsers(dest="review_command", required=True)
    listing = review_sub.add_parser("list", help="review items (open ones by default)")
    listing.add_argument("--status", choices=["open", "all"], default="open")
    listing.add_argument("--limit", type=int, default=50)
    show = review_sub.add_parser("show", help="one item: the row, the annotations, the champion's score, the history")
    show.add_argument("item_id")
    resolve = review_sub.add_parser("resolve", help="decide one or more items; the pipeline applies it on its next tick")
    resolve.add_argument("item_ids", nargs="+")
    resolve.add_argument("--action", choices=["accept", "relabel", "reject"], required=True)
    resolve.add_argument("--label", default=None, help="the label to set (required with --action relabel)")
    resolve.add_argument("--reviewer", default=os.environ.get("RETRAIN_ASSETS_REVIEWER", ""),
                         help="your name, recorded in the audit table (default: $RETRAIN_ASSETS_REVIEWER)")
    resolve.add_argument("--why", required=True, help="the reason, recorded in the audit table")

    serve = sub.add_parser("serve", help="prediction service: champion, canary/shadow trials, prediction log (FastAPI)")
    _store_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--refresh-seconds", type=float, default=2.0,
                       help="how often the registry is checked for a promotion, canary or rollback (default: %(default)s)")
    serve.add_argument("--flush-seconds", type=float, default=5.0,
                       help="how often the prediction log is written to the landing zone (default: %(default)s)")
    serve.add_argument("--api-keys-file", type=Path, default=None,
                       help="client API keys, one client_name:token per line, # comments (default: $RETRAIN_ASSETS_API_KEYS, "
                            "comma-separated); /predict and /models need one of them")
    serve.add_argument("--max-body-bytes", type=int, default=None,
                       help="larger request bodies get 413 before anything reads them (default: 2 MiB)")

    rollback = sub.add_parser("rollback", help="manual, audited rollback: the 'previous' version becomes champion again")
    _store_arguments(rollback)
    _operator_arguments(rollback)

    approve = sub.add_parser("approve", help="approve a version that passed the gate (policy.rollout.approval: required)")
    approve.add_argument("version", help="the registered model version to approve (see deployed_model: awaiting_approval)")
    _store_arguments(approve)
    _operator_arguments(approve)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in ("rollback", "approve"):
        return _deployment_command(args)
    if args.command == "drift":
        return _drift(args)
    if args.command == "check-batch":
        return _check_batch(args)
    if args.command == "review":
        return _review(args)
    if args.command == "backtest":
        return _backtest(args, argv)
    from retrain_assets.demo import InstanceBusyError

    try:
        return _demo(args) if args.command == "demo" else _replay(args)
    except InstanceBusyError as exc:
        print(f"retrain-assets: {exc}", file=sys.stderr)
        return 2


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RETRAIN_ASSETS_DATA_DIR", "data")),
                        help="landing zone and stores (default: $RETRAIN_ASSETS_DATA_DIR or %(default)s)")
    parser.add_argument("--spec", type=Path, default=Path(os.environ.get("RETRAIN_ASSETS_SPEC", "data/specs/loan_default.yaml")),
                        help="dataset spec (default: $RETRAIN_ASSETS_SPEC or %(default)s)")


def _operator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dagster-home", type=Path, default=Path(os.environ.get("DAGSTER_HOME", ".dagster_home")),
                        help="Dagster instance folder (default: $DAGSTER_HOME or .dagster_home)")
    parser.add_argument("--by", default=os.environ.get("RETRAIN_ASSETS_OPERATOR", os.environ.get("USER", "")),
                        help="who decides, recorded in the deployment history (default: $RETRAIN_ASSETS_OPERATOR or $USER)")
    parser.add_argument("--why", required=True, help="the reason, recorded in the deployment history")


def _serve(args) -> int:
    import uvicorn

    from retrain_assets.core.serving import DEFAULT_MAX_BODY_BYTES, ApiKeyError, load_api_keys
    from retrain_assets.core.spec import load_spec
    from retrain_assets.defs.resources import model_registry_for
    from retrain_assets.service import ModelService, PredictionLog, create_app
    from retrain_assets.settings import ProjectSettings

    try:
        api_keys = load_api_keys(os.environ, args.api_keys_file)
    except ApiKeyError as exc:
        print(f"retrain-assets serve: {exc}", file=sys.stderr)
        return 2
    max_body_bytes = DEFAULT_MAX_BODY_BYTES if args.max_body_bytes is None else args.max_body_bytes
    if max_body_bytes < 1:
        print(f"retrain-assets serve: --max-body-bytes must be positive, not {max_body_bytes}", file=sys.stderr)
        return 2
    _quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = load_spec(args.spec)
    settings = ProjectSettings(data_dir=args.data_dir.resolve(), spec_path=args.spec.resolve())
    service = ModelService(spec, model_registry_for(settings, spec, in_dagster=False), PredictionLog(settings.landing_dir))
    app = create_app(service, api_keys, refresh_seconds=args.refresh_seconds, flush_seconds=args.flush_seconds,
                     max_body_bytes=max_body_bytes)
    print(f"serving '{spec.name}' on http://{args.host}:{args.port} (POST /predict, GET /health, GET /models); "
          f"API keys of {', '.join(api_keys.names)}; prediction log -> {settings.landing_dir / 'predictions'}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _deployment_command(args) -> int:
    """Run `deployed_model` with an operator's command (rollback, approve): the registry and the
    history change in one audited Dagster run (tagged with the operator), like every other
    deployment step. An approval may promote a first model, so its reference profile follows."""
    import dagster as dg

    from retrain_assets.defs import build_definitions
    from retrain_assets.demo import open_instance
    from retrain_assets.settings import ProjectSettings

    _quiet_libraries()
    name = f"retrain-assets {args.command}"
    if not args.by.strip():
        print(f"{name}: say who you are with --by (or set RETRAIN_ASSETS_OPERATOR)", file=sys.stderr)
        return 2
    settings = ProjectSettings(data_dir=args.data_dir.resolve(), spec_path=args.spec.resolve())
    instance = open_instance(args.dagster_home)
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    config = {"command": args.command, "actor": args.by, "reason": args.why, "version": getattr(args, "version", "")}
    assets = [dg.AssetKey("deployed_model")] + ([dg.AssetKey("reference_profile")] if args.command == "approve" else [])
    result = job.execute_in_process(
        instance=instance, asset_selection=assets, raise_on_error=False,
        run_config={"ops": {"deployed_model": {"config": config}}, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        tags={"retrain_assets/manual": args.command, "retrain_assets/actor": args.by[:60]},
    )
    if not result.success:
        errors = "; ".join(_failure_text(e) for e in result.get_step_failure_events())
        print(f"{name}: failed: {errors}", file=sys.stderr)
        return 1
    meta = {k: v.value for k, v in result.asset_materializations_for_node("deployed_model")[0].metadata.items()}
    if args.command == "rollback":
        print(f"rolled back: champion is now v{meta['champion_version']} ({meta['reason']}); "
              f"recorded in deployed_model by {args.by}, Dagster run {result.run_id}")
    else:
        trial = next((f"; {role} v{meta[f'{role}_version']}" for role in ("canary", "shadow")
                      if meta[f"{role}_version"] != "none"), "")
        print(f"approved v{args.version} by {args.by}, recorded in deployed_model (Dagster run {result.run_id}); "
              f"next step: {meta['action']}; champion v{meta['champion_version']}{trial}")
    return 0


def _failure_text(event) -> str:
    """The reason a step failed: a `dg.Failure`'s description, else the error message."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    if data.error is None:
        return event.message or ""
    error = data.error
    while error.cause is not None:  # Dagster wraps the user's exception: report the innermost one
        error = error.cause
    return error.message.strip()


def _quiet_libraries() -> None:
    """The table is the demo's output; run logs stay in the Dagster instance and the UI."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _demo(args) -> int:
    from itertools import islice

    import pandas as pd

    from retrain_assets.core.scenario import load_scenario, scenario_deliveries
    from retrain_assets.demo import ensure_no_daemon, open_instance, replay, reset_stores, scripted_reviewer
    from retrain_assets.settings import ProjectSettings

    _quiet_libraries()
    scenario = load_scenario(args.scenario)
    settings = ProjectSettings(data_dir=args.data_dir.resolve(), spec_path=scenario.spec_path)
    ensure_no_daemon(args.dagster_home)
    reset_stores(settings, args.dagster_home)
    instance = open_instance(args.dagster_home)
    days = args.days or scenario.days
    print(f"Replaying scenario '{scenario.name}' ({days} days, ~{scenario.rows_per_day} rows/day, "
          f"labels {scenario.label_delay_days} days late) through the real Definitions.\n")
    summary = replay(islice(scenario_deliveries(scenario), days), settings, instance,
                     label=lambda d: f"{d.as_of - pd.Timedelta(days=1):%Y-%m-%d}", console_log_level="CRITICAL",
                     reviewer=scripted_reviewer(scenario, settings) if scenario.labeling else None)
    _closing(summary, args.dagster_home, env_hint="")
    return 0


def _replay(args) -> int:
    from itertools import islice

    from retrain_assets.core.scenario import history_deliveries, read_history
    from retrain_assets.core.spec import load_spec
    from retrain_assets.demo import ensure_no_daemon, open_instance, replay, reset_stores
    from retrain_assets.settings import ProjectSettings

    _quiet_libraries()
    spec = load_spec(args.spec)
    data_dir = (args.data_dir or Path("data/replays") / spec.name).resolve()
    dagster_home = args.dagster_home or data_dir / "dagster_home"
    ensure_no_daemon(dagster_home)
    history = read_history(args.source, spec)
    settings = ProjectSettings(data_dir=data_dir, spec_path=args.spec.resolve())
    reset_stores(settings, dagster_home)
    instance = open_instance(dagster_home)
    deliveries = history_deliveries(history, spec, args.start_date, args.label_delay)
    if args.batches:
        deliveries = islice(deliveries, args.batches)
    print(f"Replaying {args.source} as {spec.partitions.granularity} batches of '{spec.name}'.\n")
    summary = replay(deliveries, settings, instance, label=lambda d: next(iter(d.files)).split("/")[1][:10],
                     console_log_level="CRITICAL")
    env_hint = f"RETRAIN_ASSETS_SPEC={args.spec} RETRAIN_ASSETS_DATA_DIR={data_dir} DAGSTER_HOME={Path(dagster_home).resolve()} "
    _closing(summary, dagster_home, env_hint)
    return 0


def _backtest(args, argv: list[str] | None) -> int:
    import dataclasses

    from retrain_assets.backtesting import default_jobs, history_from_files, run_backtest, write_outputs
    from retrain_assets.core.backtest import parse_policies
    from retrain_assets.core.backtest_report import markdown_table
    from retrain_assets.core.landing import LandingFileError
    from retrain_assets.core.policy import with_overrides
    from retrain_assets.core.scenario import ScenarioError, load_scenario, scenario_deliveries
    from retrain_assets.core.spec import SpecError, load_spec

    def fail(message: str) -> int:
        print(f"retrain-assets backtest: {message}", file=sys.stderr)
        return 2

    if args.data and args.scenario:
        return fail("pass either --data (with --spec) or --scenario, not both")
    if args.data and args.days is not None:
        return fail("--days generates a scenario's days; with --data use --batches")
    try:
        if args.data:
            if args.spec is None:
                return fail("--data needs --spec: the dataset spec declares the columns, the target and the partitions")
            spec = load_spec(args.spec)
            deliveries = history_from_files(args.data, spec, args.start_date, args.label_delay)
            source = ", ".join(p.name for p in args.data)
        else:
            scenario = load_scenario(args.scenario or DEFAULT_SCENARIO)
            if args.days is not None:
                if args.days < 2:
                    return fail("--days must be at least 2")
                scenario = dataclasses.replace(scenario, days=args.days)
            spec = scenario.spec if args.spec is None else load_spec(args.spec)
            deliveries = scenario_deliveries(scenario)
            source = f"scenario {scenario.name}"
        base = with_overrides(spec.policy, dict(_pairs(args.overrides, "--set")))
        sweeps = {key: values.split(",") for key, values in _pairs(args.sweep, "--sweep")}
        policies = parse_policies(args.policies, base, sweeps)
    except (SpecError, ScenarioError, LandingFileError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    if args.batches is not None and args.batches < 2:
        return fail("--batches must be at least 2")
    if args.jobs is not None and args.jobs < 1:
        return fail("--jobs must be at least 1")
    jobs = args.jobs or default_jobs()
    print(f"Backtesting {len(policies)} policies on {source} ({spec.partitions.granularity} batches of '{spec.name}', "
          f"{jobs} process{'es' if jobs > 1 else ''}): {', '.join(p.name for p in policies)}", flush=True)
    try:
        result = run_backtest(deliveries, spec, policies, base, jobs=jobs, progress=not args.no_progress,
                              window_batches=args.window_batches, batches=args.batches)
    except ValueError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("\nretrain-assets backtest: interrupted; nothing was written", file=sys.stderr)
        return 130
    out = args.out or Path("data/backtests") / spec.name
    command = "retrain-assets " + " ".join(argv if argv is not None else sys.argv[1:])
    paths = write_outputs(result, out, command, source)
    steps = result.timeline.steps
    print(f"\n{len(steps)} batches ({steps[0].partition} to {steps[-1].partition}), {sum(s.n_rows for s in steps)} rows, "
          f"{sum(s.n_quarantined for s in steps)} quarantined, {sum(bool(s.blocked) for s in steps)} blocked; "
          f"judged on the {int(result.table['batches'].iloc[0])} batches every policy served; windows of {result.window_batches} batches.\n")
    print(markdown_table(result.table))
    phases = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in result.seconds.items() if k != "total")
    print(f"\n{result.seconds['total']:.1f} s in all ({phases}).")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    """KEY=VALUE arguments as pairs; a malformed one is an error that names the flag."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} psi_threshold=0.1,0.2")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _review(args) -> int:
    import json

    import pandas as pd

    from retrain_assets.core.spec import load_spec
    from retrain_assets.reviewing import ITEM_COLUMNS, item_details, review_items, submit_decisions
    from retrain_assets.settings import ProjectSettings

    spec = load_spec(args.spec)
    settings = ProjectSettings(data_dir=args.data_dir.resolve(), spec_path=args.spec.resolve())
    database = settings.snapshot_path
    if not database.exists():
        print(f"retrain-assets review: no analyst snapshot at {database} yet; run the pipeline (e.g. `make demo`) first",
              file=sys.stderr)
        return 2
    if args.review_command == "list":
        items = review_items(database, settings.landing_dir, spec, status=args.status)
        if items.empty:
            print(f"no {args.status} review items")
            return 0
        shown = items[ITEM_COLUMNS + ["status"]].head(args.limit).copy()
        shown["reasons"] = shown["reasons"].astype(str).str.slice(0, 70)
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"\n{len(items)} {args.status} items" + (f" (first {args.limit} shown)" if len(items) > args.limit else ""))
        return 0
    if args.review_command == "show":
        try:
            details = item_details(database, settings.landing_dir, spec, args.item_id)
        except KeyError as exc:
            print(f"retrain-assets review: {exc.args[0]}", file=sys.stderr)
            return 2
        print(json.dumps(details, indent=2, default=str))
        return 0
    if args.action == "relabel" and args.label is None:
        print("retrain-assets review: --action relabel needs --label", file=sys.stderr)
        return 2
    if not args.reviewer.strip():
        print("retrain-assets review: say who you are with --reviewer NAME (or RETRAIN_ASSETS_REVIEWER)", file=sys.stderr)
        return 2
    items = review_items(database, settings.landing_dir, spec, status="open")
    actions = [{"item_id": i, "action": args.action, "label_after": args.label, "why": args.why} for i in args.item_ids]
    try:
        paths = submit_decisions(settings.landing_dir, spec, items, actions, args.reviewer, pd.Timestamp.now(tz="UTC").tz_convert(None))
    except (KeyError, ValueError) as exc:
        print(f"retrain-assets review: {exc.args[0]}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path} ({args.action} by {args.reviewer}); the landing sensor applies it on its next tick")
    return 0


def _drift(args) -> int:
    import json

    from retrain_assets.core.contracts import validate_batch
    from retrain_assets.core.drift import build_reference_profile
    from retrain_assets.core.drift_html import render_drift_html
    from retrain_assets.core.landing import LandingFileError, read_landing_file, write_text_atomically
    from retrain_assets.core.monitoring import build_drift_report
    from retrain_assets.core.multivariate import reference_sample
    from retrain_assets.core.spec import load_spec

    spec = load_spec(args.spec)
    frames = {}
    for role, path in (("reference", args.reference), ("current", args.current)):
        try:
            checked = validate_batch(read_landing_file(path), spec)
        except LandingFileError as exc:
            print(f"retrain-assets: {role}: {exc}", file=sys.stderr)
            return 2
        if checked.schema_errors:
            print(f"retrain-assets: {role} file {path} breaks the spec's contract: {'; '.join(checked.schema_errors)}", file=sys.stderr)
            return 2
        if len(checked.quarantined):
            print(f"{role}: {len(checked.quarantined)} of {checked.n_rows} rows break the contract and are left out "
                  f"(first reason: {checked.quarantined['reason'].iloc[0]})")
        frames[role] = checked.valid
    thresholds = spec.policy.drift
    profile = build_reference_profile(frames["reference"], spec.numeric_features, spec.categorical_features,
                                      thresholds=thresholds, created_from=str(args.reference))
    result = build_drift_report(profile, frames["current"], spec, thresholds,
                                reference_rows=reference_sample(frames["reference"], spec.feature_columns, seed=spec.policy.random_seed),
                                seed=spec.policy.random_seed)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"reference": str(args.reference), "current": str(args.current), "summary": result.summary,
               "features": json.loads(result.features.to_json(orient="records"))}
    write_text_atomically(json.dumps(payload, indent=2, default=str), args.out / "drift_report.json")
    write_text_atomically(render_drift_html(f"Drift report: {args.current.name} vs {args.reference.name}",
                                            result.features, result.summary, profile, frames["current"]),
                          args.out / "drift_report.html")
    summary = result.summary
    print(f"{summary['n_drifted']}/{summary['n_features']} features drifted (share {summary['drift_share']:.2f}); "
          f"dataset drift: {'YES' if summary['dataset_drifted'] else 'no'}; out-of-distribution rows: {summary['ood_share']:.1%}; "
          f"domain-classifier AUC: {summary['multivariate_auc']:.3f}")
    for row in result.features[result.features["drifted"]].itertuples():
        print(f"  {row.feature}: {row.test} = {row.drift_score:.4g} (threshold {row.threshold:.4g})")
    print(f"wrote {args.out / 'drift_report.json'} and {args.out / 'drift_report.html'}")
    return 0


def _check_batch(args) -> int:
    import resource
    import tempfile
    import time

    import pandas as pd

    from retrain_assets.core.drift import ReferenceProfile
    from retrain_assets.core.large_batch import connect, large_batch_drift, validate_large_batch
    from retrain_assets.core.spec import SpecError, load_spec

    def fail(message: str, code: int = 2) -> int:
        print(f"retrain-assets check-batch: {message}", file=sys.stderr)
        return code

    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {line}", flush=True)

    if not args.path.is_file():
        return fail(f"no batch file at {args.path}")
    try:
        spec = load_spec(args.spec)
        window = tuple(pd.Timestamp(t) for t in args.window) if args.window else None
    except (SpecError, ValueError) as exc:
        return fail(str(exc))
    if args.reference is not None:
        if not args.reference.is_file():
            return fail(f"no reference profile at {args.reference}")
        profile, source = ReferenceProfile.from_json(args.reference.read_text()), str(args.reference)
    else:
        found = _champion_profile(args.data_dir)
        if isinstance(found, str):
            return fail(found)
        profile, source = found
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out, prefix=".duckdb-spill-") as spill:
        con = connect(args.memory_limit, args.threads, spill)
        try:
            say(f"checking {args.path} against '{spec.name}' (DuckDB memory_limit {args.memory_limit}, {args.threads} threads)")
            contract = validate_large_batch(con, args.path, spec, args.out, window=window, progress=say)
            limit = spec.policy.max_bad_row_share
            blocked = contract.blocked(limit)
            print(f"\ncontract: {contract.n_rows:,} rows in, {contract.n_valid:,} valid, {contract.n_quarantined:,} quarantined "
                  f"({contract.bad_row_share:.2%}; limit {limit:.0%}) -> {'BLOCKED' if blocked else 'passed'}")
            for rule, n in sorted(contract.rule_counts.items(), key=lambda kv: -kv[1]):
                print(f"  {n:>12,}  {rule}")
            if not blocked:
                say(f"drift against {source}")
                features, summary = large_batch_drift(con, contract.valid_path, profile, spec.policy.drift, progress=say)
        finally:
            con.close()
    if not blocked:
        shown = features[["feature", "kind", "n_current", "missing_share", "psi", "ks_statistic", "wasserstein_norm",
                          "jensen_shannon", "test", "drift_score", "drifted"]]
        print("\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"\n{summary['n_drifted']}/{summary['n_features']} features drifted (share {summary['drift_share']:.2f}); dataset drift: "
              f"{'YES' if summary['dataset_drifted'] else 'no'}; out-of-distribution rows: {summary['ood_share']:.2%}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{time.perf_counter() - started:.1f} s, peak RSS {peak_mib:,.0f} MiB; wrote {contract.valid_path} and {contract.quarantine_path}")
    if blocked:
        why = ("; ".join(contract.schema_errors) if contract.schema_errors else
               f"{contract.bad_row_share:.1%} of rows break the contract (limit {limit:.0%})")
        return fail(f"batch blocked: {why}. The reasons are in {contract.quarantine_path} (column `reason`); fix the export "
                    "and deliver the file again, or raise policy.max_bad_row_share in the spec if the rows are acceptable", 1)
    return 0


def _champion_profile(data_dir: Path):
    """(profile, description) of the champion's reference in the warehouse, or why there is none."""
    from retrain_assets.defs.monitoring import latest_reference
    from retrain_assets.defs.resources import Warehouse
    from retrain_assets.settings import ProjectSettings

    settings = ProjectSettings(data_dir=data_dir.resolve(), spec_path=Path())
    database = settings.warehouse_path
    hint = "; pass --reference PROFILE.json, or run the pipeline until a champion is deployed"
    if not database.exists():
        return f"no warehouse at {database}{hint}"
    warehouse = Warehouse(database=str(database), snapshot_path=str(settings.snapshot_path), reports_dir=str(settings.reports_dir))
    # The deployment history, not MLflow: the check needs no registry, only the warehouse file.
    deployed = warehouse.query("select champion_version from deployed_model order by deployed_at desc limit 1")
    version = str(deployed["champion_version"].iloc[0] or "") if len(deployed) else ""
    found = latest_reference(warehouse, version) if version else None
    if found is None:
        return f"no reference profile stored for the champion{f' v{version}' if version else ''}{hint}"
    return found[0], f"champion v{version}'s reference profile ({database})"


def _closing(summary, dagster_home: Path, env_hint: str) -> None:
    failed = [o for o in summary.outcomes if not o.success]
    print(
        f"\n{summary.runs} runs in {summary.seconds:.1f} s; {len(summary.deployments)} champions "
        f"(versions {', '.join(summary.deployments) or 'none'}); canaries rolled back: {', '.join(f'v{v}' for v in summary.rolled_back) or 'none'}; "
        f"blocked batches: {', '.join(summary.blocked_partitions) or 'none'}; "
        f"failed runs: {len(failed)} (blocked batches and rejected challengers count as failed runs).\n"
        "\nWhere to look next:\n"
        f"  {env_hint}make ui           # Dagster UI on this instance: runs, checks, lineage\n"
        f"  duckdb -readonly {summary.settings.snapshot_path}   # analyst snapshot (see README for queries)\n"
        f"  mlflow ui --backend-store-uri {summary.settings.default_tracking_uri}   # runs and registry\n"
        f"  {summary.settings.reports_dir}/evaluation/   # champion-vs-challenger reports (HTML); drift reports in drift/\n"
        f"  {env_hint}RETRAIN_ASSETS_API_KEYS=me:<token> retrain-assets serve   # the prediction service (needs an API key; see README, Serving)\n"
    )


if __name__ == "__main__":
    sys.exit(main())
