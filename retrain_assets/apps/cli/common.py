"""What the commands share: the expected-failure exception, the options several commands take
(spelled and defaulted once), the dataset of --dataset or --spec and the project settings of
--data-dir, and the Ctrl-C handling and closing summary of the commands that run the pipeline in
process."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from retrain_assets.settings import DEFAULT_DATA_DIR

DEFAULT_SCENARIO = Path("data/scenarios/loan_default.yaml")
LOCKED_HINT = ("a running pipeline (`dagster dev`, a demo, a backfill) holds the warehouse's write lock: retry when its "
               "run is done; readers use the analyst snapshot, which the pipeline publishes after each run, when there is one")
# What a command that needs one dataset does without --dataset or --spec (`chosen_dataset`).
ONLY_DATASET = "$RETRAIN_ASSETS_SPEC when set, else the only declared dataset"


class CliError(Exception):
    """An expected failure: printed as one line (and a hint of what to run), exit code 2."""

    def __init__(self, message: str, hint: str = "", code: int = 2):
        super().__init__(message)
        self.hint, self.code = hint, code


def add_command(subparsers, name: str, run: Callable[[argparse.Namespace], int], help: str,
                description: str = "") -> argparse.ArgumentParser:
    """A command's parser, listed with `help`, whose `run(args)` runs it; its description is `help`
    as a sentence unless one is given."""
    parser = subparsers.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".")
    parser.set_defaults(run=run)
    return parser


def store_arguments(parser: argparse.ArgumentParser, suppress: bool = False, default: str = ONLY_DATASET) -> None:
    """--data-dir, --dataset and --spec, spelled and defaulted the same by every command that reads
    the stores. `suppress`: for a subcommand's subcommand, where they repeat the parent's options;
    `default`: what the command does with neither --dataset nor --spec, for the help."""
    data_dir = argparse.SUPPRESS if suppress else Path(os.environ.get("RETRAIN_ASSETS_DATA_DIR", DEFAULT_DATA_DIR))
    parser.add_argument("--data-dir", type=Path, default=data_dir,
                        help=f"landing zone and stores (default: $RETRAIN_ASSETS_DATA_DIR or {DEFAULT_DATA_DIR})")
    dataset_arguments(parser, suppress, default)


def dataset_arguments(parser: argparse.ArgumentParser, suppress: bool = False, default: str = ONLY_DATASET) -> None:
    """--dataset (one declared in retrain_assets/defs/) and --spec (a spec file of your own); one or
    the other, never both (`chosen_dataset` says which dataset a command is about). `default`: what
    the command does with neither, for the help."""
    unset = argparse.SUPPRESS if suppress else None
    parser.add_argument("--dataset", default=unset, metavar="NAME",
                        help=f"a dataset declared in retrain_assets/defs/<name>/defs.yaml (default: {default})")
    parser.add_argument("--spec", type=Path, default=unset,
                        help="a dataset spec file of your own, instead of --dataset")


def chosen_dataset(args, only_by_default: bool = True):
    """The declared dataset (a `datasets.DatasetEntry`) a command is about, or None for a spec file
    of the user's own (`spec_file`).

    --dataset NAME picks a declared dataset; --spec FILE, or else $RETRAIN_ASSETS_SPEC, names a spec
    file; with none of them, the only declared dataset (`only_by_default`; else None: the command
    has another default, as the backtest's built-in scenario). Both flags, an unknown name, or
    several datasets and no choice raise a CliError whose message lists the datasets.
    """
    from retrain_assets import datasets

    name, spec = getattr(args, "dataset", None), getattr(args, "spec", None)
    if name is not None and spec is not None:
        raise CliError("pass either --dataset NAME or --spec FILE, not both",
                       "--dataset names a dataset declared in retrain_assets/defs/; --spec a spec file of your own")
    if spec is not None or (name is None and (os.environ.get("RETRAIN_ASSETS_SPEC") or not only_by_default)):
        return None
    entries = datasets.declared_datasets()
    try:
        return datasets.choose_dataset(entries, name)
    except datasets.DatasetChoiceError as exc:
        raise CliError(str(exc), "pass --dataset with one of them, or --spec FILE for a spec of your own" if entries
                       else "pass --spec FILE with a dataset spec of your own") from None


def spec_file(args) -> Path | None:
    """The spec file of --spec, else $RETRAIN_ASSETS_SPEC; None when neither is given."""
    spec = getattr(args, "spec", None) or os.environ.get("RETRAIN_ASSETS_SPEC")
    return Path(spec) if spec else None


def dagster_home_argument(parser: argparse.ArgumentParser) -> None:
    """--dagster-home: the Dagster instance folder ($DAGSTER_HOME by default)."""
    parser.add_argument("--dagster-home", type=Path, default=Path(os.environ.get("DAGSTER_HOME", ".dagster_home")),
                        help="Dagster instance folder (default: $DAGSTER_HOME or .dagster_home)")


def operator_arguments(parser: argparse.ArgumentParser) -> None:
    """--dagster-home, --by and --why of a deployment step an operator decides."""
    dagster_home_argument(parser)
    parser.add_argument("--by", default=os.environ.get("RETRAIN_ASSETS_OPERATOR", os.environ.get("USER", "")),
                        help="who decides, recorded in the deployment history (default: $RETRAIN_ASSETS_OPERATOR or $USER)")
    parser.add_argument("--why", required=True, help="the reason, recorded in the deployment history")


def progress_argument(parser: argparse.ArgumentParser) -> None:
    """--no-progress: no progress bars."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (they go to stderr, and only when it is a terminal)")


def json_argument(parser: argparse.ArgumentParser, help: str = "print JSON instead of text") -> None:
    """--json: print JSON instead of text (`help` says which JSON)."""
    parser.add_argument("--json", action="store_true", help=help)


def project_settings(args):
    """The project's settings (ProjectSettings.from_env) for the dataset of --dataset or --spec
    (`chosen_dataset`), with the stores of --data-dir."""
    entry = chosen_dataset(args)
    return dataset_settings(args, entry.spec_path if entry else spec_file(args), entry.overrides if entry else {})


def dataset_settings(args, spec_path: Path, overrides: dict | None = None):
    """ProjectSettings.from_env for the spec at `spec_path` (with `overrides`) and the stores of --data-dir."""
    from retrain_assets.settings import ProjectSettings

    try:
        settings = ProjectSettings.from_env()
    except ValueError as exc:
        raise CliError(str(exc), "fix the environment variable (see retrain_assets/settings.py)") from None
    return dataclasses.replace(settings, data_dir=args.data_dir.resolve(), spec_path=Path(spec_path).resolve(),
                               spec_overrides=dict(overrides or {}))


def require_stores(settings) -> None:
    """Refuse to run a command that reads the stores (and would create empty ones) where there are none."""
    from retrain_assets.apps.stores import StoreError

    if not settings.warehouse_path.exists():
        raise StoreError(f"no pipeline stores in {settings.data_dir} yet (no {settings.warehouse_path})")


def quiet_libraries() -> None:
    """The table is the demo's output; run logs stay in the Dagster instance and the UI."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def interrupt_between_runs():
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


def checked_print(check):
    """`print`, then stop if Ctrl-C was pressed (a replay echoes one row per step)."""
    def echo(line: str) -> None:
        print(line)
        check()

    return echo


def print_replay_summary(summary, env_hint: str) -> None:
    """The closing lines of a demo or replay: what ran, and where to look next (`env_hint`: the
    environment that points the commands at the replay's stores)."""
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
        f"  {summary.settings.reports_dir}/health.html   # model health over data time; evaluation/ and drift/ hold the other reports (HTML)\n"
        f"  {summary.settings.alerts_dir}/   # every alert raised, one JSON line each (sent once RETRAIN_ASSETS_ALERT_WEBHOOK_URL or the Slack variables are set: docs/alerts.md)\n"
        f"  {env_hint}RETRAIN_ASSETS_API_KEYS=me:<token> retrain-assets serve   # the prediction service (needs an API key; see docs/serving.md)\n"
    )
