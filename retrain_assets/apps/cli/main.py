"""`retrain-assets`: try, watch and steer an automated retraining pipeline
(Dagster assets, a DuckDB warehouse, an MLflow registry); check data and
policies offline."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# Partitioned asset checks are a Dagster "preview" feature we rely on knowingly; keep the console readable.
warnings.filterwarnings("ignore", message=".*(preview|beta).*", category=Warning)

from retrain_assets.settings import DEFAULT_DATA_DIR, DEFAULT_SPEC  # noqa: E402 - after the environment defaults above

DEFAULT_SCENARIO = Path("data/scenarios/loan_default.yaml")
EPILOG = """examples:
  retrain-assets demo              # replay the built-in scenario (make demo)
  retrain-assets status            # what the pipeline does now, and next
  retrain-assets review list       # labels waiting for a person
  retrain-assets backtest --days 120 --sweep psi_threshold=0.1,0.2,0.3

Commands that read the stores take --data-dir (default: $RETRAIN_ASSETS_DATA_DIR
or data) and --spec (default: $RETRAIN_ASSETS_SPEC or the loan_default spec).
`retrain-assets COMMAND --help` shows a command's options."""
# What an interrupted command leaves behind.
INTERRUPTED = {"demo": "; the stores hold the days replayed so far (run the demo again to start over)",
               "replay": "; the stores hold the batches replayed so far (run the replay again to start over)",
               "approve": "; `retrain-assets status` shows whether the step was recorded",
               "rollback": "; `retrain-assets status` shows whether the step was recorded"}
LOCKED_HINT = ("a running pipeline (`dagster dev`, a demo, a backfill) holds the warehouse's write lock: retry when its "
               "run is done; readers use the analyst snapshot, which the pipeline publishes after each run, when there is one")


class CliError(Exception):
    """An expected failure: printed as one line (and a hint of what to run), exit code 2."""

    def __init__(self, message: str, hint: str = "", code: int = 2):
        super().__init__(message)
        self.hint, self.code = hint, code


class _CommandListFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and epilog as written, and the commands listed without argparse's extra
    `COMMAND` line above them."""

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            return "".join(self._format_action(choice) for choice in action._get_subactions())
        return super()._format_action(action)


def build_parser() -> argparse.ArgumentParser:
    """The command line: first-hour commands first, then the ones for your own data."""
    parser = argparse.ArgumentParser(prog="retrain-assets", description=__doc__, epilog=EPILOG,
                                     formatter_class=_CommandListFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def command(name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".")

    demo = command("demo", "replay the built-in scenario through the pipeline (make demo)")
    demo.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, help="scenario file (default: %(default)s)")
    demo.add_argument("--data-dir", type=Path, default=Path("data"),
                      help="landing zone and stores; the demo resets them (default: %(default)s)")
    _dagster_home_argument(demo)
    demo.add_argument("--days", type=int, default=None, help="replay only the first N days")
    _progress_argument(demo)

    status = command("status", "show the champion, live trial, drift, reviews and next step",
                     "Show, from the stores: the champion, the challenger on live trial and how far its trial is, the "
                     "last drift verdict, the pending reviews, and what the automation does next and when (from the "
                     "same policy the sensors apply). Read-only.")
    _store_arguments(status)
    _json_argument(status)

    review = command("review", "list, show and resolve the labels waiting for a person")
    _store_arguments(review)
    review_sub = review.add_subparsers(dest="review_command", required=True, metavar="ACTION", title="actions")
    listing = review_sub.add_parser("list", help="review items (open ones by default)")
    listing.add_argument("--status", choices=["open", "all"], default="open")
    listing.add_argument("--limit", type=int, default=50)
    _json_argument(listing)
    show = review_sub.add_parser("show", help="one item: the row, the annotations, the champion's score, the history")
    show.add_argument("item_id")
    resolve = review_sub.add_parser("resolve", help="decide one or more items; the pipeline applies it on its next tick")
    resolve.add_argument("item_ids", nargs="+")
    resolve.add_argument("--action", choices=["accept", "relabel", "reject"], required=True)
    resolve.add_argument("--label", default=None, help="the label to set (required with --action relabel)")
    resolve.add_argument("--reviewer", default=os.environ.get("RETRAIN_ASSETS_REVIEWER", ""),
                         help="your name, recorded in the audit table (default: $RETRAIN_ASSETS_REVIEWER)")
    resolve.add_argument("--why", required=True, help="the reason, recorded in the audit table")
    for action in (listing, show, resolve):  # `review list --data-dir X` works as well as `review --data-dir X list`
        _store_arguments(action, suppress=True)

    drift = command("drift", "compare two files for drift (JSON + HTML, no pipeline)")
    drift.add_argument("--reference", type=Path, required=True, help="CSV/Parquet the model was trained on (the reference)")
    drift.add_argument("--current", type=Path, required=True, help="CSV/Parquet batch to check")
    drift.add_argument("--spec", type=Path, required=True, help="dataset spec file (columns, types, policy.drift thresholds)")
    drift.add_argument("--out", type=Path, default=Path("drift_report"), help="output folder (default: %(default)s)")
    _json_argument(drift, "print the report (the drift_report.json written to --out) instead of the summary")

    back = command("backtest", "compare retraining policies on a history: accuracy vs cost",
                       "Replay a history under several retraining policies (test-then-train) and compare accuracy "
                       "against retraining cost; writes a table, plots and JSON.")
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
    _progress_argument(back)

    serve = command("serve", "serve predictions: champion, canary or shadow, prediction log")
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

    approve = command("approve", "approve a version that passed the gate (approval: required)",
                      "Approve the newest evaluated version, when it passed the promotion gate and "
                      "policy.rollout.approval is `required`: it rolls out at once, recorded in deployed_model with who "
                      "and why. A version that cannot roll out (superseded by a newer evaluation, failed the gate, "
                      "already rolled out) is refused with the reason, exit code 1.")
    approve.add_argument("version", help="the registered model version to approve (`retrain-assets status` names it)")
    _store_arguments(approve)
    _operator_arguments(approve)

    rollback = command("rollback", "put the previous champion back, recorded with who and why")
    _store_arguments(rollback)
    _operator_arguments(rollback)

    rep = command("replay", "replay your own history table through the pipeline",
                     "Replay a history table (CSV or Parquet, rows in time order, target included) as batches through "
                     "the real pipeline, like the demo.")
    rep.add_argument("--spec", type=Path, required=True, help="dataset spec file")
    rep.add_argument("--source", type=Path, required=True, help="CSV or Parquet file with the history, target included")
    rep.add_argument("--start-date", default=None, help="date of the first row when the file has no event-time column (one row per day)")
    rep.add_argument("--label-delay", type=int, default=1, help="labels of a batch arrive this many batches later (default: %(default)s)")
    rep.add_argument("--batches", type=int, default=None, help="replay only the first N batches")
    rep.add_argument("--data-dir", type=Path, default=None, help="stores for this replay; reset first (default: data/replays/<spec name>)")
    rep.add_argument("--dagster-home", type=Path, default=None, help="Dagster instance folder (default: <data dir>/dagster_home)")
    _progress_argument(rep)

    check = command("check-batch", "check one big batch file's contract and drift (DuckDB)",
                          "Check one large batch file against the contract and for drift in DuckDB, in bounded memory; "
                          "no pipeline needed.")
    check.add_argument("path", type=Path, help="the batch, Parquet or CSV")
    check.add_argument("--reference", type=Path, default=None,
                       help="reference profile JSON (ReferenceProfile.to_json); default: the champion's profile in the "
                            "warehouse's reference_profile table (read-only)")
    _store_arguments(check)  # --data-dir: where the warehouse is, for the default reference
    check.add_argument("--memory-limit", default="2GB", help="DuckDB memory_limit; larger work spills to --out (default: %(default)s)")
    check.add_argument("--threads", type=int, default=2, help="DuckDB threads (default: %(default)s)")
    check.add_argument("--window", nargs=2, metavar=("START", "END"), default=None,
                       help="partition window [START, END): rows with event times outside it are quarantined")
    check.add_argument("--out", type=Path, default=Path("check_batch"),
                       help="folder for <name>.valid.parquet and <name>.quarantine.parquet (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 done, 1 a verdict such as a blocked batch or a
    refused deployment step, 2 an expected failure or a usage error, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2: argparse printed it)
        return exc.code if isinstance(exc.code, int) else 2
    name = f"retrain-assets {args.command}"
    handlers = {"demo": _demo, "status": _status, "review": _review, "drift": _drift, "serve": _serve,
                "approve": _deployment_command, "rollback": _deployment_command, "replay": _replay,
                "check-batch": _check_batch, "backtest": lambda a: _backtest(a, argv)}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted{INTERRUPTED.get(args.command, '')}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`retrain-assets ... | head`): stop quietly, as the docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # noqa: BLE001 - only the expected kinds are reported; the rest re-raise
        error = _expected_error(exc)
        if error is None:
            raise
        print(f"{name}: {error}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        return error.code


def _expected_error(exc: Exception) -> CliError | None:
    """The failures a user causes and can fix (a missing file or store, a bad spec, a locked
    warehouse), as a CliError with a hint; None for anything else (a bug: let it raise)."""
    import duckdb

    from retrain_assets.core.ingestion.landing import LandingFileError
    from retrain_assets.core.offline.scenario import ScenarioError
    from retrain_assets.core.spec import SpecError
    from retrain_assets.apps.demo import InstanceBusyError
    from retrain_assets.apps.status import StoreError

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, StoreError):
        return CliError(str(exc), exc.hint)
    if isinstance(exc, SpecError):
        return CliError(str(exc), "pass --spec with a dataset spec file (examples in data/specs/; the format is in docs/own-data.md)")
    if isinstance(exc, ScenarioError):
        return CliError(str(exc), f"pass --scenario with a scenario file; the built-in one is {DEFAULT_SCENARIO}")
    if isinstance(exc, LandingFileError):
        return CliError(str(exc))
    if isinstance(exc, InstanceBusyError):
        return CliError(str(exc))
    if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
        return CliError(f"the warehouse is locked: {str(exc).splitlines()[0]}", LOCKED_HINT)
    return None


def _settings(args):
    """The project's settings (ProjectSettings.from_env) with the stores and spec of --data-dir and --spec."""
    from retrain_assets.settings import ProjectSettings

    try:
        settings = ProjectSettings.from_env()
    except ValueError as exc:
        raise CliError(str(exc), "fix the environment variable (see retrain_assets/settings.py)") from None
    return dataclasses.replace(settings, data_dir=args.data_dir.resolve(), spec_path=args.spec.resolve())


def _require_stores(settings) -> None:
    """Refuse to run a command that reads the stores (and would create empty ones) where there are none."""
    from retrain_assets.apps.status import StoreError

    if not settings.warehouse_path.exists():
        raise StoreError(f"no pipeline stores in {settings.data_dir} yet (no {settings.warehouse_path})")


def _store_arguments(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--data-dir and --spec, spelled and defaulted the same by every command that reads the stores.
    `suppress`: for a subcommand's subcommand, where they repeat the parent's options."""
    data_dir = argparse.SUPPRESS if suppress else Path(os.environ.get("RETRAIN_ASSETS_DATA_DIR", DEFAULT_DATA_DIR))
    spec = argparse.SUPPRESS if suppress else Path(os.environ.get("RETRAIN_ASSETS_SPEC", str(DEFAULT_SPEC)))
    parser.add_argument("--data-dir", type=Path, default=data_dir,
                        help=f"landing zone and stores (default: $RETRAIN_ASSETS_DATA_DIR or {DEFAULT_DATA_DIR})")
    parser.add_argument("--spec", type=Path, default=spec,
                        help=f"dataset spec (default: $RETRAIN_ASSETS_SPEC or {DEFAULT_SPEC})")


def _dagster_home_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dagster-home", type=Path, default=Path(os.environ.get("DAGSTER_HOME", ".dagster_home")),
                        help="Dagster instance folder (default: $DAGSTER_HOME or .dagster_home)")


def _operator_arguments(parser: argparse.ArgumentParser) -> None:
    _dagster_home_argument(parser)
    parser.add_argument("--by", default=os.environ.get("RETRAIN_ASSETS_OPERATOR", os.environ.get("USER", "")),
                        help="who decides, recorded in the deployment history (default: $RETRAIN_ASSETS_OPERATOR or $USER)")
    parser.add_argument("--why", required=True, help="the reason, recorded in the deployment history")


def _progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (they go to stderr, and only when it is a terminal)")


def _json_argument(parser: argparse.ArgumentParser, help: str = "print JSON instead of text") -> None:
    parser.add_argument("--json", action="store_true", help=help)


@contextmanager
def _interrupt_between_runs():
    """Ctrl-C while Dagster runs execute in this process: Dagster turns an interrupt inside a run
    into a failed run and carries on, so the command would not stop. The signal still reaches the
    wakeup file descriptor (written at the C level, whichever Python handler Dagster installed):
    `check()` reads it and raises KeyboardInterrupt, as does leaving the block."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def check() -> None:
        try:
            received = os.read(read, 1024)
        except BlockingIOError:
            received = b""
        if signal.SIGINT in received:
            raise KeyboardInterrupt

    try:
        yield check
        check()
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)


def _checked_print(check):
    """`print`, then stop if Ctrl-C was pressed (a replay echoes one row per step)."""
    def echo(line: str) -> None:
        print(line)
        check()

    return echo


def _status(args) -> int:
    import json

    from retrain_assets.core.spec import load_spec
    from retrain_assets.apps.status import read_status, render

    settings = _settings(args)
    spec = load_spec(settings.spec_path)
    status = read_status(settings, spec)
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def _serve(args) -> int:
    import uvicorn

    from retrain_assets.core.deployment.serving import DEFAULT_MAX_BODY_BYTES, ApiKeyError, load_api_keys
    from retrain_assets.core.spec import load_spec
    from retrain_assets.defs.shared.registry import model_registry_for
    from retrain_assets.apps.service import ModelService, PredictionLog, create_app

    try:
        api_keys = load_api_keys(os.environ, args.api_keys_file)
    except ApiKeyError as exc:
        raise CliError(str(exc)) from None
    max_body_bytes = DEFAULT_MAX_BODY_BYTES if args.max_body_bytes is None else args.max_body_bytes
    if max_body_bytes < 1:
        raise CliError(f"--max-body-bytes must be positive, not {max_body_bytes}")
    settings = _settings(args)
    spec = load_spec(settings.spec_path)
    registry = model_registry_for(settings, spec, in_dagster=False)
    if registry.tracking_uri == settings.default_tracking_uri and not (settings.mlflow_dir / "mlflow.db").exists():
        from retrain_assets.apps.status import StoreError

        raise StoreError(f"no MLflow registry at {settings.mlflow_dir / 'mlflow.db'}: no model to serve yet")
    _quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = ModelService(spec, registry, PredictionLog(settings.landing_dir))
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

    from retrain_assets.core.spec import load_spec
    from retrain_assets.defs import build_definitions
    from retrain_assets.apps.demo import open_instance

    if not args.by.strip():
        raise CliError("say who you are with --by (or set RETRAIN_ASSETS_OPERATOR)")
    settings = _settings(args)
    load_spec(settings.spec_path)
    _require_stores(settings)
    _quiet_libraries()
    instance = open_instance(args.dagster_home)
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    config = {"command": args.command, "actor": args.by, "reason": args.why, "version": getattr(args, "version", "")}
    assets = [dg.AssetKey("deployed_model")] + ([dg.AssetKey("reference_profile")] if args.command == "approve" else [])
    with _interrupt_between_runs():
        result = job.execute_in_process(
            instance=instance, asset_selection=assets, raise_on_error=False,
            run_config={"ops": {"deployed_model": {"config": config}}, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            tags={"retrain_assets/manual": args.command, "retrain_assets/actor": args.by[:60]},
        )
    if not result.success:
        errors = "; ".join(_failure_text(e) for e in result.get_step_failure_events())
        if "could not set lock" in errors.lower():
            raise CliError(f"the warehouse is locked: {errors}", LOCKED_HINT)
        # The pipeline refused the step (nothing to roll back to, a version it cannot approve): a verdict, code 1.
        raise CliError(f"failed: {errors}", "`retrain-assets status` shows the champion, the trial and what awaits approval",
                       code=1)
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

    from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries
    from retrain_assets.apps.demo import ensure_no_daemon, open_instance, replay, reset_stores, scripted_reviewer
    from retrain_assets.settings import ProjectSettings

    if args.days is not None and args.days < 1:
        raise CliError(f"--days must be at least 1, not {args.days}")
    _quiet_libraries()
    scenario = load_scenario(args.scenario)
    settings = ProjectSettings(data_dir=args.data_dir.resolve(), spec_path=scenario.spec_path)
    ensure_no_daemon(args.dagster_home)
    reset_stores(settings, args.dagster_home)
    instance = open_instance(args.dagster_home)
    days = min(args.days or scenario.days, scenario.days)
    print(f"Replaying scenario '{scenario.name}' ({days} days, ~{scenario.rows_per_day} rows/day, "
          f"labels {scenario.label_delay_days} days late) through the real Definitions.\n")
    with _interrupt_between_runs() as check:
        summary = replay(islice(scenario_deliveries(scenario), days), settings, instance,
                         label=lambda d: f"{d.as_of - pd.Timedelta(days=1):%Y-%m-%d}", echo=_checked_print(check),
                         console_log_level="CRITICAL", reviewer=scripted_reviewer(scenario, settings) if scenario.labeling else None,
                         progress=not args.no_progress, total=days, unit="day")
    _closing(summary, args.dagster_home, env_hint="")
    return 0


def _replay(args) -> int:
    from itertools import chain, islice

    from retrain_assets.core.offline.scenario import history_deliveries, read_history
    from retrain_assets.core.spec import load_spec
    from retrain_assets.apps.demo import ensure_no_daemon, open_instance, replay, reset_stores
    from retrain_assets.settings import ProjectSettings

    if args.batches is not None and args.batches < 1:
        raise CliError(f"--batches must be at least 1, not {args.batches}")
    if not args.source.is_file():
        raise CliError(f"no history file at {args.source}", "pass --source with a CSV or Parquet table, rows in time order")
    _quiet_libraries()
    spec = load_spec(args.spec)
    data_dir = (args.data_dir or Path("data/replays") / spec.name).resolve()
    dagster_home = args.dagster_home or data_dir / "dagster_home"
    try:
        # The first delivery before anything is reset: a table the spec cannot replay fails here.
        deliveries = history_deliveries(read_history(args.source, spec), spec, args.start_date, args.label_delay)
        deliveries = chain([next(deliveries)], deliveries)
    except StopIteration:
        raise CliError(f"{args.source} has no rows to replay") from None
    except ValueError as exc:
        raise CliError(f"{args.source}: {exc}") from None
    ensure_no_daemon(dagster_home)
    settings = ProjectSettings(data_dir=data_dir, spec_path=args.spec.resolve())
    reset_stores(settings, dagster_home)
    instance = open_instance(dagster_home)
    if args.batches:
        deliveries = islice(deliveries, args.batches)
    print(f"Replaying {args.source} as {spec.partitions.granularity} batches of '{spec.name}'.\n")
    with _interrupt_between_runs() as check:
        summary = replay(deliveries, settings, instance, label=lambda d: next(iter(d.files)).split("/")[1][:10],
                         echo=_checked_print(check), console_log_level="CRITICAL", progress=not args.no_progress,
                         total=args.batches, unit="batch")
    env_hint = f"RETRAIN_ASSETS_SPEC={args.spec} RETRAIN_ASSETS_DATA_DIR={data_dir} DAGSTER_HOME={Path(dagster_home).resolve()} "
    _closing(summary, dagster_home, env_hint)
    return 0


def _backtest(args, argv: list[str] | None) -> int:
    import dataclasses

    from retrain_assets.apps.backtest import default_jobs, history_from_files, run_backtest, write_outputs
    from retrain_assets.core.offline.backtest import parse_policies
    from retrain_assets.core.offline.backtest_report import markdown_table
    from retrain_assets.core.ingestion.landing import LandingFileError
    from retrain_assets.core.policy.definition import with_overrides
    from retrain_assets.core.offline.scenario import ScenarioError, load_scenario, scenario_deliveries
    from retrain_assets.core.spec import SpecError, load_spec

    def fail(message: str) -> int:
        raise CliError(message)

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
    from retrain_assets.apps.review import ITEM_COLUMNS, item_details, review_items, submit_decisions
    from retrain_assets.apps.status import StoreError

    settings = _settings(args)
    spec = load_spec(settings.spec_path)
    # The analysts' snapshot, else the warehouse itself (read-only): a review never writes either.
    database = settings.snapshot_path if settings.snapshot_path.exists() else settings.warehouse_path
    if not database.exists():
        raise StoreError(f"no pipeline stores in {settings.data_dir} yet (no analyst snapshot {settings.snapshot_path}, "
                         "no warehouse): the review queue fills once labels arrive")
    if args.review_command == "list":
        items = review_items(database, settings.landing_dir, spec, status=args.status)
        if args.json:
            print(items[[c for c in items.columns if c != "annotations_json"]].head(args.limit)
                  .to_json(orient="records", date_format="iso", indent=2))
            return 0
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
            raise CliError(exc.args[0]) from None
        print(json.dumps(details, indent=2, default=str))
        return 0
    if args.action == "relabel" and args.label is None:
        raise CliError("--action relabel needs --label", f"add --label <one of {list(spec.target.classes)}>")
    if not args.reviewer.strip():
        raise CliError("say who you are with --reviewer NAME (or RETRAIN_ASSETS_REVIEWER)")
    items = review_items(database, settings.landing_dir, spec, status="open")
    actions = [{"item_id": i, "action": args.action, "label_after": args.label, "why": args.why} for i in args.item_ids]
    try:
        paths = submit_decisions(settings.landing_dir, spec, items, actions, args.reviewer, pd.Timestamp.now(tz="UTC").tz_convert(None))
    except (KeyError, ValueError) as exc:
        raise CliError(exc.args[0]) from None
    for path in paths:
        print(f"wrote {path} ({args.action} by {args.reviewer}); the landing sensor applies it on its next tick")
    return 0


def _drift(args) -> int:
    import json

    from retrain_assets.core.ingestion.contracts import validate_batch
    from retrain_assets.core.monitoring.profile import build_reference_profile
    from retrain_assets.core.reports.drift import render_drift_html
    from retrain_assets.core.ingestion.landing import LandingFileError, read_landing_file
    from retrain_assets.core.files import write_text_atomically
    from retrain_assets.core.monitoring.batch_report import build_drift_report
    from retrain_assets.core.monitoring.multivariate import reference_sample
    from retrain_assets.core.spec import load_spec

    spec = load_spec(args.spec)
    frames = {}
    for role, path in (("reference", args.reference), ("current", args.current)):
        if not path.is_file():
            raise CliError(f"no {role} file at {path}", f"pass --{role} with a CSV or Parquet file")
        try:
            checked = validate_batch(read_landing_file(path), spec)
        except LandingFileError as exc:
            raise CliError(f"{role}: {exc}") from None
        if checked.schema_errors:
            raise CliError(f"{role} file {path} breaks the spec's contract: {'; '.join(checked.schema_errors)}",
                           f"check the columns against {args.spec}, or pass the spec the file was exported with")
        if len(checked.quarantined):
            print(f"{role}: {len(checked.quarantined)} of {checked.n_rows} rows break the contract and are left out "
                  f"(first reason: {checked.quarantined['reason'].iloc[0]})", file=sys.stderr if args.json else sys.stdout)
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
    report = json.dumps(payload, indent=2, default=str)
    write_text_atomically(report, args.out / "drift_report.json")
    write_text_atomically(render_drift_html(f"Drift report: {args.current.name} vs {args.reference.name}",
                                            result.features, result.summary, profile, frames["current"]),
                          args.out / "drift_report.html")
    if args.json:
        print(report)
        return 0
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

    from retrain_assets.core.monitoring.profile import ReferenceProfile
    from retrain_assets.core.ingestion.large_batch import connect, validate_large_batch
    from retrain_assets.core.monitoring.large_batch_drift import large_batch_drift
    from retrain_assets.core.spec import load_spec

    def fail(message: str, hint: str = "", code: int = 2) -> int:
        raise CliError(message, hint, code)

    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {line}", flush=True)

    if not args.path.is_file():
        return fail(f"no batch file at {args.path}", "pass the path of a Parquet or CSV batch")
    spec = load_spec(args.spec)
    try:
        window = tuple(pd.Timestamp(t) for t in args.window) if args.window else None
    except ValueError as exc:
        return fail(f"--window: {exc}", "pass two dates, e.g. --window 2025-03-01 2025-03-02")
    if args.reference is not None:
        if not args.reference.is_file():
            return fail(f"no reference profile at {args.reference}", "pass a JSON written by ReferenceProfile.to_json, "
                        "or leave --reference out to use the champion's profile in the warehouse")
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
                    "and deliver the file again, or raise policy.max_bad_row_share in the spec if the rows are acceptable",
                    code=1)
    return 0


def _champion_profile(data_dir: Path):
    """(profile, description) of the champion's reference in the warehouse, or why there is none."""
    from retrain_assets.defs.shared.lookups import latest_reference
    from retrain_assets.defs.shared.warehouse import Warehouse
    from retrain_assets.settings import ProjectSettings

    settings = ProjectSettings(data_dir=data_dir.resolve(), spec_path=Path())
    # The analysts' snapshot when there is one: a running pipeline holds the warehouse's lock.
    database = settings.snapshot_path if settings.snapshot_path.exists() else settings.warehouse_path
    hint = "; pass --reference PROFILE.json, or run the pipeline until a champion is deployed"
    if not database.exists():
        return f"no warehouse at {settings.warehouse_path}{hint}"
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
        f"  .venv/bin/python -c \"import duckdb; duckdb.connect('{summary.settings.snapshot_path}', read_only=True).sql('show tables').show()\"   # analyst snapshot (queries: docs/querying.md)\n"
        f"  mlflow ui --backend-store-uri {summary.settings.default_tracking_uri}   # runs and registry\n"
        f"  {summary.settings.reports_dir}/evaluation/   # champion-vs-challenger reports (HTML); drift reports in drift/\n"
        f"  {env_hint}RETRAIN_ASSETS_API_KEYS=me:<token> retrain-assets serve   # the prediction service (needs an API key; see docs/serving.md)\n"
    )


if __name__ == "__main__":
    sys.exit(main())
